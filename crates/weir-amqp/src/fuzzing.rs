//! Entry points for the fuzz targets in `fuzz/` (cargo fuzz), and for the tests that
//! replay their corpora (`fuzz/corpus/`) on every `cargo test`.
//!
//! * [`connection`]: the protocol machine alone (below).
//! * [`message`]: a message as the broker stores it (arbitrary stored bytes) or as
//!   a client publishes it (an arbitrary content header), delivered as the session
//!   delivers it; what a client published comes back with the same properties.
//! * [`SessionHarness`]: whole sessions, as `serve` runs them, against a real
//!   broker.
//!
//! [`connection`] drives the sans-IO `Connection` with arbitrary client bytes,
//! without a socket or a broker: it plays a minimal shell that answers some
//! channel methods and refuses the others, so the fuzzer reaches the handshake, the
//! channel close handshakes and content assembly. It checks what the machine must
//! always hold: it never panics, everything it writes is well-formed frames, and
//! every close it sends carries one of the spec's reply codes.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use amq_protocol::frame::{AMQPContentHeader, WriteContext};
use amq_protocol::protocol::basic::{AMQPProperties, gen_properties};
use amq_protocol::protocol::{AMQPClass, basic, channel, connection};
use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use weir_broker::routing::is_built_in;
use weir_broker::{
    Broker, BrokerConfig, DeadLetterInfo, DeadLetterReason, Death, Delivery, FirstDeath,
    FsyncPolicy, Limits,
};

use crate::codes::{self, Exception};
use crate::config::AmqpConfig;
use crate::connection::{Connection, Input};
use crate::framing::{self, Frame, Outbox};
use crate::message::{from_delivery, to_send};

/// What a run of [`connection`] saw, for tests to assert on.
#[derive(Debug, Default)]
pub struct Outcome {
    /// The reply code of the `connection.close` the server sent, if any.
    pub connection_close: Option<u16>,
    /// Reply codes of the `channel.close` methods the server sent.
    pub channel_closes: Vec<u16>,
    /// Publishes that came out whole, with their body sizes.
    pub publishes: Vec<usize>,
    /// The connection reached its end.
    pub done: bool,
}

/// Feeds `data` to a fresh connection. The first byte picks how the rest is cut
/// into reads (0: one read; n: reads of n bytes), so partial frames are covered.
///
/// # Panics
///
/// When the machine breaks a rule the module doc names: that is what the fuzzer
/// looks for.
pub fn connection(data: &[u8]) -> Outcome {
    let Some((&cut, data)) = data.split_first() else {
        return Outcome::default();
    };
    let config = AmqpConfig {
        max_message_bytes: 64 * 1024,
        // Each read below moves the clock 250 ms: a handshake cut into 4-byte reads
        // still fits, and a long enough input reaches the deadline.
        handshake_timeout: Duration::from_secs(60),
        ..AmqpConfig::default()
    };
    let max_body = config.max_message_bytes;
    let peer: SocketAddr = "127.0.0.1:40000"
        .parse()
        .expect("invariant: a valid address");
    let mut now = Instant::now();
    let mut conn = Connection::new(Arc::new(config), peer, now);
    let mut outcome = Outcome::default();
    let mut written = BytesMut::new();
    let mut header_checked = false;
    let size = if cut == 0 {
        data.len().max(1)
    } else {
        usize::from(cut)
    };
    for piece in data.chunks(size) {
        conn.input_buffer().extend_from_slice(piece);
        conn.received(now);
        while let Some(input) = conn.poll(now) {
            shell(&mut conn, input, &mut outcome, max_body, now);
        }
        now += Duration::from_millis(250);
        if let Some(input) = conn.tick(now) {
            shell(&mut conn, input, &mut outcome, max_body, now);
        }
        conn.outbox().drain_into(&mut written);
        check_output(&mut written, &mut header_checked, &mut outcome);
        if conn.is_done() {
            break;
        }
    }
    outcome.done = conn.is_done();
    outcome
}

