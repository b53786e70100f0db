//! Prometheus metrics (docs/metrics.md): `GET /metrics`, aggregated so its size
//! does not grow with the number of queues, and `GET /metrics/per-object`, with a
//! series per queue, stream partition and consumer group (optionally only the
//! families matching `family` and the queues or streams matching `queue`, both
//! regular expressions matched whole).
//!
//! Names follow RabbitMQ's Prometheus plugin where it has one, with `weir_` in
//! place of `rabbitmq_` (`weir_queue_messages_ready{vhost, queue}` is
//! `rabbitmq_queue_messages_ready`); units are base units (bytes, seconds) and
//! counters end in `_total`. Both need a user tagged `administrator` or
//! `monitoring`, since they cover every vhost.

#![allow(
    clippy::cast_precision_loss,
    reason = "Prometheus samples are f64: counts and bytes below 2^52 are exact, larger ones close"
)]

mod global;
mod text;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use weir_broker::Broker;
use weir_broker::api::QueueInfo;
use weir_broker::metrics::{Held, HeldCounts, Protocol, io_metrics};
use weir_broker::names::split;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::QueryParams;
use crate::state::AppState;
use text::{Kind, Text};

/// The text format's media type.
const CONTENT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Most bytes of a `family` or `queue` pattern's compiled program.
const PATTERN_SIZE_LIMIT: usize = 1 << 20;

