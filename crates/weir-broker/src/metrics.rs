//! What the broker shows of itself for metrics (docs/metrics.md): its resources
//! against their alarm limits ([`Broker::resources`]), the connections, channels
//! and consumers the front ends hold ([`FrontEnds`], counted in
//! `front_ends.rs`), the message counters ([`Traffic`], in `traffic.rs`) and the
//! log's I/O figures ([`io_metrics`]).
//!
//! Why here: each front end owns its connections, but an operator asks one place
//! for all of them, and one front end must not reach into another.

use std::sync::Arc;

use weir_log::LogStore;
/// The log's I/O figures (fsync durations, commit group sizes), process-wide.
pub use weir_log::{HistogramSnapshot, IoMetrics, io_metrics};

use crate::alarms::Resources;
use crate::broker::Broker;
pub use crate::front_ends::{FrontEnds, Held, HeldCounts, Protocol, Tracked};
pub use crate::traffic::{DEAD_LETTER_REASONS, DeliveryMode, Traffic, TrafficCounts};

impl<S: LogStore> Broker<S> {
    /// The broker's resources against their alarm limits, as last measured (once a
    /// second).
    pub fn resources(&self) -> Resources {
        self.inner.usage.resources(*self.inner.alarms.borrow())
    }

    /// The data directory (for front ends that report where data lives, as
    /// Kafka's DescribeLogDirs).
    pub fn data_dir(&self) -> &std::path::Path {
        &self.inner.config.data_dir
    }

    /// The front ends' connection, channel and consumer counts.
    pub fn front_ends(&self) -> Arc<FrontEnds> {
        Arc::clone(&self.inner.front_ends)
    }

    /// The client connections open now, across front ends.
    pub fn connections(&self) -> Arc<crate::connections::Connections> {
        Arc::clone(&self.inner.connections)
    }

    /// The message counters since the start.
    pub fn traffic(&self) -> &Traffic {
        &self.inner.traffic
    }
}
