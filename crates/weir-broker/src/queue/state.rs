//! The delivery state machine of one work queue, as plain data (no I/O, no clock,
//! no tasks): the actor feeds it commands with the current time and performs the
//! [`Effect`]s it returns. That is what lets the property test drive it against a
//! naive model.
//!
//! A message is in exactly one place: `ready` (per priority, in arrival order),
//! `delayed` (by due time), `leased` (with a deadline), `parked` (ready, but its
//! group has a message in flight) or `in_transit` (being copied elsewhere: to the
//! dead-letter queue, or moved within the log). Settled messages are in none.
//!
//! A message is known by its key: its offset in the queue's own log, or
//! [`SHARED`]` | offset` for a message published to several queues and stored once in
//! the shared log (decision 0004). Shared messages arrive in batches; the queue tracks
//! each batch's position in its own log (its mark) so the log is never trimmed past
//! state records about a shared message that is still held.
//!
//! Maps keyed by message key use rustc-hash's `FxHashMap`: the keys are offsets the
//! broker assigns, not client input, so a keyed hash buys nothing there, and the
//! standard library's cost the work path about 2,000 instructions per message
//! (callgrind, `scripts/instructions`).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet, VecDeque};

use rustc_hash::FxHashMap;

use crate::api::{Backoff, DeadLetterReason, Overflow, QueueOptions, QueueStats};
use crate::error::{BrokerError, Result};
use crate::hex::push_hex;
use crate::queue::entry::{Entry, is_shared};
use crate::queue::ready::Ready;
use crate::queue::record::{SHARED, SettleReason, StateOp, Totals};

/// Shared messages that arrived together (one publish, or one replay).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ArrivalBatch {
    /// Lowest key of the batch (batches arrive in key order, so it also bounds the
    /// keys of the one before).
    first: u64,
    /// Messages it brought in whose `sent` no checkpoint holds yet (declined ones
    /// not counted).
    count: u64,
    /// Of those, how many are still held.
    held: u64,
    /// The queue log's next offset when it arrived: every state record about its
    /// messages is at or above this.
    mark: u64,
}

/// An id inside the dedup window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct SeenId {
    /// When it stops counting, ms since the epoch.
    until: i64,
    /// Where the log remembers it: its message record, or the dedup record that
    /// carried it over a trim. `None` while its send is still being written. Until
    /// the record is durable too (see [`QueueState::synced_below`]), a duplicate of
    /// it waits: that write, or its sync, may still fail.
    offset: Option<u64>,
}

/// The answer of [`QueueState::admit`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Per message, whether it is a duplicate.
    Admitted(Vec<bool>),
    /// An id of this send is being written by an earlier send: try again once that
    /// lands (its outcome decides whether this one is a duplicate).
    Wait,
}

/// A message leased to a consumer.
#[allow(clippy::struct_field_names)] // `lease_id` reads better than `id` at use sites
#[derive(Clone, Copy, Debug)]
struct Lease {
    entry: Entry,
    lease_id: u64,
    deadline: i64,
}

/// How long a dead letter the dead-letter queue refused waits before the next try.
pub(crate) const DEAD_LETTER_RETRY_MS: i64 = 5_000;

/// Something the actor must do for the state to hold.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Effect {
    /// Append this state record.
    Persist(StateOp),
    /// Copy these messages to the dead-letter queue, then report back with
    /// [`QueueState::finish_transit`].
    DeadLetter(Vec<(Entry, DeadLetterReason)>),
}

/// The hash used for group keys and source queues.
pub(crate) fn key_hash(key: &str) -> u64 {
    // FNV-1a: stable across runs and Rust versions, which std's hasher is not.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h.max(1)
}

