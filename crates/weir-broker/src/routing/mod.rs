//! Exchanges and bindings: where a published message goes.
//!
//! The [`Router`] is plain data (no I/O): the exchanges with their options and their
//! bindings, indexed per type so a publish costs time in what it matches, not in the
//! number of bindings (`direct`: a hash map by key; `topic`: a [`topic::TopicTrie`];
//! `fanout`: a set; `headers`: a list, since header matching is by argument set).
//! The broker keeps one behind a lock held only for these in-memory lookups and
//! persists it to `meta/` on every change.

pub(crate) mod file;
pub mod topic;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use crate::api::validate_name;
use crate::error::{BrokerError, Kind, Result};
use topic::TopicTrie;

/// How an exchange routes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExchangeType {
    /// Exact routing key.
    Direct,
    /// Dot-separated words with `*` (one word) and `#` (zero or more).
    Topic,
    /// Every binding, key ignored.
    Fanout,
    /// Header values against binding arguments (`x-match`).
    Headers,
}

/// An exchange's settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExchangeOptions {
    /// Its type.
    #[serde(rename = "type")]
    pub kind: ExchangeType,
    /// Kept across restarts (with its bindings to durable destinations).
    #[serde(default = "yes")]
    pub durable: bool,
    /// Deleted when its last binding (as a source) is removed.
    #[serde(default)]
    pub auto_delete: bool,
    /// Messages that route nowhere go here instead.
    #[serde(default)]
    pub alternate_exchange: Option<String>,
    /// Clients may not publish to it: it gets messages only through bindings from
    /// other exchanges and as a dead-letter exchange (RabbitMQ's `internal`).
    #[serde(default)]
    pub internal: bool,
}

fn yes() -> bool {
    true
}

/// What a binding points at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DestinationType {
    /// A queue.
    Queue,
    /// Another exchange.
    Exchange,
}

/// A binding: messages of `source` that match go to `destination`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Binding {
    /// The exchange it routes from.
    pub source: String,
    /// The queue or exchange it routes to.
    pub destination: String,
    /// Whether `destination` is a queue or an exchange.
    #[serde(default = "queue_destination")]
    pub destination_type: DestinationType,
    /// The key (direct), pattern (topic); ignored by fanout and headers.
    #[serde(default)]
    pub routing_key: String,
    /// Header arguments (headers exchanges): `x-match` and the values to match.
    #[serde(default)]
    pub arguments: BTreeMap<String, String>,
}

fn queue_destination() -> DestinationType {
    DestinationType::Queue
}

type Dest = (DestinationType, String);

/// One exchange and its bindings.
#[derive(Clone, Debug)]
struct Exchange {
    options: ExchangeOptions,
    bindings: BTreeSet<Binding>,
    direct: HashMap<String, BTreeSet<Dest>>,
    topic: TopicTrie<Dest>,
    fanout: BTreeSet<Dest>,
    headers: Vec<(HeaderMatch, Dest)>,
}

/// A parsed headers-binding.
#[derive(Clone, Debug, PartialEq, Eq)]
struct HeaderMatch {
    any: bool,
    with_x: bool,
    wanted: BTreeMap<String, String>,
}

impl HeaderMatch {
    fn parse(arguments: &BTreeMap<String, String>) -> Result<HeaderMatch> {
        let (any, with_x) = match arguments.get("x-match").map(String::as_str) {
            None | Some("all") => (false, false),
            Some("any") => (true, false),
            Some("all-with-x") => (false, true),
            Some("any-with-x") => (true, true),
            Some(other) => {
                return Err(BrokerError::invalid(
                    "arguments.x-match",
                    format!("'{other}' is not all, any, all-with-x or any-with-x"),
                ));
            }
        };
        Ok(HeaderMatch {
            any,
            with_x,
            wanted: arguments
                .iter()
                .filter(|(k, _)| *k != "x-match")
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        })
    }

