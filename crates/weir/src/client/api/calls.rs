//! [`Api`]: the broker's REST API at one base URL, one method per endpoint. How a
//! request is made lives here: percent-encoded path segments under an optional
//! prefix, the request timeout (longer for long polls), and the mapping of a
//! non-success answer to [`ApiError`].

use std::time::Duration;

use reqwest::{Method, StatusCode, Url};
use serde_json::Value;

use super::error::{ApiError, server_error};
use super::types::{Messages, Reply, Settle};

/// Where the commands look for the broker unless told otherwise.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8080";

/// Longest a request other than a long poll may take. Generous: a send of a large
/// batch waits for the broker's fsync.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Added to a long poll's `wait_ms` for its request timeout, so a slow answer after
/// a full wait is not mistaken for a dead broker.
const LONG_POLL_MARGIN: Duration = Duration::from_secs(30);

/// How the default exchange (`""`) is named in paths, as in `RabbitMQ`'s management
/// API: an empty path segment would address another route.
pub const DEFAULT_EXCHANGE: &str = "amq.default";

/// `s` with its `%XX` escapes decoded, if that is UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

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
    /// HTTP Basic credentials sent with every request.
    login: Option<(String, String)>,
    /// The vhost of queues, exchanges, bindings and topics (`None`: `/`, the
    /// short paths).
    vhost: Option<String>,
}

impl Api {
    /// A client of the broker at `server` (`http://host:port`, optionally with a
    /// path prefix, and with `user:password@` for the credentials).
    /// Trusts the CA certificates in the PEM file `tls_ca` for an `https://`
    /// server (without one, an `https://` server's certificate is trusted by no
    /// one: weir carries no public roots).
    pub fn new(server: &str, tls_ca: Option<&std::path::Path>) -> anyhow::Result<Api> {
        let mut base = Url::parse(server)
            .map_err(|e| anyhow::anyhow!("--server {server:?} is not a URL: {e}"))?;
        if !matches!(base.scheme(), "http" | "https") || base.path_segments_mut().is_err() {
            anyhow::bail!("--server {server:?} must be an http:// URL such as {DEFAULT_SERVER}");
        }
        let login = if base.username().is_empty() {
            None
        } else {
            let decode = |s: &str| {
                percent_decode(s).ok_or_else(|| {
                    anyhow::anyhow!("--server {server:?}: the credentials are not UTF-8")
                })
            };
            let login = (
                decode(base.username())?,
                decode(base.password().unwrap_or_default())?,
            );
            // Shown in error messages: the password is not.
            let _ = base.set_username("");
            let _ = base.set_password(None);
            Some(login)
        };
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(REQUEST_TIMEOUT);
        if let Some(path) = tls_ca {
            let pem = std::fs::read(path)
                .map_err(|e| anyhow::anyhow!("--tls-ca {}: {e}", path.display()))?;
            let certificates = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                anyhow::anyhow!("--tls-ca {}: not PEM certificates: {e}", path.display())
            })?;
            anyhow::ensure!(
                !certificates.is_empty(),
                "--tls-ca {}: no certificate in the file",
                path.display()
            );
            for certificate in certificates {
                builder = builder.add_root_certificate(certificate);
            }
        }
        let http = builder.build()?;
        Ok(Api {
            http,
            base,
            login,
            vhost: None,
        })
    }

    /// Sends `user`/`password` with every request, unless the server URL carried
    /// credentials of its own.
    #[must_use]
    pub fn with_login(mut self, user: &str, password: &str) -> Api {
        if self.login.is_none() {
            self.login = Some((user.to_owned(), password.to_owned()));
        }
        self
    }

    /// Queues, exchanges, bindings and topics in `vhost` (`/api/vhosts/{vhost}/...`).
    #[must_use]
    pub fn in_vhost(mut self, vhost: &str) -> Api {
        self.vhost = (vhost != "/").then(|| vhost.to_owned());
        self
    }

    /// The URL of `segments` below the base; each segment is percent-encoded, so a
    /// queue name the broker would refuse still reaches it (and gets `invalid_name`)
    /// instead of addressing another route. Paths of what lives in a vhost go to
    /// the chosen vhost's.
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        let mut path = url
            .path_segments_mut()
            .expect("invariant: Api::new checked that the base URL has a path");
        path.pop_if_empty();
        match (&self.vhost, segments) {
            (Some(vhost), ["api", what, rest @ ..])
                if ["queues", "exchanges", "bindings", "topics", "streams"].contains(what) =>
            {
                path.extend(["api", "vhosts", vhost, what]).extend(rest);
            }
            _ => {
                path.extend(segments);
            }
        }
        drop(path);
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
        if let Some((user, password)) = &self.login {
            request = request.basic_auth(user, Some(password));
        }
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

    /// `method` on the path of `segments` (each percent-encoded) with an optional
    /// JSON body: the endpoints that need no typed answer (users, vhosts,
    /// permissions).
    pub async fn request(
        &self,
        method: Method,
        segments: &[&str],
        body: Option<&Value>,
    ) -> Result<Reply, ApiError> {
        self.call(method, self.url(segments), body, None).await
    }

    /// [`Api::request`] with query parameters and, for a long poll, a timeout of
    /// its own (the wait plus the usual margin).
    pub async fn request_with(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, String)],
        body: Option<&Value>,
        wait_ms: u64,
    ) -> Result<Reply, ApiError> {
        let mut url = self.url(segments);
        if !query.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
        }
        let timeout = (wait_ms > 0).then(|| REQUEST_TIMEOUT + Duration::from_millis(wait_ms));
        self.call(method, url, body, timeout).await
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

    /// `POST /api/queues/{name}/receive`: leases up to `max` messages, waiting up to
    /// `wait_ms` for the first.
    pub async fn receive(
        &self,
        name: &str,
        max: u32,
        wait_ms: u64,
        visibility_timeout_ms: Option<u64>,
    ) -> Result<Reply, ApiError> {
        let (url, timeout) = self.receive_url(name, max, wait_ms, visibility_timeout_ms);
        self.call(Method::POST, url, None, Some(timeout)).await
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
            .round_trip(Method::POST, url, Some(timeout), |request| request)
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
        let mut url = self.url(&["api", "queues", name, "receive"]);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_encode_each_segment_and_keep_a_path_prefix() {
        let api = Api::new("http://127.0.0.1:8080/weir/", None).unwrap();
        assert_eq!(
            api.url(&["api", "queues", "a b/c"]).as_str(),
            "http://127.0.0.1:8080/weir/api/queues/a%20b%2Fc"
        );
        let api = Api::new("http://127.0.0.1:8080", None).unwrap();
        assert_eq!(
            api.url(&["healthz"]).as_str(),
            "http://127.0.0.1:8080/healthz"
        );
    }

    #[test]
    fn the_default_exchange_is_amq_default_in_paths() {
        let api = Api::new("http://127.0.0.1:8080", None).unwrap();
        assert_eq!(
            api.url(&["api", "exchanges", exchange_segment(""), "publish"])
                .as_str(),
            "http://127.0.0.1:8080/api/exchanges/amq.default/publish"
        );
        assert_eq!(exchange_segment("logs"), "logs");
    }

    #[test]
    fn a_server_that_is_not_a_url_is_refused() {
        assert!(Api::new("127.0.0.1:8080", None).is_err());
        assert!(Api::new("mailto:x@example.com", None).is_err());
    }
}
