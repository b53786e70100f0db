//! What time does to a queue: leases that run out, delays that end, messages
//! that expire, and when a message taken in expires (the queue's TTL).

use std::cmp::Reverse;

use crate::api::DeadLetterReason;
use crate::queue::record::MessageMeta;

use super::{Effect, QueueState};

/// When a shared message published at `published_ms` with its own expiry
/// `message_expiry` (0: none) expires in a queue whose TTL is `queue_ttl_ms`: the
/// earlier of the two, the queue's counted from when the message became deliverable.
pub(crate) fn shared_expiry(
    message_expiry: i64,
    not_before: i64,
    published_ms: i64,
    queue_ttl_ms: Option<u64>,
) -> i64 {
    let queue = queue_ttl_ms.map_or(0, |t| {
        published_ms
            .max(not_before)
            .saturating_add(i64::try_from(t).unwrap_or(i64::MAX))
    });
    match (message_expiry, queue) {
        (0, q) => q,
        (m, 0) => m,
        (m, q) => m.min(q),
    }
}

impl QueueState {
    /// Gives the messages of a send about to be written that have no expiry of
    /// their own the queue's `message_ttl_ms`, counted from when each becomes
    /// deliverable (`now`, or its delay's end). Dead letters and redrives arrive
    /// without an expiry: the queue's own TTL applies to them as to any send. The
    /// expiry is written with the message, so replay needs no TTL for own messages.
    pub(crate) fn stamp_ttl<'a>(
        &self,
        metas: impl IntoIterator<Item = &'a mut MessageMeta>,
        now: i64,
    ) {
        let Some(ttl) = self.options.message_ttl_ms else {
            return;
        };
        let ttl = i64::try_from(ttl).unwrap_or(i64::MAX);
        for meta in metas.into_iter().filter(|m| m.expires_at_ms == 0) {
            meta.expires_at_ms = now.max(meta.not_before_ms).saturating_add(ttl);
        }
    }

    /// When a shared message published at `published_ms` (its own expiry
    /// `message_expiry`, 0: none; deliverable from `not_before`) expires here. The
    /// shared log holds it once for several queues, so each queue's TTL is applied
    /// as it arrives (and again at replay).
    pub(crate) fn arrival_expiry(
        &self,
        message_expiry: i64,
        not_before: i64,
        published_ms: i64,
    ) -> i64 {
        shared_expiry(
            message_expiry,
            not_before,
            published_ms,
            self.options.message_ttl_ms,
        )
    }

    /// Applies everything due by `now`: delays that passed, leases that expired,
    /// expired heads, dedup ids out of the window.
    pub(crate) fn tick(&mut self, now: i64) -> Vec<Effect> {
        let mut effects = Vec::new();
        while let Some((&(due, offset), _)) = self.delayed.first_key_value() {
            if due > now {
                break;
            }
            let entry = self
                .delayed
                .remove(&(due, offset))
                .expect("invariant: first exists");
            // Only a retry (a message delivered before) holds its group busy while it
            // waits; a delayed send does not, and must not free a group that another
            // message of it holds.
            if entry.attempts > 0 {
                // A retried message is its group's next: free the group, which puts
                // its parked messages behind it in offset order.
                self.free_group(entry.group);
            }
            if entry.expires_at != 0 && entry.expires_at <= now {
                effects.extend(self.dead_letter_or_drop(vec![(entry, DeadLetterReason::Expired)]));
                continue;
            }
            self.push_ready(entry);
        }
        while let Some(Reverse((deadline, offset, lease_id))) = self.deadlines.peek().copied() {
            if deadline > now {
                break;
            }
            self.deadlines.pop();
            let current = self
                .leased
                .get(&offset)
                .is_some_and(|l| l.lease_id == lease_id && l.deadline == deadline);
            if current {
                let lease = self.leased.remove(&offset).expect("invariant: just found");
                effects.extend(self.give_back(lease.entry, true, None, now));
            }
        }
        let mut expired = Vec::new();
        for priority in 0..self.ready.len() {
            while let Some(head) = self.ready[priority].front() {
                if head.expires_at == 0 || head.expires_at > now {
                    break;
                }
                let head = self.ready[priority]
                    .pop_front()
                    .expect("invariant: front exists");
                self.ready_count -= 1;
                self.ready_bytes -= u64::from(head.size);
                expired.push((head, DeadLetterReason::Expired));
            }
        }
        effects.extend(self.dead_letter_or_drop(expired));
        let mut retry = Vec::new();
        while let Some((&(due, offset), _)) = self.dead_letter_retry.first_key_value() {
            if due > now {
                break;
            }
            let (entry, reason) = self
                .dead_letter_retry
                .remove(&(due, offset))
                .expect("invariant: first exists");
            self.in_transit.insert(entry.offset, (entry, Some(reason)));
            retry.push((entry, reason));
        }
        if !retry.is_empty() {
            effects.push(Effect::DeadLetter(retry));
        }
        self.prune_dedup(now);
        effects
    }

    /// When [`QueueState::tick`] next has something to do.
    pub(crate) fn next_due(&self) -> Option<i64> {
        let delayed = self.delayed.first_key_value().map(|(&(due, _), _)| due);
        let lease = self.deadlines.peek().map(|Reverse((d, _, _))| *d);
        let expiry = self
            .ready
            .iter()
            .filter_map(|d| d.front())
            .filter(|e| e.expires_at != 0)
            .map(|e| e.expires_at)
            .min();
        let retry = self
            .dead_letter_retry
            .first_key_value()
            .map(|(&(due, _), _)| due);
        [delayed, lease, expiry, retry].into_iter().flatten().min()
    }
}
