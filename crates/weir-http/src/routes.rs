//! The handlers. Each translates JSON to one broker call and back.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use weir_broker::access::Operation;
use weir_broker::metrics::DeliveryMode;
use weir_broker::{
    Broker, BrokerError, DeadLetterInfo, Declared, Delivery, NackOptions, QueueOptions,
    ReceiveRequest, SettleReport, Vhost,
};

use crate::admin_routes as admin;
use crate::auth::{self, Caller, Scoped};
use crate::config::HttpConfig;
use crate::connection_routes as connections;
use crate::error::{ApiError, status_of};
use crate::extract::{JsonBody, OneOrMany, QueryParams};
use crate::group_routes as groups;
use crate::messages::{MessageIn, message_in};
use crate::routing_routes as x;
use crate::state::{ApiResult, AppState, Guard, LongPolls, WritesAllowed, ok};
use crate::stream_routes as streams;

pub(crate) fn router(broker: Broker, config: &HttpConfig) -> Router {
    let state = AppState {
        guard: Arc::new(Guard::new(
            &config.allowed_hosts,
            config.failed_login_delay_ms,
        )),
        alarms: broker.alarms(),
        requests: Arc::default(),
        dashboard: Arc::new(crate::dashboard::store::Dashboard::new(config)),
        broker,
        max_body_bytes: config.max_body_bytes,
        long_polls: LongPolls {
            permits: Arc::new(Semaphore::new(config.long_poll_cap() as usize)),
            max: config.long_poll_cap(),
        },
    };
    // The dashboard's forms are read by axum's extractors: held to the same body
    // limit as the API's own readers (axum's default is 2 MB).
    let body_limit = usize::try_from(config.max_body_bytes).unwrap_or(usize::MAX);
    crate::dashboard::routes(stream_routes(Router::new()))
        .layer(axum::extract::DefaultBodyLimit::max(body_limit))
        .route("/healthz", get(healthz))
        .route("/metrics", get(crate::metrics::aggregated))
        .route("/metrics/per-object", get(crate::metrics::per_object))
        .route("/api/openapi.json", get(openapi))
        .route("/api/broker", get(broker_stats))
        .route("/api/queues", get(list_queues))
        .route(
            "/api/queues/{name}",
            get(show_queue).put(declare_queue).delete(delete_queue),
        )
        .route("/api/queues/{name}/purge", post(purge))
        .route(
            "/api/queues/{name}/messages",
            post(send).get(receive_moved).head(receive_moved),
        )
        .route("/api/queues/{name}/receive", post(receive))
        .route("/api/queues/{name}/ack", post(ack))
        .route("/api/queues/{name}/nack", post(nack))
        .route("/api/queues/{name}/extend", post(extend))
        .route("/api/queues/{name}/dead-letters", get(peek_dead_letters))
        .route("/api/queues/{name}/dead-letters/redrive", post(redrive))
        .route("/api/exchanges", get(x::list_exchanges))
        .route(
            "/api/exchanges/{name}",
            get(x::show_exchange)
                .put(x::declare_exchange)
                .delete(x::delete_exchange),
        )
        .route("/api/exchanges/{name}/publish", post(x::publish))
        .route(
            "/api/bindings",
            get(x::list_bindings).post(x::bind).delete(x::unbind),
        )
        .route("/api/topics/{topic}/publish", post(x::publish_topic))
        .route(
            "/api/topics/{topic}/subscriptions",
            get(x::list_subscriptions),
        )
        .route(
            "/api/topics/{topic}/subscriptions/{name}",
            put(x::subscribe).delete(x::unsubscribe),
        )
        .route("/api/connections", get(connections::list))
        .route(
            "/api/connections/{id}",
            get(connections::show).delete(connections::close),
        )
        .route("/api/whoami", get(admin::whoami))
        .route("/api/users", get(admin::list_users))
        .route(
            "/api/users/{name}",
            get(admin::show_user)
                .put(admin::put_user)
                .delete(admin::delete_user),
        )
        .route("/api/vhosts", get(admin::list_vhosts))
        .route(
            "/api/vhosts/{name}",
            put(admin::put_vhost).delete(admin::delete_vhost),
        )
        .route("/api/permissions", get(admin::list_permissions))
        .route(
            "/api/definitions",
            get(admin::export_definitions).post(admin::import_definitions),
        )
        .route(
            "/api/permissions/{vhost}/{user}",
            put(admin::put_permissions).delete(admin::delete_permissions),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::guard,
        ))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state.requests),
            crate::request_counts::count,
        ))
        .with_state(state)
}

