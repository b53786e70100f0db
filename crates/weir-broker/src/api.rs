//! The request and response types of the broker API: what front ends send in and get
//! back. Plain data, serde-friendly, no protocol types.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::error::{BrokerError, Result};

/// What a queue does when `max_length` or `max_length_bytes` is reached.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Overflow {
    /// The head (the next message to be delivered: oldest of the highest priority)
    /// is dropped and counted to make room; with a `dead_letter_exchange` it is
    /// dead-lettered instead (reason `overflow`), as RabbitMQ does. `RabbitMQ`'s
    /// default.
    #[default]
    DropHead,
    /// The send is refused with `queue_full`; nothing of it is enqueued.
    RejectPublish,
    /// As `reject-publish`, and the refused messages are dead-lettered (reason
    /// `overflow`, RabbitMQ's `maxlen`), as RabbitMQ's `reject-publish-dlx`.
    RejectPublishDlx,
    /// The oldest ready message goes to the dead-letter queue (dropped if none is
    /// set).
    DeadLetter,
}

impl Overflow {
    /// Whether a send over the limits is refused (rather than making room).
    pub fn rejects(self) -> bool {
        matches!(self, Overflow::RejectPublish | Overflow::RejectPublishDlx)
    }
}

/// How the delay between redeliveries grows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Backoff {
    /// Always `retry_delay_ms`.
    #[default]
    Fixed,
    /// `retry_delay_ms × 2^(delivery_count − 1)`, capped at `retry_delay_max_ms`.
    Exponential,
}

