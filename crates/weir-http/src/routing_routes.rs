//! Handlers for exchanges, bindings, publishing and topic subscriptions.

use std::collections::BTreeMap;

use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::{Value, json};
use weir_broker::access::Operation;
use weir_broker::{
    Binding, Declared, DestinationType, ExchangeOptions, PublishMessage, PublishOptions,
    QueueOptions, Vhost, subscription_queue,
};

use crate::auth::{Caller, Scoped};
use crate::error::ApiError;
use crate::extract::{Batched, JsonBody, OneOrMany, QueryParams};
use crate::messages::{MessageIn, message_in};
use crate::state::{ApiResult, WritesAllowed, ok};

/// The default exchange in paths (its real name, `""`, cannot be a path segment),
/// as in `RabbitMQ`'s management API.
const DEFAULT_EXCHANGE: &str = "amq.default";

fn exchange_name(name: &str) -> &str {
    if name == DEFAULT_EXCHANGE { "" } else { name }
}

/// A binding made or removed: `write` on its destination, `read` on its source
/// exchange (RabbitMQ's rule, as the AMQP front end applies it).
fn allow_binding(caller: &Caller, binding: &Binding) -> Result<(), ApiError> {
    let kind = match binding.destination_type {
        DestinationType::Queue => "queue",
        DestinationType::Exchange => "exchange",
    };
    caller.allow(Operation::Write, kind, &binding.destination)?;
    caller.allow(Operation::Read, "exchange", &binding.source)
}

fn created(d: Declared) -> StatusCode {
    match d {
        Declared::Created => StatusCode::CREATED,
        Declared::Existed => StatusCode::OK,
    }
}

pub(crate) async fn list_exchanges(caller: Caller, Scoped(broker): Scoped) -> ApiResult {
    caller.allow_view()?;
    ok(StatusCode::OK, json!({"exchanges": broker.exchanges()}))
}

pub(crate) async fn show_exchange(
    caller: Caller,
    Scoped(broker): Scoped,
    Path(name): Path<String>,
) -> ApiResult {
    caller.allow_view()?;
    ok(
        StatusCode::OK,
        json!(broker.exchange(exchange_name(&name))?),
    )
}

