//! How a queue stores its messages and its delivery state in its log.
//!
//! A queue owns one `weir-log` log. Two kinds of record go into it, told apart by the
//! first byte of the record's *key* (the log's opaque per-record key field):
//!
//! * **message** (`1`): the user's body is the record body, the user's headers are
//!   the record headers, and the key holds the broker's metadata:
//!
//!   | field | encoding |
//!   |---|---|
//!   | kind | u8 = 1 |
//!   | version | u8 = 2 (written); 1 is still read (no `shared_mark`) |
//!   | id | varint length + UTF-8 |
//!   | priority | u8 |
//!   | `not_before_ms` | varint, 0 = none |
//!   | `expires_at_ms` | varint, 0 = none |
//!   | group | varint length + UTF-8 (length 0 = none) |
//!   | attempts | varint: deliveries before this record was written |
//!   | `moved_from` | varint: offset + 1 of the record this one replaces, 0 = none |
//!   | `enqueued_at_ms` | varint: first enqueue time (kept across moves) |
//!   | `dead_letter` | u8 0 = none; 2 then the last death and the history (below); 1 (older records) then reason u8, `time_ms` varint, source varint length + UTF-8, `delivery_count` varint |
//!   | `shared_mark` | varint: the shared log's next offset when this record was appended (version 2; 0 in version 1) |
//!
//!   A `dead_letter` of kind 2 (strings are varint length + UTF-8, string lists a
//!   varint count then the strings): reason u8, `time_ms` varint, source queue,
//!   `delivery_count` varint, the exchange it was republished through, its routing
//!   keys (list), the first
//!   death (queue, reason u8, exchange), then the deaths (varint count, each:
//!   queue, reason u8, count varint, exchange, routing keys (list), `time_ms`
//!   varint), most recent first (see [`crate::queue::dlq`]).
//!
//!   `shared_mark` puts a queue's own messages back in arrival order among the shared
//!   messages it holds when the queue is replayed (decision 0004).
//!
//! * **state** (`2`): a change to messages already in the log. Key = `[2, op]`, body
//!   = the op's payload of varints. A state record always refers to messages at
//!   lower offsets than its own, which is why trimming the log below the lowest live
//!   message loses nothing that recovery needs.
//!
//!   | op | payload |
//!   |---|---|
//!   | 1 delivered | count, then (offset, attempt) pairs |
//!   | 2 settled | reason u8, count, then offsets (delta-encoded, ascending) |
//!   | 3 retry | count, then (offset, attempt, `not_before_ms`) triples |
//!   | 4 totals | `below`, then the lifetime counters of every record below offset `below` and of every shared message under `shared_below`, varints in [`Totals`] field order, then `shared_below` |
//!   | 5 dedup | count, then (`expires_at_ms`, id length, id) |
//!   | 6 duplicates | how many sends were answered as duplicates |
//!   | 7 declined | count, then keys (delta-encoded, ascending): shared messages this queue refused (duplicate, full) |
//!
//!   State records name messages by *key*: the offset of an own message record, or
//!   [`SHARED`]` | offset` for a message in the shared log.
//!
//! * **shared message** (`4`), in the broker's shared log only: a message published to
//!   several queues, stored once. Key = `[4, count varint, queue ids varints..., then
//!   the key of a message record]`; headers and body as in a message record. The
//!   queues named hold it without writing anything for its arrival (decision 0004);
//!   queue ids are never reused, so an id of a deleted queue names nobody.
//!
//! Counters: every record adds a fixed amount to the lifetime counters
//! ([`StateOp::delta`], [`MessageMeta::delta`]). A `totals` checkpoint holds the sum
//! of all records below its `below` offset, written just before the log is trimmed
//! to `below`; replay takes the checkpoint with the highest `below` and adds the
//! records from `below` on, so counters are exact after any crash.
//!
//! Replay is order-insensitive among state records of one message: a settled
//! message stays settled, the attempt count is the highest seen, and a retry delay
//! applies only while its attempt is the highest. That lets the queue actor keep many
//! state appends in flight at once and still recover one answer.

use bytes::Bytes;
use weir_log::{Header, NewRecord};

