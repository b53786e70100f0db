//! Unit tests of single behaviours of [`QueueState`], sans-IO (offsets are made
//! up): what each call changes and which effects it returns.

use crate::api::{Backoff, Overflow, QueueOptions};
use crate::error::BrokerError;
use crate::queue::entry::Entry;
use crate::queue::record::{MessageMeta, SHARED, SettleReason, StateOp};
use crate::queue::state::{
    Acked, Admission, Arrived, Effect, QueueState, format_receipt, key_hash,
};

pub(super) const QUEUE: &str = "q";
pub(super) const T0: i64 = 1_000_000;

// ---------------------------------------------------------------------------
// Unit tests of specific behaviours (sans-IO: offsets are made up).

pub(super) fn entry(offset: u64, priority: u8, group: Option<&str>, size: u32) -> Entry {
    Entry {
        offset,
        group: group.map_or(0, key_hash),
        expires_at: 0,
        enqueued_at: T0,
        size,
        attempts: 0,
        origin: 0,
        priority,
        seq: 0,
    }
}

/// Admits and commits `entries` (each `(entry, not_before)`), as a send does.
pub(super) fn send(state: &mut QueueState, entries: Vec<(Entry, i64)>, now: i64) -> Vec<Effect> {
    let items: Vec<(Option<&str>, u32)> = entries.iter().map(|(e, _)| (None, e.size)).collect();
    state.admit(QUEUE, &items, now).expect("admitted");
    state.commit(entries, true, now)
}

fn offsets(leased: &[(Entry, u64)]) -> Vec<u64> {
    leased.iter().map(|(e, _)| e.offset).collect()
}

#[test]
fn lease_takes_highest_priority_first_then_fifo() {
    let mut state = QueueState::new(
        QueueOptions {
            max_priority: 3,
            ..QueueOptions::default()
        },
        1,
    );
    let sent = [(0, 1), (1, 3), (2, 0), (3, 3), (4, 1), (5, 2)];
    send(
        &mut state,
        sent.iter()
            .map(|&(o, p)| (entry(o, p, None, 1), 0))
            .collect(),
        T0,
    );
    let (first, _) = state.lease(2, 1_000, T0);
    assert_eq!(offsets(&first), [1, 3]);
    let (rest, effects) = state.lease(10, 1_000, T0);
    assert_eq!(offsets(&rest), [5, 0, 4, 2]);
    assert_eq!(effects, [Effect::PersistWithNextAppend]);
    assert_eq!(
        state.take_deferred(),
        Some(StateOp::Delivered(vec![
            (0, 1),
            (1, 1),
            (2, 1),
            (3, 1),
            (4, 1),
            (5, 1)
        ])),
        "both leases' records, for the next append, in offset order"
    );
}

#[test]
fn a_group_delivers_one_at_a_time_and_unparks_on_ack() {
    let mut state = QueueState::new(QueueOptions::default(), 1);
    let sent = vec![
        (entry(0, 0, Some("a"), 1), 0),
        (entry(1, 0, Some("a"), 1), 0),
        (entry(2, 0, Some("b"), 1), 0),
        (entry(3, 0, Some("a"), 1), 0),
    ];
    send(&mut state, sent, T0);
    let (leased, _) = state.lease(10, 1_000, T0);
    assert_eq!(offsets(&leased), [0, 2], "1 and 3 wait for 0");
    assert_eq!(
        state.stats(0, T0).ready,
        2,
        "parked messages count as ready"
    );
    assert!(state.lease(10, 1_000, T0).0.is_empty());
    let acked = state.ack(QUEUE, &format_receipt(0, leased[0].1));
    assert!(
        matches!(acked, Ok(Acked::Now(e)) if e.offset == 0),
        "{acked:?}"
    );
    let (next, _) = state.lease(10, 1_000, T0);
    assert_eq!(offsets(&next), [1], "the group's next, and only that");
}

#[test]
fn a_delayed_send_does_not_free_a_busy_group() {
    let mut state = QueueState::new(QueueOptions::default(), 1);
    send(
        &mut state,
        vec![
            (entry(0, 0, Some("a"), 1), 0),
            (entry(1, 0, Some("a"), 1), T0 + 10),
        ],
        T0,
    );
    let (leased, _) = state.lease(10, 1_000, T0);
    assert_eq!(offsets(&leased), [0]);
    state.tick(T0 + 10);
    let (second, _) = state.lease(10, 1_000, T0 + 10);
    assert!(
        second.is_empty(),
        "offset 1 leased while 0 of its group is: {second:?}"
    );
    state.ack(QUEUE, &format_receipt(0, leased[0].1)).unwrap();
    assert_eq!(offsets(&state.lease(10, 1_000, T0 + 10).0), [1]);
}