/// A minimal shell: `basic.qos` and `confirm.select` are answered, a queue declare
/// is refused with 404 (so channel closes happen), everything else is taken.
fn shell(conn: &mut Connection, input: Input, outcome: &mut Outcome, max_body: u64, now: Instant) {
    match input {
        // The broker's answers, as for a fresh broker: guest/guest on `/`.
        Input::Login { user, password, .. } => {
            let refused = (user != "guest" || password != "guest").then(|| "refused".to_owned());
            conn.logged_in(refused, now);
        }
        Input::OpenVhost(vhost) => {
            conn.vhost_opened((vhost != "/").then(|| "no such vhost".to_owned()), now);
        }
        Input::Method(ch, class) => match *class {
            AMQPClass::Basic(basic::AMQPMethod::Qos(_)) => conn.method(
                ch,
                AMQPClass::Basic(basic::AMQPMethod::QosOk(basic::QosOk {})),
            ),
            AMQPClass::Queue(_) => {
                conn.close_channel(ch, &Exception::channel(codes::NOT_FOUND, "no queue here"));
            }
            AMQPClass::Channel(channel::AMQPMethod::Flow(_)) => {
                conn.close(&Exception::connection(codes::NOT_IMPLEMENTED, "flow"), now);
            }
            _ => {}
        },
        Input::Publish(ch, publish) => {
            assert!(
                publish.body.len() as u64 <= max_body,
                "a publish over the size limit came through"
            );
            outcome.publishes.push(publish.body.len());
            if publish.body.len() == 7 {
                conn.close_channel(ch, &Exception::channel(codes::PRECONDITION_FAILED, "seven"));
            }
        }
        Input::Opened
        | Input::ChannelOpened(_)
        | Input::ChannelClosing(_)
        | Input::ChannelClosed(_)
        | Input::Closed => {}
    }
}

/// Everything written parses as frames, and closes carry known codes.
fn check_output(written: &mut BytesMut, header_checked: &mut bool, outcome: &mut Outcome) {
    if !*header_checked {
        if written.len() >= 8 && written.starts_with(b"AMQP") {
            assert_eq!(&written[..8], framing::PROTOCOL_HEADER);
            let _ = written.split_to(8);
        }
        *header_checked = !written.is_empty();
    }
    loop {
        match framing::next_frame(written, u32::MAX, usize::MAX) {
            Ok(Some(Frame::Method(_, class))) => match *class {
                AMQPClass::Connection(connection::AMQPMethod::Close(c)) => {
                    assert_ne!(codes::name(c.reply_code), "ERROR", "{}", c.reply_code);
                    outcome.connection_close = Some(c.reply_code);
                }
                AMQPClass::Channel(channel::AMQPMethod::Close(c)) => {
                    assert_ne!(codes::name(c.reply_code), "ERROR", "{}", c.reply_code);
                    outcome.channel_closes.push(c.reply_code);
                }
                _ => {}
            },
            Ok(Some(_)) => {}
            Ok(None) => {
                assert!(written.is_empty(), "the server wrote a partial frame");
                return;
            }
            Err(e) => panic!("the server wrote a bad frame: {e}"),
        }
    }
}

/// The first byte of a [`message`] input: bit 0 picks what the rest is (0: the
/// bytes the broker stored with a message, 1: the payload of a client's content
/// header); bit 1 makes the delivery a dead letter (with `x-death` headers).
pub const MESSAGE_PUBLISHED: u8 = 1;

