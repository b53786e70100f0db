//! The Overview's live figures ([`Live`]): message rates from the broker's counters,
//! queue totals, fsync p99 over the last second, connections, health, disk and
//! memory. Computed at most once a second whatever the number of open pages: a look
//! at every queue's counters costs the same for one viewer as for many.
//!
//! The queue totals ask every queue for its figures, which takes tens of
//! milliseconds with 10,000 queues; they are taken again only once the last take's
//! time [`TOTALS_SHARE`] times over has passed (and at least a second), so an open
//! Overview costs at most about 2% of a core however many queues there are. The
//! rates come from the broker's counters and are fresh every second.

#![allow(
    clippy::cast_precision_loss,
    reason = "rates and percentages are shown rounded"
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use weir_broker::Broker;
use weir_broker::metrics::{Held, HistogramSnapshot, Protocol, TrafficCounts, io_metrics};

use super::format;

/// Figures younger than this are shown again rather than computed anew.
const FRESH: Duration = Duration::from_millis(900);

/// The queue totals are taken again after this many times the last take's time.
const TOTALS_SHARE: u32 = 50;

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
    totals: Totals,
    figures: Arc<Map<String, Value>>,
}

/// The queues' summed figures, and when and how fast they were taken.
#[derive(Clone, Copy)]
struct Totals {
    ready: u64,
    unacked: u64,
    delayed: u64,
    queues: u64,
    at: Instant,
    took: Duration,
}

impl Totals {
    async fn take(broker: &Broker) -> Totals {
        let at = Instant::now();
        let queues = broker.list().await;
        let sum = |pick: fn(&weir_broker::api::QueueStats) -> u64| -> u64 {
            queues.iter().map(|q| pick(&q.stats)).sum()
        };
        Totals {
            ready: sum(|s| s.ready),
            unacked: sum(|s| s.leased),
            delayed: sum(|s| s.delayed),
            queues: queues.len() as u64,
            at,
            took: at.elapsed(),
        }
    }

    /// Whether they are due to be taken again.
    fn stale(&self) -> bool {
        self.at.elapsed() >= (self.took * TOTALS_SHARE).max(FRESH)
    }
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
        let totals = match last.as_ref().map(|l| l.totals) {
            Some(totals) if !totals.stale() => totals,
            _ => Totals::take(broker).await,
        };
        let mut figures = overview_figures(broker, last.as_ref(), at, &traffic, &syncs);
        for (key, value) in [
            ("ready", totals.ready),
            ("unacked", totals.unacked),
            ("delayed", totals.delayed),
            ("queues", totals.queues),
        ] {
            figures.insert(key.to_owned(), json!(value));
            figures.insert(format!("{key}_t"), json!(format::count(value)));
        }
        let figures = Arc::new(figures);
        *last = Some(Sample {
            at,
            traffic,
            syncs,
            totals,
            figures: Arc::clone(&figures),
        });
        figures
    }
}

/// Counts per second between two samples.
pub(crate) fn per_second(now: u64, before: u64, seconds: f64) -> f64 {
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

fn overview_figures(
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
