//! The broker-wide message counters ([`weir_broker::metrics::Traffic`]) as
//! RabbitMQ's `rabbitmq_global_messages_*` families, one family per counter (as
//! RabbitMQ has them: the delivery modes and dead-letter reasons are in the names,
//! not labels).

#![allow(
    clippy::cast_precision_loss,
    reason = "Prometheus samples are f64: counts below 2^52 are exact"
)]

use weir_broker::Broker;
use weir_broker::metrics::{DEAD_LETTER_REASONS, DeliveryMode};

use super::text::{Kind, Text};

/// Writes the `weir_global_messages_*` counters.
pub(super) fn messages(t: &mut Text<'_>, broker: &Broker) {
    let c = broker.traffic().counts();
    let mut counter = |name: &str, help: &str, value: u64| {
        t.single(
            &format!("weir_global_messages_{name}_total"),
            Kind::Counter,
            help,
            value as f64,
        );
    };
    counter(
        "received",
        "Messages published (through an exchange, to a queue, to a stream).",
        c.received,
    );
    counter(
        "routed",
        "Published messages that reached at least one queue or stream.",
        c.routed,
    );
    counter(
        "unroutable_dropped",
        "Published messages that reached no queue and were dropped.",
        c.unroutable_dropped,
    );
    counter(
        "unroutable_returned",
        "Published messages that reached no queue and were returned (mandatory).",
        c.unroutable_returned,
    );
    counter(
        "confirmed",
        "Publishes confirmed to their publishers (AMQP confirms, HTTP answers).",
        c.confirmed,
    );
    counter(
        "delivered",
        "Messages delivered to clients, however settled.",
        c.delivered.iter().sum(),
    );
    for (mode, n) in DeliveryMode::ALL.into_iter().zip(c.delivered) {
        counter(
            &format!("delivered_{}", mode.name()),
            &format!("Messages delivered ({}).", mode.name().replace('_', " ")),
            n,
        );
    }
    counter(
        "redelivered",
        "Deliveries of messages delivered before.",
        c.redelivered,
    );
    counter(
        "acknowledged",
        "Deliveries acknowledged by clients (not counting automatic acks).",
        c.acknowledged,
    );
    for (reason, n) in DEAD_LETTER_REASONS.into_iter().zip(c.dead_lettered) {
        counter(
            &format!("dead_lettered_{}", reason.rabbitmq_name()),
            &format!(
                "Messages dead-lettered for reason {}.",
                reason.rabbitmq_name()
            ),
            n,
        );
    }
    counter(
        "redriven",
        "Messages moved from a dead-letter queue back to their source queue.",
        c.redriven,
    );
}
