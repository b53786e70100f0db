//! Taking messages in: admission (de-duplication, `reject-publish`), the ids
//! remembered for de-duplication, committing written sends, shared arrivals in
//! batches, and restoring all of it at replay.

use std::collections::HashSet;

use crate::error::{BrokerError, Result};
use crate::queue::entry::{Entry, is_shared};
use crate::queue::record::{SHARED, StateOp};

use super::{Admission, ArrivalBatch, Arrived, Effect, QueueState, SeenId};

impl QueueState {
    /// Checks a send before it is written: de-duplication and `reject-publish`.
    /// Answers, per message, whether it is a duplicate (and the record counting the
    /// duplicates), or that it must wait for an earlier send of one of its ids.
    /// Admitted messages are reserved until [`QueueState::commit`] or
    /// [`QueueState::cancel`].
    pub(crate) fn admit(
        &mut self,
        queue: &str,
        items: &[(Option<&str>, u32)],
        now: i64,
    ) -> Result<Admission> {
        let Some(duplicate) = self.admit_items(queue, items, now)? else {
            return Ok(Admission::Wait);
        };
        let duplicates = duplicate.iter().filter(|d| **d).count() as u64;
        let effects = if duplicates > 0 {
            vec![Effect::Persist(StateOp::Duplicates(duplicates))]
        } else {
            Vec::new()
        };
        Ok(Admission::Admitted { duplicate, effects })
    }

    /// [`QueueState::admit`] without the records: per message, whether it is a
    /// duplicate, or `None` when it must wait.
    fn admit_items(
        &mut self,
        queue: &str,
        items: &[(Option<&str>, u32)],
        now: i64,
    ) -> Result<Option<Vec<bool>>> {
        self.prune_dedup(now);
        let mut duplicate = vec![false; items.len()];
        if self.options.dedup_window_ms.is_some() {
            let mut seen = HashSet::new();
            for (i, (id, _)) in items.iter().enumerate() {
                if let Some(id) = id {
                    match self.dedup.get(*id) {
                        Some(s) if !self.durable(s.offset) => return Ok(None),
                        Some(s) if s.until > now => duplicate[i] = true,
                        _ => duplicate[i] = !seen.insert(*id),
                    }
                }
            }
        }
        let new_count = duplicate.iter().filter(|d| !**d).count() as u64;
        let new_bytes: u64 = items
            .iter()
            .zip(&duplicate)
            .filter(|(_, d)| !**d)
            .map(|((_, size), _)| u64::from(*size))
            .sum();
        if self.options.overflow.rejects() && new_count > 0 {
            let count = self.ready_count + self.parked_count + self.reserved_count + new_count;
            if let Some(max) = self.options.max_length.filter(|max| count > *max) {
                return Err(BrokerError::QueueFull {
                    queue: queue.to_owned(),
                    detail: format!("max_length {max}, {count} messages with this send"),
                });
            }
            let bytes = self.ready_bytes + self.reserved_bytes + new_bytes;
            if let Some(max) = self.options.max_length_bytes.filter(|max| bytes > *max) {
                return Err(BrokerError::QueueFull {
                    queue: queue.to_owned(),
                    detail: format!("max_length_bytes {max}, {bytes} bytes with this send"),
                });
            }
        }
        if let Some(window) = self.options.dedup_window_ms {
            let until = now.saturating_add(i64::try_from(window).unwrap_or(i64::MAX));
            for ((id, _), dup) in items.iter().zip(&duplicate) {
                if let (Some(id), false) = (id, dup) {
                    self.remember_id(id, until, None);
                }
            }
        }
        self.totals.duplicates += items.len() as u64 - new_count;
        self.reserved_count += new_count;
        self.reserved_bytes += new_bytes;
        Ok(Some(duplicate))
    }

    pub(super) fn remember_id(&mut self, id: &str, until: i64, offset: Option<u64>) {
        self.dedup.insert(id.to_owned(), SeenId { until, offset });
        self.dedup_order.push_back((until, id.to_owned()));
    }

