//! Shared messages in a queue (decision 0004), driven by hand as the actor and the
//! dispatcher do it, against [`QueueState`], two [`MemLog`]s (the queue's log and the
//! shared log) and the real two-phase [`replay`]: trims with out-of-order acks,
//! refusals, counters, and arrival order across both logs.

use bytes::Bytes;
use weir_log::{LogConfig, MemLog, MessageLog, NewRecord, Offset};

use crate::api::QueueOptions;
use crate::queue::counters::Counters;
use crate::queue::record::{MessageMeta, SHARED, SettleReason, StateOp, Totals, encode_shared};
use crate::queue::replay::{entry_of, replay, shared_expiry};
use crate::queue::state::{Admission, QueueState};

const QUEUE: &str = "q";
/// This queue's number; 99 is another queue's.
const ID: u32 = 7;
const T0: i64 = 1_000_000;

struct Rig {
    rt: tokio::runtime::Runtime,
    log: MemLog,
    shared: MemLog,
    state: QueueState,
    counters: Counters,
}

impl Rig {
    fn new(options: QueueOptions) -> Rig {
        Rig {
            rt: tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("runtime"),
            log: MemLog::new(LogConfig::default()),
            shared: MemLog::new(LogConfig::default()),
            state: QueueState::new(options, 1),
            counters: Counters::new(Totals::default(), 0, 0),
        }
    }

    /// Publishes `ids` to this queue and queue 99 through the shared log, then hands
    /// this queue its part as the actor does; returns how many it admitted.
    fn publish(&mut self, ids: &[&str]) -> usize {
        let metas: Vec<MessageMeta> = ids
            .iter()
            .map(|id| MessageMeta {
                id: (*id).to_owned(),
                enqueued_at_ms: T0,
                ..MessageMeta::default()
            })
            .collect();
        let records: Vec<NewRecord> = metas
            .iter()
            .map(|m| NewRecord {
                timestamp_ms: Some(T0),
                key: Some(encode_shared(&[99, ID], m)),
                headers: Vec::new(),
                body: Bytes::from_static(b"x"),
            })
            .collect();
        let appended = self
            .rt
            .block_on(self.shared.append_batch(&records))
            .expect("append");
        let keys: Vec<u64> = appended.offsets().map(|o| SHARED | o.0).collect();
        let items: Vec<(Option<&str>, u32)> = ids.iter().map(|id| (Some(*id), 1)).collect();
        let Admission::Admitted(duplicate) = self.state.admit(QUEUE, &items, T0).expect("admit")
        else {
            panic!("no send in flight");
        };
        let mark = self.log.next_offset().0;
        let mut entries = Vec::new();
        let mut declined = Vec::new();
        for ((key, meta), dup) in keys.iter().zip(&metas).zip(&duplicate) {
            if *dup {
                declined.push(*key);
                continue;
            }
            let mut entry = entry_of(*key, meta, 1);
            entry.enqueued_at = T0;
            entry.expires_at = shared_expiry(0, 0, T0, None);
            entries.push((entry, 0));
        }
        let admitted = entries.len();
        self.state
            .arrived(keys[0], *keys.last().expect("keys"), admitted as u64, mark);
        self.state.confirm_ids(
            metas
                .iter()
                .zip(&keys)
                .zip(&duplicate)
                .filter(|(_, d)| !**d)
                .map(|((m, k), _)| (m.id.as_str(), *k)),
        );
        assert!(self.state.commit(entries, true, T0).is_empty());
        if !declined.is_empty() {
            let n = declined.len() as u64;
            self.persist(&[StateOp::Duplicates(n), StateOp::Declined(declined)]);
        }
        admitted
    }

