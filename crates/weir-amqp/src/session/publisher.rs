//! The publisher side of a channel: its worker task takes the channel's publishes
//! and settlements in order and hands runs of publishes to the broker in batches;
//! its confirmer task waits for the broker's answers in order and reports each
//! batch to the session as an [`Event::Published`] (confirms, returns, a channel
//! error). `tx.commit` uses [`queue_publishes`] directly.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::task::TaskTracker;
use weir_broker::{BrokerError, NackOptions, PublishMessage, PublishOptions, QueuedPublish, Vhost};

use super::event::{Event, Publish, PublishDone};
use crate::codes::Exception;
use crate::message::to_send;

/// Most publishes handed to the broker as one batch.
const PUBLISH_BATCH: usize = 1_000;

/// Work for a channel's worker task, in the channel's order.
pub(super) enum Job {
    Publish(Box<Publish>),
    /// Ack (`requeue: None`) or nack these deliveries of `queue`.
    Settle {
        queue: Arc<str>,
        receipts: Vec<String>,
        requeue: Option<bool>,
    },
}

impl Job {
    /// Whether the channel's next synchronous method waits for this job: publishes
    /// and nacks change what is in the queues; an ack only settles a delivery.
    pub(super) fn ordered(&self) -> bool {
        !matches!(self, Job::Settle { requeue: None, .. })
    }
}

/// A channel's worker: takes its publishes and settlements in order, in batches.
/// It hands each batch's publishes to their queues and goes on with the next batch
/// while the queues make them durable; [`confirmer`] waits for the answers, in
/// order, and reports each batch to the session. Both run on the session's
/// `tasks`.
pub(super) async fn channel_worker(
    broker: Vhost,
    (channel, generation): (u16, u64),
    mut jobs: mpsc::Receiver<Vec<Job>>,
    events: mpsc::UnboundedSender<Event>,
    tasks: TaskTracker,
) {
    let (queued, to_confirm) = mpsc::unbounded_channel();
    let in_flight = Arc::new(Semaphore::new(PUBLISHES_IN_FLIGHT));
    tasks.spawn(confirmer((channel, generation), to_confirm, events));
    while let Some(mut batch) = jobs.recv().await {
        // Everything queued while the last batch was being handed over goes together.
        while batch.len() < PUBLISH_BATCH {
            match jobs.try_recv() {
                Ok(more) => batch.extend(more),
                Err(_) => break,
            }
        }
        let mut steps = Vec::new();
        let mut failed = false;
        let mut jobs_left = batch.into_iter().peekable();
        while let Some(job) = jobs_left.next() {
            match job {
                Job::Publish(first) => {
                    // Sized up front: a run is often a whole batch, and growing a
                    // vector of publishes copies them (callgrind: 500 instructions
                    // per message).
                    let mut run = Vec::with_capacity(jobs_left.len() + 1);
                    run.push(*first);
                    while let Some(Job::Publish(p)) =
                        jobs_left.next_if(|j| matches!(j, Job::Publish(_)))
                    {
                        run.push(*p);
                    }
                    let part = queue_publishes(&broker, run).await;
                    failed = part.error.is_some();
                    steps.push(Step::Publish(part));
                    if failed {
                        break;
                    }
                }
                Job::Settle {
                    queue,
                    mut receipts,
                    requeue,
                } => {
                    let mut count = 1;
                    while let Some(Job::Settle { receipts: more, .. }) = jobs_left.next_if(|j| {
                        matches!(j, Job::Settle { queue: q, requeue: r, .. } if *q == queue && *r == requeue)
                    }) {
                        receipts.extend(more);
                        count += 1;
                    }
                    let result = match requeue {
                        None => broker
                            .ack_unsynced(&queue, receipts)
                            .await
                            .map(|r| broker.traffic().acknowledged(u64::from(r.settled))),
                        Some(requeue) => broker
                            .nack(
                                &queue,
                                receipts,
                                NackOptions {
                                    requeue,
                                    delay_ms: Some(0),
                                },
                            )
                            .await
                            .map(|_| ()),
                    };
                    if let Err(e) = result {
                        tracing::debug!(%queue, error = %e, "an AMQP ack or nack failed");
                    }
                    // Acks do not hold the channel's next method back (a
                    // message acked is gone from the ready count either way).
                    if requeue.is_some() {
                        steps.push(Step::Settled(count));
                    }
                }
            }
        }
        // The confirmer is gone only with the session: what was received is still
        // published; only a channel error stops here.
        let publishes = steps
            .iter()
            .map(|s| match s {
                Step::Publish(p) => p.count,
                Step::Settled(_) => 0,
            })
            .sum::<usize>()
            .clamp(1, PUBLISHES_IN_FLIGHT);
        let Ok(permit) = in_flight.clone().acquire_many_owned(publishes as u32).await else {
            return;
        };
        let _ = queued.send((steps, permit));
        if failed {
            return;
        }
    }
}

