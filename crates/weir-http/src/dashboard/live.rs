//! The live panels' figures, sent once a second as server-sent events (one JSON
//! object per event; `assets/weir.js` puts them in the page and its charts).
//!
//! The Overview's figures come from `figures.rs` (computed at most once a second
//! for every open page together). A queue page's figures are its own queue's
//! stats, a group page's its lag, and a stream page's tail the records appended
//! since it opened, each computed per page.

#![allow(
    clippy::cast_precision_loss,
    reason = "rates and percentages are shown rounded"
)]

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use serde::Deserialize;
use serde_json::{Value, json};
use weir_broker::Broker;
use weir_broker::stream::ReadFrom;

use super::figures::per_second;
use super::format;
use super::streams::{RecordRow, readable};
use crate::auth::Caller;
use crate::state::AppState;

/// How often the panels update.
const EVERY: Duration = Duration::from_secs(1);

/// Server-sent events: `figures` once a second until the page goes away.
fn events<F, Fut>(figures: F) -> Response
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Value> + Send,
{
    let figures = Arc::new(figures);
    let stream = futures_util::stream::unfold(
        (figures, tokio::time::interval(EVERY)),
        |(figures, mut tick)| async move {
            tick.tick().await;
            let event = Event::default().data((figures)().await.to_string());
            Some((Ok::<Event, Infallible>(event), (figures, tick)))
        },
    );
    sse(stream)
}

fn sse(stream: impl Stream<Item = Result<Event, Infallible>> + Send + 'static) -> Response {
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// `GET /ui/live/overview`.
pub(crate) async fn overview(_caller: Caller, State(state): State<AppState>) -> Response {
    events(move || {
        let state = state.clone();
        async move {
            let figures = state.dashboard.live.overview(&state.broker).await;
            Value::Object((*figures).clone())
        }
    })
}

/// `GET /ui/live/queues/{vhost}/{name}`: the queue's depth and its send and ack
/// rates.
pub(crate) async fn queue(
    caller: Caller,
    State(broker): State<Broker>,
    Path((vhost, name)): Path<(String, String)>,
) -> Response {
    if broker
        .access()
        .check_view(&caller.principal, &vhost)
        .is_err()
    {
        return StatusCode::NOT_FOUND.into_response();
    }
    let Ok(view) = broker.vhost(&vhost) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let last = Arc::new(std::sync::Mutex::new(None::<(Instant, u64, u64)>));
    events(move || {
        let (view, name, last) = (view.clone(), name.clone(), Arc::clone(&last));
        async move {
            let Ok(info) = view.info(&name).await else {
                return json!({"ready_t": "gone"});
            };
            let s = &info.stats;
            let now = Instant::now();
            let mut last = last
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let (sent, acked) = match *last {
                Some((at, sent, acked)) => {
                    let seconds = now.duration_since(at).as_secs_f64();
                    (
                        per_second(s.sent_total, sent, seconds),
                        per_second(s.acked_total, acked, seconds),
                    )
                }
                None => (0.0, 0.0),
            };
            *last = Some((now, s.sent_total, s.acked_total));
            json!({
                "ready": s.ready, "unacked": s.leased, "sent": sent, "acked": acked,
                "ready_t": format::count(s.ready), "unacked_t": format::count(s.leased),
                "delayed_t": format::count(s.delayed),
                "age_t": s.oldest_age_ms.map_or_else(|| "empty".to_owned(), format::age_ms),
                "sent_t": format::rate(sent), "acked_t": format::rate(acked),
            })
        }
    })
}

#[derive(Deserialize)]
pub(crate) struct TailQuery {
    #[serde(default)]
    partition: u32,
}

/// Most records one tail event carries.
const TAIL_MAX: u32 = 100;

/// `GET /ui/live/streams/{vhost}/{name}?partition=N`: the records appended to
/// the partition from now on, as rows (`{"rows": [...]}` once a second).
pub(crate) async fn tail(
    caller: Caller,
    State(broker): State<Broker>,
    Path((vhost, name)): Path<(String, String)>,
    Query(q): Query<TailQuery>,
) -> Response {
    let Some(view) = readable(&caller, &broker, &vhost, &name).ok() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let start = view
        .read_stream(&name, q.partition, ReadFrom::Next, 1, 0)
        .await
        .map_or(0, |r| r.next);
    let next = Arc::new(std::sync::atomic::AtomicU64::new(start));
    events(move || {
        let (view, name, next) = (view.clone(), name.clone(), Arc::clone(&next));
        async move {
            let from = next.load(std::sync::atomic::Ordering::Relaxed);
            let rows: Vec<Value> = match view
                .read_stream(&name, q.partition, ReadFrom::Offset(from), TAIL_MAX, 0)
                .await
            {
                Ok(read) => {
                    next.store(read.next, std::sync::atomic::Ordering::Relaxed);
                    read.records
                        .iter()
                        .map(|r| {
                            let row = RecordRow::of(r);
                            json!({
                                "partition": row.partition, "offset": row.offset, "time": row.time,
                                "key": row.key, "headers": row.headers, "body": row.body,
                            })
                        })
                        .collect()
                }
                Err(_) => Vec::new(),
            };
            json!({ "rows": rows })
        }
    })
}

/// `GET /ui/live/groups/{vhost}/{stream}/groups/{group}`: the group's lag.
pub(crate) async fn group(
    caller: Caller,
    State(broker): State<Broker>,
    Path((vhost, stream, group)): Path<(String, String, String)>,
) -> Response {
    let Some(view) = readable(&caller, &broker, &vhost, &stream).ok() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    events(move || {
        let (view, stream, group) = (view.clone(), stream.clone(), group.clone());
        async move {
            let Ok(g) = view.group(&stream, &group).await else {
                return json!({"lag_t": "gone"});
            };
            let lag: u64 = g.partitions.iter().map(|p| p.lag).sum();
            let lag_ms = g.partitions.iter().map(|p| p.lag_ms).max().unwrap_or(0);
            json!({
                "lag": lag, "lag_seconds": lag_ms as f64 / 1000.0,
                "lag_t": format::count(lag), "lag_age_t": format::age_ms(lag_ms),
                "members_t": format::count(g.members.len() as u64),
            })
        }
    })
}