/// Delivers a message made of `data` (see [`MESSAGE_PUBLISHED`]) as the session
/// delivers one.
///
/// # Panics
///
/// When a delivery does not encode into frames a client parses back, or a
/// published message comes back with other properties.
pub fn message(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let dead_letter = (mode & 2 != 0).then(|| DeadLetterInfo {
        reason: DeadLetterReason::Rejected,
        time_ms: 1_700_000_000_000,
        source_queue: "source".into(),
        delivery_count: 2,
        exchange: "exchange".into(),
        routing_keys: vec!["key".into()],
        deaths: vec![Death {
            queue: "source".into(),
            reason: DeadLetterReason::Rejected,
            count: 1,
            exchange: "origin".into(),
            routing_keys: vec!["first".into()],
            time_ms: 1_700_000_000_000,
        }],
        first_death: FirstDeath {
            queue: "source".into(),
            reason: DeadLetterReason::Rejected,
            exchange: "origin".into(),
        },
    });
    let delivery = |properties: Option<Bytes>, headers, priority, id| Delivery {
        receipt: None,
        id,
        body: Bytes::from_static(b"body"),
        headers,
        priority,
        group: None,
        delivery_count: 1,
        enqueued_at_ms: 1_700_000_000_000,
        dead_letter: dead_letter.clone(),
        properties,
        position: None,
    };
    if mode & MESSAGE_PUBLISHED == 0 {
        let stored = Bytes::copy_from_slice(rest);
        deliver(&delivery(Some(stored), BTreeMap::new(), 0, "id".into()));
        return;
    }
    let mut frame = BytesMut::with_capacity(rest.len() + 8);
    frame.put_u8(2);
    frame.put_u16(1);
    frame.put_u32(u32::try_from(rest.len()).unwrap_or(u32::MAX));
    frame.extend_from_slice(rest);
    frame.put_u8(0xCE);
    let Ok(Some(Frame::Header(_, header, _))) =
        framing::next_frame(&mut frame, u32::MAX, AmqpConfig::default().max_table_fields)
    else {
        return;
    };
    let Ok(sent) = to_send("exchange", "key", &header.properties, Bytes::new()) else {
        return;
    };
    let (exchange, routing_key, properties) = deliver(&delivery(
        sent.properties,
        sent.headers,
        sent.priority.unwrap_or(0),
        sent.id.unwrap_or_default(),
    ));
    assert_eq!(
        (exchange.as_str(), routing_key.as_str()),
        ("exchange", "key")
    );
    if dead_letter.is_none() {
        assert_eq!(
            encode_properties(&properties),
            encode_properties(&header.properties),
            "a published message comes back with other properties"
        );
    }
}

fn encode_properties(p: &AMQPProperties) -> Option<Vec<u8>> {
    gen_properties(p)(WriteContext::from(Vec::new()))
        .ok()
        .map(|ctx| ctx.write)
}

/// Writes `d` as a `basic.deliver` and its content, as the session does, and
/// parses the frames back as a client would.
fn deliver(d: &Delivery) -> (String, String, AMQPProperties) {
    let (exchange, routing_key, properties) = from_delivery(d, "queue");
    // Stored bytes that are not UTF-8 once grew past 255 bytes here and the
    // frame encoder panicked (corpus: message/regression-shortstring-lossy).
    assert!(
        exchange.len() <= 255 && routing_key.len() <= 255,
        "a stored exchange or routing key decodes past a short string"
    );
    let mut out = Outbox::default();
    out.method(
        1,
        AMQPClass::Basic(basic::AMQPMethod::Deliver(basic::Deliver {
            consumer_tag: "ctag".into(),
            delivery_tag: 1,
            redelivered: false,
            exchange: exchange.clone().into(),
            routing_key: routing_key.clone().into(),
        })),
    );
    let header = AMQPContentHeader {
        class_id: 60,
        body_size: d.body.len() as u64,
        properties: properties.clone(),
    };
    out.content(1, header, &d.body, AmqpConfig::default().frame_max);
    let mut written = BytesMut::new();
    out.drain_into(&mut written);
    let mut frames = Vec::new();
    while let Some(frame) = framing::next_frame(&mut written, u32::MAX, usize::MAX)
        .unwrap_or_else(|e| panic!("a delivery a client cannot parse: {e}"))
    {
        frames.push(frame);
    }
    assert!(written.is_empty(), "a delivery ends in a partial frame");
    match frames.as_slice() {
        [
            Frame::Method(1, _),
            Frame::Header(1, back, _),
            Frame::Body(1, body),
        ] => {
            assert_eq!(
                encode_properties(&back.properties),
                encode_properties(&properties)
            );
            assert_eq!(body, &d.body);
        }
        other => panic!("a delivery's frames: {other:?}"),
    }
    (exchange, routing_key, properties)
}

/// A broker with the AMQP front end on a loopback port, for the `session` target:
/// [`SessionHarness::session`] runs one connection's bytes through `serve`'s own
/// session code, as a client on the same machine would.
pub struct SessionHarness {
    broker: Broker,
    addr: SocketAddr,
    shutdown: CancellationToken,
    /// The listener, awaited on close.
    server: tokio::task::JoinHandle<()>,
}