/// A queue's settings. Every field has a default, so `{}` declares a plain durable
/// queue. Two declarations conflict when any field differs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[allow(
    clippy::struct_excessive_bools,
    reason = "independent flags, as AMQP's queue.declare carries them"
)]
pub struct QueueOptions {
    /// How long a received message stays leased before it is ready again (a
    /// receive may override it).
    pub visibility_timeout_ms: u64,
    /// After this many deliveries a message that fails again is dead-lettered;
    /// `None` retries forever.
    pub max_deliveries: Option<u32>,
    /// Where rejected, expired, over-delivered and overflowed messages go. Created
    /// with default options if it does not exist.
    pub dead_letter_queue: Option<String>,
    /// Instead of a queue, dead letters are published through this exchange (`""`:
    /// the default exchange), with `dead_letter_routing_key` or the routing key
    /// they were published with (RabbitMQ's `x-dead-letter-exchange`). Unroutable
    /// dead letters are dropped.
    pub dead_letter_exchange: Option<String>,
    /// The routing key dead letters are published with through
    /// `dead_letter_exchange`; absent: their own.
    pub dead_letter_routing_key: Option<String>,
    /// Delay before a failed message (nack with requeue and no delay of its own, or
    /// an expired lease) is ready again.
    pub retry_delay_ms: u64,
    /// How the retry delay grows with the delivery count.
    pub retry_backoff: Backoff,
    /// Cap of the exponential retry delay.
    pub retry_delay_max_ms: u64,
    /// Highest priority; messages carry `0..=max_priority` (higher first, FIFO within a
    /// priority). Above it counts as `max_priority`. 0 means no priorities.
    pub max_priority: u8,
    /// Default time to live of a message; expired messages are dead-lettered if a
    /// dead-letter queue is set, else dropped and counted.
    pub message_ttl_ms: Option<u64>,
    /// At most this many ready messages.
    pub max_length: Option<u64>,
    /// At most this many bytes of ready message bodies.
    pub max_length_bytes: Option<u64>,
    /// What happens at `max_length` / `max_length_bytes`.
    pub overflow: Overflow,
    /// A send whose `id` was seen within this window is accepted but not enqueued
    /// again. `None`: no de-duplication.
    pub dedup_window_ms: Option<u64>,
    /// The queue is deleted once it has gone this long unused: no consumer, no
    /// receive and no redeclaration (RabbitMQ's `x-expires`). Publishing does not
    /// count as use. `None`: never.
    pub expires_ms: Option<u64>,
    /// At most one AMQP consumer of the queue gets messages at a time; the others
    /// wait, in the order they came, and the next takes over when it goes
    /// (RabbitMQ's `x-single-active-consumer`). HTTP receives are not limited.
    pub single_active_consumer: bool,
    /// Owned by the AMQP connection that declared it (AMQP's `exclusive`): deleted
    /// when that connection closes, and at the next start whatever ended the
    /// broker (kill -9 included), as RabbitMQ never recovers an exclusive queue.
    /// Only AMQP declares it; HTTP refuses it (no connection would own it).
    #[serde(skip_serializing_if = "is_false")]
    pub exclusive: bool,
    /// Deleted when its last AMQP consumer goes, once it has had one (AMQP's
    /// `auto-delete`). Kept across restarts as RabbitMQ keeps a durable
    /// auto-delete queue: it goes when a consumer comes and goes after the start.
    #[serde(skip_serializing_if = "is_false")]
    pub auto_delete: bool,
    /// Declared with AMQP's `durable = false`: its messages are still written
    /// like any other's while it runs, but the queue does not outlive the broker:
    /// it is deleted at the next start, as RabbitMQ deletes transient queues when
    /// a node boots. HTTP queues are durable.
    #[serde(skip_serializing_if = "is_false")]
    pub transient: bool,
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if passes a reference
fn is_false(v: &bool) -> bool {
    !*v
}

/// Longest allowed delay, TTL, lease or window: 30 days.
pub const MAX_DURATION_MS: u64 = 30 * 24 * 3600 * 1000;

/// Checks a duration field: `min..=MAX_DURATION_MS`.
pub(crate) fn check_duration(field: &str, v: u64, min: u64) -> Result<()> {
    if v < min || v > MAX_DURATION_MS {
        return Err(BrokerError::invalid(
            field,
            format!("{v} is outside {min}..={MAX_DURATION_MS}"),
        ));
    }
    Ok(())
}

impl Default for QueueOptions {
    fn default() -> Self {
        QueueOptions {
            visibility_timeout_ms: 30_000,
            max_deliveries: None,
            dead_letter_queue: None,
            dead_letter_exchange: None,
            dead_letter_routing_key: None,
            retry_delay_ms: 0,
            retry_backoff: Backoff::Fixed,
            retry_delay_max_ms: 300_000,
            max_priority: 0,
            message_ttl_ms: None,
            max_length: None,
            max_length_bytes: None,
            overflow: Overflow::DropHead,
            dedup_window_ms: None,
            expires_ms: None,
            single_active_consumer: false,
            exclusive: false,
            auto_delete: false,
            transient: false,
        }
    }
}

impl QueueOptions {
    /// Checks ranges, reporting the first problem.
    pub fn validate(&self, queue: &str) -> Result<()> {
        check_duration("visibility_timeout_ms", self.visibility_timeout_ms, 1)?;
        check_duration("retry_delay_ms", self.retry_delay_ms, 0)?;
        check_duration("retry_delay_max_ms", self.retry_delay_max_ms, 0)?;
        if let Some(v) = self.message_ttl_ms {
            check_duration("message_ttl_ms", v, 1)?;
        }
        if let Some(v) = self.expires_ms {
            check_duration("expires_ms", v, 1)?;
        }
        if let Some(v) = self.dedup_window_ms {
            check_duration("dedup_window_ms", v, 1)?;
        }
        if self.max_deliveries == Some(0) {
            return Err(BrokerError::invalid("max_deliveries", "must be at least 1"));
        }
        if self.max_length == Some(0) && self.overflow == Overflow::RejectPublish {
            return Err(BrokerError::invalid(
                "max_length",
                "0 with reject-publish would refuse every send",
            ));
        }
        if self.dead_letter_queue.is_some() && self.dead_letter_exchange.is_some() {
            return Err(BrokerError::invalid(
                "dead_letter_exchange",
                "set dead_letter_queue or dead_letter_exchange, not both",
            ));
        }
        if self.dead_letter_routing_key.is_some() && self.dead_letter_exchange.is_none() {
            return Err(BrokerError::invalid(
                "dead_letter_routing_key",
                "only applies with dead_letter_exchange",
            ));
        }
        if let Some(key) = &self.dead_letter_routing_key
            && key.len() > 255
        {
            return Err(BrokerError::invalid(
                "dead_letter_routing_key",
                "at most 255 bytes",
            ));
        }
        if let Some(exchange) = &self.dead_letter_exchange
            && exchange.len() > 255
        {
            return Err(BrokerError::invalid(
                "dead_letter_exchange",
                "at most 255 bytes",
            ));
        }
        if let Some(dlq) = &self.dead_letter_queue {
            validate_name(dlq)
                .map_err(|e| BrokerError::invalid("dead_letter_queue", e.to_string()))?;
            if dlq == queue {
                return Err(BrokerError::invalid(
                    "dead_letter_queue",
                    "a queue cannot be its own dead-letter queue",
                ));
            }
        }
        Ok(())
    }

