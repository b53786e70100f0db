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

use std::collections::HashMap;

use weir_log::{MessageLog, Offset, ReadLimits};

use crate::queue::record::{self, Decoded, MessageMeta, SHARED, StateOp, Totals};
use crate::queue::state::{Entry, QueueState, is_shared, key_hash};

/// One own message as replay sees it.
struct Replayed {
    entry: Entry,
    not_before: i64,
    /// The attempt the `not_before` belongs to: a later delivery voids it.
    delay_attempt: u32,
    alive: bool,
    /// The shared log's next offset when its record was written.
    shared_mark: u64,
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

/// The result of phase 1, waiting for the queue's shared messages.
pub(crate) struct OwnReplay {
    messages: Vec<Replayed>,
    shared: HashMap<u64, SharedFacts>,
    /// Every shared message of the queue under this key is settled.
    pub(crate) shared_below: u64,
    /// The counters of the queue's own log (shared arrivals are added in phase 2).
    totals: Totals,
    dedup: Vec<(i64, String, u64)>,
    report: ReplayReport,
}

/// One shared message for one queue, from the shared log.
pub(crate) struct SharedArrival {
    /// `SHARED | offset`.
    pub(crate) key: u64,
    pub(crate) meta: MessageMeta,
    pub(crate) size: u32,
    pub(crate) timestamp_ms: i64,
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
fn facts_of(shared: &mut HashMap<u64, SharedFacts>, key: u64, at: u64) -> &mut SharedFacts {
    shared.entry(key).or_insert(SharedFacts {
        first_record: at,
        ..SharedFacts::default()
    })
}

/// Phase 1: reads the queue's own log. One pass over the records; kept as one
/// function so the replay rules read top to bottom.
#[allow(clippy::too_many_lines)]
pub(crate) async fn replay_own<L: MessageLog>(
    log: &L,
    state: &QueueState,
    queue: &str,
) -> weir_log::Result<OwnReplay> {
    let mut report = ReplayReport::default();
    let mut messages: Vec<Replayed> = Vec::new();
    let mut shared: HashMap<u64, SharedFacts> = HashMap::new();
    // Counters: the checkpoint with the highest `below`, and the sum of every record
    // read, both kept; see `record` for why that is exact.
    let mut all = Totals::default();
    let mut checkpoint: Option<(u64, u64, Totals)> = None;
    let mut dedup: Vec<(i64, String, u64)> = Vec::new();
    let first = log.first_offset();
    let window = state
        .options()
        .dedup_window_ms
        .map(|w| i64::try_from(w).unwrap_or(i64::MAX));
    let max_priority = state.options().max_priority;
    let end = log.next_offset();
    let find = |messages: &mut Vec<Replayed>, offset: u64| -> Option<usize> {
        messages
            .binary_search_by_key(&offset, |m| m.entry.offset)
            .ok()
    };
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
                        } else if let Some(i) = find(&mut messages, old) {
                            messages[i].alive = false;
                        }
                    }
                    // Only sends are de-duplicated: not dead letters or moved copies.
                    let sent = meta.dead_letter.is_none() && meta.moved_from.is_none();
                    if let (Some(w), true) = (window, sent && !meta.id.is_empty()) {
                        dedup.push((rec.timestamp_ms.saturating_add(w), meta.id.clone(), at));
                    }
                    let mut entry = entry_of(at, &meta, rec.body.len() as u32);
                    entry.priority = entry.priority.min(max_priority);
                    messages.push(Replayed {
                        entry,
                        not_before: meta.not_before_ms,
                        delay_attempt: meta.attempts,
                        alive: true,
                        shared_mark: meta.shared_mark,
                    });
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
                                } else if let Some(i) = find(&mut messages, key) {
                                    let m = &mut messages[i];
                                    m.entry.attempts = m.entry.attempts.max(attempt);
                                    if attempt > m.delay_attempt {
                                        m.not_before = 0;
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
                                } else if let Some(i) = find(&mut messages, key) {
                                    let m = &mut messages[i];
                                    if attempt >= m.entry.attempts {
                                        m.entry.attempts = attempt;
                                        m.not_before = due;
                                        m.delay_attempt = attempt;
                                    }
                                }
                            }
                        }
                        StateOp::Settled(_, keys) => {
                            for key in keys {
                                if is_shared(key) {
                                    facts_of(&mut shared, key, at).gone = true;
                                } else if let Some(i) = find(&mut messages, key) {
                                    messages[i].alive = false;
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
                            dedup.extend(items.into_iter().map(|(until, id)| (until, id, at)));
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
        shared,
        shared_below,
        totals,
        dedup,
        report,
    })
}