/// Longest a session may take once its client has sent everything and closed its
/// side: far more than any input needs.
const SESSION_BOUND: Duration = Duration::from_secs(10);

impl SessionHarness {
    /// Opens a broker on `data_dir` and serves AMQP on a loopback port. Run it on
    /// a runtime with time (and I/O) enabled.
    ///
    /// # Panics
    ///
    /// If the broker does not open or the port cannot be bound.
    pub async fn open(data_dir: &Path) -> SessionHarness {
        let mut broker_config = BrokerConfig::new(data_dir);
        // Nothing here needs to survive a crash; `never` keeps each input fast.
        broker_config.log.fsync = FsyncPolicy::Never;
        broker_config.log.segment_bytes = 64 << 10;
        broker_config.limits = Limits {
            max_queues: 64,
            max_message_bytes: 64 << 10,
            max_batch_messages: 64,
            disk_free_min_bytes: 0,
            ..Limits::default()
        };
        let (broker, _) = Broker::open(broker_config)
            .await
            .expect("the fuzz broker opens");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let addr = listener.local_addr().expect("a bound address");
        let shutdown = CancellationToken::new();
        let config = AmqpConfig {
            max_message_bytes: 64 << 10,
            tcp_keepalive: None,
            // A refused login answers at once: a fuzzer tries many.
            failed_login_delay: Duration::ZERO,
            shutdown: shutdown.clone(),
            ..AmqpConfig::default()
        };
        let server = tokio::spawn(crate::serve(listener, broker.clone(), config));
        SessionHarness {
            broker,
            addr,
            shutdown,
            server,
        }
    }

    /// Connects, sends `data` (its first byte picks how it is cut into writes, as
    /// in [`connection`]), closes the sending side and reads everything the
    /// server writes until it closes. Returns what it wrote.
    ///
    /// # Panics
    ///
    /// When the server writes anything but whole, well-formed frames, closes with
    /// a code the spec does not have, or does not end the session.
    pub async fn session(&self, data: &[u8]) -> Vec<u8> {
        let Some((&cut, data)) = data.split_first() else {
            return Vec::new();
        };
        let size = if cut == 0 {
            data.len().max(1)
        } else {
            usize::from(cut)
        };
        let stream = tokio::net::TcpStream::connect(self.addr)
            .await
            .expect("the fuzz server accepts");
        let (mut read, mut write) = stream.into_split();
        let send = async {
            for piece in data.chunks(size) {
                if write.write_all(piece).await.is_err() {
                    return;
                }
                tokio::task::yield_now().await;
            }
            let _ = write.shutdown().await;
        };
        let receive = async {
            let mut out = Vec::new();
            // A reset (the server closed with input unread) ends it too.
            let _ = read.read_to_end(&mut out).await;
            out
        };
        let out = tokio::time::timeout(SESSION_BOUND, async { tokio::join!(send, receive).1 })
            .await
            .expect("the session ends once its client has sent everything");
        let mut written = BytesMut::from(&out[..]);
        let mut header_checked = false;
        check_output(&mut written, &mut header_checked, &mut Outcome::default());
        out
    }

    /// Deletes every queue and every exchange that is not built in.
    pub async fn reset(&self) {
        for queue in self.broker.list().await {
            let _ = self.broker.delete(&queue.name).await;
        }
        for exchange in self.broker.exchanges() {
            if !exchange.name.is_empty() && !is_built_in(&exchange.name) {
                let _ = self.broker.delete_exchange(&exchange.name, false).await;
            }
        }
    }

