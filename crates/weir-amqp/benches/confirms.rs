//! Micro-benchmark of the AMQP publish pipeline in one process: a client on
//! loopback publishes 100 persistent 1 KiB messages with publisher confirms to a
//! queue that a no-ack consumer on the same connection drains, and waits for all
//! 100 confirms and deliveries. It covers the path the performance work changed:
//! frame reading with the adaptive buffer, the channel worker handing batches to
//! the queue, the confirmer task answering in order, and delivery. `fsync = never`,
//! so the figure is CPU and hand-offs, not the disk. Run with
//! `cargo bench -p weir-amqp --bench confirms`.
//!
//! The client is written here by hand (amq-protocol for the method frames), lean
//! like `weir bench amqp`'s, so it costs little next to the broker.

use std::io::{Read, Write};
use std::net::TcpStream;

use amq_protocol::frame::{AMQPContentHeader, AMQPFrame, WriteContext, gen_frame};
use amq_protocol::protocol::basic::AMQPProperties;
use amq_protocol::protocol::{AMQPClass, basic, channel, confirm, connection, queue};
use amq_protocol::types::{FieldTable, LongString};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use weir_amqp::AmqpConfig;
use weir_broker::{Broker, BrokerConfig, FsyncPolicy};

const BATCH: u64 = 100;

fn encode(frame: &AMQPFrame, out: &mut Vec<u8>) {
    let written = gen_frame(frame)(WriteContext::from(Vec::new()))
        .expect("bench frames encode")
        .write;
    out.extend_from_slice(&written);
}

fn method(ch: u16, class: AMQPClass, out: &mut Vec<u8>) {
    encode(&AMQPFrame::Method(ch, class), out);
}

/// Frames the broker sent, as (type, class, method, payload).
struct Reader {
    stream: TcpStream,
    buf: Vec<u8>,
    start: usize,
}

impl Reader {
    fn next(&mut self) -> (u8, u16, u16, Vec<u8>) {
        loop {
            let have = &self.buf[self.start..];
            if have.len() >= 7 {
                let size = u32::from_be_bytes(have[3..7].try_into().expect("4 bytes")) as usize;
                if have.len() >= 8 + size {
                    let kind = have[0];
                    let payload = have[7..7 + size].to_vec();
                    self.start += 8 + size;
                    let (class, method) = if kind == 1 {
                        (
                            u16::from_be_bytes([payload[0], payload[1]]),
                            u16::from_be_bytes([payload[2], payload[3]]),
                        )
                    } else {
                        (0, 0)
                    };
                    return (kind, class, method, payload);
                }
            }
            self.buf.drain(..self.start);
            self.start = 0;
            let old = self.buf.len();
            self.buf.resize(old + 65536, 0);
            let n = self
                .stream
                .read(&mut self.buf[old..])
                .expect("the broker answers");
            assert!(n > 0, "the broker closed the connection");
            self.buf.truncate(old + n);
        }
    }

    /// Reads until a method `class`.`method` arrives.
    fn until(&mut self, class: u16, method: u16) {
        while !matches!(self.next(), (1, c, m, _) if c == class && m == method) {}
    }
}