    /// Whether dead letters go somewhere (a queue or an exchange) instead of being
    /// dropped.
    pub fn dead_letters(&self) -> bool {
        self.dead_letter_queue.is_some() || self.dead_letter_exchange.is_some()
    }

    /// The first option that differs from `other`, for a conflict message.
    pub fn difference(&self, other: &QueueOptions) -> Option<String> {
        // Every field, those left out when false included, so a flag asked off
        // differs from one that is on.
        let complete = |o: &QueueOptions| {
            let mut v = serde_json::to_value(o).ok()?;
            let map = v.as_object_mut()?;
            for flag in ["exclusive", "auto_delete", "transient"] {
                map.entry(flag).or_insert(serde_json::Value::Bool(false));
            }
            Some(v)
        };
        let (a, b) = (complete(self)?, complete(other)?);
        let (a, b) = (a.as_object()?, b.as_object()?);
        a.iter().find(|(k, v)| b.get(*k) != Some(v)).map(|(k, v)| {
            format!(
                "{k} is {} but {v} was asked",
                b.get(k).unwrap_or(&serde_json::Value::Null)
            )
        })
    }
}

/// Longest queue or exchange name, in bytes: AMQP's short string.
pub const MAX_NAME_BYTES: usize = 255;

/// Checks a queue name: 1 to 255 bytes of UTF-8, anything AMQP's short string
/// carries, as RabbitMQ takes it (Celery names queues `celery@HOST.celery.pidbox`).
/// Names never become paths: each queue's directory is named by its number
/// (`queues/@<id>`), so no name can escape the data directory or alias another.
///
/// A broker-wide name in a vhost other than `/` ([`crate::vhost`]) is checked by its
/// name in the vhost, which may not start with a NUL byte.
pub fn validate_name(name: &str) -> Result<()> {
    let (_, name) = crate::names::split(name);
    let refuse = |reason: &str| {
        Err(BrokerError::InvalidName {
            kind: crate::error::Kind::Queue,
            name: truncated(name, MAX_NAME_BYTES),
            reason: reason.to_owned(),
        })
    };
    if name.is_empty() {
        return refuse("empty");
    }
    if name.len() > MAX_NAME_BYTES {
        return refuse("longer than 255 bytes");
    }
    if name.starts_with('\0') {
        return refuse("starts with a NUL byte");
    }
    Ok(())
}

/// `text` cut to at most `max` bytes on a character boundary, for error messages.
fn truncated(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// One message to send.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SendMessage {
    /// The producer's id (also the de-duplication key); generated when absent.
    pub id: Option<String>,
    /// The payload, any bytes.
    pub body: Bytes,
    /// Application headers.
    pub headers: BTreeMap<String, String>,
    /// `0..=max_priority`; absent is 0.
    pub priority: Option<u8>,
    /// Deliver no earlier than this many ms from now.
    pub delay_ms: Option<u64>,
    /// Message group: FIFO per group, one in flight per group.
    pub group: Option<String>,
    /// Time to live from now; overrides the queue's `message_ttl_ms` when shorter.
    pub ttl_ms: Option<u64>,
    /// The routing key it was published with, kept for dead-lettering: a publish
    /// sets it only for queues that dead-letter.
    pub routing_key: Option<String>,
    /// The exchange it was published through, kept like `routing_key` for queues
    /// that dead-letter (the death history names it).
    pub exchange: Option<String>,
    /// A front end's own description of the message (the AMQP front end: exchange,
    /// routing key and basic properties), opaque to the broker: stored with the
    /// message and handed back with every delivery of it.
    pub properties: Option<Bytes>,
}

/// Longest message id, in bytes.
pub const MAX_ID_BYTES: usize = 256;
/// Longest group key, in bytes.
pub const MAX_GROUP_BYTES: usize = 256;

/// What happened to one sent message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendOutcome {
    /// Its id (as given or generated).
    pub id: String,
    /// True when the id was seen within the dedup window: accepted, not enqueued.
    pub duplicate: bool,
}

