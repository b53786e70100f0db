//! The entry point of the `http` fuzz target in `fuzz/` (cargo fuzz), and of the
//! test that replays its corpus (`fuzz/corpus/http`) on every `cargo test`.
//!
//! [`Harness::request`] writes arbitrary bytes, as a client would (pipelined
//! requests, cut into writes of a size the first byte picks), into one HTTP
//! connection served exactly as `serve` serves a TCP connection (the same
//! `connection::drive`, timeouts, body handling and router), over an in-memory
//! pipe, against a real broker on a scratch directory. It checks what must always
//! hold: the server answers with well-formed HTTP/1.1 responses, never with a 500
//! (the broker's storage is healthy here, so a 500 is a bug), and it closes the
//! connection by itself once the client has sent everything and waits (the idle,
//! header or body timeout at the latest).
//!
//! Run it on a current-thread runtime with the clock paused (`start_paused`): timeouts
//! and long polls then pass in virtual time, instantly. [`Harness::reset`] removes
//! every queue and exchange an input made, so inputs do not pile state up.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use weir_broker::routing::is_built_in;
use weir_broker::{Broker, BrokerConfig, FsyncPolicy, Limits};

use crate::auth::Addrs;
use crate::config::HttpConfig;
use crate::connection::{self, Io, Service};
use crate::phase::{Clock, ConnectionState};

/// Longest a connection may take, in the runtime's (paused, virtual) time, once
/// its client has sent everything: well past every timeout of [`config`].
const CONNECTION_BOUND: Duration = Duration::from_secs(24 * 3600);

/// The front end's settings for fuzzing: small limits, so 413s, long-poll caps
/// and drains are reached with small inputs.
pub fn config() -> HttpConfig {
    HttpConfig {
        max_body_bytes: 16 << 10,
        max_connections: 4,
        max_long_polls: 1,
        max_drain_bytes: 32 << 10,
        // The seeds' and the corpus's `Host: x`.
        allowed_hosts: vec!["x".to_owned()],
        ..HttpConfig::default()
    }
}

/// `data` with guest's credentials after each `HTTP/1.1` request line, unless it
/// carries an `Authorization` header of its own: so inputs reach the handlers
/// behind the login, and the ones that bring their own exercise the login.
fn with_login(data: &[u8]) -> Vec<u8> {
    const LINE_END: &[u8] = b" HTTP/1.1\r\n";
    const LOGIN: &[u8] = b"Authorization: Basic Z3Vlc3Q6Z3Vlc3Q=\r\n";
    if data
        .windows(13)
        .any(|w| w.eq_ignore_ascii_case(b"authorization"))
    {
        return data.to_vec();
    }
    let mut out = Vec::with_capacity(data.len() + 64);
    let mut rest = data;
    while let Some(at) = rest.windows(LINE_END.len()).position(|w| w == LINE_END) {
        let end = at + LINE_END.len();
        out.extend_from_slice(&rest[..end]);
        out.extend_from_slice(LOGIN);
        rest = &rest[end..];
    }
    out.extend_from_slice(rest);
    out
}

/// A broker and the router in front of it.
pub struct Harness {
    broker: Broker,
    router: axum::Router,
    config: HttpConfig,
    shutdown: CancellationToken,
}

impl Harness {
    /// Opens a broker on `data_dir` (created if missing) and builds the router.
    ///
    /// # Panics
    ///
    /// If the broker does not open.
    pub async fn open(data_dir: &Path) -> Harness {
        let mut broker_config = BrokerConfig::new(data_dir);
        // Nothing here needs to survive a crash; `never` keeps each input fast.
        broker_config.log.fsync = FsyncPolicy::Never;
        broker_config.log.segment_bytes = 64 << 10;
        broker_config.limits = Limits {
            max_queues: 64,
            max_message_bytes: 8 << 10,
            max_batch_messages: 16,
            max_receive: 16,
            disk_free_min_bytes: 0,
            ..Limits::default()
        };
        let (broker, _) = Broker::open(broker_config)
            .await
            .expect("the fuzz broker opens");
        let config = config();
        let router = crate::router(broker.clone(), &config);
        Harness {
            broker,
            router,
            config,
            shutdown: CancellationToken::new(),
        }
    }