use crate::api::{DeadLetterInfo, DeadLetterReason, Death, FirstDeath};

/// Record kinds (first key byte). Kind 3 (a per-queue reference to a shared body)
/// is retired: decision 0004 replaced it with the destination list of kind 4.
const KIND_MESSAGE: u8 = 1;
const KIND_STATE: u8 = 2;
const KIND_SHARED: u8 = 4;
/// Version 2 added `shared_mark`.
const MESSAGE_VERSION: u8 = 2;

/// The bit that marks a key as an offset in the shared log rather than in the
/// queue's own log. Own offsets never come near it (2^62 records).
pub(crate) const SHARED: u64 = 1 << 62;

/// The broker's metadata of one stored message.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct MessageMeta {
    pub(crate) id: String,
    pub(crate) priority: u8,
    pub(crate) not_before_ms: i64,
    pub(crate) expires_at_ms: i64,
    pub(crate) group: Option<String>,
    pub(crate) attempts: u32,
    pub(crate) moved_from: Option<u64>,
    pub(crate) enqueued_at_ms: i64,
    pub(crate) dead_letter: Option<DeadLetterInfo>,
    /// The shared log's next offset when this record was appended to a queue's own
    /// log (see the module documentation); 0 in the shared log.
    pub(crate) shared_mark: u64,
}

/// Why messages were settled (removed for good).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SettleReason {
    Acked = 1,
    DeadLettered = 2,
    Expired = 3,
    Dropped = 4,
    Purged = 5,
    Moved = 6,
    Redriven = 7,
    /// Expired, then copied to the dead-letter queue (counts as both).
    ExpiredDeadLettered = 8,
}

impl SettleReason {
    fn from_u8(v: u8) -> Option<SettleReason> {
        Some(match v {
            1 => SettleReason::Acked,
            2 => SettleReason::DeadLettered,
            3 => SettleReason::Expired,
            4 => SettleReason::Dropped,
            5 => SettleReason::Purged,
            6 => SettleReason::Moved,
            7 => SettleReason::Redriven,
            8 => SettleReason::ExpiredDeadLettered,
            _ => return None,
        })
    }
}

/// Lifetime counters, persisted as a checkpoint before the log is trimmed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Totals {
    pub(crate) sent: u64,
    pub(crate) duplicates: u64,
    pub(crate) acked: u64,
    pub(crate) redelivered: u64,
    pub(crate) expired: u64,
    pub(crate) dead_lettered: u64,
    pub(crate) dropped: u64,
    pub(crate) purged: u64,
}

impl Totals {
    /// Adds `other` field by field.
    pub(crate) fn add(&mut self, other: &Totals) {
        self.sent += other.sent;
        self.duplicates += other.duplicates;
        self.acked += other.acked;
        self.redelivered += other.redelivered;
        self.expired += other.expired;
        self.dead_lettered += other.dead_lettered;
        self.dropped += other.dropped;
        self.purged += other.purged;
    }
}

/// A change to stored messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum StateOp {
    Delivered(Vec<(u64, u32)>),
    Settled(SettleReason, Vec<u64>),
    Retry(Vec<(u64, u32, i64)>),
    /// A counters checkpoint: the sum of every record below `below` and of every
    /// shared message of this queue under `shared_below` (all of which are settled).
    Totals {
        below: u64,
        shared_below: u64,
        totals: Totals,
    },
    Dedup(Vec<(i64, String)>),
    Duplicates(u64),
    /// Shared messages (by key) this queue refused: replay must not bring them in.
    Declined(Vec<u64>),
}

/// A record of a queue log or of the shared log, decoded.
#[derive(Debug)]
pub(crate) enum Decoded {
    Message(MessageMeta),
    State(StateOp),
    /// A shared message and the ids of the queues it was published to.
    Shared(Vec<u32>, MessageMeta),
}

/// The key of a shared message record: its destinations, then `meta`'s key.
pub(crate) fn encode_shared(destinations: &[u32], meta: &MessageMeta) -> Bytes {
    let mut out = Vec::with_capacity(50 + 3 * destinations.len() + meta.id.len());
    out.push(KIND_SHARED);
    put_varint(&mut out, destinations.len() as u64);
    for id in destinations {
        put_varint(&mut out, u64::from(*id));
    }
    meta.encode_into(&mut out);
    Bytes::from(out)
}

