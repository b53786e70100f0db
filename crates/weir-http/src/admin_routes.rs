//! Users, vhosts, permissions and definitions over HTTP: what `weir
//! user|vhost|permissions|definitions` and RabbitMQ's management API do. Only users tagged `administrator` may call these,
//! except `GET /api/whoami`. Changes write `access.json` durably (and hash
//! passwords), so they run on a blocking thread.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::json;
use weir_broker::Broker;
use weir_broker::access::{Access, AccessError, Patterns};
use weir_broker::definitions::BrokerDefinitions;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::JsonBody;
use crate::state::{ApiResult, ok};

/// The answer to a refused change.
fn access_error(e: &AccessError) -> ApiError {
    let reason = e.to_string();
    match e {
        AccessError::UserExists(_) => ApiError::new(StatusCode::CONFLICT, "user_exists", reason),
        AccessError::VhostExists(_) => ApiError::new(StatusCode::CONFLICT, "vhost_exists", reason),
        AccessError::NoSuchUser(_) => {
            ApiError::new(StatusCode::NOT_FOUND, "user_not_found", reason)
        }
        AccessError::NoSuchVhost(_) => {
            ApiError::new(StatusCode::NOT_FOUND, "vhost_not_found", reason)
        }
        AccessError::InvalidName(_) => ApiError::bad_request("invalid_name", reason),
        AccessError::InvalidPattern { .. } => ApiError::bad_request("invalid_argument", reason),
        AccessError::BadFile { .. } | AccessError::Io { .. } => {
            tracing::error!(error = %reason, "access change failed");
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "storage_error", reason)
        }
    }
}

/// Runs a change of the access model on a blocking thread (a password hash takes
/// tens of milliseconds, the file write an fsync).
pub(crate) async fn change<T: Send + 'static>(
    broker: &Broker,
    f: impl FnOnce(&Access) -> Result<T, AccessError> + Send + 'static,
) -> Result<T, ApiError> {
    let access: Arc<Access> = broker.access();
    tokio::task::spawn_blocking(move || f(&access))
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                format!("the change did not finish: {e}"),
            )
        })?
        .map_err(|e| access_error(&e))
}

/// `GET /api/whoami`: the caller's name and tags.
pub(crate) async fn whoami(caller: Caller) -> ApiResult {
    ok(
        StatusCode::OK,
        json!({"name": caller.principal.name, "tags": caller.principal.tags}),
    )
}

pub(crate) async fn list_users(caller: Caller, State(broker): State<Broker>) -> ApiResult {
    caller.allow_administrator()?;
    let users: Vec<_> = broker
        .access()
        .users()
        .into_iter()
        .map(|u| json!({"name": u.name, "tags": u.tags}))
        .collect();
    ok(StatusCode::OK, json!({ "users": users }))
}

pub(crate) async fn show_user(
    caller: Caller,
    State(broker): State<Broker>,
    Path(name): Path<String>,
) -> ApiResult {
    caller.allow_administrator()?;
    let user = broker
        .access()
        .users()
        .into_iter()
        .find(|u| u.name == name)
        .ok_or_else(|| access_error(&AccessError::NoSuchUser(name)))?;
    ok(
        StatusCode::OK,
        json!({"name": user.name, "tags": user.tags}),
    )
}

/// `tags` present: a list or RabbitMQ's comma-separated string (the access
/// model's own reader).
fn some_tags<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    weir_broker::access::definitions::tags(d).map(Some)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UserBody {
    password: Option<String>,
    #[serde(default, deserialize_with = "some_tags")]
    tags: Option<Vec<String>>,
}

/// `PUT /api/users/{name}`: creates the user (a password is needed) or changes
/// its password and/or tags. 201 created, 200 changed.
pub(crate) async fn put_user(
    caller: Caller,
    State(broker): State<Broker>,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<UserBody>,
) -> ApiResult {
    caller.allow_administrator()?;
    let tags = body.tags;
    let exists = broker.access().users().iter().any(|u| u.name == name);
    let status = if exists {
        let (user, password, new_tags) = (name.clone(), body.password, tags);
        change(&broker, move |access| {
            // Tags first: they are what can be refused (a bad name), so a refused
            // request does not leave a new password behind.
            if let Some(tags) = new_tags {
                access.set_tags(&user, &tags)?;
            }
            if let Some(password) = password {
                access.set_password(&user, &password)?;
            }
            Ok(())
        })
        .await?;
        StatusCode::OK
    } else {
        let Some(password) = body.password else {
            return Err(ApiError::bad_request(
                "invalid_argument",
                "a new user needs a password",
            ));
        };
        let user = name.clone();
        change(&broker, move |access| {
            access.add_user(&user, &password, &tags.unwrap_or_default())
        })
        .await?;
        StatusCode::CREATED
    };
    let tags = broker
        .access()
        .users()
        .into_iter()
        .find(|u| u.name == name)
        .map(|u| u.tags)
        .unwrap_or_default();
    ok(status, json!({"name": name, "tags": tags}))
}