/// The streams and their consumer groups (`stream_routes.rs`, `group_routes.rs`).
fn stream_routes(router: Router<AppState>) -> Router<AppState> {
    router
        .route("/api/streams", get(streams::list))
        .route(
            "/api/streams/{name}",
            get(streams::show)
                .put(streams::declare)
                .patch(streams::alter)
                .delete(streams::delete),
        )
        .route(
            "/api/streams/{name}/messages",
            post(streams::append)
                .get(streams::read)
                .delete(streams::trim),
        )
        .route("/api/streams/{name}/groups", get(groups::list))
        .route(
            "/api/streams/{name}/groups/{group}",
            get(groups::show)
                .put(groups::declare)
                .delete(groups::delete),
        )
        .route(
            "/api/streams/{name}/groups/{group}/poll",
            post(groups::poll),
        )
        .route(
            "/api/streams/{name}/groups/{group}/commit",
            post(groups::commit),
        )
        .route(
            "/api/streams/{name}/groups/{group}/leave",
            post(groups::leave),
        )
        .route(
            "/api/streams/{name}/groups/{group}/reset",
            post(groups::reset),
        )
}

async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

async fn openapi() -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        include_str!("openapi.json"),
    )
        .into_response()
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such endpoint; see /api/openapi.json",
    )
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not take that method; see /api/openapi.json",
    )
}

/// GET and HEAD never change state, and a receive leases messages: it is a POST.
async fn receive_moved() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "receiving leases messages, so it is a POST: POST /api/queues/{name}/receive \
         with {\"max\", \"wait_ms\", \"visibility_timeout_ms\"}; GET and HEAD never change state",
    )
}

/// 403 `resource_locked` for an exclusive queue: it belongs to the AMQP connection
/// that declared it, and over HTTP only its settings and stats can be seen (as
/// another AMQP connection gets 405 `RESOURCE_LOCKED`).
pub(crate) fn not_exclusive(broker: &Vhost, name: &str) -> Result<(), ApiError> {
    if broker.is_exclusive(name) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "resource_locked",
            format!(
                "cannot obtain exclusive access to locked queue '{name}' in vhost '{}': it \
                 belongs to the AMQP connection that declared it",
                broker.name()
            ),
        ));
    }
    Ok(())
}

/// The whole broker, every vhost counted.
async fn broker_stats(caller: Caller, State(broker): State<Broker>) -> ApiResult {
    caller.allow_view()?;
    ok(
        StatusCode::OK,
        json!({
            "queues": broker.list().await.len(),
            "exchanges": broker.exchanges().len(),
            "body_log_bytes": broker.body_log_bytes(),
        }),
    )
}

async fn list_queues(caller: Caller, Scoped(broker): Scoped) -> ApiResult {
    caller.allow_view()?;
    ok(StatusCode::OK, json!({"queues": broker.list().await}))
}

async fn show_queue(caller: Caller, Scoped(broker): Scoped, Path(name): Path<String>) -> ApiResult {
    caller.allow_view()?;
    ok(StatusCode::OK, json!(broker.info(&name).await?))
}

async fn declare_queue(
    caller: Caller,
    Scoped(broker): Scoped,
    Path(name): Path<String>,
    JsonBody(options): JsonBody<QueueOptions>,
) -> ApiResult {
    caller.allow_declare(&name, &options)?;
    let declared = broker.declare(&name, options).await?;
    let info = broker.info(&name).await?;
    let status = match declared {
        Declared::Created => StatusCode::CREATED,
        Declared::Existed => StatusCode::OK,
    };
    ok(status, json!(info))
}