    /// A direct send to this queue's own log.
    fn send(&mut self, id: &str) {
        let meta = MessageMeta {
            id: id.to_owned(),
            enqueued_at_ms: T0,
            shared_mark: self.shared.next_offset().0,
            ..MessageMeta::default()
        };
        let record = NewRecord {
            timestamp_ms: Some(T0),
            key: Some(meta.encode()),
            headers: Vec::new(),
            body: Bytes::from_static(b"x"),
        };
        let items = [(Some(id), 1)];
        self.state.admit(QUEUE, &items, T0).expect("admit");
        let appended = self
            .rt
            .block_on(self.log.append_batch(&[record]))
            .expect("append");
        self.counters.landed(
            appended.first.0,
            appended.next.0,
            Totals {
                sent: 1,
                ..Totals::default()
            },
        );
        let entry = entry_of(appended.first.0, &meta, 1);
        self.state.confirm_ids([(id, entry.offset)]);
        self.state.synced_below(appended.next.0);
        assert!(self.state.commit(vec![(entry, 0)], true, T0).is_empty());
    }

    fn persist(&mut self, ops: &[StateOp]) {
        let records = StateOp::records(ops);
        let appended = self
            .rt
            .block_on(self.log.append_batch(&records))
            .expect("append");
        let mut delta = Totals::default();
        for op in ops {
            delta.add(&op.delta());
        }
        self.counters
            .landed(appended.first.0, appended.next.0, delta);
    }

    /// Leases everything ready; returns (key, lease id) in delivery order.
    fn lease_all(&mut self) -> Vec<(u64, u64)> {
        let (leased, effects) = self.state.lease(1_000, 60_000, T0);
        for effect in effects {
            if let crate::queue::state::Effect::Persist(op) = effect {
                self.persist(&[op]);
            }
        }
        leased.iter().map(|(e, id)| (e.offset, *id)).collect()
    }

    fn ack(&mut self, leases: &[(u64, u64)]) {
        let keys: Vec<u64> = leases
            .iter()
            .map(|(key, lease)| {
                let receipt = crate::queue::state::format_receipt(*key, *lease);
                self.state.ack(QUEUE, &receipt).expect("ack").offset
            })
            .collect();
        self.persist(&[StateOp::Settled(SettleReason::Acked, keys.clone())]);
        self.state.finish_settle(&keys);
    }

    /// The actor's housekeeping trim, shared mark and checkpoint included.
    fn housekeeping(&mut self) {
        let next = self.log.next_offset().0;
        self.state.prune_batches();
        let mark = self.state.shared_mark().unwrap_or(next);
        let floor = self.state.floor(next).min(mark);
        if floor <= self.log.first_offset().0 {
            return;
        }
        self.counters.fold(floor);
        let shared_below = self.state.shared_below();
        let sent = self.state.take_shared_sent();
        self.counters.fold_shared(shared_below, sent);
        let (ops, _) =
            self.counters
                .checkpoint(&self.state.dedup_ids_below(floor, shared_below, T0));
        self.persist(&ops);
        self.rt
            .block_on(self.log.trim_before(Offset(floor)))
            .expect("trim");
    }

    /// Reopens both logs and replays them into a fresh state.
    fn restart(&mut self) {
        self.rt.block_on(self.log.close()).expect("close");
        self.rt.block_on(self.shared.close()).expect("close");
        let log = self.log.reopen();
        let shared = self.shared.reopen();
        let mut state = QueueState::new(self.state.options().clone(), 1 << 40);
        let report = self
            .rt
            .block_on(replay(&log, Some((&shared, ID)), &mut state, QUEUE, T0))
            .expect("replay");
        let mut base = state.totals;
        base.sent -= report.shared_sent;
        self.counters = Counters::new(base, report.end, report.shared_below);
        self.log = log;
        self.shared = shared;
        self.state = state;
    }

    fn ready_keys(&mut self) -> Vec<u64> {
        self.state
            .peek(10_000, None)
            .iter()
            .map(|e| e.offset)
            .collect()
    }
}

