//! The delivery state machine of one work queue, as plain data (no I/O, no clock,
//! no tasks): the actor feeds it commands with the current time and performs the
//! [`Effect`]s it returns. Every decision about what the log must record (which
//! state record, now or with the next append, which one a later event makes
//! unneeded) and about what leaves the queue is made here, so tests drive it
//! without an actor: the property test against a naive model, and unit tests on
//! the effects it returns.
//!
//! A message is in exactly one place: `ready` (per priority, in arrival order),
//! `delayed` (by due time), `leased` (with a deadline), `parked` (ready, but its
//! group has a message in flight) or `in_transit` (being copied elsewhere: to the
//! dead-letter queue, or moved within the log). Settled messages are in none.
//!
//! A message is known by its key: its offset in the queue's own log, or
//! `SHARED | offset` for a message published to several queues and stored once in
//! the shared log (decision 0004). Shared messages arrive in batches; the queue tracks
//! each batch's position in its own log (its mark) so the log is never trimmed past
//! state records about a shared message that is still held.
//!
//! Maps keyed by message key use rustc-hash's `FxHashMap`: the keys are offsets the
//! broker assigns, not client input, so a keyed hash buys nothing there, and the
//! standard library's cost the work path about 2,000 instructions per message
//! (callgrind, `scripts/instructions`).
//!
//! This file holds the state and the places a message can be in; the operations
//! are in `sending` (admission, de-duplication, commits, shared arrivals, restore),
//! `leasing` (leases, nack, extend, backoff), `acks` (acks, the deferred
//! `Delivered` records they may make unneeded, and the rewrite of ack records
//! whose write failed), `time` (what runs out),
//! `overflow` (length limits, `reject-publish-dlx`, dead letters in transit),
//! `admin` (purge, peek, redrive, moves, stats) and `upkeep` (housekeeping: the
//! log's floor, moves, how often to trim, checkpoints).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet, VecDeque};

use rustc_hash::FxHashMap;

use crate::api::{DeadLetterReason, QueueOptions, SettleReport};
use crate::error::BrokerError;
use crate::hex::push_hex;
use crate::queue::entry::{Entry, is_shared};
use crate::queue::ready::Ready;
use crate::queue::record::{StateOp, Totals};

mod acks;
mod admin;
mod leasing;
mod overflow;
mod sending;
#[cfg(test)]
mod tests;
mod time;
mod upkeep;
#[cfg(test)]
mod upkeep_tests;

pub(crate) use admin::Pick;
pub(crate) use time::shared_expiry;
pub(crate) use upkeep::{Checkpoint, LogSpan, Upkeep};

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
    /// Per message, whether it is a duplicate, and what the send must do besides
    /// writing its other messages: duplicates leave no message record, so they are
    /// counted by a `Duplicates` record. The answer need not wait for that one:
    /// their originals are durable already.
    Admitted {
        duplicate: Vec<bool>,
        effects: Vec<Effect>,
    },
    /// An id of this send is being written by an earlier send: try again once that
    /// lands (its outcome decides whether this one is a duplicate).
    Wait,
}

/// What taking in shared messages comes to ([`QueueState::arrive`]).
#[derive(Debug)]
pub(crate) enum Arrived {
    /// An id of theirs is being written by an earlier send: give the arrival back
    /// and try again once that lands (its outcome decides whether they are
    /// duplicates).
    Wait,
    /// Taken in. Per message, whether it was declined as a duplicate. The answer
    /// waits for `records` (the duplicates counted, and their keys declined so that
    /// replay leaves them out); `effects` are what holding the others brings
    /// (length limits), performed apart.
    Taken {
        duplicate: Vec<bool>,
        records: Vec<Effect>,
        effects: Vec<Effect>,
    },
    /// Refused whole (`reject-publish`): answered with `error` once `records` are
    /// durable (the shared record names this queue all the same, so its keys are
    /// declined). With `dead_letter` (`reject-publish-dlx`), the messages are copied
    /// to the dead-letter queue with reason `maxlen`, at most once: nothing of them
    /// is kept here and nothing is reported back.
    Refused {
        error: BrokerError,
        records: Vec<Effect>,
        dead_letter: bool,
    },
}