/// Why a record did not decode.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct DecodeError(pub(crate) &'static str);

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A sorted copy of `values`, as a count then deltas.
fn put_ascending(out: &mut Vec<u8>, values: &[u64]) {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    put_varint(out, sorted.len() as u64);
    let mut prev = 0;
    for v in sorted {
        put_varint(out, v - prev);
        prev = v;
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

fn put_strs(out: &mut Vec<u8>, strs: &[String]) {
    put_varint(out, strs.len() as u64);
    for s in strs {
        put_str(out, s);
    }
}

/// Times are stored as unsigned varints; anything before the epoch is 0 ("none").
fn time_to_u64(ms: i64) -> u64 {
    u64::try_from(ms).unwrap_or(0)
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn u8(&mut self) -> Result<u8, DecodeError> {
        let (&b, rest) = self.buf.split_first().ok_or(DecodeError("truncated"))?;
        self.buf = rest;
        Ok(b)
    }
    fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(DecodeError("varint too long"))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        u32::try_from(self.varint()?).map_err(|_| DecodeError("count out of range"))
    }
    fn time(&mut self) -> Result<i64, DecodeError> {
        i64::try_from(self.varint()?).map_err(|_| DecodeError("time out of range"))
    }
    fn str(&mut self) -> Result<&'a str, DecodeError> {
        let len = usize::try_from(self.varint()?).map_err(|_| DecodeError("length"))?;
        if len > self.buf.len() {
            return Err(DecodeError("truncated string"));
        }
        let (s, rest) = self.buf.split_at(len);
        self.buf = rest;
        std::str::from_utf8(s).map_err(|_| DecodeError("string is not UTF-8"))
    }
    /// What [`put_strs`] wrote.
    fn strs(&mut self) -> Result<Vec<String>, DecodeError> {
        let n = self.count(1)?;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(self.str()?.to_owned());
        }
        Ok(out)
    }
    /// What [`put_ascending`] wrote.
    fn ascending(&mut self) -> Result<Vec<u64>, DecodeError> {
        let n = self.count(1)?;
        let mut values = Vec::with_capacity(n);
        let mut prev = 0u64;
        for _ in 0..n {
            prev = prev
                .checked_add(self.varint()?)
                .ok_or(DecodeError("offset overflow"))?;
            values.push(prev);
        }
        Ok(values)
    }
    /// A count of items each at least `min_item` bytes long, checked against what is
    /// left so a corrupt count cannot make us allocate wildly.
    fn count(&mut self, min_item: usize) -> Result<usize, DecodeError> {
        let n = usize::try_from(self.varint()?).map_err(|_| DecodeError("count"))?;
        if n.saturating_mul(min_item) > self.buf.len() {
            return Err(DecodeError("count larger than the record"));
        }
        Ok(n)
    }
}

fn reason_code(r: DeadLetterReason) -> u8 {
    match r {
        DeadLetterReason::Rejected => 1,
        DeadLetterReason::MaxDeliveries => 2,
        DeadLetterReason::Expired => 3,
        DeadLetterReason::Overflow => 4,
    }
}

fn reason_from(v: u8) -> Result<DeadLetterReason, DecodeError> {
    Ok(match v {
        1 => DeadLetterReason::Rejected,
        2 => DeadLetterReason::MaxDeliveries,
        3 => DeadLetterReason::Expired,
        4 => DeadLetterReason::Overflow,
        _ => return Err(DecodeError("unknown dead-letter reason")),
    })
}

impl MessageMeta {
    /// What this record adds to the lifetime counters: a send counts, a moved copy
    /// does not.
    pub(crate) fn delta(&self) -> Totals {
        Totals {
            sent: u64::from(self.moved_from.is_none()),
            ..Totals::default()
        }
    }

    /// The record key holding this metadata.
    pub(crate) fn encode(&self) -> Bytes {
        let mut out = Vec::with_capacity(48 + self.id.len());
        self.encode_into(&mut out);
        Bytes::from(out)
    }

