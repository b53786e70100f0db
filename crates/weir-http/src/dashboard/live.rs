//! The live panels' figures, sent once a second as server-sent events (one JSON
//! object per event; `assets/weir.js` puts them in the page and its charts).
//!
//! The overview's figures cost a look at every queue, so they are computed at most
//! once a second whatever the number of open pages ([`Live`]): a second viewer
//! costs a clone of the last figures. A queue page's figures are its own queue's
//! stats, computed per page.

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
use serde_json::{Map, Value, json};
use weir_broker::access::Operation;
use weir_broker::metrics::{Held, HistogramSnapshot, Protocol, TrafficCounts, io_metrics};
use weir_broker::stream::ReadFrom;
use weir_broker::{Broker, Vhost};

use super::format;
use super::streams::RecordRow;
use crate::auth::Caller;
use crate::state::AppState;

/// How often the panels update.
const EVERY: Duration = Duration::from_secs(1);

/// Figures younger than this are shown again rather than computed anew.
const FRESH: Duration = Duration::from_millis(900);

/// The overview's figures, shared by every open page.
#[derive(Default)]
pub(crate) struct Live {
    last: tokio::sync::Mutex<Option<Sample>>,
}

/// What the last computation saw, to take rates from.
struct Sample {
    at: Instant,
    traffic: TrafficCounts,
    syncs: HistogramSnapshot,
    figures: Arc<Map<String, Value>>,
}

impl Live {
    /// The overview's figures now: the last ones if they are under a second old.
    pub(crate) async fn overview(&self, broker: &Broker) -> Arc<Map<String, Value>> {
        let mut last = self.last.lock().await;
        if let Some(sample) = last.as_ref()
            && sample.at.elapsed() < FRESH
        {
            return Arc::clone(&sample.figures);
        }
        let at = Instant::now();
        let traffic = broker.traffic().counts();
        let syncs = io_metrics().data_sync_seconds;
        let figures = Arc::new(overview_figures(broker, last.as_ref(), at, &traffic, &syncs).await);
        *last = Some(Sample {
            at,
            traffic,
            syncs,
            figures: Arc::clone(&figures),
        });
        figures
    }
}

/// Counts per second between two samples.
fn per_second(now: u64, before: u64, seconds: f64) -> f64 {
    if seconds <= 0.0 {
        return 0.0;
    }
    (now.saturating_sub(before) as f64 / seconds * 10.0).round() / 10.0
}

/// The 99th percentile of the syncs between two histogram snapshots (the upper
/// bound of the bucket it falls in), if there were any.
fn p99(now: &HistogramSnapshot, before: Option<&HistogramSnapshot>) -> Option<f64> {
    let total = now.count - before.map_or(0, |b| b.count);
    if total == 0 {
        return None;
    }
    let want = total - total / 100;
    now.buckets.iter().enumerate().find_map(|(i, (bound, n))| {
        let earlier = before.and_then(|b| b.buckets.get(i)).map_or(0, |(_, n)| *n);
        (n - earlier >= want).then_some(*bound)
    })
}

async fn overview_figures(
    broker: &Broker,
    last: Option<&Sample>,
    at: Instant,
    traffic: &TrafficCounts,
    syncs: &HistogramSnapshot,
) -> Map<String, Value> {
    let seconds = last.map_or(0.0, |l| at.duration_since(l.at).as_secs_f64());
    let before = last.map_or_else(TrafficCounts::default, |l| l.traffic);
    let rate = |now: u64, then: u64| per_second(now, then, seconds);
    let delivered: u64 = traffic.delivered.iter().sum();
    let dead: u64 = traffic.dead_lettered.iter().sum();
    let rates = [
        ("publish", rate(traffic.received, before.received)),
        ("confirm", rate(traffic.confirmed, before.confirmed)),
        (
            "deliver",
            rate(delivered, before.delivered.iter().sum::<u64>()),
        ),
        ("ack", rate(traffic.acknowledged, before.acknowledged)),
        ("redeliver", rate(traffic.redelivered, before.redelivered)),
        (
            "dead_letter",
            rate(dead, before.dead_lettered.iter().sum::<u64>()),
        ),
    ];
    let mut f = Map::new();
    for (key, value) in rates {
        f.insert(key.to_owned(), json!(value));
        f.insert(format!("{key}_t"), json!(format::rate(value)));
    }
    let queues = broker.list().await;
    let sum = |pick: fn(&weir_broker::api::QueueStats) -> u64| -> u64 {
        queues.iter().map(|q| pick(&q.stats)).sum()
    };
    for (key, value) in [
        ("ready", sum(|s| s.ready)),
        ("unacked", sum(|s| s.leased)),
        ("delayed", sum(|s| s.delayed)),
        ("queues", queues.len() as u64),
    ] {
        f.insert(key.to_owned(), json!(value));
        f.insert(format!("{key}_t"), json!(format::count(value)));
    }
    let p99 = p99(syncs, last.map(|l| &l.syncs));
    f.insert(
        "fsync_p99_t".to_owned(),
        json!(p99.map_or_else(|| "no syncs".to_owned(), format::seconds)),
    );
    let front_ends = broker.front_ends();
    for (key, held) in [
        ("connections", Held::Connection),
        ("channels", Held::Channel),
        ("consumers", Held::Consumer),
    ] {
        let open: u64 = Protocol::ALL
            .into_iter()
            .map(|p| front_ends.count(p, held).open)
            .sum();
        f.insert(format!("{key}_t"), json!(format::count(open)));
    }
    let resources = broker.resources();
    let alarm = resources.alarms.reason();
    f.insert(
        "health".to_owned(),
        json!(alarm.map_or_else(|| "healthy".to_owned(), |r| format!("alarm: {r}"))),
    );
    f.insert(
        "disk_free_t".to_owned(),
        json!(
            resources
                .disk_free_bytes
                .map_or_else(|| "unknown".to_owned(), format::bytes)
        ),
    );
    f.insert(
        "memory_t".to_owned(),
        json!(
            resources
                .memory_used_bytes
                .map_or_else(|| "unknown".to_owned(), format::bytes)
        ),
    );
    f
}

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
        return super::to_login("/");
    }
    let Ok(view) = broker.vhost(&vhost) else {
        return super::to_login("/");
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
    let Some(view) = readable(&caller, &broker, &vhost, &name) else {
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
    let Some(view) = readable(&caller, &broker, &vhost, &stream) else {
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

/// The broker seen from `vhost` if `caller` may read stream `name` there.
fn readable(caller: &Caller, broker: &Broker, vhost: &str, name: &str) -> Option<Vhost> {
    super::allowed(
        broker,
        &caller.principal,
        vhost,
        Operation::Read,
        "queue",
        name,
    )
    .ok()?;
    broker.vhost(vhost).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_p99_is_taken_over_the_syncs_between_two_snapshots() {
        let before = HistogramSnapshot {
            buckets: vec![(0.001, 1000), (0.01, 1000), (0.1, 1000)],
            count: 1000,
            sum: 0.5,
        };
        // 100 syncs since: 98 under 1 ms, 2 between 1 and 10 ms.
        let now = HistogramSnapshot {
            buckets: vec![(0.001, 1098), (0.01, 1100), (0.1, 1100)],
            count: 1100,
            sum: 0.6,
        };
        assert_eq!(p99(&now, Some(&before)), Some(0.01));
        assert_eq!(p99(&before, Some(&before)), None);
        assert!((per_second(30, 10, 2.0) - 10.0).abs() < 1e-9);
    }
}
