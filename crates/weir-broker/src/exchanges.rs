//! The broker's routing API: exchanges, bindings, publishing through them, and
//! topic subscriptions (a durable queue per subscriber, bound to a topic exchange).
//!
//! Exchanges and bindings live in a [`Router`] in memory and in
//! `<data_dir>/meta/routing.json` on disk (rewritten through a `.tmp` file on every
//! change, under the declaration lock; they change rarely and are small).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use weir_log::LogStore;
use weir_log::io::create_dir_all_durably;

use crate::api::{Declared, QueueOptions, SendMessage, SendOutcome, validate_name};
use crate::broker::Broker;
use crate::clock::now_ms;
use crate::error::{BrokerError, Kind, Limit, Result};
use crate::files::{io_error, write_durably};
use crate::prepare::{generate_id, prepare};
use crate::queue::record::encode_shared;
use crate::routing::file::{RoutingFile, load_router};
use crate::routing::{
    Binding, DestinationType, ExchangeOptions, ExchangeType, Router, validate_exchange_name,
};
use crate::shared::{Answers, Dispatch, Target};

/// An exchange as listed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExchangeInfo {
    /// Its name.
    pub name: String,
    /// Its settings.
    #[serde(flatten)]
    pub options: ExchangeOptions,
    /// How many bindings have it as their source.
    pub bindings: usize,
}

/// One message to publish through an exchange.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PublishMessage {
    /// The routing key.
    pub routing_key: String,
    /// Report when it reaches no queue.
    pub mandatory: bool,
    /// The message.
    pub message: SendMessage,
}

/// Where one published message went.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishOutcome {
    /// Its id (the same in every queue).
    pub id: String,
    /// How many queues enqueued it (durably).
    pub routed: u32,
    /// How many queues already had it (de-duplication).
    pub duplicates: u32,
    /// The queues it was enqueued in, sorted; only filled when asked for
    /// ([`PublishOptions::queue_names`]).
    pub queues: Vec<String>,
    /// The queues that already had it, sorted; only filled when asked for.
    pub duplicate_in: Vec<String>,
    /// It reached no queue (it is dropped; with `mandatory` this is the report).
    pub unroutable: bool,
}

/// How a publish answers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PublishOptions {
    /// Name the queues each message reached, not only count them. A fan-out to
    /// many queues answers with many names per message, so it is asked for.
    pub queue_names: bool,
}

/// A topic subscription.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionInfo {
    /// The topic (a topic exchange).
    pub topic: String,
    /// The subscriber's name.
    pub name: String,
    /// Its queue: receive, ack and nack there.
    pub queue: String,
    /// The routing-key pattern it is bound with.
    pub pattern: String,
}

/// Whether a queue's dead letters need the exchange and routing key each message
/// was published with: for their routing key (through an exchange with no key of
/// its own) and their death history. Only then are they stored with the message.
fn keeps_route(options: &QueueOptions) -> bool {
    options.dead_letters()
}

/// A copy of a published message for a queue, with its exchange and routing key
/// if kept.
fn with_route(exchange: &str, m: &PublishMessage, keep: bool) -> SendMessage {
    SendMessage {
        routing_key: (keep && !m.routing_key.is_empty()).then(|| m.routing_key.clone()),
        exchange: (keep && !exchange.is_empty()).then(|| exchange.to_owned()),
        ..m.message.clone()
    }
}

/// The queue that holds a subscription's messages: `sub:TOPIC:NAME`, in the vhost of
/// `topic` (a broker-wide name, or a client's name in a [`crate::Vhost`]).
pub fn subscription_queue(topic: &str, name: &str) -> String {
    let (vhost, topic) = crate::names::split(topic);
    crate::names::join(vhost, &format!("sub:{topic}:{name}"))
}

fn routing_path<S: LogStore>(broker: &Broker<S>) -> std::path::PathBuf {
    broker
        .inner
        .config
        .data_dir
        .join("meta")
        .join("routing.json")
}

