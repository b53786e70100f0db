//! The system under test: a [`QueueState`] whose effects are performed as the
//! actor performs them, into a [`MemLog`] that a restart replays.

use bytes::Bytes;
use proptest::prelude::*;
use weir_log::{LogConfig, MemLog, MessageLog, NewRecord};

use crate::api::{DeadLetterReason, QueueOptions};
use crate::queue::entry::Entry;
use crate::queue::record::{MessageMeta, SettleReason, StateOp};
use crate::queue::replay::{entry_of, replay};
use crate::queue::state::{Effect, QueueState};

use super::{How, Outcome, QUEUE, T0};

// ---------------------------------------------------------------------------
// The system under test, with the actor's side of things.

pub(super) struct Harness {
    pub(super) rt: tokio::runtime::Runtime,
    pub(super) log: MemLog,
    pub(super) state: QueueState,
    pub(super) now: i64,
    pub(super) restarts: u64,
}

impl Harness {
    pub(super) fn new(options: QueueOptions) -> Harness {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a current-thread runtime");
        Harness {
            rt,
            log: MemLog::new(LogConfig::default()),
            state: QueueState::new(options, 1),
            now: T0,
            restarts: 0,
        }
    }

    pub(super) fn append(&self, records: &[NewRecord]) -> Vec<u64> {
        let appended = self
            .rt
            .block_on(self.log.append_batch(records))
            .expect("MemLog append");
        appended.offsets().map(|o| o.0).collect()
    }

    /// Appends a state record as the actor does: (key, body) = `op.encode()`.
    pub(super) fn persist(&self, op: &StateOp) {
        let (key, body) = op.encode();
        self.append(&[NewRecord {
            timestamp_ms: Some(self.now),
            key: Some(key),
            headers: Vec::new(),
            body,
        }]);
    }

    /// Writes message records (key = `meta.encode()`, stamped with the clock) and
    /// returns their entries with their `not_before`, as the actor commits them.
    pub(super) fn write_messages(&self, messages: &[(MessageMeta, u32)]) -> Vec<(Entry, i64)> {
        let records: Vec<NewRecord> = messages
            .iter()
            .map(|(meta, size)| NewRecord {
                timestamp_ms: Some(self.now),
                key: Some(meta.encode()),
                headers: Vec::new(),
                body: Bytes::from(vec![b'x'; *size as usize]),
            })
            .collect();
        let max_priority = self.state.options().max_priority;
        self.append(&records)
            .into_iter()
            .zip(messages)
            .map(|(offset, (meta, size))| {
                let mut entry = entry_of(offset, meta, *size);
                entry.priority = entry.priority.min(max_priority);
                (entry, meta.not_before_ms)
            })
            .collect()
    }

    /// Performs effects: persists ops, and completes dead letters at once.
    pub(super) fn perform(&mut self, effects: Vec<Effect>) -> Result<Outcome, TestCaseError> {
        let mut seen = Outcome::default();
        for effect in effects {
            match effect {
                // As the actor's next append takes the held-back records along.
                Effect::PersistWithNextAppend => {
                    let op = self.state.take_deferred();
                    prop_assert!(op.is_some(), "deferred records announced, none held");
                    if let Some(StateOp::Delivered(items)) = op {
                        self.persist(&StateOp::Delivered(items.clone()));
                        seen.delivered.extend(items);
                    }
                }
                Effect::Persist(op) => {
                    self.persist(&op);
                    match op {
                        StateOp::Delivered(items) => seen.delivered.extend(items),
                        StateOp::Retry(items) => seen.retries.extend(items),
                        StateOp::Settled(SettleReason::Expired, offsets) => {
                            seen.removed
                                .extend(offsets.into_iter().map(|o| (o, How::Expired)));
                        }
                        StateOp::Settled(SettleReason::Dropped, offsets) => {
                            seen.removed
                                .extend(offsets.into_iter().map(|o| (o, How::Dropped)));
                        }
                        // Duplicates of a send, counted (admission).
                        StateOp::Duplicates(_) => {}
                        other => {
                            prop_assert!(false, "unexpected state op from an effect: {other:?}");
                        }
                    }
                }
                Effect::DeadLetter(items) => {
                    // As the actor settles them: expiries apart, so they replay as
                    // both expired and dead-lettered.
                    let expired: Vec<u64> = items
                        .iter()
                        .filter(|(_, r)| *r == DeadLetterReason::Expired)
                        .map(|(e, _)| e.offset)
                        .collect();
                    let others: Vec<u64> = items
                        .iter()
                        .filter(|(_, r)| *r != DeadLetterReason::Expired)
                        .map(|(e, _)| e.offset)
                        .collect();
                    for (entry, reason) in items {
                        seen.removed
                            .push((entry.offset, How::DeadLetter(reason.into())));
                        seen.dead_attempts.push((entry.offset, entry.attempts));
                    }
                    let all: Vec<u64> = others.iter().chain(&expired).copied().collect();
                    let want: Vec<Effect> = [
                        (others, SettleReason::DeadLettered),
                        (expired, SettleReason::ExpiredDeadLettered),
                    ]
                    .into_iter()
                    .filter(|(offsets, _)| !offsets.is_empty())
                    .map(|(offsets, reason)| Effect::Persist(StateOp::Settled(reason, offsets)))
                    .collect();
                    let effects = self.state.finish_transit(&all, SettleReason::DeadLettered);
                    prop_assert_eq!(&effects, &want);
                    for effect in effects {
                        if let Effect::Persist(op) = effect {
                            self.persist(&op);
                        }
                    }
                }
            }
        }
        Ok(seen.normalised())
    }

    /// Closes the log, reopens it and replays it into a fresh state.
    pub(super) fn restart(&mut self) {
        self.restarts += 1;
        self.rt.block_on(self.log.close()).expect("close");
        let log = self.log.reopen();
        let mut state = QueueState::new(self.state.options().clone(), 1 + (self.restarts << 40));
        let report = self
            .rt
            .block_on(replay(&log, None, &mut state, QUEUE, self.now))
            .expect("replay");
        assert_eq!(report.undecodable, 0, "every record decodes");
        self.log = log;
        self.state = state;
    }
}
