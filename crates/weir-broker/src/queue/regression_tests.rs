//! Regression tests from a review: sequences the actor can produce (its steps replayed by hand against
//! [`QueueState`], a [`MemLog`] and the real [`replay`]) that break a promise of the
//! queue engine. Each test names the promise; the comment above it gives the
//! interleaving in the actor that leads there.

#![allow(clippy::cast_possible_truncation)]

use bytes::Bytes;
use weir_log::{LogConfig, MemLog, MessageLog, NewRecord, Offset, ReadLimits};

use crate::api::{DeadLetterReason, QueueOptions};
use crate::queue::counters::Counters;
use crate::queue::entry::Entry;
use crate::queue::ready::CHUNK;
use crate::queue::record::{MessageMeta, SettleReason, StateOp, Totals};
use crate::queue::replay::{entry_of, replay};
use crate::queue::state::{Admission, DEAD_LETTER_RETRY_MS, Effect, QueueState, format_receipt};

const QUEUE: &str = "q";
const T0: i64 = 1_000_000;

struct Rig {
    rt: tokio::runtime::Runtime,
    log: MemLog,
    state: QueueState,
    counters: Counters,
    restarts: u64,
}

impl Rig {
    fn new(options: QueueOptions) -> Rig {
        Rig {
            rt: tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("runtime"),
            log: MemLog::new(LogConfig::default()),
            state: QueueState::new(options, 1),
            counters: Counters::new(Totals::default(), 0, 0),
            restarts: 0,
        }
    }

    /// Appends message records stamped `now`; returns their entries (not committed).
    fn write(&mut self, ids: &[&str], now: i64) -> Vec<(Entry, i64)> {
        let metas: Vec<MessageMeta> = ids
            .iter()
            .map(|id| MessageMeta {
                id: (*id).to_owned(),
                enqueued_at_ms: now,
                ..MessageMeta::default()
            })
            .collect();
        let records: Vec<NewRecord> = metas
            .iter()
            .map(|m| NewRecord {
                timestamp_ms: Some(now),
                key: Some(m.encode()),
                headers: Vec::new(),
                body: Bytes::from_static(b"x"),
            })
            .collect();
        let appended = self
            .rt
            .block_on(self.log.append_batch(&records))
            .expect("append");
        self.counters.landed(
            appended.first.0,
            appended.next.0,
            Totals {
                sent: appended.count(),
                ..Totals::default()
            },
        );
        appended
            .offsets()
            .zip(&metas)
            .map(|(o, m)| (entry_of(o.0, m, 1), 0))
            .collect()
    }

    /// A send as the actor does it: admit, append, confirm the ids, commit.
    fn send(&mut self, ids: &[&str], now: i64) -> Vec<Entry> {
        let items: Vec<(Option<&str>, u32)> = ids.iter().map(|id| (Some(*id), 1)).collect();
        let admitted = self.state.admit(QUEUE, &items, now).expect("admitted");
        assert_eq!(
            admitted,
            Admission::Admitted(vec![false; ids.len()]),
            "fresh ids"
        );
        let entries = self.write(ids, now);
        self.state.confirm_ids(
            ids.iter()
                .copied()
                .zip(entries.iter().map(|(e, _)| e.offset)),
        );
        self.state.synced_below(self.log.next_offset().0);
        let effects = self.state.commit(entries.clone(), true, now);
        assert!(effects.is_empty());
        entries.into_iter().map(|(e, _)| e).collect()
    }

    /// Appends state records as the actor's `persist` does; returns where they landed.
    fn persist(&mut self, ops: &[StateOp], now: i64) -> weir_log::Result<u64> {
        let records: Vec<NewRecord> = ops
            .iter()
            .map(|op| {
                let (key, body) = op.encode();
                NewRecord {
                    timestamp_ms: Some(now),
                    key: Some(key),
                    headers: Vec::new(),
                    body,
                }
            })
            .collect();
        let appended = self.rt.block_on(self.log.append_batch(&records))?;
        let mut delta = Totals::default();
        for op in ops {
            delta.add(&op.delta());
        }
        self.counters
            .landed(appended.first.0, appended.next.0, delta);
        Ok(appended.first.0)
    }

