//! What time does to a queue: leases that run out, delays that end, messages
//! that expire.

use std::cmp::Reverse;

use crate::api::DeadLetterReason;

use super::{Effect, QueueState};

impl QueueState {
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
