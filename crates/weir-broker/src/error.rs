//! The broker's one error type. Every front end maps it in one place (HTTP status,
//! AMQP reply code) by matching its variants, never its code strings, so a new
//! variant is a compile error there rather than a silent 406 or 500. Users see
//! [`BrokerError::code`], so codes are stable: a retired code is never reused.
//! Storage errors are wrapped: front ends see a [`StorageFailure`] kind, not the
//! log's own error type.

use std::fmt;

/// Result alias for the broker API.
pub type Result<T> = std::result::Result<T, BrokerError>;

/// What kind of named thing an error is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A queue.
    Queue,
    /// An exchange.
    Exchange,
    /// A binding.
    Binding,
    /// A topic subscription.
    Subscription,
    /// A vhost.
    Vhost,
    /// A stream.
    Stream,
    /// A stream's consumer group.
    Group,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Queue => "queue",
            Kind::Exchange => "exchange",
            Kind::Binding => "binding",
            Kind::Subscription => "subscription",
            Kind::Vhost => "vhost",
            Kind::Stream => "stream",
            Kind::Group => "group",
        })
    }
}

/// The limits a request can run into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// Queues per broker.
    Queues,
    /// Messages in one send or publish.
    MessagesPerSend,
    /// Receipts in one ack, nack or extend.
    ReceiptsPerRequest,
    /// Bytes of one message body.
    MessageBytes,
    /// Exchanges (`Limits::max_exchanges`).
    Exchanges,
    /// Bindings (`Limits::max_bindings`).
    Bindings,
    /// Live members of one consumer group.
    Members,
    /// Consumer groups of one stream.
    Groups,
}

impl Limit {
    /// Whether it limits a size in bytes (HTTP answers those with 413).
    pub fn is_size(self) -> bool {
        matches!(self, Limit::MessageBytes)
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Limit::Queues => "queue count",
            Limit::MessagesPerSend => "messages per send",
            Limit::ReceiptsPerRequest => "receipts per request",
            Limit::MessageBytes => "message body bytes",
            Limit::Exchanges => "exchange count",
            Limit::Bindings => "binding count",
            Limit::Members => "consumer group members",
            Limit::Groups => "consumer groups per stream",
        })
    }
}

/// What kind of storage failure a [`BrokerError::Storage`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StorageFailure {
    /// The disk is full (or the cleanup after a write that filled it is still
    /// running, which the log retries by itself): retrying later may work.
    Full,
    /// A record or batch over the log's size limits; nothing was written.
    TooLarge,
    /// The log stopped after a failure it could not roll back (a failed sync) and
    /// waits for a restart: retrying does not help.
    Stopped,
    /// Any other I/O error, a closed log, or corrupt stored bytes.
    Io,
}

/// Everything the broker API can refuse or fail with.
#[derive(Clone, Debug, thiserror::Error)]
pub enum BrokerError {
    /// No such queue.
    #[error("{kind} '{name}' does not exist")]
    NotFound {
        /// What was looked up.
        kind: Kind,
        /// Its name.
        name: String,
    },
    /// A declaration met an existing thing with different options.
    #[error("{kind} '{name}' already exists with different options: {difference}")]
    Conflict {
        /// What was declared.
        kind: Kind,
        /// Its name.
        name: String,
        /// Which option differs, and how.
        difference: String,
    },
    /// A precondition of the request does not hold (`if_unused` delete of an
    /// exchange in use, a subscription over an exchange that is not a topic...).
    #[error("precondition failed: {reason}")]
    PreconditionFailed {
        /// What does not hold.
        reason: String,
    },
    /// A binding would close a loop of exchange-to-exchange bindings.
    #[error(
        "binding {source_exchange} -> {destination} would close a loop: {destination} already routes to {source_exchange}"
    )]
    BindingLoop {
        /// The binding's source exchange.
        source_exchange: String,
        /// The binding's destination exchange.
        destination: String,
    },
    /// An operation on a built-in or reserved name (the default exchange, `amq.*`).
    #[error("access refused: {reason}")]
    AccessRefused {
        /// Why.
        reason: String,
    },
    /// A name that may not be used.
    #[error("invalid {kind} name '{name}': {reason}")]
    InvalidName {
        /// What was named.
        kind: Kind,
        /// The name as given.
        name: String,
        /// Why it is refused.
        reason: String,
    },
    /// An argument out of range or inconsistent with others.
    #[error("invalid {field}: {reason}")]
    InvalidArgument {
        /// The field or option at fault.
        field: String,
        /// Why it is refused.
        reason: String,
    },
    /// A receipt handle that does not parse.
    #[error("receipt '{receipt}' is malformed")]
    MalformedReceipt {
        /// The receipt as given.
        receipt: String,
    },
    /// A receipt that names no current lease on this queue: settled already, expired
    /// and handed to someone else, from before a restart, or from another queue.
    #[error(
        "receipt '{receipt}' is not a current lease on queue '{queue}' (already settled, expired, or from another queue or an earlier run)"
    )]
    StaleReceipt {
        /// The queue it was presented to.
        queue: String,
        /// The receipt as given.
        receipt: String,
    },
    /// A limit would be exceeded (queue length with `reject-publish`, batch size,
    /// number of queues...).
    #[error("{what} limit of {limit} exceeded")]
    LimitExceeded {
        /// Which limit.
        what: Limit,
        /// Its configured value.
        limit: u64,
    },
    /// The queue's `max_length`/`max_length_bytes` is reached and its overflow policy
    /// is `reject-publish`; nothing of the send was enqueued.
    #[error(
        "queue '{queue}' is full ({detail}); its overflow policy refused the send, nothing was enqueued"
    )]
    QueueFull {
        /// The queue.
        queue: String,
        /// Which limit, with figures.
        detail: String,
    },
    /// The broker is shutting down or the queue is being deleted.
    #[error("unavailable: {reason}")]
    Unavailable {
        /// Why.
        reason: String,
    },
    /// Storage failed (disk full, I/O error). The operation did not take effect.
    #[error("storage failure on queue '{queue}': {source}")]
    Storage {
        /// The queue whose log failed.
        queue: String,
        /// What kind of failure.
        failure: StorageFailure,
        /// The storage layer's error, for its message.
        #[source]
        source: std::sync::Arc<dyn std::error::Error + Send + Sync>,
    },
    /// A consumer group's commit for a partition the member does not own.
    #[error("member '{member}' of group '{group}' does not own partition {partition}")]
    NotOwner {
        /// The group.
        group: String,
        /// The member that committed.
        member: String,
        /// A partition it does not own (now).
        partition: u32,
    },
    /// A bug or a broken invariant; logged with detail.
    #[error("internal error: {reason}")]
    Internal {
        /// What went wrong.
        reason: String,
    },
}