/// Reads the shared log from `from` on and sorts its messages out to the queues
/// that want them: `wanted` maps a queue id to the key its shared messages start
/// at. One pass for all queues.
pub(crate) async fn scan_shared<L: MessageLog>(
    shared: &L,
    wanted: &HashMap<u32, u64>,
) -> weir_log::Result<HashMap<u32, Vec<SharedArrival>>> {
    let mut out: HashMap<u32, Vec<SharedArrival>> = HashMap::new();
    let Some(lowest) = wanted.values().min() else {
        return Ok(out);
    };
    let from = Offset((lowest & !SHARED).max(shared.first_offset().0));
    let mut chunks = Chunks::new(shared, from, shared.next_offset());
    while let Some(records) = chunks.next().await? {
        for rec in records {
            let key = SHARED | rec.offset.0;
            match record::decode(rec.key.as_deref(), &rec.body) {
                Ok(Decoded::Shared(destinations, meta)) => {
                    for id in destinations {
                        if wanted.get(&id).is_some_and(|from| key >= *from) {
                            out.entry(id).or_default().push(SharedArrival {
                                key,
                                meta: meta.clone(),
                                size: rec.body.len() as u32,
                                timestamp_ms: rec.timestamp_ms,
                            });
                        }
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
/// `own.shared_below`) and fills `state`. `now` decides what is still delayed;
/// `end` is the queue log's next offset.
#[allow(clippy::needless_pass_by_value)] // consumes the phase-1 result
pub(crate) fn finish(
    own: OwnReplay,
    arrivals: Vec<SharedArrival>,
    state: &mut QueueState,
    now: i64,
) -> ReplayReport {
    let OwnReplay {
        messages,
        shared,
        shared_below,
        mut totals,
        mut dedup,
        report,
    } = own;
    let options = state.options().clone();
    let window = options
        .dedup_window_ms
        .map(|w| i64::try_from(w).unwrap_or(i64::MAX));
    // Shared messages: entries for those still here; `sent` for every one that was
    // not declined (settled ones were sent too, and are counted as settled).
    let mut report = report;
    let mut restored: Vec<Replayed> = Vec::new();
    // The first state record about a shared message at or above `shared_below`:
    // later trims must keep it until a checkpoint moves the floor past the message.
    let mark = shared
        .iter()
        .filter(|(key, _)| **key >= shared_below)
        .map(|(_, f)| f.first_record)
        .min()
        .unwrap_or(report.end);
    let mut next_shared = shared_below;
    let mut sent = 0;
    for a in arrivals {
        next_shared = next_shared.max(a.key + 1);
        let facts = shared.get(&a.key).copied().unwrap_or_default();
        if facts.declined {
            continue;
        }
        sent += 1;
        if let Some(w) = window
            && !a.meta.id.is_empty()
        {
            dedup.push((a.timestamp_ms.saturating_add(w), a.meta.id.clone(), a.key));
        }
        if facts.gone {
            continue;
        }
        let mut entry = entry_of(a.key, &a.meta, a.size);
        entry.priority = entry.priority.min(options.max_priority);
        entry.enqueued_at = a.timestamp_ms;
        entry.expires_at = shared_expiry(
            a.meta.expires_at_ms,
            a.meta.not_before_ms,
            a.timestamp_ms,
            options.message_ttl_ms,
        );
        entry.attempts = facts.attempts;
        // A delay applies until the first delivery; later ones come from retry
        // records.
        let not_before = if facts.attempts == 0 {
            a.meta.not_before_ms
        } else {
            facts.not_before
        };
        restored.push(Replayed {
            entry,
            not_before,
            delay_attempt: facts.delay_attempt,
            alive: true,
            shared_mark: 0,
        });
    }
    totals.sent += sent;
    state.totals = totals;
    report.shared_sent = sent;
    report.shared_below = shared_below;
    // Everything from `shared_below` on is one batch: it holds the restored
    // messages, and its count is the `sent` no checkpoint has yet.
    state.restore_shared(
        shared_below,
        next_shared,
        sent,
        restored.len() as u64,
        mark.min(report.end),
    );
    for (until, id, key) in dedup {
        state.restore_id(&id, until, key, now);
    }
    state.finish_restore();
    let merged = arrival_order(messages, restored);
    state.restore_busy_groups(
        merged
            .iter()
            .filter(|m| m.not_before > now && m.entry.attempts > 0 && m.entry.group != 0)
            .map(|m| m.entry.group),
    );
    state.restore(
        merged
            .into_iter()
            .map(|m| (m.entry, m.not_before))
            .collect(),
        now,
    );
    report
}

/// Own messages (in offset order) and shared ones (in key order) merged in arrival
/// order: an own message goes after the shared ones below its mark.
fn arrival_order(own: Vec<Replayed>, shared: Vec<Replayed>) -> Vec<Replayed> {
    let mut merged: Vec<Replayed> = Vec::with_capacity(own.len() + shared.len());
    let mut own = own.into_iter().filter(|m| m.alive).peekable();
    let mut others = shared.into_iter().peekable();
    loop {
        let take_own = match (own.peek(), others.peek()) {
            (Some(o), Some(s)) => (SHARED | o.shared_mark) <= s.entry.offset,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => break,
        };
        let next = if take_own { own.next() } else { others.next() };
        merged.extend(next);
    }
    merged
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
    let own = replay_own(log, state, queue).await?;
    let arrivals = match shared {
        Some((shared_log, id)) => scan_shared(shared_log, &HashMap::from([(id, own.shared_below)]))
            .await?
            .remove(&id)
            .unwrap_or_default(),
        None => Vec::new(),
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
