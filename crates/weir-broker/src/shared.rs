//! The shared log: messages published to several queues, each stored once with the
//! ids of its destination queues (decision 0004).
//!
//! One dispatcher task owns the appends. Publishes hand it their records in a
//! channel; it submits each append as it arrives (so shared-log order is channel
//! order), and as the appends become durable, in that same order, it hands each
//! destination queue its part. So every queue receives shared messages in
//! shared-log order, which is what lets a queue know where, in its own log, the
//! state records about them start (its batches' marks). The appends still share
//! `fdatasync`s through the log's group commit: the dispatcher never waits for one
//! append before submitting the next.
//!
//! Appends in flight are registered (see [`WriteGuard`]) until every destination has
//! answered, so the shared log is never trimmed under a message on its way to a queue.

use std::collections::{BTreeMap, VecDeque};
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::Poll;

use tokio::sync::{mpsc, oneshot};
use weir_log::{Appended, MessageLog, NewRecord};

use crate::error::{BrokerError, Result};
use crate::handle::QueueRef;
use crate::queue::command::{Arrival, Command, SharedBatch};
use crate::queue::record::{MessageMeta, SHARED};

/// What each destination answered: per message of its part, whether it already
/// had the id; or why it refused.
pub(crate) type Answers = Vec<(String, Result<Vec<bool>>)>;

/// A publish for the dispatcher.
pub(crate) struct Dispatch {
    /// The shared records, in order.
    pub(crate) records: Vec<NewRecord>,
    /// Their metadata and body sizes, handed to the queues.
    pub(crate) metas: Vec<MessageMeta>,
    pub(crate) sizes: Vec<u32>,
    pub(crate) published_ms: i64,
    /// Which messages (positions) each destination gets.
    pub(crate) targets: Vec<Target>,
    /// Answered once every destination has answered.
    pub(crate) reply: oneshot::Sender<Result<Answers>>,
}

/// One destination of a publish.
pub(crate) struct Target {
    pub(crate) name: String,
    pub(crate) queue: QueueRef,
    pub(crate) positions: Vec<u32>,
}

/// Appends to the shared log whose messages are not all in their queues yet, by the
/// log's next offset when each started (a lower bound of what it writes), with a
/// count.
pub(crate) type Writes = Arc<Mutex<BTreeMap<u64, usize>>>;

/// Keeps the shared log from being trimmed at or above `low` while alive.
pub(crate) struct WriteGuard {
    writes: Writes,
    low: u64,
}

impl WriteGuard {
    fn new(writes: &Writes, low: u64) -> WriteGuard {
        *crate::locks::lock(writes).entry(low).or_default() += 1;
        WriteGuard {
            writes: writes.clone(),
            low,
        }
    }
}

impl Drop for WriteGuard {
    fn drop(&mut self) {
        let mut writes = crate::locks::lock(&self.writes);
        if let Some(count) = writes.get_mut(&self.low) {
            *count -= 1;
            if *count == 0 {
                writes.remove(&self.low);
            }
        }
    }
}

/// The lowest shared-log offset an append in flight may have written.
pub(crate) fn lowest_write(writes: &Writes) -> Option<u64> {
    crate::locks::lock(writes).keys().next().copied()
}

type AppendFuture = Pin<Box<dyn Future<Output = weir_log::Result<Appended>> + Send>>;

enum Event {
    New(Option<Dispatch>),
    Durable(weir_log::Result<Appended>),
}

/// Runs the dispatcher until every sender is gone and every append is handed out.
pub(crate) async fn run<L: MessageLog>(
    log: L,
    writes: Writes,
    mut requests: mpsc::Receiver<Dispatch>,
) {
    let mut in_flight: VecDeque<(AppendFuture, Dispatch, WriteGuard)> = VecDeque::new();
    let mut open = true;
    loop {
        if !open && in_flight.is_empty() {
            return;
        }
        let event = poll_fn(|cx| {
            if let Some((append, _, _)) = in_flight.front_mut()
                && let Poll::Ready(result) = append.as_mut().poll(cx)
            {
                return Poll::Ready(Event::Durable(result));
            }
            if open && let Poll::Ready(next) = requests.poll_recv(cx) {
                return Poll::Ready(Event::New(next));
            }
            Poll::Pending
        })
        .await;
        match event {
            Event::New(None) => open = false,
            Event::New(Some(mut dispatch)) => {
                let guard = WriteGuard::new(&writes, log.next_offset().0);
                // Queued now, so the shared log's order is the order of this channel,
                // which is the order the queues get them in.
                let records = std::mem::take(&mut dispatch.records);
                let append: AppendFuture = Box::pin(log.submit_batch(&records));
                in_flight.push_back((append, dispatch, guard));
            }
            Event::Durable(result) => {
                let (_, dispatch, guard) = in_flight
                    .pop_front()
                    .expect("invariant: a result comes from the front");
                hand_out(result, dispatch, guard).await;
            }
        }
    }
}

/// Gives each destination its part of a durable append (in the order appends were
/// made), then answers the publish once all have answered.
async fn hand_out(result: weir_log::Result<Appended>, dispatch: Dispatch, guard: WriteGuard) {
    let Dispatch {
        records: _,
        metas,
        sizes,
        published_ms,
        targets,
        reply,
    } = dispatch;
    let appended = match result {
        Ok(appended) => appended,
        Err(source) => {
            let _ = reply.send(Err(BrokerError::storage("(shared log)", source)));
            return;
        }
    };
    let batch = Arc::new(SharedBatch {
        keys: appended.offsets().map(|o| SHARED | o.0).collect(),
        metas,
        sizes,
        published_ms,
    });
    let mut pending = Vec::with_capacity(targets.len());
    for target in targets {
        let (tx, rx) = oneshot::channel();
        let command = Command::Arrive {
            arrival: Arrival {
                batch: batch.clone(),
                positions: target.positions,
            },
            reply: tx,
        };
        // A queue deleted meanwhile does not get it; the record names an id that
        // is never used again.
        let sent = target.queue.commands.send(command).await.is_ok();
        pending.push((target.name, sent.then_some(rx)));
    }
    tokio::spawn(async move {
        let mut answers = Vec::with_capacity(pending.len());
        for (name, rx) in pending {
            let answer = match rx {
                Some(rx) => rx.await.unwrap_or_else(|_| Err(gone(&name))),
                None => Err(gone(&name)),
            };
            answers.push((name, answer));
        }
        // Every queue holds its part (or declined it) now.
        drop(guard);
        let _ = reply.send(Ok(answers));
    });
}

fn gone(name: &str) -> BrokerError {
    BrokerError::Unavailable {
        reason: format!(
            "queue '{name}' stopped before it answered: it was deleted, the broker is \
             shutting down, or its task failed and is being restarted from its log"
        ),
    }
}
