//! Regression tests from a review: sequences the actor can produce that broke a
//! promise of the queue engine. Each test names the promise; the comment above it
//! gives the interleaving that led there. They drive [`QueueState`] and check the
//! effects it returns; where a promise spans a restart, the records those effects
//! write go into a [`MemLog`] that the real [`replay`] reads back. Counters and
//! checkpoints are checked the same way, with [`Counters`] told where each append
//! landed. (The trim and restart cycle of de-duplication ids runs through the
//! whole broker in `mem_tests.rs`.)

#![allow(clippy::cast_possible_truncation)]

use bytes::Bytes;
use weir_log::{LogConfig, MemLog, MessageLog, NewRecord};

use crate::api::{DeadLetterReason, QueueOptions};
use crate::queue::counters::Counters;
use crate::queue::entry::Entry;
use crate::queue::ready::CHUNK;
use crate::queue::record::{MessageMeta, SettleReason, StateOp, Totals};
use crate::queue::replay::{entry_of, replay};
use crate::queue::state::{Admission, DEAD_LETTER_RETRY_MS, Effect, QueueState, format_receipt};

const QUEUE: &str = "q";
const T0: i64 = 1_000_000;

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
        .block_on(f)
}

/// Appends records to `log`, as the actor's appends do, telling `counters` where
/// they landed; returns the offset of the first.
fn append(log: &MemLog, counters: &mut Counters, records: &[NewRecord], delta: Totals) -> u64 {
    let appended = block_on(log.append_batch(records)).expect("append");
    counters.landed(appended.first.0, appended.next.0, delta);
    appended.first.0
}

/// Message records for `ids`.
fn messages(ids: &[&str]) -> (Vec<NewRecord>, Totals) {
    let records = ids
        .iter()
        .map(|id| {
            MessageMeta {
                id: (*id).to_owned(),
                enqueued_at_ms: T0,
                ..MessageMeta::default()
            }
            .encode()
        })
        .map(|key| NewRecord {
            timestamp_ms: Some(T0),
            key: Some(key),
            headers: Vec::new(),
            body: Bytes::from_static(b"x"),
        })
        .collect();
    let delta = Totals {
        sent: ids.len() as u64,
        ..Totals::default()
    };
    (records, delta)
}

/// State records, with what they add to the counters.
fn states(ops: &[StateOp]) -> (Vec<NewRecord>, Totals) {
    let mut delta = Totals::default();
    for op in ops {
        delta.add(&op.delta());
    }
    (StateOp::records(ops), delta)
}

/// What a restart makes of `log`: a fresh state replayed from it.
fn restart(log: &MemLog, options: QueueOptions, now: i64) -> QueueState {
    block_on(log.close()).expect("close");
    let log = log.reopen();
    let mut state = QueueState::new(options, 1 << 40);
    block_on(replay(&log, None, &mut state, QUEUE, now)).expect("replay");
    state
}

fn dedup_options(window: u64) -> QueueOptions {
    QueueOptions {
        dedup_window_ms: Some(window),
        ..QueueOptions::default()
    }
}

fn admitted(a: Admission) -> Vec<bool> {
    match a {
        Admission::Admitted { duplicate, .. } => duplicate,
        Admission::Wait => panic!("the send waits"),
    }
}

fn entry_at(offset: u64) -> Entry {
    Entry {
        offset,
        group: 0,
        expires_at: 0,
        enqueued_at: T0,
        size: 1,
        attempts: 0,
        origin: 0,
        priority: 0,
        seq: 0,
    }
}

/// Admits, "writes" at `offset` (durable at once) and commits one message.
fn send_one(state: &mut QueueState, id: Option<&str>, offset: u64) {
    state.admit(QUEUE, &[(id, 1)], T0).expect("admitted");
    if let Some(id) = id {
        state.confirm_ids([(id, offset)]);
    }
    state.synced_below(offset + 1);
    assert!(
        state
            .commit(vec![(entry_at(offset), 0)], true, T0)
            .is_empty()
    );
}

