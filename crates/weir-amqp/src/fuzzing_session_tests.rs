//! Tests of the `message` and `session` fuzz targets: their seeds do what they
//! should, and the corpora in `fuzz/corpus/` replay on every `cargo test`.

use std::path::PathBuf;

use amq_protocol::frame::{AMQPFrame, gen_frame};
use amq_protocol::protocol::{confirm, exchange, queue, tx};
use amq_protocol::types::{AMQPValue, FieldArray, FieldTable, LongString};

use super::*;
use crate::connection::tests::Client;

/// The stack the corpora run on, as in `fuzz/`: deep recursion shows.
const STACK: usize = 256 << 10;

fn corpus(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(name)
}

fn read_corpus(name: &str) -> Vec<Vec<u8>> {
    std::fs::read_dir(corpus(name))
        .expect("the corpus exists")
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect()
}

fn on_small_stack(f: impl FnOnce() + Send) {
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .stack_size(STACK)
            .spawn_scoped(scope, f)
            .unwrap()
            .join()
            .expect("the inputs ran clean");
    });
}

fn rich_properties() -> AMQPProperties {
    let mut nested = FieldTable::default();
    nested.insert("n".into(), AMQPValue::LongLongInt(-5));
    let mut headers = FieldTable::default();
    headers.insert("text".into(), AMQPValue::LongString("v".into()));
    headers.insert("x-delay".into(), AMQPValue::LongInt(1500));
    headers.insert("table".into(), AMQPValue::FieldTable(nested));
    headers.insert(
        "array".into(),
        AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::Boolean(true)])),
    );
    headers.insert("double".into(), AMQPValue::Double(0.5));
    AMQPProperties::default()
        .with_content_type("application/json".into())
        .with_headers(headers)
        .with_delivery_mode(2)
        .with_priority(3)
        .with_correlation_id("c".into())
        .with_reply_to("replies".into())
        .with_expiration("60000".into())
        .with_message_id("m-1".into())
        .with_timestamp(1_700_000_000)
        .with_type("t".into())
        .with_user_id("guest".into())
        .with_app_id("app".into())
}

/// A content header's payload (what [`message`] takes after its mode byte).
fn header_payload(properties: AMQPProperties) -> Vec<u8> {
    let frame = AMQPFrame::Header(
        1,
        AMQPContentHeader {
            class_id: 60,
            body_size: 4,
            properties,
        },
    );
    let bytes = gen_frame(&frame)(WriteContext::from(Vec::new()))
        .unwrap()
        .write;
    bytes[7..bytes.len() - 1].to_vec()
}

fn message_seeds() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for (name, p) in [
        ("plain", AMQPProperties::default()),
        ("rich", rich_properties()),
    ] {
        let stored = to_send("exchange", "key", &p, Bytes::new())
            .unwrap()
            .properties
            .unwrap();
        let published = header_payload(p);
        for (mode, what, bytes) in [
            (0, "stored", &stored[..]),
            (2, "stored-dead", &stored[..]),
            (MESSAGE_PUBLISHED, "published", &published[..]),
            (MESSAGE_PUBLISHED | 2, "published-dead", &published[..]),
        ] {
            let mut input = vec![mode];
            input.extend_from_slice(bytes);
            out.push((format!("message-{what}-{name}"), input));
        }
    }
    out.push(("message-stored-empty".into(), vec![0]));
    out.push(("message-stored-old-version".into(), vec![0, 9, 0, 0]));
    out
}

