//! AMQP clients that do not read what they are sent (issue 17), on the real binary:
//! a consumer that never reads its socket holds its connection's byte credit and no
//! more (the backlog stays in its queue, the broker's memory stays small, other
//! clients go on); a stuck reader is closed after the write timeout and its unacked
//! messages go back; and the caps on consumers per channel and on channel numbers.
//! The misbehaving clients are raw sockets that speak AMQP by hand; the well-behaved
//! ones are lapin. Waits are deadlines on counts, never timing assertions.

use std::time::Duration;

use amq_protocol::frame::{AMQPFrame, WriteContext, gen_frame};
use amq_protocol::protocol::{AMQPClass, basic, channel, connection};
use amq_protocol::types::{FieldTable, LongString};
use bytes::{Buf, BytesMut};
use futures_lite::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use weir_testkit::Broker;

use crate::Api;

/// How long any single wait in these tests may take before the test fails.
const DEADLINE: Duration = Duration::from_secs(60);

/// A broker whose config file holds `toml`.
async fn start_with(toml: &str) -> (Broker, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let config = dir.path().join("weir.toml");
    std::fs::write(&config, toml).expect("config file");
    let broker = Broker::start_with(&["--config", config.to_str().expect("UTF-8 path")])
        .await
        .expect("broker starts");
    (broker, dir)
}

/// The broker's resident memory (`VmRSS`), bytes.
fn rss(broker: &Broker) -> u64 {
    let pid = broker.pid().expect("broker running");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS in /proc status");
    kib * 1024
}

/// Sends `count` messages of `size` bytes to `queue` over HTTP, from 4 senders in
/// batches of up to 1,000 (and 8 MiB; `count` a multiple of the batch).
async fn fill(broker: &Broker, queue: &str, count: usize, size: usize) {
    let per_batch = (8 << 20) / size.max(1);
    let per_batch = per_batch.clamp(1, 1000).min(count);
    assert_eq!(count % per_batch, 0, "whole batches");
    let batch: Vec<Value> = (0..per_batch)
        .map(|_| json!({"body": "x".repeat(size)}))
        .collect();
    let batch = json!({ "messages": batch }).to_string();
    let batches = count / per_batch;
    let url = format!("{}/api/queues/{queue}/messages", broker.http_url());
    let mut senders = Vec::new();
    for s in 0..4 {
        let (url, batch) = (url.clone(), batch.clone());
        senders.push(tokio::spawn(async move {
            let client = weir_testkit::http_client();
            for _ in (s..batches).step_by(4) {
                let resp = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(batch.clone())
                    .send()
                    .await
                    .expect("send");
                assert_eq!(resp.status().as_u16(), 201, "batch send");
            }
        }));
    }
    for s in senders {
        s.await.expect("sender");
    }
}

fn encode(frame: &AMQPFrame) -> Vec<u8> {
    gen_frame(frame)(WriteContext::from(Vec::new()))
        .expect("test frames encode")
        .write
}

fn method(ch: u16, class: AMQPClass) -> Vec<u8> {
    encode(&AMQPFrame::Method(ch, class))
}

/// The protocol header and a guest login with no heartbeats, channel 1 open: all
/// the client says before it waits for anything, as one write.
fn login() -> Vec<u8> {
    let mut bytes = b"AMQP\x00\x00\x09\x01".to_vec();
    bytes.extend(method(
        0,
        AMQPClass::Connection(connection::AMQPMethod::StartOk(connection::StartOk {
            client_properties: FieldTable::default(),
            mechanism: "PLAIN".into(),
            response: LongString::from(b"\0guest\0guest".to_vec()),
            locale: "en_US".into(),
        })),
    ));
    bytes.extend(method(
        0,
        AMQPClass::Connection(connection::AMQPMethod::TuneOk(connection::TuneOk {
            channel_max: 0,
            frame_max: 131_072,
            heartbeat: 0,
        })),
    ));
    bytes.extend(method(
        0,
        AMQPClass::Connection(connection::AMQPMethod::Open(connection::Open {
            virtual_host: "/".into(),
        })),
    ));
    bytes.extend(open_channel(1));
    bytes
}

