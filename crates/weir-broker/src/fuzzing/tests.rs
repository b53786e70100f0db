//! The seeds of both targets, built by the code that reads them, and the tests that
//! replay `fuzz/corpus/queue_record` and `fuzz/corpus/routing` on every `cargo test`
//! (each input on a small stack, as the fuzzer runs it).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::input::Input;
use super::queue_logs::{LogRecord, NOW, QueueInput, queue_record};
use super::routes::{binding, name, routing, topic_matches};
use crate::api::{Backoff, DeadLetterInfo, DeadLetterReason, QueueOptions};
use crate::queue::record::{MessageMeta, SHARED, SettleReason, StateOp, Totals, encode_shared};
use crate::routing::{ExchangeOptions, ExchangeType, Router};

/// The stack every corpus input runs on, as in `fuzz/`: deep recursion shows.
const STACK: usize = 256 << 10;

fn corpus(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(name)
}

fn replay(name: &str, min: usize, run: fn(&[u8])) {
    let dir = corpus(name);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("the corpus exists") {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        std::thread::Builder::new()
            .stack_size(STACK)
            .spawn(move || run(&bytes))
            .unwrap()
            .join()
            .expect("the input ran clean");
        n += 1;
    }
    assert!(n >= min, "only {n} inputs in {}", dir.display());
}

fn message(id: &str, group: Option<&str>, not_before_ms: i64, moved: Option<u64>) -> LogRecord {
    let meta = MessageMeta {
        id: id.into(),
        priority: 1,
        not_before_ms,
        expires_at_ms: if id.ends_with('x') { NOW - 5 } else { 0 },
        group: group.map(str::to_owned),
        attempts: 0,
        moved_from: moved,
        enqueued_at_ms: NOW - 10_000,
        dead_letter: id.ends_with('d').then(|| DeadLetterInfo {
            reason: DeadLetterReason::MaxDeliveries,
            time_ms: NOW - 500,
            source_queue: "src".into(),
            delivery_count: 3,
            exchange: "dlx".into(),
            routing_keys: vec!["key".into()],
            deaths: vec![crate::api::Death {
                queue: "src".into(),
                reason: DeadLetterReason::MaxDeliveries,
                count: 2,
                exchange: String::new(),
                routing_keys: vec!["src".into()],
                time_ms: NOW - 900,
            }],
            first_death: crate::api::FirstDeath {
                queue: "src".into(),
                reason: DeadLetterReason::MaxDeliveries,
                exchange: String::new(),
            },
        }),
        shared_mark: 0,
    };
    LogRecord {
        shared: false,
        key: Some(meta.encode().to_vec()),
        body: format!("body of {id}").into_bytes(),
    }
}

fn shared(id: &str, destinations: &[u32]) -> LogRecord {
    let meta = MessageMeta {
        id: id.into(),
        enqueued_at_ms: NOW - 9_000,
        ..MessageMeta::default()
    };
    LogRecord {
        shared: true,
        key: Some(encode_shared(destinations, &meta).to_vec()),
        body: format!("shared {id}").into_bytes(),
    }
}

fn state(op: &StateOp) -> LogRecord {
    let (key, body) = op.encode();
    LogRecord {
        shared: false,
        key: Some(key.to_vec()),
        body: body.to_vec(),
    }
}

fn options(o: &QueueOptions) -> Vec<u8> {
    serde_json::to_vec(o).unwrap()
}

