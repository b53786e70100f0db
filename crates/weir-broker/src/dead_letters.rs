//! Where a queue's dead letters and redrives go once they leave it: to a queue
//! (created when missing) or through an exchange, never round a cycle. The broker's
//! side of [`crate::queue::host::Host`]; and where a message through an exchange
//! would go ([`Broker::route_test`]), which is how the dashboard finds the queues a
//! dead-letter exchange feeds.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use weir_log::LogStore;

use crate::api::QueueOptions;
use crate::broker::{Broker, Inner};
use crate::error::{BrokerError, Kind, Result};
use crate::queue::command::Command;
use crate::queue::dlq::Target;
use crate::queue::host::{Host, HostFuture};
use crate::queue::record::Outgoing;
use crate::traffic::{DEAD_LETTER_REASONS, reason_slot};

impl<S: LogStore> Host for Inner<S> {
    fn dead_letter(self: Arc<Self>, target: Target, messages: Vec<Outgoing>) -> HostFuture {
        Box::pin(async move {
            let mut reasons = [0u64; DEAD_LETTER_REASONS.len()];
            for m in &messages {
                if let Some(info) = &m.meta.dead_letter {
                    reasons[reason_slot(info.reason)] += 1;
                }
            }
            let broker = Broker { inner: self };
            broker.dead_letter_to(&target, messages).await?;
            for (reason, n) in DEAD_LETTER_REASONS.into_iter().zip(reasons) {
                broker.inner.traffic.dead_lettered(reason, n);
            }
            Ok(())
        })
    }

    fn send_to(self: Arc<Self>, name: String, messages: Vec<Outgoing>) -> HostFuture {
        Box::pin(async move {
            Broker { inner: self }
                .send_internal(&name, messages, false)
                .await
        })
    }
}

impl<S: LogStore> Broker<S> {
    /// The queues and streams a message published through `exchange` with `key`
    /// and `headers` would reach now (nothing is published): the dashboard's
    /// routing test, and where a queue's dead letters go.
    ///
    /// # Errors
    /// Unknown exchange; an invalid key for a topic exchange.
    pub fn route_test(
        &self,
        exchange: &str,
        key: &str,
        headers: &BTreeMap<String, String>,
    ) -> Result<Vec<String>> {
        let routed = self.router().route(exchange, key, headers, |q| {
            self.queue_exists(q) || self.stream_exists(q)
        })?;
        Ok(routed.queues.into_iter().collect())
    }

    /// The queues a dead letter published through `exchange` with `key` reaches.
    pub(crate) fn route_dead_letter(
        &self,
        exchange: &str,
        key: &str,
        headers: &BTreeMap<String, String>,
    ) -> Result<Vec<String>> {
        let routed = self
            .router()
            .route(exchange, key, headers, |q| self.queue_exists(q))?;
        Ok(routed.queues.into_iter().collect())
    }

    /// Moves the ready messages of dead-letter queue `name` at `positions` (from
    /// [`Broker::peek`]'s [`Delivery::position`](crate::Delivery::position)) back
    /// to their source queues; how many moved (those gone since the peek are
    /// skipped).
    ///
    /// # Errors
    /// `NotFound`; `InvalidArgument` for more positions than `max_receive`, or a
    /// message that was not dead-lettered; a source queue refusing.
    pub async fn redrive_at(&self, name: &str, positions: Vec<u64>) -> Result<u64> {
        let max = self.check_positions(&positions)?;
        let moved = self
            .ask(name, |reply| Command::Redrive {
                origin: None,
                at: Some(positions),
                max,
                reply,
            })
            .await??;
        self.inner.traffic.redriven(moved);
        Ok(moved)
    }

    /// Removes the ready messages of `name` at `positions` (from [`Broker::peek`]);
    /// how many (those gone since the peek are skipped). Counted as purged.
    ///
    /// # Errors
    /// `NotFound`; `InvalidArgument` for more positions than `max_receive`.
    pub async fn remove_at(&self, name: &str, positions: Vec<u64>) -> Result<u64> {
        self.check_positions(&positions)?;
        self.ask(name, |reply| Command::Remove {
            at: positions,
            reply,
        })
        .await?
    }

    fn check_positions(&self, positions: &[u64]) -> Result<usize> {
        let limit = self.inner.config.limits.max_receive;
        if positions.is_empty() || positions.len() as u64 > u64::from(limit) {
            return Err(BrokerError::invalid(
                "positions",
                format!("{} positions, outside 1..={limit}", positions.len()),
            ));
        }
        Ok(positions.len())
    }

    /// Sends already-built messages to a queue from inside the broker (dead letters,
    /// redrives), creating a missing dead-letter queue.
    async fn send_internal(
        &self,
        name: &str,
        messages: Vec<Outgoing>,
        create_missing: bool,
    ) -> Result<()> {
        if create_missing && self.get(name).is_err() {
            self.declare(name, QueueOptions::default()).await?;
        }
        self.send_prepared(name, messages, false).await.map(|_| ())
    }

    /// Sends dead letters (built by [`crate::queue::dlq::copy`]) to where their queue's
    /// dead letters go. Through an exchange, each is routed with each of its routing
    /// keys; unroutable ones, and all when the exchange does not exist, are dropped, as
    /// in RabbitMQ. A dead letter is not sent to a queue it would go round a cycle
    /// through ([`crate::queue::dlq::is_cycle`]).
    async fn dead_letter_to(&self, target: &Target, messages: Vec<Outgoing>) -> Result<()> {
        use crate::queue::dlq::{is_cycle, report_cycle};
        let not_cycling = |m: &Outgoing, queue: &str| match &m.meta.dead_letter {
            Some(info) if is_cycle(info, queue) => {
                report_cycle(info, queue);
                false
            }
            _ => true,
        };
        let exchange = match target {
            Target::Queue(queue) => {
                let messages: Vec<Outgoing> = messages
                    .into_iter()
                    .filter(|m| not_cycling(m, queue))
                    .collect();
                if messages.is_empty() {
                    return Ok(());
                }
                return self.send_internal(queue, messages, true).await;
            }
            Target::Exchange { name, .. } => name,
        };
        let mut per_queue: BTreeMap<String, Vec<Outgoing>> = BTreeMap::new();
        for m in messages {
            let headers: BTreeMap<String, String> = m
                .headers
                .iter()
                .filter(|h| !h.name.starts_with(b"\0"))
                .map(|h| {
                    (
                        String::from_utf8_lossy(&h.name).into_owned(),
                        String::from_utf8_lossy(&h.value).into_owned(),
                    )
                })
                .collect();
            let keys = m
                .meta
                .dead_letter
                .as_ref()
                .map(|d| d.routing_keys.clone())
                .unwrap_or_default();
            let mut queues: BTreeSet<String> = BTreeSet::new();
            for key in &keys {
                match self.route_dead_letter(exchange, key, &headers) {
                    Ok(routed) => queues.extend(routed),
                    Err(BrokerError::NotFound {
                        kind: Kind::Exchange,
                        ..
                    }) => {
                        tracing::debug!(%exchange, "dead letter dropped: its dead-letter exchange does not exist");
                    }
                    Err(e) => return Err(e),
                }
            }
            for queue in queues {
                if not_cycling(&m, &queue) {
                    per_queue.entry(queue).or_default().push(m.clone());
                }
            }
        }
        for (queue, messages) in per_queue {
            self.send_prepared(&queue, messages, false).await?;
        }
        Ok(())
    }
}