fn open_channel(ch: u16) -> Vec<u8> {
    method(
        ch,
        AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})),
    )
}

fn consume(ch: u16, queue: &str, tag: &str, no_ack: bool) -> Vec<u8> {
    method(
        ch,
        AMQPClass::Basic(basic::AMQPMethod::Consume(basic::Consume {
            queue: queue.into(),
            consumer_tag: tag.into(),
            no_local: false,
            no_ack,
            exclusive: false,
            nowait: false,
            arguments: FieldTable::default(),
        })),
    )
}

/// A client on a raw socket (optionally with a small receive buffer, so that what
/// it does not read stays on the broker's side).
struct Raw {
    stream: TcpStream,
    buf: BytesMut,
}

impl Raw {
    async fn connect(broker: &Broker, recv_buffer: Option<u32>) -> Raw {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        if let Some(size) = recv_buffer {
            socket.set_recv_buffer_size(size).expect("SO_RCVBUF");
        }
        let stream = socket
            .connect(broker.amqp_addr().parse().expect("address"))
            .await
            .expect("connect");
        Raw {
            stream,
            buf: BytesMut::new(),
        }
    }

    async fn write(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    /// The next method frame (others skipped); `None` once the broker closed the
    /// socket.
    async fn method(&mut self) -> Option<(u16, AMQPClass)> {
        tokio::time::timeout(DEADLINE, async {
            loop {
                if self.buf.len() >= 7 {
                    let size =
                        u32::from_be_bytes([self.buf[3], self.buf[4], self.buf[5], self.buf[6]])
                            as usize;
                    if self.buf.len() >= size + 8 {
                        let kind = self.buf[0];
                        let ch = u16::from_be_bytes([self.buf[1], self.buf[2]]);
                        let mut frame = self.buf.split_to(size + 8);
                        frame.advance(7);
                        frame.truncate(size);
                        if kind == 1 {
                            let (_, class) = amq_protocol::protocol::parse_class(&frame[..])
                                .expect("a method the broker sent parses");
                            return Some((ch, class));
                        }
                        continue;
                    }
                }
                match self.stream.read_buf(&mut self.buf).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
        })
        .await
        .expect("a method or the end within the deadline")
    }

    /// Reads methods until one matches.
    async fn until(&mut self, what: &str, wanted: impl Fn(&AMQPClass) -> bool) -> AMQPClass {
        loop {
            let (_, class) = self
                .method()
                .await
                .unwrap_or_else(|| panic!("closed while waiting for {what}"));
            if wanted(&class) {
                return class;
            }
        }
    }

    /// The broker's `connection.close`: code, class and method ids.
    async fn connection_close(&mut self) -> (u16, u16, u16, String) {
        let close = self
            .until("connection.close", |c| {
                matches!(c, AMQPClass::Connection(connection::AMQPMethod::Close(_)))
            })
            .await;
        let AMQPClass::Connection(connection::AMQPMethod::Close(c)) = close else {
            unreachable!()
        };
        (
            c.reply_code,
            c.class_id,
            c.method_id,
            c.reply_text.to_string(),
        )
    }

    /// Reads (and drops) everything until the broker closes the socket.
    async fn until_closed(&mut self) {
        tokio::time::timeout(DEADLINE, async {
            let mut chunk = vec![0u8; 1 << 16];
            loop {
                match self.stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await
        .expect("the broker closes the connection within the deadline");
    }
}

async fn lapin(broker: &Broker) -> Connection {
    Connection::connect(&broker.amqp_url(), ConnectionProperties::default())
        .await
        .expect("AMQP connection")
}

/// A lapin consumer (prefetch 500, acks) of `queue` on a connection of its own;
/// the task ends with how many it received once it has `count` or nothing came for
/// the deadline.
async fn consumer(broker: &Broker, queue: &str, count: usize) -> tokio::task::JoinHandle<usize> {
    let conn = lapin(broker).await;
    let ch = conn.create_channel().await.expect("channel");
    ch.queue_declare(
        queue.into(),
        QueueDeclareOptions::durable(),
        lapin::types::FieldTable::default(),
    )
    .await
    .expect("queue.declare");
    ch.basic_qos(500, BasicQosOptions::default())
        .await
        .expect("basic.qos");
    let mut deliveries = ch
        .basic_consume(
            queue.into(),
            "lapin".into(),
            BasicConsumeOptions::default(),
            lapin::types::FieldTable::default(),
        )
        .await
        .expect("basic.consume");
    tokio::spawn(async move {
        let _conn = conn;
        let mut n = 0;
        while n < count {
            let next = tokio::time::timeout(DEADLINE, deliveries.next()).await;
            let Ok(Some(Ok(d))) = next else { break };
            d.ack(BasicAckOptions::default()).await.expect("ack");
            n += 1;
        }
        n
    })
}

/// Publishes `count` messages to `queue` with confirms over one lapin connection
/// while another consumes them with acks; returns how many were confirmed and how
/// many received.
async fn publish_and_consume(broker: &Broker, queue: &str, count: usize) -> (usize, usize) {
    let received = consumer(broker, queue, count).await;
    let producer = lapin(broker).await;
    let pc = producer.create_channel().await.expect("channel");
    pc.confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirm.select");
    let mut confirmed = 0;
    for chunk in 0..count.div_ceil(500) {
        let mut pending = Vec::new();
        for _ in 0..500.min(count - chunk * 500) {
            pending.push(
                pc.basic_publish(
                    "".into(),
                    queue.into(),
                    BasicPublishOptions::default(),
                    &[7u8; 1024],
                    BasicProperties::default().with_delivery_mode(2),
                )
                .await
                .expect("basic.publish"),
            );
        }
        for p in pending {
            if p.await.expect("confirm").is_ack() {
                confirmed += 1;
            }
        }
    }
    let received = received.await.expect("consumer task");
    (confirmed, received)
}

/// Issue 17's slow consumer: 300,000 x 1 KiB persistent messages, an auto-ack
/// consumer that never reads its socket. It gets what its connection's byte credit
/// allows (plus what the sockets hold) and the rest stays in the queue; the
/// broker's memory stays under 256 MiB, less than the backlog's 300 MiB of bodies
/// alone (it was 1,050 MiB), and other connections publish and consume meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_that_never_reads_holds_its_credit_and_no_more() {
    const BACKLOG: usize = 300_000;
    let broker = Broker::start().await.expect("broker starts");
    let api = Api::new(&broker);
    api.create("backlog", json!({})).await;
    fill(&broker, "backlog", BACKLOG, 1024).await;
    api.wait_stats("backlog", "the backlog", |s| s["ready"] == BACKLOG)
        .await;
    let before = rss(&broker);

    let mut stuck = Raw::connect(&broker, None).await;
    let mut hello = login();
    hello.extend(consume(1, "backlog", "never-reads", true));
    stuck.write(&hello).await;
    // The consumer takes what fits and then nothing more: wait until the queue
    // has stopped moving (the same count over a second).
    let mut last = u64::MAX;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let left = loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let stats = api.stats("backlog").await;
        let ready = stats["ready"].as_u64().expect("ready");
        if ready == last && ready < BACKLOG as u64 {
            break ready;
        }
        last = ready;
        assert!(
            tokio::time::Instant::now() < deadline,
            "the backlog never settled: {stats}"
        );
    };
    let taken = BACKLOG as u64 - left;
    let settled = rss(&broker);
    eprintln!(
        "slow consumer: RSS {} MiB with the backlog, {} MiB once the silent consumer settled; it took {taken} of {BACKLOG}",
        before >> 20,
        settled >> 20
    );
    // 4 MiB of credit and the two sockets' buffers: a few thousand messages, far
    // from the 300,000 (all of which went into memory before).
    assert!(taken < 50_000, "the silent consumer took {taken} messages");

    // Other connections are served meanwhile.
    let (confirmed, received) = publish_and_consume(&broker, "other", 10_000).await;
    assert_eq!((confirmed, received), (10_000, 10_000));

    let after = rss(&broker);
    eprintln!(
        "slow consumer: RSS {} MiB after 10,000 more through another queue",
        after >> 20
    );
    // Alone it stays near 130 MiB; beside the whole suite (JVMs, builds) it has
    // reached 205 MiB after the 10,000 more. Holding the backlog would take over
    // 400 MiB (its bodies and the broker's own 100).
    for rss in [settled, after] {
        assert!(rss < 256 << 20, "broker RSS {} MiB", rss >> 20);
    }
    // Still connected (within the write timeout) and still holding back: the
    // queue has not moved.
    let stats = api.stats("backlog").await;
    assert_eq!(stats["ready"].as_u64(), Some(left), "{stats}");
    drop(stuck);
}

/// A consumer with acks whose client stops reading: once the socket has taken
/// nothing for the write timeout, the connection is closed and every message it
/// was sent and did not ack is back in the queue.
#[tokio::test]
async fn a_stuck_reader_is_closed_after_the_write_timeout_and_its_messages_go_back() {
    const COUNT: usize = 20_000;
    let (broker, _dir) =
        start_with("[amqp]\nwrite_timeout_ms = 1000\nmax_buffered_bytes = 262144\n").await;
    let api = Api::new(&broker);
    api.create("stuck", json!({})).await;
    fill(&broker, "stuck", COUNT, 1024).await;
    api.wait_stats("stuck", "the messages", |s| s["ready"] == COUNT)
        .await;
    let mut stuck = Raw::connect(&broker, Some(4096)).await;
    let mut hello = login();
    hello.extend(consume(1, "stuck", "stuck", false));
    stuck.write(&hello).await;
    // It got some (leased to it), then was closed and they all came back.
    api.wait_stats("stuck", "a delivery", |s| s["leased"].as_u64() > Some(0))
        .await;
    api.wait_stats("stuck", "the messages back", |s| {
        s["ready"] == COUNT && s["leased"] == 0
    })
    .await;
    stuck.until_closed().await;
    assert!(
        broker.log().contains("write timeout"),
        "the close is logged: {}",
        broker.log()
    );
    // Another consumer gets them all.
    let received = consumer(&broker, "stuck", COUNT).await;
    assert_eq!(received.await.expect("consumer task"), COUNT);
}

/// A client that sends `basic.get` after `basic.get` and reads none of the
/// answers: the broker stops reading it once the answers waiting pass the limit,
/// so most messages stay ready in the queue instead of in the broker's memory.
#[tokio::test]
async fn gets_that_are_never_read_stop_being_answered() {
    const COUNT: usize = 2048;
    let broker = Broker::start().await.expect("broker starts");
    let api = Api::new(&broker);
    api.create("gets", json!({})).await;
    fill(&broker, "gets", COUNT, 64 * 1024).await;
    api.wait_stats("gets", "the messages", |s| s["ready"] == COUNT)
        .await;
    let mut raw = Raw::connect(&broker, Some(4096)).await;
    let mut hello = login();
    for _ in 0..COUNT {
        hello.extend(method(
            1,
            AMQPClass::Basic(basic::AMQPMethod::Get(basic::Get {
                queue: "gets".into(),
                no_ack: false,
            })),
        ));
    }
    raw.write(&hello).await;
    // Wait until the answered gets stop growing (the same count over a second).
    let mut last = u64::MAX;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let leased = loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let stats = api.stats("gets").await;
        let leased = stats["leased"].as_u64().expect("leased");
        if leased == last && leased > 0 {
            break leased;
        }
        last = leased;
        assert!(
            tokio::time::Instant::now() < deadline,
            "the gets never settled: {stats}"
        );
    };
    eprintln!("gets: {leased} of {COUNT} answered while the client reads none");
    // 4 MiB of answers waiting and the sockets' buffers: about 130 of 64 KiB.
    assert!(leased < COUNT as u64 / 2, "{leased} gets answered");
    let stats = api.stats("gets").await;
    assert_eq!(
        stats["ready"].as_u64(),
        Some(COUNT as u64 - leased),
        "{stats}"
    );
    drop(raw);
}

/// `[amqp] max_consumers_per_channel`: one more consumer on a full channel closes
/// the connection with 530 `NOT_ALLOWED` (RabbitMQ's answer to its
/// `consumer_max_per_channel`); the cap is per channel, and a cancelled consumer
/// makes room.
#[tokio::test]
async fn consumers_over_the_channel_cap_close_the_connection_with_530() {
    let (broker, _dir) = start_with("[amqp]\nmax_consumers_per_channel = 3\n").await;
    let api = Api::new(&broker);
    api.create("q", json!({})).await;
    let mut raw = Raw::connect(&broker, None).await;
    let mut hello = login();
    hello.extend(open_channel(2));
    for tag in ["a", "b", "c"] {
        hello.extend(consume(1, "q", tag, false));
        hello.extend(consume(2, "q", tag, false));
    }
    raw.write(&hello).await;
    let mut ok = 0;
    while ok < 6 {
        raw.until("basic.consume-ok", |c| {
            matches!(c, AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(_)))
        })
        .await;
        ok += 1;
    }
    // A cancel makes room for one more.
    let mut more = method(
        1,
        AMQPClass::Basic(basic::AMQPMethod::Cancel(basic::Cancel {
            consumer_tag: "a".into(),
            nowait: false,
        })),
    );
    more.extend(consume(1, "q", "d", false));
    raw.write(&more).await;
    raw.until("basic.consume-ok", |c| {
        matches!(c, AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(_)))
    })
    .await;
    // The fourth on channel 1.
    raw.write(&consume(1, "q", "e", false)).await;
    let (code, class_id, method_id, text) = raw.connection_close().await;
    assert_eq!((code, class_id, method_id), (530, 60, 20), "{text}");
    assert!(text.contains("maximum (3)"), "{text}");
    // lapin sees the same: the fourth consume fails and closes its connection.
    let conn = Connection::connect(&broker.amqp_url(), ConnectionProperties::default())
        .await
        .expect("AMQP connection");
    let ch = conn.create_channel().await.expect("channel");
    // lapin cancels a consumer it drops: these are kept.
    let mut kept = Vec::new();
    for tag in ["a", "b", "c"] {
        kept.push(
            ch.basic_consume(
                "q".into(),
                tag.into(),
                BasicConsumeOptions::default(),
                lapin::types::FieldTable::default(),
            )
            .await
            .expect("basic.consume under the cap"),
        );
    }
    let err = ch
        .basic_consume(
            "q".into(),
            "d".into(),
            BasicConsumeOptions::default(),
            lapin::types::FieldTable::default(),
        )
        .await
        .expect_err("a fourth consumer");
    assert!(err.to_string().contains("NOT_ALLOWED"), "{err}");
}

