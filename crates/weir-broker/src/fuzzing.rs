//! Entry points for the fuzz targets in `fuzz/` (cargo fuzz), and for the tests that
//! replay their corpora (`fuzz/corpus/queue_record`, `fuzz/corpus/routing`) on every
//! `cargo test`.
//!
//! * [`queue_record`]: a queue's log as recovery finds it: options as stored in
//!   `queue.json`, then records for the queue's own log and the shared log, each
//!   decoded (what decodes must encode and decode to the same), replayed into a
//!   queue state as the broker does at start, and then delivered, acked, nacked,
//!   released and expired.
//! * [`routing`]: exchanges and bindings declared, bound, unbound and deleted as the
//!   API allows, messages routed and checked against a brute-force model, and the
//!   durable part written as `meta/routing.json` and read back; or raw bytes read
//!   as `meta/routing.json`.
//!
//! Nothing here is used by the broker itself.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use bytes::Bytes;
use weir_log::fuzzing::block_on;
use weir_log::{LogConfig, MemLog, MessageLog, NewRecord, Offset};

use crate::api::QueueOptions;
use crate::exchanges::{RoutingFile, load_router};
use crate::queue::record::{self, Decoded, encode_shared};
use crate::queue::replay::{Arrivals, Wanted, finish, replay_own, scan_shared};
use crate::queue::state::{Acked, QueueState, format_receipt};
use crate::routing::topic::validate_pattern;
use crate::routing::{Binding, DestinationType, ExchangeOptions, ExchangeType, Router};

/// The time replay and delivery run at, ms since the epoch.
const NOW: i64 = 1_700_000_000_000;

/// A cursor over fuzz input that yields zeros once it runs out.
struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    fn bytes(&mut self, len: usize) -> &'a [u8] {
        let (taken, rest) = self.0.split_at(len.min(self.0.len()));
        self.0 = rest;
        taken
    }

    /// A string of up to 255 bytes (lossy UTF-8).
    fn string(&mut self) -> String {
        let len = usize::from(self.u8());
        String::from_utf8_lossy(self.bytes(len)).into_owned()
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// One record of a [`queue_record`] input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogRecord {
    /// In the shared log rather than the queue's own.
    pub shared: bool,
    /// The record key (`None`: no key).
    pub key: Option<Vec<u8>>,
    /// The record body.
    pub body: Vec<u8>,
}

/// A [`queue_record`] input, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueInput {
    /// Records of the own log below this are trimmed away before replay.
    pub trim: u8,
    /// `queue.json` (the default options when it does not parse).
    pub options: Vec<u8>,
    /// The records, in log order.
    pub records: Vec<LogRecord>,
}

impl QueueInput {
    /// `[trim u8][options len u16 LE][options]`, then records, each `[flags u8:
    /// bit 0 shared, bit 1 keyed][key len u8][key][body len u16 LE][body]`.
    pub fn parse(data: &[u8]) -> QueueInput {
        let mut input = Input(data);
        let trim = input.u8();
        let len = usize::from(input.u16());
        let options = input.bytes(len).to_vec();
        let mut records = Vec::new();
        while !input.is_empty() {
            let flags = input.u8();
            let key_len = usize::from(input.u8());
            let key = input.bytes(key_len).to_vec();
            let body_len = usize::from(input.u16());
            let body = input.bytes(body_len).to_vec();
            records.push(LogRecord {
                shared: flags & 1 != 0,
                key: (flags & 2 != 0).then_some(key),
                body,
            });
        }
        QueueInput {
            trim,
            options,
            records,
        }
    }

    /// The bytes [`QueueInput::parse`] reads back as `self` (keys are cut to 255
    /// bytes, bodies to 65,535).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![self.trim];
        let options = &self.options[..self.options.len().min(usize::from(u16::MAX))];
        out.extend_from_slice(&(options.len() as u16).to_le_bytes());
        out.extend_from_slice(options);
        for r in &self.records {
            let key = r.key.as_deref().unwrap_or_default();
            let key = &key[..key.len().min(255)];
            let body = &r.body[..r.body.len().min(usize::from(u16::MAX))];
            out.push(u8::from(r.shared) | (u8::from(r.key.is_some()) << 1));
            out.push(key.len() as u8);
            out.extend_from_slice(key);
            out.extend_from_slice(&(body.len() as u16).to_le_bytes());
            out.extend_from_slice(body);
        }
        out
    }
}

