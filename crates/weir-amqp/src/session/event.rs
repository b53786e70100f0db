//! What the helper tasks (consumers, publishers, other sessions' direct replies)
//! tell a session, and the publishes they carry: the session's only vocabulary
//! with its tasks, so this file imports no other part of the session.

use amq_protocol::protocol::basic::AMQPProperties;
use bytes::Bytes;
use weir_broker::Delivery;

use crate::codes::Exception;

/// What the helper tasks (and other sessions, for direct replies) tell the session.
pub(super) enum Event {
    /// A direct reply for this session's reply-to consumer.
    Reply {
        channel: u16,
        consumer: String,
        routing_key: String,
        properties: Box<AMQPProperties>,
        body: Bytes,
        /// The delivery credit it holds.
        bytes: usize,
    },
    /// `generation` tells a channel from an earlier one with the same number: an
    /// event of a channel that is gone is not applied to its successor.
    Deliveries {
        channel: u16,
        generation: u64,
        consumer: String,
        queue: String,
        messages: Vec<Delivery>,
        /// The delivery credit they hold.
        bytes: usize,
    },
    /// The consumer's queue went (deleted): the client is told with `basic.cancel`.
    ConsumerGone {
        channel: u16,
        generation: u64,
        consumer: String,
    },
    Published {
        channel: u16,
        generation: u64,
        done: PublishDone,
    },
}

/// One publish, assembled from its method, header and body frames.
pub(super) struct Publish {
    pub(super) exchange: String,
    pub(super) routing_key: String,
    pub(super) mandatory: bool,
    pub(super) properties: AMQPProperties,
    pub(super) body: Bytes,
    /// Its confirm sequence number (0: not in confirm mode).
    pub(super) seq: u64,
}

/// What a batch of publishes came to.
#[derive(Default)]
pub(super) struct PublishDone {
    /// How many publishes the batch held.
    pub(super) count: usize,
    /// Unroutable mandatory publishes, to return.
    pub(super) returns: Vec<Publish>,
    /// Confirm sequence numbers settled well / refused.
    pub(super) acks: Vec<u64>,
    pub(super) nacks: Vec<u64>,
    /// A channel exception (a publish to an exchange that does not exist).
    pub(super) error: Option<Exception>,
}