async fn delete_queue(
    caller: Caller,
    Scoped(broker): Scoped,
    Path(name): Path<String>,
) -> ApiResult {
    caller.allow(Operation::Configure, "queue", &name)?;
    not_exclusive(&broker, &name)?;
    broker.delete(&name).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn purge(caller: Caller, Scoped(broker): Scoped, Path(name): Path<String>) -> ApiResult {
    caller.allow(Operation::Read, "queue", &name)?;
    not_exclusive(&broker, &name)?;
    ok(
        StatusCode::OK,
        json!({"purged": broker.purge(&name).await?}),
    )
}

async fn send(
    caller: Caller,
    Scoped(broker): Scoped,
    _: WritesAllowed,
    Path(name): Path<String>,
    body: OneOrMany<MessageIn>,
) -> ApiResult {
    // A send is a publish through the default exchange, as RabbitMQ checks it.
    caller.allow(Operation::Write, "exchange", "")?;
    let messages = body
        .items
        .into_iter()
        .enumerate()
        .map(|(i, m)| message_in(i, m))
        .collect::<Result<Vec<_>, _>>()?;
    let outcomes = broker.send(&name, messages).await?;
    broker.traffic().confirmed(outcomes.len() as u64);
    let duplicates = outcomes.iter().filter(|o| o.duplicate).count();
    ok(
        StatusCode::CREATED,
        json!({
            "sent": outcomes.len() - duplicates,
            "duplicates": duplicates,
            "messages": outcomes,
        }),
    )
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ReceiveQuery {
    max: Option<u32>,
    wait_ms: Option<u64>,
    visibility_timeout_ms: Option<u64>,
}

/// A delivery as the API shows it, serialized straight from the broker's value.
/// Building a `serde_json::Value` per message first (nine map inserts and a copy of
/// the body each) was a tenth of the broker's CPU in a profile of `weir bench http`.
/// Fields are in alphabetical order, as that map printed them.
#[derive(Serialize)]
struct DeliveryOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    body_base64: Option<String>,
    dead_letter: Option<&'a DeadLetterInfo>,
    delivery_count: u32,
    enqueued_at_ms: i64,
    group: Option<&'a str>,
    headers: &'a BTreeMap<String, String>,
    id: &'a str,
    priority: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    receipt: Option<&'a str>,
}

impl<'a> DeliveryOut<'a> {
    fn of(d: &'a Delivery) -> Self {
        let (body, body_base64) = match std::str::from_utf8(&d.body) {
            Ok(text) => (Some(text), None),
            Err(_) => (None, Some(BASE64.encode(&d.body))),
        };
        DeliveryOut {
            body,
            body_base64,
            dead_letter: d.dead_letter.as_ref(),
            delivery_count: d.delivery_count,
            enqueued_at_ms: d.enqueued_at_ms,
            group: d.group.as_deref(),
            headers: &d.headers,
            id: &d.id,
            priority: d.priority,
            receipt: d.receipt.as_deref(),
        }
    }
}

/// `{"messages": [...]}` for a receive or a peek.
pub(crate) fn deliveries(got: &[Delivery]) -> Response {
    #[derive(Serialize)]
    struct Messages<'a> {
        messages: Vec<DeliveryOut<'a>>,
    }
    let messages = got.iter().map(DeliveryOut::of).collect();
    (StatusCode::OK, Json(Messages { messages })).into_response()
}

/// `POST /api/queues/{name}/receive`: the arguments in the JSON body, or in the
/// query (`?max=10`, handy with curl); a body's value wins.
async fn receive(
    caller: Caller,
    Scoped(broker): Scoped,
    State(long_polls): State<LongPolls>,
    Path(name): Path<String>,
    QueryParams(q): QueryParams<ReceiveQuery>,
    JsonBody(b): JsonBody<ReceiveQuery>,
) -> ApiResult {
    caller.allow(Operation::Read, "queue", &name)?;
    not_exclusive(&broker, &name)?;
    let mut request = ReceiveRequest {
        max: b.max.or(q.max).unwrap_or(1),
        wait_ms: b.wait_ms.or(q.wait_ms).unwrap_or(0),
        visibility_timeout_ms: b.visibility_timeout_ms.or(q.visibility_timeout_ms),
    };
    // Over the cap a receive is served at once (what is ready).
    let poll = long_polls.hold(request.wait_ms, broker.limits().max_wait_ms);
    request.wait_ms = poll.wait_ms;
    let got = broker.receive(&name, request).await?;
    let redelivered = got.iter().filter(|d| d.delivery_count > 1).count();
    broker.traffic().delivered(
        DeliveryMode::GetManualAck,
        got.len() as u64,
        redelivered as u64,
    );
    let what = "receives are already waiting in a long poll ([http] max_long_polls) and no \
                message is ready";
    if let Some(refused) = long_polls.refusal(&poll, got.is_empty(), what) {
        return Err(refused);
    }
    Ok(deliveries(&got))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(clippy::struct_field_names)] // `receipts` is the API's field name
struct Receipts {
    receipts: Option<Vec<String>>,
    receipt: Option<String>,
    requeue: Option<bool>,
    delay_ms: Option<u64>,
    visibility_timeout_ms: Option<u64>,
}

impl Receipts {
    fn list(&mut self) -> Result<Vec<String>, ApiError> {
        match (self.receipts.take(), self.receipt.take()) {
            (Some(list), None) => Ok(list),
            (None, Some(one)) => Ok(vec![one]),
            (None, None) => Err(ApiError::bad_request(
                "invalid_argument",
                "give receipts (a list) or receipt",
            )),
            (Some(_), Some(_)) => Err(ApiError::bad_request(
                "invalid_argument",
                "give receipts or receipt, not both",
            )),
        }
    }

    fn refuse(field: &str, present: bool) -> Result<(), ApiError> {
        if present {
            return Err(ApiError::bad_request(
                "invalid_argument",
                format!("{field} does not apply here"),
            ));
        }
        Ok(())
    }
}