#[test]
fn exponential_backoff_doubles_up_to_the_cap() {
    let options = QueueOptions {
        retry_delay_ms: 100,
        retry_backoff: Backoff::Exponential,
        retry_delay_max_ms: 1_000,
        ..QueueOptions::default()
    };
    let mut state = QueueState::new(options, 1);
    let delays: Vec<u64> = (1..=7).map(|a| state.backoff(a)).collect();
    assert_eq!(delays, [100, 200, 400, 800, 1_000, 1_000, 1_000]);
    assert_eq!(state.backoff(u32::MAX), 1_000, "no overflow");
    // A nack without a delay of its own waits for the backoff of its delivery count.
    send(&mut state, vec![(entry(0, 0, None, 1), 0)], T0);
    let mut now = T0;
    for (attempt, delay) in [(1, 100), (2, 200), (3, 400)] {
        let (leased, _) = state.lease(1, 1_000, now);
        assert_eq!(leased[0].0.attempts, attempt);
        let effects = state
            .nack(QUEUE, &format_receipt(0, leased[0].1), true, None, now)
            .unwrap();
        assert_eq!(
            effects,
            [Effect::Persist(StateOp::Retry(vec![(
                0,
                attempt,
                now + delay
            )]))]
        );
        state.tick(now + delay - 1);
        assert!(!state.has_ready(), "not before its delay");
        now += delay;
        state.tick(now);
    }
    // An expired lease backs off the same way.
    let (leased, _) = state.lease(1, 50, now);
    assert_eq!(leased[0].0.attempts, 4);
    let effects = state.tick(now + 50);
    assert_eq!(
        effects,
        [Effect::Persist(StateOp::Retry(vec![(
            0,
            4,
            now + 50 + 800
        )]))]
    );
}

#[test]
fn duplicates_within_the_window_are_accepted_but_not_enqueued() {
    let options = QueueOptions {
        dedup_window_ms: Some(100),
        ..QueueOptions::default()
    };
    let mut state = QueueState::new(options, 1);
    let dup = |state: &mut QueueState, ids: &[&str], now| {
        let items: Vec<(Option<&str>, u32)> = ids.iter().map(|id| (Some(*id), 1)).collect();
        match state.admit(QUEUE, &items, now).unwrap() {
            Admission::Admitted { duplicate: d, .. } => {
                let kept: Vec<(&str, u64)> = ids
                    .iter()
                    .zip(&d)
                    .filter(|(_, dup)| !**dup)
                    .map(|(id, _)| (*id, 0))
                    .collect();
                state.confirm_ids(kept);
                state.synced_below(1);
                d
            }
            Admission::Wait => panic!("nothing is in flight"),
        }
    };
    assert_eq!(
        dup(&mut state, &["a", "b", "a"], T0),
        [false, false, true],
        "within one send too"
    );
    assert_eq!(dup(&mut state, &["a"], T0 + 99), [true]);
    assert_eq!(
        dup(&mut state, &["a", "c"], T0 + 100),
        [false, false],
        "the window is over"
    );
    assert_eq!(dup(&mut state, &["b"], T0 + 100), [false]);
    assert_eq!(state.totals.duplicates, 2);
    // No id, no de-duplication.
    assert_eq!(
        state
            .admit(QUEUE, &[(None, 1), (None, 1)], T0 + 100)
            .unwrap(),
        Admission::Admitted {
            duplicate: vec![false, false],
            effects: vec![]
        }
    );
}