fn queue_seeds() -> Vec<(String, Vec<u8>)> {
    let plain = options(&QueueOptions::default());
    let rich = options(&QueueOptions {
        max_deliveries: Some(3),
        dead_letter_queue: Some("dlq".into()),
        retry_delay_ms: 1_000,
        retry_backoff: Backoff::Exponential,
        max_priority: 5,
        message_ttl_ms: Some(60_000),
        max_length: Some(10),
        dedup_window_ms: Some(60_000),
        ..QueueOptions::default()
    });
    let messages = || {
        vec![
            message("m0", None, 0, None),
            message("m1", Some("g"), 0, None),
            message("m2", Some("g"), NOW + 60_000, None),
            message("m3x", None, 0, None),
            message("m4d", None, 0, None),
        ]
    };
    let mut inputs = vec![
        ("empty", plain.clone(), Vec::new(), 0),
        ("messages", plain.clone(), messages(), 0),
        ("messages-rich", rich.clone(), messages(), 0),
    ];
    let mut delivered = messages();
    delivered.push(state(&StateOp::Delivered(vec![
        (0, 1),
        (1, 2),
        (SHARED, 1),
    ])));
    delivered.push(state(&StateOp::Retry(vec![(1, 2, NOW + 5_000)])));
    delivered.push(state(&StateOp::Settled(SettleReason::Acked, vec![0, 3])));
    delivered.push(message("m5", None, 0, Some(4)));
    inputs.push(("delivered", rich.clone(), delivered.clone(), 0));
    inputs.push(("delivered-plain", plain.clone(), delivered, 0));
    let mut checkpointed = messages();
    checkpointed.push(state(&StateOp::Settled(SettleReason::Acked, vec![0, 1])));
    checkpointed.push(state(&StateOp::Totals {
        below: 2,
        shared_below: SHARED | 1,
        totals: Totals {
            sent: 2,
            acked: 2,
            ..Totals::default()
        },
    }));
    checkpointed.push(state(&StateOp::Dedup(vec![(NOW + 30_000, "m0".into())])));
    checkpointed.push(state(&StateOp::Duplicates(3)));
    checkpointed.push(state(&StateOp::Declined(vec![SHARED | 2])));
    inputs.push(("checkpointed", rich.clone(), checkpointed.clone(), 2));
    inputs.push(("checkpointed-untrimmed", rich.clone(), checkpointed, 0));
    let mut with_shared = vec![
        shared("s0", &[0]),
        shared("s1", &[0, 1]),
        shared("s2", &[1]),
        shared("s3", &[0]),
    ];
    with_shared.extend(messages());
    with_shared.push(state(&StateOp::Delivered(vec![
        (SHARED, 1),
        (SHARED | 1, 4),
    ])));
    with_shared.push(state(&StateOp::Settled(
        SettleReason::Expired,
        vec![SHARED | 3],
    )));
    inputs.push(("shared", rich.clone(), with_shared.clone(), 0));
    inputs.push(("shared-plain", plain.clone(), with_shared, 0));
    let mut odd = messages();
    odd.push(LogRecord {
        shared: false,
        key: None,
        body: b"no key".to_vec(),
    });
    odd.push(LogRecord {
        shared: false,
        key: Some(vec![3, 1]),
        body: Vec::new(),
    });
    odd.push(shared("misplaced", &[0]));
    odd.last_mut().unwrap().shared = false;
    inputs.push(("odd", plain, odd, 1));
    inputs
        .into_iter()
        .map(|(name, options, records, trim)| {
            let input = QueueInput {
                trim,
                options,
                records,
            };
            (format!("queue-{name}"), input.encode())
        })
        .collect()
}

