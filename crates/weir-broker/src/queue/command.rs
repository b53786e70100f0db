//! What the broker asks of a queue ([`Command`]) and how shared messages reach it
//! ([`Arrival`]): the channel between the broker and a queue's actor, and how a
//! command is refused when no actor will run it.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::api::{Delivery, NackOptions, QueueStats, ReceiveRequest, SendOutcome, SettleReport};
use crate::error::{BrokerError, Result};
use crate::queue::record::{MessageMeta, Outgoing};

/// Messages of one publish stored once in the shared log (decision 0004), as every
/// destination queue sees them. Shared, so handing them to N queues copies nothing.
#[derive(Debug)]
pub(crate) struct SharedBatch {
    /// `SHARED | offset` of each message, ascending.
    pub(crate) keys: Vec<u64>,
    /// Their metadata: the message's own expiry and delay, priority up to 255 (each
    /// queue applies its TTL and priority cap).
    pub(crate) metas: Vec<MessageMeta>,
    /// Body sizes.
    pub(crate) sizes: Vec<u32>,
    /// When they were published (the first enqueue time in every queue).
    pub(crate) published_ms: i64,
}

/// The part of a [`SharedBatch`] that one queue gets.
#[derive(Debug)]
pub(crate) struct Arrival {
    pub(crate) batch: Arc<SharedBatch>,
    /// Positions in the batch, ascending.
    pub(crate) positions: Vec<u32>,
}

/// Per message of an [`Arrival`], whether the queue already had its id.
pub(crate) type ArriveReply = oneshot::Sender<Result<Vec<bool>>>;

/// Requests to a queue actor.
pub(crate) enum Command {
    Send {
        messages: Vec<Outgoing>,
        /// Redrives and dead letters skip de-duplication: the id was already
        /// accepted once.
        dedup: bool,
        reply: oneshot::Sender<Result<Vec<SendOutcome>>>,
    },
    /// Shared messages are durable in the shared log and name this queue. They come
    /// in shared-log order; the queue writes nothing for them unless it declines
    /// some.
    Arrive {
        arrival: Arrival,
        reply: ArriveReply,
    },
    Receive {
        request: ReceiveRequest,
        reply: oneshot::Sender<Result<Vec<Delivery>>>,
    },
    Ack {
        receipts: Vec<String>,
        /// False: answer once the ack record is written, before it is synced.
        synced: bool,
        reply: oneshot::Sender<SettleReport>,
    },
    Nack {
        receipts: Vec<String>,
        options: NackOptions,
        reply: oneshot::Sender<SettleReport>,
    },
    Extend {
        receipts: Vec<String>,
        visibility_timeout_ms: u64,
        reply: oneshot::Sender<SettleReport>,
    },
    Peek {
        origin: Option<String>,
        max: usize,
        reply: oneshot::Sender<Result<Vec<Delivery>>>,
    },
    Redrive {
        origin: Option<String>,
        /// Only the messages at these positions (from a peek).
        at: Option<Vec<u64>>,
        max: usize,
        reply: oneshot::Sender<Result<u64>>,
    },
    /// Removes the ready messages at these positions (from a peek).
    Remove {
        at: Vec<u64>,
        reply: oneshot::Sender<Result<u64>>,
    },
    Purge {
        reply: oneshot::Sender<Result<u64>>,
    },
    Stats {
        reply: oneshot::Sender<QueueStats>,
    },
    /// The lowest shared-log offset this queue may still need (`None`: none).
    BodyFloor {
        reply: oneshot::Sender<Option<u64>>,
    },
    /// Stop: answer waiting receivers, finish in-flight work, close the log.
    Stop {
        reply: oneshot::Sender<()>,
    },
    /// Tests only: the actor panics (a bug in it, as far as the broker can tell).
    #[cfg(test)]
    Panic,
}

/// A queue's command receiver, as an actor holds it (see `Actor::commands`).
pub(crate) type Commands = tokio::sync::OwnedMutexGuard<mpsc::Receiver<Command>>;

/// Answers a command that arrived while the queue was stopping.
pub(crate) fn refuse(command: Command, queue: &str) {
    refuse_with(command, &|| BrokerError::Unavailable {
        reason: format!("queue '{queue}' is shutting down"),
    });
}

/// Answers a command with `error` (queries with nothing: no stats, no shared
/// messages held).
pub(crate) fn refuse_with(command: Command, error: &dyn Fn() -> BrokerError) {
    match command {
        Command::Send { reply, .. } => drop(reply.send(Err(error()))),
        Command::Arrive { reply, .. } => drop(reply.send(Err(error()))),
        Command::Receive { reply, .. } | Command::Peek { reply, .. } => {
            drop(reply.send(Err(error())));
        }
        Command::Ack { reply, .. }
        | Command::Nack { reply, .. }
        | Command::Extend { reply, .. } => {
            drop(reply.send(SettleReport {
                settled: 0,
                failed: vec![(String::new(), error())],
            }));
        }
        Command::Redrive { reply, .. }
        | Command::Remove { reply, .. }
        | Command::Purge { reply } => {
            drop(reply.send(Err(error())));
        }
        Command::Stats { reply } => drop(reply.send(QueueStats::default())),
        Command::BodyFloor { reply } => drop(reply.send(None)),
        Command::Stop { reply } => drop(reply.send(())),
        #[cfg(test)]
        Command::Panic => {}
    }
}
