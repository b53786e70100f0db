//! The broker's message counters since it started ([`Traffic`]): published,
//! routed, unroutable, confirmed, delivered (by how), acknowledged, redelivered,
//! dead-lettered (by reason) and redriven, for metrics (docs/metrics.md, RabbitMQ's
//! `rabbitmq_global_messages_*`).
//!
//! Why not sums of the queues' own counters: those go when a queue is deleted, and
//! a counter that drops is a reset to Prometheus; these only grow. Each is one
//! relaxed atomic add on a path that already does far more.
//!
//! Who counts what: the broker counts what passes through it whatever the front
//! end (publishes, routing, dead letters, redrives); front ends count what only they
//! see (a confirm written to a publisher, a delivery and how it is settled, a
//! client's ack rather than an automatic one).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::api::DeadLetterReason;

/// How a message was delivered: RabbitMQ's four delivery counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryMode {
    /// To a consumer, settled on delivery (AMQP `no-ack`).
    ConsumeAutoAck,
    /// To a consumer, settled by the client.
    ConsumeManualAck,
    /// Fetched (AMQP `basic.get` with `no-ack`).
    GetAutoAck,
    /// Fetched and leased until settled (`basic.get`, an HTTP receive).
    GetManualAck,
}

impl DeliveryMode {
    /// Every mode, in the order metrics list them.
    pub const ALL: [DeliveryMode; 4] = [
        DeliveryMode::ConsumeAutoAck,
        DeliveryMode::ConsumeManualAck,
        DeliveryMode::GetAutoAck,
        DeliveryMode::GetManualAck,
    ];

    /// The suffix RabbitMQ gives its counter
    /// (`rabbitmq_global_messages_delivered_<suffix>_total`).
    pub fn name(self) -> &'static str {
        match self {
            DeliveryMode::ConsumeAutoAck => "consume_auto_ack",
            DeliveryMode::ConsumeManualAck => "consume_manual_ack",
            DeliveryMode::GetAutoAck => "get_auto_ack",
            DeliveryMode::GetManualAck => "get_manual_ack",
        }
    }

    /// The mode of a consumer (`consume`) or a fetch, settled on delivery or not.
    pub fn of(consume: bool, auto_ack: bool) -> DeliveryMode {
        match (consume, auto_ack) {
            (true, true) => DeliveryMode::ConsumeAutoAck,
            (true, false) => DeliveryMode::ConsumeManualAck,
            (false, true) => DeliveryMode::GetAutoAck,
            (false, false) => DeliveryMode::GetManualAck,
        }
    }
}

/// Every dead-letter reason, in the order metrics list them.
pub const DEAD_LETTER_REASONS: [DeadLetterReason; 4] = [
    DeadLetterReason::Rejected,
    DeadLetterReason::Expired,
    DeadLetterReason::Overflow,
    DeadLetterReason::MaxDeliveries,
];

pub(crate) fn reason_slot(reason: DeadLetterReason) -> usize {
    match reason {
        DeadLetterReason::Rejected => 0,
        DeadLetterReason::Expired => 1,
        DeadLetterReason::Overflow => 2,
        DeadLetterReason::MaxDeliveries => 3,
    }
}

/// See the module documentation. Every counter starts at 0 with the process.
#[derive(Debug, Default)]
pub struct Traffic {
    received: AtomicU64,
    routed: AtomicU64,
    unroutable_dropped: AtomicU64,
    unroutable_returned: AtomicU64,
    confirmed: AtomicU64,
    delivered: [AtomicU64; 4],
    redelivered: AtomicU64,
    acknowledged: AtomicU64,
    dead_lettered: [AtomicU64; 4],
    redriven: AtomicU64,
    /// Unroutable messages per exchange (broker-wide names), at most
    /// [`EXCHANGES_COUNTED`] of them; touched only when a message is unroutable.
    unroutable_at: Mutex<HashMap<String, u64>>,
}

/// Most exchanges whose unroutable messages are counted one by one.
pub const EXCHANGES_COUNTED: usize = 10_000;

/// [`Traffic`]'s counters at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrafficCounts {
    /// Messages published (through an exchange, sent to a queue, appended to a
    /// stream).
    pub received: u64,
    /// Published messages that reached at least one queue or stream.
    pub routed: u64,
    /// Published messages that reached none and were dropped.
    pub unroutable_dropped: u64,
    /// Published messages that reached none and were returned (AMQP `mandatory`).
    pub unroutable_returned: u64,
    /// Publishes confirmed to their publishers.
    pub confirmed: u64,
    /// Deliveries, by [`DeliveryMode`] (in [`DeliveryMode::ALL`]'s order).
    pub delivered: [u64; 4],
    /// Deliveries of messages delivered before.
    pub redelivered: u64,
    /// Deliveries a client acknowledged.
    pub acknowledged: u64,
    /// Messages dead-lettered, by reason (in [`DEAD_LETTER_REASONS`]' order).
    pub dead_lettered: [u64; 4],
    /// Messages moved back from a dead-letter queue to their source queue.
    pub redriven: u64,
}

