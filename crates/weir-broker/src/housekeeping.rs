//! What the broker does by itself once a second: deletes queues unused for their
//! `expires_ms`, and trims the shared log below what every queue and every publish
//! in flight may still need. One task per broker, holding it weakly: it ends with
//! the broker (or when shutdown starts).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::oneshot;
use weir_log::{LogStore, MessageLog};

use crate::broker::Broker;
use crate::error::{BrokerError, Result};
use crate::handle::QueueRef;
use crate::queue::command::Command;
use crate::shared;

/// How often the housekeeping runs.
const EVERY: Duration = Duration::from_secs(1);

impl<S: LogStore> Broker<S> {
    /// Starts the broker's housekeeping task.
    pub(crate) fn start_housekeeping(&self) {
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(EVERY).await;
                let Some(inner) = weak.upgrade() else { return };
                if inner.closing.load(Ordering::Acquire) {
                    return;
                }
                let broker = Broker { inner };
                broker.expire_unused().await;
                if let Err(e) = broker.trim_bodies().await {
                    tracing::warn!(error = %e, "trimming the shared log failed");
                }
            }
        });
    }
    /// Deletes the queues with `expires_ms` that have been unused that long.
    pub(crate) async fn expire_unused(&self) {
        let expired: Vec<String> = crate::locks::read(&self.inner.queues)
            .iter()
            .filter(|(_, q)| q.options.expires_ms.is_some_and(|ms| q.usage.idle_for(ms)))
            .map(|(name, _)| name.clone())
            .collect();
        for name in expired {
            tracing::info!(queue = %name, "queue unused for its expires_ms: deleting it");
            if let Err(e) = self.delete(&name).await {
                tracing::warn!(queue = %name, error = %e, "deleting an expired queue failed");
            }
        }
    }

    /// Trims the shared log below what every queue may still need and every publish
    /// still being handed to its queues.
    /// Run periodically; returns the new first offset.
    pub(crate) async fn trim_bodies(&self) -> Result<u64> {
        if self.inner.bodies.first_offset() == self.inner.bodies.next_offset() {
            // Nothing to trim: spare every queue the question.
            return Ok(self.inner.bodies.next_offset().0);
        }
        // In-flight publishes first: one that finishes after this snapshot has its
        // messages held by its queues before they answer the floor query below.
        let next = self.inner.bodies.next_offset().0;
        let mut floor = shared::lowest_write(&self.inner.body_writes)
            .unwrap_or(next)
            .min(next);
        let queues: Vec<QueueRef> = crate::locks::read(&self.inner.queues)
            .values()
            .cloned()
            .collect();
        for queue in queues {
            let (reply, answer) = oneshot::channel();
            if queue
                .commands
                .send(Command::BodyFloor { reply })
                .await
                .is_err()
            {
                continue;
            }
            match answer.await {
                Ok(Some(held)) => floor = floor.min(held),
                Ok(None) => {}
                // The queue took the question and stopped answering (its actor
                // panicked; it is being restarted from its log, which needs its
                // shared messages): no trim this time.
                Err(_) => return Ok(self.inner.bodies.first_offset().0),
            }
        }
        if floor > self.inner.bodies.first_offset().0 {
            self.inner
                .bodies
                .trim_before(weir_log::Offset(floor))
                .await
                .map_err(|source| BrokerError::storage("(shared log)", source))?;
        }
        Ok(floor)
    }
}
