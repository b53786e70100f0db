//! The answers the commands read typed (queues, deliveries, exchanges, bindings,
//! publish outcomes, subscriptions) and the arguments they pass (`Settle`). Only
//! what a command needs is typed; the rest of an answer is shown as the broker sent
//! it, so a newer broker's extra fields still print.

use std::collections::BTreeMap;

use reqwest::StatusCode;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::ApiError;

/// A successful answer: its status (201 vs 200 tells created from existing) and its
/// JSON body (`Null` for 204).
#[derive(Debug)]
pub struct Reply {
    /// The HTTP status.
    pub status: StatusCode,
    /// The JSON body.
    pub body: Value,
    /// The request's URL, for error messages.
    pub(super) url: String,
}

impl Reply {
    /// The body as a typed value.
    pub fn parse<T: DeserializeOwned>(self) -> Result<T, ApiError> {
        let url = self.url;
        serde_json::from_value(self.body).map_err(|source| ApiError::Decode { url, source })
    }
}

/// How to settle a list of receipts.
#[derive(Clone, Copy, Debug)]
pub enum Settle {
    /// Done: remove the messages.
    Ack,
    /// Give them back: `requeue` (retry, after `delay_ms` or the queue's backoff) or
    /// reject (dead-letter).
    Nack {
        /// Retry (true) or dead-letter (false).
        requeue: bool,
        /// Ready again after this long; the queue's backoff when `None`.
        delay_ms: Option<u64>,
    },
    /// Keep the leases for this much longer, counted from now.
    Extend {
        /// The new lease length.
        visibility_timeout_ms: u64,
    },
}

/// A queue's settings and counters, as far as the commands need them typed. The
/// rest of the answer is shown as the broker sent it.
#[derive(Clone, Debug, Deserialize)]
pub struct QueueInfo {
    /// Its name.
    pub name: String,
    /// Its settings, as the broker reports them.
    pub options: serde_json::Map<String, Value>,
    /// Its counters.
    pub stats: QueueStats,
}

impl QueueInfo {
    /// The queue's default lease length.
    pub fn visibility_timeout_ms(&self) -> Option<u64> {
        self.options
            .get("visibility_timeout_ms")
            .and_then(Value::as_u64)
    }
}

/// A queue's counters: the broker's own type (missing fields read as 0, so an
/// older or newer broker still lists).
pub use weir_broker::QueueStats;

/// `GET /api/queues`.
#[derive(Debug, Deserialize)]
pub struct QueueList {
    /// Every queue.
    pub queues: Vec<QueueInfo>,
}

/// A received or peeked message.
#[derive(Clone, Debug, Deserialize)]
#[allow(clippy::struct_field_names)] // `delivery_count` is the API's name
pub struct Delivery {
    /// The lease handle; absent for a peek.
    #[serde(default)]
    pub receipt: Option<String>,
    /// The message id.
    pub id: String,
    /// The body when it is UTF-8.
    #[serde(default)]
    pub body: Option<String>,
    /// The body, base64, when it is not UTF-8.
    #[serde(default)]
    pub body_base64: Option<String>,
    /// Application headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Its priority.
    #[serde(default)]
    pub priority: u32,
    /// Its group, if any.
    #[serde(default)]
    pub group: Option<String>,
    /// Deliveries so far, this one included.
    #[serde(default)]
    pub delivery_count: u32,
    /// Set when the message was dead-lettered.
    #[serde(default)]
    pub dead_letter: Option<DeadLetter>,
}

impl Delivery {
    /// The body's bytes.
    ///
    /// # Errors
    /// When `body_base64` is not base64 (a broker bug, but peer input all the same).
    pub fn body_bytes(&self) -> Result<Vec<u8>, base64::DecodeError> {
        use base64::Engine as _;
        match (&self.body, &self.body_base64) {
            (Some(text), _) => Ok(text.as_bytes().to_vec()),
            (None, Some(encoded)) => base64::engine::general_purpose::STANDARD.decode(encoded),
            (None, None) => Ok(Vec::new()),
        }
    }
}