#[test]
fn a_rejected_send_leaves_nothing_reserved() {
    let options = QueueOptions {
        max_length: Some(2),
        overflow: Overflow::RejectPublish,
        dedup_window_ms: Some(1_000),
        ..QueueOptions::default()
    };
    let mut state = QueueState::new(options, 1);
    state
        .admit(QUEUE, &[(Some("a"), 1), (Some("b"), 1)], T0)
        .unwrap();
    state.confirm_ids([("a", 0), ("b", 1)]);
    state.synced_below(2);
    state.commit(
        vec![(entry(0, 0, None, 1), 0), (entry(1, 0, None, 1), 0)],
        true,
        T0,
    );
    for _ in 0..3 {
        let refused = state.admit(QUEUE, &[(Some("c"), 1)], T0);
        assert!(
            matches!(refused, Err(BrokerError::QueueFull { .. })),
            "{refused:?}"
        );
    }
    // One out: exactly one fits again, and "c" was not remembered as seen.
    let (leased, _) = state.lease(1, 1_000, T0);
    assert_eq!(leased.len(), 1);
    assert_eq!(
        state.admit(QUEUE, &[(Some("c"), 1)], T0).unwrap(),
        Admission::Admitted {
            duplicate: vec![false],
            effects: vec![]
        }
    );
    let refused = state.admit(QUEUE, &[(Some("d"), 1)], T0);
    assert!(
        matches!(refused, Err(BrokerError::QueueFull { .. })),
        "c is reserved: {refused:?}"
    );
    // All duplicates: nothing new, so nothing to refuse.
    assert_eq!(
        state.admit(QUEUE, &[(Some("a"), 1)], T0).unwrap(),
        Admission::Admitted {
            duplicate: vec![true],
            effects: vec![Effect::Persist(StateOp::Duplicates(1))]
        }
    );
}

#[test]
fn drop_head_overflow_drops_the_next_to_deliver() {
    let options = QueueOptions {
        max_length: Some(2),
        max_priority: 1,
        ..QueueOptions::default()
    };
    let mut state = QueueState::new(options, 1);
    assert!(
        send(
            &mut state,
            vec![(entry(0, 0, None, 10), 0), (entry(1, 0, None, 20), 0)],
            T0
        )
        .is_empty()
    );
    let effects = send(&mut state, vec![(entry(2, 0, None, 30), 0)], T0);
    assert_eq!(
        effects,
        [Effect::Persist(StateOp::Settled(
            SettleReason::Dropped,
            vec![0]
        ))]
    );
    let stats = state.stats(0, T0);
    assert_eq!((stats.ready, stats.bytes, stats.dropped_total), (2, 50, 1));
    // Delayed messages are not counted (not ready), and the head is by priority.
    let effects = send(
        &mut state,
        vec![(entry(3, 0, None, 1), T0 + 5), (entry(4, 1, None, 1), 0)],
        T0,
    );
    assert_eq!(
        effects,
        [Effect::Persist(StateOp::Settled(
            SettleReason::Dropped,
            vec![4]
        ))]
    );
    assert_eq!(offsets(&state.lease(10, 1_000, T0).0), [1, 2]);
}

// ---------------------------------------------------------------------------
// The records the state decides (once decided by the actor).

/// A first delivery acked before its `Delivered` record is written needs none; a
/// redelivery's record is kept (it counts `redelivered_total` at replay).
#[test]
fn a_first_delivery_acked_before_its_record_needs_none() {
    let mut state = QueueState::new(QueueOptions::default(), 1);
    send(
        &mut state,
        vec![(entry(0, 0, None, 1), 0), (entry(1, 0, None, 1), 0)],
        T0,
    );
    let (leased, effects) = state.lease(2, 1_000, T0);
    assert_eq!(effects, [Effect::PersistWithNextAppend]);
    let acked = state.ack_all(QUEUE, vec![format_receipt(0, leased[0].1)]);
    assert_eq!(
        acked.effects,
        [Effect::Persist(StateOp::Settled(
            SettleReason::Acked,
            vec![0]
        ))]
    );
    assert_eq!(
        state.take_deferred(),
        Some(StateOp::Delivered(vec![(1, 1)])),
        "only the unacked delivery is recorded"
    );
    assert_eq!(state.take_deferred(), None, "taken once");
    // Offset 1 comes back after its lease and is acked at once: its record stays.
    state.tick(T0 + 1_000);
    let (again, _) = state.lease(1, 1_000, T0 + 1_000);
    assert_eq!(again[0].0.attempts, 2);
    state.ack_all(QUEUE, vec![format_receipt(1, again[0].1)]);
    assert_eq!(
        state.take_deferred(),
        Some(StateOp::Delivered(vec![(1, 2)]))
    );
}

#[test]
fn a_purge_returns_its_count_and_its_record() {
    let mut state = QueueState::new(QueueOptions::default(), 1);
    assert_eq!(state.purge(), (0, Vec::new()), "nothing to record");
    send(
        &mut state,
        vec![(entry(0, 0, None, 1), 0), (entry(1, 0, None, 1), T0 + 10)],
        T0,
    );
    let (count, effects) = state.purge();
    assert_eq!(count, 2);
    let [Effect::Persist(StateOp::Settled(SettleReason::Purged, offsets))] = &effects[..] else {
        panic!("{effects:?}");
    };
    let mut offsets = offsets.clone();
    offsets.sort_unstable();
    assert_eq!(offsets, [0, 1], "ready and delayed");
    assert_eq!(state.stats(0, T0).purged_total, 2);
}