// ---------------------------------------------------------------------------
// De-duplication

/// A retry of a send whose append is still in flight must not be confirmed as a
/// duplicate: that append may still fail (or the broker die), and the producer would
/// hold a 2xx for a message that exists nowhere. It waits, and the outcome of the
/// first send decides.
#[test]
fn a_send_is_not_confirmed_as_a_duplicate_of_a_send_that_is_not_yet_durable() {
    let mut state = QueueState::new(dedup_options(60_000), 1);
    let first = state.admit(QUEUE, &[(Some("x"), 1)], T0).unwrap();
    assert_eq!(
        first,
        Admission::Admitted {
            duplicate: vec![false],
            effects: vec![]
        },
        "the original, in flight"
    );
    let retry = state.admit(QUEUE, &[(Some("x"), 1)], T0 + 1).unwrap();
    assert_eq!(retry, Admission::Wait, "the retry waits for the original");
    // The original's append fails: the retry is a new send.
    state.cancel(&["x"], 1, 1);
    let retry = state.admit(QUEUE, &[(Some("x"), 1)], T0 + 2).unwrap();
    assert_eq!(
        retry,
        Admission::Admitted {
            duplicate: vec![false],
            effects: vec![]
        }
    );
    // This time it is written: a retry still waits for the sync (decision 0005
    // takes a send in once written, and its sync may still fail).
    state.confirm_ids([("x", 0)]);
    let retry = state.admit(QUEUE, &[(Some("x"), 1)], T0 + 3).unwrap();
    assert_eq!(retry, Admission::Wait, "written is not durable");
    // Synced: a further retry is a duplicate at once.
    state.synced_below(1);
    let again = state.admit(QUEUE, &[(Some("x"), 1)], T0 + 3).unwrap();
    assert_eq!(
        again,
        Admission::Admitted {
            duplicate: vec![true],
            effects: vec![Effect::Persist(StateOp::Duplicates(1))]
        }
    );
    // A later send of "y" is written, but its sync fails: its id is forgotten, and
    // a retry is a new send.
    assert_eq!(
        state.admit(QUEUE, &[(Some("y"), 1)], T0 + 4).unwrap(),
        Admission::Admitted {
            duplicate: vec![false],
            effects: vec![]
        }
    );
    state.confirm_ids([("y", 1)]);
    assert_eq!(state.sync_failed(1, 2), 1);
    assert_eq!(
        state.admit(QUEUE, &[(Some("y"), 1)], T0 + 5).unwrap(),
        Admission::Admitted {
            duplicate: vec![false],
            effects: vec![]
        }
    );
    assert_eq!(
        state.admit(QUEUE, &[(Some("x"), 1)], T0 + 5).unwrap(),
        Admission::Admitted {
            duplicate: vec![true],
            effects: vec![Effect::Persist(StateOp::Duplicates(1))]
        },
        "a durable id is kept"
    );
}

/// A dedup checkpoint holds only ids whose send is durable, so a crash cannot leave
/// an id remembered for a message that was never written.
#[test]
fn a_dedup_checkpoint_does_not_hold_ids_whose_message_was_never_written() {
    let mut state = QueueState::new(dedup_options(600_000), 1);
    send_one(&mut state, Some("a"), 0);
    // "x" admitted, its append in flight.
    assert_eq!(
        admitted(state.admit(QUEUE, &[(Some("x"), 1)], T0).unwrap()),
        [false]
    );
    let ids = state.dedup_ids_below(u64::MAX, 0, T0);
    assert_eq!(ids, [(T0 + 600_000, "a".to_owned())], "only the durable id");
    // The checkpoint is written; then a crash: the append of "x" never lands.
    let log = MemLog::new(LogConfig::default());
    let mut counters = Counters::new(Totals::default(), 0, 0);
    let (records, delta) = states(&[StateOp::Dedup(ids)]);
    append(&log, &mut counters, &records, delta);
    let mut state = restart(&log, dedup_options(600_000), T0 + 1_000);
    let again = state.admit(QUEUE, &[(Some("x"), 1)], T0 + 1_000).unwrap();
    assert_eq!(
        admitted(again),
        [false],
        "the retry of a send never written is a new send"
    );
    let again = state.admit(QUEUE, &[(Some("a"), 1)], T0 + 1_000).unwrap();
    assert_eq!(admitted(again), [true], "the checkpointed id is kept");
}