/// Publishes of a channel handed to their queues and not yet answered, at most; a
/// channel that publishes faster than the disk syncs waits here (and its socket is
/// not read meanwhile). Enough for a slow sync of a few hundred milliseconds at a
/// few thousand messages a second.
const PUBLISHES_IN_FLIGHT: usize = 8_192;

/// A part of a channel's batch: publishes handed to their queues, or settlements
/// already done.
enum Step {
    Publish(QueuedPublishes),
    Settled(usize),
}

/// Reports each batch of a channel to the session once its queues have answered,
/// in the order the batches were taken.
async fn confirmer(
    (channel, generation): (u16, u64),
    mut batches: mpsc::UnboundedReceiver<(Vec<Step>, OwnedSemaphorePermit)>,
    events: mpsc::UnboundedSender<Event>,
) {
    while let Some((steps, _permit)) = batches.recv().await {
        let mut done = PublishDone::default();
        for step in steps {
            match step {
                Step::Publish(queued) => {
                    let part = queued.outcomes().await;
                    done.count += part.count;
                    done.returns.extend(part.returns);
                    done.acks.extend(part.acks);
                    done.nacks.extend(part.nacks);
                    if part.error.is_some() {
                        done.error = part.error;
                        break;
                    }
                }
                Step::Settled(count) => done.count += count,
            }
        }
        let failed = done.error.is_some();
        let _ = events.send(Event::Published {
            channel,
            generation,
            done,
        });
        if failed {
            return;
        }
    }
}

/// Publishes handed to their queues: per run of one exchange, its publishes and
/// the broker's pending answer (or why it was refused).
pub(super) struct QueuedPublishes {
    /// How many publishes the batch held.
    count: usize,
    runs: Vec<(Vec<Publish>, Result<QueuedPublish, BrokerError>)>,
    /// A channel exception found before anything was handed over.
    error: Option<Exception>,
}

impl QueuedPublishes {
    /// Waits for the queues' answers: what the publishes came to.
    pub(super) async fn outcomes(self) -> PublishDone {
        let mut done = PublishDone {
            count: self.count,
            error: self.error,
            ..PublishDone::default()
        };
        for (kept, queued) in self.runs {
            match queued.map(QueuedPublish::outcomes) {
                Ok(answer) => match answer.await {
                    Ok(outcomes) => {
                        for (p, o) in kept.into_iter().zip(outcomes) {
                            if p.seq != 0 {
                                done.acks.push(p.seq);
                            }
                            if o.unroutable && p.mandatory {
                                done.returns.push(p);
                            }
                        }
                    }
                    Err(e) => refused(&mut done, &kept, &e),
                },
                Err(e) => refused(&mut done, &kept, &e),
            }
        }
        done
    }
}

/// Publishes a queue refused: nacked (the channel goes on).
fn refused(done: &mut PublishDone, kept: &[Publish], error: &BrokerError) {
    tracing::debug!(error = %error, "an AMQP publish was refused");
    done.nacks
        .extend(kept.iter().filter(|p| p.seq != 0).map(|p| p.seq));
}

/// Hands `batch` to its queues in order, one broker call per run of the same
/// exchange (of at most the broker's `max_batch_messages`).
pub(super) async fn queue_publishes(broker: &Vhost, batch: Vec<Publish>) -> QueuedPublishes {
    let mut queued = QueuedPublishes {
        count: batch.len(),
        runs: Vec::new(),
        error: None,
    };
    let mut rest = batch.into_iter().peekable();
    // One broker call takes at most this many messages; a channel's worker may
    // have gathered more.
    let most = usize::try_from(broker.limits().max_batch_messages)
        .unwrap_or(usize::MAX)
        .clamp(1, PUBLISH_BATCH);
    while let Some(first) = rest.next() {
        let mut run = Vec::with_capacity(rest.len().min(most - 1) + 1);
        run.push(first);
        while run.len() < most
            && let Some(next) = rest.next_if(|p| p.exchange == run[0].exchange)
        {
            run.push(next);
        }
        let mut messages = Vec::with_capacity(run.len());
        let mut kept = Vec::with_capacity(run.len());
        for p in run {
            match to_send(&p.exchange, &p.routing_key, &p.properties, p.body.clone()) {
                Ok(message) => {
                    messages.push(PublishMessage {
                        routing_key: p.routing_key.clone(),
                        mandatory: p.mandatory,
                        message,
                    });
                    kept.push(p);
                }
                Err(e) => {
                    queued.error = Some(e);
                    return queued;
                }
            }
        }
        let exchange = kept[0].exchange.clone();
        match broker
            .publish_queued(&exchange, messages, PublishOptions::default())
            .await
        {
            Err(
                e @ (BrokerError::NotFound {
                    kind: weir_broker::Kind::Exchange,
                    ..
                }
                | BrokerError::AccessRefused { .. }),
            ) => {
                queued.error = Some(e.into());
                return queued;
            }
            result => queued.runs.push((kept, result)),
        }
    }
    queued
}
