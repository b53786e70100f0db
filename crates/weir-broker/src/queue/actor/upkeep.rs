//! The queue's own upkeep every half second: expiry, trims of the log, moving
//! long-waiting messages to the head so old segments can go, checkpoints, and
//! what a failed sync leaves to retry.

use std::time::Duration;

use tokio::time::Instant;
use weir_log::{LogStore, MessageLog, NewRecord, Offset};

use crate::clock::now_ms;
use crate::error::BrokerError;
use crate::queue::entry::Entry;
use crate::queue::record::{MessageMeta, Outgoing, StateOp};

use super::{Actor, Internal, MOVE_MIN_SPAN, entry_of_outgoing, read_entries};

impl<S: LogStore> Actor<S> {
    /// Trims the log below the lowest held message, and moves the few delayed
    /// messages that would otherwise pin old segments.
    pub(super) fn housekeeping(&mut self) {
        self.fresh.expire(Instant::now());
        if self.housekeeping_busy {
            return;
        }
        let next = self.log.next_offset().0;
        let first = self.log.first_offset().0;
        // Never above an append in flight: its records may be in the log already
        // while this actor has not heard back (the state does not know the
        // messages, the counters do not have the delta).
        let in_flight = self
            .appends_in_flight
            .keys()
            .next()
            .copied()
            .unwrap_or(next);
        // Nor above state records about shared messages still held (their batch's
        // mark): the shared log holds the messages, this log what happened to them.
        self.state.prune_batches();
        let shared_mark = self.state.shared_mark().unwrap_or(next);
        let floor = self.state.floor(next).min(in_flight).min(shared_mark);
        let span = next - floor;
        if span >= MOVE_MIN_SPAN {
            let mid = floor + span / 2;
            let limit = usize::try_from(span / 256).unwrap_or(usize::MAX).max(16);
            if self.state.held_below(mid, limit + 1) <= limit {
                let moved = self.state.take_delayed_below(mid, limit);
                if !moved.is_empty() {
                    self.housekeeping_busy = true;
                    self.start_move(moved);
                    return;
                }
            }
        }
        if floor <= first {
            return;
        }
        // Each trim of a dedup queue rewrites the ids inside the window that only
        // the trimmed part remembers; trimming less often bounds that work.
        if let Some(window) = self.state.options().dedup_window_ms {
            let every = Duration::from_millis((window / 8).clamp(5_000, 600_000));
            if self.last_trim.elapsed() < every {
                return;
            }
        }
        self.housekeeping_busy = true;
        self.last_trim = Instant::now();
        // The checkpoint: the counters of every record below the trim point, and
        // the dedup ids that only records below it remember.
        self.counters.fold(floor);
        let shared_below = self.state.shared_below();
        let shared_sent = self.state.take_shared_sent();
        self.counters.fold_shared(shared_below, shared_sent);
        let (ops, chunks) =
            self.counters
                .checkpoint(&self.state.dedup_ids_below(floor, shared_below, now_ms()));
        let log = self.log.clone();
        let queue = self.name.clone();
        let events = self.internal_tx.clone();
        self.tasks.spawn(async move {
            let result = async {
                // A few records per append keeps each batch far below the log's
                // batch limit however many ids there are.
                let mut landed = Vec::new();
                let mut chunk_ids = chunks.into_iter();
                for (i, group) in ops.chunks(8).enumerate() {
                    let records = StateOp::records(group);
                    let appended = log.append_batch(&records).await?;
                    // The first group starts with the totals record.
                    let skip = usize::from(i == 0);
                    for offset in appended.offsets().skip(skip) {
                        if let Some(ids) = chunk_ids.next() {
                            landed.push((offset.0, ids));
                        }
                    }
                }
                let _ = events.send(Internal::CheckpointLanded(landed));
                log.trim_before(Offset(floor)).await
            }
            .await;
            if let Err(e) = result {
                tracing::warn!(%queue, error = %e, "checkpointing or trimming the queue's log failed");
            }
            let _ = events.send(Internal::HousekeepingDone);
        });
    }

    pub(super) fn start_move(&mut self, moved: Vec<(Entry, i64)>) {
        let log = self.log.clone();
        let bodies = self.bodies.clone();
        let queue = self.name.clone();
        let events = self.internal_tx.clone();
        let max_priority = self.state.options().max_priority;
        let low = self.start_append();
        let mark = self.bodies.next_offset().0;
        self.tasks.spawn(async move {
            let entries: Vec<Entry> = moved.iter().map(|(e, _)| *e).collect();
            let result = async {
                let records = read_entries(&log, &bodies, &queue, &entries).await?;
                let outgoing: Vec<Outgoing> = records
                    .into_iter()
                    .zip(&moved)
                    .map(|((meta, rec), (entry, due))| Outgoing {
                        meta: MessageMeta {
                            not_before_ms: *due,
                            attempts: entry.attempts,
                            moved_from: Some(entry.offset),
                            shared_mark: mark,
                            ..meta
                        },
                        headers: rec.headers,
                        body: rec.body,
                    })
                    .collect();
                let records: Vec<NewRecord> = outgoing.iter().map(Outgoing::record).collect();
                let appended = log.append_batch(&records).await.map_err(|source| BrokerError::storage(queue.clone(), source))?;
                Ok::<_, BrokerError>(
                    outgoing
                        .iter()
                        .zip(appended.offsets())
                        .zip(&moved)
                        .map(|((m, offset), (old, due))| {
                            // It keeps its place in the delivery order.
                            let mut entry = entry_of_outgoing(m, offset.0, max_priority);
                            entry.seq = old.seq;
                            (entry, *due)
                        })
                        .collect::<Vec<_>>(),
                )
            }
            .await;
            match result {
                Ok(new) => {
                    tracing::debug!(%queue, moved = new.len(), "moved long-waiting messages to the head of the log");
                    let _ = events.send(Internal::Moved {
                        low,
                        old: entries.iter().map(|e| e.offset).collect(),
                        new,
                    });
                }
                Err(e) => {
                    tracing::warn!(%queue, error = %e, "moving long-waiting messages failed");
                    let _ = events.send(Internal::MoveFailed { low, moved });
                }
            }
        });
    }

    /// Runs the sends and arrivals that waited for an earlier send of one of their
    /// ids.
    /// A checkpoint's records landed: its dedup ids are remembered there now.
    pub(super) fn checkpoint_landed(&mut self, chunks: Vec<(u64, Vec<(i64, String)>)>) {
        // Appended synced: the log is durable up to the last of them.
        if let Some(last) = chunks.iter().map(|(offset, _)| *offset).max() {
            self.state.synced_below(last + 1);
        }
        for (offset, ids) in chunks {
            self.state.dedup_rewritten(&ids, offset);
        }
    }

    /// The sync of a send's records `from..to` failed: retries of its ids that wait
    /// for it are new sends now.
    pub(super) fn sync_failed(&mut self, from: u64, to: u64) {
        let forgotten = self.state.sync_failed(from, to);
        tracing::debug!(
            queue = self.name,
            forgotten,
            "a send's sync failed: retries of its ids are new sends"
        );
        self.retry_deferred();
    }

    pub(super) fn retry_deferred(&mut self) {
        for (messages, dedup, reply) in std::mem::take(&mut self.deferred) {
            self.send(messages, dedup, reply);
        }
        while let Some((arrival, reply)) = self.deferred_arrivals.pop_front() {
            if let Some(waiting) = self.arrive(arrival, reply) {
                self.deferred_arrivals.push_front(waiting);
                break;
            }
        }
    }
}