pub(crate) async fn delete_user(
    caller: Caller,
    State(broker): State<Broker>,
    Path(name): Path<String>,
) -> ApiResult {
    caller.allow_administrator()?;
    change(&broker, move |access| access.remove_user(&name)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub(crate) async fn list_vhosts(caller: Caller, State(broker): State<Broker>) -> ApiResult {
    caller.allow_administrator()?;
    let vhosts: Vec<_> = broker
        .access()
        .vhosts()
        .into_iter()
        .map(|name| json!({ "name": name }))
        .collect();
    ok(StatusCode::OK, json!({ "vhosts": vhosts }))
}

/// `PUT /api/vhosts/{name}`: 201 created, 200 existed.
pub(crate) async fn put_vhost(
    caller: Caller,
    State(broker): State<Broker>,
    Path(name): Path<String>,
) -> ApiResult {
    caller.allow_administrator()?;
    if broker.access().has_vhost(&name) {
        return ok(StatusCode::OK, json!({ "name": name }));
    }
    let vhost = name.clone();
    change(&broker, move |access| access.add_vhost(&vhost)).await?;
    ok(StatusCode::CREATED, json!({ "name": name }))
}

pub(crate) async fn delete_vhost(
    caller: Caller,
    State(broker): State<Broker>,
    Path(name): Path<String>,
) -> ApiResult {
    caller.allow_administrator()?;
    // Its permissions, queues (with their messages) and exchanges; its AMQP
    // connections are closed with 320 CONNECTION_FORCED. `/` stays.
    broker.delete_vhost(&name).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub(crate) async fn list_permissions(caller: Caller, State(broker): State<Broker>) -> ApiResult {
    caller.allow_administrator()?;
    let permissions: Vec<_> = broker
        .access()
        .permissions()
        .into_iter()
        .map(|p| {
            json!({
                "user": p.user,
                "vhost": p.vhost,
                "configure": p.patterns.configure,
                "write": p.patterns.write,
                "read": p.patterns.read,
            })
        })
        .collect();
    ok(StatusCode::OK, json!({ "permissions": permissions }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PermissionBody {
    configure: String,
    write: String,
    read: String,
}

/// `PUT /api/permissions/{vhost}/{user}` (`/` as `%2F`, as in RabbitMQ's API).
pub(crate) async fn put_permissions(
    caller: Caller,
    State(broker): State<Broker>,
    Path((vhost, user)): Path<(String, String)>,
    JsonBody(body): JsonBody<PermissionBody>,
) -> ApiResult {
    caller.allow_administrator()?;
    let patterns = Patterns {
        configure: body.configure,
        write: body.write,
        read: body.read,
    };
    let answer = json!({
        "user": user,
        "vhost": vhost,
        "configure": patterns.configure,
        "write": patterns.write,
        "read": patterns.read,
    });
    change(&broker, move |access| {
        access.set_permissions(&user, &vhost, patterns)
    })
    .await?;
    ok(StatusCode::OK, answer)
}

pub(crate) async fn delete_permissions(
    caller: Caller,
    State(broker): State<Broker>,
    Path((vhost, user)): Path<(String, String)>,
) -> ApiResult {
    caller.allow_administrator()?;
    let (v, u) = (vhost.clone(), user.clone());
    let had = change(&broker, move |access| access.clear_permissions(&u, &v)).await?;
    if !had {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "permission_not_found",
            format!("user '{user}' has no permissions in vhost '{vhost}'"),
        ));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /api/definitions`: users (with hashes), vhosts, permissions, queues,
/// exchanges and bindings, in RabbitMQ's shape.
pub(crate) async fn export_definitions(caller: Caller, State(broker): State<Broker>) -> ApiResult {
    caller.allow_administrator()?;
    ok(StatusCode::OK, json!(broker.export_definitions().await))
}

/// `POST /api/definitions`: builds what a definitions document describes (a weir
/// export or RabbitMQ's); answers what it did and what it did not import.
pub(crate) async fn import_definitions(
    caller: Caller,
    State(broker): State<Broker>,
    JsonBody(definitions): JsonBody<BrokerDefinitions>,
) -> ApiResult {
    caller.allow_administrator()?;
    let report = broker.import_definitions(definitions).await?;
    ok(StatusCode::OK, json!(report))
}