    /// Sends `data` on a fresh connection (see the module doc) and returns what the
    /// server wrote.
    ///
    /// # Panics
    ///
    /// When an answer is malformed or a 500, or the connection does not end.
    pub async fn request(&self, data: &[u8]) -> Vec<u8> {
        let Some((&cut, data)) = data.split_first() else {
            return Vec::new();
        };
        let data = with_login(data);
        let data = data.as_slice();
        let (mut client, server) = tokio::io::duplex(16 << 10);
        let state = Arc::new(ConnectionState::new(Clock::new()));
        let service = Service {
            router: self.router.clone(),
            state: Arc::clone(&state),
            body: Arc::new(self.config.body_settings()),
            addrs: Addrs {
                peer: SocketAddr::from(([127, 0, 0, 1], 40000)),
                local: SocketAddr::from(([127, 0, 0, 1], 8080)),
                tls: false,
            },
        };
        let served = tokio::spawn(connection::drive(
            Io::new(server, state),
            service,
            self.config.timeouts(),
            self.shutdown.clone(),
        ));
        let size = if cut == 0 {
            data.len().max(1)
        } else {
            usize::from(cut)
        };
        let (mut read, mut write) = tokio::io::split(&mut client);
        let send = async {
            for piece in data.chunks(size) {
                if write.write_all(piece).await.is_err() {
                    // The server closed the connection: the rest is not read.
                    return;
                }
                tokio::task::yield_now().await;
            }
            // The write half stays open: hyper takes a read EOF for a client that
            // went away and drops the requests it has not answered yet. The server
            // closes the connection (idle, header or body timeout, or an error),
            // which ends the read.
        };
        let receive = async {
            let mut out = Vec::new();
            let _ = read.read_to_end(&mut out).await;
            out
        };
        let exchange = async { tokio::join!(send, receive).1 };
        let out = tokio::time::timeout(CONNECTION_BOUND, exchange)
            .await
            .expect("the connection ends once the client is done");
        tokio::time::timeout(CONNECTION_BOUND, served)
            .await
            .expect("the connection's task ends")
            .expect("the connection's task does not panic");
        check_responses(&out);
        out
    }

    /// Deletes every queue, stream and exchange that is not built in.
    pub async fn reset(&self) {
        if let Ok(vhost) = self.broker.vhost("/") {
            for stream in vhost.streams() {
                let _ = vhost.delete_stream(&stream.name).await;
            }
        }
        for queue in self.broker.list().await {
            let _ = self.broker.delete(&queue.name).await;
        }
        for exchange in self.broker.exchanges() {
            if !exchange.name.is_empty() && !is_built_in(&exchange.name) {
                let _ = self.broker.delete_exchange(&exchange.name, false).await;
            }
        }
    }

    /// Stops the broker.
    pub async fn close(self) {
        self.shutdown.cancel();
        self.broker.shutdown().await;
    }
}

