//! [`QueueState`] against a naive model (house style §2.6), plus unit tests of
//! specific behaviours.
//!
//! The model keeps every committed message in one `Vec` (by offset) together with
//! the one place it is in, and answers every question by scanning that `Vec`. The
//! driver applies each generated op to both, compares what the state machine
//! returned and emitted (leases, delivery counts, `Delivered`/`Retry`/`Settled`
//! records, dead letters, errors) with what the model expects, and then compares
//! what can be observed of the state: `stats()` and the totals, `peek()` (the ready,
//! unparked messages in delivery order, with their delivery counts) and the set of
//! held offsets (`held_below`, `floor`).
//!
//! The driver performs effects as the actor does: every committed message and every
//! persisted op goes into a [`MemLog`], and a dead letter is a transit that completes
//! at once (`finish_transit`, whose op is persisted too). "Restart" reopens that log
//! and rebuilds a fresh `QueueState` with the real [`replay`].
//!
//! Files: this one holds what the driver compares and the driver itself;
//! `harness` the state machine with the actor's side of things, `model` the naive
//! model. Unit tests of single behaviours are in `state/tests.rs`.

// Times and sizes in the model are small and non-negative by construction.
#![allow(clippy::cast_possible_wrap, clippy::cast_sign_loss)]

use std::cmp::Reverse;

use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use weir_log::MessageLog;

use crate::api::{Backoff, DeadLetterReason, Overflow, QueueOptions};
use crate::error::BrokerError;
use crate::queue::record::{MessageMeta, SettleReason, StateOp};
use crate::queue::state::{Admission, Effect, format_receipt, parse_receipt};

mod harness;
mod model;

use harness::Harness;
use model::{Model, Msg, Place};

const QUEUE: &str = "q";
/// The clock at the start of every case (ms since the epoch; records store times
/// as unsigned varints, so it must be positive).
const T0: i64 = 1_000_000;

// ---------------------------------------------------------------------------
// What happened to a message that left the queue without an ack.

/// How a message left the queue, as the state machine reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum How {
    /// `Effect::DeadLetter` with this reason.
    DeadLetter(Reason),
    /// `StateOp::Settled(Expired)` (no dead-letter queue).
    Expired,
    /// `StateOp::Settled(Dropped)`.
    Dropped,
}

/// [`DeadLetterReason`], orderable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Reason {
    Rejected,
    MaxDeliveries,
    Expired,
    Overflow,
}

impl From<DeadLetterReason> for Reason {
    fn from(r: DeadLetterReason) -> Reason {
        match r {
            DeadLetterReason::Rejected => Reason::Rejected,
            DeadLetterReason::MaxDeliveries => Reason::MaxDeliveries,
            DeadLetterReason::Expired => Reason::Expired,
            DeadLetterReason::Overflow => Reason::Overflow,
        }
    }
}

/// What one call emitted (observed) or should emit (expected), order-normalised.
/// (The lease order is checked on the leases themselves: `Delivered` records are
/// held back and written in offset order.)
#[derive(Debug, Default, PartialEq, Eq)]
struct Outcome {
    /// `(offset, delivery count)` of a `Delivered` record.
    delivered: Vec<(u64, u32)>,
    /// Messages that left without an ack.
    removed: Vec<(u64, How)>,
    /// `(offset, delivery count)` of every dead letter.
    dead_attempts: Vec<(u64, u32)>,
    /// `(offset, attempt, due)` of `Retry` records.
    retries: Vec<(u64, u32, i64)>,
}

impl Outcome {
    fn normalised(mut self) -> Outcome {
        self.delivered.sort_unstable();
        self.removed.sort_unstable();
        self.dead_attempts.sort_unstable();
        self.retries.sort_unstable();
        self
    }
}

// ---------------------------------------------------------------------------
// Ops.

#[derive(Clone, Debug)]
struct Publish {
    /// `Some(k)`: id `dup-k` from a small pool (for de-duplication); `None`: a
    /// fresh id.
    id: Option<u8>,
    size: u32,
    priority: Option<u8>,
    delay: Option<u64>,
    group: Option<u8>,
    ttl: Option<u64>,
}

