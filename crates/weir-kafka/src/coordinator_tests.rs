//! The coordinator's tests (`coordinator.rs`), in a file of their own.

use super::*;

fn join(member: &str) -> Join {
    Join {
        group: "g".into(),
        member_id: member.into(),
        instance_id: None,
        client_id: "c".into(),
        client_host: "/127.0.0.1".into(),
        session_timeout: Duration::from_secs(10),
        rebalance_timeout: Duration::from_secs(30),
        protocol_type: "consumer".into(),
        protocols: vec![("range".into(), Bytes::from_static(b"m"))],
        id_required: true,
        may_skip_assignment: true,
    }
}

fn now_answer<T>(a: Answer<T>) -> T {
    match a {
        Answer::Now(t) => t,
        Answer::Later(mut rx) => rx.try_recv().expect("answered"),
    }
}

/// Joins with a fresh id: the `MEMBER_ID_REQUIRED` round trip, then the join.
fn enter(c: &Coordinator, now: Instant) -> (String, Answer<Joined>) {
    let first = now_answer(c.join(join(""), now));
    assert_eq!(first.error, ResponseError::MemberIdRequired.code());
    let id = first.member_id;
    (id.clone(), c.join(join(&id), now))
}

#[test]
fn a_group_or_a_member_past_its_cap_is_refused() {
    let c = Coordinator::new(Limits {
        groups: 1,
        members: 1,
    });
    let t0 = Instant::now();
    let (_, joined) = enter(&c, t0);
    assert_eq!(now_answer(joined).error, 0);
    let refused = |j: Join| now_answer(c.join(j, t0)).error;
    assert_eq!(refused(join("")), ResponseError::GroupMaxSizeReached.code());
    let other = Join {
        group: "h".into(),
        ..join("")
    };
    assert_eq!(
        refused(other),
        ResponseError::CoordinatorNotAvailable.code()
    );
}

#[test]
fn two_members_join_sync_and_rebalance_when_one_times_out() {
    let c = Coordinator::default();
    let t0 = Instant::now();
    let (a, joined) = enter(&c, t0);
    let joined = now_answer(joined);
    assert_eq!(
        (joined.error, joined.generation, joined.leader.as_str()),
        (0, 1, a.as_str())
    );
    assert_eq!(joined.members.len(), 1);
    let synced = now_answer(c.sync(
        "g",
        &a,
        None,
        1,
        vec![(a.clone(), Bytes::from_static(b"all"))],
        t0,
    ));
    assert_eq!(&synced.assignment[..], b"all");
    // A second member: a rebalance; the first learns it from its heartbeat.
    let (b, b_join) = enter(&c, t0);
    let Answer::Later(mut b_join) = b_join else {
        panic!("b waits for a")
    };
    assert_eq!(
        c.heartbeat("g", &a, None, 1, t0),
        ResponseError::RebalanceInProgress.code()
    );
    let a_join = now_answer(c.join(join(&a), t0));
    let b_joined = b_join.try_recv().unwrap();
    assert_eq!((a_join.generation, b_joined.generation), (2, 2));
    assert_eq!(a_join.members.len(), 2, "the leader sees both");
    assert!(b_joined.members.is_empty());
    let Answer::Later(mut b_sync) = c.sync("g", &b, None, 2, vec![], t0) else {
        panic!("b waits for the leader")
    };
    let assignments = vec![
        (a.clone(), Bytes::from_static(b"p0")),
        (b.clone(), Bytes::from_static(b"p1")),
    ];
    assert_eq!(
        &now_answer(c.sync("g", &a, None, 2, assignments, t0)).assignment[..],
        b"p0"
    );
    assert_eq!(&b_sync.try_recv().unwrap().assignment[..], b"p1");
    // b stops heartbeating: after its session, a rebalance without it.
    let later = t0 + Duration::from_secs(11);
    assert_eq!(c.heartbeat("g", &a, None, 2, later), 0);
    c.tick(later);
    assert_eq!(
        c.heartbeat("g", &a, None, 2, later),
        ResponseError::RebalanceInProgress.code()
    );
    let alone = now_answer(c.join(join(&a), later));
    assert_eq!((alone.generation, alone.members.len()), (3, 1));
    assert_eq!(
        c.heartbeat("g", &b, None, 2, later),
        ResponseError::UnknownMemberId.code()
    );
}

#[test]
fn leaving_commits_and_stale_generations() {
    let c = Coordinator::default();
    let t0 = Instant::now();
    let (a, joined) = enter(&c, t0);
    assert_eq!(now_answer(joined).generation, 1);
    let _ = c.sync("g", &a, None, 1, vec![], t0);
    assert_eq!(c.may_commit("g", &a, None, 1, t0), 0);
    assert_eq!(
        c.may_commit("g", &a, None, 0, t0),
        ResponseError::IllegalGeneration.code()
    );
    assert_eq!(
        c.may_commit("g", "", None, -1, t0),
        ResponseError::UnknownMemberId.code()
    );
    assert_eq!(
        c.leave("g", &[(a.clone(), None), ("nobody".into(), None)], t0),
        vec![0, ResponseError::UnknownMemberId.code()]
    );
    assert_eq!(c.views(None)[0].state, State::Empty);
    assert_eq!(
        c.may_commit("g", "", None, -1, t0),
        0,
        "a commit from outside a generation once empty"
    );
    c.tick(t0);
    assert!(c.views(None).is_empty(), "an empty group is forgotten");
    assert_eq!(
        now_answer(c.join(join("made-up"), t0)).error,
        ResponseError::UnknownMemberId.code()
    );
}