/// Decodes one record, and checks that what decodes encodes to the same.
fn decode_checked(key: Option<&[u8]>, body: &[u8]) {
    match record::decode(key, body) {
        Ok(Decoded::Message(meta)) => {
            let again = meta.encode();
            match record::decode(Some(&again), &[]) {
                Ok(Decoded::Message(back)) => assert_eq!(back, meta, "message key round trip"),
                other => panic!("a message key encoded again decodes as {other:?}"),
            }
        }
        Ok(Decoded::State(op)) => {
            let (k, b) = op.encode();
            match record::decode(Some(&k), &b) {
                Ok(Decoded::State(back)) => assert_eq!(back, op, "state record round trip"),
                other => panic!("a state record encoded again decodes as {other:?}"),
            }
        }
        Ok(Decoded::Shared(destinations, meta)) => {
            let again = encode_shared(&destinations, &meta);
            match record::decode(Some(&again), &[]) {
                Ok(Decoded::Shared(d, m)) => {
                    assert_eq!((d, m), (destinations, meta), "shared key round trip");
                }
                other => panic!("a shared key encoded again decodes as {other:?}"),
            }
        }
        Err(_) => {}
    }
}

/// Replays a queue's logs made of `data` (see the module doc).
///
/// # Panics
///
/// When a record that decodes does not decode the same after encoding it again.
pub fn queue_record(data: &[u8]) {
    let input = QueueInput::parse(data);
    for r in &input.records {
        decode_checked(r.key.as_deref(), &r.body);
    }
    let options: QueueOptions = serde_json::from_slice(&input.options).unwrap_or_default();
    let config = LogConfig {
        max_record_bytes: 1 << 20,
        max_batch_bytes: 2 << 20,
        ..LogConfig::default()
    };
    let own = MemLog::new(config.clone());
    let shared = MemLog::new(config);
    for (i, r) in input.records.iter().enumerate() {
        let log = if r.shared { &shared } else { &own };
        let record = NewRecord {
            timestamp_ms: Some(NOW - 1_000 + i64::try_from(i).unwrap_or(0)),
            key: r.key.clone().map(Bytes::from),
            headers: Vec::new(),
            body: Bytes::from(r.body.clone()),
        };
        block_on(log.append_batch(&[record])).expect("an in-memory append");
    }
    let trim = u64::from(input.trim).min(own.next_offset().0);
    block_on(own.trim_before(Offset(trim))).expect("an in-memory trim");

    let mut state = QueueState::new(options, 1);
    let replayed = block_on(replay_own(&own, &mut state, "fuzz", NOW)).expect("replay reads");
    let wanted = Wanted {
        from: replayed.shared_below,
        ids: state.options().dedup_window_ms.is_some(),
    };
    let arrivals = block_on(scan_shared(&shared, &HashMap::from([(0, wanted)])))
        .expect("the shared scan reads")
        .remove(&0)
        .unwrap_or_else(Arrivals::default);
    let _ = finish(replayed, arrivals, &mut state, NOW);

    // Deliver what was restored, and settle it every way there is.
    let mut now = NOW;
    for round in 0..4 {
        let (leased, _) = state.lease(64, 30_000, now);
        let mut acked = Vec::new();
        for (i, (entry, lease)) in leased.into_iter().enumerate() {
            let receipt = format_receipt(entry.offset, lease);
            match (i + round) % 4 {
                0 => {
                    if let Ok(Acked::Now(_)) = state.ack("fuzz", &receipt) {
                        acked.push(entry.offset);
                    }
                }
                1 => {
                    let _ = state.nack("fuzz", &receipt, true, None, now);
                }
                2 => {
                    let _ = state.nack("fuzz", &receipt, false, None, now);
                }
                _ => state.release(entry.offset, lease),
            }
        }
        state.acks_written(&acked, true);
        now = now.saturating_add(3_600_000);
        let _ = state.tick(now);
    }
    let _ = state.stats(0, now);
    let _ = state.floor(own.next_offset().0);
    let _ = state.purge();
}

/// Exchange and queue names a [`routing`] input picks from: ordinary ones, the
/// built-in exchanges, the default exchange and names the API refuses.
const NAMES: [&str; 12] = [
    "a",
    "b",
    "c",
    "d",
    "q1",
    "q2",
    "amq.direct",
    "amq.topic",
    "amq.headers",
    "amq.fanout",
    "",
    "amq.x",
];

/// Words routing keys and patterns are made of.
const WORDS: [&str; 8] = ["*", "#", "a", "b", "c", "", "ab", "x-y"];

/// Header names bindings and messages pick from.
const HEADERS: [&str; 6] = ["x-match", "format", "type", "x-tenant", "k", ""];