/// How to receive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReceiveRequest {
    /// At most this many messages (1..=limit).
    pub max: u32,
    /// Wait up to this long for a first message.
    pub wait_ms: u64,
    /// Lease length for these messages; the queue's default when `None`.
    pub visibility_timeout_ms: Option<u64>,
}

/// Why a message was dead-lettered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeadLetterReason {
    /// A consumer nacked it without requeue.
    Rejected,
    /// It failed `max_deliveries` times.
    MaxDeliveries,
    /// Its TTL ran out.
    Expired,
    /// The queue overflowed with policy `dead-letter`.
    Overflow,
}

impl DeadLetterReason {
    /// RabbitMQ's name of the reason (`x-death`'s `reason`).
    pub fn rabbitmq_name(self) -> &'static str {
        match self {
            DeadLetterReason::Rejected => "rejected",
            DeadLetterReason::Expired => "expired",
            DeadLetterReason::Overflow => "maxlen",
            DeadLetterReason::MaxDeliveries => "delivery_limit",
        }
    }
}

/// Where a dead-lettered message came from and why: its last dead-lettering, where
/// it was republished, and its whole death history (RabbitMQ's `x-death` and
/// `x-first-death-*` headers, which the AMQP front end renders from it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetterInfo {
    /// Why (the last dead-lettering).
    pub reason: DeadLetterReason,
    /// When, in ms since the epoch.
    pub time_ms: i64,
    /// The queue it was dead-lettered from.
    pub source_queue: String,
    /// How often it had been delivered there.
    pub delivery_count: u32,
    /// The exchange it was republished through (the source queue's
    /// `dead_letter_exchange`; with a `dead_letter_queue`, the default exchange
    /// `""`, its routing key being that queue's name).
    /// An AMQP consumer gets it as the delivery's exchange.
    #[serde(default)]
    pub exchange: String,
    /// The routing keys it was republished with: the source queue's
    /// `dead_letter_routing_key`, else the keys it had. An AMQP consumer gets the
    /// first as the delivery's routing key.
    #[serde(default)]
    pub routing_keys: Vec<String>,
    /// Every (queue, reason) it was dead-lettered for, the most recent first, with
    /// counts merged, in RabbitMQ 3.10's `x-death` order (see
    /// `queue::dlq::died`).
    #[serde(default)]
    pub deaths: Vec<Death>,
    /// Its first dead-lettering (RabbitMQ's `x-first-death-*`), never changed.
    pub first_death: FirstDeath,
}

/// One (queue, reason) of a message's death history: an entry of RabbitMQ's
/// `x-death`. When the message dies again in the same queue for the same reason,
/// the entry's `count` goes up and it moves to the front; its other fields stay
/// those of the first such death, as in RabbitMQ 3.x.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Death {
    /// The queue it was dead-lettered from.
    pub queue: String,
    /// Why.
    pub reason: DeadLetterReason,
    /// How many times.
    pub count: u64,
    /// The exchange it had been published to (`""`: the default exchange, or sent
    /// to the queue directly).
    pub exchange: String,
    /// The routing keys it had been published with.
    pub routing_keys: Vec<String>,
    /// When, ms since the epoch.
    pub time_ms: i64,
}