    /// [`MessageMeta::encode`], appended to `out`.
    fn encode_into(&self, out: &mut Vec<u8>) {
        out.push(KIND_MESSAGE);
        out.push(MESSAGE_VERSION);
        put_str(out, &self.id);
        out.push(self.priority);
        put_varint(out, time_to_u64(self.not_before_ms));
        put_varint(out, time_to_u64(self.expires_at_ms));
        put_str(out, self.group.as_deref().unwrap_or(""));
        put_varint(out, u64::from(self.attempts));
        put_varint(out, self.moved_from.map_or(0, |o| o + 1));
        put_varint(out, time_to_u64(self.enqueued_at_ms));
        match &self.dead_letter {
            None => out.push(0),
            Some(d) => {
                out.push(2);
                out.push(reason_code(d.reason));
                put_varint(out, time_to_u64(d.time_ms));
                put_str(out, &d.source_queue);
                put_varint(out, u64::from(d.delivery_count));
                put_str(out, &d.exchange);
                put_strs(out, &d.routing_keys);
                put_str(out, &d.first_death.queue);
                out.push(reason_code(d.first_death.reason));
                put_str(out, &d.first_death.exchange);
                put_varint(out, d.deaths.len() as u64);
                for death in &d.deaths {
                    put_str(out, &death.queue);
                    out.push(reason_code(death.reason));
                    put_varint(out, death.count);
                    put_str(out, &death.exchange);
                    put_strs(out, &death.routing_keys);
                    put_varint(out, time_to_u64(death.time_ms));
                }
            }
        }
        put_varint(out, self.shared_mark);
    }

    fn decode(r: &mut Reader<'_>) -> Result<MessageMeta, DecodeError> {
        let version = r.u8()?;
        if version != 1 && version != MESSAGE_VERSION {
            return Err(DecodeError("unknown message record version"));
        }
        let id = r.str()?.to_owned();
        let priority = r.u8()?;
        let not_before_ms = r.time()?;
        let expires_at_ms = r.time()?;
        let group = Some(r.str()?).filter(|g| !g.is_empty()).map(str::to_owned);
        let attempts = r.u32()?;
        let moved_from = r.varint()?.checked_sub(1);
        let enqueued_at_ms = r.time()?;
        let dead_letter = match r.u8()? {
            0 => None,
            1 => {
                // Written before the death history was kept: one death, of a
                // message published to the default exchange.
                let reason = reason_from(r.u8()?)?;
                let time_ms = r.time()?;
                let source_queue = r.str()?.to_owned();
                Some(DeadLetterInfo {
                    reason,
                    time_ms,
                    delivery_count: r.u32()?,
                    exchange: String::new(),
                    routing_keys: Vec::new(),
                    deaths: vec![Death {
                        queue: source_queue.clone(),
                        reason,
                        count: 1,
                        exchange: String::new(),
                        routing_keys: Vec::new(),
                        time_ms,
                    }],
                    first_death: FirstDeath {
                        queue: source_queue.clone(),
                        reason,
                        exchange: String::new(),
                    },
                    source_queue,
                })
            }
            2 => {
                let reason = reason_from(r.u8()?)?;
                let time_ms = r.time()?;
                let source_queue = r.str()?.to_owned();
                let delivery_count = r.u32()?;
                let exchange = r.str()?.to_owned();
                let routing_keys = r.strs()?;
                let first_death = FirstDeath {
                    queue: r.str()?.to_owned(),
                    reason: reason_from(r.u8()?)?,
                    exchange: r.str()?.to_owned(),
                };
                let n = r.count(5)?;
                let mut deaths = Vec::with_capacity(n);
                for _ in 0..n {
                    deaths.push(Death {
                        queue: r.str()?.to_owned(),
                        reason: reason_from(r.u8()?)?,
                        count: r.varint()?,
                        exchange: r.str()?.to_owned(),
                        routing_keys: r.strs()?,
                        time_ms: r.time()?,
                    });
                }
                Some(DeadLetterInfo {
                    reason,
                    time_ms,
                    source_queue,
                    delivery_count,
                    exchange,
                    routing_keys,
                    deaths,
                    first_death,
                })
            }
            _ => return Err(DecodeError("bad dead-letter flag")),
        };
        let shared_mark = if version >= 2 { r.varint()? } else { 0 };
        Ok(MessageMeta {
            id,
            priority,
            not_before_ms,
            expires_at_ms,
            group,
            attempts,
            moved_from,
            enqueued_at_ms,
            dead_letter,
            shared_mark,
        })
    }
}

