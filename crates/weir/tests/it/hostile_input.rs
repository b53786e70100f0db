//! Hostile AMQP input against the real binary: the frames that used to abort the
//! process (field tables nested 25,000 deep) close only their connection or
//! channel, the broker and every other client carry on, and a message whose headers
//! nest as deep as allowed survives a restart and is delivered whole.

use std::time::Duration;

use futures_lite::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions,
};
use lapin::types::{AMQPValue, FieldArray, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use weir_testkit::Broker;

use crate::amqp::{connect, declare};

/// A raw AMQP client: bytes in, frames out, nothing checked on our side.
pub(crate) struct Raw {
    stream: TcpStream,
}

/// One frame: type, channel, payload.
pub(crate) type RawFrame = (u8, u16, Vec<u8>);

pub(crate) fn short(s: &str) -> Vec<u8> {
    let mut v = vec![u8::try_from(s.len()).unwrap()];
    v.extend_from_slice(s.as_bytes());
    v
}

pub(crate) fn long(b: &[u8]) -> Vec<u8> {
    let mut v = u32::try_from(b.len()).unwrap().to_be_bytes().to_vec();
    v.extend_from_slice(b);
    v
}

/// A field table of one field `k`: an array nested `depth - 1` levels deep (the
/// table itself is level 1). Built by hand, without recursion.
fn deep_table(depth: usize) -> Vec<u8> {
    let mut inner: Vec<u8> = Vec::new();
    for _ in 1..depth {
        let mut level = vec![b'A'];
        level.extend_from_slice(&long(&inner));
        inner = level;
    }
    let mut entries = short("k");
    if inner.is_empty() {
        entries.push(b'V');
    }
    entries.extend_from_slice(&inner);
    long(&entries)
}

pub(crate) fn method(class: u16, method: u16, args: &[u8]) -> Vec<u8> {
    let mut p = class.to_be_bytes().to_vec();
    p.extend_from_slice(&method.to_be_bytes());
    p.extend_from_slice(args);
    p
}

impl Raw {
    async fn connect(broker: &Broker) -> Raw {
        Raw::connect_from(broker, std::net::Ipv4Addr::LOCALHOST).await
    }

    /// Connected from `local` (another loopback address stands for another host)
    /// and `connection.start` read.
    pub(crate) async fn connect_from(broker: &Broker, local: std::net::Ipv4Addr) -> Raw {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(std::net::SocketAddr::from((local, 0))).unwrap();
        let stream = socket
            .connect(broker.amqp_addr().parse().unwrap())
            .await
            .unwrap();
        let mut raw = Raw { stream };
        raw.stream.write_all(b"AMQP\x00\x00\x09\x01").await.unwrap();
        let (_, _, start) = raw.read().await.expect("connection.start");
        assert_eq!(&start[..4], &[0, 10, 0, 10]);
        raw
    }

    /// The whole handshake as guest, and channel 1..=channels open.
    async fn login(broker: &Broker, channels: u16) -> Raw {
        let mut raw = Raw::connect(broker).await;
        let mut start_ok = long(&[]);
        start_ok.extend_from_slice(&short("PLAIN"));
        start_ok.extend_from_slice(&long(b"\0guest\0guest"));
        start_ok.extend_from_slice(&short("en_US"));
        raw.send(1, 0, &method(10, 11, &start_ok)).await;
        let (_, _, tune) = raw.read().await.expect("connection.tune");
        assert_eq!(&tune[..4], &[0, 10, 0, 30]);
        let mut tune_ok = 0u16.to_be_bytes().to_vec();
        tune_ok.extend_from_slice(&131_072u32.to_be_bytes());
        tune_ok.extend_from_slice(&0u16.to_be_bytes());
        raw.send(1, 0, &method(10, 31, &tune_ok)).await;
        let mut open = short("/");
        open.extend_from_slice(&short(""));
        open.push(0);
        raw.send(1, 0, &method(10, 40, &open)).await;
        let (_, _, open_ok) = raw.read().await.expect("connection.open-ok");
        assert_eq!(&open_ok[..4], &[0, 10, 0, 41]);
        for ch in 1..=channels {
            raw.send(1, ch, &method(20, 10, &short(""))).await;
            let (_, got, ok) = raw.read().await.expect("channel.open-ok");
            assert_eq!((got, &ok[..4]), (ch, &[0, 20, 0, 11][..]));
        }
        raw
    }

    pub(crate) async fn send(&mut self, kind: u8, ch: u16, payload: &[u8]) {
        let mut f = vec![kind];
        f.extend_from_slice(&ch.to_be_bytes());
        f.extend_from_slice(&long(payload));
        f.push(0xCE);
        // The peer may close before reading it all: that is an answer too.
        let _ = self.stream.write_all(&f).await;
    }

    /// The next frame, or `None` once the broker closed the socket.
    pub(crate) async fn read(&mut self) -> Option<RawFrame> {
        let mut head = [0u8; 7];
        tokio::time::timeout(Duration::from_secs(20), self.stream.read_exact(&mut head))
            .await
            .expect("an answer within 20 s")
            .ok()?;
        let size = u32::from_be_bytes([head[3], head[4], head[5], head[6]]) as usize;
        let mut payload = vec![0u8; size + 1];
        self.stream.read_exact(&mut payload).await.ok()?;
        payload.pop();
        Some((head[0], u16::from_be_bytes([head[1], head[2]]), payload))
    }

    /// The next `channel.close` or `connection.close`: (channel, code, class,
    /// method), skipping heartbeats and anything else.
    pub(crate) async fn close(&mut self) -> (u16, u16, u16, u16) {
        while let Some((kind, ch, p)) = self.read().await {
            if kind == 1 && p.len() >= 6 && matches!(&p[..4], [0, 10, 0, 50] | [0, 20, 0, 40]) {
                let code = u16::from_be_bytes([p[4], p[5]]);
                let text_len = usize::from(p[6]);
                let at = 7 + text_len;
                let class = u16::from_be_bytes([p[at], p[at + 1]]);
                let method = u16::from_be_bytes([p[at + 2], p[at + 3]]);
                return (ch, code, class, method);
            }
        }
        panic!("the broker closed the socket without a close method");
    }
}

/// A bystander publishes with confirms and gets the message back: the broker
/// and this other connection are untouched.
async fn bystander_round_trip(channel: &Channel, consumer: &mut lapin::Consumer, body: &[u8]) {
    let confirm = channel
        .basic_publish(
            "".into(),
            "bystander".into(),
            BasicPublishOptions::default(),
            body,
            BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .expect("publish")
        .await
        .expect("confirm");
    assert!(confirm.is_ack());
    let d = tokio::time::timeout(Duration::from_secs(20), consumer.next())
        .await
        .expect("a delivery within 20 s")
        .expect("consumer open")
        .expect("delivery");
    assert_eq!(d.data, body);
    d.ack(BasicAckOptions::default()).await.unwrap();
}

fn alive(broker: &Broker) -> bool {
    broker
        .pid()
        .is_some_and(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists())
}

#[tokio::test]
async fn deep_field_tables_close_only_their_connection_or_channel() {
    let broker = Broker::start().await.unwrap();
    let conn = connect(&broker).await;
    let channel = conn.create_channel().await.unwrap();
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    declare(&channel, "bystander").await;
    let mut consumer = channel
        .basic_consume(
            "bystander".into(),
            "watch".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    bystander_round_trip(&channel, &mut consumer, b"before").await;

    // The frame: a 125 KB start-ok whose client properties nest an array
    // 25,000 deep. It used to abort the process; now it is a syntax error.
    let mut raw = Raw::connect(&broker).await;
    let mut start_ok = deep_table(25_000);
    assert!(start_ok.len() > 120_000);
    start_ok.extend_from_slice(&short("PLAIN"));
    start_ok.extend_from_slice(&long(b"\0guest\0guest"));
    start_ok.extend_from_slice(&short("en_US"));
    raw.send(1, 0, &method(10, 11, &start_ok)).await;
    assert_eq!(raw.close().await, (0, 502, 0, 0));
    assert!(alive(&broker));
    bystander_round_trip(&channel, &mut consumer, b"after start-ok").await;

    // After login: queue.declare arguments and a content header's headers 25,000
    // deep close their channel with 406, naming the method; the connection lives.
    let mut raw = Raw::login(&broker, 3).await;
    let mut declare_args = vec![0, 0];
    declare_args.extend_from_slice(&short("deep"));
    declare_args.push(0b10); // durable
    declare_args.extend_from_slice(&deep_table(25_000));
    raw.send(1, 1, &method(50, 10, &declare_args)).await;
    assert_eq!(raw.close().await, (1, 406, 50, 10));

    let mut publish = vec![0, 0];
    publish.extend_from_slice(&short(""));
    publish.extend_from_slice(&short("bystander"));
    publish.push(0);
    raw.send(1, 2, &method(60, 40, &publish)).await;
    let mut header = vec![0, 60, 0, 0];
    header.extend_from_slice(&5u64.to_be_bytes());
    header.extend_from_slice(&0x2000u16.to_be_bytes()); // headers only
    header.extend_from_slice(&deep_table(25_000));
    raw.send(2, 2, &header).await;
    raw.send(3, 2, b"hello").await;
    assert_eq!(raw.close().await, (2, 406, 60, 40));

    // basic.consume arguments, and a table at the limit on channel 3 still works.
    let mut declare_ok = vec![0, 0];
    declare_ok.extend_from_slice(&short("at-the-limit"));
    declare_ok.push(0b10);
    declare_ok.extend_from_slice(&deep_table(100));
    raw.send(1, 3, &method(50, 10, &declare_ok)).await;
    let (_, ch, ok) = raw.read().await.expect("queue.declare-ok");
    assert_eq!((ch, &ok[..4]), (3, &[0, 50, 0, 11][..]));
    let mut consume = vec![0, 0];
    consume.extend_from_slice(&short("at-the-limit"));
    consume.extend_from_slice(&short("tag"));
    consume.push(0);
    consume.extend_from_slice(&deep_table(101));
    raw.send(1, 3, &method(60, 20, &consume)).await;
    assert_eq!(raw.close().await, (3, 406, 60, 20));

    assert!(alive(&broker));
    bystander_round_trip(&channel, &mut consumer, b"after channels").await;
    drop(raw);
    conn.close(200, "done".into()).await.unwrap();
}

/// Headers nested as deep as allowed are stored, survive kill -9, and are
/// delivered as published (stored properties are decoded at every delivery).
#[tokio::test]
async fn headers_at_the_depth_limit_survive_a_restart() {
    let mut broker = Broker::start().await.unwrap();
    // 99 arrays inside the headers table: 100 levels.
    let mut value = AMQPValue::Void;
    for _ in 0..99 {
        value = AMQPValue::FieldArray(FieldArray::from(vec![value]));
    }
    let mut headers = FieldTable::default();
    headers.insert("deep".into(), value.clone());
    {
        let conn = connect(&broker).await;
        let channel = conn.create_channel().await.unwrap();
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        declare(&channel, "deep-headers").await;
        let confirm = channel
            .basic_publish(
                "".into(),
                "deep-headers".into(),
                BasicPublishOptions::default(),
                b"kept",
                BasicProperties::default()
                    .with_delivery_mode(2)
                    .with_headers(headers.clone()),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        assert!(confirm.is_ack());
    }
    broker.kill9().await.unwrap();
    broker.restart().await.unwrap();
    let conn = connect(&broker).await;
    let channel = conn.create_channel().await.unwrap();
    let mut consumer = channel
        .basic_consume(
            "deep-headers".into(),
            "c".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let d = tokio::time::timeout(Duration::from_secs(20), consumer.next())
        .await
        .expect("a delivery within 20 s")
        .expect("consumer open")
        .expect("delivery");
    assert_eq!(d.data, b"kept");
    let got = d.properties.headers().as_ref().expect("headers");
    assert_eq!(got.inner().get("deep"), Some(&value));
    d.ack(BasicAckOptions::default()).await.unwrap();
}

/// A broker whose config file holds `toml`; the directory must outlive it.
async fn start_configured(toml: &str) -> (Broker, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let config = dir.path().join("weir.toml");
    std::fs::write(&config, toml).expect("config file");
    let broker = Broker::start_with(&["--config", config.to_str().expect("UTF-8 path")])
        .await
        .expect("broker starts");
    (broker, dir)
}

#[tokio::test]
async fn connections_per_peer_address_are_capped() {
    let (broker, _dir) = start_configured("[amqp]\nmax_connections_per_peer = 3\n").await;
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(connect(&broker).await);
    }
    // The fourth from 127.0.0.1 is closed at accept.
    let refused = Connection::connect(&broker.amqp_url(), ConnectionProperties::default()).await;
    assert!(refused.is_err(), "a fourth connection was accepted");
    // One closes, and its place is free again.
    open.pop().unwrap().close(200, "bye".into()).await.unwrap();
    let mut again = None;
    for _ in 0..100 {
        if let Ok(c) =
            Connection::connect(&broker.amqp_url(), ConnectionProperties::default()).await
        {
            again = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let again = again.expect("a connection once one closed");
    let channel = again.create_channel().await.unwrap();
    declare(&channel, "per-peer").await;
}

#[tokio::test]
async fn a_handshake_that_dribbles_is_closed_at_its_deadline() {
    let (broker, _dir) = start_configured("[amqp]\nhandshake_timeout_ms = 1000\n").await;
    // Sends the protocol header and then nothing: closed, not held forever.
    let mut raw = Raw::connect(&broker).await;
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), raw.stream.read_to_end(&mut rest))
        .await
        .expect("the broker closes a stalled handshake");
    assert!(read.is_ok());
    // Others still get in.
    let conn = connect(&broker).await;
    conn.create_channel().await.unwrap();
}

/// A client that sends `connection.close` with publishes still queued behind it
/// (amqplib does): the broker answers `close-ok`, then reads and drops the rest
/// until the client closes, as RabbitMQ does, instead of resetting the socket on
/// the unread bytes, which lost the client its `close-ok` or failed its next
/// write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_behind_a_connection_close_are_dropped_without_a_reset() {
    let broker = Broker::start().await.expect("broker");
    for _ in 0..20 {
        let mut raw = Raw::login(&broker, 1).await;
        let mut close = 200u16.to_be_bytes().to_vec();
        close.extend_from_slice(&short("bye"));
        close.extend_from_slice(&[0, 0, 0, 0]);
        let mut burst = Vec::new();
        let frame = |kind: u8, ch: u16, payload: &[u8]| {
            let mut f = vec![kind];
            f.extend_from_slice(&ch.to_be_bytes());
            f.extend_from_slice(&long(payload));
            f.push(0xCE);
            f
        };
        burst.extend(frame(1, 0, &method(10, 50, &close)));
        let mut publish = 0u16.to_be_bytes().to_vec();
        publish.extend_from_slice(&short(""));
        publish.extend_from_slice(&short("nowhere"));
        publish.push(0);
        for _ in 0..200 {
            burst.extend(frame(1, 1, &method(60, 40, &publish)));
        }
        raw.stream
            .write_all(&burst)
            .await
            .expect("the burst is written");
        let (kind, ch, payload) = raw.read().await.expect("close-ok, not a reset");
        assert_eq!((kind, ch, &payload[..4]), (1, 0, &[0, 10, 0, 51][..]));
        // More of the client's queued frames still go out without a broken pipe.
        raw.stream
            .write_all(&burst[burst.len() / 2..])
            .await
            .expect("writing after close-ok is not refused");
        let mut rest = Vec::new();
        let end = tokio::time::timeout(Duration::from_secs(10), raw.stream.read_to_end(&mut rest))
            .await
            .expect("the broker ends the connection");
        assert!(end.is_ok(), "an orderly end, not a reset: {end:?}");
        assert!(rest.is_empty(), "nothing after close-ok");
    }
    assert!(alive(&broker));
}