pub(crate) async fn declare_exchange(
    caller: Caller,
    Scoped(broker): Scoped,
    Path(name): Path<String>,
    JsonBody(options): JsonBody<ExchangeOptions>,
) -> ApiResult {
    caller.allow(Operation::Configure, "exchange", exchange_name(&name))?;
    // As over AMQP: an alternate exchange needs write on it and read on this one.
    if let Some(ae) = &options.alternate_exchange {
        caller.allow(Operation::Write, "exchange", ae)?;
        caller.allow(Operation::Read, "exchange", exchange_name(&name))?;
    }
    let declared = broker
        .declare_exchange(exchange_name(&name), options)
        .await?;
    ok(created(declared), json!(broker.exchange(&name)?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DeleteQuery {
    if_unused: Option<bool>,
}

pub(crate) async fn delete_exchange(
    caller: Caller,
    Scoped(broker): Scoped,
    Path(name): Path<String>,
    QueryParams(q): QueryParams<DeleteQuery>,
) -> ApiResult {
    caller.allow(Operation::Configure, "exchange", exchange_name(&name))?;
    broker
        .delete_exchange(exchange_name(&name), q.if_unused.unwrap_or(false))
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BindingsQuery {
    source: Option<String>,
    destination: Option<String>,
}

pub(crate) async fn list_bindings(
    caller: Caller,
    Scoped(broker): Scoped,
    QueryParams(q): QueryParams<BindingsQuery>,
) -> ApiResult {
    caller.allow_view()?;
    let bindings = broker.bindings(q.source.as_deref(), q.destination.as_deref());
    ok(StatusCode::OK, json!({"bindings": bindings}))
}

impl Batched for Binding {
    const FIELD: &'static str = "bindings";
}

/// One binding, or `{"bindings": [...]}` added all or none.
pub(crate) async fn bind(
    caller: Caller,
    Scoped(broker): Scoped,
    body: OneOrMany<Binding>,
) -> ApiResult {
    for binding in &body.items {
        allow_binding(&caller, binding)?;
    }
    if body.batch {
        let answers = broker.bind_many(body.items).await?;
        let added = answers.iter().filter(|d| **d == Declared::Created).count();
        let status = if added > 0 {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        };
        return ok(
            status,
            json!({"created": added, "existed": answers.len() - added}),
        );
    }
    let binding = body.items.into_iter().next().expect("invariant: one item");
    let declared = broker.bind(binding.clone()).await?;
    ok(created(declared), json!(binding))
}

pub(crate) async fn unbind(
    caller: Caller,
    Scoped(broker): Scoped,
    JsonBody(binding): JsonBody<Binding>,
) -> ApiResult {
    allow_binding(&caller, &binding)?;
    broker.unbind(&binding).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// One message to publish: a message plus its routing key and `mandatory`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PublishIn {
    #[serde(default)]
    routing_key: String,
    #[serde(default)]
    mandatory: bool,
    body: Option<String>,
    body_base64: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    id: Option<String>,
    priority: Option<u8>,
    delay_ms: Option<u64>,
    group: Option<String>,
    ttl_ms: Option<u64>,
}

impl Batched for PublishIn {
    const FIELD: &'static str = "messages";
}

/// `?queues=true` on a publish: name the queues each message reached.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PublishQuery {
    #[serde(default)]
    queues: bool,
}

async fn publish_through(
    broker: &Vhost,
    exchange: &str,
    items: Vec<PublishIn>,
    topic: bool,
    query: &PublishQuery,
) -> ApiResult {
    let mut messages = Vec::with_capacity(items.len());
    let mut mandatory = Vec::with_capacity(items.len());
    for (i, p) in items.into_iter().enumerate() {
        mandatory.push(p.mandatory);
        let message = message_in(
            i,
            MessageIn {
                body: p.body,
                body_base64: p.body_base64,
                headers: p.headers,
                id: p.id,
                priority: p.priority,
                delay_ms: p.delay_ms,
                group: p.group,
                ttl_ms: p.ttl_ms,
            },
        )?;
        messages.push(PublishMessage {
            routing_key: p.routing_key,
            mandatory: p.mandatory,
            message,
        });
    }
    let options = PublishOptions {
        queue_names: query.queues,
    };
    let outcomes = if topic {
        broker.publish_topic(exchange, messages, options).await?
    } else {
        broker.publish(exchange, messages, options).await?
    };
    broker.traffic().confirmed(outcomes.len() as u64);
    let routed: u64 = outcomes.iter().map(|o| u64::from(o.routed)).sum();
    let unroutable = outcomes.iter().filter(|o| o.unroutable).count();
    let returned = outcomes
        .iter()
        .zip(&mandatory)
        .filter(|(o, m)| o.unroutable && **m)
        .count();
    let messages: Vec<Value> = outcomes
        .into_iter()
        .map(|o| {
            let mut v = json!({
                "id": o.id,
                "routed": o.routed,
                "duplicates": o.duplicates,
                "unroutable": o.unroutable,
            });
            if query.queues {
                v["queues"] = json!(o.queues);
                v["duplicate_in"] = json!(o.duplicate_in);
            }
            v
        })
        .collect();
    ok(
        StatusCode::CREATED,
        json!({
            "messages": messages,
            "routed": routed,
            "unroutable": unroutable,
            "returned": returned,
        }),
    )
}

pub(crate) async fn publish(
    caller: Caller,
    Scoped(broker): Scoped,
    _: WritesAllowed,
    Path(name): Path<String>,
    QueryParams(query): QueryParams<PublishQuery>,
    body: OneOrMany<PublishIn>,
) -> ApiResult {
    caller.allow(Operation::Write, "exchange", exchange_name(&name))?;
    publish_through(&broker, exchange_name(&name), body.items, false, &query).await
}

pub(crate) async fn publish_topic(
    caller: Caller,
    Scoped(broker): Scoped,
    _: WritesAllowed,
    Path(topic): Path<String>,
    QueryParams(query): QueryParams<PublishQuery>,
    body: OneOrMany<PublishIn>,
) -> ApiResult {
    caller.allow(Operation::Write, "exchange", &topic)?;
    publish_through(&broker, &topic, body.items, true, &query).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SubscribeBody {
    /// Routing-key pattern; `#` (everything) by default.
    pattern: Option<String>,
    /// Options of the subscriber's queue.
    #[serde(default)]
    queue: Option<QueueOptions>,
}

pub(crate) async fn subscribe(
    caller: Caller,
    Scoped(broker): Scoped,
    Path((topic, name)): Path<(String, String)>,
    JsonBody(body): JsonBody<SubscribeBody>,
) -> ApiResult {
    // Declares the topic exchange (if new) and the subscriber's queue, and binds
    // them: what those three take over AMQP.
    let queue = subscription_queue(&topic, &name);
    let options = body.queue.unwrap_or_default();
    caller.allow(Operation::Configure, "exchange", &topic)?;
    caller.allow_declare(&queue, &options)?;
    caller.allow(Operation::Write, "queue", &queue)?;
    caller.allow(Operation::Read, "exchange", &topic)?;
    let pattern = body.pattern.unwrap_or_else(|| "#".to_owned());
    let (declared, info) = broker.subscribe(&topic, &name, &pattern, options).await?;
    ok(created(declared), json!(info))
}

pub(crate) async fn unsubscribe(
    caller: Caller,
    Scoped(broker): Scoped,
    Path((topic, name)): Path<(String, String)>,
) -> ApiResult {
    caller.allow(
        Operation::Configure,
        "queue",
        &subscription_queue(&topic, &name),
    )?;
    broker.unsubscribe(&topic, &name).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub(crate) async fn list_subscriptions(
    caller: Caller,
    Scoped(broker): Scoped,
    Path(topic): Path<String>,
) -> ApiResult {
    caller.allow_view()?;
    let subs = broker.subscriptions(&topic)?;
    let mut out = Vec::with_capacity(subs.len());
    for s in subs {
        let stats = broker.info(&s.queue).await.ok().map(|i| i.stats);
        let mut v = json!(s);
        if let (Some(map), Some(stats)) = (v.as_object_mut(), stats) {
            map.insert("stats".into(), json!(stats));
        }
        out.push(v);
    }
    ok(StatusCode::OK, json!({"subscriptions": out}))
}
