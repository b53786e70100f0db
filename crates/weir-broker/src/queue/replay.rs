//! Rebuilds a queue's state from its log, and the shared log, on start.
//!
//! The queue's log holds its own message records and state records (see
//! [`super::record`]); the shared log holds messages published to several queues,
//! each naming its destination queues (decision 0004). Replay runs in two phases:
//!
//! 1. [`replay_own`] reads the queue's log once from its first offset: own message
//!    records become entries; state records mark own or shared messages delivered,
//!    retried, settled or declined; the last totals checkpoint gives the lifetime
//!    counters and `shared_below`, under which every shared message of the queue is
//!    settled.
//! 2. The broker reads the shared log once for all queues ([`scan_shared`]) and hands
//!    each its shared messages at or above its `shared_below`; [`finish`] merges
//!    them with the own ones in arrival order (by each own record's `shared_mark`)
//!    and fills the state.
//!
//! Leases are not persisted as such: a message that was leased when the broker
//! stopped is ready again, with its delivery counted.
//!
//! Memory: replay holds what the running queue will hold, in the same form, and no
//! second copy of it. Own messages are [`Entry`]s (56 bytes) in offset order, in
//! chunks of [`CHUNK`] that are freed one at a time while [`finish`] moves their
//! entries into the state; settled ones are dropped from their chunk as replay goes.
//! What only some messages have (a delay, facts about a shared message, a
//! de-duplication id) is in sparse maps. Before this, replay kept about 220 bytes per
//! message (a record per message, a vector that doubles, a merged copy of it), and a
//! broker holding 5 M messages in 372 MB came back at 1,115 MB.

use std::collections::HashMap;

use rustc_hash::FxHashMap;
use weir_log::{MessageLog, Offset, ReadLimits};

use crate::queue::entry::{Entry, is_shared};
use crate::queue::ready::CHUNK;
use crate::queue::record::{self, Decoded, MessageMeta, SHARED, StateOp, Totals};
use crate::queue::state::{QueueState, key_hash};

/// In an entry's `seq` during replay: the message is settled. (Until [`finish`]
/// assigns arrival numbers, `seq` holds the record's shared mark, which is below
/// this.)
const GONE: u64 = u64::MAX;

/// The own messages of a queue during replay, in offset order, in chunks of at most
/// [`CHUNK`] entries.
///
/// Why chunks: one vector doubling to 5 M entries holds up to twice its length, and
/// twice again while it is copied; chunks are allocated one at a time and freed one at
/// a time by [`finish`], while the state's own chunks fill up. A settled message
/// stays in its chunk, marked [`GONE`], until a quarter of the chunk is gone; then the
/// chunk is compacted (or freed, when nothing in it is left), so the log's settled
/// history costs no memory beyond a quarter of what is held, plus the last chunk.
#[derive(Default)]
pub(crate) struct OwnMessages {
    chunks: Vec<OwnChunk>,
}

struct OwnChunk {
    /// The lowest offset ever put in the chunk: chunks are found by it, even once
    /// compacted or emptied.
    first: u64,
    /// In offset order; `seq` holds the shared mark, or [`GONE`].
    entries: Vec<Entry>,
    /// Entries marked [`GONE`] still in `entries`.
    gone: usize,
}

impl OwnChunk {
    /// Drops the settled entries once they are a quarter of the chunk (so each
    /// compaction is paid for by as many settles as a quarter of what it copies).
    fn compact(&mut self) {
        if self.gone == 0 || self.gone * 4 < self.entries.len() {
            return;
        }
        if self.gone == self.entries.len() {
            self.entries = Vec::new();
        } else {
            self.entries.retain(|e| e.seq != GONE);
            self.entries.shrink_to_fit();
        }
        self.gone = 0;
    }
}

impl OwnMessages {
    /// Adds a message above every one before it.
    fn push(&mut self, entry: Entry) {
        if let Some(last) = self.chunks.last_mut() {
            if last.entries.len() < CHUNK {
                last.entries.push(entry);
                return;
            }
            // It stops being the last: what was settled in it while it filled
            // (a queue consumed as it goes settles most of it) goes now.
            last.compact();
        }
        // The first chunk grows as a vector does (most queues hold few messages,
        // and are all replayed before any starts); the next ones are full size.
        let entries = if self.chunks.is_empty() {
            vec![entry]
        } else {
            let mut entries = Vec::with_capacity(CHUNK);
            entries.push(entry);
            entries
        };
        self.chunks.push(OwnChunk {
            first: entry.offset,
            entries,
            gone: 0,
        });
    }