    fn matches(&self, headers: &BTreeMap<String, String>) -> bool {
        let mut considered = self
            .wanted
            .iter()
            .filter(|(k, _)| self.with_x || !k.starts_with("x-"))
            .peekable();
        if considered.peek().is_none() {
            // No argument to compare: `all` of nothing holds, `any` of nothing not.
            return !self.any;
        }
        let mut hits = considered.map(|(k, v)| headers.get(k) == Some(v));
        if self.any {
            hits.any(|h| h)
        } else {
            hits.all(|h| h)
        }
    }
}

impl Exchange {
    fn new(options: ExchangeOptions) -> Exchange {
        Exchange {
            options,
            bindings: BTreeSet::new(),
            direct: HashMap::new(),
            topic: TopicTrie::default(),
            fanout: BTreeSet::new(),
            headers: Vec::new(),
        }
    }

    fn index(&mut self, b: &Binding) -> Result<()> {
        let dest = (b.destination_type, b.destination.clone());
        match self.options.kind {
            ExchangeType::Direct => {
                self.direct
                    .entry(b.routing_key.clone())
                    .or_default()
                    .insert(dest);
            }
            ExchangeType::Topic => {
                self.topic.insert(&b.routing_key, dest);
            }
            ExchangeType::Fanout => {
                self.fanout.insert(dest);
            }
            ExchangeType::Headers => {
                self.headers.push((HeaderMatch::parse(&b.arguments)?, dest));
            }
        }
        Ok(())
    }

    /// Takes `b` (already removed from `bindings`) out of the index, unless another
    /// binding still routes the same key to the same destination (they may differ
    /// in arguments only).
    fn unindex(&mut self, b: &Binding) {
        let dest = (b.destination_type, b.destination.clone());
        let same_route = |o: &Binding| {
            o.destination_type == b.destination_type
                && o.destination == b.destination
                && o.routing_key == b.routing_key
        };
        if matches!(
            self.options.kind,
            ExchangeType::Direct | ExchangeType::Topic
        ) && self.bindings.iter().any(same_route)
        {
            return;
        }
        match self.options.kind {
            ExchangeType::Direct => {
                if let Some(set) = self.direct.get_mut(&b.routing_key) {
                    set.remove(&dest);
                    if set.is_empty() {
                        self.direct.remove(&b.routing_key);
                    }
                }
            }
            ExchangeType::Topic => {
                self.topic.remove(&b.routing_key, &dest);
            }
            ExchangeType::Fanout => {
                // Several fanout bindings may differ only by key: keep the
                // destination while any remains.
                let still = self.bindings.iter().any(|o| {
                    o.destination_type == b.destination_type && o.destination == b.destination
                });
                if !still {
                    self.fanout.remove(&dest);
                }
            }
            ExchangeType::Headers => {
                if let Ok(m) = HeaderMatch::parse(&b.arguments)
                    && let Some(pos) = self
                        .headers
                        .iter()
                        .position(|(hm, d)| *hm == m && *d == dest)
                {
                    self.headers.remove(pos);
                }
            }
        }
    }

    /// Calls `found` with every destination a message with `key` and `headers`
    /// matches (borrowed: nothing is cloned per message).
    fn matching<'a>(
        &'a self,
        key: &str,
        headers: &BTreeMap<String, String>,
        mut found: impl FnMut(&'a Dest),
    ) {
        match self.options.kind {
            ExchangeType::Direct => self.direct.get(key).into_iter().flatten().for_each(found),
            ExchangeType::Topic => self.topic.matches(key).into_iter().for_each(found),
            ExchangeType::Fanout => self.fanout.iter().for_each(found),
            ExchangeType::Headers => self
                .headers
                .iter()
                .filter(|(m, _)| m.matches(headers))
                .for_each(|(_, d)| found(d)),
        }
    }
}