#[test]
fn a_member_commits_while_a_rebalance_is_prepared_not_while_it_completes() {
    let c = Coordinator::default();
    let t0 = Instant::now();
    let (a, joined) = enter(&c, t0);
    assert_eq!(now_answer(joined).generation, 1);
    let _ = c.sync("g", &a, None, 1, vec![], t0);
    // b arrives: the group prepares a rebalance; a commits what it read before
    // rejoining, as consumers do when they give their partitions up.
    let (b, _) = enter(&c, t0);
    assert_eq!(
        c.heartbeat("g", &a, None, 1, t0),
        ResponseError::RebalanceInProgress.code()
    );
    assert_eq!(
        c.may_commit("g", &a, None, 1, t0),
        0,
        "generation 1 still holds"
    );
    // Both joined: generation 2 waits for the leader's assignment.
    let _ = now_answer(c.join(join(&a), t0));
    assert_eq!(
        c.may_commit("g", &b, None, 2, t0),
        ResponseError::RebalanceInProgress.code()
    );
    assert_eq!(
        c.may_commit("g", &a, None, 1, t0),
        ResponseError::IllegalGeneration.code()
    );
    let _ = c.sync("g", &a, None, 2, vec![], t0);
    assert_eq!(c.may_commit("g", &b, None, 2, t0), 0);
}

#[test]
fn a_long_join_does_not_cost_the_session() {
    let c = Coordinator::default();
    let t0 = Instant::now();
    let (a, joined) = enter(&c, t0);
    assert_eq!(now_answer(joined).generation, 1);
    let _ = c.sync("g", &a, None, 1, vec![], t0);
    // b arrives; a's join waits 9 s for... a itself to rejoin, then completes.
    let later = t0 + Duration::from_secs(9);
    let (b, _) = enter(&c, later);
    let _ = now_answer(c.join(join(&a), later));
    let _ = c.sync("g", &a, None, 2, vec![], later);
    // 11 s after a's first join but 2 s after the second: both still in.
    c.tick(t0 + Duration::from_secs(11));
    assert_eq!(
        c.heartbeat("g", &a, None, 2, t0 + Duration::from_secs(11)),
        0
    );
    assert_eq!(
        c.heartbeat("g", &b, None, 2, t0 + Duration::from_secs(11)),
        0
    );
}

#[test]
fn a_member_with_other_protocols_is_refused() {
    let c = Coordinator::default();
    let t0 = Instant::now();
    let (_a, _) = enter(&c, t0);
    let mut other = join("");
    other.protocols = vec![("roundrobin".into(), Bytes::new())];
    assert_eq!(
        now_answer(c.join(other, t0)).error,
        ResponseError::InconsistentGroupProtocol.code()
    );
}

fn static_join(member: &str, instance: &str, may_skip_assignment: bool) -> Join {
    Join {
        instance_id: Some(instance.into()),
        may_skip_assignment,
        ..join(member)
    }
}

/// Two static members, a (the leader) and b, stable in generation 2 with
/// assignments "A" and "B".
fn two_static_members(c: &Coordinator, t0: Instant) -> (String, String) {
    let first = now_answer(c.join(static_join("", "i-a", true), t0));
    assert_eq!(
        first.error, 0,
        "a static member joins without MEMBER_ID_REQUIRED"
    );
    let a = first.member_id;
    let _ = c.sync(
        "g",
        &a,
        None,
        1,
        vec![(a.clone(), Bytes::from_static(b"A"))],
        t0,
    );
    let Answer::Later(mut b_join) = c.join(static_join("", "i-b", true), t0) else {
        panic!("b waits for a")
    };
    let _ = now_answer(c.join(static_join(&a, "i-a", true), t0));
    let b = b_join.try_recv().unwrap().member_id;
    let assignments = vec![
        (a.clone(), Bytes::from_static(b"A")),
        (b.clone(), Bytes::from_static(b"B")),
    ];
    let _ = c.sync("g", &b, None, 2, vec![], t0);
    assert_eq!(
        &now_answer(c.sync("g", &a, None, 2, assignments, t0)).assignment[..],
        b"A"
    );
    (a, b)
}

