//! The connections, channels and consumers of every front end ([`FrontEnds`]),
//! counted for metrics (see [`crate::metrics`]): each front end counts what it
//! opens through a [`Tracked`] guard that uncounts it when dropped, however the
//! connection, channel or consumer ends (a closed socket, a panic unwinding a task,
//! a shutdown). A leaf: the broker holds one, front ends reach it through
//! [`crate::Broker::front_ends`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// A front end's protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// AMQP 0-9-1.
    Amqp,
    /// The HTTP API.
    Http,
    /// Kafka's wire protocol.
    Kafka,
}

impl Protocol {
    /// Every protocol, in the order metrics list them.
    pub const ALL: [Protocol; 3] = [Protocol::Amqp, Protocol::Http, Protocol::Kafka];

    /// Its label value.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Amqp => "amqp",
            Protocol::Http => "http",
            Protocol::Kafka => "kafka",
        }
    }
}

/// What a [`Tracked`] guard counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Held {
    /// A client connection.
    Connection,
    /// An AMQP channel.
    Channel,
    /// A consumer (an AMQP `basic.consume`).
    Consumer,
}

/// One protocol's counts.
#[derive(Debug, Default)]
struct Counts {
    /// Open now, by [`Held`]: connections, channels, consumers.
    open: [AtomicU64; 3],
    /// Opened and closed since the start, by [`Held`].
    opened: [AtomicU64; 3],
    closed: [AtomicU64; 3],
}

/// A protocol's counts at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeldCounts {
    /// Open now.
    pub open: u64,
    /// Opened since the broker started.
    pub opened_total: u64,
    /// Closed since the broker started.
    pub closed_total: u64,
}

/// The connections, channels and consumers of every front end. Shared: front ends
/// take an `Arc` of it ([`crate::Broker::front_ends`]).
#[derive(Debug, Default)]
pub struct FrontEnds {
    amqp: Counts,
    http: Counts,
    kafka: Counts,
}

impl FrontEnds {
    fn counts(&self, protocol: Protocol) -> &Counts {
        match protocol {
            Protocol::Amqp => &self.amqp,
            Protocol::Http => &self.http,
            Protocol::Kafka => &self.kafka,
        }
    }

    /// Counts one more `held` of `protocol` until the returned guard is dropped.
    #[must_use = "the count drops with the guard"]
    pub fn track(self: &Arc<Self>, protocol: Protocol, held: Held) -> Tracked {
        let counts = self.counts(protocol);
        counts.open[held as usize].fetch_add(1, Ordering::Relaxed);
        counts.opened[held as usize].fetch_add(1, Ordering::Relaxed);
        Tracked {
            front_ends: Arc::clone(self),
            protocol,
            held,
        }
    }

    /// `held` of `protocol` now.
    pub fn count(&self, protocol: Protocol, held: Held) -> HeldCounts {
        let counts = self.counts(protocol);
        let at = held as usize;
        HeldCounts {
            open: counts.open[at].load(Ordering::Relaxed),
            opened_total: counts.opened[at].load(Ordering::Relaxed),
            closed_total: counts.closed[at].load(Ordering::Relaxed),
        }
    }
}

/// One counted connection, channel or consumer ([`FrontEnds::track`]).
#[derive(Debug)]
pub struct Tracked {
    front_ends: Arc<FrontEnds>,
    protocol: Protocol,
    held: Held,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        let counts = self.front_ends.counts(self.protocol);
        counts.open[self.held as usize].fetch_sub(1, Ordering::Relaxed);
        counts.closed[self.held as usize].fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guard_counts_until_dropped_per_protocol_and_kind() {
        let front_ends = Arc::new(FrontEnds::default());
        let a = front_ends.track(Protocol::Amqp, Held::Connection);
        let b = front_ends.track(Protocol::Amqp, Held::Connection);
        let c = front_ends.track(Protocol::Amqp, Held::Channel);
        drop(a);
        let counts = front_ends.count(Protocol::Amqp, Held::Connection);
        assert_eq!(
            counts,
            HeldCounts {
                open: 1,
                opened_total: 2,
                closed_total: 1
            }
        );
        assert_eq!(front_ends.count(Protocol::Amqp, Held::Channel).open, 1);
        assert_eq!(
            front_ends.count(Protocol::Http, Held::Connection),
            HeldCounts::default()
        );
        drop((b, c));
        assert_eq!(front_ends.count(Protocol::Amqp, Held::Connection).open, 0);
    }
}