    /// Where the message at `offset` is (settled or not): chunk and position.
    fn find(&self, offset: u64) -> Option<(usize, usize)> {
        let chunk = self
            .chunks
            .partition_point(|c| c.first <= offset)
            .checked_sub(1)?;
        let at = self.chunks[chunk]
            .entries
            .binary_search_by_key(&offset, |e| e.offset)
            .ok()?;
        Some((chunk, at))
    }

    /// The message at `offset`, unless settled.
    fn get(&self, offset: u64) -> Option<&Entry> {
        let (chunk, at) = self.find(offset)?;
        Some(&self.chunks[chunk].entries[at]).filter(|e| e.seq != GONE)
    }

    /// The message at `offset`, unless settled.
    fn get_mut(&mut self, offset: u64) -> Option<&mut Entry> {
        let (chunk, at) = self.find(offset)?;
        Some(&mut self.chunks[chunk].entries[at]).filter(|e| e.seq != GONE)
    }

    /// The message at `offset` is settled (or moved).
    fn settle(&mut self, offset: u64) {
        let Some((index, at)) = self.find(offset) else {
            return;
        };
        let last = index + 1 == self.chunks.len();
        let chunk = &mut self.chunks[index];
        if chunk.entries[at].seq == GONE {
            return;
        }
        chunk.entries[at].seq = GONE;
        chunk.gone += 1;
        // The last chunk is still filling; `push` compacts it once full.
        if !last {
            chunk.compact();
        }
    }

    /// The messages not settled, in offset order; each chunk is freed once its
    /// entries are taken.
    fn into_held(self) -> impl Iterator<Item = Entry> {
        self.chunks
            .into_iter()
            .flat_map(|c| c.entries.into_iter().filter(|e| e.seq != GONE))
    }

    /// Messages held (not settled).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.chunks.iter().map(|c| c.entries.len() - c.gone).sum()
    }

    /// Entries allocated for, in all chunks.
    #[cfg(test)]
    fn capacity(&self) -> usize {
        self.chunks.iter().map(|c| c.entries.capacity()).sum()
    }
}

/// What the queue's log says about one shared message.
#[derive(Clone, Copy, Debug, Default)]
struct SharedFacts {
    attempts: u32,
    not_before: i64,
    delay_attempt: u32,
    /// Settled, moved into the queue's own log, or declined.
    gone: bool,
    declined: bool,
    /// Offset of the first state record about it.
    first_record: u64,
}

/// What replay found besides the state.
#[derive(Debug, Default)]
pub(crate) struct ReplayReport {
    /// The log's next offset when replay finished: the counters restored cover
    /// every record below it.
    pub(crate) end: u64,
    /// Records read.
    pub(crate) records: u64,
    /// Records that did not decode (skipped, logged).
    pub(crate) undecodable: u64,
    /// Of the restored `sent` counter, the shared messages at or above
    /// `shared_below`: no checkpoint holds them yet (the next one that moves
    /// `shared_below` past them will).
    pub(crate) shared_sent: u64,
    /// The checkpoint's `shared_below`: the restored counters hold every shared
    /// message under it.
    pub(crate) shared_below: u64,
}

/// The result of phase 1, waiting for the queue's shared messages. Its
/// de-duplication ids are in the state already.
pub(crate) struct OwnReplay {
    messages: OwnMessages,
    /// Own messages with a delay still to wait for: offset → (not before, the
    /// attempt the delay belongs to: a later delivery voids it). Sparse: most
    /// messages have none.
    delays: FxHashMap<u64, (i64, u32)>,
    /// Shared messages the queue's log has state records about.
    shared: FxHashMap<u64, SharedFacts>,
    /// Every shared message of the queue under this key is settled.
    pub(crate) shared_below: u64,
    /// The counters of the queue's own log (shared arrivals are added in phase 2).
    totals: Totals,
    report: ReplayReport,
}