/// `GET /metrics`.
pub(crate) async fn aggregated(
    caller: Caller,
    State(state): State<AppState>,
) -> Result<Response, ApiError> {
    caller.allow_monitoring()?;
    let broker = &state.broker;
    let queues = broker.list().await;
    let mut t = Text::new(None);
    process(&mut t, broker);
    front_ends(&mut t, broker);
    global::messages(&mut t, broker);
    log_io(&mut t);
    t.family(
        "weir_http_requests_total",
        Kind::Counter,
        "HTTP requests answered, by method, route and status code.",
    );
    for ((method, route, code), n) in state.requests.snapshot() {
        let code = code.to_string();
        let labels = [
            ("method", method.as_str()),
            ("route", route.as_str()),
            ("code", code.as_str()),
        ];
        t.sample("weir_http_requests_total", &labels, n as f64);
    }
    queue_totals(&mut t, &queues);
    t.single(
        "weir_streams",
        Kind::Gauge,
        "Streams.",
        broker.all_streams().len() as f64,
    );
    Ok(answer(t.finish()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PerObjectQuery {
    family: Option<String>,
    queue: Option<String>,
}

/// `GET /metrics/per-object`.
pub(crate) async fn per_object(
    caller: Caller,
    State(broker): State<Broker>,
    QueryParams(query): QueryParams<PerObjectQuery>,
) -> Result<Response, ApiError> {
    caller.allow_monitoring()?;
    let family = query
        .family
        .as_deref()
        .map(|p| pattern("family", p))
        .transpose()?;
    let object = query
        .queue
        .as_deref()
        .map(|p| pattern("queue", p))
        .transpose()?;
    let take = |name: &str| object.as_ref().is_none_or(|re| re.is_match(split(name).1));
    let mut queues = broker.list().await;
    queues.retain(|q| take(&q.name));
    let mut t = Text::new(family.as_ref());
    per_queue(&mut t, &queues);
    per_stream(&mut t, &broker, &take).await;
    Ok(answer(t.finish()))
}

/// A pattern matched whole, its size bounded.
fn pattern(what: &str, p: &str) -> Result<regex::Regex, ApiError> {
    regex::RegexBuilder::new(&format!("^(?:{p})$"))
        .size_limit(PATTERN_SIZE_LIMIT)
        .build()
        .map_err(|e| ApiError::bad_request("invalid_argument", format!("{what}: {e}")))
}

fn answer(body: String) -> Response {
    let mut response = (StatusCode::OK, body).into_response();
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(CONTENT));
    response
}

fn flag(on: bool) -> f64 {
    if on { 1.0 } else { 0.0 }
}

/// Build, resources and alarms.
fn process(t: &mut Text<'_>, broker: &Broker) {
    t.family(
        "weir_build_info",
        Kind::Gauge,
        "The running build: 1, with its version as a label.",
    );
    t.sample(
        "weir_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1.0,
    );
    let r = broker.resources();
    let known = |v: Option<u64>| v.map_or(f64::NAN, |v| v as f64);
    t.single(
        "weir_disk_space_available_bytes",
        Kind::Gauge,
        "Free space under the data directory (NaN: not measured).",
        known(r.disk_free_bytes),
    );
    t.single(
        "weir_disk_space_available_limit_bytes",
        Kind::Gauge,
        "Free space below which the disk alarm blocks publishers (0: no alarm).",
        r.disk_free_limit_bytes as f64,
    );
    t.single(
        "weir_process_resident_memory_bytes",
        Kind::Gauge,
        "The broker's resident memory (NaN: not measured).",
        known(r.memory_used_bytes),
    );
    t.single(
        "weir_resident_memory_limit_bytes",
        Kind::Gauge,
        "Resident memory above which the memory alarm blocks publishers (0: no alarm).",
        r.memory_limit_bytes as f64,
    );
    t.single(
        "weir_alarms_free_disk_space_watermark",
        Kind::Gauge,
        "1 while the disk alarm is raised.",
        flag(r.alarms.disk),
    );
    t.single(
        "weir_alarms_memory_used_watermark",
        Kind::Gauge,
        "1 while the memory alarm is raised.",
        flag(r.alarms.memory),
    );
}

/// Connections, channels and consumers per protocol.
fn front_ends(t: &mut Text<'_>, broker: &Broker) {
    let counts = broker.front_ends();
    let families = [
        (Held::Connection, "connections", "Client connections"),
        (Held::Channel, "channels", "AMQP channels"),
        (Held::Consumer, "consumers", "AMQP consumers"),
    ];
    for (held, name, what) in families {
        let figures: [HeldFamily; 3] = [
            ("", Kind::Gauge, "open now", |c| c.open),
            (
                "_opened_total",
                Kind::Counter,
                "opened since the broker started",
                |c| c.opened_total,
            ),
            (
                "_closed_total",
                Kind::Counter,
                "closed since the broker started",
                |c| c.closed_total,
            ),
        ];
        for (suffix, kind, help, figure) in figures {
            let family = format!("weir_{name}{suffix}");
            t.family(&family, kind, &format!("{what} {help}, by protocol."));
            for protocol in Protocol::ALL {
                let value = figure(counts.count(protocol, held));
                t.sample(&family, &[("protocol", protocol.name())], value as f64);
            }
        }
    }
}

/// A family of counts of what front ends hold: name suffix, type, help, figure.
type HeldFamily = (&'static str, Kind, &'static str, fn(HeldCounts) -> u64);

/// The log's I/O: fsync durations and commit group sizes.
fn log_io(t: &mut Text<'_>) {
    let io = io_metrics();
    t.family(
        "weir_log_data_sync_seconds",
        Kind::Histogram,
        "How long each fdatasync of log data took.",
    );
    t.histogram("weir_log_data_sync_seconds", &[], &io.data_sync_seconds);
    t.family(
        "weir_log_commit_group_appends",
        Kind::Histogram,
        "Appends per commit group (one write, and one fdatasync under fsync = always).",
    );
    t.histogram(
        "weir_log_commit_group_appends",
        &[],
        &io.commit_group_appends,
    );
}

/// The queues' figures summed.
fn queue_totals(t: &mut Text<'_>, queues: &[QueueInfo]) {
    t.single("weir_queues", Kind::Gauge, "Queues.", queues.len() as f64);
    for (name, kind, help, value) in queue_families() {
        t.single(
            name,
            kind,
            help,
            queues.iter().map(value).sum::<u64>() as f64,
        );
    }
}

/// A queue family: name, type, help, and the figure of one queue.
type QueueFamily = (&'static str, Kind, &'static str, fn(&QueueInfo) -> u64);

fn queue_families() -> [QueueFamily; 9] {
    [
        (
            "weir_queue_messages_ready",
            Kind::Gauge,
            "Messages ready to be delivered.",
            |q| q.stats.ready,
        ),
        (
            "weir_queue_messages_unacked",
            Kind::Gauge,
            "Messages delivered and not yet acknowledged.",
            |q| q.stats.leased,
        ),
        (
            "weir_queue_messages_delayed",
            Kind::Gauge,
            "Messages waiting for their delay or retry backoff.",
            |q| q.stats.delayed,
        ),
        (
            "weir_queue_messages_bytes",
            Kind::Gauge,
            "Body bytes of the messages held.",
            |q| q.stats.bytes,
        ),
        (
            "weir_queue_consumers",
            Kind::Gauge,
            "Receivers waiting in the queue for messages at that moment (long polls).",
            |q| q.stats.consumers,
        ),
        (
            "weir_queue_messages_published_total",
            Kind::Counter,
            "Messages enqueued.",
            |q| q.stats.sent_total,
        ),
        (
            "weir_queue_messages_acked_total",
            Kind::Counter,
            "Messages acknowledged.",
            |q| q.stats.acked_total,
        ),
        (
            "weir_queue_messages_redelivered_total",
            Kind::Counter,
            "Deliveries beyond a message's first.",
            |q| q.stats.redelivered_total,
        ),
        (
            "weir_queue_messages_dead_lettered_total",
            Kind::Counter,
            "Messages dead-lettered.",
            |q| q.stats.dead_lettered_total,
        ),
    ]
}

/// One series per queue of each queue family.
fn per_queue(t: &mut Text<'_>, queues: &[QueueInfo]) {
    for (name, kind, help, value) in queue_families() {
        t.family(name, kind, help);
        if !t.showing() {
            continue;
        }
        for q in queues {
            let (vhost, queue) = split(&q.name);
            t.sample(name, &[("vhost", vhost), ("queue", queue)], value(q) as f64);
        }
    }
    t.family(
        "weir_queue_oldest_message_age_seconds",
        Kind::Gauge,
        "Age of the oldest message held.",
    );
    for q in queues {
        if let Some(ms) = q.stats.oldest_age_ms {
            let (vhost, queue) = split(&q.name);
            t.sample(
                "weir_queue_oldest_message_age_seconds",
                &[("vhost", vhost), ("queue", queue)],
                ms as f64 / 1000.0,
            );
        }
    }
}

/// A figure of one stream partition.
type Figure = fn(&weir_broker::stream::PartitionInfo) -> u64;

/// Per stream partition: records, bytes, first and end offsets; per group and
/// partition: lag in records and seconds.
async fn per_stream(t: &mut Text<'_>, broker: &Broker, take: &impl Fn(&str) -> bool) {
    let streams: Vec<_> = broker
        .all_streams()
        .into_iter()
        .filter(|s| take(&s.name))
        .collect();
    let families: [(&str, &str, Figure); 4] = [
        ("weir_stream_records", "Records held.", |p| {
            p.next_offset - p.first_offset
        }),
        ("weir_stream_bytes", "Bytes on disk.", |p| p.bytes),
        ("weir_stream_first_offset", "The first offset held.", |p| {
            p.first_offset
        }),
        (
            "weir_stream_end_offset",
            "The offset the next record gets.",
            |p| p.next_offset,
        ),
    ];
    for (name, help, value) in families {
        t.family(name, Kind::Gauge, help);
        for s in &streams {
            let (vhost, stream) = split(&s.name);
            for p in &s.partition_stats {
                let partition = p.partition.to_string();
                let labels = [
                    ("vhost", vhost),
                    ("stream", stream),
                    ("partition", partition.as_str()),
                ];
                t.sample(name, &labels, value(p) as f64);
            }
        }
    }
    let mut lags = Vec::new();
    for s in &streams {
        if let Ok(groups) = broker.groups(&s.name).await {
            lags.push((s.name.as_str(), groups));
        }
    }
    for (name, help, seconds) in [
        (
            "weir_stream_group_lag_records",
            "Records not yet committed by the group.",
            false,
        ),
        (
            "weir_stream_group_lag_seconds",
            "Age of the group's first uncommitted record (0 when caught up).",
            true,
        ),
    ] {
        t.family(name, Kind::Gauge, help);
        for (full, groups) in &lags {
            let (vhost, stream) = split(full);
            for g in groups {
                for p in &g.partitions {
                    let partition = p.partition.to_string();
                    let labels = [
                        ("vhost", vhost),
                        ("stream", stream),
                        ("group", g.name.as_str()),
                        ("partition", partition.as_str()),
                    ];
                    let value = if seconds {
                        p.lag_ms as f64 / 1000.0
                    } else {
                        p.lag as f64
                    };
                    t.sample(name, &labels, value);
                }
            }
        }
    }
}