/// As RabbitMQ, the negotiated `channel_max` bounds how many channels are open at
/// once, not their numbers: any number up to 65535 opens, and one channel more
/// than `channel_max` closes the connection with 530 `NOT_ALLOWED`.
#[tokio::test]
async fn channel_max_bounds_open_channels_and_any_number_opens() {
    let (broker, _dir) = start_with("[amqp]\nchannel_max = 8\n").await;
    let mut raw = Raw::connect(&broker, None).await;
    let mut hello = login();
    for ch in [2, 3, 4, 5, 6, 9, 65535] {
        hello.extend(open_channel(ch));
    }
    raw.write(&hello).await;
    for _ in 0..8 {
        raw.until("channel.open-ok", |c| {
            matches!(c, AMQPClass::Channel(channel::AMQPMethod::OpenOk(_)))
        })
        .await;
    }
    raw.write(&open_channel(7)).await;
    let (code, class_id, method_id, text) = raw.connection_close().await;
    assert_eq!((code, class_id, method_id), (530, 20, 10), "{text}");
    assert!(text.contains("channel_max (8)"), "{text}");
}

/// `basic.qos` with a non-zero `prefetch_size` (which the codec would drop) is
/// refused as RabbitMQ refuses it: 540 `NOT_IMPLEMENTED`, closing the connection.
#[tokio::test]
async fn a_non_zero_prefetch_size_closes_the_connection_with_540() {
    let (broker, _dir) = start_with("").await;
    let mut raw = Raw::connect(&broker, None).await;
    raw.write(&login()).await;
    raw.until("channel.open-ok", |c| {
        matches!(c, AMQPClass::Channel(channel::AMQPMethod::OpenOk(_)))
    })
    .await;
    // basic.qos on channel 1: prefetch_size 65536, prefetch_count 10, global off.
    let mut qos = vec![1, 0, 1, 0, 0, 0, 11, 0, 60, 0, 10];
    qos.extend_from_slice(&65_536u32.to_be_bytes());
    qos.extend_from_slice(&[0, 10, 0, 0xCE]);
    raw.write(&qos).await;
    let (code, class_id, method_id, text) = raw.connection_close().await;
    assert_eq!((code, class_id, method_id), (540, 60, 10), "{text}");
    assert!(text.contains("prefetch_size!=0 (65536)"), "{text}");
}