/// Which receipt an ack, nack or extend presents.
#[derive(Clone, Copy, Debug)]
enum Pick {
    /// One of the current leases (or, if there is none, as `Any`).
    Current(usize),
    /// Any receipt ever handed out (mostly stale).
    Any(usize),
    Malformed,
}

#[derive(Clone, Debug)]
enum Op {
    Publish(Vec<Publish>),
    Lease {
        max: usize,
        visibility: u64,
    },
    Ack(Pick),
    Nack {
        pick: Pick,
        requeue: bool,
        delay: Option<u64>,
    },
    Extend {
        pick: Pick,
        visibility: u64,
    },
    /// Advance the clock, and run `tick` (or not, so that ops meet overdue state).
    Clock {
        advance: u64,
        tick: bool,
    },
    Restart,
}

fn options_strategy() -> impl Strategy<Value = QueueOptions> {
    (
        (
            0u8..=3,
            option::of(1u32..=3),
            any::<bool>(),
            prop_oneof![Just(0u64), 1u64..=40],
            any::<bool>(),
            0u64..=150,
        ),
        (
            option::of(1u64..=8),
            option::of(40u64..=300),
            prop_oneof![
                Just(Overflow::DropHead),
                Just(Overflow::RejectPublish),
                Just(Overflow::DeadLetter)
            ],
            // Round windows and round clock steps meet exactly at the window's end.
            option::of(prop_oneof![Just(20u64), Just(50), 10u64..=200]),
        ),
    )
        .prop_map(
            |(
                (
                    max_priority,
                    max_deliveries,
                    dlq,
                    retry_delay_ms,
                    exponential,
                    retry_delay_max_ms,
                ),
                (max_length, max_length_bytes, overflow, dedup_window_ms),
            )| QueueOptions {
                visibility_timeout_ms: 30_000,
                max_deliveries,
                dead_letter_queue: dlq.then(|| "dlq".to_owned()),
                dead_letter_exchange: None,
                dead_letter_routing_key: None,
                retry_delay_ms,
                retry_backoff: if exponential {
                    Backoff::Exponential
                } else {
                    Backoff::Fixed
                },
                retry_delay_max_ms,
                max_priority,
                message_ttl_ms: None,
                max_length,
                max_length_bytes,
                overflow,
                dedup_window_ms,
                // Broker-level (expiry) and front-end (consumers) options: the
                // queue model does not see them.
                expires_ms: None,
                single_active_consumer: false,
                exclusive: false,
                auto_delete: false,
                transient: false,
            },
        )
}

fn pick_strategy() -> impl Strategy<Value = Pick> {
    prop_oneof![
        6 => any::<usize>().prop_map(Pick::Current),
        3 => any::<usize>().prop_map(Pick::Any),
        1 => Just(Pick::Malformed),
    ]
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let publish = (
        option::of(0u8..4),
        1u32..=40,
        option::of(0u8..=4),
        option::of(0u64..=60),
        option::of(0u8..3),
        option::of(1u64..=120),
    )
        .prop_map(|(id, size, priority, delay, group, ttl)| Publish {
            id,
            size,
            priority,
            delay,
            group,
            ttl,
        });
    prop_oneof![
        3 => vec(publish, 1..=4).prop_map(Op::Publish),
        3 => (1usize..=4, 1u64..=80).prop_map(|(max, visibility)| Op::Lease { max, visibility }),
        2 => pick_strategy().prop_map(Op::Ack),
        2 => (pick_strategy(), any::<bool>(), option::of(0u64..=50))
            .prop_map(|(pick, requeue, delay)| Op::Nack { pick, requeue, delay }),
        1 => (pick_strategy(), 1u64..=80).prop_map(|(pick, visibility)| Op::Extend { pick, visibility }),
        3 => (prop_oneof![0u64..=60, (0u64..=6).prop_map(|t| t * 10)], prop::bool::weighted(0.75))
            .prop_map(|(advance, tick)| Op::Clock { advance, tick }),
        1 => Just(Op::Restart),
    ]
}