/// Replay restores ids in log order and checkpoints list them in any order; ids
/// still leave the window on time.
#[test]
fn restored_dedup_ids_leave_the_window_on_time_whatever_the_checkpoint_order() {
    let ids: Vec<(i64, String)> = (0..10)
        .rev()
        .map(|i| (T0 + 1_000 + i * 100, format!("id{i}")))
        .collect();
    let log = MemLog::new(LogConfig::default());
    let mut counters = Counters::new(Totals::default(), 0, 0);
    let (records, delta) = states(&[StateOp::Dedup(ids)]);
    append(&log, &mut counters, &records, delta);
    let mut state = restart(&log, dedup_options(1_000), T0 + 1);
    // At T0 + 1_550, id0..=id5 are out of their window.
    let now = T0 + 1_550;
    let items: Vec<(Option<&str>, u32)> = ["id0", "id5", "id6"]
        .iter()
        .map(|id| (Some(*id), 1))
        .collect();
    assert_eq!(
        admitted(state.admit(QUEUE, &items, now).unwrap()),
        [false, false, true],
        "id0 and id5 left the window 550 and 50 ms ago"
    );
}

/// However many ids a window holds, the checkpoint is written in records far
/// below the log's record limit.
#[test]
fn a_dedup_checkpoint_of_a_busy_queue_can_be_written() {
    let now = 1_700_000_000_000;
    let mut state = QueueState::new(dedup_options(300_000), 1);
    let ids: Vec<String> = (0..450_000u64)
        .map(|n| format!("{:032x}", n.wrapping_mul(0x9e37_79b9_7f4a_7c15)))
        .collect();
    for chunk in ids.chunks(1_000) {
        let items: Vec<(Option<&str>, u32)> =
            chunk.iter().map(|id| (Some(id.as_str()), 1)).collect();
        state.admit(QUEUE, &items, now).unwrap();
        state.confirm_ids(chunk.iter().map(String::as_str).zip(0..));
        state.synced_below(u64::MAX);
    }
    let counters = Counters::new(Totals::default(), 0, 0);
    let (ops, chunks) = counters.checkpoint(&state.dedup_ids_below(u64::MAX, 0, now));
    assert_eq!(chunks.iter().map(Vec::len).sum::<usize>(), 450_000);
    let log = MemLog::new(LogConfig::default());
    for group in ops.chunks(8) {
        let written = block_on(log.append_batch(&StateOp::records(group)));
        assert!(
            written.is_ok(),
            "the checkpoint could not be written: {written:?}"
        );
    }
}

// ---------------------------------------------------------------------------
// Counters and dead letters