/// Where a dead letter came from and why.
#[derive(Clone, Debug, Deserialize)]
pub struct DeadLetter {
    /// `rejected`, `max_deliveries`, `expired` or `overflow`.
    pub reason: String,
    /// When, in ms since the epoch.
    pub time_ms: i64,
    /// The queue it was dead-lettered from.
    pub source_queue: String,
    /// How often it had been delivered there.
    pub delivery_count: u32,
}

/// `GET …/messages` and `GET …/dead-letters`.
#[derive(Debug, Deserialize)]
pub struct Messages {
    /// The messages, possibly none.
    pub messages: Vec<Delivery>,
}

/// An exchange as `GET /api/exchanges` lists it.
#[derive(Clone, Debug, Deserialize)]
pub struct ExchangeInfo {
    /// Its name.
    pub name: String,
    /// `direct`, `topic`, `fanout` or `headers`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Kept across restarts.
    #[serde(default)]
    pub durable: bool,
    /// Deleted when its last binding as a source goes.
    #[serde(default)]
    pub auto_delete: bool,
    /// Where messages that route nowhere go.
    #[serde(default)]
    pub alternate_exchange: Option<String>,
    /// How many bindings have it as their source.
    #[serde(default)]
    pub bindings: u64,
}

/// `GET /api/exchanges`.
#[derive(Debug, Deserialize)]
pub struct ExchangeList {
    /// Every exchange.
    pub exchanges: Vec<ExchangeInfo>,
}

/// A binding as the broker reports it.
#[derive(Clone, Debug, Deserialize)]
pub struct BindingInfo {
    /// The exchange it routes from.
    pub source: String,
    /// The queue or exchange it routes to.
    pub destination: String,
    /// `queue` or `exchange`.
    #[serde(default)]
    pub destination_type: String,
    /// The key (direct) or pattern (topic).
    #[serde(default)]
    pub routing_key: String,
    /// Header arguments (headers exchanges).
    #[serde(default)]
    pub arguments: BTreeMap<String, String>,
}

/// `GET /api/bindings`.
#[derive(Debug, Deserialize)]
pub struct BindingList {
    /// The bindings that matched the filter.
    pub bindings: Vec<BindingInfo>,
}

/// Where one published message went.
#[derive(Clone, Debug, Deserialize)]
pub struct PublishOutcome {
    /// Its id, as given or generated.
    pub id: String,
    /// The queues it was enqueued in (asked for with `queue_names`).
    #[serde(default)]
    pub queues: Vec<String>,
    /// Queues that already had it (de-duplication).
    #[serde(default)]
    pub duplicate_in: Vec<String>,
    /// It reached no queue and was dropped.
    #[serde(default)]
    pub unroutable: bool,
}

/// `POST /api/exchanges/{name}/publish` and `POST /api/topics/{topic}/publish`.
#[derive(Debug, Deserialize)]
pub struct PublishReply {
    /// One per message, in order.
    pub messages: Vec<PublishOutcome>,
    /// Copies enqueued, over all queues.
    #[serde(default)]
    pub routed: u64,
    /// Messages that reached no queue.
    #[serde(default)]
    pub unroutable: u64,
    /// Unroutable messages that were published with `mandatory`.
    #[serde(default)]
    pub returned: u64,
}

/// A topic subscription.
#[derive(Clone, Debug, Deserialize)]
pub struct SubscriptionInfo {
    /// The subscriber's name.
    pub name: String,
    /// Its queue: receive and ack there.
    pub queue: String,
    /// The routing-key pattern it is bound with.
    pub pattern: String,
    /// Its queue's counters (listings only).
    #[serde(default)]
    pub stats: Option<QueueStats>,
}

/// `GET /api/topics/{topic}/subscriptions`.
#[derive(Debug, Deserialize)]
pub struct SubscriptionList {
    /// The subscriptions of the topic.
    pub subscriptions: Vec<SubscriptionInfo>,
}

/// Serializes `value` to JSON for `--json` output: one line, so a stream of answers
/// is JSON Lines.
pub fn to_json_line<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_utf8_bodies_decode_from_base64() {
        let d: Delivery = serde_json::from_str(r#"{"id":"a","body_base64":"/wA="}"#).unwrap();
        assert_eq!(d.body_bytes().unwrap(), vec![0xff, 0]);
    }
}