/// Where one message went.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Routed {
    /// The queues it reaches, each once.
    pub queues: BTreeSet<String>,
    /// True if it reached no queue through the exchange's own bindings and went
    /// to the alternate exchange (whether that found a queue or not).
    pub via_alternate: bool,
}

/// Every exchange and binding (see the module documentation).
#[derive(Clone, Debug)]
pub struct Router {
    exchanges: HashMap<String, Exchange>,
}

/// RabbitMQ's built-in exchanges: always there, durable, never declared anew,
/// deleted or written to `routing.json`; bindings to and from them are ordinary.
pub const BUILT_IN_EXCHANGES: [(&str, ExchangeType); 5] = [
    ("amq.direct", ExchangeType::Direct),
    ("amq.fanout", ExchangeType::Fanout),
    ("amq.topic", ExchangeType::Topic),
    ("amq.headers", ExchangeType::Headers),
    ("amq.match", ExchangeType::Headers),
];

/// Whether `name` (broker-wide, [`crate::vhost`]) is one of [`BUILT_IN_EXCHANGES`]
/// of its vhost.
pub fn is_built_in(name: &str) -> bool {
    let (_, name) = crate::names::split(name);
    BUILT_IN_EXCHANGES.iter().any(|(n, _)| *n == name)
}

/// The options of built-in exchange `name` (broker-wide), if it is one.
pub(crate) fn built_in_options(name: &str) -> Option<ExchangeOptions> {
    let (_, local) = crate::names::split(name);
    BUILT_IN_EXCHANGES
        .iter()
        .find(|(n, _)| *n == local)
        .map(|(_, kind)| ExchangeOptions::of(*kind))
}

impl ExchangeOptions {
    /// A plain exchange of `kind`: durable, kept when unbound, no alternate
    /// exchange, open to publishers.
    pub fn of(kind: ExchangeType) -> ExchangeOptions {
        ExchangeOptions {
            kind,
            durable: true,
            auto_delete: false,
            alternate_exchange: None,
            internal: false,
        }
    }
}

impl Default for Router {
    fn default() -> Self {
        let exchanges = BUILT_IN_EXCHANGES
            .iter()
            .map(|(name, kind)| {
                (
                    (*name).to_owned(),
                    Exchange::new(ExchangeOptions::of(*kind)),
                )
            })
            .collect();
        Router { exchanges }
    }
}

/// A name that may be the source or destination of a binding: a built-in exchange
/// or a valid name.
fn check_bindable(name: &str) -> Result<()> {
    if is_built_in(name) {
        return Ok(());
    }
    validate_exchange_name(name)
}

fn exchange_not_found(name: &str) -> BrokerError {
    BrokerError::NotFound {
        kind: Kind::Exchange,
        name: name.to_owned(),
    }
}

/// Checks an exchange name: the queue-name rules (1 to 255 bytes of UTF-8), and
/// `amq.` is reserved; the empty name is the default
/// exchange, which cannot be declared or deleted.
pub fn validate_exchange_name(name: &str) -> Result<()> {
    let full = name;
    let (_, name) = crate::names::split(full);
    if name.is_empty() || name == "amq.default" {
        return Err(BrokerError::AccessRefused {
            reason: "the default exchange (\"\", amq.default in paths) is built in: it cannot be declared, deleted or bound".into(),
        });
    }
    if name.starts_with("amq.") {
        return Err(BrokerError::AccessRefused {
            reason: format!("exchange names starting with amq. are reserved ('{name}')"),
        });
    }
    validate_name(full).map_err(|e| match e {
        BrokerError::InvalidName { name, reason, .. } => BrokerError::InvalidName {
            kind: Kind::Exchange,
            name,
            reason,
        },
        other => other,
    })
}

impl Router {
    /// The exchange's options, if it exists.
    pub fn options(&self, name: &str) -> Option<&ExchangeOptions> {
        self.exchanges.get(name).map(|e| &e.options)
    }

