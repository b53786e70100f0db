//! Rebuilds a queue's state from its log on start.
//!
//! The log holds message records and state records (see [`super::record`]). Replay
//! reads it once from its first offset: message records become entries, state
//! records mark them delivered, retried or settled, and the last totals checkpoint
//! plus what follows it gives the lifetime counters. Leases are not persisted as
//! such: a message that was leased when the broker stopped is ready again, with its
//! delivery counted.

use weir_log::{MessageLog, Offset, ReadLimits};

use crate::queue::record::{self, Decoded, MessageMeta, StateOp, Totals};
use crate::queue::state::{Entry, QueueState, key_hash};

/// One message as replay sees it.
struct Replayed {
    entry: Entry,
    not_before: i64,
    /// The attempt the `not_before` belongs to: a later delivery voids it.
    delay_attempt: u32,
    alive: bool,
    /// For a body reference: the queue record's timestamp (the body record, read
    /// after the scan, fills the entry).
    reference: Option<i64>,
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
        body_ref: 0,
    }
}

/// Reads `log` and fills `state`. One pass over the records; kept as one function
/// so the replay rules read top to bottom.
/// `now` decides what is still delayed.
#[allow(clippy::too_many_lines)]
pub(crate) async fn replay<L: MessageLog>(
    log: &L,
    bodies: Option<&L>,
    state: &mut QueueState,
    queue: &str,
    now: i64,
) -> weir_log::Result<ReplayReport> {
    let mut report = ReplayReport::default();
    let mut messages: Vec<Replayed> = Vec::new();
    // Counters: the checkpoint with the highest `below`, and the sum of every record
    // read, both kept; see `record` for why that is exact.
    let mut all = Totals::default();
    let mut checkpoint: Option<(u64, Totals)> = None;
    let mut dedup: Vec<(i64, String, u64)> = Vec::new();
    let first = log.first_offset();
    let window = state
        .options()
        .dedup_window_ms
        .map(|w| i64::try_from(w).unwrap_or(i64::MAX));
    let max_priority = state.options().max_priority;
    let mut next = log.first_offset();
    let end = log.next_offset();
    let find = |messages: &mut Vec<Replayed>, offset: u64| -> Option<usize> {
        messages
            .binary_search_by_key(&offset, |m| m.entry.offset)
            .ok()
    };
    while next < end {
        let records = log
            .read_from(
                next,
                ReadLimits {
                    max_records: 65_536,
                    max_bytes: 8 << 20,
                },
            )
            .await?;
        let Some(last) = records.last() else { break };
        next = Offset(last.offset.0 + 1);
        for rec in records {
            report.records += 1;
            match record::decode(rec.key.as_deref(), &rec.body) {
                Ok(Decoded::Message(meta)) => {
                    all.add(&meta.delta());
                    if let Some(i) = meta.moved_from.and_then(|old| find(&mut messages, old)) {
                        messages[i].alive = false;
                    }
                    // Only sends are de-duplicated: not dead letters or moved copies.
                    let sent = meta.dead_letter.is_none() && meta.moved_from.is_none();
                    if let (Some(w), true) = (window, sent && !meta.id.is_empty()) {
                        dedup.push((
                            rec.timestamp_ms.saturating_add(w),
                            meta.id.clone(),
                            rec.offset.0,
                        ));
                    }
                    let mut entry = entry_of(rec.offset.0, &meta, rec.body.len() as u32);
                    entry.priority = entry.priority.min(max_priority);
                    messages.push(Replayed {
                        entry,
                        not_before: meta.not_before_ms,
                        delay_attempt: meta.attempts,
                        alive: true,
                        reference: None,
                    });
                }
                Ok(Decoded::Ref(r)) => {
                    all.sent += 1;
                    let entry = Entry {
                        offset: rec.offset.0,
                        group: 0,
                        expires_at: r.expires_at_ms,
                        enqueued_at: rec.timestamp_ms,
                        size: 0,
                        attempts: 0,
                        origin: 0,
                        priority: 0,
                        body_ref: r.body_ref + 1,
                    };
                    messages.push(Replayed {
                        entry,
                        not_before: 0,
                        delay_attempt: 0,
                        alive: true,
                        reference: Some(rec.timestamp_ms),
                    });
                }
                Ok(Decoded::State(op)) => {
                    all.add(&op.delta());
                    match op {
                        StateOp::Delivered(items) => {
                            for (offset, attempt) in items {
                                if let Some(i) = find(&mut messages, offset) {
                                    let m = &mut messages[i];
                                    m.entry.attempts = m.entry.attempts.max(attempt);
                                    if attempt > m.delay_attempt {
                                        m.not_before = 0;
                                    }
                                }
                            }
                        }
                        StateOp::Retry(items) => {
                            for (offset, attempt, due) in items {
                                if let Some(i) = find(&mut messages, offset) {
                                    let m = &mut messages[i];
                                    if attempt >= m.entry.attempts {
                                        m.entry.attempts = attempt;
                                        m.not_before = due;
                                        m.delay_attempt = attempt;
                                    }
                                }
                            }
                        }
                        StateOp::Settled(_, offsets) => {
                            for offset in offsets {
                                if let Some(i) = find(&mut messages, offset) {
                                    messages[i].alive = false;
                                }
                            }
                        }
                        StateOp::Totals { below, totals } => {
                            if checkpoint.is_none_or(|(b, _)| below >= b) {
                                checkpoint = Some((below, totals));
                            }
                        }
                        StateOp::Dedup(items) => dedup.extend(
                            items
                                .into_iter()
                                .map(|(until, id)| (until, id, rec.offset.0)),
                        ),
                        StateOp::Duplicates(_) => {}
                    }
                }
                Err(e) => {
                    report.undecodable += 1;
                    tracing::warn!(
                        queue,
                        offset = rec.offset.0,
                        reason = e.0,
                        "skipping a record that does not decode"
                    );
                }
            }
        }
    }
    state.totals = match checkpoint {
        None => all,
        Some((below, mut totals)) => {
            // The checkpoint covers every record below `below`; add the records
            // from there on. Those below it that are still here (a crash between
            // the checkpoint and its trim) were read too, so take them back out.
            let mut above = all;
            if below > first.0 {
                let covered = sum_deltas(log, first, Offset(below)).await?;
                above = minus(&all, &covered);
            }
            totals.add(&above);
            totals
        }
    };
    report.end = next.0.max(end.0);
    fill_references(
        bodies,
        &mut messages,
        window,
        &mut dedup,
        max_priority,
        queue,
    )
    .await?;
    for (until, id, offset) in dedup {
        state.restore_id(&id, until, offset, now);
    }
    state.finish_restore();
    state.restore_busy_groups(
        messages
            .iter()
            .filter(|m| m.alive && m.not_before > now && m.entry.attempts > 0 && m.entry.group != 0)
            .map(|m| m.entry.group),
    );
    state.restore(
        messages
            .into_iter()
            .filter(|m| m.alive)
            .map(|m| (m.entry, m.not_before))
            .collect(),
        now,
    );
    Ok(report)
}