/// The state of one queue.
#[derive(Debug)]
pub(crate) struct QueueState {
    options: QueueOptions,
    /// Ready messages, one queue per priority, each in arrival order.
    ready: Vec<Ready>,
    ready_count: u64,
    ready_bytes: u64,
    /// Delayed messages by (due time, offset).
    delayed: BTreeMap<(i64, u64), Entry>,
    /// Leased messages by offset.
    leased: FxHashMap<u64, Lease>,
    /// Lease deadlines; stale items (extended or settled leases) are skipped.
    deadlines: BinaryHeap<Reverse<(i64, u64, u64)>>,
    /// Groups with a message leased or waiting for its retry delay.
    busy_groups: HashSet<u64>,
    /// Ready messages held back because their group is busy, in offset order.
    parked: FxHashMap<u64, VecDeque<Entry>>,
    parked_count: u64,
    /// Messages being copied elsewhere.
    /// With why, when the copy goes to the dead-letter queue (`None`: a redrive
    /// or a move).
    in_transit: FxHashMap<u64, (Entry, Option<DeadLetterReason>)>,
    /// Dead letters whose copy failed (the dead-letter queue refused it), waiting
    /// to try again, by (due time, offset).
    dead_letter_retry: BTreeMap<(i64, u64), (Entry, DeadLetterReason)>,
    /// Acked messages whose `settled` record is not durable yet (in flight, or
    /// failed and being retried by the actor). They still count for the trim floor:
    /// until the record is durable, a restart brings them back, and they must still
    /// be readable then.
    settling: FxHashMap<u64, Entry>,
    /// Body bytes of everything held.
    held_bytes: u64,
    /// Shared arrivals in key order (arrival order: the broker hands them out in
    /// shared-log order), until every message of a batch and of the ones before it
    /// is gone.
    batches: VecDeque<ArrivalBatch>,
    /// The highest shared key that ever arrived, plus one (0: none yet).
    next_shared: u64,
    /// Messages of batches dropped from `batches` since the last
    /// [`QueueState::take_shared_sent`]: their `sent` goes into the next checkpoint.
    shared_sent: u64,
    /// The next arrival sequence number.
    next_seq: u64,
    /// Sends admitted but not yet committed (for `max_length` checks).
    reserved_count: u64,
    reserved_bytes: u64,
    /// Ids seen within the dedup window.
    dedup: HashMap<String, SeenId>,
    /// The same ids by when they leave the window (sorted), for pruning.
    dedup_order: VecDeque<(i64, String)>,
    /// Records of the queue's own log below this offset are durable. Decision 0005
    /// takes a send in once written and answers it once synced: an id whose record
    /// is written but at or above this may still be lost, so a duplicate of it is
    /// answered only once the log is synced past it. (Shared keys are durable in
    /// the shared log before they arrive.)
    durable_below: u64,
    /// Lifetime counters.
    pub(crate) totals: Totals,
    /// Next lease id; unique across queues and runs (seeded by the caller).
    next_lease_id: u64,
}

/// A receipt: the message's offset and the lease it was handed out under.
pub(crate) fn format_receipt(offset: u64, lease_id: u64) -> String {
    let mut receipt = String::with_capacity(33);
    push_hex(&mut receipt, offset, 0);
    receipt.push('-');
    push_hex(&mut receipt, lease_id, 0);
    receipt
}

/// Parses a receipt; `None` if malformed.
pub(crate) fn parse_receipt(receipt: &str) -> Option<(u64, u64)> {
    let (a, b) = receipt.split_once('-')?;
    if a.is_empty() || b.is_empty() || a.len() > 16 || b.len() > 16 {
        return None;
    }
    Some((
        u64::from_str_radix(a, 16).ok()?,
        u64::from_str_radix(b, 16).ok()?,
    ))
}

impl QueueState {
    pub(crate) fn new(options: QueueOptions, lease_seed: u64) -> QueueState {
        QueueState {
            ready: (0..=options.max_priority)
                .map(|_| Ready::default())
                .collect(),
            options,
            ready_count: 0,
            ready_bytes: 0,
            delayed: BTreeMap::new(),
            leased: FxHashMap::default(),
            deadlines: BinaryHeap::new(),
            busy_groups: HashSet::new(),
            parked: FxHashMap::default(),
            parked_count: 0,
            in_transit: FxHashMap::default(),
            dead_letter_retry: BTreeMap::new(),
            settling: FxHashMap::default(),
            held_bytes: 0,
            batches: VecDeque::new(),
            next_shared: 0,
            shared_sent: 0,
            next_seq: 0,
            reserved_count: 0,
            reserved_bytes: 0,
            dedup: HashMap::new(),
            dedup_order: VecDeque::new(),
            durable_below: 0,
            totals: Totals::default(),
            next_lease_id: lease_seed,
        }
    }

    pub(crate) fn options(&self) -> &QueueOptions {
        &self.options
    }

    // ---- sending ----

