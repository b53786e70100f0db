//! What the logged-in user may do, checked the way RabbitMQ checks it (its access
//! control table): declare and delete need `configure` on the queue or exchange;
//! `queue.bind` needs `write` on the queue and `read` on the exchange, `exchange.bind`
//! `write` on the destination and `read` on the source; `basic.publish` `write` on
//! the exchange (the default one as `amq.default`); `basic.consume`, `basic.get`
//! and `queue.purge` `read` on the queue. A declaration naming a dead-letter
//! exchange (a queue) or an alternate exchange (an exchange) also needs `write` on
//! that exchange and `read` on what is declared. Passive declares need nothing. A
//! refusal is 403 `ACCESS_REFUSED` closing the channel, with RabbitMQ's text.
//!
//! Publishes are the hot path: an exchange the user may write to is remembered for
//! the connection (RabbitMQ keeps a per-channel cache too), so a publish costs one
//! hash lookup; permissions changed later apply to new connections.

use weir_broker::access::Operation;
use weir_broker::{Binding, DestinationType};

use super::Session;
use crate::codes::{ACCESS_REFUSED, Exception};

/// Exchanges remembered as writable per connection, at most.
const PUBLISH_CACHE: usize = 64;

impl Session {
    /// `operation` on the `kind` (`queue`, `exchange`) named `name`, in the
    /// connection's vhost.
    pub(super) fn allow(
        &self,
        operation: Operation,
        kind: &'static str,
        name: &str,
    ) -> Result<(), Exception> {
        let Some(user) = &self.user else {
            return Err(Exception::connection(ACCESS_REFUSED, "not logged in"));
        };
        self.broker
            .access()
            .check(user, self.broker.name(), operation, kind, name)
            .map_err(|refused| Exception::channel(ACCESS_REFUSED, refused.to_string()))
    }

    /// A binding made or removed: `write` on its destination (queue or exchange),
    /// `read` on its source exchange.
    pub(super) fn allow_binding(&self, binding: &Binding) -> Result<(), Exception> {
        let destination = match binding.destination_type {
            DestinationType::Queue => "queue",
            DestinationType::Exchange => "exchange",
        };
        self.allow(Operation::Write, destination, &binding.destination)?;
        self.allow(Operation::Read, "exchange", &binding.source)
    }

    /// `write` on the exchange a publish names, remembered once allowed.
    pub(super) fn allow_publish(&mut self, exchange: &str) -> Result<(), Exception> {
        if self.writable.contains(exchange) {
            return Ok(());
        }
        self.allow(Operation::Write, "exchange", exchange)?;
        if self.writable.len() >= PUBLISH_CACHE {
            self.writable.clear();
        }
        self.writable.insert(exchange.to_owned());
        Ok(())
    }
}