/// Answers a settle: 200 with the count when every receipt took effect, else the
/// first failure's status with the per-receipt failures listed (the others took
/// effect).
fn settle_answer(verb: &str, report: &SettleReport) -> ApiResult {
    let Some((_, first)) = report.failed.first() else {
        return ok(StatusCode::OK, json!({verb: report.settled}));
    };
    let mut error = ApiError::from(first.clone());
    error.status = status_of(first);
    let failed: Vec<Value> = report
        .failed
        .iter()
        .map(|(receipt, e): &(String, BrokerError)| json!({"receipt": receipt, "error": e.code(), "reason": e.to_string()}))
        .collect();
    error.extra = Some(json!({verb: report.settled, "failed": failed}));
    Err(error)
}

async fn ack(
    caller: Caller,
    Scoped(broker): Scoped,
    Path(name): Path<String>,
    JsonBody(mut r): JsonBody<Receipts>,
) -> ApiResult {
    caller.allow(Operation::Read, "queue", &name)?;
    not_exclusive(&broker, &name)?;
    Receipts::refuse("requeue", r.requeue.is_some())?;
    Receipts::refuse("delay_ms", r.delay_ms.is_some())?;
    Receipts::refuse("visibility_timeout_ms", r.visibility_timeout_ms.is_some())?;
    let receipts = r.list()?;
    let report = broker.ack(&name, receipts).await?;
    broker.traffic().acknowledged(u64::from(report.settled));
    settle_answer("acked", &report)
}

async fn nack(
    caller: Caller,
    Scoped(broker): Scoped,
    Path(name): Path<String>,
    JsonBody(mut r): JsonBody<Receipts>,
) -> ApiResult {
    caller.allow(Operation::Read, "queue", &name)?;
    not_exclusive(&broker, &name)?;
    Receipts::refuse("visibility_timeout_ms", r.visibility_timeout_ms.is_some())?;
    let receipts = r.list()?;
    let requeue = r.requeue.unwrap_or(true);
    if !requeue && r.delay_ms.is_some() {
        return Err(ApiError::bad_request(
            "invalid_argument",
            "delay_ms needs requeue=true",
        ));
    }
    let options = NackOptions {
        requeue,
        delay_ms: r.delay_ms,
    };
    settle_answer("nacked", &broker.nack(&name, receipts, options).await?)
}

async fn extend(
    caller: Caller,
    Scoped(broker): Scoped,
    Path(name): Path<String>,
    JsonBody(mut r): JsonBody<Receipts>,
) -> ApiResult {
    caller.allow(Operation::Read, "queue", &name)?;
    not_exclusive(&broker, &name)?;
    Receipts::refuse("requeue", r.requeue.is_some())?;
    Receipts::refuse("delay_ms", r.delay_ms.is_some())?;
    let receipts = r.list()?;
    let visibility = r.visibility_timeout_ms.ok_or_else(|| {
        ApiError::bad_request("invalid_argument", "visibility_timeout_ms is required")
    })?;
    settle_answer(
        "extended",
        &broker.extend(&name, receipts, visibility).await?,
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PeekQuery {
    max: Option<u32>,
}

/// The dead letters of queue `name` are read from its dead-letter queue: read on
/// both, and neither exclusive.
fn allow_dead_letters(caller: &Caller, broker: &Vhost, name: &str) -> Result<(), ApiError> {
    caller.allow(Operation::Read, "queue", name)?;
    not_exclusive(broker, name)?;
    if let Some(dlq) = broker
        .options(name)
        .ok()
        .and_then(|o| o.dead_letter_queue.clone())
    {
        caller.allow(Operation::Read, "queue", &dlq)?;
        not_exclusive(broker, &dlq)?;
    }
    Ok(())
}

async fn peek_dead_letters(
    caller: Caller,
    Scoped(broker): Scoped,
    Path(name): Path<String>,
    QueryParams(q): QueryParams<PeekQuery>,
) -> ApiResult {
    allow_dead_letters(&caller, &broker, &name)?;
    let got = broker.peek_dead_letters(&name, q.max.unwrap_or(10)).await?;
    Ok(deliveries(&got))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RedriveBody {
    max: Option<u32>,
}

async fn redrive(
    caller: Caller,
    Scoped(broker): Scoped,
    _: WritesAllowed,
    Path(name): Path<String>,
    JsonBody(b): JsonBody<RedriveBody>,
) -> ApiResult {
    // Takes messages from this queue and publishes them back to the queues they
    // came from through the default exchange.
    allow_dead_letters(&caller, &broker, &name)?;
    caller.allow(Operation::Write, "exchange", "")?;
    let n = broker
        .redrive_dead_letters(&name, b.max.unwrap_or(u32::MAX))
        .await?;
    ok(StatusCode::OK, json!({"redriven": n}))
}
