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
//! second copy of it. Own messages are [`Entry`](crate::queue::entry::Entry)s (56 bytes) in offset order, in
//! chunks of [`CHUNK`](crate::queue::ready::CHUNK) that are freed one at a time while [`finish`] moves their
//! entries into the state; settled ones are dropped from their chunk as replay goes.
//! What only some messages have (a delay, facts about a shared message, a
//! de-duplication id) is in sparse maps. Before this, replay kept about 220 bytes per
//! message (a record per message, a vector that doubles, a merged copy of it), and a
//! broker holding 5 M messages in 372 MB came back at 1,115 MB.
//!
//! Files: this one holds both phases' rules; `messages` the own messages in chunks,
//! `shared` the scan of the shared log, `entries` the entry of a message record
//! (which the actor builds too), `reading` chunked reads and counter sums.

use rustc_hash::FxHashMap;
use weir_log::{MessageLog, Offset};

use crate::queue::entry::is_shared;
use crate::queue::record::{self, Decoded, SHARED, StateOp, Totals};
use crate::queue::state::{QueueState, shared_expiry};

mod entries;
mod messages;
mod reading;
mod shared;

pub(crate) use entries::entry_of;
use messages::{GONE, OwnMessages};
use reading::{Chunks, minus, sum_deltas};
pub(crate) use shared::{Arrivals, Wanted, scan_shared};

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
            scan_shared(shared_log, &std::collections::HashMap::from([(id, wanted)]))
                .await?
                .remove(&id)
                .unwrap_or_default()
        }
        None => Arrivals::default(),
    };
    Ok(finish(own, arrivals, state, now))
}