    /// Reopens the log and replays it into a fresh state.
    fn restart(&mut self, now: i64) {
        self.restarts += 1;
        self.rt.block_on(self.log.close()).expect("close");
        let log = self.log.reopen();
        let mut state = QueueState::new(self.state.options().clone(), 1 + (self.restarts << 40));
        let report = self
            .rt
            .block_on(replay(&log, None, &mut state, QUEUE, now))
            .expect("replay");
        self.counters = Counters::new(state.totals, report.end, report.shared_below);
        self.log = log;
        self.state = state;
    }

    /// The actor's housekeeping trim (actor.rs `housekeeping`, without moves): fold
    /// the counters, write the checkpoint (totals and the dedup ids only the trimmed
    /// part remembers), note where the ids went, trim. Nothing is in flight here.
    fn housekeeping(&mut self, now: i64) {
        let next = self.log.next_offset().0;
        let floor = self.state.floor(next);
        if floor <= self.log.first_offset().0 {
            return;
        }
        self.counters.fold(floor);
        let (ops, chunks) = self
            .counters
            .checkpoint(&self.state.dedup_ids_below(floor, 0, now));
        let first = self.persist(&ops, now).expect("checkpoint");
        for (i, ids) in chunks.iter().enumerate() {
            self.state.dedup_rewritten(ids, first + 1 + i as u64);
        }
        self.rt
            .block_on(self.log.trim_before(Offset(floor)))
            .expect("trim");
    }
}

fn dedup_options(window: u64) -> QueueOptions {
    QueueOptions {
        dedup_window_ms: Some(window),
        ..QueueOptions::default()
    }
}

fn admitted(a: Admission) -> Vec<bool> {
    match a {
        Admission::Admitted(d) => d,
        Admission::Wait => panic!("the send waits"),
    }
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
        Admission::Admitted(vec![false]),
        "the original, in flight"
    );
    let retry = state.admit(QUEUE, &[(Some("x"), 1)], T0 + 1).unwrap();
    assert_eq!(retry, Admission::Wait, "the retry waits for the original");
    // The original's append fails: the retry is a new send.
    state.cancel(&["x"], 1, 1);
    let retry = state.admit(QUEUE, &[(Some("x"), 1)], T0 + 2).unwrap();
    assert_eq!(retry, Admission::Admitted(vec![false]));
    // This time it is written: a retry still waits for the sync (decision 0005
    // takes a send in once written, and its sync may still fail).
    state.confirm_ids([("x", 0)]);
    let retry = state.admit(QUEUE, &[(Some("x"), 1)], T0 + 3).unwrap();
    assert_eq!(retry, Admission::Wait, "written is not durable");
    // Synced: a further retry is a duplicate at once.
    state.synced_below(1);
    let again = state.admit(QUEUE, &[(Some("x"), 1)], T0 + 3).unwrap();
    assert_eq!(again, Admission::Admitted(vec![true]));
    // A later send of "y" is written, but its sync fails: its id is forgotten, and
    // a retry is a new send.
    assert_eq!(
        state.admit(QUEUE, &[(Some("y"), 1)], T0 + 4).unwrap(),
        Admission::Admitted(vec![false])
    );
    state.confirm_ids([("y", 1)]);
    assert_eq!(state.sync_failed(1, 2), 1);
    assert_eq!(
        state.admit(QUEUE, &[(Some("y"), 1)], T0 + 5).unwrap(),
        Admission::Admitted(vec![false])
    );
    assert_eq!(
        state.admit(QUEUE, &[(Some("x"), 1)], T0 + 5).unwrap(),
        Admission::Admitted(vec![true]),
        "a durable id is kept"
    );
}