/// Which shared messages a queue wants from [`scan_shared`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Wanted {
    /// Its shared messages from this key on (its `shared_below`).
    pub(crate) from: u64,
    /// Whether it keeps their de-duplication ids (it has a window).
    pub(crate) ids: bool,
}

/// One shared message for one queue, from the shared log.
pub(crate) struct SharedArrival {
    /// Its entry as the message record gives it: key `SHARED | offset`, the
    /// message's own expiry (the queue's TTL is applied by [`finish`]), enqueued
    /// when it was published.
    entry: Entry,
    /// When it may be delivered (0: at once).
    not_before: i64,
    /// Its de-duplication id, for a queue that keeps them.
    id: Option<Box<str>>,
}

/// The shared messages of one queue, in key order, in chunks (as [`OwnMessages`],
/// and for the same reason).
#[derive(Default)]
pub(crate) struct Arrivals {
    chunks: Vec<Vec<SharedArrival>>,
}

impl Arrivals {
    fn push(&mut self, arrival: SharedArrival) {
        match self.chunks.last_mut() {
            Some(last) if last.len() < CHUNK => last.push(arrival),
            Some(_) => {
                let mut chunk = Vec::with_capacity(CHUNK);
                chunk.push(arrival);
                self.chunks.push(chunk);
            }
            None => self.chunks.push(vec![arrival]),
        }
    }

    fn iter(&self) -> impl Iterator<Item = &SharedArrival> {
        self.chunks.iter().flatten()
    }

    /// Each chunk is freed once its arrivals are taken.
    fn into_iter(self) -> impl Iterator<Item = SharedArrival> {
        self.chunks.into_iter().flatten()
    }
}

/// Builds the entry of a message record.
pub(crate) fn entry_of(offset: u64, meta: &MessageMeta, size: u32) -> Entry {
    Entry {
        offset,
        group: meta.group.as_deref().map_or(0, key_hash),
        expires_at: meta.expires_at_ms,
        enqueued_at: meta.enqueued_at_ms,
        size,
        attempts: meta.attempts,
        origin: meta
            .dead_letter
            .as_ref()
            .map_or(0, |d| key_hash(&d.source_queue) as u32),
        priority: meta.priority,
        seq: 0,
    }
}

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

/// The facts about shared message `key`, created at its first state record (`at`).
fn facts_of(shared: &mut FxHashMap<u64, SharedFacts>, key: u64, at: u64) -> &mut SharedFacts {
    shared.entry(key).or_insert(SharedFacts {
        first_record: at,
        ..SharedFacts::default()
    })
}

