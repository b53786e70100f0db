//! Direct reply-to (RabbitMQ's `amq.rabbitmq.reply-to`): the consumers of every
//! connection, by the token in their reply address. A reply goes straight to its
//! requester's session as an [`Event::Reply`], never to a queue.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::mpsc;

use super::event::Event;
use super::outflow::Credit;

/// RabbitMQ's direct reply-to: a client consumes this pseudo-queue (no-ack) and
/// publishes requests with it as `reply-to`; replies published to the default
/// exchange with the rewritten name go straight to that consumer, with no queue
/// (so, as in RabbitMQ, they are not durable).
pub(super) const REPLY_TO: &str = "amq.rabbitmq.reply-to";

/// Direct reply-to consumers of every connection, by the token in their reply
/// address (`amq.rabbitmq.reply-to.<token>`).
#[derive(Default)]
pub(crate) struct Replies {
    pub(super) consumers: std::sync::Mutex<HashMap<String, ReplyConsumer>>,
}

#[derive(Clone)]
pub(super) struct ReplyConsumer {
    pub(super) events: mpsc::UnboundedSender<Event>,
    /// Its connection's delivery credit: a reply takes its size there first.
    pub(super) credit: Arc<Credit>,
    pub(super) channel: u16,
    pub(super) consumer: String,
}

impl Replies {
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, ReplyConsumer>> {
        self.consumers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