/// Header values (`x-match` takes the first five).
const VALUES: [&str; 8] = [
    "all",
    "any",
    "all-with-x",
    "any-with-x",
    "most",
    "pdf",
    "1",
    "",
];

fn name(input: &mut Input<'_>) -> String {
    NAMES[usize::from(input.u8()) % NAMES.len()].to_owned()
}

/// A key or pattern: up to 16 words from [`WORDS`], or (tag 255) raw bytes.
fn key(input: &mut Input<'_>) -> String {
    let n = input.u8();
    if n == 255 {
        return input.string();
    }
    let words: Vec<&str> = (0..n % 17)
        .map(|_| WORDS[usize::from(input.u8()) % WORDS.len()])
        .collect();
    words.join(".")
}

fn headers(input: &mut Input<'_>) -> BTreeMap<String, String> {
    (0..input.u8() % 5)
        .map(|_| {
            let k = HEADERS[usize::from(input.u8()) % HEADERS.len()];
            let v = VALUES[usize::from(input.u8()) % VALUES.len()];
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

fn binding(input: &mut Input<'_>) -> Binding {
    let kind = input.u8();
    Binding {
        source: name(input),
        destination: name(input),
        destination_type: if kind & 1 == 0 {
            DestinationType::Queue
        } else {
            DestinationType::Exchange
        },
        routing_key: key(input),
        arguments: headers(input),
    }
}

/// Runs a [`routing`] program (see the module doc) or, when the first byte is
/// `b'{'`, reads the input as `meta/routing.json`.
///
/// # Panics
///
/// When a route differs from the model's, or the router read back from its
/// durable part routes differently.
pub fn routing(data: &[u8]) {
    if data.first() == Some(&b'{') {
        let mut router = Router::default();
        if let Ok(file) = serde_json::from_slice::<RoutingFile>(data) {
            let _ = load_router(&mut router, file, |_| true);
        }
        check_routes(&router, &mut Input(b"\x05a\x03a.b.c\x02\x01\x05\x02"));
        return;
    }
    let mut input = Input(data);
    let mut router = Router::default();
    while !input.is_empty() {
        match input.u8() % 7 {
            0 => {
                let exchange = name(&mut input);
                let flags = input.u8();
                let kind = [
                    ExchangeType::Direct,
                    ExchangeType::Topic,
                    ExchangeType::Fanout,
                    ExchangeType::Headers,
                ][usize::from(flags & 3)];
                let alternate = (flags & 32 != 0).then(|| name(&mut input));
                let options = ExchangeOptions {
                    kind,
                    durable: flags & 4 != 0,
                    auto_delete: flags & 8 != 0,
                    internal: flags & 16 != 0,
                    alternate_exchange: alternate,
                };
                let _ = router.declare(&exchange, options);
            }
            1 => {
                let _ = router.bind(binding(&mut input));
            }
            2 => {
                let _ = router.unbind(&binding(&mut input));
            }
            3 => {
                let exchange = name(&mut input);
                let _ = router.delete(&exchange, input.u8() & 1 == 0);
            }
            4 => {
                let kind = if input.u8() & 1 == 0 {
                    DestinationType::Queue
                } else {
                    DestinationType::Exchange
                };
                let _ = router.remove_destination(kind, &name(&mut input));
            }
            5 => check_routes(&router, &mut input),
            _ => check_reload(&router),
        }
    }
    check_reload(&router);
}

/// Routes one message as a publish would and compares with [`model_route`].
fn check_routes(router: &Router, input: &mut Input<'_>) {
    let exchange = name(input);
    let key = key(input);
    let headers = headers(input);
    // What a publish checks first.
    if validate_pattern(&key).is_err() {
        return;
    }
    let routed = router.route(&exchange, &key, &headers, |q| q.starts_with('q'));
    let model = model_route(router, &exchange, &key, &headers);
    match (routed, model) {
        (Ok(routed), Some((queues, via_alternate))) => {
            assert_eq!(
                (routed.queues, routed.via_alternate),
                (queues, via_alternate),
                "routing {exchange:?} {key:?} {headers:?}"
            );
        }
        (Err(_), None) => {}
        (routed, model) => {
            panic!("routing {exchange:?} {key:?}: {routed:?} but the model says {model:?}")
        }
    }
}

/// RabbitMQ's routing, by brute force over the bindings: the queues reached and
/// whether the alternate exchange was taken; `None` if the exchange does not exist.
fn model_route(
    router: &Router,
    exchange: &str,
    key: &str,
    headers: &BTreeMap<String, String>,
) -> Option<(BTreeSet<String>, bool)> {
    if exchange.is_empty() {
        let queues = if key.starts_with('q') {
            BTreeSet::from([key.to_owned()])
        } else {
            BTreeSet::new()
        };
        return Some((queues, false));
    }
    router.options(exchange)?;
    let bindings = router.bindings(None, None);
    let mut visited = BTreeSet::new();
    let mut queues = BTreeSet::new();
    let walk = |start: &str, visited: &mut BTreeSet<String>, queues: &mut BTreeSet<String>| {
        let mut stack = vec![start.to_owned()];
        while let Some(name) = stack.pop() {
            if !visited.insert(name.clone()) {
                continue;
            }
            let Some(options) = router.options(&name) else {
                continue;
            };
            for b in bindings.iter().filter(|b| b.source == name) {
                if binding_matches(options.kind, b, key, headers) {
                    match b.destination_type {
                        DestinationType::Queue => {
                            queues.insert(b.destination.clone());
                        }
                        DestinationType::Exchange => stack.push(b.destination.clone()),
                    }
                }
            }
        }
    };
    walk(exchange, &mut visited, &mut queues);
    let mut via_alternate = false;
    let mut alternates = BTreeSet::new();
    let mut current = exchange.to_owned();
    while queues.is_empty() {
        let Some(ae) = router
            .options(&current)
            .and_then(|o| o.alternate_exchange.clone())
            .filter(|ae| router.options(ae).is_some())
        else {
            break;
        };
        if !alternates.insert(ae.clone()) {
            break;
        }
        via_alternate = true;
        walk(&ae, &mut visited, &mut queues);
        current = ae;
    }
    Some((queues, via_alternate))
}

fn binding_matches(
    kind: ExchangeType,
    b: &Binding,
    key: &str,
    headers: &BTreeMap<String, String>,
) -> bool {
    match kind {
        ExchangeType::Direct => b.routing_key == key,
        ExchangeType::Fanout => true,
        ExchangeType::Topic => topic_matches(&b.routing_key, key),
        ExchangeType::Headers => {
            let (any, with_x) = match b.arguments.get("x-match").map(String::as_str) {
                Some("any") => (true, false),
                Some("all-with-x") => (false, true),
                Some("any-with-x") => (true, true),
                _ => (false, false),
            };
            let wanted: Vec<_> = b
                .arguments
                .iter()
                .filter(|(k, _)| *k != "x-match" && (with_x || !k.starts_with("x-")))
                .collect();
            if wanted.is_empty() {
                return !any;
            }
            let hit = |(k, v): &(&String, &String)| headers.get(*k) == Some(*v);
            if any {
                wanted.iter().any(hit)
            } else {
                wanted.iter().all(hit)
            }
        }
    }
}

/// Whether a topic pattern matches a key: `*` one word, `#` zero or more, by
/// dynamic programming over (pattern word, key word), so any number of `#` costs
/// the product of the lengths (the crate's `pattern_matches` is exponential in
/// them).
fn topic_matches(pattern: &str, key: &str) -> bool {
    let p: Vec<&str> = pattern.split('.').collect();
    let k: Vec<&str> = key.split('.').collect();
    // matches[j]: the pattern from word i on matches the key from word j on.
    let mut matches = vec![false; k.len() + 1];
    matches[k.len()] = true;
    for word in p.iter().rev() {
        let mut row = vec![false; k.len() + 1];
        for j in (0..=k.len()).rev() {
            row[j] = match *word {
                "#" => matches[j] || (j < k.len() && row[j + 1]),
                "*" => j < k.len() && matches[j + 1],
                w => j < k.len() && k[j] == w && matches[j + 1],
            };
        }
        matches = row;
    }
    matches[0]
}

/// Writes the durable part of `router` as `meta/routing.json` is written, reads it
/// back as the broker does at start, and checks the two route alike.
fn check_reload(router: &Router) {
    let json = serde_json::to_vec(&RoutingFile::of(router)).expect("routing.json renders");
    let file: RoutingFile = serde_json::from_slice(&json).expect("routing.json parses back");
    let mut reloaded = Router::default();
    load_router(&mut reloaded, file, |_| true).expect("a written routing.json loads");
    assert_eq!(
        reloaded.durable(),
        router.durable(),
        "the durable routing after a reload"
    );
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;
    use crate::api::{Backoff, DeadLetterInfo, DeadLetterReason};
    use crate::queue::record::{MessageMeta, SHARED, SettleReason, StateOp, Totals};

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
}