/// RabbitMQ's consumer timeout: a channel holding a delivery unacked longer than
/// `[amqp] consumer_timeout_ms` is closed with 406 PRECONDITION_FAILED, and its
/// deliveries go back to the queue (redelivered); a channel that acks in time, and
/// the connection, go on.
#[tokio::test]
async fn an_unacked_delivery_past_the_consumer_timeout_closes_its_channel_with_406() {
    use lapin::options::BasicGetOptions;
    let (broker, _dir) = start_with("[amqp]\nconsumer_timeout_ms = 1000\n").await;
    let conn =
        lapin::Connection::connect(&broker.amqp_url(), lapin::ConnectionProperties::default())
            .await
            .unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.queue_declare(
        "slow".into(),
        QueueDeclareOptions::default(),
        lapin::types::FieldTable::default(),
    )
    .await
    .unwrap();
    for body in [b"one", b"two"] {
        ch.basic_publish(
            "".into(),
            "slow".into(),
            BasicPublishOptions::default(),
            body,
            lapin::BasicProperties::default(),
        )
        .await
        .unwrap();
    }
    // A consumer that holds its delivery, and a get on another channel that acks
    // its own in time: only the first channel is closed.
    let held = conn.create_channel().await.unwrap();
    held.basic_qos(1, lapin::options::BasicQosOptions::default())
        .await
        .unwrap();
    let mut consumer = held
        .basic_consume(
            "slow".into(),
            "holder".into(),
            BasicConsumeOptions::default(),
            lapin::types::FieldTable::default(),
        )
        .await
        .unwrap();
    let first = consumer.next().await.unwrap().unwrap();
    assert_eq!(first.data, b"one");
    let closed = tokio::time::timeout(Duration::from_secs(30), consumer.next())
        .await
        .expect("the channel is closed within 30 s");
    let e = match closed {
        Some(Err(e)) => e.to_string(),
        other => panic!("expected the channel's close, got {other:?}"),
    };
    assert!(
        e.contains("PRECONDITION_FAILED") && e.contains("timed out"),
        "{e}"
    );
    assert!(conn.status().connected(), "the connection goes on");
    // Both messages are back, the held one redelivered.
    let getter = conn.create_channel().await.unwrap();
    let mut bodies = Vec::new();
    for _ in 0..2 {
        let got = getter
            .basic_get("slow".into(), BasicGetOptions::default())
            .await
            .unwrap()
            .expect("a message");
        bodies.push((got.delivery.data.clone(), got.delivery.redelivered));
        got.delivery
            .acker
            .ack(BasicAckOptions::default())
            .await
            .unwrap();
    }
    bodies.sort();
    assert_eq!(
        bodies,
        vec![(b"one".to_vec(), true), (b"two".to_vec(), false)]
    );
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(
        getter.status().connected(),
        "a channel that acked in time is open"
    );
}