#[allow(clippy::too_many_lines, reason = "a flat list, one seed per entry")]
fn session_seeds() -> Vec<(String, Vec<u8>)> {
    let with = |cut: u8, c: Client| {
        let mut bytes = vec![cut];
        bytes.extend(c.bytes);
        bytes
    };
    let session = || Client::handshake(0, true).open_channel(1);
    let publish_to = |c: Client, exchange: &str, key: &str, properties, body: &[u8]| {
        c.method(
            1,
            AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
                exchange: exchange.into(),
                routing_key: key.into(),
                mandatory: true,
                immediate: false,
            })),
        )
        .frame(&AMQPFrame::Header(
            1,
            AMQPContentHeader {
                class_id: 60,
                body_size: body.len() as u64,
                properties,
            },
        ))
        .raw(&[3, 0, 1])
        .raw(&(body.len() as u32).to_be_bytes())
        .raw(body)
        .raw(&[0xCE])
    };
    let consume = |c: Client, q: &str, no_ack: bool| {
        c.method(
            1,
            AMQPClass::Basic(basic::AMQPMethod::Consume(basic::Consume {
                queue: q.into(),
                consumer_tag: "c1".into(),
                no_local: false,
                no_ack,
                exclusive: false,
                nowait: false,
                arguments: FieldTable::default(),
            })),
        )
    };
    let get = |c: Client, q: &str| {
        c.method(
            1,
            AMQPClass::Basic(basic::AMQPMethod::Get(basic::Get {
                queue: q.into(),
                no_ack: false,
            })),
        )
    };
    let ack = |c: Client, tag: u64, multiple: bool| {
        c.method(
            1,
            AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack {
                delivery_tag: tag,
                multiple,
            })),
        )
    };
    let mut args = FieldTable::default();
    args.insert("x-max-priority".into(), AMQPValue::ShortShortUInt(5));
    args.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString("".into()),
    );
    args.insert(
        "x-dead-letter-routing-key".into(),
        AMQPValue::LongString("dlq".into()),
    );
    args.insert("x-message-ttl".into(), AMQPValue::LongInt(60_000));
    let declare_with = |c: Client, q: &str, exclusive: bool, arguments: FieldTable| {
        c.method(
            1,
            AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
                queue: q.into(),
                passive: false,
                durable: !exclusive,
                exclusive,
                auto_delete: exclusive,
                nowait: false,
                arguments,
            })),
        )
    };
    let mut seeds = vec![
        ("handshake", with(0, Client::handshake(0, false))),
        (
            "publish-get-ack",
            with(
                0,
                get(
                    publish_to(
                        session().declare(1, "q"),
                        "",
                        "q",
                        rich_properties(),
                        b"hello",
                    ),
                    "q",
                ),
            ),
        ),
        (
            "confirms",
            with(
                0,
                publish_to(
                    publish_to(
                        session().declare(1, "q").method(
                            1,
                            AMQPClass::Confirm(confirm::AMQPMethod::Select(confirm::Select {
                                nowait: false,
                            })),
                        ),
                        "",
                        "q",
                        AMQPProperties::default(),
                        b"one",
                    ),
                    "",
                    "nowhere",
                    AMQPProperties::default(),
                    b"two",
                ),
            ),
        ),
        (
            "consume",
            with(
                0,
                ack(
                    consume(
                        publish_to(
                            declare_with(session(), "w", false, args.clone()),
                            "",
                            "w",
                            AMQPProperties::default().with_priority(4),
                            b"job",
                        ),
                        "w",
                        false,
                    ),
                    1,
                    true,
                ),
            ),
        ),
        (
            "consume-no-ack-exclusive",
            with(
                3,
                consume(
                    publish_to(
                        declare_with(session(), "", true, FieldTable::default()),
                        "",
                        "amq.gen",
                        AMQPProperties::default(),
                        b"x",
                    ),
                    "",
                    true,
                ),
            ),
        ),
        (
            "exchanges",
            with(
                0,
                publish_to(
                    session()
                        .declare(1, "q")
                        .method(
                            1,
                            AMQPClass::Exchange(exchange::AMQPMethod::Declare(exchange::Declare {
                                exchange: "t".into(),
                                kind: "topic".into(),
                                passive: false,
                                durable: true,
                                auto_delete: false,
                                internal: false,
                                nowait: false,
                                arguments: FieldTable::default(),
                            })),
                        )
                        .method(
                            1,
                            AMQPClass::Queue(queue::AMQPMethod::Bind(queue::Bind {
                                queue: "q".into(),
                                exchange: "t".into(),
                                routing_key: "a.#".into(),
                                nowait: false,
                                arguments: FieldTable::default(),
                            })),
                        ),
                    "t",
                    "a.b",
                    AMQPProperties::default(),
                    b"routed",
                ),
            ),
        ),
        (
            "tx",
            with(
                0,
                publish_to(
                    session()
                        .declare(1, "q")
                        .method(1, AMQPClass::Tx(tx::AMQPMethod::Select(tx::Select {}))),
                    "",
                    "q",
                    AMQPProperties::default(),
                    b"in tx",
                )
                .method(1, AMQPClass::Tx(tx::AMQPMethod::Commit(tx::Commit {}))),
            ),
        ),
        (
            "nack-reject-qos",
            with(
                0,
                get(
                    publish_to(
                        session().declare(1, "q").method(
                            1,
                            AMQPClass::Basic(basic::AMQPMethod::Qos(basic::Qos {
                                prefetch_count: 1,
                                global: false,
                            })),
                        ),
                        "",
                        "q",
                        AMQPProperties::default(),
                        b"n",
                    ),
                    "q",
                )
                .method(
                    1,
                    AMQPClass::Basic(basic::AMQPMethod::Nack(basic::Nack {
                        delivery_tag: 1,
                        multiple: false,
                        requeue: false,
                    })),
                )
                .method(
                    1,
                    AMQPClass::Basic(basic::AMQPMethod::Reject(basic::Reject {
                        delivery_tag: 9,
                        requeue: true,
                    })),
                ),
            ),
        ),
        (
            "close",
            with(
                0,
                session()
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
                        AMQPClass::Connection(connection::AMQPMethod::Close(connection::Close {
                            reply_code: 200,
                            reply_text: "bye".into(),
                            class_id: 0,
                            method_id: 0,
                        })),
                    ),
            ),
        ),
        (
            "bad-login",
            with(
                0,
                Client::default().raw(framing::PROTOCOL_HEADER).method(
                    0,
                    AMQPClass::Connection(connection::AMQPMethod::StartOk(connection::StartOk {
                        client_properties: FieldTable::default(),
                        mechanism: "PLAIN".into(),
                        response: LongString::from(b"\0guest\0wrong".to_vec()),
                        locale: "en_US".into(),
                    })),
                ),
            ),
        ),
        (
            "oversized-frame",
            with(0, session().raw(&[1, 0, 1, 0x7f, 0, 0, 0])),
        ),
        (
            "bad-header",
            with(0, Client::default().raw(b"HTTP/1.1 GET /")),
        ),
    ];
    // An array 200 deep in a queue.declare's arguments: refused, never parsed.
    seeds.push((
        "deep-arguments",
        with(
            0,
            declare_with(session(), "q", false, {
                let mut t = FieldTable::default();
                let mut v = AMQPValue::Void;
                for _ in 0..200 {
                    v = AMQPValue::FieldArray(FieldArray::from(vec![v]));
                }
                t.insert("x-deep".into(), v);
                t
            }),
        ),
    ));
    seeds
        .into_iter()
        .map(|(name, bytes)| (format!("session-{name}"), bytes))
        .collect()
}

