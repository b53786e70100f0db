//! Purge, peek, redrive and moves, and stats.

use std::collections::HashSet;

use crate::api::QueueStats;
use crate::queue::entry::Entry;
use crate::queue::ready::Ready;
use crate::queue::record::{SettleReason, StateOp};

use super::{Effect, QueueState};

/// Which ready messages a redrive takes.
pub(crate) enum Pick {
    /// From the head.
    All,
    /// Those dead-lettered from the queue with this name hash.
    Origin(u32),
    /// Those at these positions (from a peek).
    At(HashSet<u64>),
}

impl Pick {
    /// The messages at `at` if given, else those from `origin` if given, else all.
    pub(crate) fn of(origin: Option<&str>, at: Option<Vec<u64>>) -> Pick {
        match (at, origin) {
            (Some(at), _) => Pick::At(at.into_iter().collect()),
            (None, Some(o)) => Pick::Origin(super::key_hash(o) as u32),
            (None, None) => Pick::All,
        }
    }

    fn picks(&self, entry: &Entry) -> bool {
        match self {
            Pick::All => true,
            Pick::Origin(o) => entry.origin == *o,
            Pick::At(positions) => positions.contains(&entry.offset),
        }
    }
}

impl QueueState {
    /// Removes every ready, parked and delayed message; returns how many, and the
    /// record that makes it durable.
    pub(crate) fn purge(&mut self) -> (u64, Vec<Effect>) {
        let mut removed: Vec<Entry> = Vec::new();
        for ready in &mut self.ready {
            removed.extend(ready.take_all());
        }
        for (_, deque) in self.parked.drain() {
            removed.extend(deque);
        }
        for (_, entry) in std::mem::take(&mut self.delayed) {
            if entry.attempts > 0 {
                self.busy_groups.remove(&entry.group);
            }
            removed.push(entry);
        }
        self.ready_count = 0;
        self.ready_bytes = 0;
        self.parked_count = 0;
        for entry in &removed {
            self.let_go(entry);
        }
        let count = removed.len() as u64;
        self.totals.purged += count;
        if removed.is_empty() {
            return (0, Vec::new());
        }
        let offsets = removed.into_iter().map(|e| e.offset).collect();
        (
            count,
            vec![Effect::Persist(StateOp::Settled(
                SettleReason::Purged,
                offsets,
            ))],
        )
    }

    /// Removes the ready messages at `positions` (from a peek; those gone since are
    /// skipped): how many, and the record that makes it durable. Counted as purged.
    pub(crate) fn remove_ready(&mut self, positions: &HashSet<u64>) -> (u64, Vec<Effect>) {
        let mut removed: Vec<Entry> = Vec::new();
        for deque in &mut self.ready {
            deque.retain(|entry| {
                let take = positions.contains(&entry.offset);
                if take {
                    removed.push(*entry);
                }
                !take
            });
        }
        for entry in &removed {
            self.ready_count -= 1;
            self.ready_bytes -= u64::from(entry.size);
            self.let_go(entry);
        }
        let count = removed.len() as u64;
        self.totals.purged += count;
        if removed.is_empty() {
            return (0, Vec::new());
        }
        let offsets = removed.into_iter().map(|e| e.offset).collect();
        (
            count,
            vec![Effect::Persist(StateOp::Settled(
                SettleReason::Purged,
                offsets,
            ))],
        )
    }

    /// Up to `max` ready messages (optionally only those dead-lettered from
    /// `origin`), in delivery order, without leasing them.
    pub(crate) fn peek(&self, max: usize, origin: Option<u32>) -> Vec<Entry> {
        self.ready
            .iter()
            .rev()
            .flat_map(Ready::iter)
            .filter(|e| origin.is_none_or(|o| e.origin == o))
            .take(max)
            .copied()
            .collect()
    }

    /// Takes up to `max` ready messages that `pick` picks into transit.
    pub(crate) fn take_for_transit(&mut self, max: usize, pick: &Pick) -> Vec<Entry> {
        let mut taken = Vec::new();
        for deque in self.ready.iter_mut().rev() {
            let want = max - taken.len();
            if want == 0 {
                break;
            }
            match pick {
                // Everything matches: the head, without touching the rest.
                Pick::All => deque.drain_front(want, &mut taken),
                _ => deque.retain(|entry| {
                    let take = taken.len() < max && pick.picks(entry);
                    if take {
                        taken.push(*entry);
                    }
                    !take
                }),
            }
        }
        for entry in &taken {
            self.ready_count -= 1;
            self.ready_bytes -= u64::from(entry.size);
            self.in_transit.insert(entry.offset, (*entry, None));
        }
        taken
    }

