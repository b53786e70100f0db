//! The Connections page: who is connected? Every open AMQP connection the caller
//! may see (all of them with `administrator` or `monitoring`, else its own), with
//! its peer, user, client and what it holds; and a form to close one with a reason
//! (the client receives `connection.close` 320 with it), as `DELETE
//! /api/connections/{id}` does.

use askama::Template;
use axum::extract::{Form, Path, Query, State};
use axum::response::Response;
use serde::Deserialize;
use weir_broker::Broker;
use weir_broker::connections::ConnectionInfo;

use super::{Flash, PageInfo, done, format, render};
use crate::auth::Caller;

struct ConnectionRow {
    id: u64,
    peer: String,
    user: String,
    vhost: String,
    client: String,
    name: String,
    since: String,
    channels: u64,
    consumers: u64,
    prefetch: String,
    unacked: String,
    blocked: bool,
}

impl ConnectionRow {
    fn of(c: ConnectionInfo, now_ms: i64) -> ConnectionRow {
        let client = match (&c.client.product, &c.client.version) {
            (Some(p), Some(v)) => format!("{p} {v}"),
            (Some(p), None) => p.clone(),
            _ => String::new(),
        };
        let age = u64::try_from(now_ms - c.connected_at_ms).unwrap_or(0);
        ConnectionRow {
            id: c.id,
            peer: c.peer,
            user: c.user.unwrap_or_default(),
            vhost: c.vhost.unwrap_or_default(),
            client,
            name: c.client.connection_name.unwrap_or_default(),
            since: format!("{} ago", format::age_ms(age)),
            channels: c.figures.channels,
            consumers: c.figures.consumers,
            prefetch: if c.figures.prefetch == 0 {
                "unlimited".to_owned()
            } else {
                format::count(c.figures.prefetch)
            },
            unacked: format::count(c.figures.unacked),
            blocked: c.figures.blocked,
        }
    }
}

#[derive(Template)]
#[template(path = "connections.html")]
struct ConnectionsPage {
    page: PageInfo,
    rows: Vec<ConnectionRow>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// `GET /ui/connections`.
pub(crate) async fn page(
    caller: Caller,
    State(broker): State<Broker>,
    Query(flash): Query<Flash>,
) -> Response {
    let now = now_ms();
    let rows = broker
        .connections()
        .list()
        .into_iter()
        .filter(|c| crate::connection_routes::visible(&caller, c))
        .map(|c| ConnectionRow::of(c, now))
        .collect();
    render(&ConnectionsPage {
        page: PageInfo::new("connections", &caller, &flash),
        rows,
    })
}

#[derive(Deserialize)]
pub(crate) struct CloseForm {
    #[serde(default)]
    reason: String,
}

/// `POST /ui/connections/{id}/close`.
pub(crate) async fn close(
    caller: Caller,
    State(broker): State<Broker>,
    Path(id): Path<String>,
    Form(form): Form<CloseForm>,
) -> Response {
    let reason = form.reason.trim();
    let reason = if reason.is_empty() {
        crate::connection_routes::DEFAULT_REASON
    } else {
        reason
    };
    let outcome = crate::connection_routes::close_as(&caller, &broker, &id, reason)
        .map(|()| format!("Closed connection {id}: {reason}"))
        .map_err(|e| e.reason);
    done("/ui/connections", outcome)
}
