//! The Overview page: is the broker healthy? Live message rates and depth,
//! fsync p99, connections, disk and memory against their alarms, and the queues
//! holding the oldest messages. Broker-wide, so it needs the `administrator` or
//! `monitoring` tag, as the metrics do.

#![allow(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "percentages for a bar's width"
)]

use std::sync::Arc;

use askama::Template;
use axum::extract::{Query, State};
use axum::response::Response;
use serde_json::{Map, Value};

use super::queues::{Row, visible};
use super::{Flash, PageInfo, format, render};
use crate::auth::Caller;
use crate::state::AppState;

/// Queues listed as stuck, in each list.
const STUCK: usize = 10;

/// A lease extended this many times marks its queue as stuck.
const EXTENDED_MANY: u32 = 3;

#[derive(Template)]
#[template(path = "overview.html")]
struct OverviewPage {
    page: PageInfo,
    may_see: bool,
    figures: Arc<Map<String, Value>>,
    health_class: &'static str,
    disk_limit: String,
    disk_alarm: bool,
    disk_pct: u32,
    memory_limit: String,
    memory_alarm: bool,
    memory_pct: u32,
    stuck: Vec<Row>,
    /// Queues with a lease extended [`EXTENDED_MANY`] times or more, most first.
    extended: Vec<Row>,
    /// Messages waiting in dead-letter queues.
    dead_letters: String,
}

impl OverviewPage {
    /// A live figure as text.
    fn fig(&self, key: &str) -> String {
        match self.figures.get(key) {
            Some(Value::String(s)) => s.clone(),
            Some(v) => v.to_string(),
            None => String::new(),
        }
    }
}

/// `part` of `whole` in percent, at most 100.
fn percent(part: u64, whole: u64) -> u32 {
    if whole == 0 {
        return 0;
    }
    ((part as f64 / whole as f64) * 100.0)
        .clamp(0.0, 100.0)
        .round() as u32
}

/// `GET /`.
pub(crate) async fn page(
    caller: Caller,
    State(state): State<AppState>,
    Query(flash): Query<Flash>,
) -> Response {
    let page = PageInfo::new("overview", &caller, &flash);
    let broker = &state.broker;
    let may_see = caller.sees_every_vhost();
    let figures = if may_see {
        state.dashboard.live.overview(broker).await
    } else {
        Arc::default()
    };
    let r = broker.resources();
    let mut stuck = Vec::new();
    let mut extended = Vec::new();
    let mut dead_letters = 0;
    if may_see {
        let mut queues = visible(broker, &caller).await;
        let dlqs = super::dead_letters::dead_letter_queues(broker, &queues);
        dead_letters = queues
            .iter()
            .filter(|q| dlqs.contains_key(&q.name))
            .map(|q| q.stats.ready)
            .sum();
        let mut held_long: Vec<_> = queues
            .iter()
            .filter(|q| q.stats.max_lease_extensions >= EXTENDED_MANY)
            .collect();
        held_long.sort_by_key(|q| std::cmp::Reverse(q.stats.max_lease_extensions));
        extended = held_long.into_iter().take(STUCK).map(Row::of).collect();
        queues.retain(|q| q.stats.oldest_age_ms.is_some());
        queues.sort_by_key(|q| std::cmp::Reverse(q.stats.oldest_age_ms));
        stuck = queues.iter().take(STUCK).map(Row::of).collect();
    }
    let limit = |n: u64| {
        if n == 0 {
            "none".to_owned()
        } else {
            format::bytes(n)
        }
    };
    render(&OverviewPage {
        page,
        may_see,
        health_class: if r.alarms.reason().is_some() {
            "bad"
        } else {
            "good"
        },
        disk_limit: limit(r.disk_free_limit_bytes),
        disk_alarm: r.alarms.disk,
        // How near the alarm: the limit against what is free.
        disk_pct: r
            .disk_free_bytes
            .map_or(0, |free| percent(r.disk_free_limit_bytes, free)),
        memory_limit: limit(r.memory_limit_bytes),
        memory_alarm: r.alarms.memory,
        memory_pct: r
            .memory_used_bytes
            .map_or(0, |used| percent(used, r.memory_limit_bytes)),
        figures,
        stuck,
        extended,
        dead_letters: format::count(dead_letters),
    })
}