impl BrokerError {
    /// The stable code front ends show (`queue_not_found`). Listed in
    /// docs/http-api.md; never reused once retired.
    pub fn code(&self) -> &'static str {
        match self {
            BrokerError::NotFound { kind, .. } => match kind {
                Kind::Queue => "queue_not_found",
                Kind::Exchange => "exchange_not_found",
                Kind::Binding => "binding_not_found",
                Kind::Subscription => "subscription_not_found",
                Kind::Vhost => "vhost_not_found",
                Kind::Stream => "stream_not_found",
                Kind::Group => "group_not_found",
            },
            BrokerError::Conflict { kind, .. } => match kind {
                Kind::Exchange => "exchange_exists_with_different_options",
                Kind::Stream => "stream_exists_with_different_options",
                Kind::Group => "group_exists_with_different_options",
                _ => "queue_exists_with_different_options",
            },
            BrokerError::PreconditionFailed { .. } => "precondition_failed",
            BrokerError::BindingLoop { .. } => "binding_loop",
            BrokerError::AccessRefused { .. } => "access_refused",
            BrokerError::NotOwner { .. } => "not_owner",
            BrokerError::InvalidName { .. } => "invalid_name",
            BrokerError::InvalidArgument { .. } => "invalid_argument",
            BrokerError::MalformedReceipt { .. } => "malformed_receipt",
            BrokerError::StaleReceipt { .. } => "stale_receipt",
            BrokerError::LimitExceeded { .. } => "limit_exceeded",
            BrokerError::QueueFull { .. } => "queue_full",
            BrokerError::Unavailable { .. } => "unavailable",
            BrokerError::Storage { failure, .. } => match failure {
                StorageFailure::Full => "storage_full",
                StorageFailure::TooLarge => "message_too_large",
                StorageFailure::Stopped | StorageFailure::Io => "storage_error",
            },
            BrokerError::Internal { .. } => "internal_error",
        }
    }

    /// Wraps a failure of `queue`'s log (`"(shared log)"` for the shared one).
    pub(crate) fn storage(queue: impl Into<String>, source: weir_log::LogError) -> Self {
        let failure = match &source {
            weir_log::LogError::TooLarge { .. } => StorageFailure::TooLarge,
            // A log stopped by a failed sync waits for a restart, whatever the cause.
            weir_log::LogError::Failed { .. } => StorageFailure::Stopped,
            full if full.is_no_space() => StorageFailure::Full,
            _ => StorageFailure::Io,
        };
        BrokerError::Storage {
            queue: queue.into(),
            failure,
            source: std::sync::Arc::new(source),
        }
    }

    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        BrokerError::InvalidArgument {
            field: field.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn internal(reason: impl Into<String>) -> Self {
        BrokerError::Internal {
            reason: reason.into(),
        }
    }
}
