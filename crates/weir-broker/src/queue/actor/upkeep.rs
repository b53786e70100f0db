//! The queue's own upkeep every half second, as the state decides it
//! (`state/upkeep.rs`): trims of the log, moving long-waiting messages to the head
//! so old segments can go, checkpoints; and what a failed sync leaves to retry.

use tokio::time::Instant;
use weir_log::{LogStore, MessageLog, NewRecord, Offset};

use crate::clock::now_ms;
use crate::error::BrokerError;
use crate::queue::entry::Entry;
use crate::queue::record::{MessageMeta, Outgoing, StateOp};
use crate::queue::state::{Checkpoint, LogSpan, Upkeep};

use super::{Actor, Internal, entry_of_outgoing, read_entries};

impl<S: LogStore> Actor<S> {
    /// Does what the state says housekeeping is to do now
    /// ([`crate::queue::state::QueueState::upkeep`]): move long-waiting messages to the head of the
    /// log, or write a checkpoint and trim the log below its floor.
    pub(super) fn housekeeping(&mut self) {
        self.fresh.expire(Instant::now());
        if self.housekeeping_busy {
            return;
        }
        let log = LogSpan {
            first: self.log.first_offset().0,
            next: self.log.next_offset().0,
            in_flight: self.appends_in_flight.keys().next().copied(),
            since_trim_ms: u64::try_from(self.last_trim.elapsed().as_millis()).unwrap_or(u64::MAX),
        };
        match self.state.upkeep(log, now_ms()) {
            Upkeep::Nothing => {}
            Upkeep::Move(moved) => {
                self.housekeeping_busy = true;
                self.start_move(moved);
            }
            Upkeep::Trim(checkpoint) => {
                self.housekeeping_busy = true;
                self.last_trim = Instant::now();
                self.checkpoint_and_trim(&checkpoint);
            }
        }
    }

    /// Writes the checkpoint (the counters of every record below the trim point,
    /// and what the state says besides), then trims the log below its floor.
    fn checkpoint_and_trim(&mut self, checkpoint: &Checkpoint) {
        let floor = checkpoint.floor;
        self.counters.fold(floor);
        self.counters
            .fold_shared(checkpoint.shared_below, checkpoint.shared_sent);
        let (ops, chunks) = self.counters.checkpoint(&checkpoint.dedup_ids);
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
