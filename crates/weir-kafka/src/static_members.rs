//! Static membership (KIP-345), a part of the coordinator: a member that names
//! itself with `group.instance.id` keeps its place across restarts. When it
//! joins again without a member id (a restarted process), it takes the place of
//! the member holding that instance id, with that member's assignment, under a
//! new member id; the old id is fenced (`FENCED_INSTANCE_ID`), so a second
//! process with the same instance id cannot take turns with the first. In a
//! stable group whose protocol the newcomer does not change there is no
//! rebalance: it gets the current generation and syncs to its old assignment.
//! A static leader that comes back learns it leads, with `skip_assignment` from
//! JoinGroup v9, or is told the old leader's id before (so it syncs as a
//! follower), as Kafka's coordinator does.

use tokio::sync::oneshot;

use super::{
    Answer, Group, Join, Joined, ResponseError, State, Synced, code, complete_join, member_list,
    select_protocol, start_rebalance,
};

/// The id of the member holding `instance`, if any.
pub(super) fn holder(g: &Group, instance: &str) -> Option<String> {
    g.members
        .iter()
        .find(|(_, m)| m.instance_id.as_deref() == Some(instance))
        .map(|(id, _)| id.clone())
}

/// Whether `member_id` claims static `instance` that another member holds now:
/// `FENCED_INSTANCE_ID` for its heartbeats, syncs and commits.
///
/// Asked at every heartbeat of a static member: an instance id is held by one
/// member at most, so the caller's own member holding it (the usual answer) is
/// found by its id, without a scan of the group or a copy of the holder's id.
pub(super) fn fenced(g: &Group, member_id: &str, instance: Option<&str>) -> bool {
    let Some(instance) = instance else {
        return false;
    };
    let holds = |m: &super::Member| m.instance_id.as_deref() == Some(instance);
    !g.members.get(member_id).is_some_and(holds) && g.members.values().any(holds)
}

/// A static member joining without an id, as `new_id`, in the place of `old_id`.
pub(super) fn rejoin_static(
    g: &mut Group,
    old_id: String,
    new_id: String,
    mut join: Join,
    now: std::time::Instant,
) -> Answer<Joined> {
    let Some(mut member) = g.members.remove(&old_id) else {
        return Answer::Now(Joined {
            error: code(ResponseError::UnknownMemberId),
            generation: -1,
            ..Joined::default()
        });
    };
    // Whoever waits as the old id learns it was replaced.
    if let Some(tx) = member.join.take() {
        let _ = tx.send(Joined {
            error: code(ResponseError::FencedInstanceId),
            generation: -1,
            member_id: old_id.clone(),
            ..Joined::default()
        });
    }
    if let Some(tx) = member.sync.take() {
        let _ = tx.send(Synced {
            error: code(ResponseError::FencedInstanceId),
            ..Synced::default()
        });
    }
    tracing::info!(old = %old_id, new = %new_id, "a static Kafka group member came back");
    let was_leader = g.leader.as_deref() == Some(old_id.as_str());
    if was_leader {
        g.leader = Some(new_id.clone());
    }
    member.joined_with(&mut join, now);
    g.members.insert(new_id.clone(), member);
    if g.state == State::Stable && select_protocol(g) == g.protocol {
        let skip = was_leader && join.may_skip_assignment;
        return Answer::Now(Joined {
            error: 0,
            generation: g.generation,
            protocol_type: g.protocol_type.clone(),
            protocol: g.protocol.clone(),
            leader: if was_leader && !skip {
                old_id
            } else {
                g.leader.clone().unwrap_or_default()
            },
            members: if skip { member_list(g) } else { Vec::new() },
            member_id: new_id,
            skip_assignment: skip,
        });
    }
    let (tx, rx) = oneshot::channel();
    if let Some(m) = g.members.get_mut(&new_id) {
        m.join = Some(tx);
        m.rejoined = true;
    }
    if g.state != State::PreparingRebalance {
        start_rebalance(g, now, Some(&new_id));
    }
    if g.members.values().all(|m| m.rejoined) {
        complete_join(g, now);
    }
    Answer::Later(rx)
}
