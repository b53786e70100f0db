//! Taking messages in as the state admits them (de-duplication, `reject-publish`,
//! the queue's TTL: `state/sending.rs`), batching queued sends into one append,
//! the staged append (taken in once written, answered once synced, decision 0005),
//! and shared messages arriving from the dispatcher.

use tokio::sync::mpsc;
use weir_log::{LogStore, MessageLog, NewRecord};

use crate::api::SendOutcome;
use crate::clock::now_ms;
use crate::queue::entry::Entry;
use crate::queue::record::Outgoing;
use crate::queue::replay::entry_of;
use crate::queue::state::{Admission, Arrived};

use super::pipeline::{self, StagedSend};
use super::{Actor, Arrival, ArriveReply, SendReply};

/// The entry of `message` once written at `offset`.
pub(super) fn entry_of_outgoing(message: &Outgoing, offset: u64, max_priority: u8) -> Entry {
    let mut entry = entry_of(offset, &message.meta, message.body.len() as u32);
    entry.priority = entry.priority.min(max_priority);
    entry
}

impl<S: LogStore> Actor<S> {
    pub(super) fn send(&mut self, messages: Vec<Outgoing>, dedup: bool, reply: Option<SendReply>) {
        self.send_batch(vec![(messages, dedup, reply)]);
    }

    /// Admits one send: answers it at once when nothing of it is to be written
    /// (refused, all duplicates, or deferred), else returns what to write.
    #[allow(clippy::type_complexity)]
    pub(super) fn admit_send(
        &mut self,
        mut messages: Vec<Outgoing>,
        dedup: bool,
        reply: Option<SendReply>,
        now: i64,
    ) -> Option<(Vec<Outgoing>, Vec<SendOutcome>, Option<SendReply>)> {
        self.state
            .stamp_ttl(messages.iter_mut().map(|m| &mut m.meta), now);
        let items: Vec<(Option<&str>, u32)> = messages
            .iter()
            .map(|m| {
                (
                    Some(m.meta.id.as_str()).filter(|_| dedup),
                    m.body.len() as u32,
                )
            })
            .collect();
        let (duplicate, effects) = match self.state.admit(&self.name, &items, now) {
            Ok(Admission::Admitted { duplicate, effects }) => (duplicate, effects),
            Ok(Admission::Wait) => {
                drop(items);
                self.deferred.push_back((messages, dedup, reply));
                return None;
            }
            Err(e) => {
                let dead_letters_only = messages.iter().all(|m| m.meta.dead_letter.is_some());
                let refusal = self.state.refuse_send(e, dead_letters_only);
                let answer = refusal.answer.map(|()| {
                    messages
                        .iter()
                        .map(|m| SendOutcome {
                            id: m.meta.id.clone(),
                            duplicate: false,
                        })
                        .collect()
                });
                if refusal.dead_letter {
                    self.dead_letter_refused(
                        messages
                            .into_iter()
                            .map(|m| (m.meta, m.headers, m.body))
                            .collect(),
                    );
                }
                if let Some(reply) = reply {
                    let _ = reply.send(answer);
                }
                return None;
            }
        };
        let outcomes: Vec<SendOutcome> = messages
            .iter()
            .zip(&duplicate)
            .map(|(m, d)| SendOutcome {
                id: m.meta.id.clone(),
                duplicate: *d,
            })
            .collect();
        // The record counting the duplicates; the answer does not wait for it.
        self.perform(effects);
        let kept: Vec<Outgoing> = messages
            .into_iter()
            .zip(duplicate)
            .filter(|(_, d)| !*d)
            .map(|(m, _)| m)
            .collect();
        if kept.is_empty() {
            if let Some(reply) = reply {
                let _ = reply.send(Ok(outcomes));
            }
            return None;
        }
        Some((kept, outcomes, reply))
    }

