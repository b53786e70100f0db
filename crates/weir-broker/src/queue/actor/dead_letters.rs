//! Messages leaving the queue for elsewhere: dead letters (rejected, expired,
//! over-delivered, overflowed, refused by `reject-publish-dlx`) and redrives back
//! to their source queue, through the broker ([`crate::queue::host::Host`]).

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Weak;

use bytes::Bytes;
use tokio::sync::oneshot;
use weir_log::{Header, LogStore};

use crate::api::DeadLetterReason;
use crate::clock::now_ms;
use crate::error::{BrokerError, Result};
use crate::queue::dlq;
use crate::queue::entry::Entry;
use crate::queue::host::{self, Host};
use crate::queue::record::{MessageMeta, Outgoing, SettleReason};
use crate::queue::replay::entry_of;
use crate::queue::state::Pick;

use super::{Actor, Internal, SharedBatch, read_entries};

/// Sends dead letters to `target` through the broker.
pub(super) async fn dead_letter(
    host: &Weak<dyn Host>,
    target: &dlq::Target,
    messages: Vec<Outgoing>,
) -> Result<()> {
    host::upgrade(host)?
        .dead_letter(target.clone(), messages)
        .await
}

impl<S: LogStore> Actor<S> {
    /// Messages copied to the dead-letter queue or redriven (`ok`), or not.
    pub(super) fn on_transit(
        &mut self,
        offsets: &[u64],
        reason: SettleReason,
        ok: bool,
        done: Option<oneshot::Sender<()>>,
    ) {
        if ok && offsets.is_empty() {
            if let Some(done) = done {
                let _ = done.send(());
            }
        } else if ok {
            let effects = self.state.finish_transit(offsets, reason);
            let persisted = self.perform_tracked(effects, true);
            self.tasks.spawn(async move {
                let _ = persisted.await;
                if let Some(done) = done {
                    let _ = done.send(());
                }
            });
        } else {
            self.state.abort_transit(offsets, now_ms());
            if let Some(done) = done {
                let _ = done.send(());
            }
            self.serve_waiters();
        }
    }