// ---------------------------------------------------------------------------
// The driver.

struct Driver {
    h: Harness,
    model: Model,
    fresh_ids: u64,
}

impl Driver {
    fn new(options: QueueOptions) -> Driver {
        Driver {
            h: Harness::new(options.clone()),
            model: Model::new(options),
            fresh_ids: 0,
        }
    }

    fn receipt(&self, pick: Pick) -> String {
        let leased: Vec<(u64, u64)> = self
            .model
            .msgs
            .iter()
            .filter_map(|m| match m.place {
                Place::Leased { lease_id, .. } => Some((m.offset, lease_id)),
                _ => None,
            })
            .collect();
        match pick {
            Pick::Current(i) if !leased.is_empty() => {
                let (offset, lease_id) = leased[i % leased.len()];
                format_receipt(offset, lease_id)
            }
            Pick::Current(i) | Pick::Any(i) => match self.model.receipts.len() {
                0 => format_receipt(0, 0),
                n => {
                    let (offset, lease_id) = self.model.receipts[i % n];
                    format_receipt(offset, lease_id)
                }
            },
            Pick::Malformed => "not-a-receipt".to_owned(),
        }
    }

    /// The index of the lease `receipt` names, or what the state must answer.
    fn resolve(
        &self,
        receipt: &str,
        result: Result<(), &BrokerError>,
    ) -> Result<Option<usize>, TestCaseError> {
        let current = parse_receipt(receipt)
            .and_then(|(offset, lease_id)| self.model.current(offset, lease_id));
        match (parse_receipt(receipt), current, result) {
            (Some(_), Some(i), Ok(())) => Ok(Some(i)),
            (None, _, Err(BrokerError::MalformedReceipt { .. }))
            | (Some(_), None, Err(BrokerError::StaleReceipt { .. })) => Ok(None),
            (_, current, result) => Err(TestCaseError::fail(format!(
                "receipt {receipt}: current lease {current:?}, got {result:?}"
            ))),
        }
    }

    fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let now = self.h.now;
        match op {
            Op::Publish(batch) => self.publish(batch)?,
            Op::Lease { max, visibility } => self.lease(*max, *visibility)?,
            Op::Ack(pick) => {
                let receipt = self.receipt(*pick);
                let batch = self.h.state.ack_all(QUEUE, vec![receipt.clone()]);
                let got = batch.report.failed.first().map_or(Ok(()), |(_, e)| Err(e));
                if let Some(i) = self.resolve(&receipt, got)? {
                    let offset = self.model.msgs[i].offset;
                    let record = StateOp::Settled(SettleReason::Acked, vec![offset]);
                    prop_assert_eq!(&batch.writing, &vec![offset]);
                    prop_assert_eq!(&batch.effects, &vec![Effect::Persist(record.clone())]);
                    self.h.persist(&record);
                    self.h.state.acks_written(&[offset], true);
                    self.model.msgs[i].place = Place::Acked;
                    self.model.totals.acked += 1;
                    self.model.unpark();
                }
            }
            Op::Nack {
                pick,
                requeue,
                delay,
            } => {
                let receipt = self.receipt(*pick);
                let got = self.h.state.nack(QUEUE, &receipt, *requeue, *delay, now);
                if let Some(i) = self.resolve(&receipt, got.as_ref().map(|_| ()))? {
                    let seen = self.h.perform(got.expect("resolved as current"))?;
                    let mut want = Outcome::default();
                    self.model.give_back(i, *requeue, *delay, now, &mut want);
                    prop_assert_eq!(seen, want.normalised(), "nack of {}", receipt);
                }
            }
            Op::Extend { pick, visibility } => {
                let receipt = self.receipt(*pick);
                let got = self.h.state.extend(QUEUE, &receipt, *visibility, now);
                if let Some(i) = self.resolve(&receipt, got.as_ref().copied())?
                    && let Place::Leased { deadline, .. } = &mut self.model.msgs[i].place
                {
                    *deadline = now + *visibility as i64;
                }
            }
            Op::Clock { advance, tick } => {
                self.h.now += *advance as i64;
                if *tick {
                    let now = self.h.now;
                    let effects = self.h.state.tick(now);
                    let seen = self.h.perform(effects)?;
                    let want = self.model.tick(now);
                    prop_assert_eq!(seen, want, "tick at {}", now);
                    if let Some(due) = self.h.state.next_due() {
                        prop_assert!(
                            due > now,
                            "after tick({}) something is still due at {}",
                            now,
                            due
                        );
                    }
                }
            }
            Op::Restart => {
                // Replay gives back every held message as it was (leases ended),
                // in the same arrival order.
                let before = self.h.state.held_in_arrival_order(now);
                self.h.restart();
                self.model.restart(now);
                prop_assert_eq!(
                    self.h.state.held_in_arrival_order(now),
                    before,
                    "held messages after the restart"
                );
            }
        }
        self.check()
    }

    fn publish(&mut self, batch: &[Publish]) -> Result<(), TestCaseError> {
        let now = self.h.now;
        let options = self.model.options.clone();
        let items: Vec<(String, u32)> = batch
            .iter()
            .map(|p| {
                let id = if let Some(k) = p.id {
                    format!("dup-{k}")
                } else {
                    self.fresh_ids += 1;
                    format!("m-{}", self.fresh_ids)
                };
                (id, p.size)
            })
            .collect();
        let sut_items: Vec<(Option<&str>, u32)> = items
            .iter()
            .map(|(id, s)| (Some(id.as_str()), *s))
            .collect();
        let got = self.h.state.admit(QUEUE, &sut_items, now);
        let want = self.model.admit(&items, now);
        let duplicate = match (got, want) {
            (Ok(Admission::Wait), _) => {
                return Err(TestCaseError::fail(format!(
                    "admit {items:?} waits, but every earlier send has landed"
                )));
            }
            (
                Ok(Admission::Admitted {
                    duplicate: got,
                    effects,
                }),
                Ok(want),
            ) => {
                prop_assert_eq!(&got, &want, "duplicates of {:?}", items);
                // The record counting the duplicates, if any.
                self.h.perform(effects)?;
                got
            }
            (Err(BrokerError::QueueFull { .. }), Err(())) => return Ok(()),
            (got, want) => {
                return Err(TestCaseError::fail(format!(
                    "admit {items:?}: got {got:?}, model says {want:?}"
                )));
            }
        };
        let kept: Vec<(MessageMeta, u32)> = batch
            .iter()
            .zip(items)
            .zip(duplicate)
            .filter(|(_, dup)| !dup)
            .map(|((p, (id, size)), _)| {
                let not_before = p.delay.filter(|d| *d > 0).map_or(0, |d| now + d as i64);
                let meta = MessageMeta {
                    id,
                    priority: p.priority.unwrap_or(0).min(options.max_priority),
                    not_before_ms: not_before,
                    expires_at_ms: p.ttl.map_or(0, |t| now.max(not_before) + t as i64),
                    group: p.group.map(|g| format!("g{g}")),
                    attempts: 0,
                    moved_from: None,
                    enqueued_at_ms: now,
                    dead_letter: None,
                    shared_mark: 0,
                };
                (meta, size)
            })
            .collect();
        if kept.is_empty() {
            return Ok(());
        }
        let kept_ids: Vec<String> = kept.iter().map(|(m, _)| m.id.clone()).collect();
        let entries = self.h.write_messages(&kept);
        let msgs: Vec<Msg> = entries
            .iter()
            .map(|(e, not_before)| Msg {
                offset: e.offset,
                priority: e.priority,
                group: e.group,
                expires_at: e.expires_at,
                enqueued_at: e.enqueued_at,
                size: e.size,
                attempts: 0,
                place: if *not_before > now {
                    Place::Delayed { due: *not_before }
                } else {
                    Place::Ready { parked: false }
                },
            })
            .collect();
        // As the actor on `Committed` and then `Synced`: the ids are written, then
        // durable (the memory log answers synced).
        self.h.state.confirm_ids(
            kept_ids
                .iter()
                .map(String::as_str)
                .zip(entries.iter().map(|(e, _)| e.offset)),
        );
        self.h.state.synced_below(self.h.log.next_offset().0);
        let effects = self.h.state.commit(entries, true, now);
        let seen = self.h.perform(effects)?;
        let want = self.model.commit(msgs);
        prop_assert_eq!(seen, want, "commit at {}", now);
        Ok(())
    }

    fn lease(&mut self, max: usize, visibility: u64) -> Result<(), TestCaseError> {
        let now = self.h.now;
        let (leased, effects) = self.h.state.lease(max, visibility, now);
        // What must hold whatever the model says.
        for (k, (entry, _)) in leased.iter().enumerate() {
            let Some(i) = self.model.index(entry.offset) else {
                return Err(TestCaseError::fail(format!(
                    "leased unknown offset {}",
                    entry.offset
                )));
            };
            let m = &self.model.msgs[i];
            prop_assert!(
                m.ready(),
                "offset {} delivered while {:?}",
                entry.offset,
                m.place
            );
            prop_assert_eq!(
                entry.attempts,
                m.attempts + 1,
                "delivery count of {}",
                entry.offset
            );
            if entry.group != 0 {
                let other = self.model.msgs.iter().find(|o| {
                    o.group == entry.group
                        && o.offset != entry.offset
                        && matches!(o.place, Place::Leased { .. })
                });
                let also = leased[..k].iter().find(|(e, _)| e.group == entry.group);
                prop_assert!(
                    other.is_none() && also.is_none(),
                    "offset {} leased while its group has {:?} / {:?} leased",
                    entry.offset,
                    other.map(|o| o.offset),
                    also.map(|(e, _)| e.offset)
                );
            }
            if k > 0 {
                let prev = leased[k - 1].0;
                prop_assert!(
                    (Reverse(prev.priority), prev.offset) < (Reverse(entry.priority), entry.offset),
                    "lease order: {:?} before {:?}",
                    prev,
                    entry
                );
            }
        }
        let seen = self.h.perform(effects)?;
        let (order, want) = self.model.lease(max, visibility, now);
        let got: Vec<(u64, u32)> = leased.iter().map(|(e, _)| (e.offset, e.attempts)).collect();
        prop_assert_eq!(&got, &order, "leased at {}", now);
        prop_assert_eq!(seen, want, "lease at {}", now);
        for (entry, lease_id) in leased {
            let i = self.model.index(entry.offset).expect("checked above");
            self.model.msgs[i].place = match self.model.msgs[i].place {
                Place::Leased { deadline, .. } => Place::Leased { lease_id, deadline },
                other => other,
            };
            self.model.receipts.push((entry.offset, lease_id));
        }
        Ok(())
    }

    /// Compares everything observable of the state with the model.
    fn check(&self) -> Result<(), TestCaseError> {
        let (h, model) = (&self.h, &self.model);
        let stats = h.state.stats(0, h.now);
        prop_assert_eq!(stats.ready, model.count(Msg::ready), "ready");
        prop_assert_eq!(
            stats.leased,
            model.count(|m| matches!(m.place, Place::Leased { .. })),
            "leased"
        );
        prop_assert_eq!(
            stats.delayed,
            model.count(|m| matches!(m.place, Place::Delayed { .. })),
            "delayed"
        );
        prop_assert_eq!(stats.in_transit, 0, "in transit");
        let held_bytes: u64 = model
            .msgs
            .iter()
            .filter(|m| m.held())
            .map(|m| u64::from(m.size))
            .sum();
        prop_assert_eq!(stats.bytes, held_bytes, "bytes");
        let oldest = model
            .msgs
            .iter()
            .filter(|m| m.held())
            .map(|m| m.enqueued_at)
            .min();
        prop_assert_eq!(
            stats.oldest_age_ms,
            oldest.map(|t| (h.now - t) as u64),
            "oldest age"
        );
        prop_assert_eq!(h.state.totals, model.totals, "totals");
        prop_assert_eq!(
            stats.sent_total,
            model.msgs.len() as u64,
            "every committed message is in the model"
        );
        // Ready and unparked, in delivery order, with their delivery counts.
        let peek: Vec<(u64, u8, u32)> = h
            .state
            .peek(usize::MAX, None)
            .iter()
            .map(|e| (e.offset, e.priority, e.attempts))
            .collect();
        let want: Vec<(u64, u8, u32)> = model
            .delivery_order()
            .into_iter()
            .map(|i| &model.msgs[i])
            .map(|m| (m.offset, m.priority, m.attempts))
            .collect();
        prop_assert_eq!(peek, want, "ready in delivery order");
        // Exactly the held offsets are held.
        let next = h.log.next_offset().0;
        let floor = model
            .msgs
            .iter()
            .filter(|m| m.held())
            .map(|m| m.offset)
            .min();
        prop_assert_eq!(h.state.floor(next), floor.unwrap_or(next), "floor");
        for offset in model.msgs.iter().map(|m| m.offset + 1).chain([next]) {
            let below = model
                .msgs
                .iter()
                .filter(|m| m.held() && m.offset < offset)
                .count();
            prop_assert_eq!(
                h.state.held_below(offset, usize::MAX),
                below,
                "held below {}",
                offset
            );
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn queue_state_matches_a_naive_model(
        options in options_strategy(),
        ops in vec(op_strategy(), 1..60),
    ) {
        let mut driver = Driver::new(options);
        for op in &ops {
            driver.apply(op)?;
        }
        // The end: a restart, then everything is leasable once no delay or lease is
        // outstanding.
        driver.apply(&Op::Restart)?;
        driver.apply(&Op::Clock { advance: 100_000, tick: true })?;
        driver.apply(&Op::Lease { max: 1_000, visibility: 10 })?;
    }
}

#[test]
fn a_restart_forgets_leases_but_keeps_delivery_counts_delays_and_acks() {
    let mut driver = Driver::new(QueueOptions::default());
    let message = |delay| Publish {
        id: None,
        size: 1,
        priority: None,
        delay,
        group: None,
        ttl: None,
    };
    // Offsets 0..=3, 1 delayed until T0 + 50.
    let send = Op::Publish(vec![
        message(None),
        message(Some(50)),
        message(None),
        message(None),
    ]);
    driver.apply(&send).unwrap();
    driver
        .apply(&Op::Lease {
            max: 2,
            visibility: 1_000,
        })
        .unwrap();
    let receipts = driver.model.receipts.clone();
    assert_eq!(receipts.iter().map(|r| r.0).collect::<Vec<_>>(), [0, 2]);
    driver.apply(&Op::Ack(Pick::Current(0))).unwrap();
    driver.apply(&Op::Restart).unwrap();

    let state = &mut driver.h.state;
    let stats = state.stats(0, T0);
    assert_eq!(
        (
            stats.ready,
            stats.leased,
            stats.delayed,
            stats.sent_total,
            stats.acked_total
        ),
        (2, 0, 1, 4, 1)
    );
    let ready: Vec<(u64, u32)> = state
        .peek(10, None)
        .iter()
        .map(|e| (e.offset, e.attempts))
        .collect();
    assert_eq!(
        ready,
        [(2, 1), (3, 0)],
        "the leased one is ready again, its delivery counted"
    );
    let (offset, lease_id) = receipts[1];
    let stale = state.ack(QUEUE, &format_receipt(offset, lease_id));
    assert!(
        matches!(stale, Err(BrokerError::StaleReceipt { .. })),
        "{stale:?}"
    );
    state.tick(T0 + 49);
    assert_eq!(state.stats(0, T0 + 49).delayed, 1, "the delay survived");
    state.tick(T0 + 50);
    let (leased, _) = state.lease(10, 1_000, T0 + 50);
    assert_eq!(
        leased
            .iter()
            .map(|(e, _)| (e.offset, e.attempts))
            .collect::<Vec<_>>(),
        [(1, 1), (2, 2), (3, 1)],
        "0 was acked: it never comes back"
    );
}