    /// How many exchanges clients declared (the default and `amq.*` ones not
    /// counted).
    pub fn exchange_count(&self) -> usize {
        self.exchanges
            .keys()
            .filter(|n| !crate::names::split(n).1.is_empty() && !is_built_in(n))
            .count()
    }

    /// Adds built-in exchange `name` (broker-wide) if it is one and missing.
    fn ensure_built_in(&mut self, name: &str) {
        if let Some(options) = built_in_options(name) {
            self.exchanges
                .entry(name.to_owned())
                .or_insert_with(|| Exchange::new(options));
        }
    }

    /// Removes every exchange of `vhost` with its bindings (all bindings of a vhost
    /// have their source in it).
    pub fn remove_vhost(&mut self, vhost: &str) {
        self.exchanges
            .retain(|name, _| crate::names::split(name).0 != vhost);
    }

    /// How many bindings there are, from every exchange.
    pub fn binding_count(&self) -> usize {
        self.exchanges.values().map(|e| e.bindings.len()).sum()
    }

    /// All exchanges, by name.
    pub fn exchanges(&self) -> Vec<(String, ExchangeOptions, usize)> {
        let mut out: Vec<_> = self
            .exchanges
            .iter()
            .map(|(n, e)| (n.clone(), e.options.clone(), e.bindings.len()))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Declares an exchange; `Ok(true)` if created, `Ok(false)` if an identical
    /// one exists.
    pub fn declare(&mut self, name: &str, options: ExchangeOptions) -> Result<bool> {
        self.ensure_built_in(name);
        if is_built_in(name) && self.options(name) == Some(&options) {
            // Declaring a built-in exchange as it is: fine, as in RabbitMQ.
            return Ok(false);
        }
        validate_exchange_name(name)?;
        if let Some(ae) = &options.alternate_exchange {
            check_bindable(ae)?;
        }
        if let Some(existing) = self.exchanges.get(name) {
            if existing.options == options {
                return Ok(false);
            }
            return Err(BrokerError::Conflict {
                kind: Kind::Exchange,
                name: name.to_owned(),
                difference: format!(
                    "it is {} but {} was asked",
                    serde_json::to_string(&existing.options).unwrap_or_default(),
                    serde_json::to_string(&options).unwrap_or_default()
                ),
            });
        }
        self.exchanges
            .insert(name.to_owned(), Exchange::new(options));
        Ok(true)
    }

    /// Deletes an exchange and every binding from or to it. With `if_unused`,
    /// refuses while it is the source of a binding.
    pub fn delete(&mut self, name: &str, if_unused: bool) -> Result<()> {
        validate_exchange_name(name)?;
        let exchange = self
            .exchanges
            .get(name)
            .ok_or_else(|| exchange_not_found(name))?;
        if if_unused && !exchange.bindings.is_empty() {
            return Err(BrokerError::PreconditionFailed {
                reason: format!(
                    "exchange '{name}' has {} binding(s) and if_unused was asked",
                    exchange.bindings.len()
                ),
            });
        }
        self.exchanges.remove(name);
        self.remove_destination(DestinationType::Exchange, name);
        Ok(())
    }

    /// Whether `to` (an exchange) reaches `from` through exchange bindings.
    ///
    /// Alternate exchanges are not followed: a message goes only to the alternate
    /// exchanges of the exchange it was published to, never to those of exchanges
    /// it reaches through bindings, so they cannot close a loop (and `route` stops
    /// a chain of alternates at one already tried). Following them refused bindings
    /// that depend on the order of declarations: `a -> b` with `b`'s alternate `c`
    /// was accepted before `c` was declared with alternate `a`, and then refused
    /// when `meta/routing.json` was read back at the next start, so the binding was
    /// lost (found by the `routing` fuzz target).
    fn reaches(&self, to: &str, from: &str) -> bool {
        let mut stack = vec![to.to_owned()];
        let mut seen = BTreeSet::new();
        while let Some(name) = stack.pop() {
            if name == from {
                return true;
            }
            if !seen.insert(name.clone()) {
                continue;
            }
            if let Some(e) = self.exchanges.get(&name) {
                stack.extend(
                    e.bindings
                        .iter()
                        .filter(|b| b.destination_type == DestinationType::Exchange)
                        .map(|b| b.destination.clone()),
                );
            }
        }
        false
    }

    /// Adds a binding; `Ok(false)` if it existed. The caller checks that a queue
    /// destination exists.
    pub fn bind(&mut self, b: Binding) -> Result<bool> {
        check_bindable(&b.source)?;
        self.ensure_built_in(&b.source);
        if b.destination_type == DestinationType::Exchange {
            self.ensure_built_in(&b.destination);
        }
        if !self.exchanges.contains_key(&b.source) {
            return Err(exchange_not_found(&b.source));
        }
        topic::validate_pattern(&b.routing_key)?;
        if b.destination_type == DestinationType::Exchange {
            check_bindable(&b.destination)?;
            if !self.exchanges.contains_key(&b.destination) {
                return Err(exchange_not_found(&b.destination));
            }
            if self.reaches(&b.destination, &b.source) {
                return Err(BrokerError::BindingLoop {
                    source_exchange: b.source.clone(),
                    destination: b.destination.clone(),
                });
            }
        }
        let exchange = self
            .exchanges
            .get_mut(&b.source)
            .expect("invariant: checked above");
        if exchange.options.kind == ExchangeType::Headers {
            HeaderMatch::parse(&b.arguments)?;
        }
        if exchange.bindings.contains(&b) {
            return Ok(false);
        }
        exchange.index(&b)?;
        exchange.bindings.insert(b);
        Ok(true)
    }

    /// Removes a binding; returns the name of an auto-delete exchange that went with
    /// it, if any.
    pub fn unbind(&mut self, b: &Binding) -> Result<Option<String>> {
        let exchange = self
            .exchanges
            .get_mut(&b.source)
            .ok_or_else(|| exchange_not_found(&b.source))?;
        if !exchange.bindings.remove(b) {
            return Err(BrokerError::NotFound {
                kind: Kind::Binding,
                name: format!("{} -> {} ({})", b.source, b.destination, b.routing_key),
            });
        }
        exchange.unindex(b);
        Ok(self.auto_delete(&b.source))
    }

    fn auto_delete(&mut self, name: &str) -> Option<String> {
        let e = self.exchanges.get(name)?;
        if e.options.auto_delete && e.bindings.is_empty() {
            self.exchanges.remove(name);
            self.remove_destination(DestinationType::Exchange, name);
            return Some(name.to_owned());
        }
        None
    }

    /// Removes every binding to a destination (a deleted queue or exchange);
    /// returns the auto-delete exchanges that went with them.
    pub fn remove_destination(&mut self, kind: DestinationType, name: &str) -> Vec<String> {
        let mut emptied = Vec::new();
        for (source, e) in &mut self.exchanges {
            let gone: Vec<Binding> = e
                .bindings
                .iter()
                .filter(|b| b.destination_type == kind && b.destination == name)
                .cloned()
                .collect();
            for b in &gone {
                e.bindings.remove(b);
                e.unindex(b);
            }
            if !gone.is_empty() {
                emptied.push(source.clone());
            }
        }
        emptied
            .into_iter()
            .filter_map(|s| self.auto_delete(&s))
            .collect()
    }

    /// Bindings, optionally only those from `source` and/or to `destination`.
    pub fn bindings(&self, source: Option<&str>, destination: Option<&str>) -> Vec<Binding> {
        let mut out: Vec<Binding> = self
            .exchanges
            .iter()
            .filter(|(n, _)| source.is_none_or(|s| s == n.as_str()))
            .flat_map(|(_, e)| e.bindings.iter())
            .filter(|b| destination.is_none_or(|d| d == b.destination))
            .cloned()
            .collect();
        out.sort();
        out
    }

    /// Where a message published to `exchange` with `key` and `headers` goes:
    /// through exchange-to-exchange bindings (each exchange visited once, so a loop
    /// can neither hang nor duplicate), then, if no queue was found, through the
    /// alternate exchange. The default exchange (`""`) routes to the queue named
    /// `key`; `queue_exists` says whether it does.
    pub fn route(
        &self,
        exchange: &str,
        key: &str,
        headers: &BTreeMap<String, String>,
        queue_exists: impl Fn(&str) -> bool,
    ) -> Result<Routed> {
        let mut routed = Routed::default();
        if exchange.is_empty() {
            if queue_exists(key) {
                routed.queues.insert(key.to_owned());
            }
            return Ok(routed);
        }
        let Some((exchange, _)) = self.exchanges.get_key_value(exchange) else {
            let (vhost, local) = crate::names::split(exchange);
            // The default exchange of another vhost: to the queue named `key` there.
            if local.is_empty() {
                let queue = crate::names::join(vhost, key);
                if queue_exists(&queue) {
                    routed.queues.insert(queue);
                }
                return Ok(routed);
            }
            // A built-in exchange of a vhost not used yet: it has no bindings.
            if is_built_in(exchange) {
                return Ok(routed);
            }
            return Err(exchange_not_found(exchange));
        };
        // Names borrowed from the router while it walks; owned only in the answer.
        let mut visited: BTreeSet<&str> = BTreeSet::new();
        let mut queues: BTreeSet<&str> = BTreeSet::new();
        self.walk(exchange, key, headers, &mut visited, &mut queues);
        // Alternate exchanges, chained (each once), until a queue is found.
        let mut alternates: BTreeSet<&str> = BTreeSet::new();
        let mut current = exchange.as_str();
        while queues.is_empty() {
            let Some((ae, _)) = self
                .exchanges
                .get(current)
                .and_then(|e| e.options.alternate_exchange.as_deref())
                .and_then(|ae| self.exchanges.get_key_value(ae))
            else {
                break;
            };
            if !alternates.insert(ae) {
                break;
            }
            routed.via_alternate = true;
            self.walk(ae, key, headers, &mut visited, &mut queues);
            current = ae;
        }
        routed.queues = queues.into_iter().map(str::to_owned).collect();
        Ok(routed)
    }

    fn walk<'a>(
        &'a self,
        exchange: &'a str,
        key: &str,
        headers: &BTreeMap<String, String>,
        visited: &mut BTreeSet<&'a str>,
        queues: &mut BTreeSet<&'a str>,
    ) {
        let mut stack = vec![exchange];
        while let Some(name) = stack.pop() {
            if !visited.insert(name) {
                continue;
            }
            let Some(e) = self.exchanges.get(name) else {
                continue;
            };
            e.matching(key, headers, |(kind, dest)| match kind {
                DestinationType::Queue => {
                    queues.insert(dest);
                }
                DestinationType::Exchange => stack.push(dest),
            });
        }
    }

    /// The durable exchanges and the bindings between durable things, for `meta/`.
    pub fn durable(&self) -> (Vec<(String, ExchangeOptions)>, Vec<Binding>) {
        let durable = |n: &str| self.exchanges.get(n).is_some_and(|e| e.options.durable);
        let exchanges = self
            .exchanges()
            .into_iter()
            .filter(|(n, o, _)| o.durable && !is_built_in(n))
            .map(|(n, o, _)| (n, o))
            .collect();
        let bindings = self
            .bindings(None, None)
            .into_iter()
            .filter(|b| durable(&b.source))
            .filter(|b| b.destination_type == DestinationType::Queue || durable(&b.destination))
            .collect();
        (exchanges, bindings)
    }
}

#[cfg(test)]
mod tests;