/// Expired messages copied to the dead-letter queue are recorded apart, so replay
/// counts them both expired and dead-lettered; a redrive is one record.
#[test]
fn finished_dead_letters_record_expiries_apart() {
    let options = QueueOptions {
        dead_letter_queue: Some("dlq".into()),
        ..QueueOptions::default()
    };
    let mut state = QueueState::new(options, 1);
    let mut expiring = entry(0, 0, None, 1);
    expiring.expires_at = T0 + 5;
    send(
        &mut state,
        vec![(expiring, 0), (entry(1, 0, None, 1), 0)],
        T0,
    );
    let (leased, expired) = state.lease(1, 1_000, T0 + 5);
    assert_eq!(offsets(&leased), [1], "offset 0 expired on the way");
    assert!(matches!(
        &expired[..],
        [Effect::DeadLetter(_), Effect::PersistWithNextAppend]
    ));
    let rejected = state
        .nack(QUEUE, &format_receipt(1, leased[0].1), false, None, T0 + 5)
        .unwrap();
    assert!(matches!(&rejected[..], [Effect::DeadLetter(_)]));
    assert_eq!(
        state.finish_transit(&[0, 1], SettleReason::DeadLettered),
        [
            Effect::Persist(StateOp::Settled(SettleReason::DeadLettered, vec![1])),
            Effect::Persist(StateOp::Settled(SettleReason::ExpiredDeadLettered, vec![0])),
        ]
    );
    let stats = state.stats(0, T0);
    assert_eq!((stats.dead_lettered_total, stats.expired_total), (2, 1));
    assert_eq!(state.floor(2), 2, "both are gone");
    assert!(state.finish_transit(&[], SettleReason::Redriven).is_empty());
}

#[test]
fn the_queue_ttl_is_stamped_on_sends_without_an_expiry_from_when_they_become_deliverable() {
    let ttl = QueueOptions {
        message_ttl_ms: Some(1_000),
        ..QueueOptions::default()
    };
    let state = QueueState::new(ttl, 1);
    let mut metas = [
        MessageMeta::default(),
        MessageMeta {
            not_before_ms: T0 + 500,
            ..MessageMeta::default()
        },
        MessageMeta {
            expires_at_ms: T0 + 10,
            ..MessageMeta::default()
        },
    ];
    state.stamp_ttl(metas.iter_mut(), T0);
    let expiries: Vec<i64> = metas.iter().map(|m| m.expires_at_ms).collect();
    assert_eq!(
        expiries,
        [T0 + 1_000, T0 + 1_500, T0 + 10],
        "from now, from the delay's end, or the message's own"
    );
    let no_ttl = QueueState::new(QueueOptions::default(), 1);
    let mut meta = [MessageMeta::default()];
    no_ttl.stamp_ttl(meta.iter_mut(), T0);
    assert_eq!(meta[0].expires_at_ms, 0, "no TTL, no expiry");
}

#[test]
fn a_shared_arrival_expires_at_the_earlier_of_its_own_expiry_and_the_queue_ttl() {
    let ttl = QueueOptions {
        message_ttl_ms: Some(1_000),
        ..QueueOptions::default()
    };
    let state = QueueState::new(ttl, 1);
    assert_eq!(state.arrival_expiry(0, 0, T0), T0 + 1_000);
    assert_eq!(state.arrival_expiry(T0 + 10, 0, T0), T0 + 10);
    assert_eq!(
        state.arrival_expiry(T0 + 5_000, T0 + 200, T0),
        T0 + 1_200,
        "the TTL runs from the delay's end"
    );
    let no_ttl = QueueState::new(QueueOptions::default(), 1);
    assert_eq!(no_ttl.arrival_expiry(0, 0, T0), 0);
    assert_eq!(no_ttl.arrival_expiry(T0 + 10, 0, T0), T0 + 10);
}