    /// Takes delayed messages below `below` (not waiting for a retry of a busy
    /// group) into transit, to be rewritten at the head of the log.
    pub(super) fn take_delayed_below(&mut self, below: u64, max: usize) -> Vec<(Entry, i64)> {
        let keys: Vec<(i64, u64)> = self
            .delayed
            .iter()
            .filter(|((_, offset), e)| *offset < below && !(e.attempts > 0 && e.group != 0))
            .map(|(k, _)| *k)
            .take(max)
            .collect();
        keys.into_iter()
            .map(|key| {
                let entry = self.delayed.remove(&key).expect("invariant: key listed");
                self.in_transit.insert(entry.offset, (entry, None));
                (entry, key.0)
            })
            .collect()
    }

    /// Moved messages are back at their new offsets: forget the old ones.
    pub(crate) fn finish_move(
        &mut self,
        old: &[u64],
        new: Vec<(Entry, i64)>,
        now: i64,
    ) -> Vec<Effect> {
        let effects = self.finish_transit(old, SettleReason::Moved);
        for (entry, due) in new {
            self.hold(&entry);
            if due > now {
                self.delayed.insert((due, entry.offset), entry);
            } else {
                self.push_ready(entry);
            }
        }
        effects
    }

    /// A move failed: the messages go back to waiting where they were.
    pub(crate) fn abort_move(&mut self, moved: &[(Entry, i64)]) {
        for (entry, due) in moved {
            if self.in_transit.remove(&entry.offset).is_some() {
                self.delayed.insert((*due, entry.offset), *entry);
            }
        }
    }

    /// Every message held, in no particular order.
    pub(super) fn held_entries(&self) -> impl Iterator<Item = &Entry> {
        self.ready
            .iter()
            .flat_map(Ready::iter)
            .chain(self.parked.values().flatten())
            .chain(self.delayed.values())
            .chain(self.leased.values().map(|l| &l.entry))
            .chain(self.in_transit.values().map(|(e, _)| e))
            .chain(self.dead_letter_retry.values().map(|(e, _)| e))
            .chain(self.settling.values().map(|s| &s.entry))
    }

    /// The queue's gauges and counters; `waiting` is the number of long-polling
    /// receivers, which the actor keeps.
    pub(crate) fn stats(&self, waiting: u64, now: i64) -> QueueStats {
        let oldest = self
            .ready
            .iter()
            .filter_map(|d| d.front())
            .chain(self.parked.values().filter_map(|d| d.front()))
            .chain(self.delayed.values())
            .chain(self.leased.values().map(|l| &l.entry))
            .map(|e| e.enqueued_at)
            .min();
        let t = self.totals;
        QueueStats {
            ready: self.ready_count + self.parked_count,
            leased: self.leased.len() as u64,
            delayed: self.delayed.len() as u64,
            in_transit: (self.in_transit.len() + self.dead_letter_retry.len()) as u64,
            bytes: self.held_bytes,
            consumers: waiting,
            oldest_age_ms: oldest.map(|t| u64::try_from(now - t).unwrap_or(0)),
            sent_total: t.sent,
            duplicates_total: t.duplicates,
            acked_total: t.acked,
            redelivered_total: t.redelivered,
            expired_total: t.expired,
            dead_lettered_total: t.dead_lettered,
            dropped_total: t.dropped,
            purged_total: t.purged,
            disk_bytes: 0,
            max_lease_extensions: self
                .leased
                .values()
                .map(|l| l.extensions)
                .max()
                .unwrap_or(0),
        }
    }

    /// How many lease deadlines are kept (live and stale).
    #[cfg(test)]
    pub(crate) fn deadline_count(&self) -> usize {
        self.deadlines.len()
    }

    /// Whether anything is ready to lease.
    pub(crate) fn has_ready(&self) -> bool {
        self.ready_count > 0
    }
}