fn with_harness(f: impl FnOnce(&SessionHarness, &tokio::runtime::Runtime) + Send) {
    on_small_stack(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let shm = Path::new("/dev/shm");
        let base = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!(
            "weir-amqp-fuzz-replay-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let harness = runtime.block_on(SessionHarness::open(&dir));
        f(&harness, &runtime);
        runtime.block_on(harness.close());
        drop(runtime);
        let _ = std::fs::remove_dir_all(&dir);
    });
}

fn frames(out: &[u8]) -> Vec<Frame> {
    let mut buf = BytesMut::from(out);
    if buf.starts_with(b"AMQP") {
        let _ = buf.split_to(8);
    }
    let mut frames = Vec::new();
    while let Ok(Some(f)) = framing::next_frame(&mut buf, u32::MAX, usize::MAX) {
        frames.push(f);
    }
    frames
}

#[test]
fn message_seeds_deliver() {
    on_small_stack(|| {
        for (_, bytes) in message_seeds() {
            message(&bytes);
        }
    });
}

#[test]
fn session_seeds_reach_the_broker() {
    with_harness(|h, rt| {
        for (name, bytes) in session_seeds() {
            let out = rt.block_on(async {
                let out = h.session(&bytes).await;
                h.reset().await;
                out
            });
            let frames = frames(&out);
            let has = |class: u16, method: u16| {
                frames.iter().any(|f| match f {
                    Frame::Method(_, c) => {
                        (c.get_amqp_class_id(), c.get_amqp_method_id()) == (class, method)
                    }
                    _ => false,
                })
            };
            match name.as_str() {
                // The publish may still be on its way to the queue (get-empty).
                "session-publish-get-ack" => assert!(has(60, 71) || has(60, 72), "get"),
                // Confirms come once durable, and the session ends at the
                // client's EOF: select-ok at least.
                "session-confirms" => assert!(has(85, 11), "select-ok"),
                "session-exchanges" => assert!(has(50, 21), "bind-ok"),
                "session-tx" => assert!(has(90, 21), "commit-ok"),
                "session-close" => assert!(has(10, 51), "close-ok"),
                "session-bad-login" => assert!(has(10, 50), "close"),
                "session-deep-arguments" => assert!(has(20, 40), "channel.close"),
                _ => {}
            }
        }
    });
}

/// Every file the fuzzer kept (and the seeds) runs clean on every `cargo test`.
#[test]
fn the_message_and_session_corpora_replay() {
    let messages = read_corpus("message");
    assert!(messages.len() >= message_seeds().len());
    on_small_stack(|| {
        for bytes in &messages {
            message(bytes);
        }
    });
    let sessions = read_corpus("session");
    assert!(sessions.len() >= session_seeds().len());
    with_harness(|h, rt| {
        for bytes in &sessions {
            rt.block_on(async {
                h.session(bytes).await;
                h.reset().await;
            });
        }
    });
}

/// Writes the seeds into the corpora: `cargo test -p weir-amqp write_message_and_session_seeds
/// -- --ignored`.
#[test]
#[ignore = "writes fuzz/corpus/message and fuzz/corpus/session"]
fn write_message_and_session_seeds() {
    for (dir, seeds) in [
        (corpus("message"), message_seeds()),
        (corpus("session"), session_seeds()),
    ] {
        std::fs::create_dir_all(&dir).unwrap();
        for (name, bytes) in seeds {
            std::fs::write(dir.join(format!("seed-{name}")), bytes).unwrap();
        }
    }
}