/// Routing programs (see [`routing`]): declare, bind, route, reload.
fn routing_seeds() -> Vec<(String, Vec<u8>)> {
    // Ops: 0 declare(name, flags[, alternate]), 1 bind / 2 unbind (kind,
    // source, destination, key, headers), 3 delete, 4 remove destination,
    // 5 route(exchange, key, headers), 6 reload.
    let key = |words: &[u8]| {
        let mut out = vec![words.len() as u8];
        out.extend_from_slice(words);
        out
    };
    let mut topic = vec![0, 0, 1 | 4, 0, 1, 1 | 4];
    // bind a -> q1 "a.*", a -> q2 "#.b", b -> q1 "#"; a -> b (exchange) "a.#"
    for (kind, src, dst, k) in [
        (0, 0, 4, key(&[2, 0])),
        (0, 0, 5, key(&[1, 3])),
        (0, 1, 4, key(&[1])),
        (1, 0, 1, key(&[2, 1])),
    ] {
        topic.extend([1, kind, src, dst]);
        topic.extend(k);
        topic.push(0);
    }
    for k in [key(&[2, 3]), key(&[2, 6, 3]), key(&[]), key(&[5])] {
        topic.extend([5, 0]);
        topic.extend(k);
        topic.push(0);
    }
    topic.push(6);
    let mut headers = vec![0, 2, 3 | 4];
    // h(c) -> q1 with x-match any, format=pdf; -> q2 all, type=1
    headers.extend([1, 0, 2, 4, 0, 2, 0, 1, 1, 5]);
    headers.extend([1, 0, 2, 5, 0, 2, 0, 0, 2, 6]);
    headers.extend([5, 2, 0, 1, 1, 5]);
    headers.extend([5, 2, 0, 2, 1, 5, 2, 6]);
    headers.push(6);
    let mut alternate = vec![0, 3, 2 | 4, 0, 0, 4 | 32, 3];
    alternate.extend([1, 0, 3, 4, 0, 0]);
    alternate.extend([1, 0, 0, 5, 1, 2, 0]);
    alternate.extend([5, 0, 1, 2, 0]);
    alternate.extend([5, 0, 1, 3, 0]);
    alternate.extend([3, 3, 1, 5, 0, 1, 2, 0, 4, 0, 4, 6]);
    let mut direct = vec![0, 1, 4 | 8];
    direct.extend([1, 0, 1, 4, 1, 2, 0, 1, 0, 6, 5, 1, 1, 2, 0]);
    direct.extend([2, 0, 1, 4, 1, 2, 0, 5, 1, 1, 2, 0, 6]);
    let json = serde_json::to_vec(&serde_json::json!({
        "exchanges": [
            {"name": "a", "type": "topic", "durable": true},
            {"name": "b", "type": "headers", "alternate_exchange": "a"},
        ],
        "bindings": [
            {"source": "a", "destination": "q1", "routing_key": "a.*"},
            {"source": "b", "destination": "q2", "arguments": {"x-match": "any", "k": "1"}},
            {"source": "a", "destination": "b", "destination_type": "exchange", "routing_key": "#"},
        ],
    }))
    .unwrap();
    vec![
        ("routing-topic".into(), topic),
        ("routing-headers".into(), headers),
        ("routing-alternate".into(), alternate),
        ("routing-direct".into(), direct),
        ("routing-json".into(), json),
        ("routing-json-empty".into(), b"{}".to_vec()),
    ]
}

#[test]
fn seeds_run_and_reach_what_they_are_for() {
    for (name, bytes) in queue_seeds() {
        let parsed = QueueInput::parse(&bytes);
        assert_eq!(parsed.encode(), bytes, "{name}");
        queue_record(&bytes);
    }
    for (_, bytes) in routing_seeds() {
        routing(&bytes);
    }
    // The topic seed routes somewhere: its bindings went in.
    let (_, topic) = &routing_seeds()[0];
    let mut input = Input(topic);
    let mut router = Router::default();
    while !input.is_empty() {
        match input.u8() % 7 {
            0 => {
                let n = name(&mut input);
                let _ = input.u8();
                router
                    .declare(&n, ExchangeOptions::of(ExchangeType::Topic))
                    .unwrap();
            }
            1 => {
                router.bind(binding(&mut input)).unwrap();
            }
            _ => break,
        }
    }
    let routed = router
        .route("a", "a.b", &BTreeMap::new(), |_| true)
        .unwrap();
    assert_eq!(routed.queues.len(), 2);
}

#[test]
fn the_model_matches_topics_as_the_reference_does() {
    let words = ["a", "b", "*", "#", ""];
    let mut patterns = vec![String::new()];
    for _ in 0..4 {
        let longer: Vec<String> = patterns
            .iter()
            .flat_map(|p| words.iter().map(move |w| format!("{p}.{w}")))
            .collect();
        patterns.extend(longer);
    }
    for pattern in &patterns {
        for key in patterns.iter().filter(|k| !k.contains(['*', '#'])) {
            assert_eq!(
                topic_matches(pattern, key),
                crate::routing::topic::pattern_matches(pattern, key),
                "{pattern:?} {key:?}"
            );
        }
    }
}

/// Every file the fuzzer kept (and the seeds) runs clean on every `cargo test`.
#[test]
fn the_fuzz_corpora_replay() {
    replay("queue_record", queue_seeds().len(), queue_record);
    replay("routing", routing_seeds().len(), routing);
}

/// Writes the seeds into the corpora: `cargo test -p weir-broker write_seeds --
/// --ignored`.
#[test]
#[ignore = "writes fuzz/corpus/queue_record and fuzz/corpus/routing"]
fn write_seeds() {
    for (dir, seeds) in [
        (corpus("queue_record"), queue_seeds()),
        (corpus("routing"), routing_seeds()),
    ] {
        std::fs::create_dir_all(&dir).unwrap();
        for (name, bytes) in seeds {
            std::fs::write(dir.join(format!("seed-{name}")), bytes).unwrap();
        }
    }
}
