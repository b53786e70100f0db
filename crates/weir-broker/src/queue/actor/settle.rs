//! Settling leases: ack (synced, or unsynced for AMQP), nack, extend, and the
//! retry of ack records whose write failed.

use tokio::sync::oneshot;
use tokio::time::Instant;
use weir_log::LogStore;

use crate::api::{NackOptions, SettleReport};
use crate::clock::now_ms;
use crate::error::{BrokerError, Result};
use crate::queue::record::{SettleReason, StateOp};
use crate::queue::state::parse_receipt;

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
        let mut report = SettleReport::default();
        let mut entries = Vec::new();
        // Acks of this request whose record failed before and is not being retried
        // now: written again with the new ones.
        let mut again = Vec::new();
        // Acks whose retry is in flight: answered when it lands.
        let mut joined = 0;
        for receipt in receipts {
            match self.state.ack(&self.name, &receipt) {
                Ok(entry) => {
                    let lease = parse_receipt(&receipt).map_or(0, |(_, lease)| lease);
                    entries.push((entry, lease));
                }
                Err(e @ BrokerError::StaleReceipt { .. }) => match parse_receipt(&receipt) {
                    Some((offset, lease)) if self.unwritten_acks.get(&offset) == Some(&lease) => {
                        self.unwritten_acks.remove(&offset);
                        again.push((offset, lease));
                    }
                    Some((offset, lease)) if self.retrying_acks.get(&offset) == Some(&lease) => {
                        joined += 1;
                    }
                    _ => report.failed.push((receipt, e)),
                },
                Err(e) => report.failed.push((receipt, e)),
            }
        }
        report.settled = (entries.len() + again.len() + joined) as u32;
        for (entry, _) in &entries {
            // A first delivery settled before its record was written needs none (a
            // redelivery's record counts it in `redelivered_total`).
            if entry.attempts == 1 && self.unrecorded.get(&entry.offset) == Some(&1) {
                self.unrecorded.remove(&entry.offset);
            }
        }
        self.serve_waiters();
        let mut acks: Vec<(u64, u64)> = entries
            .iter()
            .map(|(e, lease)| (e.offset, *lease))
            .collect();
        acks.extend(again);
        let retried = (joined > 0).then(|| {
            let (tx, rx) = oneshot::channel();
            self.ack_retry_waiters.push(tx);
            rx
        });
        if acks.is_empty() && retried.is_none() {
            let _ = reply.send(report);
            return;
        }
        let written = if acks.is_empty() {
            None
        } else {
            let offsets = acks.iter().map(|(offset, _)| *offset).collect();
            let ops = vec![StateOp::Settled(SettleReason::Acked, offsets)];
            Some(if synced {
                self.persist(ops)
            } else {
                self.persist_unsynced(ops)
            })
        };
        let events = self.internal_tx.clone();
        let queue = self.name.clone();
        self.tasks.spawn(async move {
            let mut result = Ok(());
            if let Some(written) = written {
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

    /// Writes the `settled` record of the unwritten acks again (see
    /// `unwritten_acks`).
    pub(super) fn retry_acks(&mut self) {
        self.ack_retry_due = None;
        if self.unwritten_acks.is_empty() {
            return;
        }
        self.retrying_acks = std::mem::take(&mut self.unwritten_acks);
        let offsets = self.retrying_acks.keys().copied().collect();
        let done = self.persist(vec![StateOp::Settled(SettleReason::Acked, offsets)]);
        let events = self.internal_tx.clone();
        self.tasks.spawn(async move {
            let _ = events.send(Internal::AcksRetried(done.await));
        });
    }

    /// The `settled` record of acks could not be written: they stay acked and the
    /// record is retried.
    pub(super) fn keep_unwritten_acks(&mut self, acks: impl IntoIterator<Item = (u64, u64)>) {
        let before = self.unwritten_acks.len();
        self.unwritten_acks.extend(acks);
        if before == 0 {
            tracing::warn!(
                queue = %self.name,
                acks = self.unwritten_acks.len(),
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
        let done = self.perform_tracked(effects);
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

    /// The retry of the acks in `retrying_acks` landed (or failed: they wait for
    /// the next one, later each time).
    pub(super) fn acks_retried(&mut self, result: &Result<()>) {
        let acks = std::mem::take(&mut self.retrying_acks);
        let waiters = std::mem::take(&mut self.ack_retry_waiters);
        if result.is_ok() {
            let offsets: Vec<u64> = acks.keys().copied().collect();
            self.state.finish_settle(&offsets);
            tracing::info!(queue = %self.name, acks = offsets.len(), "acks that could not be written before are durable now");
            self.ack_retry_backoff = ACK_RETRY_FIRST;
            if !self.unwritten_acks.is_empty() && self.ack_retry_due.is_none() {
                self.ack_retry_due = Some(Instant::now() + ACK_RETRY_FIRST);
            }
        } else {
            self.ack_retry_backoff = (self.ack_retry_backoff * 2).min(ACK_RETRY_MAX);
            self.unwritten_acks.extend(acks);
            self.ack_retry_due = Some(Instant::now() + self.ack_retry_backoff);
        }
        for waiter in waiters {
            let _ = waiter.send(result.clone());
        }
    }
}