impl<S: LogStore> Broker<S> {
    pub(crate) fn router(&self) -> std::sync::RwLockReadGuard<'_, Router> {
        crate::locks::read(&self.inner.router)
    }

    fn router_mut(&self) -> std::sync::RwLockWriteGuard<'_, Router> {
        crate::locks::write(&self.inner.router)
    }

    /// Reads `meta/routing.json` at start; returns how many exchanges it held.
    pub(crate) fn load_routing(&self) -> Result<usize> {
        let path = routing_path(self);
        let file: RoutingFile = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                BrokerError::internal(format!("{} does not parse: {e}", path.display()))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => RoutingFile::default(),
            Err(e) => return Err(io_error("read", &path, e)),
        };
        let mut router = self.router_mut();
        load_router(&mut router, file, |q| {
            self.queue_exists(q) || self.stream_exists(q)
        })
    }

    /// Applies `change` to a copy of the router, writes the copy's durable part, and
    /// only then makes the copy current, so memory and `meta/routing.json` never
    /// disagree (a refused change or a failed write leaves both as they were).
    /// Call with the declaration lock held: it is what keeps changes from racing.
    pub(crate) fn change_routing<T>(
        &self,
        change: impl FnOnce(&mut Router) -> Result<T>,
    ) -> Result<T> {
        let mut copy = self.router().clone();
        let out = change(&mut copy)?;
        self.write_routing(&copy)?;
        *self.router_mut() = copy;
        Ok(out)
    }

    /// Writes the durable exchanges and bindings of `router`.
    fn write_routing(&self, router: &Router) -> Result<()> {
        let file = RoutingFile::of(router);
        let path = routing_path(self);
        if let Some(dir) = path.parent() {
            create_dir_all_durably(dir).map_err(|e| io_error("create", dir, e))?;
        }
        let json =
            serde_json::to_vec_pretty(&file).map_err(|e| BrokerError::internal(e.to_string()))?;
        write_durably(&path, &json).map_err(|e| io_error("write", &path, e))
    }

    /// Declares an exchange: creates it, or confirms an identical one exists.
    pub async fn declare_exchange(&self, name: &str, options: ExchangeOptions) -> Result<Declared> {
        let _admin = self.inner.admin.lock().await;
        let limit = self.inner.config.limits.max_exchanges;
        let created = self.change_routing(|r| {
            let before = r.exchange_count() as u64;
            let created = r.declare(name, options)?;
            if created && before >= limit {
                return Err(BrokerError::LimitExceeded {
                    what: Limit::Exchanges,
                    limit,
                });
            }
            Ok(created)
        })?;
        Ok(if created {
            Declared::Created
        } else {
            Declared::Existed
        })
    }

    /// Deletes an exchange and its bindings; with `if_unused`, only if it is the
    /// source of none.
    pub async fn delete_exchange(&self, name: &str, if_unused: bool) -> Result<()> {
        let _admin = self.inner.admin.lock().await;
        self.change_routing(|r| r.delete(name, if_unused))?;
        self.inner.traffic.forget_exchange(name);
        Ok(())
    }

    /// Every exchange, by name.
    pub fn exchanges(&self) -> Vec<ExchangeInfo> {
        self.router()
            .exchanges()
            .into_iter()
            .map(|(name, options, bindings)| ExchangeInfo {
                name,
                options,
                bindings,
            })
            .collect()
    }

    /// One exchange.
    pub fn exchange(&self, name: &str) -> Result<ExchangeInfo> {
        if !crate::routing::is_built_in(name) {
            validate_exchange_name(name)?;
        }
        let found = self.router().exchanges().into_iter().find(|e| e.0 == name);
        match found {
            Some((name, options, bindings)) => Ok(ExchangeInfo {
                name,
                options,
                bindings,
            }),
            // The built-in exchanges of a vhost exist before their first use.
            None if crate::routing::is_built_in(name) => Ok(ExchangeInfo {
                name: name.to_owned(),
                options: crate::routing::built_in_options(name)
                    .expect("invariant: a built-in exchange"),
                bindings: 0,
            }),
            None => Err(BrokerError::NotFound {
                kind: Kind::Exchange,
                name: name.to_owned(),
            }),
        }
    }

    /// Adds a binding; `Created`, or `Existed` if the same binding was there.
    pub async fn bind(&self, binding: Binding) -> Result<Declared> {
        let mut declared = self.bind_many(vec![binding]).await?;
        Ok(declared.pop().expect("invariant: one answer per binding"))
    }

    /// Adds bindings, all or none, with one write of the routing file (so tens of
    /// thousands of bindings cost one write, not one each).
    pub async fn bind_many(&self, bindings: Vec<Binding>) -> Result<Vec<Declared>> {
        let _admin = self.inner.admin.lock().await;
        for binding in &bindings {
            if binding.destination_type == DestinationType::Queue {
                validate_name(&binding.destination)?;
                if !self.queue_exists(&binding.destination)
                    && !self.stream_exists(&binding.destination)
                {
                    return Err(BrokerError::NotFound {
                        kind: Kind::Queue,
                        name: binding.destination.clone(),
                    });
                }
            }
        }
        // All or none: a refusal leaves the copy, and so the router, unchanged.
        let limit = self.inner.config.limits.max_bindings;
        self.change_routing(|router| {
            let mut count = router.binding_count() as u64;
            bindings
                .into_iter()
                .map(|b| {
                    if !router.bind(b)? {
                        return Ok(Declared::Existed);
                    }
                    count += 1;
                    if count > limit {
                        return Err(BrokerError::LimitExceeded {
                            what: Limit::Bindings,
                            limit,
                        });
                    }
                    Ok(Declared::Created)
                })
                .collect()
        })
    }

    /// Removes a binding (and an auto-delete source exchange left without any).
    pub async fn unbind(&self, binding: &Binding) -> Result<()> {
        let _admin = self.inner.admin.lock().await;
        self.change_routing(|r| r.unbind(binding).map(|_| ()))
    }

    /// Bindings, optionally only from `source` and/or to `destination`.
    pub fn bindings(&self, source: Option<&str>, destination: Option<&str>) -> Vec<Binding> {
        self.router().bindings(source, destination)
    }

    /// Publishes messages through `exchange` (`""`: the default exchange, which
    /// routes to the queue named by the key). Each message is enqueued, durably,
    /// in every queue it routes to before this answers.
    ///
    /// # Errors
    /// Unknown exchange; an internal exchange (access refused); a queue refusing (full with `reject-publish`, storage): the
    /// first such error, after the other queues took their copies.
    pub async fn publish(
        &self,
        exchange: &str,
        messages: Vec<PublishMessage>,
        options: PublishOptions,
    ) -> Result<Vec<PublishOutcome>> {
        self.publish_queued(exchange, messages, options)
            .await?
            .outcomes()
            .await
    }

    /// The first half of [`Broker::publish`]: routes the messages and returns once
    /// every queue they go to has them in its command queue (or the shared log's
    /// dispatcher has them), so publishes queued one after the other keep their
    /// order. [`QueuedPublish::outcomes`] then waits for the queues' answers. A
    /// front end that answers publishes in order but need not wait for one before
    /// taking the next (AMQP confirms) pipelines them this way.
    ///
    /// # Errors
    /// As [`Broker::publish`], for what is known before the queues answer.
    pub async fn publish_queued(
        &self,
        exchange: &str,
        messages: Vec<PublishMessage>,
        options: PublishOptions,
    ) -> Result<QueuedPublish> {
        if messages.is_empty() {
            return Err(BrokerError::invalid(
                "messages",
                "a publish needs at least one message",
            ));
        }
        let limit = self.inner.config.limits.max_batch_messages;
        if messages.len() as u64 > limit {
            return Err(BrokerError::LimitExceeded {
                what: Limit::MessagesPerSend,
                limit,
            });
        }
        if self.router().options(exchange).is_some_and(|o| o.internal) {
            return Err(BrokerError::AccessRefused {
                reason: format!("cannot publish to internal exchange '{exchange}'"),
            });
        }
        let now = now_ms();
        let mut messages = messages;
        // Which messages each queue gets, by position; nothing is copied yet.
        let mut per_queue: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        let mut copies = vec![0usize; messages.len()];
        let mut outcomes = Vec::with_capacity(messages.len());
        // Unroutable messages, for the counters: dropped, returned (`mandatory`).
        let (mut dropped, mut returned) = (0, 0);
        {
            let router = self.router();
            for (i, m) in messages.iter_mut().enumerate() {
                crate::routing::topic::validate_pattern(&m.routing_key)?;
                let id = m.message.id.get_or_insert_with(|| generate_id(now)).clone();
                let routed = router.route(exchange, &m.routing_key, &m.message.headers, |q| {
                    self.queue_exists(q) || self.stream_exists(q)
                })?;
                outcomes.push(PublishOutcome {
                    id,
                    routed: 0,
                    duplicates: 0,
                    queues: Vec::new(),
                    duplicate_in: Vec::new(),
                    unroutable: routed.queues.is_empty(),
                });
                if routed.queues.is_empty() {
                    *(if m.mandatory {
                        &mut returned
                    } else {
                        &mut dropped
                    }) += 1;
                }
                copies[i] = routed.queues.len();
                for queue in routed.queues {
                    per_queue.entry(queue).or_default().push(i);
                }
            }
        }
        self.inner
            .traffic
            .published(messages.len() as u64, dropped, returned);
        self.inner
            .traffic
            .unroutable_through(exchange, dropped + returned);
        // Streams take their part as one append each, queued now (so in order).
        let streams = self.publish_to_streams(&messages, &mut per_queue, &mut copies);
        // A batch in which some message reaches several queues goes to the shared
        // log, whole and in order (one append, one sync, all destinations or none);
        // otherwise each queue gets its part as an ordinary send.
        let answers = if copies.iter().any(|c| *c > 1) {
            self.publish_shared(exchange, messages, &copies, per_queue, now)
                .await?
        } else {
            self.publish_direct(exchange, messages, per_queue).await?
        };
        Ok(QueuedPublish {
            answers,
            streams,
            outcomes,
            options,
        })
    }
}

