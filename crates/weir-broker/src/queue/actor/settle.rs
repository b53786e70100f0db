//! Settling leases: ack (synced, or unsynced for AMQP), nack, extend, and the
//! retry of ack records whose write failed.

use tokio::sync::oneshot;
use tokio::time::Instant;
use weir_log::LogStore;

use crate::api::{NackOptions, SettleReport};
use crate::clock::now_ms;
use crate::error::{BrokerError, Result};

use super::{ACK_RETRY_FIRST, ACK_RETRY_MAX, Actor, BoxFuture, Internal};

impl<S: LogStore> Actor<S> {
    pub(super) fn extend(
        &mut self,
        receipts: Vec<String>,
        visibility_timeout_ms: u64,
    ) -> SettleReport {
        let mut report = SettleReport::default();
        let now = now_ms();
        for receipt in receipts {
            match self
                .state
                .extend(&self.name, &receipt, visibility_timeout_ms, now)
            {
                Ok(()) => report.settled += 1,
                Err(e) => report.failed.push((receipt, e)),
            }
        }
        report
    }

    pub(super) fn ack(
        &mut self,
        receipts: Vec<String>,
        synced: bool,
        reply: oneshot::Sender<SettleReport>,
    ) {
        let batch = self.state.ack_all(&self.name, receipts);
        let mut report = batch.report;
        self.serve_waiters();
        let retried = batch.joined.then(|| {
            let (tx, rx) = oneshot::channel();
            self.ack_retry_waiters.push(tx);
            rx
        });
        if batch.writing.is_empty() && retried.is_none() {
            let _ = reply.send(report);
            return;
        }
        let written = (!batch.writing.is_empty()).then(|| {
            let acks = batch.writing;
            (self.perform_tracked(batch.effects, synced), acks)
        });
        let events = self.internal_tx.clone();
        let queue = self.name.clone();
        self.tasks.spawn(async move {
            let mut result = Ok(());
            if let Some((written, acks)) = written {
                result = written.await;
                let _ = events.send(Internal::Acked {
                    acks,
                    ok: result.is_ok(),
                });
            }
            if let Some(retried) = retried {
                let joined = retried.await.unwrap_or_else(|_| {
                    Err(BrokerError::Unavailable {
                        reason: format!("queue '{queue}' stopped before the ack was written"),
                    })
                });
                result = result.and(joined);
            }
            if let Err(e) = result {
                // Not durable (yet): every receipt of this request is reported failed.
                // The acks are kept and retried; acking the same receipts again
                // answers once they are durable.
                report.failed.push((String::new(), e));
                report.settled = 0;
            }
            let _ = reply.send(report);
        });
    }

    /// Writes the `settled` record of the acks whose record failed again (see
    /// `QueueState::retry_acks`).
    pub(super) fn retry_acks(&mut self) {
        self.ack_retry_due = None;
        let effects = self.state.retry_acks();
        if effects.is_empty() {
            return;
        }
        let done = self.perform_tracked(effects, true);
        let events = self.internal_tx.clone();
        self.tasks.spawn(async move {
            let _ = events.send(Internal::AcksRetried(done.await));
        });
    }

    /// The `settled` record of acks could not be written: the state keeps them
    /// acked, and the record is written again later. `before`: how many waited
    /// for that before.
    pub(super) fn acks_unwritten(&mut self, before: usize) {
        if before == 0 {
            tracing::warn!(
                queue = %self.name,
                acks = self.state.unwritten_acks(),
                "acks could not be written; they are kept (not delivered again) and retried"
            );
        }
        if self.ack_retry_due.is_none() {
            self.ack_retry_due = Some(Instant::now() + self.ack_retry_backoff);
        }
    }

    pub(super) fn nack(
        &mut self,
        receipts: Vec<String>,
        options: NackOptions,
        reply: oneshot::Sender<SettleReport>,
    ) {
        let mut report = SettleReport::default();
        let mut effects = Vec::new();
        let now = now_ms();
        for receipt in receipts {
            match self
                .state
                .nack(&self.name, &receipt, options.requeue, options.delay_ms, now)
            {
                Ok(e) => {
                    report.settled += 1;
                    effects.extend(e);
                }
                Err(e) => report.failed.push((receipt, e)),
            }
        }
        let done = self.perform_tracked(effects, true);
        self.serve_waiters();
        self.reply_after(done, report, reply);
    }

    pub(super) fn reply_after(
        &self,
        done: BoxFuture,
        mut report: SettleReport,
        reply: oneshot::Sender<SettleReport>,
    ) {
        self.tasks.spawn(async move {
            if let Err(e) = done.await {
                // Nothing of it is known durable: report every receipt as failed.
                report.failed.push((String::new(), e));
                report.settled = 0;
            }
            let _ = reply.send(report);
        });
    }

    /// The rewrite of the acks whose record failed landed (or failed: they wait
    /// for the next one, later each time).
    pub(super) fn acks_retried(&mut self, result: &Result<()>) {
        let waiters = std::mem::take(&mut self.ack_retry_waiters);
        let settled = self.state.acks_retried(result.is_ok());
        if result.is_ok() {
            tracing::info!(queue = %self.name, acks = settled, "acks that could not be written before are durable now");
            self.ack_retry_backoff = ACK_RETRY_FIRST;
            if self.state.unwritten_acks() > 0 && self.ack_retry_due.is_none() {
                self.ack_retry_due = Some(Instant::now() + ACK_RETRY_FIRST);
            }
        } else {
            self.ack_retry_backoff = (self.ack_retry_backoff * 2).min(ACK_RETRY_MAX);
            self.ack_retry_due = Some(Instant::now() + self.ack_retry_backoff);
        }
        for waiter in waiters {
            let _ = waiter.send(result.clone());
        }
    }
}