fn handshake(stream: &mut TcpStream, reader: &mut Reader) {
    stream.write_all(b"AMQP\x00\x00\x09\x01").expect("write");
    reader.until(10, 10);
    let mut out = Vec::new();
    method(
        0,
        AMQPClass::Connection(connection::AMQPMethod::StartOk(connection::StartOk {
            client_properties: FieldTable::default(),
            mechanism: "PLAIN".into(),
            response: LongString::from(b"\0guest\0guest".to_vec()),
            locale: "en_US".into(),
        })),
        &mut out,
    );
    stream.write_all(&out).expect("write");
    reader.until(10, 30);
    out.clear();
    method(
        0,
        AMQPClass::Connection(connection::AMQPMethod::TuneOk(connection::TuneOk {
            channel_max: 0,
            frame_max: 131_072,
            heartbeat: 0,
        })),
        &mut out,
    );
    method(
        0,
        AMQPClass::Connection(connection::AMQPMethod::Open(connection::Open {
            virtual_host: "/".into(),
        })),
        &mut out,
    );
    for ch in [1, 2] {
        method(
            ch,
            AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})),
            &mut out,
        );
    }
    method(
        1,
        AMQPClass::Confirm(confirm::AMQPMethod::Select(confirm::Select {
            nowait: false,
        })),
        &mut out,
    );
    method(
        1,
        AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
            queue: "bench".into(),
            passive: false,
            durable: true,
            exclusive: false,
            auto_delete: false,
            nowait: false,
            arguments: FieldTable::default(),
        })),
        &mut out,
    );
    method(
        2,
        AMQPClass::Basic(basic::AMQPMethod::Consume(basic::Consume {
            queue: "bench".into(),
            consumer_tag: "bench".into(),
            no_local: false,
            no_ack: true,
            exclusive: false,
            nowait: false,
            arguments: FieldTable::default(),
        })),
        &mut out,
    );
    stream.write_all(&out).expect("write");
    reader.until(60, 21);
}

/// `BATCH` persistent publishes of a 1 KiB body on channel 1.
fn publishes() -> Vec<u8> {
    let body = vec![7u8; 1024];
    let mut out = Vec::new();
    for _ in 0..BATCH {
        method(
            1,
            AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
                exchange: "".into(),
                routing_key: "bench".into(),
                mandatory: false,
                immediate: false,
            })),
            &mut out,
        );
        encode(
            &AMQPFrame::Header(
                1,
                AMQPContentHeader {
                    class_id: 60,
                    body_size: body.len() as u64,
                    properties: AMQPProperties::default().with_delivery_mode(2),
                },
            ),
            &mut out,
        );
        out.push(3);
        out.extend_from_slice(&1u16.to_be_bytes());
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(&body);
        out.push(0xCE);
    }
    out
}

fn confirms(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut config = BrokerConfig::new(dir.path());
    config.log.fsync = FsyncPolicy::Never;
    let (broker, _) = runtime
        .block_on(Broker::open(config))
        .expect("the broker opens");
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("a loopback port");
    let addr = listener.local_addr().expect("its address");
    let shutdown = AmqpConfig::default().shutdown;
    let amqp = AmqpConfig {
        shutdown: shutdown.clone(),
        ..AmqpConfig::default()
    };
    let server = runtime.spawn(weir_amqp::serve(listener, broker.clone(), amqp));

    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let mut reader = Reader {
        stream: stream.try_clone().expect("a second handle"),
        buf: Vec::new(),
        start: 0,
    };
    handshake(&mut stream, &mut reader);
    let batch = publishes();
    let mut published = 0u64;
    let (mut confirmed, mut delivered) = (0u64, 0u64);

    let mut group = c.benchmark_group("amqp");
    group.throughput(Throughput::Elements(BATCH));
    group.bench_function("publish with confirms and deliver, 100 x 1 KiB", |b| {
        b.iter(|| {
            stream.write_all(&batch).expect("write");
            published += BATCH;
            while confirmed < published || delivered < published {
                match reader.next() {
                    (1, 60, 80, payload) => {
                        // basic.ack: delivery tag, then the multiple bit.
                        let tag = u64::from_be_bytes(payload[4..12].try_into().expect("8 bytes"));
                        confirmed = confirmed.max(tag);
                    }
                    (1, 60, 60, _) => delivered += 1,
                    (1, 60, 120, _) => panic!("the broker nacked a publish"),
                    _ => {}
                }
            }
        });
    });
    group.finish();
    drop(stream);
    shutdown.cancel();
    let _ = runtime.block_on(server);
    runtime.block_on(broker.shutdown());
}

criterion_group!(benches, confirms);
criterion_main!(benches);