/// A dedup checkpoint holds only ids whose send is durable, so a crash cannot leave
/// an id remembered for a message that was never written.
#[test]
fn a_dedup_checkpoint_does_not_hold_ids_whose_message_was_never_written() {
    let mut rig = Rig::new(dedup_options(600_000));
    rig.send(&["a"], T0);
    // "x" admitted, its append in flight.
    assert_eq!(
        admitted(rig.state.admit(QUEUE, &[(Some("x"), 1)], T0).unwrap()),
        [false]
    );
    let ids = rig.state.dedup_ids_below(u64::MAX, 0, T0);
    assert_eq!(ids, [(T0 + 600_000, "a".to_owned())], "only the durable id");
    rig.persist(&[StateOp::Dedup(ids)], T0).unwrap();
    // Crash: the append of "x" never lands.
    rig.restart(T0 + 1_000);
    let again = rig
        .state
        .admit(QUEUE, &[(Some("x"), 1)], T0 + 1_000)
        .unwrap();
    assert_eq!(
        admitted(again),
        [false],
        "the retry of a send never written is a new send"
    );
}

/// Replay restores ids in log order and checkpoints list them in any order; ids
/// still leave the window on time.
#[test]
fn restored_dedup_ids_leave_the_window_on_time_whatever_the_checkpoint_order() {
    let mut rig = Rig::new(dedup_options(1_000));
    let ids: Vec<(i64, String)> = (0..10)
        .rev()
        .map(|i| (T0 + 1_000 + i * 100, format!("id{i}")))
        .collect();
    rig.persist(&[StateOp::Dedup(ids)], T0).unwrap();
    rig.restart(T0 + 1);
    // At T0 + 1_550, id0..=id5 are out of their window.
    let now = T0 + 1_550;
    let items: Vec<(Option<&str>, u32)> = ["id0", "id5", "id6"]
        .iter()
        .map(|id| (Some(*id), 1))
        .collect();
    assert_eq!(
        admitted(rig.state.admit(QUEUE, &items, now).unwrap()),
        [false, false, true],
        "id0 and id5 left the window 550 and 50 ms ago"
    );
}

/// Ids survive any sequence of trims and restarts inside their window: each trim
/// rewrites the ids only the trimmed part remembers.
#[test]
fn dedup_ids_survive_trims_and_restarts_inside_the_window() {
    let mut rig = Rig::new(dedup_options(600_000));
    let a = rig.send(&["a"], T0);
    let (leased, _) = rig.state.lease(1, 30_000, T0);
    rig.state
        .ack(QUEUE, &format_receipt(a[0].offset, leased[0].1))
        .unwrap();
    rig.persist(
        &[StateOp::Settled(SettleReason::Acked, vec![a[0].offset])],
        T0,
    )
    .unwrap();
    rig.state.finish_settle(&[a[0].offset]);
    rig.housekeeping(T0); // "a" now lives in the checkpoint only
    rig.send(&["b"], T0 + 10); // held
    rig.restart(T0 + 30);
    assert_eq!(
        admitted(rig.state.admit(QUEUE, &[(Some("a"), 1)], T0 + 30).unwrap()),
        [true]
    );
    // b is held, so nothing more is trimmed; settle b, trim again, crash.
    let (leased, _) = rig.state.lease(1, 30_000, T0 + 40);
    let b = leased[0].0.offset;
    rig.state
        .ack(QUEUE, &format_receipt(b, leased[0].1))
        .unwrap();
    rig.persist(&[StateOp::Settled(SettleReason::Acked, vec![b])], T0 + 40)
        .unwrap();
    rig.state.finish_settle(&[b]);
    rig.housekeeping(T0 + 40);
    rig.restart(T0 + 50);
    let items = [(Some("a"), 1), (Some("b"), 1)];
    assert_eq!(
        admitted(rig.state.admit(QUEUE, &items, T0 + 50).unwrap()),
        [true, true],
        "both ids are inside their 10 min window"
    );
    let stats = rig.state.stats(0, T0 + 50);
    assert_eq!(
        (stats.sent_total, stats.acked_total, stats.duplicates_total),
        (2, 2, 2)
    );
}