#[test]
fn a_static_member_that_comes_back_takes_its_place_without_a_rebalance() {
    let c = Coordinator::default();
    let t0 = Instant::now();
    let (a, b) = two_static_members(&c, t0);
    // b's process restarts: it joins with no id and its instance id.
    let back = now_answer(c.join(static_join("", "i-b", true), t0));
    assert_eq!((back.error, back.generation), (0, 2), "no new generation");
    assert_ne!(back.member_id, b, "a new member id");
    assert_eq!(back.leader, a);
    assert!(back.members.is_empty() && !back.skip_assignment);
    let b2 = back.member_id;
    assert_eq!(
        &now_answer(c.sync("g", &b2, None, 2, vec![], t0)).assignment[..],
        b"B"
    );
    assert_eq!(c.heartbeat("g", &a, None, 2, t0), 0, "a sees no rebalance");
    // The old id is fenced: another process with the same instance id.
    assert!(c.fenced("g", &b, Some("i-b")));
    assert!(!c.fenced("g", &b2, Some("i-b")));
    assert_eq!(
        now_answer(c.join(static_join(&b, "i-b", true), t0)).error,
        ResponseError::FencedInstanceId.code()
    );
    assert_eq!(c.views(None)[0].members.len(), 2);
}

#[test]
fn a_static_leader_that_comes_back_skips_the_assignment_or_syncs_as_a_follower() {
    let c = Coordinator::default();
    let t0 = Instant::now();
    let (a, _) = two_static_members(&c, t0);
    // JoinGroup v9+: it learns it leads, with the members, and skips assigning.
    let back = now_answer(c.join(static_join("", "i-a", true), t0));
    assert_eq!((back.error, back.generation), (0, 2));
    assert!(back.skip_assignment);
    assert_eq!(back.leader, back.member_id);
    assert_eq!(back.members.len(), 2);
    let a2 = back.member_id;
    assert_eq!(
        &now_answer(c.sync("g", &a2, None, 2, vec![], t0)).assignment[..],
        b"A"
    );
    // Before v9: the old leader's id, so it syncs as a follower.
    let older = now_answer(c.join(static_join("", "i-a", false), t0));
    assert_eq!((older.generation, older.leader.as_str()), (2, a2.as_str()));
    assert!(older.members.is_empty() && !older.skip_assignment);
    assert_ne!(a, a2);
}

#[test]
fn a_static_member_leaves_by_its_instance_id() {
    let c = Coordinator::default();
    let t0 = Instant::now();
    let (a, b) = two_static_members(&c, t0);
    assert_eq!(
        c.leave(
            "g",
            &[
                (String::new(), Some("i-b".into())),
                (a.clone(), Some("i-nobody".into())),
                ("someone-else".into(), Some("i-a".into())),
            ],
            t0
        ),
        vec![
            0,
            ResponseError::UnknownMemberId.code(),
            ResponseError::FencedInstanceId.code()
        ]
    );
    assert_eq!(
        c.heartbeat("g", &a, None, 2, t0),
        ResponseError::RebalanceInProgress.code(),
        "b's leave starts a rebalance"
    );
    assert_eq!(
        c.heartbeat("g", &b, None, 2, t0),
        ResponseError::UnknownMemberId.code()
    );
}

#[test]
fn a_follower_that_joins_again_unchanged_gets_its_generation_without_a_rebalance() {
    let c = Coordinator::default();
    let t0 = Instant::now();
    let (a, joined) = enter(&c, t0);
    assert_eq!(now_answer(joined).generation, 1);
    let (b, b_join) = enter(&c, t0);
    assert_eq!(now_answer(c.join(join(&a), t0)).generation, 2);
    let Answer::Later(mut b_join) = b_join else {
        panic!("b waits for a")
    };
    assert_eq!(b_join.try_recv().unwrap().generation, 2);
    // b's join answer was lost: joined again before the leader's assignment, it
    // gets the same answer, and the leader its member list.
    let again = now_answer(c.join(join(&b), t0));
    assert_eq!((again.error, again.generation), (0, 2));
    assert_eq!(now_answer(c.join(join(&a), t0)).members.len(), 2);
    let assignments = vec![
        (a.clone(), Bytes::from_static(b"p0")),
        (b.clone(), Bytes::from_static(b"p1")),
    ];
    now_answer(c.sync("g", &a, None, 2, assignments, t0));
    assert_eq!(
        &now_answer(c.sync("g", &b, None, 2, vec![], t0)).assignment[..],
        b"p1"
    );
    // Stable: the follower joins again unchanged: its generation, no rebalance.
    let again = now_answer(c.join(join(&b), t0));
    assert_eq!(
        (again.error, again.generation, again.leader.as_str()),
        (0, 2, a.as_str())
    );
    assert_eq!(c.heartbeat("g", &a, None, 2, t0), 0, "a sees no rebalance");
    // With other metadata it is a rebalance, as the leader's join always is.
    let mut changed = join(&b);
    changed.protocols = vec![("range".into(), Bytes::from_static(b"other"))];
    assert!(matches!(c.join(changed, t0), Answer::Later(_)));
    assert_eq!(
        c.heartbeat("g", &a, None, 2, t0),
        ResponseError::RebalanceInProgress.code()
    );
    assert_eq!(now_answer(c.join(join(&a), t0)).generation, 3);
}