/// Phase 1: reads the queue's own log, and restores its de-duplication ids into
/// `state` (those still inside the window at `now`). One pass over the records;
/// kept as one function so the replay rules read top to bottom.
#[allow(clippy::too_many_lines)]
pub(crate) async fn replay_own<L: MessageLog>(
    log: &L,
    state: &mut QueueState,
    queue: &str,
    now: i64,
) -> weir_log::Result<OwnReplay> {
    let mut report = ReplayReport::default();
    let mut messages = OwnMessages::default();
    let mut delays: FxHashMap<u64, (i64, u32)> = FxHashMap::default();
    let mut shared: FxHashMap<u64, SharedFacts> = FxHashMap::default();
    // Counters: the checkpoint with the highest `below`, and the sum of every record
    // read, both kept; see `record` for why that is exact.
    let mut all = Totals::default();
    let mut checkpoint: Option<(u64, u64, Totals)> = None;
    let first = log.first_offset();
    let window = state
        .options()
        .dedup_window_ms
        .map(|w| i64::try_from(w).unwrap_or(i64::MAX));
    let max_priority = state.options().max_priority;
    let end = log.next_offset();
    let mut chunks = Chunks::new(log, first, end);
    while let Some(records) = chunks.next().await? {
        for rec in records {
            report.records += 1;
            let at = rec.offset.0;
            match record::decode(rec.key.as_deref(), &rec.body) {
                Ok(Decoded::Message(meta)) => {
                    all.add(&meta.delta());
                    if let Some(old) = meta.moved_from {
                        if is_shared(old) {
                            facts_of(&mut shared, old, at).gone = true;
                        } else {
                            messages.settle(old);
                            delays.remove(&old);
                        }
                    }
                    // Only sends are de-duplicated: not dead letters or moved copies.
                    let sent = meta.dead_letter.is_none() && meta.moved_from.is_none();
                    if let (Some(w), true) = (window, sent && !meta.id.is_empty()) {
                        state.restore_id(&meta.id, rec.timestamp_ms.saturating_add(w), at, now);
                    }
                    let mut entry = entry_of(at, &meta, rec.body.len() as u32);
                    entry.priority = entry.priority.min(max_priority);
                    // Until `finish` numbers the arrivals, `seq` holds the mark.
                    entry.seq = meta.shared_mark.min(GONE - 1);
                    messages.push(entry);
                    if meta.not_before_ms != 0 {
                        delays.insert(at, (meta.not_before_ms, meta.attempts));
                    }
                }
                Ok(Decoded::State(op)) => {
                    all.add(&op.delta());
                    match op {
                        StateOp::Delivered(items) => {
                            for (key, attempt) in items {
                                if is_shared(key) {
                                    let f = facts_of(&mut shared, key, at);
                                    f.attempts = f.attempts.max(attempt);
                                    if attempt > f.delay_attempt {
                                        f.not_before = 0;
                                    }
                                } else if let Some(m) = messages.get_mut(key) {
                                    m.attempts = m.attempts.max(attempt);
                                    // A delay applies until the next delivery.
                                    if delays.get(&key).is_some_and(|d| attempt > d.1) {
                                        delays.remove(&key);
                                    }
                                }
                            }
                        }
                        StateOp::Retry(items) => {
                            for (key, attempt, due) in items {
                                if is_shared(key) {
                                    let f = facts_of(&mut shared, key, at);
                                    if attempt >= f.attempts {
                                        f.attempts = attempt;
                                        f.not_before = due;
                                        f.delay_attempt = attempt;
                                    }
                                } else if let Some(m) = messages.get_mut(key)
                                    && attempt >= m.attempts
                                {
                                    m.attempts = attempt;
                                    if due == 0 {
                                        delays.remove(&key);
                                    } else {
                                        delays.insert(key, (due, attempt));
                                    }
                                }
                            }
                        }
                        StateOp::Settled(_, keys) => {
                            for key in keys {
                                if is_shared(key) {
                                    facts_of(&mut shared, key, at).gone = true;
                                } else {
                                    messages.settle(key);
                                    delays.remove(&key);
                                }
                            }
                        }
                        StateOp::Declined(keys) => {
                            for key in keys {
                                let f = facts_of(&mut shared, key, at);
                                f.gone = true;
                                f.declined = true;
                            }
                        }
                        StateOp::Totals {
                            below,
                            shared_below,
                            totals,
                        } => {
                            if checkpoint.is_none_or(|(b, _, _)| below >= b) {
                                checkpoint = Some((below, shared_below, totals));
                            }
                        }
                        StateOp::Dedup(items) => {
                            for (until, id) in items {
                                state.restore_id(&id, until, at, now);
                            }
                        }
                        StateOp::Duplicates(_) => {}
                    }
                }
                Ok(Decoded::Shared(..)) => {
                    report.undecodable += 1;
                    tracing::warn!(
                        queue,
                        offset = at,
                        "a shared message record in a queue's own log; skipped"
                    );
                }
                Err(e) => {
                    report.undecodable += 1;
                    tracing::warn!(
                        queue,
                        offset = at,
                        reason = e.0,
                        "skipping a record that does not decode"
                    );
                }
            }
        }
    }
    let (totals, shared_below) = match checkpoint {
        None => (all, SHARED),
        Some((below, shared_below, mut totals)) => {
            // The checkpoint covers every record below `below`; add the records
            // from there on. Those below it that are still here (a crash between
            // the checkpoint and its trim) were read too, so take them back out.
            let mut above = all;
            if below > first.0 {
                let covered = sum_deltas(log, first, Offset(below)).await?;
                above = minus(&all, &covered);
            }
            totals.add(&above);
            (totals, shared_below.max(SHARED))
        }
    };
    report.end = chunks.next.0.max(end.0);
    Ok(OwnReplay {
        messages,
        delays,
        shared,
        shared_below,
        totals,
        report,
    })
}