/// The sum of the counter deltas of the records in `from..to`.
async fn sum_deltas<L: MessageLog>(log: &L, from: Offset, to: Offset) -> weir_log::Result<Totals> {
    let mut sum = Totals::default();
    let mut next = from;
    while next < to {
        let records = log
            .read_from(
                next,
                ReadLimits {
                    max_records: usize::try_from(to.0 - next.0)
                        .unwrap_or(usize::MAX)
                        .min(65_536),
                    max_bytes: 8 << 20,
                },
            )
            .await?;
        let Some(last) = records.last() else { break };
        next = Offset(last.offset.0 + 1);
        for rec in records.iter().filter(|r| r.offset < to) {
            match record::decode(rec.key.as_deref(), &rec.body) {
                Ok(Decoded::Message(meta)) => sum.add(&meta.delta()),
                Ok(Decoded::State(op)) => sum.add(&op.delta()),
                Ok(Decoded::Ref(_)) => sum.sent += 1,
                Err(_) => {}
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

/// Fills the entries of body references from their message records in the body
/// log (one read per run of offsets). A reference whose body is gone (it must not
/// happen: the body log is trimmed below held references only) drops the message,
/// with an error in the log.
async fn fill_references<L: MessageLog>(
    bodies: Option<&L>,
    messages: &mut [Replayed],
    window: Option<i64>,
    dedup: &mut Vec<(i64, String, u64)>,
    max_priority: u8,
    queue: &str,
) -> weir_log::Result<()> {
    let mut wanted: Vec<(u64, usize)> = messages
        .iter()
        .enumerate()
        .filter(|(_, m)| m.alive && m.reference.is_some())
        .map(|(i, m)| (m.entry.body_ref - 1, i))
        .collect();
    if wanted.is_empty() {
        return Ok(());
    }
    wanted.sort_unstable();
    let Some(bodies) = bodies else {
        tracing::error!(
            queue,
            count = wanted.len(),
            "body references but no body log: messages dropped"
        );
        for (_, i) in wanted {
            messages[i].alive = false;
        }
        return Ok(());
    };
    let mut k = 0;
    while k < wanted.len() {
        let start = wanted[k].0;
        let mut end = k + 1;
        while end < wanted.len() && wanted[end].0 <= wanted[end - 1].0 + 1 {
            end += 1;
        }
        let last = wanted[end - 1].0;
        let records = if start < bodies.first_offset().0 {
            Vec::new()
        } else {
            bodies
                .read_from(
                    Offset(start),
                    ReadLimits {
                        max_records: usize::try_from(last - start + 1).unwrap_or(usize::MAX),
                        max_bytes: usize::MAX,
                    },
                )
                .await?
        };
        for &(at, i) in &wanted[k..end] {
            let found = records.iter().find(|r| r.offset.0 == at).and_then(|rec| {
                match record::decode(rec.key.as_deref(), &rec.body) {
                    Ok(Decoded::Message(meta)) => Some((meta, rec.body.len())),
                    _ => None,
                }
            });
            let m = &mut messages[i];
            if let Some((meta, size)) = found {
                m.entry.group = meta.group.as_deref().map_or(0, key_hash);
                m.entry.enqueued_at = meta.enqueued_at_ms;
                m.entry.size = size as u32;
                m.entry.priority = meta.priority.min(max_priority);
                // A delay applies until the first delivery (later ones come
                // from retry records, already applied).
                if m.entry.attempts == 0 {
                    m.not_before = meta.not_before_ms;
                }
                if let (Some(w), Some(ts)) = (window, m.reference) {
                    dedup.push((ts.saturating_add(w), meta.id, m.entry.offset));
                }
            } else {
                tracing::error!(
                    queue,
                    offset = m.entry.offset,
                    body_ref = at,
                    "the shared body of a message is missing; the message is dropped"
                );
                m.alive = false;
            }
        }
        k = end;
    }
    Ok(())
}