    /// The sends of these ids are written at these offsets: later duplicates of them
    /// are answered as soon as those are durable (at once for shared keys, else
    /// once [`QueueState::synced_below`] passes them).
    pub(crate) fn confirm_ids<'a>(&mut self, ids: impl IntoIterator<Item = (&'a str, u64)>) {
        for (id, offset) in ids {
            if let Some(seen) = self.dedup.get_mut(id) {
                seen.offset = Some(offset);
            }
        }
    }

    /// Whether a send remembered at `offset` is durable.
    pub(super) fn durable(&self, offset: Option<u64>) -> bool {
        offset.is_some_and(|o| is_shared(o) || o < self.durable_below)
    }

    /// Every record of the queue's log below `below` is durable (a sync answered,
    /// or recovery found them): duplicates of the sends there may be answered.
    pub(crate) fn synced_below(&mut self, below: u64) {
        self.durable_below = self.durable_below.max(below);
    }

    /// The sync of the records in `from..to` failed: they may be lost, and the log
    /// takes no more appends until reopened. Their ids are forgotten, so a retry is
    /// a new send (which fails while the log does), never a "duplicate" of nothing.
    /// Returns how many were forgotten.
    pub(crate) fn sync_failed(&mut self, from: u64, to: u64) -> usize {
        let before = self.dedup.len();
        let durable_below = self.durable_below;
        self.dedup.retain(|_, s| {
            !s.offset
                .is_some_and(|o| !is_shared(o) && o >= durable_below && (from..to).contains(&o))
        });
        before - self.dedup.len()
    }

    pub(super) fn prune_dedup(&mut self, now: i64) {
        while let Some((until, _)) = self.dedup_order.front() {
            if *until > now {
                break;
            }
            let (until, id) = self
                .dedup_order
                .pop_front()
                .expect("invariant: front exists");
            if self.dedup.get(&id).is_some_and(|s| s.until == until) {
                self.dedup.remove(&id);
            }
        }
    }

    /// Messages admitted and not yet written (their append is on its way).
    pub(crate) fn admitted_unwritten(&self) -> u64 {
        self.reserved_count
    }

    /// Undoes an admission whose write failed.
    pub(crate) fn cancel(&mut self, ids: &[&str], count: u64, bytes: u64) {
        self.reserved_count = self.reserved_count.saturating_sub(count);
        self.reserved_bytes = self.reserved_bytes.saturating_sub(bytes);
        for id in ids {
            self.dedup.remove(*id);
        }
    }

    /// Adds written messages. `reserved` says whether they went through
    /// [`QueueState::admit`] (sends do; moves and recovery do not).
    pub(crate) fn commit(
        &mut self,
        entries: Vec<(Entry, i64)>,
        reserved: bool,
        now: i64,
    ) -> Vec<Effect> {
        for (mut entry, not_before) in entries {
            entry.seq = self.take_seq();
            if reserved {
                self.totals.sent += 1;
                self.reserved_count = self.reserved_count.saturating_sub(1);
                self.reserved_bytes = self.reserved_bytes.saturating_sub(u64::from(entry.size));
            }
            self.hold(&entry);
            if not_before > now {
                self.delayed.insert((not_before, entry.offset), entry);
            } else {
                self.push_ready(entry);
            }
        }
        self.enforce_length()
    }

    /// Adds a recovered entry: like commit, but no length enforcement beyond what
    /// the queue held before and no reservation. Entries come in arrival order.
    pub(crate) fn restore(&mut self, mut entry: Entry, not_before: i64, now: i64) {
        entry.seq = self.take_seq();
        self.hold(&entry);
        if not_before > now {
            self.delayed.insert((not_before, entry.offset), entry);
        } else if entry.group != 0 && self.busy_groups.contains(&entry.group) {
            self.park(entry);
        } else {
            self.push_ready(entry);
        }
    }

    /// Marks groups busy before recovered entries go in: groups whose message was
    /// waiting for its retry delay, so later messages of the group wait for it.
    pub(crate) fn restore_busy_groups(&mut self, groups: impl IntoIterator<Item = u64>) {
        self.busy_groups.extend(groups);
    }

    /// Remembers a recovered dedup id, remembered in the log at `offset`. Call
    /// [`QueueState::finish_restore`] after the last one.
    pub(crate) fn restore_id(&mut self, id: &str, until: i64, offset: u64, now: i64) {
        if until > now && self.options.dedup_window_ms.is_some() {
            let later = self.dedup.get(id).is_none_or(|s| s.until < until);
            if later {
                self.remember_id(id, until, Some(offset));
            }
        }
    }

    /// Puts the recovered dedup ids in window order (checkpoints list them in any
    /// order), so pruning finds the expired ones.
    pub(crate) fn finish_restore(&mut self) {
        self.dedup_order.make_contiguous().sort_unstable();
    }

    /// Drops the oldest batches that hold nothing any more.
    pub(crate) fn prune_batches(&mut self) {
        while self.batches.front().is_some_and(|b| b.held == 0) {
            let batch = self.batches.pop_front().expect("invariant: front exists");
            self.shared_sent += batch.count;
        }
    }

    /// Replay's batch: the shared messages from `first` (the checkpoint's
    /// `shared_below`) up to `next_shared`, `count` of them not yet in a checkpoint,
    /// `held` of them restored, with state records from `mark` on.
    pub(crate) fn restore_shared(
        &mut self,
        first: u64,
        next_shared: u64,
        count: u64,
        held: u64,
        mark: u64,
    ) {
        self.next_shared = self.next_shared.max(next_shared);
        self.batches.push_back(ArrivalBatch {
            first,
            count,
            held,
            mark,
        });
        self.prune_batches();
    }

    /// Takes in shared messages (already durable in the shared log), each as its
    /// entry built from the shared record, its delay's end and its id: admits them
    /// (de-duplication, `reject-publish`), holds the admitted ones (with this
    /// queue's priorities and TTL, enqueued when published) and declines the
    /// duplicates so replay leaves them out. `mark` is the queue log's next offset.
    pub(crate) fn arrive(
        &mut self,
        queue: &str,
        incoming: &[(Entry, i64, &str)],
        published_ms: i64,
        mark: u64,
        now: i64,
    ) -> Arrived {
        let (Some((first, _, _)), Some((last, _, _))) = (incoming.first(), incoming.last()) else {
            return Arrived::Taken {
                duplicate: Vec::new(),
                records: Vec::new(),
                effects: Vec::new(),
            };
        };
        let (first, last) = (first.offset, last.offset);
        // Arrivals come in shared-log order, so one below what the queue has seen
        // was seen already: by the replay of an actor restarted after a panic (it
        // scans the shared log to its end), while the arrival waited in the channel.
        // The shared log is appended a batch at a time, so a batch is in the replay
        // whole or not at all.
        if last < self.next_shared {
            return Arrived::Taken {
                duplicate: vec![false; incoming.len()],
                records: Vec::new(),
                effects: Vec::new(),
            };
        }
        let dedup = self.options.dedup_window_ms.is_some();
        let items: Vec<(Option<&str>, u32)> = incoming
            .iter()
            .map(|(entry, _, id)| (Some(*id).filter(|id| dedup && !id.is_empty()), entry.size))
            .collect();
        let duplicate = match self.admit_items(queue, &items, now) {
            Ok(Some(duplicate)) => duplicate,
            Ok(None) => return Arrived::Wait,
            Err(error) => {
                self.arrived(first, last, 0, mark);
                let keys = incoming.iter().map(|(entry, _, _)| entry.offset).collect();
                return Arrived::Refused {
                    dead_letter: self.dead_letters_refused(&error),
                    error,
                    records: vec![Effect::Persist(StateOp::Declined(keys))],
                };
            }
        };
        drop(items);
        let mut entries = Vec::with_capacity(incoming.len());
        let mut ids = Vec::new();
        let mut declined = Vec::new();
        for ((entry, not_before, id), dup) in incoming.iter().zip(&duplicate) {
            if *dup {
                declined.push(entry.offset);
                continue;
            }
            let mut entry = *entry;
            entry.priority = entry.priority.min(self.options.max_priority);
            entry.enqueued_at = published_ms;
            entry.expires_at = self.arrival_expiry(entry.expires_at, *not_before, published_ms);
            entries.push((entry, *not_before));
            if dedup {
                ids.push((*id, entry.offset));
            }
        }
        self.arrived(first, last, entries.len() as u64, mark);
        self.confirm_ids(ids);
        let effects = self.commit(entries, true, now);
        let mut records = Vec::new();
        if !declined.is_empty() {
            records.push(Effect::Persist(StateOp::Duplicates(declined.len() as u64)));
            records.push(Effect::Persist(StateOp::Declined(declined)));
        }
        Arrived::Taken {
            duplicate,
            records,
            effects,
        }
    }

    /// Shared messages arrived: keys `first..=last` (ascending, after every earlier
    /// arrival), `admitted` of them held from now on (the caller commits them), when
    /// the queue log's next offset was `mark`. A batch whose messages were all
    /// declined still goes behind an older one: it keeps the log from being trimmed
    /// past its `declined` record while the older one holds `shared_below` down.
    fn arrived(&mut self, first: u64, last: u64, admitted: u64, mark: u64) {
        self.next_shared = self.next_shared.max(last + 1);
        if admitted == 0 && self.batches.is_empty() {
            return;
        }
        self.batches.push_back(ArrivalBatch {
            first,
            count: admitted,
            held: admitted,
            mark,
        });
    }

    /// Every shared message of this queue with a key under this is settled (or
    /// never arrived here): what a checkpoint records, and how far the shared log
    /// may be trimmed for this queue.
    pub(crate) fn shared_below(&self) -> u64 {
        self.batches
            .front()
            .map_or(self.next_shared.max(SHARED), |b| b.first)
    }

    /// The queue log may not be trimmed above this while shared messages are held:
    /// state records about them sit at or above it.
    pub(super) fn shared_mark(&self) -> Option<u64> {
        self.batches.front().map(|b| b.mark)
    }

    /// The `sent` of shared messages under [`QueueState::shared_below`] not yet in a
    /// checkpoint; the caller puts it in the one it writes.
    pub(super) fn take_shared_sent(&mut self) -> u64 {
        std::mem::take(&mut self.shared_sent)
    }

    /// Every held message in arrival order, with its seq cleared and, for a delayed
    /// one, its due time if that is after `now`: what a restart at `now` must give
    /// back (leases end, passed delays are ready, arrival order stays). Messages in
    /// transit or settling are left out: whether they come back depends on writes
    /// in flight.
    #[cfg(test)]
    pub(crate) fn held_in_arrival_order(&self, now: i64) -> Vec<(Entry, Option<i64>)> {
        let mut all: Vec<(Entry, Option<i64>)> = self
            .ready
            .iter()
            .flat_map(crate::queue::ready::Ready::iter)
            .chain(self.parked.values().flatten())
            .chain(self.leased.values().map(|l| &l.entry))
            .map(|e| (*e, None))
            .chain(
                self.delayed
                    .iter()
                    .map(|((due, _), e)| (*e, Some(*due).filter(|d| *d > now))),
            )
            .collect();
        all.sort_by_key(|(e, _)| e.seq);
        for (e, _) in &mut all {
            e.seq = 0;
        }
        all
    }

    /// Whether any shared message is held.
    pub(crate) fn holds_shared(&self) -> bool {
        !self.batches.is_empty()
    }
}