/// Reads the shared log from the lowest key wanted on and sorts its messages out
/// to the queues that want them (by queue id). One pass for all queues.
pub(crate) async fn scan_shared<L: MessageLog>(
    shared: &L,
    wanted: &HashMap<u32, Wanted>,
) -> weir_log::Result<HashMap<u32, Arrivals>> {
    let mut out: HashMap<u32, Arrivals> = HashMap::new();
    let Some(lowest) = wanted.values().map(|w| w.from).min() else {
        return Ok(out);
    };
    let from = Offset((lowest & !SHARED).max(shared.first_offset().0));
    let mut chunks = Chunks::new(shared, from, shared.next_offset());
    while let Some(records) = chunks.next().await? {
        for rec in records {
            let key = SHARED | rec.offset.0;
            match record::decode(rec.key.as_deref(), &rec.body) {
                Ok(Decoded::Shared(destinations, meta)) => {
                    let mut entry = entry_of(key, &meta, rec.body.len() as u32);
                    entry.enqueued_at = rec.timestamp_ms;
                    for id in destinations {
                        let Some(w) = wanted.get(&id).filter(|w| key >= w.from) else {
                            continue;
                        };
                        out.entry(id).or_default().push(SharedArrival {
                            entry,
                            not_before: meta.not_before_ms,
                            id: (w.ids && !meta.id.is_empty()).then(|| meta.id.as_str().into()),
                        });
                    }
                }
                Ok(_) => {
                    tracing::warn!(
                        offset = rec.offset.0,
                        "a record of the shared log that is not a shared message; skipped"
                    );
                }
                Err(e) => {
                    tracing::warn!(
                        offset = rec.offset.0,
                        reason = e.0,
                        "skipping a record of the shared log that does not decode"
                    );
                }
            }
        }
    }
    Ok(out)
}

/// Phase 2: adds the queue's shared messages (in key order, all at or above
/// `own.shared_below`) and fills `state`. `now` decides what is still delayed.
///
/// Entries go into the state one at a time, own and shared merged in arrival order
/// (an own message goes after the shared ones below its mark), and each chunk of
/// replay's is freed once its entries are in.
#[allow(clippy::needless_pass_by_value)] // consumes the phase-1 result
pub(crate) fn finish(
    own: OwnReplay,
    arrivals: Arrivals,
    state: &mut QueueState,
    now: i64,
) -> ReplayReport {
    let OwnReplay {
        messages,
        delays,
        shared,
        shared_below,
        mut totals,
        mut report,
    } = own;
    let max_priority = state.options().max_priority;
    let queue_ttl = state.options().message_ttl_ms;
    let window = state
        .options()
        .dedup_window_ms
        .map(|w| i64::try_from(w).unwrap_or(i64::MAX));
    // The first state record about a shared message at or above `shared_below`:
    // later trims must keep it until a checkpoint moves the floor past the message.
    let mark = shared
        .iter()
        .filter(|(key, _)| **key >= shared_below)
        .map(|(_, f)| f.first_record)
        .min()
        .unwrap_or(report.end);
    // First pass over the shared messages: `sent` for every one that was not
    // declined (settled ones were sent too, and are counted as settled), their ids,
    // and how many are held.
    let mut next_shared = shared_below;
    let mut sent = 0;
    let mut held = 0;
    // Groups whose message waits for its retry delay: later messages of the group
    // wait for it, so they are marked before any entry goes in.
    let mut busy_groups = Vec::new();
    for a in arrivals.iter() {
        let key = a.entry.offset;
        next_shared = next_shared.max(key + 1);
        let facts = shared.get(&key).copied().unwrap_or_default();
        if facts.declined {
            continue;
        }
        sent += 1;
        if let (Some(w), Some(id)) = (window, &a.id) {
            state.restore_id(id, a.entry.enqueued_at.saturating_add(w), key, now);
        }
        if facts.gone {
            continue;
        }
        held += 1;
        if facts.attempts > 0 && facts.not_before > now && a.entry.group != 0 {
            busy_groups.push(a.entry.group);
        }
    }
    for (offset, (not_before, _)) in &delays {
        if *not_before > now
            && let Some(e) = messages.get(*offset)
            && e.attempts > 0
            && e.group != 0
        {
            busy_groups.push(e.group);
        }
    }
    totals.sent += sent;
    state.totals = totals;
    report.shared_sent = sent;
    report.shared_below = shared_below;
    // Everything from `shared_below` on is one batch: it holds the restored
    // messages, and its count is the `sent` no checkpoint has yet.
    state.restore_shared(shared_below, next_shared, sent, held, mark.min(report.end));
    state.finish_restore();
    // Recovery synced what it kept: every record replayed is durable.
    state.synced_below(report.end);
    state.restore_busy_groups(busy_groups);
    // Second pass: the held shared messages as the state takes them.
    let mut others = arrivals
        .into_iter()
        .filter_map(|a| {
            let facts = shared.get(&a.entry.offset).copied().unwrap_or_default();
            if facts.gone {
                return None;
            }
            let mut entry = a.entry;
            entry.priority = entry.priority.min(max_priority);
            entry.expires_at =
                shared_expiry(entry.expires_at, a.not_before, entry.enqueued_at, queue_ttl);
            entry.attempts = facts.attempts;
            // A delay applies until the first delivery; later ones come from
            // retry records.
            let not_before = if facts.attempts == 0 {
                a.not_before
            } else {
                facts.not_before
            };
            Some((entry, not_before))
        })
        .peekable();
    for entry in messages.into_held() {
        let own_mark = SHARED | entry.seq;
        while let Some((shared_entry, not_before)) = others.next_if(|(s, _)| s.offset < own_mark) {
            state.restore(shared_entry, not_before, now);
        }
        let not_before = delays.get(&entry.offset).map_or(0, |d| d.0);
        state.restore(entry, not_before, now);
    }
    for (entry, not_before) in others {
        state.restore(entry, not_before, now);
    }
    report
}