    /// Admits several sends and writes what they keep as one append (one trip to
    /// the log writer instead of one each), then answers each on its own.
    pub(super) fn send_batch(&mut self, sends: Vec<(Vec<Outgoing>, bool, Option<SendReply>)>) {
        let now = now_ms();
        let mut parts: Vec<(Vec<Outgoing>, Vec<SendOutcome>, Option<SendReply>)> = Vec::new();
        for (messages, dedup, reply) in sends {
            if let Some(part) = self.admit_send(messages, dedup, reply, now) {
                parts.push(part);
            }
        }
        if parts.is_empty() {
            return;
        }
        // Where these go among the shared messages, should the queue be replayed.
        let mark = self.bodies.next_offset().0;
        for (kept, _, _) in &mut parts {
            for m in kept.iter_mut() {
                m.meta.shared_mark = mark;
            }
        }
        let records: Vec<NewRecord> = parts
            .iter()
            .flat_map(|(kept, _, _)| kept.iter().map(Outgoing::record))
            .collect();
        let max_priority = self.state.options().max_priority;
        // Duplicates of these sends are answered only once they are durable, so
        // the actor hears when they are.
        let keeps_ids = self.state.options().dedup_window_ms.is_some();
        let low = self.start_append();
        // The messages are taken in (and may be delivered) once written; each send is
        // answered once they are durable (decision 0005). The pipeline follows the
        // appends in the order they are submitted here.
        let (written, durable) = self.log.submit_batch_staged(&records);
        let send = StagedSend {
            written: Box::pin(written),
            durable: Box::pin(durable),
            parts,
            low,
            max_priority,
            keeps_ids,
        };
        let pipeline = self.send_pipeline.get_or_insert_with(|| {
            let (sends, receiver) = mpsc::unbounded_channel();
            self.tasks.spawn(pipeline::run(
                self.name.clone(),
                receiver,
                self.internal_tx.clone(),
            ));
            sends
        });
        if let Err(refused) = pipeline.send(send) {
            unreachable!(
                "invariant: the pipeline lives while the actor holds its sender ({} sends)",
                refused.0.parts.len()
            );
        }
    }

    /// Takes in shared messages (already durable in the shared log) as the state
    /// says ([`crate::queue::state::QueueState::arrive`]), and answers once the
    /// records it asks for are durable. Gives the arrival back when one of its ids
    /// is still being written by an earlier send.
    pub(super) fn arrive(
        &mut self,
        arrival: Arrival,
        reply: ArriveReply,
    ) -> Option<(Arrival, ArriveReply)> {
        let now = now_ms();
        let batch = arrival.batch.clone();
        let incoming: Vec<(Entry, i64, &str)> = arrival
            .positions
            .iter()
            .map(|p| {
                let p = *p as usize;
                let meta = &batch.metas[p];
                (
                    entry_of(batch.keys[p], meta, batch.sizes[p]),
                    meta.not_before_ms,
                    meta.id.as_str(),
                )
            })
            .collect();
        let mark = self.log.next_offset().0;
        let arrived = self
            .state
            .arrive(&self.name, &incoming, batch.published_ms, mark, now);
        drop(incoming);
        match arrived {
            Arrived::Wait => return Some((arrival, reply)),
            Arrived::Refused {
                error,
                records,
                dead_letter,
            } => {
                if dead_letter {
                    self.dead_letter_refused_shared(&batch, &arrival.positions);
                }
                let done = self.perform_tracked(records, true);
                self.tasks.spawn(async move {
                    let _ = reply.send(match done.await {
                        Ok(()) => Err(error),
                        Err(write) => Err(write),
                    });
                });
            }
            Arrived::Taken {
                duplicate,
                records,
                effects,
            } => {
                self.perform(effects);
                if records.is_empty() {
                    let _ = reply.send(Ok(duplicate));
                } else {
                    let done = self.perform_tracked(records, true);
                    self.tasks.spawn(async move {
                        let _ = reply.send(done.await.map(|()| duplicate));
                    });
                }
                self.serve_waiters();
            }
        }
        None
    }
}