/// Acks out of order across batches, trims in between: replay brings back exactly
/// what is not acked, counts every message once, and the floors move on.
#[test]
fn out_of_order_acks_and_trims_bring_back_exactly_the_unacked() {
    let mut rig = Rig::new(QueueOptions::default());
    assert_eq!(rig.publish(&["a1", "a2", "a3"]), 3);
    assert_eq!(rig.publish(&["b1", "b2"]), 2);
    let leases = rig.lease_all();
    assert_eq!(leases.len(), 5);
    // Ack a2 and all of batch b; a1 and a3 stay held.
    rig.ack(&[leases[1], leases[3], leases[4]]);
    rig.housekeeping();
    // The first batch still holds messages: the shared floor stays at its start.
    assert_eq!(rig.state.shared_below(), SHARED);
    rig.restart();
    assert_eq!(
        rig.ready_keys(),
        [SHARED, SHARED + 2],
        "a1 and a3, in order"
    );
    assert_eq!(rig.state.totals.sent, 5);
    assert_eq!(rig.state.totals.acked, 3);
    assert_eq!(rig.state.totals.redelivered, 0);
    let leases = rig.lease_all();
    rig.ack(&leases);
    assert!(!rig.state.holds_shared());
    rig.housekeeping();
    assert_eq!(
        rig.state.shared_below(),
        SHARED + 5,
        "past everything that arrived"
    );
    rig.restart();
    assert!(rig.ready_keys().is_empty(), "nothing acked comes back");
    assert_eq!(rig.state.totals.sent, 5);
    assert_eq!(rig.state.totals.acked, 5);
    assert_eq!(
        rig.state.totals.redelivered, 2,
        "a1 and a3 were delivered again"
    );
    // A batch fully acked ahead of one still held: the log is trimmed up to the
    // held batch's mark, and only its messages come back.
    rig.publish(&["d1", "d2"]);
    let d = rig.lease_all();
    rig.publish(&["e1"]);
    rig.ack(&d);
    let first = rig.log.first_offset().0;
    rig.housekeeping();
    assert!(rig.log.first_offset().0 > first, "trimmed");
    assert_eq!(rig.state.shared_below(), SHARED + 7, "at the held batch");
    rig.restart();
    assert_eq!(rig.ready_keys(), [SHARED + 7]);
    assert_eq!(rig.state.totals.sent, 8);
    assert_eq!(rig.state.totals.acked, 7);
}

/// A duplicate declined by the queue stays out after restarts and trims, and its id
/// stays in the window.
#[test]
fn declined_duplicates_stay_out() {
    let mut rig = Rig::new(QueueOptions {
        dedup_window_ms: Some(600_000),
        ..QueueOptions::default()
    });
    assert_eq!(rig.publish(&["x"]), 1);
    assert_eq!(rig.publish(&["x", "y"]), 1, "x is a duplicate");
    rig.restart();
    assert_eq!(rig.ready_keys(), [SHARED, SHARED + 2]);
    assert_eq!(rig.state.totals.duplicates, 1);
    assert_eq!(rig.state.totals.sent, 2);
    let leases = rig.lease_all();
    rig.ack(&leases);
    rig.housekeeping();
    rig.restart();
    assert!(rig.ready_keys().is_empty());
    assert_eq!(
        rig.publish(&["x"]),
        0,
        "still inside the window after a trim"
    );
    rig.restart();
    assert!(rig.ready_keys().is_empty());
    assert_eq!(rig.state.totals.duplicates, 2);
}

/// Own messages and shared ones come back in the order they arrived: an own message
/// goes after the shared messages below its mark.
#[test]
fn replay_merges_own_and_shared_messages_in_arrival_order() {
    let mut rig = Rig::new(QueueOptions::default());
    rig.send("own-1");
    rig.publish(&["sh-1", "sh-2"]);
    rig.send("own-2");
    rig.send("own-3");
    rig.publish(&["sh-3"]);
    rig.send("own-4");
    let before = rig.ready_keys();
    rig.restart();
    assert_eq!(rig.ready_keys(), before);
    assert_eq!(before, [0, SHARED, SHARED + 1, 1, 2, SHARED + 2, 3]);
}