/// Both phases for a queue whose shared messages (if any) are in `shared`, under
/// queue id `id`. For tests and single queues; the broker runs phase 2 once for
/// all queues.
#[cfg(test)]
pub(crate) async fn replay<L: MessageLog>(
    log: &L,
    shared: Option<(&L, u32)>,
    state: &mut QueueState,
    queue: &str,
    now: i64,
) -> weir_log::Result<ReplayReport> {
    let own = replay_own(log, state, queue, now).await?;
    let arrivals = match shared {
        Some((shared_log, id)) => {
            let wanted = Wanted {
                from: own.shared_below,
                ids: state.options().dedup_window_ms.is_some(),
            };
            scan_shared(shared_log, &HashMap::from([(id, wanted)]))
                .await?
                .remove(&id)
                .unwrap_or_default()
        }
        None => Arrivals::default(),
    };
    Ok(finish(own, arrivals, state, now))
}

/// Reads a log from one offset to another in chunks of at most 64k records or 8 MB.
struct Chunks<'a, L> {
    log: &'a L,
    /// Where the next chunk starts (after the last one: one past its last record).
    next: Offset,
    end: Offset,
}

impl<'a, L: MessageLog> Chunks<'a, L> {
    fn new(log: &'a L, from: Offset, end: Offset) -> Self {
        Chunks {
            log,
            next: from,
            end,
        }
    }

    /// The next chunk (records below `end` only), or `None` at the end.
    async fn next(&mut self) -> weir_log::Result<Option<Vec<weir_log::Record>>> {
        if self.next >= self.end {
            return Ok(None);
        }
        let want = usize::try_from(self.end.0 - self.next.0).unwrap_or(usize::MAX);
        let mut records = self
            .log
            .read_from(self.next, ReadLimits::new(want.min(65_536), 8 << 20))
            .await?;
        let Some(last) = records.last() else {
            return Ok(None);
        };
        self.next = Offset(last.offset.0 + 1);
        records.retain(|r| r.offset < self.end);
        Ok(Some(records))
    }
}