/// Checks that `out` is a run of whole HTTP/1.x responses, none a 500, and
/// returns their statuses and bodies.
fn check_responses(mut out: &[u8]) -> Vec<(u16, Vec<u8>)> {
    let mut responses = Vec::new();
    while !out.is_empty() {
        let head_end = out
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| panic!("a response without the end of its head: {out:?}"));
        let head = std::str::from_utf8(&out[..head_end]).expect("a response head is text");
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        // An HTTP/1.0 request gets an HTTP/1.0 answer.
        let http10 = status_line.starts_with("HTTP/1.0 ");
        let status: u16 = status_line
            .strip_prefix("HTTP/1.1 ")
            .or_else(|| status_line.strip_prefix("HTTP/1.0 "))
            .and_then(|s| s.get(..3))
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("not an HTTP/1.1 status line: {status_line:?}"));
        let mut length = None;
        let mut chunked = false;
        for line in lines {
            let (name, value) = line.split_once(':').expect("a header line");
            if name.eq_ignore_ascii_case("content-length") {
                length = Some(value.trim().parse::<usize>().expect("a content length"));
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.trim().eq_ignore_ascii_case("chunked");
            }
        }
        let mut rest = &out[head_end + 4..];
        let body: Vec<u8> = if chunked {
            let mut body = Vec::new();
            loop {
                let line_end = rest
                    .windows(2)
                    .position(|w| w == b"\r\n")
                    .expect("a chunk size line");
                let size = std::str::from_utf8(&rest[..line_end])
                    .ok()
                    .and_then(|s| usize::from_str_radix(s.trim(), 16).ok())
                    .expect("a chunk size");
                rest = &rest[line_end + 2..];
                assert!(rest.len() >= size + 2, "a chunk cut short");
                body.extend_from_slice(&rest[..size]);
                rest = &rest[size + 2..];
                if size == 0 {
                    break;
                }
            }
            body
        } else if rest.is_empty() || rest.starts_with(b"HTTP/1.") || status < 200 {
            // The answer to a HEAD says how long its body would be and has none
            // (every body of this server is JSON, never a status line; or it was
            // the last answer); a 1xx has none either.
            Vec::new()
        } else {
            // Every answer of this server says how long it is (a 204 has no body),
            // except a streamed one to HTTP/1.0, which ends with the connection.
            let length = length.unwrap_or(if http10 { rest.len() } else { 0 });
            assert!(rest.len() >= length, "a body cut short: {status_line}");
            let body = rest[..length].to_vec();
            rest = &rest[length..];
            body
        };
        assert_ne!(status, 500, "a 500: {}", String::from_utf8_lossy(&body));
        responses.push((status, body));
        out = rest;
    }
    responses
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    /// The stack the corpus runs on, as in `fuzz/`: deep recursion shows.
    const STACK: usize = 256 << 10;

    fn corpus() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/http")
    }

    fn request(method: &str, path: &str, body: &str) -> String {
        if body.is_empty() && method == "GET" {
            format!("{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n")
        } else {
            format!(
                "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
        }
    }

    /// A stream, a binary append (`application/vnd.weir.batches`) of a good batch and
    /// of a damaged one, a binary read, trims (to 1, to the end, past it: 400), the
    /// stream's deletion.
    fn stream_binary() -> Vec<u8> {
        let batch = weir_log::IncomingBatch::encode(&[
            weir_log::NewRecord::new("a")
                .with_key("k")
                .with_header("h", "v"),
            weir_log::NewRecord::new("b"),
        ])
        .unwrap();
        let append = |batch: &[u8]| {
            let mut body = 0u32.to_le_bytes().to_vec();
            body.extend_from_slice(&u32::try_from(batch.len()).unwrap().to_le_bytes());
            body.extend_from_slice(batch);
            let mut out = format!(
                "POST /api/streams/s/messages HTTP/1.1\r\nHost: x\r\nContent-Type: \
                 application/vnd.weir.batches\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .into_bytes();
            out.extend(body);
            out
        };
        let mut damaged = batch.clone();
        damaged[40] ^= 1;
        let mut out = vec![0];
        out.extend(request("PUT", "/api/streams/s", r#"{"partitions":1}"#).into_bytes());
        out.extend(append(&batch));
        out.extend(append(&damaged));
        out.extend(
            b"GET /api/streams/s/messages?from=first HTTP/1.1\r\nHost: x\r\n\
              Accept: application/vnd.weir.batches\r\n\r\n",
        );
        for before in ["1", "end", "99"] {
            let path = format!("/api/streams/s/messages?before={before}");
            out.extend(request("DELETE", &path, "").into_bytes());
        }
        out.extend(request("DELETE", "/api/streams/s", "").into_bytes());
        out
    }

    /// Requests of the seeds: one session per seed, each a run of pipelined
    /// requests.
    #[allow(clippy::too_many_lines, reason = "a flat list, one seed per entry")]
    fn seeds() -> Vec<(&'static str, Vec<u8>)> {
        let with = |cut: u8, requests: &[String]| {
            let mut out = vec![cut];
            for r in requests {
                out.extend_from_slice(r.as_bytes());
            }
            out
        };
        let declare = request(
            "PUT",
            "/api/queues/q",
            r#"{"max_deliveries":2,"dead_letter_queue":"dlq","max_priority":3}"#,
        );
        vec![
            ("healthz", with(0, &[request("GET", "/healthz", "")])),
            ("stream-binary", stream_binary()),
            (
                "queue-life",
                with(
                    0,
                    &[
                        declare.clone(),
                        request("POST", "/api/queues/q/messages", r#"{"messages":[{"body":"a","id":"1","priority":2},{"body_base64":"AAE=","group":"g","headers":{"k":"v"}}]}"#),
                        request("POST", "/api/queues/q/receive?max=10", r#"{"visibility_timeout_ms":1000}"#),
                        request("POST", "/api/queues/q/ack", r#"{"receipts":["0-1","zz"]}"#),
                        request("POST", "/api/queues/q/nack", r#"{"receipt":"1-2","requeue":false}"#),
                        request("GET", "/api/queues/q", ""),
                        request("GET", "/api/queues/dlq/dead-letters?max=5", ""),
                        request("POST", "/api/queues/dlq/dead-letters/redrive", r#"{"max":3}"#),
                        request("POST", "/api/queues/q/purge", ""),
                        request("DELETE", "/api/queues/q", ""),
                    ],
                ),
            ),
            (
                "long-poll",
                with(
                    0,
                    &[
                        declare.clone(),
                        request("POST", "/api/queues/q/receive", r#"{"wait_ms":5000}"#),
                        request("POST", "/api/queues/q/extend", r#"{"receipt":"0-0","visibility_timeout_ms":5}"#),
                    ],
                ),
            ),
            (
                "routing",
                with(
                    0,
                    &[
                        declare.clone(),
                        request("PUT", "/api/exchanges/t", r#"{"type":"topic"}"#),
                        request("PUT", "/api/exchanges/h", r#"{"type":"headers","alternate_exchange":"t"}"#),
                        request("POST", "/api/bindings", r#"{"source":"t","destination":"q","routing_key":"a.#"}"#),
                        request("POST", "/api/bindings", r#"{"source":"h","destination":"q","arguments":{"x-match":"any","k":"v"}}"#),
                        request("POST", "/api/exchanges/t/publish?queues=true", r#"{"messages":[{"routing_key":"a.b","body":"x","mandatory":true}]}"#),
                        request("POST", "/api/exchanges/h/publish", r#"{"routing_key":"","body":"y","headers":{"k":"v"}}"#),
                        request("GET", "/api/bindings?source=t", ""),
                        request("DELETE", "/api/bindings", r#"{"source":"t","destination":"q","routing_key":"a.#"}"#),
                        request("DELETE", "/api/exchanges/h", ""),
                    ],
                ),
            ),
            (
                "topics",
                with(
                    0,
                    &[
                        request("PUT", "/api/exchanges/news", r#"{"type":"topic"}"#),
                        request("PUT", "/api/topics/news/subscriptions/s1", r#"{"pattern":"sport.*"}"#),
                        request("POST", "/api/topics/news/publish", r#"{"routing_key":"sport.x","body":"goal"}"#),
                        request("GET", "/api/topics/news/subscriptions", ""),
                        request("DELETE", "/api/topics/news/subscriptions/s1", ""),
                    ],
                ),
            ),
            (
                "split-writes",
                with(7, &[declare.clone(), request("POST", "/api/queues/q/messages", r#"{"body":"a"}"#)]),
            ),
            (
                "bad-json",
                with(
                    0,
                    &[
                        request("PUT", "/api/queues/q", "{\"max_priority\":"),
                        request("POST", "/api/queues/q/messages", &"[".repeat(200)),
                        request("POST", "/api/queues/q/messages", r#"{"body":"a","nope":1}"#),
                    ],
                ),
            ),
            (
                "too-large",
                with(
                    0,
                    &["POST /api/queues/q/messages HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\nabc".to_owned()],
                ),
            ),
            (
                "chunked",
                with(
                    0,
                    &["POST /api/queues/q/messages HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"bod\r\n9\r\ny\":\"xyz\"}\r\n0\r\n\r\n".to_owned()],
                ),
            ),
            (
                "expect-continue",
                with(
                    0,
                    &["POST /api/queues/q/messages HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 12\r\n\r\n{\"body\":\"a\"}".to_owned()],
                ),
            ),
            (
                "odd-requests",
                with(
                    0,
                    &[
                        request("GET", "/nowhere", ""),
                        request("PATCH", "/api/queues/q", "{}"),
                        request("HEAD", "/api/queues/q/messages", ""),
                        request("GET", "/api/queues/%ff%fe", ""),
                        request("GET", "/api/queues/q/messages?max=abc", ""),
                        request("GET", "/api/openapi.json", ""),
                        request("GET", "/api/broker", ""),
                    ],
                ),
            ),
            (
                "login-refused",
                with(
                    0,
                    &["GET /api/queues HTTP/1.1\r\nHost: x\r\nAuthorization: Basic Z3Vlc3Q6bm8=\r\n\r\n".to_owned()],
                ),
            ),
            ("garbage", with(0, &["\x16\x03\x01\x02\x00 not http\r\n\r\n".to_owned()])),
            ("half-head", with(0, &["GET /healthz HTTP/1.1\r\nHost:".to_owned()])),
        ]
    }

    /// Runs `f` with a harness on a scratch directory, on a small stack, with the
    /// clock paused.
    fn with_harness(f: impl FnOnce(&Harness, &tokio::runtime::Runtime) + Send) {
        std::thread::scope(|scope| {
            std::thread::Builder::new()
                .stack_size(STACK)
                .spawn_scoped(scope, || {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .start_paused(true)
                        .build()
                        .unwrap();
                    // On tmpfs when there is one: queue declarations sync directories.
                    let shm = Path::new("/dev/shm");
                    let base = if shm.is_dir() {
                        shm.to_path_buf()
                    } else {
                        std::env::temp_dir()
                    };
                    let dir = base.join(format!(
                        "weir-http-fuzz-replay-{}-{:?}",
                        std::process::id(),
                        std::thread::current().id()
                    ));
                    let harness = runtime.block_on(Harness::open(&dir));
                    f(&harness, &runtime);
                    runtime.block_on(harness.close());
                    drop(runtime);
                    let _ = std::fs::remove_dir_all(&dir);
                })
                .unwrap()
                .join()
                .expect("the inputs ran clean");
        });
    }

    #[test]
    fn seeds_are_answered() {
        with_harness(|h, rt| {
            for (name, bytes) in seeds() {
                let out = rt.block_on(async {
                    let out = h.request(&bytes).await;
                    h.reset().await;
                    out
                });
                let answers = check_responses(&out);
                let statuses: Vec<u16> = answers.iter().map(|(s, _)| *s).collect();
                let text = String::from_utf8_lossy(&out);
                match name {
                    "healthz" => assert_eq!(statuses, [200]),
                    "queue-life" => {
                        assert_eq!(
                            statuses,
                            [201, 201, 200, 409, 409, 200, 400, 400, 200, 204],
                            "{text}"
                        );
                    }
                    "too-large" => assert_eq!(statuses, [413], "{text}"),
                    "login-refused" => {
                        assert_eq!(statuses, [401], "{text}");
                        assert!(
                            text.contains("WWW-Authenticate: Basic")
                                || text.contains("www-authenticate: Basic"),
                            "{text}"
                        );
                    }
                    "routing" => assert!(text.contains("\"routed\":1"), "{text}"),
                    "stream-binary" => {
                        assert_eq!(statuses, [201, 201, 400, 200, 200, 200, 400, 204], "{text}");
                    }
                    "garbage" => assert_eq!(statuses, [400], "{text}"),
                    // Closed at the header timeout, unanswered.
                    "half-head" => assert!(statuses.is_empty(), "{text}"),
                    _ => assert!(!statuses.is_empty(), "{name}: {text}"),
                }
            }
        });
    }

    /// Every file the fuzzer kept (and the seeds) runs clean on every `cargo test`.
    #[test]
    fn the_fuzz_corpus_replays() {
        let mut inputs = Vec::new();
        for entry in std::fs::read_dir(corpus()).expect("fuzz/corpus/http exists") {
            inputs.push(std::fs::read(entry.unwrap().path()).unwrap());
        }
        assert!(
            inputs.len() >= seeds().len(),
            "only {} inputs",
            inputs.len()
        );
        with_harness(|h, rt| {
            for bytes in &inputs {
                rt.block_on(async {
                    h.request(bytes).await;
                    h.reset().await;
                });
            }
        });
    }

    /// Writes the seeds into the corpus: `cargo test -p weir-http write_seeds --
    /// --ignored`.
    #[test]
    #[ignore = "writes fuzz/corpus/http"]
    fn write_seeds() {
        std::fs::create_dir_all(corpus()).unwrap();
        for (name, bytes) in seeds() {
            std::fs::write(corpus().join(format!("seed-{name}")), bytes).unwrap();
        }
    }
}