/// An acked message whose `settled` record is not durable yet.
#[derive(Clone, Copy, Debug)]
struct Settling {
    entry: Entry,
    /// The lease it was acked under: acking that receipt again while the record is
    /// not durable joins the write instead of failing as stale.
    lease_id: u64,
    write: AckWrite,
}

/// Where the `settled` record of an ack is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AckWrite {
    /// Being written (the first time, or again with a later ack of its receipt).
    Writing,
    /// Its write failed: it waits for [`QueueState::retry_acks`] (or for its
    /// receipt to be acked again).
    Failed,
    /// Being written again by [`QueueState::retry_acks`].
    Retrying,
}

/// What acking one receipt comes to ([`QueueState::ack`]).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Acked {
    /// Settled now: its `settled` record is to be written.
    Now(Entry),
    /// Acked before, and the write of its record failed: it is written again with
    /// this ack.
    Again(u64),
    /// Acked before, and its record is being written again right now: the ack is
    /// answered when that write lands.
    Joined,
}

/// What acking a list of receipts comes to ([`QueueState::ack_all`]).
#[derive(Debug, Default)]
pub(crate) struct AckBatch {
    /// Receipts settled (once `effects` are durable) and receipts refused.
    pub(crate) report: SettleReport,
    /// The acks whose `settled` record `effects` writes: report how the write went
    /// with [`QueueState::acks_written`].
    pub(crate) writing: Vec<u64>,
    /// Some receipts joined the rewrite in flight ([`Acked::Joined`]).
    pub(crate) joined: bool,
    pub(crate) effects: Vec<Effect>,
}

/// A message leased to a consumer.
#[allow(clippy::struct_field_names)] // `lease_id` reads better than `id` at use sites
#[derive(Clone, Copy, Debug)]
struct Lease {
    entry: Entry,
    lease_id: u64,
    deadline: i64,
    /// Times this lease was extended.
    extensions: u32,
}

/// How long a dead letter the dead-letter queue refused waits before the next try.
pub(crate) const DEAD_LETTER_RETRY_MS: i64 = 5_000;

/// Something the actor must do for the state to hold. The state decides what is
/// written, when, and what leaves the queue; the actor only performs it (appends,
/// copies, timers) and reports back through the methods each variant names.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Effect {
    /// Append this state record now. A reply that promises durability (send, ack,
    /// nack, purge) waits for it.
    Persist(StateOp),
    /// Deliveries were leased whose `Delivered` record the state holds back
    /// (decision 0005): it rides on the queue's next append of state records (the
    /// actor takes it with [`QueueState::take_deferred`] into every append), and is
    /// written on its own if no append comes within the actor's delay. A first
    /// delivery acked before then needs no record at all: the ack drops it.
    PersistWithNextAppend,
    /// Copy these messages to the dead-letter queue, then report back with
    /// [`QueueState::finish_transit`] (or [`QueueState::abort_transit`]).
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
    /// failed and waiting to be written again: a full disk must not turn acks into
    /// redeliveries). They still count for the trim floor: until the record is
    /// durable, a restart brings them back, and they must still be readable then.
    settling: FxHashMap<u64, Settling>,
    /// Deliveries whose `Delivered` record is not written yet, offset → delivery
    /// count (see [`Effect::PersistWithNextAppend`]).
    deferred: FxHashMap<u64, u32>,
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
            deferred: FxHashMap::default(),
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

    /// The ready queues' capacity, in messages.
    #[cfg(test)]
    pub(crate) fn ready_capacity(&self) -> usize {
        self.ready.iter().map(Ready::capacity).sum()
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
}
