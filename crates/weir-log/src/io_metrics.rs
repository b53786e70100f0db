//! Process-wide figures of the log's I/O, for the broker's metrics ([`io_metrics`]):
//! how long each `fdatasync` of segment data took, and how many appends each commit
//! group carried (what group commit achieved).
//!
//! Why process-wide: a broker has thousands of logs on a few shared writer and sync
//! threads (decision 0002), and an operator asks how the disk behaves, not how one
//! queue's log does. Recording is a few relaxed atomic additions on the thread that
//! already did the I/O.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the `fdatasync` buckets, in microseconds (100 µs to 5 s).
const SYNC_BOUNDS_US: [u64; 15] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000,
];

/// Upper bounds of the commit group buckets, in appends.
const GROUP_BOUNDS: [u64; 11] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024];

/// A histogram with fixed bounds: a count per bucket (the last one past every
/// bound), the sum and the count of what was recorded.
struct Histogram<const N: usize> {
    bounds: &'static [u64; N],
    /// `N + 1` buckets; not cumulative.
    buckets: [AtomicU64; 16],
    sum: AtomicU64,
}

impl<const N: usize> Histogram<N> {
    const fn new(bounds: &'static [u64; N]) -> Self {
        // The buckets are a fixed array (`N + 1` is no type on stable Rust).
        assert!(N < 16, "at most 15 bounds");
        Histogram {
            bounds,
            buckets: [const { AtomicU64::new(0) }; 16],
            sum: AtomicU64::new(0),
        }
    }

    fn record(&self, value: u64) {
        let at = self.bounds.partition_point(|b| *b < value);
        self.buckets[at].fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(value, Ordering::Relaxed);
    }

    #[allow(
        clippy::cast_precision_loss,
        reason = "Prometheus samples are f64; microseconds and counts below 2^52 are exact"
    )]
    fn snapshot(&self, scale: f64) -> HistogramSnapshot {
        let mut cumulative = 0;
        let mut buckets = Vec::with_capacity(N);
        for (i, bound) in self.bounds.iter().enumerate() {
            cumulative += self.buckets[i].load(Ordering::Relaxed);
            buckets.push((*bound as f64 * scale, cumulative));
        }
        let count = cumulative + self.buckets[N].load(Ordering::Relaxed);
        HistogramSnapshot {
            buckets,
            count,
            sum: self.sum.load(Ordering::Relaxed) as f64 * scale,
        }
    }
}

static SYNC_SECONDS: Histogram<15> = Histogram::new(&SYNC_BOUNDS_US);
static GROUP_APPENDS: Histogram<11> = Histogram::new(&GROUP_BOUNDS);

/// A histogram as Prometheus shows one: cumulative counts by upper bound, then the
/// count and sum of everything recorded.
#[derive(Clone, Debug, PartialEq)]
pub struct HistogramSnapshot {
    /// `(upper bound, observations at or below it)`, bounds increasing; the `+Inf`
    /// bucket is `count`.
    pub buckets: Vec<(f64, u64)>,
    /// Observations.
    pub count: u64,
    /// Their sum.
    pub sum: f64,
}

/// The log's I/O figures since the process started ([`io_metrics`]).
#[derive(Clone, Debug, PartialEq)]
pub struct IoMetrics {
    /// How long each `fdatasync` of a segment's data took, in seconds.
    pub data_sync_seconds: HistogramSnapshot,
    /// Appends per commit group (one write, and one sync under `fsync = always`).
    pub commit_group_appends: HistogramSnapshot,
}

/// The log's I/O figures since the process started, over every log.
pub fn io_metrics() -> IoMetrics {
    IoMetrics {
        data_sync_seconds: SYNC_SECONDS.snapshot(1e-6),
        commit_group_appends: GROUP_APPENDS.snapshot(1.0),
    }
}

/// Records one `fdatasync` of segment data.
pub(crate) fn record_data_sync(took: Duration) {
    SYNC_SECONDS.record(u64::try_from(took.as_micros()).unwrap_or(u64::MAX));
}

/// Records one commit group of `appends` appends.
pub(crate) fn record_commit_group(appends: usize) {
    GROUP_APPENDS.record(appends as u64);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_the_last_counts_everything() {
        static H: Histogram<3> = Histogram::new(&[1, 10, 100]);
        for v in [0, 1, 2, 10, 11, 1000] {
            H.record(v);
        }
        let s = H.snapshot(1.0);
        assert_eq!(s.buckets, [(1.0, 2), (10.0, 4), (100.0, 5)]);
        assert_eq!((s.count, s.sum), (6, 1024.0));
    }
}