    /// Checks a send before it is written: de-duplication and `reject-publish`.
    /// Answers, per message, whether it is a duplicate, or that it must wait for an
    /// earlier send of one of its ids. Admitted messages are reserved until
    /// [`QueueState::commit`] or [`QueueState::cancel`].
    pub(crate) fn admit(
        &mut self,
        queue: &str,
        items: &[(Option<&str>, u32)],
        now: i64,
    ) -> Result<Admission> {
        self.prune_dedup(now);
        let mut duplicate = vec![false; items.len()];
        if self.options.dedup_window_ms.is_some() {
            let mut seen = HashSet::new();
            for (i, (id, _)) in items.iter().enumerate() {
                if let Some(id) = id {
                    match self.dedup.get(*id) {
                        Some(s) if !self.durable(s.offset) => return Ok(Admission::Wait),
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
        Ok(Admission::Admitted(duplicate))
    }

    fn remember_id(&mut self, id: &str, until: i64, offset: Option<u64>) {
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
    fn durable(&self, offset: Option<u64>) -> bool {
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

    fn prune_dedup(&mut self, now: i64) {
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

    fn take_seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    /// A message is held from now on.
    fn hold(&mut self, entry: &Entry) {
        self.held_bytes += u64::from(entry.size);
    }

    /// A message is gone for good.
    fn let_go(&mut self, entry: &Entry) {
        self.held_bytes -= u64::from(entry.size);
        if is_shared(entry.offset) {
            let i = self
                .batches
                .partition_point(|b| b.first <= entry.offset)
                .checked_sub(1);
            if let Some(batch) = i.and_then(|i| self.batches.get_mut(i)) {
                batch.held = batch.held.saturating_sub(1);
            }
            self.prune_batches();
        }
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

    /// Shared messages arrived: keys `first..=last` (ascending, after every earlier
    /// arrival), `admitted` of them held from now on (the caller commits them), when
    /// the queue log's next offset was `mark`. A batch whose messages were all
    /// declined still goes behind an older one: it keeps the log from being trimmed
    /// past its `declined` record while the older one holds `shared_below` down.
    pub(crate) fn arrived(&mut self, first: u64, last: u64, admitted: u64, mark: u64) {
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

    /// One past the highest shared key that arrived (or was replayed).
    pub(crate) fn next_shared(&self) -> u64 {
        self.next_shared
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
    pub(crate) fn shared_mark(&self) -> Option<u64> {
        self.batches.front().map(|b| b.mark)
    }

    /// The `sent` of shared messages under [`QueueState::shared_below`] not yet in a
    /// checkpoint; the caller puts it in the one it writes.
    pub(crate) fn take_shared_sent(&mut self) -> u64 {
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
            .flat_map(Ready::iter)
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

    /// The ready queues' capacity, in messages.
    #[cfg(test)]
    pub(crate) fn ready_capacity(&self) -> usize {
        self.ready.iter().map(Ready::capacity).sum()
    }

    /// Whether any shared message is held.
    pub(crate) fn holds_shared(&self) -> bool {
        !self.batches.is_empty()
    }

    fn push_ready(&mut self, entry: Entry) {
        self.ready[usize::from(entry.priority)].push(entry);
        self.ready_count += 1;
        self.ready_bytes += u64::from(entry.size);
    }

    fn park(&mut self, entry: Entry) {
        let deque = self.parked.entry(entry.group).or_default();
        let pos = deque.partition_point(|e| e.seq < entry.seq);
        deque.insert(pos, entry);
        self.parked_count += 1;
        self.ready_bytes += u64::from(entry.size);
    }

    /// The group of `entry` may deliver again: its parked messages rejoin `ready`.
    fn free_group(&mut self, group: u64) {
        if group == 0 || !self.busy_groups.remove(&group) {
            return;
        }
        if let Some(parked) = self.parked.remove(&group) {
            for entry in parked {
                self.parked_count -= 1;
                self.ready_bytes -= u64::from(entry.size);
                self.push_ready(entry);
            }
        }
    }

    fn pop_head(&mut self) -> Option<Entry> {
        for deque in self.ready.iter_mut().rev() {
            if let Some(entry) = deque.pop_front() {
                self.ready_count -= 1;
                self.ready_bytes -= u64::from(entry.size);
                return Some(entry);
            }
        }
        None
    }

    fn enforce_length(&mut self) -> Vec<Effect> {
        let mut dropped = Vec::new();
        let mut dead = Vec::new();
        if self.options.overflow.rejects() {
            return Vec::new();
        }
        // RabbitMQ dead-letters the dropped head (reason `maxlen`) when the queue
        // has a dead-letter exchange; weir's `dead-letter` policy does it for a
        // dead-letter queue too.
        let dead_letters = match self.options.overflow {
            Overflow::DeadLetter => self.options.dead_letters(),
            Overflow::DropHead => self.options.dead_letter_exchange.is_some(),
            Overflow::RejectPublish | Overflow::RejectPublishDlx => false,
        };
        loop {
            let over_count = self
                .options
                .max_length
                .is_some_and(|max| self.ready_count + self.parked_count > max);
            let over_bytes = self
                .options
                .max_length_bytes
                .is_some_and(|max| self.ready_bytes > max);
            if !(over_count || over_bytes) {
                break;
            }
            let Some(head) = self.pop_head() else { break };
            if dead_letters {
                dead.push((head, DeadLetterReason::Overflow));
            } else {
                self.let_go(&head);
                dropped.push(head.offset);
            }
        }
        let mut effects = Vec::new();
        if !dropped.is_empty() {
            self.totals.dropped += dropped.len() as u64;
            effects.push(Effect::Persist(StateOp::Settled(
                SettleReason::Dropped,
                dropped,
            )));
        }
        effects.extend(self.dead_letter_or_drop(dead));
        effects
    }

    /// Sends `items` to the dead-letter queue if the queue has one, else drops them
    /// (counting expiries as expired).
    fn dead_letter_or_drop(&mut self, items: Vec<(Entry, DeadLetterReason)>) -> Vec<Effect> {
        if items.is_empty() {
            return Vec::new();
        }
        if self.options.dead_letters() {
            for (entry, reason) in &items {
                if *reason == DeadLetterReason::Expired {
                    self.totals.expired += 1;
                }
                self.in_transit
                    .insert(entry.offset, (*entry, Some(*reason)));
            }
            return vec![Effect::DeadLetter(items)];
        }
        let mut expired = Vec::new();
        let mut dropped = Vec::new();
        for (entry, reason) in items {
            self.let_go(&entry);
            if reason == DeadLetterReason::Expired {
                expired.push(entry.offset);
            } else {
                dropped.push(entry.offset);
            }
        }
        let mut effects = Vec::new();
        if !expired.is_empty() {
            self.totals.expired += expired.len() as u64;
            effects.push(Effect::Persist(StateOp::Settled(
                SettleReason::Expired,
                expired,
            )));
        }
        if !dropped.is_empty() {
            self.totals.dropped += dropped.len() as u64;
            effects.push(Effect::Persist(StateOp::Settled(
                SettleReason::Dropped,
                dropped,
            )));
        }
        effects
    }

    /// Messages copied elsewhere (dead-lettered, redriven, moved) are gone from
    /// here; returns the record to persist.
    pub(crate) fn finish_transit(&mut self, offsets: &[u64], reason: SettleReason) -> StateOp {
        for offset in offsets {
            if let Some((entry, _)) = self.in_transit.remove(offset) {
                self.let_go(&entry);
            }
        }
        if matches!(
            reason,
            SettleReason::DeadLettered | SettleReason::ExpiredDeadLettered
        ) {
            self.totals.dead_lettered += offsets.len() as u64;
        }
        StateOp::Settled(reason, offsets.to_vec())
    }

    /// Copying failed. A redrive's messages are ready again here; dead letters
    /// try again after [`DEAD_LETTER_RETRY_MS`] (they are not deliverable: an
    /// expired message must not be delivered, a rejected one not retried), and
    /// their expiry is not counted again.
    pub(crate) fn abort_transit(&mut self, offsets: &[u64], now: i64) {
        for offset in offsets {
            match self.in_transit.remove(offset) {
                Some((entry, Some(reason))) => {
                    self.dead_letter_retry
                        .insert((now + DEAD_LETTER_RETRY_MS, entry.offset), (entry, reason));
                }
                Some((entry, None)) => self.push_ready(entry),
                None => {}
            }
        }
    }

    // ---- receiving ----

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
                },
            );
            self.push_deadline(deadline, entry.offset, lease_id);
            leased.push((entry, lease_id));
        }
        let mut effects = self.dead_letter_or_drop(expired);
        if !leased.is_empty() {
            effects.push(Effect::Persist(StateOp::Delivered(
                leased.iter().map(|(e, _)| (e.offset, e.attempts)).collect(),
            )));
        }
        (leased, effects)
    }

    fn take_lease(&mut self, queue: &str, receipt: &str) -> Result<Lease> {
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

    /// Settles a leased message; it stays held (for the trim floor) until
    /// [`QueueState::finish_settle`]. It is never delivered again by this state,
    /// whether or not its record can be written.
    pub(crate) fn ack(&mut self, queue: &str, receipt: &str) -> Result<Entry> {
        let lease = self.take_lease(queue, receipt)?;
        self.totals.acked += 1;
        self.free_group(lease.entry.group);
        self.settling.insert(lease.entry.offset, lease.entry);
        Ok(lease.entry)
    }

    /// The `settled` records of these acks are durable.
    pub(crate) fn finish_settle(&mut self, offsets: &[u64]) {
        for offset in offsets {
            if let Some(entry) = self.settling.remove(offset) {
                self.let_go(&entry);
            }
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

    fn give_back(
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
        self.leased
            .insert(lease.entry.offset, Lease { deadline, ..lease });
        self.push_deadline(deadline, lease.entry.offset, lease.lease_id);
        Ok(())
    }

    /// Adds a lease deadline. Settled and extended leases leave stale items
    /// behind; when they outnumber the live ones, the heap is rebuilt so memory
    /// stays proportional to the leases held.
    fn push_deadline(&mut self, deadline: i64, offset: u64, lease_id: u64) {
        self.deadlines.push(Reverse((deadline, offset, lease_id)));
        if self.deadlines.len() > 2 * self.leased.len() + 1024 {
            self.deadlines = self
                .leased
                .iter()
                .map(|(offset, l)| Reverse((l.deadline, *offset, l.lease_id)))
                .collect();
        }
    }

    // ---- time ----

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

    // ---- administration ----

    /// Removes every ready, parked and delayed message; returns their offsets.
    pub(crate) fn purge(&mut self) -> Vec<u64> {
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
        self.totals.purged += removed.len() as u64;
        removed.into_iter().map(|e| e.offset).collect()
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

    /// Takes up to `max` ready messages (optionally only from `origin`) into transit.
    pub(crate) fn take_for_transit(&mut self, max: usize, origin: Option<u32>) -> Vec<Entry> {
        let mut taken = Vec::new();
        for deque in self.ready.iter_mut().rev() {
            let want = max - taken.len();
            if want == 0 {
                break;
            }
            match origin {
                // Everything matches: the head, without touching the rest.
                None => deque.drain_front(want, &mut taken),
                Some(o) => deque.retain(|entry| {
                    let take = taken.len() < max && entry.origin == o;
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
    pub(crate) fn take_delayed_below(&mut self, below: u64, max: usize) -> Vec<(Entry, i64)> {
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
    pub(crate) fn finish_move(&mut self, old: &[u64], new: Vec<(Entry, i64)>, now: i64) -> StateOp {
        let op = self.finish_transit(old, SettleReason::Moved);
        for (entry, due) in new {
            self.hold(&entry);
            if due > now {
                self.delayed.insert((due, entry.offset), entry);
            } else {
                self.push_ready(entry);
            }
        }
        op
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
    fn held_entries(&self) -> impl Iterator<Item = &Entry> {
        self.ready
            .iter()
            .flat_map(Ready::iter)
            .chain(self.parked.values().flatten())
            .chain(self.delayed.values())
            .chain(self.leased.values().map(|l| &l.entry))
            .chain(self.in_transit.values().map(|(e, _)| e))
            .chain(self.dead_letter_retry.values().map(|(e, _)| e))
            .chain(self.settling.values())
    }

    /// The lowest own-log offset still held, or `next_offset` when none is. Ready
    /// messages are in arrival order, not offset order, so this walks everything
    /// held (housekeeping asks twice a second). Shared keys are all above any own
    /// offset and so never the minimum unless nothing own is held.
    pub(crate) fn floor(&self, next_offset: u64) -> u64 {
        self.held_entries()
            .map(|e| e.offset)
            .min()
            .filter(|o| !is_shared(*o))
            .unwrap_or(next_offset)
            .min(next_offset)
    }

    /// How many own messages are held below `offset` (counts up to `limit`).
    pub(crate) fn held_below(&self, offset: u64, limit: usize) -> usize {
        self.held_entries()
            .filter(|e| e.offset < offset)
            .take(limit)
            .count()
    }

    /// Ids inside the window whose send is durable and remembered only where the
    /// next replay will not look: in the queue log below `below` (about to be
    /// trimmed), or by a shared message under `shared_below` (replay skips those).
    /// For a dedup checkpoint.
    pub(crate) fn dedup_ids_below(
        &self,
        below: u64,
        shared_below: u64,
        now: i64,
    ) -> Vec<(i64, String)> {
        let forgotten = |o: u64| {
            if is_shared(o) {
                o < shared_below
            } else {
                o < below
            }
        };
        self.dedup
            .iter()
            .filter(|(_, s)| s.until > now && s.offset.is_some_and(forgotten))
            .map(|(id, s)| (s.until, id.clone()))
            .collect()
    }

    /// A dedup checkpoint at `offset` now remembers these ids.
    pub(crate) fn dedup_rewritten(&mut self, ids: &[(i64, String)], offset: u64) {
        for (_, id) in ids {
            if let Some(seen) = self.dedup.get_mut(id) {
                seen.offset = Some(offset);
            }
        }
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