impl StateOp {
    /// What this record adds to the lifetime counters.
    pub(crate) fn delta(&self) -> Totals {
        let mut t = Totals::default();
        match self {
            StateOp::Delivered(items) => {
                t.redelivered = items.iter().filter(|(_, attempt)| *attempt > 1).count() as u64;
            }
            StateOp::Settled(reason, offsets) => {
                let n = offsets.len() as u64;
                match reason {
                    SettleReason::Acked => t.acked = n,
                    SettleReason::DeadLettered => t.dead_lettered = n,
                    SettleReason::ExpiredDeadLettered => {
                        t.dead_lettered = n;
                        t.expired = n;
                    }
                    SettleReason::Expired => t.expired = n,
                    SettleReason::Dropped => t.dropped = n,
                    SettleReason::Purged => t.purged = n,
                    SettleReason::Moved | SettleReason::Redriven => {}
                }
            }
            StateOp::Duplicates(n) => t.duplicates = *n,
            StateOp::Retry(_)
            | StateOp::Totals { .. }
            | StateOp::Dedup(_)
            | StateOp::Declined(_) => {}
        }
        t
    }

    /// The log records of `ops`, in order.
    pub(crate) fn records(ops: &[StateOp]) -> Vec<weir_log::NewRecord> {
        ops.iter()
            .map(|op| {
                let (key, body) = op.encode();
                weir_log::NewRecord {
                    timestamp_ms: None,
                    key: Some(key),
                    headers: Vec::new(),
                    body,
                }
            })
            .collect()
    }

    /// The record key and body of this op.
    pub(crate) fn encode(&self) -> (Bytes, Bytes) {
        let mut body = Vec::new();
        let op = match self {
            StateOp::Delivered(items) => {
                put_varint(&mut body, items.len() as u64);
                for &(offset, attempt) in items {
                    put_varint(&mut body, offset);
                    put_varint(&mut body, u64::from(attempt));
                }
                1
            }
            StateOp::Settled(reason, offsets) => {
                body.push(*reason as u8);
                put_ascending(&mut body, offsets);
                2
            }
            StateOp::Declined(keys) => {
                put_ascending(&mut body, keys);
                7
            }
            StateOp::Retry(items) => {
                put_varint(&mut body, items.len() as u64);
                for &(offset, attempt, not_before) in items {
                    put_varint(&mut body, offset);
                    put_varint(&mut body, u64::from(attempt));
                    put_varint(&mut body, time_to_u64(not_before));
                }
                3
            }
            StateOp::Totals {
                below,
                shared_below,
                totals: t,
            } => {
                put_varint(&mut body, *below);
                for v in [
                    t.sent,
                    t.duplicates,
                    t.acked,
                    t.redelivered,
                    t.expired,
                    t.dead_lettered,
                    t.dropped,
                    t.purged,
                ] {
                    put_varint(&mut body, v);
                }
                put_varint(&mut body, *shared_below);
                4
            }
            StateOp::Dedup(items) => {
                put_varint(&mut body, items.len() as u64);
                for (expires, id) in items {
                    put_varint(&mut body, time_to_u64(*expires));
                    put_str(&mut body, id);
                }
                5
            }
            StateOp::Duplicates(n) => {
                put_varint(&mut body, *n);
                6
            }
        };
        (Bytes::from(vec![KIND_STATE, op]), Bytes::from(body))
    }