/// However many ids a window holds, the checkpoint is written in records far
/// below the log's record limit.
#[test]
fn a_dedup_checkpoint_of_a_busy_queue_can_be_written() {
    let now = 1_700_000_000_000;
    let mut rig = Rig::new(dedup_options(300_000));
    let ids: Vec<String> = (0..450_000u64)
        .map(|n| format!("{:032x}", n.wrapping_mul(0x9e37_79b9_7f4a_7c15)))
        .collect();
    for chunk in ids.chunks(1_000) {
        let items: Vec<(Option<&str>, u32)> =
            chunk.iter().map(|id| (Some(id.as_str()), 1)).collect();
        rig.state.admit(QUEUE, &items, now).unwrap();
        rig.state
            .confirm_ids(chunk.iter().map(String::as_str).zip(0..));
        rig.state.synced_below(u64::MAX);
    }
    let (ops, chunks) = rig
        .counters
        .checkpoint(&rig.state.dedup_ids_below(u64::MAX, 0, now));
    assert_eq!(chunks.iter().map(Vec::len).sum::<usize>(), 450_000);
    for group in ops.chunks(8) {
        let written = rig.persist(group, now);
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
    let mut rig = Rig::new(QueueOptions::default());
    let a = rig.send(&["a"], T0);
    let (leased, _) = rig.state.lease(1, 30_000, T0);
    rig.persist(&[StateOp::Delivered(vec![(a[0].offset, 1)])], T0)
        .unwrap();
    rig.state
        .ack(QUEUE, &format_receipt(a[0].offset, leased[0].1))
        .unwrap();
    // The checkpoint covers what landed so far (the message and its delivery)...
    rig.counters.fold(rig.log.next_offset().0);
    let (ops, _) = rig.counters.checkpoint(&[]);
    rig.persist(&ops, T0).unwrap();
    // ...then the ack's record lands; then kill -9.
    rig.persist(
        &[StateOp::Settled(SettleReason::Acked, vec![a[0].offset])],
        T0,
    )
    .unwrap();
    rig.restart(T0 + 10);
    let stats = rig.state.stats(0, T0 + 10);
    assert_eq!((stats.sent_total, stats.acked_total), (1, 1));
}

/// A checkpoint written but not followed by its trim (a crash in between): replay
/// takes it and does not count the records below it twice.
#[test]
fn a_checkpoint_without_its_trim_is_not_counted_twice() {
    let mut rig = Rig::new(QueueOptions::default());
    rig.send(&["a", "b"], T0);
    rig.persist(&[StateOp::Settled(SettleReason::Purged, vec![0, 1])], T0)
        .unwrap();
    rig.counters.fold(rig.log.next_offset().0);
    let (ops, _) = rig.counters.checkpoint(&[]);
    rig.persist(&ops, T0).unwrap();
    rig.restart(T0 + 1);
    let stats = rig.state.stats(0, T0 + 1);
    assert_eq!((stats.sent_total, stats.purged_total), (2, 2));
}

// ---------------------------------------------------------------------------
// Trimming

/// An ack stays held (for the trim floor) until its record is durable. When the
/// record cannot be written the ack is kept in memory and retried, so housekeeping
/// meanwhile must leave the message in the log: a restart before the ack is written
/// delivers it again, and must be able to read it.
#[test]
fn an_unwritten_ack_never_lets_the_log_drop_the_message() {
    let mut rig = Rig::new(QueueOptions::default());
    let a = rig.send(&["a"], T0);
    rig.send(&["b"], T0);
    let (leased, _) = rig.state.lease(1, 30_000, T0);
    rig.persist(&[StateOp::Delivered(vec![(a[0].offset, 1)])], T0)
        .unwrap();
    rig.state
        .ack(QUEUE, &format_receipt(a[0].offset, leased[0].1))
        .unwrap();
    // The ack's append failed (NoSpace, EIO); housekeeping runs while it is retried.
    rig.housekeeping(T0);
    rig.housekeeping(T0 + 1);
    rig.restart(T0 + 2);
    let (again, _) = rig.state.lease(2, 30_000, T0 + 3);
    assert_eq!(again.len(), 2, "the unwritten ack's message comes back");
    let offset = again[0].0.offset;
    assert_eq!(offset, a[0].offset);
    let read = rig
        .rt
        .block_on(rig.log.read_from(Offset(offset), ReadLimits::records(1)));
    assert!(
        read.is_ok(),
        "the redelivery of offset {offset} cannot be read: {read:?} (log starts at {})",
        rig.log.first_offset().0
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
        state.finish_settle(&[n]);
    }
    assert!(
        state.deadline_count() <= 1_025,
        "{} deadlines kept",
        state.deadline_count()
    );
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
