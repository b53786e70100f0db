//! Handing messages out and getting them back: leases with visibility
//! timeouts, nack, release, retry backoff, extend. (Acks are in `acks`.)

use std::cmp::Reverse;

use crate::api::{Backoff, DeadLetterReason};
use crate::error::{BrokerError, Result};
use crate::queue::entry::Entry;
use crate::queue::record::StateOp;

use super::{Effect, Lease, QueueState, parse_receipt};

impl QueueState {
    /// Leases up to `max` messages for `visibility_ms`. Expired heads met on the way
    /// are expired; messages of busy groups are parked.
    pub(crate) fn lease(
        &mut self,
        max: usize,
        visibility_ms: u64,
        now: i64,
    ) -> (Vec<(Entry, u64)>, Vec<Effect>) {
        let mut leased = Vec::new();
        let mut expired = Vec::new();
        let deadline = now.saturating_add(i64::try_from(visibility_ms).unwrap_or(i64::MAX));
        while leased.len() < max {
            let Some(mut entry) = self.pop_head() else {
                break;
            };
            if entry.expires_at != 0 && entry.expires_at <= now {
                expired.push((entry, DeadLetterReason::Expired));
                continue;
            }
            if entry.group != 0 && !self.busy_groups.insert(entry.group) {
                self.park(entry);
                continue;
            }
            if entry.attempts > 0 {
                self.totals.redelivered += 1;
            }
            entry.attempts = entry.attempts.saturating_add(1);
            let lease_id = self.next_lease_id;
            self.next_lease_id += 1;
            self.leased.insert(
                entry.offset,
                Lease {
                    entry,
                    lease_id,
                    deadline,
                    extensions: 0,
                },
            );
            self.push_deadline(deadline, entry.offset, lease_id);
            leased.push((entry, lease_id));
        }
        let mut effects = self.dead_letter_or_drop(expired);
        if !leased.is_empty() {
            // Delivered before its record is written (decision 0005).
            self.deferred
                .extend(leased.iter().map(|(e, _)| (e.offset, e.attempts)));
            effects.push(Effect::PersistWithNextAppend);
        }
        (leased, effects)
    }

    pub(super) fn take_lease(&mut self, queue: &str, receipt: &str) -> Result<Lease> {
        let (offset, lease_id) =
            parse_receipt(receipt).ok_or_else(|| BrokerError::MalformedReceipt {
                receipt: receipt.chars().take(100).collect(),
            })?;
        match self.leased.get(&offset) {
            Some(lease) if lease.lease_id == lease_id => {
                Ok(self.leased.remove(&offset).expect("invariant: just found"))
            }
            _ => Err(BrokerError::StaleReceipt {
                queue: queue.to_owned(),
                receipt: receipt.to_owned(),
            }),
        }
    }

    /// Returns a leased message: requeued (after `delay_ms`, or the queue's backoff
    /// when `None`), or dead-lettered when `requeue` is false or deliveries ran out.
    pub(crate) fn nack(
        &mut self,
        queue: &str,
        receipt: &str,
        requeue: bool,
        delay_ms: Option<u64>,
        now: i64,
    ) -> Result<Vec<Effect>> {
        let lease = self.take_lease(queue, receipt)?;
        Ok(self.give_back(lease.entry, requeue, delay_ms, now))
    }

    /// Returns a message whose receiver vanished before it got it: ready at once,
    /// its delivery still counted.
    pub(crate) fn release(&mut self, offset: u64, lease_id: u64) {
        if self
            .leased
            .get(&offset)
            .is_some_and(|l| l.lease_id == lease_id)
        {
            let lease = self.leased.remove(&offset).expect("invariant: just found");
            self.free_group(lease.entry.group);
            self.push_ready(lease.entry);
        }
    }

    pub(super) fn give_back(
        &mut self,
        entry: Entry,
        requeue: bool,
        delay_ms: Option<u64>,
        now: i64,
    ) -> Vec<Effect> {
        if !requeue {
            self.free_group(entry.group);
            return self.dead_letter_or_drop(vec![(entry, DeadLetterReason::Rejected)]);
        }
        if self
            .options
            .max_deliveries
            .is_some_and(|max| entry.attempts >= max)
        {
            self.free_group(entry.group);
            return self.dead_letter_or_drop(vec![(entry, DeadLetterReason::MaxDeliveries)]);
        }
        let delay = delay_ms.unwrap_or_else(|| self.backoff(entry.attempts));
        if delay == 0 {
            self.free_group(entry.group);
            self.push_ready(entry);
            return Vec::new();
        }
        // The group stays busy until this message is ready again: FIFO per group.
        let due = now.saturating_add(i64::try_from(delay).unwrap_or(i64::MAX));
        self.delayed.insert((due, entry.offset), entry);
        vec![Effect::Persist(StateOp::Retry(vec![(
            entry.offset,
            entry.attempts,
            due,
        )]))]
    }

    /// The retry delay after `attempts` deliveries.
    pub(crate) fn backoff(&self, attempts: u32) -> u64 {
        let base = self.options.retry_delay_ms;
        match self.options.retry_backoff {
            Backoff::Fixed => base,
            Backoff::Exponential => {
                let shift = attempts.saturating_sub(1).min(40);
                base.saturating_mul(1u64 << shift)
                    .min(self.options.retry_delay_max_ms.max(base))
            }
        }
    }

    /// Moves a lease's deadline to `visibility_ms` from now.
    pub(crate) fn extend(
        &mut self,
        queue: &str,
        receipt: &str,
        visibility_ms: u64,
        now: i64,
    ) -> Result<()> {
        let lease = self.take_lease(queue, receipt)?;
        let deadline = now.saturating_add(i64::try_from(visibility_ms).unwrap_or(i64::MAX));
        self.leased.insert(
            lease.entry.offset,
            Lease {
                deadline,
                extensions: lease.extensions.saturating_add(1),
                ..lease
            },
        );
        self.push_deadline(deadline, lease.entry.offset, lease.lease_id);
        Ok(())
    }

    /// Adds a lease deadline. Settled and extended leases leave stale items
    /// behind; when they outnumber the live ones, the heap is rebuilt so memory
    /// stays proportional to the leases held.
    pub(super) fn push_deadline(&mut self, deadline: i64, offset: u64, lease_id: u64) {
        self.deadlines.push(Reverse((deadline, offset, lease_id)));
        if self.deadlines.len() > 2 * self.leased.len() + 1024 {
            self.deadlines = self
                .leased
                .iter()
                .map(|(offset, l)| Reverse((l.deadline, *offset, l.lease_id)))
                .collect();
        }
    }
}