/// A dead letter whose copy fails (DLQ full with reject-publish, queue limit, DLQ
/// stopping) waits and tries again later: it is not delivered meanwhile, the actor
/// does not spin, and its expiry counts once.
#[test]
fn a_failed_dead_letter_waits_retries_and_counts_its_expiry_once() {
    let options = QueueOptions {
        dead_letter_queue: Some("dlq".into()),
        ..QueueOptions::default()
    };
    let mut state = QueueState::new(options, 1);
    let mut e = entry_at(0);
    e.expires_at = T0 + 10;
    state.admit(QUEUE, &[(None, 1)], T0).unwrap();
    state.commit(vec![(e, 0)], true, T0);
    let mut now = T0 + 10;
    for _ in 0..3 {
        let effects = state.tick(now);
        assert!(
            matches!(&effects[..], [Effect::DeadLetter(items)] if items[0].1 == DeadLetterReason::Expired),
            "{effects:?}"
        );
        state.abort_transit(&[0], now); // the DLQ refused the copy
        assert!(state.tick(now + 1).is_empty(), "no retry before the pause");
        assert!(
            state.lease(1, 1_000, now + 1).0.is_empty(),
            "never delivered"
        );
        assert_eq!(state.next_due(), Some(now + DEAD_LETTER_RETRY_MS));
        now += DEAD_LETTER_RETRY_MS;
    }
    assert_eq!(state.totals.expired, 1, "one message expired, once");
    assert_eq!(state.stats(0, now).in_transit, 1);
}

/// A record that lands after a checkpoint is counted once: the checkpoint says
/// which records it covers (`below`), replay adds the rest.
#[test]
fn a_checkpoint_does_not_double_count_a_record_that_lands_after_it() {
    let log = MemLog::new(LogConfig::default());
    let mut counters = Counters::new(Totals::default(), 0, 0);
    let (records, delta) = messages(&["a"]);
    let a = append(&log, &mut counters, &records, delta);
    let (records, delta) = states(&[StateOp::Delivered(vec![(a, 1)])]);
    append(&log, &mut counters, &records, delta);
    // The checkpoint covers what landed so far (the message and its delivery)...
    counters.fold(log.next_offset().0);
    let (ops, _) = counters.checkpoint(&[]);
    let (records, delta) = states(&ops);
    append(&log, &mut counters, &records, delta);
    // ...then the ack's record lands; then kill -9.
    let (records, delta) = states(&[StateOp::Settled(SettleReason::Acked, vec![a])]);
    append(&log, &mut counters, &records, delta);
    let state = restart(&log, QueueOptions::default(), T0 + 10);
    let stats = state.stats(0, T0 + 10);
    assert_eq!((stats.sent_total, stats.acked_total), (1, 1));
}

/// A checkpoint written but not followed by its trim (a crash in between): replay
/// takes it and does not count the records below it twice.
#[test]
fn a_checkpoint_without_its_trim_is_not_counted_twice() {
    let log = MemLog::new(LogConfig::default());
    let mut counters = Counters::new(Totals::default(), 0, 0);
    let (records, delta) = messages(&["a", "b"]);
    append(&log, &mut counters, &records, delta);
    let (records, delta) = states(&[StateOp::Settled(SettleReason::Purged, vec![0, 1])]);
    append(&log, &mut counters, &records, delta);
    counters.fold(log.next_offset().0);
    let (ops, _) = counters.checkpoint(&[]);
    let (records, delta) = states(&ops);
    append(&log, &mut counters, &records, delta);
    let state = restart(&log, QueueOptions::default(), T0 + 1);
    let stats = state.stats(0, T0 + 1);
    assert_eq!((stats.sent_total, stats.purged_total), (2, 2));
}

// ---------------------------------------------------------------------------
// Trimming

