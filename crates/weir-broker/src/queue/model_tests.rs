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

// Times and sizes in the model are small and non-negative by construction.
#![allow(clippy::cast_possible_wrap, clippy::cast_sign_loss)]

use std::cmp::Reverse;
use std::collections::HashMap;

use bytes::Bytes;
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use weir_log::{LogConfig, MemLog, MessageLog, NewRecord};

use crate::api::{Backoff, DeadLetterReason, Overflow, QueueOptions};
use crate::error::BrokerError;
use crate::queue::entry::Entry;
use crate::queue::record::{MessageMeta, SettleReason, StateOp, Totals};
use crate::queue::replay::{entry_of, replay};
use crate::queue::state::{Admission, Effect, QueueState, format_receipt, key_hash, parse_receipt};

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

/// What one call emitted (observed) or should emit (expected), order-normalised
/// except for `delivered`, which is in lease order.
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
        self.removed.sort_unstable();
        self.dead_attempts.sort_unstable();
        self.retries.sort_unstable();
        self
    }
}

// ---------------------------------------------------------------------------
// The system under test, with the actor's side of things.

struct Harness {
    rt: tokio::runtime::Runtime,
    log: MemLog,
    state: QueueState,
    now: i64,
    restarts: u64,
}

impl Harness {
    fn new(options: QueueOptions) -> Harness {
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

    fn append(&self, records: &[NewRecord]) -> Vec<u64> {
        let appended = self
            .rt
            .block_on(self.log.append_batch(records))
            .expect("MemLog append");
        appended.offsets().map(|o| o.0).collect()
    }

    /// Appends a state record as the actor does: (key, body) = `op.encode()`.
    fn persist(&self, op: &StateOp) {
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
    fn write_messages(&self, messages: &[(MessageMeta, u32)]) -> Vec<(Entry, i64)> {
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
    fn perform(&mut self, effects: Vec<Effect>) -> Result<Outcome, TestCaseError> {
        let mut seen = Outcome::default();
        for effect in effects {
            match effect {
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
                    for (offsets, reason) in [
                        (others, SettleReason::DeadLettered),
                        (expired, SettleReason::ExpiredDeadLettered),
                    ] {
                        if !offsets.is_empty() {
                            let op = self.state.finish_transit(&offsets, reason);
                            prop_assert_eq!(&op, &StateOp::Settled(reason, offsets));
                            self.persist(&op);
                        }
                    }
                }
            }
        }
        Ok(seen.normalised())
    }

    /// Closes the log, reopens it and replays it into a fresh state.
    fn restart(&mut self) {
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

// ---------------------------------------------------------------------------
// The model.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Place {
    Ready { parked: bool },
    Delayed { due: i64 },
    Leased { lease_id: u64, deadline: i64 },
    Acked,
    Removed(How),
}

#[derive(Clone, Debug)]
struct Msg {
    offset: u64,
    priority: u8,
    group: u64,
    expires_at: i64,
    enqueued_at: i64,
    size: u32,
    attempts: u32,
    place: Place,
}

impl Msg {
    fn expired(&self, now: i64) -> bool {
        self.expires_at != 0 && self.expires_at <= now
    }
    fn held(&self) -> bool {
        matches!(
            self.place,
            Place::Ready { .. } | Place::Delayed { .. } | Place::Leased { .. }
        )
    }
    fn ready(&self) -> bool {
        matches!(self.place, Place::Ready { .. })
    }
}

struct Model {
    options: QueueOptions,
    /// Every committed message, by offset.
    msgs: Vec<Msg>,
    /// Id → until when it counts as seen.
    dedup: HashMap<String, i64>,
    totals: Totals,
    /// Expiries counted in `totals.expired` that went to the dead-letter queue since
    /// the last restart: replay cannot tell them from other dead letters.
    expired_to_dlq: u64,
    /// Every receipt ever handed out, as (offset, lease id).
    receipts: Vec<(u64, u64)>,
}

impl Model {
    fn new(options: QueueOptions) -> Model {
        Model {
            options,
            msgs: Vec::new(),
            dedup: HashMap::new(),
            totals: Totals::default(),
            expired_to_dlq: 0,
            receipts: Vec::new(),
        }
    }

    fn index(&self, offset: u64) -> Option<usize> {
        self.msgs.iter().position(|m| m.offset == offset)
    }

    /// A group is busy while one of its messages is leased or waits for a retry.
    fn busy(&self, group: u64) -> bool {
        group != 0
            && self.msgs.iter().any(|m| {
                m.group == group
                    && match m.place {
                        Place::Leased { .. } => true,
                        Place::Delayed { .. } => m.attempts > 0,
                        _ => false,
                    }
            })
    }

    /// Parked messages whose group is no longer busy are ready again.
    fn unpark(&mut self) {
        let free: Vec<usize> = (0..self.msgs.len())
            .filter(|&i| {
                self.msgs[i].place == Place::Ready { parked: true }
                    && !self.busy(self.msgs[i].group)
            })
            .collect();
        for i in free {
            self.msgs[i].place = Place::Ready { parked: false };
        }
    }

    /// Ready, unparked messages: highest priority first, then by offset.
    fn delivery_order(&self) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.msgs.len())
            .filter(|&i| self.msgs[i].place == Place::Ready { parked: false })
            .collect();
        order.sort_by_key(|&i| (Reverse(self.msgs[i].priority), self.msgs[i].offset));
        order
    }

    fn count(&self, f: impl Fn(&Msg) -> bool) -> u64 {
        self.msgs.iter().filter(|m| f(m)).count() as u64
    }

    fn ready_bytes(&self) -> u64 {
        self.msgs
            .iter()
            .filter(|m| m.ready())
            .map(|m| u64::from(m.size))
            .sum()
    }

    /// A message leaves without an ack: dead-lettered if the queue has a dead-letter
    /// queue, else expired or dropped.
    fn remove(&mut self, i: usize, reason: DeadLetterReason, out: &mut Outcome) {
        let how = if self.options.dead_letter_queue.is_some() {
            self.totals.dead_lettered += 1;
            if reason == DeadLetterReason::Expired {
                self.totals.expired += 1;
                self.expired_to_dlq += 1;
            }
            out.dead_attempts
                .push((self.msgs[i].offset, self.msgs[i].attempts));
            How::DeadLetter(reason.into())
        } else if reason == DeadLetterReason::Expired {
            self.totals.expired += 1;
            How::Expired
        } else {
            self.totals.dropped += 1;
            How::Dropped
        };
        self.msgs[i].place = Place::Removed(how);
        out.removed.push((self.msgs[i].offset, how));
    }

    /// The retry delay after `attempts` deliveries, by doubling.
    fn backoff(&self, attempts: u32) -> u64 {
        let base = self.options.retry_delay_ms;
        match self.options.retry_backoff {
            Backoff::Fixed => base,
            Backoff::Exponential => {
                let cap = self.options.retry_delay_max_ms.max(base);
                let mut delay = base;
                for _ in 1..attempts {
                    if delay >= cap {
                        break;
                    }
                    delay *= 2;
                }
                delay.min(cap)
            }
        }
    }

    /// Which of `items` (id, size) are duplicates, or `Err` if reject-publish
    /// refuses the send.
    fn admit(&mut self, items: &[(String, u32)], now: i64) -> Result<Vec<bool>, ()> {
        let mut duplicate = vec![false; items.len()];
        if self.options.dedup_window_ms.is_some() {
            let mut seen: Vec<&str> = Vec::new();
            for (i, (id, _)) in items.iter().enumerate() {
                duplicate[i] = self.dedup.get(id).is_some_and(|until| *until > now)
                    || seen.contains(&id.as_str());
                seen.push(id);
            }
        }
        let new_count = duplicate.iter().filter(|d| !**d).count() as u64;
        let new_bytes: u64 = items
            .iter()
            .zip(&duplicate)
            .filter(|(_, d)| !**d)
            .map(|((_, s), _)| u64::from(*s))
            .sum();
        if self.options.overflow == Overflow::RejectPublish && new_count > 0 {
            let ready = self.count(Msg::ready);
            if self
                .options
                .max_length
                .is_some_and(|max| ready + new_count > max)
            {
                return Err(());
            }
            if self
                .options
                .max_length_bytes
                .is_some_and(|max| self.ready_bytes() + new_bytes > max)
            {
                return Err(());
            }
        }
        if let Some(window) = self.options.dedup_window_ms {
            for ((id, _), dup) in items.iter().zip(&duplicate) {
                if !dup {
                    self.dedup.insert(id.clone(), now + window as i64);
                }
            }
        }
        self.totals.duplicates += items.len() as u64 - new_count;
        Ok(duplicate)
    }

    fn commit(&mut self, msgs: Vec<Msg>) -> Outcome {
        let mut out = Outcome::default();
        self.totals.sent += msgs.len() as u64;
        self.msgs.extend(msgs);
        if self.options.overflow == Overflow::RejectPublish {
            return out;
        }
        loop {
            let over_count = self
                .options
                .max_length
                .is_some_and(|max| self.count(Msg::ready) > max);
            let over_bytes = self
                .options
                .max_length_bytes
                .is_some_and(|max| self.ready_bytes() > max);
            if !(over_count || over_bytes) {
                break;
            }
            let Some(&head) = self.delivery_order().first() else {
                break;
            };
            if self.options.overflow == Overflow::DeadLetter {
                self.remove(head, DeadLetterReason::Overflow, &mut out);
            } else {
                self.totals.dropped += 1;
                self.msgs[head].place = Place::Removed(How::Dropped);
                out.removed.push((self.msgs[head].offset, How::Dropped));
            }
        }
        out.normalised()
    }

    /// Leases (lease ids are filled in by the caller from what the state handed out).
    fn lease(&mut self, max: usize, visibility: u64, now: i64) -> Outcome {
        let mut out = Outcome::default();
        let deadline = now + visibility as i64;
        for i in self.delivery_order() {
            if out.delivered.len() >= max {
                break;
            }
            if self.msgs[i].expired(now) {
                self.remove(i, DeadLetterReason::Expired, &mut out);
                continue;
            }
            if self.busy(self.msgs[i].group) {
                self.msgs[i].place = Place::Ready { parked: true };
                continue;
            }
            let m = &mut self.msgs[i];
            if m.attempts > 0 {
                self.totals.redelivered += 1;
            }
            m.attempts += 1;
            m.place = Place::Leased {
                lease_id: 0,
                deadline,
            };
            out.delivered.push((m.offset, m.attempts));
        }
        out.normalised()
    }

    /// The index of the message currently leased under this receipt.
    fn current(&self, offset: u64, lease_id: u64) -> Option<usize> {
        self.index(offset).filter(
            |&i| matches!(self.msgs[i].place, Place::Leased { lease_id: l, .. } if l == lease_id),
        )
    }

    fn give_back(
        &mut self,
        i: usize,
        requeue: bool,
        delay: Option<u64>,
        now: i64,
        out: &mut Outcome,
    ) {
        if !requeue {
            self.remove(i, DeadLetterReason::Rejected, out);
        } else if self
            .options
            .max_deliveries
            .is_some_and(|max| self.msgs[i].attempts >= max)
        {
            self.remove(i, DeadLetterReason::MaxDeliveries, out);
        } else {
            let delay = delay.unwrap_or_else(|| self.backoff(self.msgs[i].attempts));
            let m = &mut self.msgs[i];
            if delay == 0 {
                m.place = Place::Ready { parked: false };
            } else {
                let due = now + delay as i64;
                m.place = Place::Delayed { due };
                out.retries.push((m.offset, m.attempts, due));
            }
        }
        self.unpark();
    }

    fn tick(&mut self, now: i64) -> Outcome {
        let mut out = Outcome::default();
        // Delays that passed, by (due, offset).
        let mut due: Vec<(i64, u64, usize)> = (0..self.msgs.len())
            .filter_map(|i| match self.msgs[i].place {
                Place::Delayed { due } if due <= now => Some((due, self.msgs[i].offset, i)),
                _ => None,
            })
            .collect();
        due.sort_unstable();
        for (_, _, i) in due {
            if self.msgs[i].expired(now) {
                self.remove(i, DeadLetterReason::Expired, &mut out);
            } else {
                self.msgs[i].place = Place::Ready { parked: false };
            }
        }
        self.unpark();
        // Leases that ran out, by (deadline, offset).
        let mut lapsed: Vec<(i64, u64, usize)> = (0..self.msgs.len())
            .filter_map(|i| match self.msgs[i].place {
                Place::Leased { deadline, .. } if deadline <= now => {
                    Some((deadline, self.msgs[i].offset, i))
                }
                _ => None,
            })
            .collect();
        lapsed.sort_unstable();
        for (_, _, i) in lapsed {
            self.give_back(i, true, None, now, &mut out);
        }
        // Expired messages at the head of each priority.
        for priority in 0..=self.options.max_priority {
            loop {
                let head = (0..self.msgs.len())
                    .filter(|&i| {
                        self.msgs[i].place == Place::Ready { parked: false }
                            && self.msgs[i].priority == priority
                    })
                    .min_by_key(|&i| self.msgs[i].offset);
                match head {
                    Some(i) if self.msgs[i].expired(now) => {
                        self.remove(i, DeadLetterReason::Expired, &mut out);
                    }
                    _ => break,
                }
            }
        }
        out.normalised()
    }

    /// What replay must rebuild: leases are gone (the messages ready, their
    /// deliveries counted), passed delays are ready, groups waiting for a retry
    /// still park their other ready messages. Every counter is carried by a record
    /// (duplicates too), so all of them survive.
    fn restart(&mut self, now: i64) {
        for m in &mut self.msgs {
            match m.place {
                Place::Leased { .. } => m.place = Place::Ready { parked: false },
                Place::Delayed { due } if due <= now => m.place = Place::Ready { parked: false },
                _ => {}
            }
        }
        for i in 0..self.msgs.len() {
            if self.msgs[i].ready() {
                let parked = self.busy(self.msgs[i].group);
                self.msgs[i].place = Place::Ready { parked };
            }
        }
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
                let got = self.h.state.ack(QUEUE, &receipt);
                if let Some(i) = self.resolve(&receipt, got.as_ref().map(|_| ()))? {
                    let offset = self.model.msgs[i].offset;
                    prop_assert_eq!(got.ok().map(|e| e.offset), Some(offset));
                    self.h
                        .persist(&StateOp::Settled(SettleReason::Acked, vec![offset]));
                    self.h.state.finish_settle(&[offset]);
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
            (Ok(Admission::Admitted(got)), Ok(want)) => {
                prop_assert_eq!(&got, &want, "duplicates of {:?}", items);
                got
            }
            (Err(BrokerError::QueueFull { .. }), Err(())) => return Ok(()),
            (got, want) => {
                return Err(TestCaseError::fail(format!(
                    "admit {items:?}: got {got:?}, model says {want:?}"
                )));
            }
        };
        let duplicate_count = duplicate.iter().filter(|d| **d).count() as u64;
        if duplicate_count > 0 {
            self.h.persist(&StateOp::Duplicates(duplicate_count));
        }
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
        let want = self.model.lease(max, visibility, now);
        let got: Vec<(u64, u32)> = leased.iter().map(|(e, _)| (e.offset, e.attempts)).collect();
        prop_assert_eq!(&got, &want.delivered, "leased at {}", now);
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

// ---------------------------------------------------------------------------
// Unit tests of specific behaviours (sans-IO: offsets are made up).

fn entry(offset: u64, priority: u8, group: Option<&str>, size: u32) -> Entry {
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
fn send(state: &mut QueueState, entries: Vec<(Entry, i64)>, now: i64) -> Vec<Effect> {
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
    assert_eq!(
        effects,
        [Effect::Persist(StateOp::Delivered(vec![
            (5, 1),
            (0, 1),
            (4, 1),
            (2, 1)
        ]))]
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
    assert_eq!(
        state
            .ack(QUEUE, &format_receipt(0, leased[0].1))
            .unwrap()
            .offset,
        0
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
            Admission::Admitted(d) => {
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
        Admission::Admitted(vec![false, false])
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
        Admission::Admitted(vec![false])
    );
    let refused = state.admit(QUEUE, &[(Some("d"), 1)], T0);
    assert!(
        matches!(refused, Err(BrokerError::QueueFull { .. })),
        "c is reserved: {refused:?}"
    );
    // All duplicates: nothing new, so nothing to refuse.
    assert_eq!(
        state.admit(QUEUE, &[(Some("a"), 1)], T0).unwrap(),
        Admission::Admitted(vec![true])
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