    /// Stops serving and stops the broker.
    pub async fn close(self) {
        self.shutdown.cancel();
        let _ = self.server.await;
        self.broker.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use amq_protocol::protocol::basic;

    use super::*;
    use crate::connection::tests::Client;

    /// The seeds of `fuzz/corpus/connection`: valid sessions and near misses.
    fn seeds() -> Vec<(&'static str, Vec<u8>)> {
        let with = |cut: u8, c: Client| {
            let mut bytes = vec![cut];
            bytes.extend(c.bytes);
            bytes
        };
        let session = || Client::handshake(10, true).open_channel(1);
        vec![
            ("handshake", with(0, Client::handshake(0, false))),
            (
                "publish",
                with(
                    0,
                    session()
                        .publish(1, b"hello", 5)
                        .publish(1, &[1; 3000], 1000),
                ),
            ),
            (
                "publish-split-reads",
                with(3, session().publish(1, b"hello", 2)),
            ),
            (
                "declare-refused",
                with(0, session().declare(1, "q").declare(1, "q")),
            ),
            (
                "publish-seven",
                with(0, session().publish(1, b"seven!!", 7).publish(1, b"x", 1)),
            ),
            (
                "qos-and-close",
                with(
                    0,
                    session()
                        .method(
                            1,
                            AMQPClass::Basic(basic::AMQPMethod::Qos(basic::Qos {
                                prefetch_count: 10,
                                global: false,
                            })),
                        )
                        .method(
                            1,
                            AMQPClass::Channel(channel::AMQPMethod::Close(channel::Close {
                                reply_code: 200,
                                reply_text: "bye".into(),
                                class_id: 0,
                                method_id: 0,
                            })),
                        )
                        .method(
                            0,
                            AMQPClass::Connection(connection::AMQPMethod::Close(
                                connection::Close {
                                    reply_code: 200,
                                    reply_text: "bye".into(),
                                    class_id: 0,
                                    method_id: 0,
                                },
                            )),
                        ),
                ),
            ),
            (
                "oversized-frame",
                with(0, session().raw(&[3, 0, 1, 0x7f, 0, 0, 0])),
            ),
            (
                "bad-header",
                with(0, Client::default().raw(b"HTTP/1.1 GET /")),
            ),
        ]
    }

    #[test]
    fn seeds_end_as_expected() {
        let seeds = seeds();
        let outcome = |name: &str| {
            let (_, bytes) = seeds.iter().find(|(n, _)| *n == name).unwrap();
            connection(bytes)
        };
        assert_eq!(outcome("publish").publishes, vec![5, 3000]);
        assert_eq!(outcome("publish-split-reads").publishes, vec![5]);
        assert_eq!(
            outcome("declare-refused").channel_closes,
            vec![codes::NOT_FOUND]
        );
        let seven = outcome("publish-seven");
        assert_eq!(
            (seven.publishes, seven.channel_closes),
            (vec![7], vec![codes::PRECONDITION_FAILED])
        );
        assert!(outcome("qos-and-close").done);
        assert_eq!(
            outcome("oversized-frame").connection_close,
            Some(codes::FRAME_ERROR)
        );
        assert!(outcome("bad-header").done);
    }

    /// Every file the fuzzer kept (and the seeds) runs clean on every `cargo test`.
    #[test]
    fn the_fuzz_corpus_replays() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/connection");
        let inputs: Vec<Vec<u8>> = std::fs::read_dir(&dir)
            .expect("fuzz/corpus/connection exists")
            .map(|entry| std::fs::read(entry.unwrap().path()).unwrap())
            .collect();
        let n = inputs.len();
        // On the fuzz targets' small stack (fuzz/src/lib.rs), so deep recursion shows.
        std::thread::Builder::new()
            .stack_size(256 << 10)
            .spawn(move || {
                for bytes in &inputs {
                    let _ = connection(bytes);
                }
            })
            .unwrap()
            .join()
            .expect("the corpus ran clean");
        assert!(
            n >= seeds().len(),
            "only {n} corpus files in {}",
            dir.display()
        );
    }

    /// Writes the seeds into the corpus: `WEIR_WRITE_SEEDS=1 cargo test -p weir-amqp
    /// write_seeds -- --ignored`.
    #[test]
    #[ignore = "writes fuzz/corpus/connection"]
    fn write_seeds() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/connection");
        std::fs::create_dir_all(&dir).unwrap();
        for (name, bytes) in seeds() {
            std::fs::write(dir.join(format!("seed-{name}")), bytes).unwrap();
        }
    }
}

#[cfg(test)]
#[path = "fuzzing_session_tests.rs"]
mod message_and_session_tests;