/// An ack stays held (for the trim floor) until its record is durable. When the
/// record cannot be written the ack is kept and its record written again, so
/// housekeeping meanwhile must leave the message in the log (it trims below
/// `floor`): a restart before the ack is written delivers it again, and must be
/// able to read it. Meanwhile it is never delivered again by this run.
#[test]
fn an_unwritten_ack_never_lets_the_log_drop_the_message() {
    let mut state = QueueState::new(QueueOptions::default(), 1);
    send_one(&mut state, None, 0);
    send_one(&mut state, None, 1);
    let (leased, _) = state.lease(1, 30_000, T0);
    let receipt = format_receipt(0, leased[0].1);
    let batch = state.ack_all(QUEUE, vec![receipt.clone()]);
    assert_eq!((batch.report.settled, &batch.writing), (1, &vec![0]));
    assert_eq!(
        batch.effects,
        [Effect::Persist(StateOp::Settled(
            SettleReason::Acked,
            vec![0]
        ))]
    );
    assert_eq!(state.floor(2), 0, "held while its record is in flight");
    // The ack's append failed (NoSpace, EIO): housekeeping runs while it waits.
    state.acks_written(&[0], false);
    assert_eq!(state.unwritten_acks(), 1);
    assert_eq!(
        state.floor(2),
        0,
        "the unwritten ack's message stays readable"
    );
    let (again, _) = state.lease(2, 30_000, T0 + 1);
    assert_eq!(
        again.iter().map(|(e, _)| e.offset).collect::<Vec<_>>(),
        [1],
        "never delivered again meanwhile"
    );
    // Its record is written again; acking the receipt once more joins that.
    assert_eq!(
        state.retry_acks(),
        [Effect::Persist(StateOp::Settled(
            SettleReason::Acked,
            vec![0]
        ))]
    );
    assert!(state.ack_retry_in_flight());
    let joined = state.ack_all(QUEUE, vec![receipt.clone()]);
    assert!(joined.joined && joined.effects.is_empty() && joined.report.settled == 1);
    // That rewrite fails too: still held, still waiting.
    assert_eq!(state.acks_retried(false), 0);
    assert_eq!((state.unwritten_acks(), state.floor(2)), (1, 0));
    // The receipt acked again is written with it, and lands.
    let again = state.ack_all(QUEUE, vec![receipt]);
    assert_eq!(again.writing, [0]);
    state.acks_written(&[0], true);
    assert_eq!(
        (state.unwritten_acks(), state.floor(2)),
        (0, 1),
        "now it may go"
    );
}

// ---------------------------------------------------------------------------
// Memory

/// Settled and extended leases leave stale deadlines behind; their number stays
/// bounded by the leases held.
#[test]
fn settled_leases_leave_a_bounded_number_of_deadlines() {
    let mut state = QueueState::new(QueueOptions::default(), 1);
    for n in 0..10_000u64 {
        state.admit(QUEUE, &[(None, 1)], T0).unwrap();
        state.commit(vec![(entry_at(n), 0)], true, T0);
        let (leased, _) = state.lease(1, 12 * 3_600_000, T0);
        state.ack(QUEUE, &format_receipt(n, leased[0].1)).unwrap();
        state.acks_written(&[n], true);
    }
    assert!(
        state.deadline_count() <= 1_025,
        "{} deadlines kept",
        state.deadline_count()
    );
}

/// A drained backlog gives its memory back: the ready queue frees its chunks as it
/// drains (a `VecDeque` never shrank, so a queue that once held 10 million messages
/// kept ~560 MB after they were gone).
#[test]
fn a_drained_backlog_gives_back_the_ready_queues_memory() {
    let mut state = QueueState::new(QueueOptions::default(), 1);
    let entries: Vec<(Entry, i64)> = (0..20_000u64)
        .map(|offset| {
            let meta = MessageMeta {
                id: format!("m{offset}"),
                enqueued_at_ms: T0,
                ..MessageMeta::default()
            };
            (entry_of(offset, &meta, 1), 0)
        })
        .collect();
    let _ = state.commit(entries, true, T0);
    let grown = state.ready_capacity();
    assert!(grown >= 20_000, "{grown}");
    let (leased, _) = state.lease(19_990, 60_000, T0);
    assert_eq!(leased.len(), 19_990);
    let shrunk = state.ready_capacity();
    assert!(
        shrunk < 10 + 2 * CHUNK,
        "capacity {shrunk} after draining (was {grown})"
    );
    // What is left is still delivered, in order.
    let (rest, _) = state.lease(100, 60_000, T0);
    let offsets: Vec<u64> = rest.iter().map(|(e, _)| e.offset).collect();
    assert_eq!(offsets, (19_990..20_000).collect::<Vec<_>>());
}
