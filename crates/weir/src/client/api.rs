//! A small client of the broker's REST API (`docs/http-api.md`), shared by the client
//! commands, `weir worker` and `weir bench`. It only moves JSON: the broker checks
//! every argument, so the commands show the broker's own `reason` when it refuses.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use reqwest::{Method, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Where the commands look for the broker unless told otherwise.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8080";

/// Longest a request other than a long poll may take. Generous: a send of a large
/// batch waits for the broker's fsync.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Added to a long poll's `wait_ms` for its request timeout, so a slow answer after
/// a full wait is not mistaken for a dead broker.
const LONG_POLL_MARGIN: Duration = Duration::from_secs(30);

/// A failed call.
#[derive(Debug)]
pub enum ApiError {
    /// The broker answered with an error status and (usually) its JSON error body.
    Server {
        /// The HTTP status.
        status: StatusCode,
        /// The stable error code (`queue_not_found`), or `http_<status>` when the body
        /// was not the broker's JSON (a proxy's page, say).
        code: String,
        /// The broker's explanation.
        reason: String,
    },
    /// No answer: connection refused or reset, a timeout, a body cut short.
    Transport {
        /// The request's URL, to say which broker was unreachable.
        url: String,
        /// What went wrong.
        source: reqwest::Error,
    },
    /// A success status with a body that is not what the API promises.
    Decode {
        /// The request's URL.
        url: String,
        /// The parser's complaint.
        source: serde_json::Error,
    },
}

impl ApiError {
    /// True when trying again later can succeed: the broker is restarting, overloaded
    /// or short of disk. Client errors (4xx) are final, except 429.
    pub fn is_transient(&self) -> bool {
        match self {
            ApiError::Server { status, .. } => {
                status.is_server_error() || *status == StatusCode::TOO_MANY_REQUESTS
            }
            ApiError::Transport { .. } => true,
            ApiError::Decode { .. } => false,
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiError::Server { code, reason, .. } => write!(f, "{reason} ({code})"),
            ApiError::Transport { url, source } => {
                // reqwest's own message ("error sending request for url (…)") and the
                // layers below repeat themselves; the innermost cause says what
                // happened ("Connection refused", "operation timed out").
                let mut cause: &dyn std::error::Error = source;
                while let Some(inner) = cause.source() {
                    cause = inner;
                }
                write!(f, "cannot reach the broker at {url}: {cause}")
            }
            ApiError::Decode { url, source } => {
                write!(
                    f,
                    "unexpected answer from {url} (is this a weir broker?): {source}"
                )
            }
        }
    }
}

impl std::error::Error for ApiError {}

/// A successful answer: its status (201 vs 200 tells created from existing) and its
/// JSON body (`Null` for 204).
#[derive(Debug)]
pub struct Reply {
    /// The HTTP status.
    pub status: StatusCode,
    /// The JSON body.
    pub body: Value,
    /// The request's URL, for error messages.
    url: String,
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

/// How the default exchange (`""`) is named in paths, as in `RabbitMQ`'s management
/// API: an empty path segment would address another route.
pub const DEFAULT_EXCHANGE: &str = "amq.default";

/// The path segment of exchange `name`: the default exchange is `amq.default`.
fn exchange_segment(name: &str) -> &str {
    if name.is_empty() {
        DEFAULT_EXCHANGE
    } else {
        name
    }
}

/// The broker's HTTP API at one base URL.
#[derive(Clone, Debug)]
pub struct Api {
    http: reqwest::Client,
    base: Url,
}

impl Api {
    /// A client of the broker at `server` (`http://host:port`, optionally with a
    /// path prefix).
    pub fn new(server: &str) -> anyhow::Result<Api> {
        let mut base = Url::parse(server)
            .map_err(|e| anyhow::anyhow!("--server {server:?} is not a URL: {e}"))?;
        if !matches!(base.scheme(), "http" | "https") || base.path_segments_mut().is_err() {
            anyhow::bail!("--server {server:?} must be an http:// URL such as {DEFAULT_SERVER}");
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(REQUEST_TIMEOUT)
            .build()?;
        Ok(Api { http, base })
    }

    /// The URL of `segments` below the base; each segment is percent-encoded, so a
    /// queue name the broker would refuse still reaches it (and gets `invalid_name`)
    /// instead of addressing another route.
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .expect("invariant: Api::new checked that the base URL has a path")
            .pop_if_empty()
            .extend(segments);
        url
    }

