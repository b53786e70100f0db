//! [`Host`]: what a queue asks of the broker that owns it: to send its dead letters
//! on, and to send redriven messages back to the queue they came from. A trait, so
//! the queue layer never imports the broker: the broker implements it, and each
//! actor holds a weak handle (a queue does not keep its broker alive; once the
//! broker is gone, these fail with `unavailable`).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};

use crate::error::{BrokerError, Result};
use crate::queue::dlq::Target;
use crate::queue::record::Outgoing;

/// What the host's methods return: owned, so an actor's task can await it.
pub(crate) type HostFuture = Pin<Box<dyn Future<Output = Result<()>> + Send>>;

/// The broker, as its queues see it.
pub(crate) trait Host: Send + Sync + 'static {
    /// Sends dead letters (built by [`crate::queue::dlq::copy`]) to `target`: a
    /// queue (created when missing), or an exchange that routes them.
    fn dead_letter(self: Arc<Self>, target: Target, messages: Vec<Outgoing>) -> HostFuture;

    /// Sends already-built messages to queue `name` (a redrive), without
    /// de-duplication and without creating the queue.
    fn send_to(self: Arc<Self>, name: String, messages: Vec<Outgoing>) -> HostFuture;
}

/// The host behind `host`, or `unavailable` once the broker is gone.
pub(crate) fn upgrade(host: &Weak<dyn Host>) -> Result<Arc<dyn Host>> {
    host.upgrade().ok_or_else(|| BrokerError::Unavailable {
        reason: "the broker is shutting down".into(),
    })
}