    /// Copies `items` to the dead-letter queue; the returned future resolves once
    /// they are there and settled here (or put back on failure).
    pub(super) fn dead_letter(
        &mut self,
        items: Vec<(Entry, DeadLetterReason)>,
    ) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        let (done_tx, done_rx) = oneshot::channel();
        let Some(target) = dlq::Target::of(self.state.options()) else {
            return Box::pin(async {});
        };
        let log = self.log.clone();
        let bodies = self.bodies.clone();
        let queue = self.name.clone();
        let host = self.host.clone();
        let events = self.internal_tx.clone();
        self.tasks.spawn(async move {
            let entries: Vec<Entry> = items.iter().map(|(e, _)| *e).collect();
            let offsets: Vec<u64> = entries.iter().map(|e| e.offset).collect();
            let now = now_ms();
            let result = match read_entries(&log, &bodies, &queue, &entries).await {
                Ok(records) => {
                    let outgoing = records
                        .into_iter()
                        .zip(&items)
                        .map(|((meta, rec), (entry, reason))| {
                            dlq::copy(
                                &queue,
                                &target,
                                meta,
                                rec.headers,
                                rec.body,
                                entry.attempts,
                                *reason,
                                now,
                            )
                        })
                        .collect();
                    dead_letter(&host, &target, outgoing).await
                }
                Err(e) => Err(e),
            };
            if let Err(e) = &result {
                tracing::warn!(%queue, dead_letter_queue = %target.describe(), error = %e, "dead-lettering failed; the messages stay in the queue");
            }
            let _ = events.send(Internal::Transit {
                offsets,
                reason: SettleReason::DeadLettered,
                ok: result.is_ok(),
                done: Some(done_tx),
            });
        });
        Box::pin(async move {
            let _ = done_rx.await;
        })
    }

    /// [`Actor::dead_letter_refused`] for the shared messages of `batch` at
    /// `positions`, read from the shared log.
    pub(super) fn dead_letter_refused_shared(&mut self, batch: &SharedBatch, positions: &[u32]) {
        let Some(target) = dlq::Target::of(self.state.options()) else {
            return;
        };
        let entries: Vec<Entry> = positions
            .iter()
            .map(|p| {
                let p = *p as usize;
                entry_of(batch.keys[p], &batch.metas[p], batch.sizes[p])
            })
            .collect();
        let (log, bodies) = (self.log.clone(), self.bodies.clone());
        let queue = self.name.clone();
        let host = self.host.clone();
        self.tasks.spawn(async move {
            let now = now_ms();
            let result = match read_entries(&log, &bodies, &queue, &entries).await {
                Ok(records) => {
                    let outgoing = records
                        .into_iter()
                        .map(|(meta, rec)| {
                            dlq::copy(
                                &queue,
                                &target,
                                meta,
                                rec.headers,
                                rec.body,
                                0,
                                DeadLetterReason::Overflow,
                                now,
                            )
                        })
                        .collect();
                    dead_letter(&host, &target, outgoing).await
                }
                Err(e) => Err(e),
            };
            if let Err(e) = result {
                tracing::warn!(%queue, dead_letter_queue = %target.describe(), error = %e, "dead-lettering refused messages failed; they are dropped");
            }
        });
    }

    /// Dead-letters messages this queue refused (`reject-publish-dlx`: the state
    /// decides: `QueueState::refuse_send`) with reason `maxlen`, as RabbitMQ
    /// does: at most once, nothing of them is kept here.
    pub(super) fn dead_letter_refused(&mut self, refused: Vec<(MessageMeta, Vec<Header>, Bytes)>) {
        let Some(target) = dlq::Target::of(self.state.options()) else {
            return;
        };
        let queue = self.name.clone();
        let host = self.host.clone();
        let now = now_ms();
        let outgoing = refused
            .into_iter()
            .map(|(meta, headers, body)| {
                dlq::copy(
                    &queue,
                    &target,
                    meta,
                    headers,
                    body,
                    0,
                    DeadLetterReason::Overflow,
                    now,
                )
            })
            .collect();
        self.tasks.spawn(async move {
            if let Err(e) = dead_letter(&host, &target, outgoing).await {
                tracing::warn!(%queue, dead_letter_queue = %target.describe(), error = %e, "dead-lettering refused messages failed; they are dropped");
            }
        });
    }

    /// Removes the ready messages at `at` (from a peek); answers how many.
    pub(super) fn remove(&mut self, at: Vec<u64>, reply: oneshot::Sender<Result<u64>>) {
        let (count, effects) = self.state.remove_ready(&at.into_iter().collect());
        let done = self.perform_tracked(effects, true);
        self.tasks.spawn(async move {
            let _ = reply.send(done.await.map(|()| count));
        });
    }

    pub(super) fn redrive(&mut self, pick: &Pick, max: usize, reply: oneshot::Sender<Result<u64>>) {
        let entries = self.state.take_for_transit(max, pick);
        let log = self.log.clone();
        let bodies = self.bodies.clone();
        let queue = self.name.clone();
        let host = self.host.clone();
        let events = self.internal_tx.clone();
        self.tasks.spawn(async move {
            let offsets: Vec<u64> = entries.iter().map(|e| e.offset).collect();
            let result = async {
                let records = read_entries(&log, &bodies, &queue, &entries).await?;
                let mut by_source: BTreeMap<String, Vec<Outgoing>> = BTreeMap::new();
                for (meta, rec) in records {
                    let source = meta
                        .dead_letter
                        .as_ref()
                        .map(|d| d.source_queue.clone())
                        .ok_or_else(|| {
                            BrokerError::invalid(
                                "redrive",
                                format!(
                                    "message '{}' was not dead-lettered, it has no source queue",
                                    meta.id
                                ),
                            )
                        })?;
                    by_source.entry(source).or_default().push(Outgoing {
                        meta: MessageMeta {
                            id: meta.id,
                            priority: meta.priority,
                            group: meta.group,
                            enqueued_at_ms: now_ms(),
                            ..MessageMeta::default()
                        },
                        headers: rec.headers,
                        body: rec.body,
                    });
                }
                let mut count = 0;
                for (source, outgoing) in by_source {
                    count += outgoing.len() as u64;
                    host::upgrade(&host)?.send_to(source, outgoing).await?;
                }
                Ok(count)
            }
            .await;
            let (done_tx, done_rx) = oneshot::channel();
            let _ = events.send(Internal::Transit {
                offsets,
                reason: SettleReason::Redriven,
                ok: result.is_ok(),
                done: Some(done_tx),
            });
            let _ = done_rx.await;
            let _ = reply.send(result);
        });
    }
}