/// A publish its queues have taken in and not yet answered; see
/// [`Broker::publish_queued`].
pub struct QueuedPublish {
    answers: PendingAnswers,
    /// Streams' answers to come, as queues' sends.
    streams: Vec<PendingSend>,
    outcomes: Vec<PublishOutcome>,
    options: PublishOptions,
}

/// A queue's answer to a send, to come.
pub(crate) type SendAnswer = oneshot::Receiver<Result<Vec<SendOutcome>>>;

/// A queue's (or stream's) name, the positions it got, and its answer to come.
pub(crate) type PendingSend = (String, Vec<usize>, Result<SendAnswer>);

/// Answers to come: per queue, its name, the positions it got and its answer.
enum PendingAnswers {
    Direct(Vec<PendingSend>),
    Shared(
        Vec<(String, Vec<usize>)>,
        oneshot::Receiver<Result<Answers>>,
    ),
}

impl QueuedPublish {
    /// Waits for every queue's answer: what [`Broker::publish`] returns.
    ///
    /// # Errors
    /// As [`Broker::publish`].
    pub async fn outcomes(self) -> Result<Vec<PublishOutcome>> {
        let QueuedPublish {
            answers,
            streams,
            mut outcomes,
            options,
        } = self;
        let mut answers: Vec<(String, Vec<usize>, Result<Vec<bool>>)> = match answers {
            PendingAnswers::Direct(pending) => {
                let mut answers = Vec::with_capacity(pending.len());
                for (queue, positions, answer) in pending {
                    let result = match answer {
                        Ok(answer) => answer
                            .await
                            .unwrap_or_else(|_| Err(crate::broker::gone(&queue)))
                            .map(|sent| sent.into_iter().map(|o| o.duplicate).collect()),
                        Err(e) => Err(e),
                    };
                    answers.push((queue, positions, result));
                }
                answers
            }
            PendingAnswers::Shared(parts, answer) => {
                let answers: Answers = answer.await.map_err(|_| shutting_down())??;
                parts
                    .into_iter()
                    .zip(answers)
                    .map(|((name, positions), (_, answer))| (name, positions, answer))
                    .collect()
            }
        };
        for (stream, positions, answer) in streams {
            let result = match answer {
                Ok(answer) => answer
                    .await
                    .unwrap_or_else(|_| Err(crate::broker::gone(&stream)))
                    .map(|sent| sent.into_iter().map(|o| o.duplicate).collect()),
                Err(e) => Err(e),
            };
            answers.push((stream, positions, result));
        }
        let mut first_error = None;
        for (queue, positions, answer) in answers {
            match answer {
                Ok(duplicate) => {
                    for (pos, duplicate) in positions.into_iter().zip(duplicate) {
                        let target = &mut outcomes[pos];
                        let names = if duplicate {
                            target.duplicates += 1;
                            &mut target.duplicate_in
                        } else {
                            target.routed += 1;
                            &mut target.queues
                        };
                        if options.queue_names {
                            names.push(queue.clone());
                        }
                    }
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        for o in &mut outcomes {
            o.queues.sort();
            o.duplicate_in.sort();
        }
        Ok(outcomes)
    }
}

fn shutting_down() -> BrokerError {
    BrokerError::Unavailable {
        reason: "the broker is shutting down".into(),
    }
}

impl<S: LogStore> Broker<S> {
    /// Each queue's part as an ordinary send, queued one queue after the other.
    async fn publish_direct(
        &self,
        exchange: &str,
        messages: Vec<PublishMessage>,
        per_queue: BTreeMap<String, Vec<usize>>,
    ) -> Result<PendingAnswers> {
        let mut pending = Vec::with_capacity(per_queue.len());
        for (queue, positions) in per_queue {
            let keep_key = self.get(&queue).is_ok_and(|q| keeps_route(&q.options));
            let batch: Vec<SendMessage> = positions
                .iter()
                .map(|i| with_route(exchange, &messages[*i], keep_key))
                .collect();
            // A queue that refuses at once is answered among the others (the first
            // error wins).
            let answer = self.send_queued(&queue, batch).await;
            pending.push((queue, positions, answer));
        }
        Ok(PendingAnswers::Direct(pending))
    }

    /// The routed messages go to the shared log once, naming their queues; each
    /// queue then takes its part (decision 0004). Answers as `publish_direct`.
    async fn publish_shared(
        &self,
        exchange: &str,
        messages: Vec<PublishMessage>,
        copies: &[usize],
        per_queue: BTreeMap<String, Vec<usize>>,
        now: i64,
    ) -> Result<PendingAnswers> {
        // Positions in the shared batch: the routed messages, in order.
        let mut slot = vec![u32::MAX; messages.len()];
        let mut routed = 0u32;
        for (i, c) in copies.iter().enumerate() {
            if *c > 0 {
                slot[i] = routed;
                routed += 1;
            }
        }
        let mut destinations: Vec<Vec<u32>> = vec![Vec::new(); routed as usize];
        let mut keep_key = vec![false; routed as usize];
        let mut targets = Vec::with_capacity(per_queue.len());
        let mut parts = Vec::with_capacity(per_queue.len());
        for (name, positions) in per_queue {
            let queue = self.get(&name)?;
            let keeps = keeps_route(&queue.options);
            for i in &positions {
                destinations[slot[*i] as usize].push(queue.id);
                keep_key[slot[*i] as usize] |= keeps;
            }
            targets.push(Target {
                name: name.clone(),
                queue,
                positions: positions.iter().map(|i| slot[*i]).collect(),
            });
            parts.push((name, positions));
        }
        // The message as every queue sees it: its own TTL and delay, any priority
        // (each queue applies its TTL and priority cap when it takes it).
        let neutral = QueueOptions {
            max_priority: u8::MAX,
            ..QueueOptions::default()
        };
        let limits = &self.inner.config.limits;
        let mut records = Vec::with_capacity(routed as usize);
        let mut metas = Vec::with_capacity(routed as usize);
        let mut sizes = Vec::with_capacity(routed as usize);
        for (i, m) in messages.into_iter().enumerate() {
            if slot[i] == u32::MAX {
                continue;
            }
            let mut message = m.message;
            if keep_key[slot[i] as usize] {
                message.routing_key = Some(m.routing_key).filter(|k| !k.is_empty());
                message.exchange = Some(exchange.to_owned()).filter(|e| !e.is_empty());
            }
            let out = prepare(i, message, &neutral, limits, now)?;
            records.push(weir_log::NewRecord {
                timestamp_ms: Some(now),
                key: Some(encode_shared(&destinations[slot[i] as usize], &out.meta)),
                headers: out.headers,
                body: out.body.clone(),
            });
            sizes.push(out.body.len() as u32);
            metas.push(out.meta);
        }
        let (reply, answer) = oneshot::channel();
        self.inner
            .dispatch
            .send(Dispatch {
                records,
                metas,
                sizes,
                published_ms: now,
                targets,
                reply,
            })
            .await
            .map_err(|_| shutting_down())?;
        Ok(PendingAnswers::Shared(parts, answer))
    }

    /// Publishes to a topic: like [`Broker::publish`], but `topic` must be a topic
    /// exchange.
    pub async fn publish_topic(
        &self,
        topic: &str,
        messages: Vec<PublishMessage>,
        options: PublishOptions,
    ) -> Result<Vec<PublishOutcome>> {
        validate_exchange_name(topic)?;
        match self.router().options(topic).map(|o| o.kind) {
            None => {
                return Err(BrokerError::NotFound {
                    kind: Kind::Exchange,
                    name: topic.to_owned(),
                });
            }
            Some(ExchangeType::Topic) => {}
            Some(_) => {
                return Err(BrokerError::PreconditionFailed {
                    reason: format!(
                        "exchange '{topic}' is not a topic exchange; publish to /api/exchanges/{topic}/publish"
                    ),
                });
            }
        }
        self.publish(topic, messages, options).await
    }

    /// Subscribes `name` to `topic`: declares the topic exchange (type topic) if
    /// needed, a durable queue for the subscriber with `options`, and binds it with
    /// `pattern`. Idempotent for the same arguments.
    pub async fn subscribe(
        &self,
        topic: &str,
        name: &str,
        pattern: &str,
        options: QueueOptions,
    ) -> Result<(Declared, SubscriptionInfo)> {
        validate_exchange_name(topic)?;
        validate_name(name).map_err(|e| match e {
            BrokerError::InvalidName { name, reason, .. } => BrokerError::InvalidName {
                kind: Kind::Subscription,
                name,
                reason,
            },
            other => other,
        })?;
        crate::routing::topic::validate_pattern(pattern)?;
        let queue = subscription_queue(topic, name);
        validate_name(&queue)?;
        match self.router().options(topic) {
            Some(o) if o.kind != ExchangeType::Topic => {
                return Err(BrokerError::PreconditionFailed {
                    reason: format!("exchange '{topic}' exists and is not a topic exchange"),
                });
            }
            _ => {}
        }
        let topic_options = ExchangeOptions::of(ExchangeType::Topic);
        let new_topic = self.router().options(topic).is_none();
        if new_topic {
            self.declare_exchange(topic, topic_options).await?;
        }
        let declared = match self.declare(&queue, options).await {
            Ok(d) => d,
            Err(e) => {
                // Leave nothing behind: a topic made for this subscription goes
                // again while nothing is bound to it.
                if new_topic {
                    let _ = self.delete_exchange(topic, true).await;
                }
                return Err(e);
            }
        };
        let binding = Binding {
            source: topic.to_owned(),
            destination: queue.clone(),
            destination_type: DestinationType::Queue,
            routing_key: pattern.to_owned(),
            arguments: BTreeMap::new(),
        };
        // A subscription has one pattern: a new one replaces the old.
        let old: Vec<Binding> = self
            .bindings(Some(topic), Some(&queue))
            .into_iter()
            .filter(|b| b.routing_key != pattern)
            .collect();
        let bound = self.bind(binding).await?;
        for b in old {
            let _ = self.unbind(&b).await;
        }
        let created = declared == Declared::Created || bound == Declared::Created;
        Ok((
            if created {
                Declared::Created
            } else {
                Declared::Existed
            },
            SubscriptionInfo {
                topic: topic.to_owned(),
                name: name.to_owned(),
                queue,
                pattern: pattern.to_owned(),
            },
        ))
    }

    /// Removes a subscription: its binding and its queue (with what it holds).
    pub async fn unsubscribe(&self, topic: &str, name: &str) -> Result<()> {
        let queue = subscription_queue(topic, name);
        if !self.queue_exists(&queue) {
            return Err(BrokerError::NotFound {
                kind: Kind::Subscription,
                name: format!("{topic}/{name}"),
            });
        }
        // Deleting the queue removes its bindings.
        self.delete(&queue).await
    }

    /// The subscriptions of `topic`.
    pub fn subscriptions(&self, topic: &str) -> Result<Vec<SubscriptionInfo>> {
        validate_exchange_name(topic)?;
        if self.router().options(topic).is_none() {
            return Err(BrokerError::NotFound {
                kind: Kind::Exchange,
                name: topic.to_owned(),
            });
        }
        let prefix = subscription_queue(topic, "");
        let mut seen = BTreeSet::new();
        Ok(self
            .bindings(Some(topic), None)
            .into_iter()
            .filter(|b| b.destination_type == DestinationType::Queue)
            .filter_map(|b| {
                let name = b.destination.strip_prefix(&prefix)?.to_owned();
                seen.insert(name.clone()).then(|| SubscriptionInfo {
                    topic: topic.to_owned(),
                    name,
                    queue: b.destination.clone(),
                    pattern: b.routing_key,
                })
            })
            .collect())
    }
}