/// The sum of the counter deltas of the records in `from..to`.
async fn sum_deltas<L: MessageLog>(log: &L, from: Offset, to: Offset) -> weir_log::Result<Totals> {
    let mut sum = Totals::default();
    let mut chunks = Chunks::new(log, from, to);
    while let Some(records) = chunks.next().await? {
        for rec in records {
            match record::decode(rec.key.as_deref(), &rec.body) {
                Ok(Decoded::Message(meta)) => sum.add(&meta.delta()),
                Ok(Decoded::State(op)) => sum.add(&op.delta()),
                Ok(Decoded::Shared(..)) | Err(_) => {}
            }
        }
    }
    Ok(sum)
}

/// `a - b`, field by field (b is a part of a).
fn minus(a: &Totals, b: &Totals) -> Totals {
    Totals {
        sent: a.sent - b.sent,
        duplicates: a.duplicates - b.duplicates,
        acked: a.acked - b.acked,
        redelivered: a.redelivered - b.redelivered,
        expired: a.expired - b.expired,
        dead_lettered: a.dead_lettered - b.dead_lettered,
        dropped: a.dropped - b.dropped,
        purged: a.purged - b.purged,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    fn entry(offset: u64, attempts: u32) -> Entry {
        Entry {
            offset,
            group: 0,
            expires_at: 0,
            enqueued_at: 0,
            size: 1,
            attempts,
            origin: 0,
            priority: 0,
            seq: offset / 3,
        }
    }

    #[derive(Clone, Debug)]
    enum Op {
        /// A message `gap` offsets above the last one.
        Push(u64),
        /// Settles the message `back` positions below the newest offset.
        Settle(u64),
        /// Bumps the delivery count of the message `back` below the newest offset.
        Deliver(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            5 => (1..4u64).prop_map(Op::Push),
            4 => (0..200u64).prop_map(Op::Settle),
            1 => (0..200u64).prop_map(Op::Deliver),
        ]
    }

    proptest! {
        /// Replay's own messages behave as a map by offset (lookups, settles and
        /// updates, in any order), give back exactly the held ones in offset order,
        /// and never hold more than 4/3 of the held messages plus one chunk: the
        /// settled history of a log costs no memory.
        #[test]
        fn own_messages_behave_as_a_map_and_stay_compact(
            ops in proptest::collection::vec(op(), 1..800),
        ) {
            let mut own = OwnMessages::default();
            let mut model: BTreeMap<u64, Entry> = BTreeMap::new();
            let mut next = 0u64;
            for op in ops {
                match op {
                    Op::Push(gap) => {
                        next += gap;
                        own.push(entry(next, 0));
                        model.insert(next, entry(next, 0));
                    }
                    Op::Settle(back) => {
                        let offset = next.saturating_sub(back);
                        own.settle(offset);
                        model.remove(&offset);
                    }
                    Op::Deliver(back) => {
                        let offset = next.saturating_sub(back);
                        if let Some(e) = own.get_mut(offset) {
                            e.attempts = e.attempts.saturating_add(1);
                        }
                        if let Some(e) = model.get_mut(&offset) {
                            e.attempts = e.attempts.saturating_add(1);
                        }
                    }
                }
                let offset = next.saturating_sub(7);
                prop_assert_eq!(own.get(offset), model.get(&offset));
                prop_assert_eq!(own.len(), model.len());
                prop_assert!(
                    own.capacity() * 3 <= model.len() * 4 + 3 * CHUNK,
                    "{} entries allocated for {} held",
                    own.capacity(),
                    model.len()
                );
            }
            let held: Vec<Entry> = own.into_held().collect();
            let want: Vec<Entry> = model.into_values().collect();
            prop_assert_eq!(held, want);
        }
    }

    /// A queue consumed as it goes (each message settled soon after it was
    /// written, within its chunk) replays into almost nothing.
    #[test]
    fn a_consumed_log_replays_into_a_chunk() {
        let mut own = OwnMessages::default();
        for offset in 0..100_000u64 {
            own.push(entry(offset, 0));
            if offset >= 3 {
                own.settle(offset - 3);
            }
        }
        assert_eq!(own.len(), 3);
        assert!(own.capacity() <= CHUNK + 3, "{}", own.capacity());
    }
}