#[test]
fn admitting_duplicates_returns_the_record_that_counts_them() {
    let mut state = QueueState::new(dedup_window(1_000), 1);
    let first = state
        .admit(QUEUE, &[(Some("x"), 1), (Some("x"), 1), (Some("y"), 1)], T0)
        .unwrap();
    assert_eq!(
        first,
        Admission::Admitted {
            duplicate: vec![false, true, false],
            effects: vec![Effect::Persist(StateOp::Duplicates(1))],
        }
    );
    state.confirm_ids([("x", 0), ("y", 1)]);
    state.synced_below(2);
    let again = state
        .admit(
            QUEUE,
            &[(Some("x"), 1), (Some("y"), 1), (Some("z"), 1)],
            T0 + 1,
        )
        .unwrap();
    assert_eq!(
        again,
        Admission::Admitted {
            duplicate: vec![true, true, false],
            effects: vec![Effect::Persist(StateOp::Duplicates(2))],
        }
    );
    let none = state.admit(QUEUE, &[(Some("w"), 1)], T0 + 2).unwrap();
    assert_eq!(
        none,
        Admission::Admitted {
            duplicate: vec![false],
            effects: Vec::new(),
        },
        "no duplicate, no record"
    );
}

fn dedup_window(ms: u64) -> QueueOptions {
    QueueOptions {
        dedup_window_ms: Some(ms),
        ..QueueOptions::default()
    }
}

/// A shared message as the actor hands it to [`QueueState::arrive`].
fn shared(n: u64, priority: u8, not_before: i64, id: &str) -> (Entry, i64, &str) {
    (entry(SHARED | n, priority, None, 1), not_before, id)
}

#[test]
fn an_arrival_takes_in_the_new_and_declines_the_duplicates_by_record() {
    let options = QueueOptions {
        max_priority: 1,
        message_ttl_ms: Some(500),
        ..dedup_window(1_000)
    };
    let mut state = QueueState::new(options, 1);
    let incoming = [
        shared(1, 5, 0, "a"),
        shared(2, 0, 0, "a"),
        shared(3, 0, T0 + 100, ""),
    ];
    let Arrived::Taken {
        duplicate,
        records,
        effects,
    } = state.arrive(QUEUE, &incoming, T0 - 10, 7, T0)
    else {
        panic!("taken");
    };
    assert_eq!(duplicate, [false, true, false]);
    assert_eq!(
        records,
        [
            Effect::Persist(StateOp::Duplicates(1)),
            Effect::Persist(StateOp::Declined(vec![SHARED | 2])),
        ],
        "the answer waits for the duplicate counted and declined"
    );
    assert!(effects.is_empty(), "{effects:?}");
    assert_eq!(state.shared_mark(), Some(7));
    let (leased, _) = state.lease(10, 1_000, T0);
    assert_eq!(offsets(&leased), [SHARED | 1]);
    let got = leased[0].0;
    assert_eq!(got.priority, 1, "the queue's highest priority");
    assert_eq!(got.enqueued_at, T0 - 10, "enqueued when published");
    assert_eq!(got.expires_at, T0 + 490, "the queue's TTL from publication");
    let (later, _) = state.lease(10, 1_000, T0 + 100);
    assert!(later.is_empty(), "delayed: due at T0 + 100, ticked below");
    state.tick(T0 + 100);
    let (later, _) = state.lease(10, 1_000, T0 + 100);
    assert_eq!(offsets(&later), [SHARED | 3]);
    assert_eq!(
        later[0].0.expires_at,
        T0 + 600,
        "the TTL from the delay's end"
    );
    // The same arrival again (a restarted actor's replay took it in): nothing.
    let Arrived::Taken {
        duplicate,
        records,
        effects,
    } = state.arrive(QUEUE, &incoming, T0 - 10, 9, T0 + 200)
    else {
        panic!("taken");
    };
    assert_eq!(duplicate, [false, false, false]);
    assert!(records.is_empty() && effects.is_empty());
}

/// The records and whether it is dead-lettered, of an arrival refused as the
/// queue is full.
fn full(refused: Arrived) -> (Vec<Effect>, bool) {
    match refused {
        Arrived::Refused {
            error: BrokerError::QueueFull { .. },
            records,
            dead_letter,
        } => (records, dead_letter),
        other => panic!("refused as full: {other:?}"),
    }
}

#[test]
fn an_arrival_refused_by_reject_publish_is_declined_by_record() {
    let options = QueueOptions {
        max_length: Some(1),
        overflow: Overflow::RejectPublish,
        ..QueueOptions::default()
    };
    let mut state = QueueState::new(options, 1);
    send(&mut state, vec![(entry(0, 0, None, 1), 0)], T0);
    let refused = state.arrive(
        QUEUE,
        &[shared(1, 0, 0, ""), shared(2, 0, 0, "")],
        T0,
        1,
        T0,
    );
    let (records, dead_letter) = full(refused);
    assert!(!dead_letter, "reject-publish drops nothing anywhere");
    assert_eq!(
        records,
        [Effect::Persist(StateOp::Declined(vec![
            SHARED | 1,
            SHARED | 2
        ]))]
    );
    assert_eq!(state.stats(0, T0).ready, 1, "nothing of it is held");
    assert_eq!(state.shared_below(), SHARED | 3, "seen all the same");
}