    async fn call(
        &self,
        method: Method,
        url: Url,
        body: Option<&Value>,
        timeout: Option<Duration>,
    ) -> Result<Reply, ApiError> {
        let (status, bytes, shown) = self
            .round_trip(method, url, timeout, |request| match body {
                Some(body) => request.json(body),
                None => request,
            })
            .await?;
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).map_err(|source| ApiError::Decode {
                url: shown.clone(),
                source,
            })?
        };
        Ok(Reply {
            status,
            body,
            url: shown,
        })
    }

    /// Sends a request; answers the status and raw body of a success, and the
    /// endpoint for error messages.
    async fn round_trip(
        &self,
        method: Method,
        url: Url,
        timeout: Option<Duration>,
        with_body: impl FnOnce(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    ) -> Result<(StatusCode, bytes::Bytes, String), ApiError> {
        // Errors name the endpoint, not the query (`max`, `wait_ms`) that follows.
        let shown = {
            let mut endpoint = url.clone();
            endpoint.set_query(None);
            endpoint.to_string()
        };
        let transport = |source| ApiError::Transport {
            url: shown.clone(),
            source,
        };
        let mut request = with_body(self.http.request(method, url));
        if let Some(timeout) = timeout {
            request = request.timeout(timeout);
        }
        let response = request.send().await.map_err(transport)?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(transport)?;
        if !status.is_success() {
            return Err(server_error(status, &bytes));
        }
        Ok((status, bytes, shown))
    }

    /// `PUT /api/queues/{name}` with `options` (only the fields to set).
    pub async fn declare(&self, name: &str, options: &Value) -> Result<Reply, ApiError> {
        self.call(
            Method::PUT,
            self.url(&["api", "queues", name]),
            Some(options),
            None,
        )
        .await
    }

    /// `GET /api/broker`: queue and exchange counts, body-log bytes.
    pub async fn broker(&self) -> Result<Reply, ApiError> {
        self.call(Method::GET, self.url(&["api", "broker"]), None, None)
            .await
    }

    /// `GET /api/queues`.
    pub async fn list(&self) -> Result<Reply, ApiError> {
        self.call(Method::GET, self.url(&["api", "queues"]), None, None)
            .await
    }

    /// `GET /api/queues/{name}`.
    pub async fn info(&self, name: &str) -> Result<Reply, ApiError> {
        self.call(Method::GET, self.url(&["api", "queues", name]), None, None)
            .await
    }

    /// `DELETE /api/queues/{name}`.
    pub async fn delete(&self, name: &str) -> Result<Reply, ApiError> {
        self.call(
            Method::DELETE,
            self.url(&["api", "queues", name]),
            None,
            None,
        )
        .await
    }

    /// `POST /api/queues/{name}/purge`.
    pub async fn purge(&self, name: &str) -> Result<Reply, ApiError> {
        self.call(
            Method::POST,
            self.url(&["api", "queues", name, "purge"]),
            None,
            None,
        )
        .await
    }

    /// `POST /api/queues/{name}/messages` with one message or `{"messages": [...]}`.
    pub async fn send(&self, name: &str, body: &Value) -> Result<Reply, ApiError> {
        let url = self.url(&["api", "queues", name, "messages"]);
        self.call(Method::POST, url, Some(body), None).await
    }

    /// `GET /api/queues/{name}/messages`: leases up to `max` messages, waiting up to
    /// `wait_ms` for the first.
    pub async fn receive(
        &self,
        name: &str,
        max: u32,
        wait_ms: u64,
        visibility_timeout_ms: Option<u64>,
    ) -> Result<Reply, ApiError> {
        let (url, timeout) = self.receive_url(name, max, wait_ms, visibility_timeout_ms);
        self.call(Method::GET, url, None, Some(timeout)).await
    }

    /// Like [`Api::receive`], decoded straight into [`Messages`] (no
    /// `serde_json::Value` per message on the way, which a load generator notices).
    pub async fn receive_messages(
        &self,
        name: &str,
        max: u32,
        wait_ms: u64,
        visibility_timeout_ms: Option<u64>,
    ) -> Result<Messages, ApiError> {
        let (url, timeout) = self.receive_url(name, max, wait_ms, visibility_timeout_ms);
        let (_, bytes, shown) = self
            .round_trip(Method::GET, url, Some(timeout), |request| request)
            .await?;
        serde_json::from_slice(&bytes).map_err(|source| ApiError::Decode { url: shown, source })
    }

    fn receive_url(
        &self,
        name: &str,
        max: u32,
        wait_ms: u64,
        visibility_timeout_ms: Option<u64>,
    ) -> (Url, Duration) {
        let mut url = self.url(&["api", "queues", name, "messages"]);
        {
            let mut query = url.query_pairs_mut();
            query.append_pair("max", &max.to_string());
            query.append_pair("wait_ms", &wait_ms.to_string());
            if let Some(ms) = visibility_timeout_ms {
                query.append_pair("visibility_timeout_ms", &ms.to_string());
            }
        }
        let timeout = REQUEST_TIMEOUT.max(Duration::from_millis(wait_ms) + LONG_POLL_MARGIN);
        (url, timeout)
    }

    /// `POST /api/queues/{name}/messages` with a body already written as JSON text:
    /// a load generator renders it directly instead of building a `Value` per
    /// message. The answer's outcome list is not read.
    pub async fn send_rendered(&self, name: &str, json: String) -> Result<StatusCode, ApiError> {
        let url = self.url(&["api", "queues", name, "messages"]);
        let (status, _, _) = self
            .round_trip(Method::POST, url, None, |request| {
                request
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(json)
            })
            .await?;
        Ok(status)
    }

    /// `POST /api/queues/{name}/ack|nack|extend`.
    pub async fn settle(
        &self,
        name: &str,
        how: Settle,
        receipts: &[String],
    ) -> Result<Reply, ApiError> {
        let (path, body) = match how {
            Settle::Ack => ("ack", serde_json::json!({ "receipts": receipts })),
            Settle::Nack { requeue, delay_ms } => {
                let mut body = serde_json::json!({ "receipts": receipts, "requeue": requeue });
                if let Some(ms) = delay_ms {
                    body["delay_ms"] = ms.into();
                }
                ("nack", body)
            }
            Settle::Extend {
                visibility_timeout_ms,
            } => (
                "extend",
                serde_json::json!({
                    "receipts": receipts,
                    "visibility_timeout_ms": visibility_timeout_ms,
                }),
            ),
        };
        let url = self.url(&["api", "queues", name, path]);
        self.call(Method::POST, url, Some(&body), None).await
    }

    /// `GET /api/queues/{name}/dead-letters?max=`.
    pub async fn dead_letters(&self, name: &str, max: u32) -> Result<Reply, ApiError> {
        let mut url = self.url(&["api", "queues", name, "dead-letters"]);
        url.query_pairs_mut().append_pair("max", &max.to_string());
        self.call(Method::GET, url, None, None).await
    }

    /// `POST /api/queues/{name}/dead-letters/redrive`.
    pub async fn redrive(&self, name: &str, max: Option<u32>) -> Result<Reply, ApiError> {
        let url = self.url(&["api", "queues", name, "dead-letters", "redrive"]);
        let body = match max {
            Some(max) => serde_json::json!({ "max": max }),
            None => serde_json::json!({}),
        };
        self.call(Method::POST, url, Some(&body), None).await
    }

    /// `PUT /api/exchanges/{name}` with `options` (`type` and the fields to set).
    pub async fn declare_exchange(&self, name: &str, options: &Value) -> Result<Reply, ApiError> {
        let url = self.url(&["api", "exchanges", exchange_segment(name)]);
        self.call(Method::PUT, url, Some(options), None).await
    }

    /// `GET /api/exchanges`.
    pub async fn exchanges(&self) -> Result<Reply, ApiError> {
        self.call(Method::GET, self.url(&["api", "exchanges"]), None, None)
            .await
    }

    /// `GET /api/exchanges/{name}`.
    pub async fn exchange(&self, name: &str) -> Result<Reply, ApiError> {
        let url = self.url(&["api", "exchanges", exchange_segment(name)]);
        self.call(Method::GET, url, None, None).await
    }

    /// `DELETE /api/exchanges/{name}`, with `?if_unused=true` when asked.
    pub async fn delete_exchange(&self, name: &str, if_unused: bool) -> Result<Reply, ApiError> {
        let mut url = self.url(&["api", "exchanges", exchange_segment(name)]);
        if if_unused {
            url.query_pairs_mut().append_pair("if_unused", "true");
        }
        self.call(Method::DELETE, url, None, None).await
    }

    /// `POST /api/bindings` (`bind`) or `DELETE /api/bindings` (unbind) with
    /// `binding`.
    pub async fn binding(&self, bind: bool, binding: &Value) -> Result<Reply, ApiError> {
        let method = if bind { Method::POST } else { Method::DELETE };
        let url = self.url(&["api", "bindings"]);
        self.call(method, url, Some(binding), None).await
    }

    /// `GET /api/bindings`, optionally only from `source` and/or to `destination`.
    pub async fn bindings(
        &self,
        source: Option<&str>,
        destination: Option<&str>,
    ) -> Result<Reply, ApiError> {
        let mut url = self.url(&["api", "bindings"]);
        if source.is_some() || destination.is_some() {
            let mut query = url.query_pairs_mut();
            if let Some(source) = source {
                query.append_pair("source", source);
            }
            if let Some(destination) = destination {
                query.append_pair("destination", destination);
            }
        }
        self.call(Method::GET, url, None, None).await
    }

    /// `POST /api/exchanges/{name}/publish` with one message or
    /// `{"messages": [...]}`; with `queue_names`, the answer names the
    /// queues each message reached (`?queues=true`), else it only counts them.
    pub async fn publish(
        &self,
        exchange: &str,
        body: &Value,
        queue_names: bool,
    ) -> Result<Reply, ApiError> {
        let mut url = self.url(&["api", "exchanges", exchange_segment(exchange), "publish"]);
        if queue_names {
            url.set_query(Some("queues=true"));
        }
        self.call(Method::POST, url, Some(body), None).await
    }

    /// `PUT /api/topics/{topic}/subscriptions/{name}` with `{"pattern", "queue"}`.
    pub async fn subscribe(
        &self,
        topic: &str,
        name: &str,
        body: &Value,
    ) -> Result<Reply, ApiError> {
        let url = self.url(&["api", "topics", topic, "subscriptions", name]);
        self.call(Method::PUT, url, Some(body), None).await
    }

    /// `DELETE /api/topics/{topic}/subscriptions/{name}`.
    pub async fn unsubscribe(&self, topic: &str, name: &str) -> Result<Reply, ApiError> {
        let url = self.url(&["api", "topics", topic, "subscriptions", name]);
        self.call(Method::DELETE, url, None, None).await
    }

    /// `GET /api/topics/{topic}/subscriptions`.
    pub async fn subscriptions(&self, topic: &str) -> Result<Reply, ApiError> {
        let url = self.url(&["api", "topics", topic, "subscriptions"]);
        self.call(Method::GET, url, None, None).await
    }
}

