//! Acks and the records they decide: an ack's `settled` record, the deferred
//! `Delivered` records of deliveries (which a quick ack of a first delivery makes
//! unneeded), and acks whose record could not be written (a full disk). Those stay
//! acked (never delivered again by this run, so no redelivery storm while the disk
//! is full) and their record is written again until it is durable; acking the same
//! receipt again joins that write. A stop before then leaves the message to come
//! back at the next start (at least once).

use crate::error::{BrokerError, Result};
use crate::queue::record::{SettleReason, StateOp};

use super::{AckBatch, AckWrite, Acked, Effect, QueueState, Settling, parse_receipt};

impl QueueState {
    /// Acks one receipt. A message settled now stays held (for the trim floor) until
    /// [`QueueState::acks_written`] says its record is durable; it is never
    /// delivered again by this state, whether or not that record can be written.
    pub(crate) fn ack(&mut self, queue: &str, receipt: &str) -> Result<Acked> {
        let lease = match self.take_lease(queue, receipt) {
            Ok(lease) => lease,
            Err(stale @ BrokerError::StaleReceipt { .. }) => {
                // Acked before: its record may be failing to be written.
                let again = parse_receipt(receipt).and_then(|(offset, lease_id)| {
                    let s = self
                        .settling
                        .get_mut(&offset)
                        .filter(|s| s.lease_id == lease_id)?;
                    match s.write {
                        AckWrite::Failed => {
                            s.write = AckWrite::Writing;
                            Some(Acked::Again(offset))
                        }
                        AckWrite::Retrying => Some(Acked::Joined),
                        AckWrite::Writing => None,
                    }
                });
                return again.ok_or(stale);
            }
            Err(e) => return Err(e),
        };
        let entry = lease.entry;
        self.totals.acked += 1;
        self.free_group(entry.group);
        // A first delivery settled before its record was written needs none (a
        // redelivery's record counts it in `redelivered_total`).
        if entry.attempts == 1 && self.deferred.get(&entry.offset) == Some(&1) {
            self.deferred.remove(&entry.offset);
        }
        self.settling.insert(
            entry.offset,
            Settling {
                entry,
                lease_id: lease.lease_id,
                write: AckWrite::Writing,
            },
        );
        Ok(Acked::Now(entry))
    }

    /// Acks a list of receipts: one `settled` record for all that are to be
    /// written.
    pub(crate) fn ack_all(&mut self, queue: &str, receipts: Vec<String>) -> AckBatch {
        let mut batch = AckBatch::default();
        let mut joined = 0;
        for receipt in receipts {
            match self.ack(queue, &receipt) {
                Ok(Acked::Now(entry)) => batch.writing.push(entry.offset),
                Ok(Acked::Again(offset)) => batch.writing.push(offset),
                Ok(Acked::Joined) => joined += 1,
                Err(e) => batch.report.failed.push((receipt, e)),
            }
        }
        batch.report.settled = (batch.writing.len() + joined) as u32;
        batch.joined = joined > 0;
        if !batch.writing.is_empty() {
            batch.effects.push(Effect::Persist(StateOp::Settled(
                SettleReason::Acked,
                batch.writing.clone(),
            )));
        }
        batch
    }

    /// The `settled` record of these acks landed (`ok`: they are gone for good), or
    /// its write failed: they stay acked and wait for [`QueueState::retry_acks`].
    pub(crate) fn acks_written(&mut self, offsets: &[u64], ok: bool) {
        for offset in offsets {
            match self.settling.get_mut(offset) {
                Some(s) if s.write == AckWrite::Writing => {
                    if ok {
                        let entry = s.entry;
                        self.settling.remove(offset);
                        self.let_go(&entry);
                    } else {
                        s.write = AckWrite::Failed;
                    }
                }
                _ => {}
            }
        }
    }

    /// Acks whose record failed and waits to be written again.
    pub(crate) fn unwritten_acks(&self) -> usize {
        self.count_acks(AckWrite::Failed)
    }

    /// Whether a [`QueueState::retry_acks`] write is in flight.
    pub(crate) fn ack_retry_in_flight(&self) -> bool {
        self.count_acks(AckWrite::Retrying) > 0
    }

    fn count_acks(&self, write: AckWrite) -> usize {
        self.settling.values().filter(|s| s.write == write).count()
    }

    /// Writes the `settled` record of every ack whose record failed, again; report
    /// how it went with [`QueueState::acks_retried`]. Nothing when none waits.
    pub(crate) fn retry_acks(&mut self) -> Vec<Effect> {
        let mut offsets = Vec::new();
        for (offset, s) in &mut self.settling {
            if s.write == AckWrite::Failed {
                s.write = AckWrite::Retrying;
                offsets.push(*offset);
            }
        }
        if offsets.is_empty() {
            return Vec::new();
        }
        offsets.sort_unstable();
        vec![Effect::Persist(StateOp::Settled(
            SettleReason::Acked,
            offsets,
        ))]
    }

    /// The rewrite of [`QueueState::retry_acks`] landed (`ok`), or failed: its acks
    /// wait for the next one. Returns how many it settled.
    pub(crate) fn acks_retried(&mut self, ok: bool) -> usize {
        let mut settled = Vec::new();
        for (offset, s) in &mut self.settling {
            if s.write == AckWrite::Retrying {
                if ok {
                    settled.push((*offset, s.entry));
                } else {
                    s.write = AckWrite::Failed;
                }
            }
        }
        for (offset, entry) in &settled {
            self.settling.remove(offset);
            self.let_go(entry);
        }
        settled.len()
    }

    /// The deferred `Delivered` records (see [`Effect::PersistWithNextAppend`]), for
    /// the append about to start; `None` when there are none.
    pub(crate) fn take_deferred(&mut self) -> Option<StateOp> {
        if self.deferred.is_empty() {
            return None;
        }
        let mut items: Vec<(u64, u32)> = self.deferred.drain().collect();
        items.sort_unstable();
        Some(StateOp::Delivered(items))
    }

    /// Whether deliveries wait for their `Delivered` record.
    pub(crate) fn has_deferred(&self) -> bool {
        !self.deferred.is_empty()
    }
}