/// A message's first dead-lettering.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirstDeath {
    /// The queue it was dead-lettered from.
    pub queue: String,
    /// Why.
    pub reason: DeadLetterReason,
    /// The exchange it had been published to.
    pub exchange: String,
}

/// A message as a consumer sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// The lease handle for ack/nack/extend; `None` for a peek.
    pub receipt: Option<String>,
    /// The message id.
    pub id: String,
    /// The payload.
    pub body: Bytes,
    /// Application headers.
    pub headers: BTreeMap<String, String>,
    /// Its priority.
    pub priority: u8,
    /// Its group, if any.
    pub group: Option<String>,
    /// How many times it has been delivered, this one included (0 for a peek of a
    /// message never delivered).
    pub delivery_count: u32,
    /// When it was enqueued in this queue, ms since the epoch (dead-lettering and
    /// redrive enqueue anew).
    pub enqueued_at_ms: i64,
    /// Set when it was dead-lettered.
    pub dead_letter: Option<DeadLetterInfo>,
    /// What the front end stored with it ([`SendMessage::properties`]).
    pub properties: Option<Bytes>,
    /// Its position in the queue, for a peek (`None` otherwise): names it to
    /// [`Broker::redrive_at`](crate::Broker::redrive_at) and
    /// [`Broker::remove_at`](crate::Broker::remove_at).
    pub position: Option<u64>,
}

/// The result of settling (ack, nack, extend) a list of receipts: each receipt
/// either took effect or failed on its own.
#[derive(Debug, Default)]
pub struct SettleReport {
    /// How many receipts took effect.
    pub settled: u32,
    /// The receipts that did not, with why.
    pub failed: Vec<(String, BrokerError)>,
}

/// What a nack does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NackOptions {
    /// Back to the queue (true) or dead-lettered (false).
    pub requeue: bool,
    /// With requeue: ready again after this long; the queue's backoff when `None`.
    pub delay_ms: Option<u64>,
}

/// Counters and gauges of a queue. Missing fields read as 0, so clients of another
/// version still read it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct QueueStats {
    /// Ready to be received, counting messages accepted and still being written
    /// (ready a moment later).
    pub ready: u64,
    /// Leased to a consumer.
    pub leased: u64,
    /// Waiting for their delay (or retry backoff) to pass.
    pub delayed: u64,
    /// On their way to the dead-letter queue or elsewhere.
    pub in_transit: u64,
    /// Body bytes of all messages held (ready, leased, delayed, in transit).
    pub bytes: u64,
    /// Receivers currently waiting in a long poll.
    pub consumers: u64,
    /// Age of the oldest held message, ms.
    pub oldest_age_ms: Option<u64>,
    /// Messages enqueued, ever.
    pub sent_total: u64,
    /// Sends accepted as duplicates (and not enqueued), ever.
    pub duplicates_total: u64,
    /// Messages acked, ever.
    pub acked_total: u64,
    /// Deliveries beyond the first, ever.
    pub redelivered_total: u64,
    /// Messages that expired, ever.
    pub expired_total: u64,
    /// Messages dead-lettered from this queue, ever.
    pub dead_lettered_total: u64,
    /// Messages dropped: overflow with `drop-head` (or `dead-letter` without a DLQ),
    /// rejected or out of deliveries with no DLQ, ever. Expiries count in
    /// `expired_total` only.
    pub dropped_total: u64,
    /// Messages removed by purge, ever.
    pub purged_total: u64,
    /// Bytes of the queue's log on disk (messages, headers, delivery state; settled
    /// messages until their segment is reclaimed).
    pub disk_bytes: u64,
    /// The most times one of the leases held now was extended (0: none was): a
    /// worker stuck on a message keeps extending its lease. Not kept across a
    /// restart (leases are not).
    #[serde(default)]
    pub max_lease_extensions: u32,
}

/// A queue with its settings and stats.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueInfo {
    /// Its name.
    pub name: String,
    /// Its settings.
    pub options: QueueOptions,
    /// Its counters.
    pub stats: QueueStats,
}

/// The answer to a declaration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Declared {
    /// A new queue.
    Created,
    /// An identical queue was there already.
    Existed,
}
