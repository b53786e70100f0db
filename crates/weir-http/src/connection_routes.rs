//! The client connections open now (`GET /api/connections`, `GET` and `DELETE
//! /api/connections/{id}`), as RabbitMQ's management API has them: a user tagged
//! `administrator` or `monitoring` sees every connection, any other user its own;
//! closing one needs `administrator` or to be its user. A close tells the client
//! why (the `X-Reason` header): AMQP clients receive `connection.close` with 320
//! `CONNECTION_FORCED` and that text.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use weir_broker::Broker;
use weir_broker::connections::ConnectionInfo;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::ApiResult;

/// The reason given when a close names none.
pub(crate) const DEFAULT_REASON: &str = "Closed via the weir HTTP API";

/// Longest reason kept, in bytes (AMQP's reply text is a short string).
const REASON_MAX: usize = 200;

pub(crate) fn visible(caller: &Caller, connection: &ConnectionInfo) -> bool {
    caller.sees_every_vhost() || connection.user.as_deref() == Some(caller.principal.name.as_str())
}

fn not_found(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "connection_not_found",
        format!("no open connection '{id}'"),
    )
}

/// Connection `id` if the caller may see it.
fn find(caller: &Caller, broker: &Broker, id: &str) -> Result<ConnectionInfo, ApiError> {
    id.parse::<u64>()
        .ok()
        .and_then(|n| broker.connections().get(n))
        .filter(|c| visible(caller, c))
        .ok_or_else(|| not_found(id))
}

/// `GET /api/connections`.
pub(crate) async fn list(caller: Caller, State(broker): State<Broker>) -> ApiResult {
    let connections: Vec<ConnectionInfo> = broker
        .connections()
        .list()
        .into_iter()
        .filter(|c| visible(&caller, c))
        .collect();
    Ok(axum::Json(connections).into_response())
}

/// `GET /api/connections/{id}`.
pub(crate) async fn show(
    caller: Caller,
    State(broker): State<Broker>,
    Path(id): Path<String>,
) -> ApiResult {
    Ok(axum::Json(find(&caller, &broker, &id)?).into_response())
}

/// `DELETE /api/connections/{id}`, the reason in `X-Reason`.
pub(crate) async fn close(
    caller: Caller,
    State(broker): State<Broker>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    let reason = match headers.get("x-reason") {
        None => DEFAULT_REASON,
        Some(value) => value.to_str().map_err(|_| {
            ApiError::bad_request("invalid_argument", "X-Reason: not visible ASCII text")
        })?,
    };
    close_as(&caller, &broker, &id, reason)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Closes connection `id` as `caller` asks (`administrator`, or its own user),
/// telling its client `reason` (at most [`REASON_MAX`] bytes).
pub(crate) fn close_as(
    caller: &Caller,
    broker: &Broker,
    id: &str,
    reason: &str,
) -> Result<(), ApiError> {
    let connection = find(caller, broker, id)?;
    if connection.user.as_deref() != Some(caller.principal.name.as_str()) {
        caller.allow_administrator()?;
    }
    if reason.len() > REASON_MAX {
        return Err(ApiError::bad_request(
            "invalid_argument",
            format!("the reason is longer than {REASON_MAX} bytes"),
        ));
    }
    if !broker.connections().close(connection.id, reason) {
        return Err(not_found(id));
    }
    Ok(())
}
