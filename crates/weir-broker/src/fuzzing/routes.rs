//! The `routing` target: exchanges and bindings declared, bound, unbound and
//! deleted as the API allows, messages routed and checked against a brute-force
//! model of RabbitMQ's routing, and the durable part written as
//! `meta/routing.json` and read back; or raw bytes read as `meta/routing.json`. The
//! model is kept apart from `crate::routing` on purpose: it shares no code with
//! what it checks.

use std::collections::{BTreeMap, BTreeSet};

use super::input::Input;
use crate::routing::file::{RoutingFile, load_router};
use crate::routing::topic::validate_pattern;
use crate::routing::{Binding, DestinationType, ExchangeOptions, ExchangeType, Router};

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

pub(super) fn name(input: &mut Input<'_>) -> String {
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

pub(super) fn binding(input: &mut Input<'_>) -> Binding {
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

/// Runs a [`routing`] program (see [`super`]) or, when the first byte is
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
pub(super) fn topic_matches(pattern: &str, key: &str) -> bool {
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