fn add(counter: &AtomicU64, n: u64) {
    if n > 0 {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

impl Traffic {
    /// `received` messages were published; `dropped` and `returned` of them reached
    /// no queue, the others at least one.
    pub fn published(&self, received: u64, dropped: u64, returned: u64) {
        add(&self.received, received);
        add(
            &self.routed,
            received.saturating_sub(dropped.saturating_add(returned)),
        );
        add(&self.unroutable_dropped, dropped);
        add(&self.unroutable_returned, returned);
    }

    /// `n` messages published through `exchange` reached no queue.
    pub(crate) fn unroutable_through(&self, exchange: &str, n: u64) {
        if n == 0 {
            return;
        }
        let mut at = crate::locks::lock(&self.unroutable_at);
        if let Some(count) = at.get_mut(exchange) {
            *count += n;
        } else if at.len() < EXCHANGES_COUNTED {
            at.insert(exchange.to_owned(), n);
        }
    }

    /// Messages published through `exchange` (its broker-wide name) that reached no
    /// queue since the start or since the exchange was declared anew.
    pub fn unroutable_count(&self, exchange: &str) -> u64 {
        crate::locks::lock(&self.unroutable_at)
            .get(exchange)
            .copied()
            .unwrap_or(0)
    }

    /// Forgets `exchange`'s count (it was deleted).
    pub(crate) fn forget_exchange(&self, exchange: &str) {
        crate::locks::lock(&self.unroutable_at).remove(exchange);
    }

    /// `n` publishes were confirmed to their publishers.
    pub fn confirmed(&self, n: u64) {
        add(&self.confirmed, n);
    }

    /// `n` messages were delivered in `mode`, `redelivered` of them not for the
    /// first time.
    pub fn delivered(&self, mode: DeliveryMode, n: u64, redelivered: u64) {
        add(&self.delivered[mode as usize], n);
        add(&self.redelivered, redelivered);
    }

    /// A client acknowledged `n` deliveries.
    pub fn acknowledged(&self, n: u64) {
        add(&self.acknowledged, n);
    }

    /// `n` messages were dead-lettered for `reason`.
    pub(crate) fn dead_lettered(&self, reason: DeadLetterReason, n: u64) {
        add(&self.dead_lettered[reason_slot(reason)], n);
    }

    /// `n` messages were redriven.
    pub(crate) fn redriven(&self, n: u64) {
        add(&self.redriven, n);
    }

    /// Every counter now.
    pub fn counts(&self) -> TrafficCounts {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        TrafficCounts {
            received: load(&self.received),
            routed: load(&self.routed),
            unroutable_dropped: load(&self.unroutable_dropped),
            unroutable_returned: load(&self.unroutable_returned),
            confirmed: load(&self.confirmed),
            delivered: self.delivered.each_ref().map(load),
            redelivered: load(&self.redelivered),
            acknowledged: load(&self.acknowledged),
            dead_lettered: self.dead_lettered.each_ref().map(load),
            redriven: load(&self.redriven),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_add_up_in_their_slots() {
        let t = Traffic::default();
        t.published(10, 2, 1);
        t.delivered(DeliveryMode::ConsumeManualAck, 5, 2);
        t.delivered(DeliveryMode::GetAutoAck, 1, 0);
        t.dead_lettered(DeadLetterReason::MaxDeliveries, 3);
        t.acknowledged(4);
        t.confirmed(9);
        t.redriven(3);
        let c = t.counts();
        assert_eq!(
            (
                c.received,
                c.routed,
                c.unroutable_dropped,
                c.unroutable_returned
            ),
            (10, 7, 2, 1)
        );
        assert_eq!(c.delivered, [0, 5, 1, 0]);
        assert_eq!(c.redelivered, 2);
        assert_eq!(c.dead_lettered, [0, 0, 0, 3]);
        assert_eq!((c.acknowledged, c.confirmed, c.redriven), (4, 9, 3));
        for (i, mode) in DeliveryMode::ALL.into_iter().enumerate() {
            assert_eq!(mode as usize, i);
        }
        for (i, reason) in DEAD_LETTER_REASONS.into_iter().enumerate() {
            assert_eq!(reason_slot(reason), i);
        }
    }
}