#[test]
fn an_arrival_waits_for_an_earlier_send_of_its_id() {
    let mut state = QueueState::new(dedup_window(1_000), 1);
    state.admit(QUEUE, &[(Some("a"), 1)], T0).unwrap();
    let waits = state.arrive(QUEUE, &[shared(1, 0, 0, "a")], T0, 1, T0);
    assert!(matches!(waits, Arrived::Wait), "{waits:?}");
    state.confirm_ids([("a", 0)]);
    state.synced_below(1);
    let taken = state.arrive(QUEUE, &[shared(1, 0, 0, "a")], T0, 1, T0);
    assert!(
        matches!(&taken, Arrived::Taken { duplicate, .. } if duplicate == &[true]),
        "{taken:?}"
    );
}

fn full_queue(overflow: Overflow, dead_letter_queue: Option<&str>) -> QueueState {
    let options = QueueOptions {
        max_length: Some(1),
        overflow,
        dead_letter_queue: dead_letter_queue.map(str::to_owned),
        ..QueueOptions::default()
    };
    let mut state = QueueState::new(options, 1);
    send(&mut state, vec![(entry(0, 0, None, 1), 0)], T0);
    state
}

fn refused(state: &mut QueueState) -> BrokerError {
    state
        .admit(QUEUE, &[(None, 1)], T0)
        .expect_err("the queue is full")
}

#[test]
fn reject_publish_dlx_dead_letters_a_refused_send_and_answers_dead_letters_as_taken() {
    let mut state = full_queue(Overflow::RejectPublishDlx, Some("dlq"));
    let error = refused(&mut state);
    let refusal = state.refuse_send(error, false);
    assert!(refusal.dead_letter, "copied to the dead-letter queue");
    assert!(
        matches!(refusal.answer, Err(BrokerError::QueueFull { .. })),
        "a publisher is told the queue is full: {:?}",
        refusal.answer
    );
    let error = refused(&mut state);
    let refusal = state.refuse_send(error, true);
    assert!(refusal.dead_letter);
    assert!(
        refusal.answer.is_ok(),
        "dead letters go on down the chain, their sender must not retry: {:?}",
        refusal.answer
    );
    assert_eq!(state.stats(0, T0).ready, 1, "nothing of them is kept");
}

#[test]
fn a_refused_send_is_dead_lettered_only_with_reject_publish_dlx_and_a_dead_letter_queue() {
    for (overflow, dlq) in [
        (Overflow::RejectPublish, Some("dlq")),
        (Overflow::RejectPublishDlx, None),
    ] {
        let mut state = full_queue(overflow, dlq);
        let error = refused(&mut state);
        let refusal = state.refuse_send(error, false);
        assert!(!refusal.dead_letter, "{overflow:?}, {dlq:?}");
        assert!(refusal.answer.is_err(), "{overflow:?}, {dlq:?}");
    }
    // Dead letters refused with nowhere to go are still not the sender's to retry.
    let mut state = full_queue(Overflow::RejectPublishDlx, None);
    let error = refused(&mut state);
    assert!(state.refuse_send(error, true).answer.is_ok());
    let mut state = full_queue(Overflow::RejectPublish, Some("dlq"));
    let error = refused(&mut state);
    assert!(state.refuse_send(error, true).answer.is_err());
}

#[test]
fn reject_publish_dlx_dead_letters_a_refused_arrival() {
    let mut state = full_queue(Overflow::RejectPublishDlx, Some("dlq"));
    let (records, dead_letter) = full(state.arrive(QUEUE, &[shared(1, 0, 0, "")], T0, 1, T0));
    assert!(dead_letter);
    assert_eq!(
        records,
        [Effect::Persist(StateOp::Declined(vec![SHARED | 1]))]
    );
    let mut no_dlq = full_queue(Overflow::RejectPublishDlx, None);
    let refused = no_dlq.arrive(QUEUE, &[shared(1, 0, 0, "")], T0, 1, T0);
    assert!(
        matches!(
            refused,
            Arrived::Refused {
                dead_letter: false,
                ..
            }
        ),
        "{refused:?}"
    );
}