    fn decode(op: u8, body: &[u8]) -> Result<StateOp, DecodeError> {
        let mut r = Reader { buf: body };
        let decoded = match op {
            1 => {
                let n = r.count(2)?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push((r.varint()?, r.u32()?));
                }
                StateOp::Delivered(items)
            }
            2 => {
                let reason = SettleReason::from_u8(r.u8()?).ok_or(DecodeError("settle reason"))?;
                StateOp::Settled(reason, r.ascending()?)
            }
            7 => StateOp::Declined(r.ascending()?),
            3 => {
                let n = r.count(3)?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push((r.varint()?, r.u32()?, r.time()?));
                }
                StateOp::Retry(items)
            }
            4 => StateOp::Totals {
                below: r.varint()?,
                totals: Totals {
                    sent: r.varint()?,
                    duplicates: r.varint()?,
                    acked: r.varint()?,
                    redelivered: r.varint()?,
                    expired: r.varint()?,
                    dead_lettered: r.varint()?,
                    dropped: r.varint()?,
                    purged: r.varint()?,
                },
                // Absent in checkpoints written before shared messages had keys.
                shared_below: if r.buf.is_empty() { 0 } else { r.varint()? },
            },
            5 => {
                let n = r.count(2)?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push((r.time()?, r.str()?.to_owned()));
                }
                StateOp::Dedup(items)
            }
            6 => StateOp::Duplicates(r.varint()?),
            _ => return Err(DecodeError("unknown state op")),
        };
        if !r.buf.is_empty() {
            return Err(DecodeError("trailing bytes"));
        }
        Ok(decoded)
    }
}

/// Decodes a record of a queue log from its key and body.
pub(crate) fn decode(key: Option<&[u8]>, body: &[u8]) -> Result<Decoded, DecodeError> {
    let key = key.ok_or(DecodeError("record has no key"))?;
    let mut r = Reader { buf: key };
    match r.u8()? {
        KIND_MESSAGE => {
            let meta = MessageMeta::decode(&mut r)?;
            if !r.buf.is_empty() {
                return Err(DecodeError("trailing bytes in message key"));
            }
            Ok(Decoded::Message(meta))
        }
        KIND_STATE => {
            let op = r.u8()?;
            Ok(Decoded::State(StateOp::decode(op, body)?))
        }
        KIND_SHARED => {
            let n = r.count(1)?;
            let mut destinations = Vec::with_capacity(n);
            for _ in 0..n {
                destinations.push(r.u32()?);
            }
            if r.u8()? != KIND_MESSAGE {
                return Err(DecodeError("a shared record without a message key"));
            }
            let meta = MessageMeta::decode(&mut r)?;
            if !r.buf.is_empty() {
                return Err(DecodeError("trailing bytes in a shared message key"));
            }
            Ok(Decoded::Shared(destinations, meta))
        }
        _ => Err(DecodeError("unknown record kind")),
    }
}

/// Builds the key of a state op into `buf`-free bytes (helper for tests).
#[cfg(test)]
fn roundtrip(op: &StateOp) -> StateOp {
    let (k, b) = op.encode();
    match decode(Some(&k), &b).expect("decodes") {
        Decoded::State(s) => s,
        other => panic!("not a state op: {other:?}"),
    }
}

/// The record header that holds [`crate::api::SendMessage::properties`]: no user header can
/// have this name (names starting with NUL are refused).
pub(crate) const PROPERTIES_HEADER: &[u8] = b"\0properties";

/// The record header that holds [`crate::api::SendMessage::routing_key`].
pub(crate) const ROUTING_KEY_HEADER: &[u8] = b"\0routing-key";

/// The record header that holds [`crate::api::SendMessage::exchange`].
pub(crate) const EXCHANGE_HEADER: &[u8] = b"\0exchange";

/// A message ready to be written: metadata, headers and body.
#[derive(Clone, Debug)]
pub(crate) struct Outgoing {
    pub(crate) meta: MessageMeta,
    pub(crate) headers: Vec<Header>,
    pub(crate) body: Bytes,
}

impl Outgoing {
    /// Its message record.
    pub(crate) fn record(&self) -> NewRecord {
        NewRecord {
            timestamp_ms: None,
            key: Some(self.meta.encode()),
            headers: self.headers.clone(),
            body: self.body.clone(),
        }
    }
}

#[cfg(test)]
mod tests;