/// The error of a non-success answer: the broker's `{"error", "reason"}` when the
/// body has it, else the start of whatever came back.
fn server_error(status: StatusCode, bytes: &[u8]) -> ApiError {
    #[derive(Deserialize)]
    struct Body {
        error: String,
        #[serde(default)]
        reason: String,
    }
    if let Ok(body) = serde_json::from_slice::<Body>(bytes) {
        return ApiError::Server {
            status,
            reason: if body.reason.is_empty() {
                body.error.clone()
            } else {
                body.reason
            },
            code: body.error,
        };
    }
    let text = String::from_utf8_lossy(bytes);
    let text: String = text.trim().chars().take(200).collect();
    ApiError::Server {
        status,
        code: format!("http_{}", status.as_u16()),
        reason: if text.is_empty() {
            status.to_string()
        } else {
            format!("{status}: {text}")
        },
    }
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
    fn urls_encode_each_segment_and_keep_a_path_prefix() {
        let api = Api::new("http://127.0.0.1:8080/weir/").unwrap();
        assert_eq!(
            api.url(&["api", "queues", "a b/c"]).as_str(),
            "http://127.0.0.1:8080/weir/api/queues/a%20b%2Fc"
        );
        let api = Api::new("http://127.0.0.1:8080").unwrap();
        assert_eq!(
            api.url(&["healthz"]).as_str(),
            "http://127.0.0.1:8080/healthz"
        );
    }

    #[test]
    fn the_default_exchange_is_amq_default_in_paths() {
        let api = Api::new("http://127.0.0.1:8080").unwrap();
        assert_eq!(
            api.url(&["api", "exchanges", exchange_segment(""), "publish"])
                .as_str(),
            "http://127.0.0.1:8080/api/exchanges/amq.default/publish"
        );
        assert_eq!(exchange_segment("logs"), "logs");
    }

    #[test]
    fn a_server_that_is_not_a_url_is_refused() {
        assert!(Api::new("127.0.0.1:8080").is_err());
        assert!(Api::new("mailto:x@example.com").is_err());
    }

    #[test]
    fn error_bodies_give_code_and_reason() {
        let e = server_error(
            StatusCode::NOT_FOUND,
            br#"{"error":"queue_not_found","reason":"queue 'x' does not exist"}"#,
        );
        assert_eq!(e.to_string(), "queue 'x' does not exist (queue_not_found)");
        assert!(!e.is_transient());
        let e = server_error(StatusCode::BAD_GATEWAY, b"<html>bad gateway</html>");
        assert!(matches!(&e, ApiError::Server { code, .. } if code == "http_502"));
        assert!(e.is_transient());
    }

    #[test]
    fn non_utf8_bodies_decode_from_base64() {
        let d: Delivery = serde_json::from_str(r#"{"id":"a","body_base64":"/wA="}"#).unwrap();
        assert_eq!(d.body_bytes().unwrap(), vec![0xff, 0]);
    }
}
