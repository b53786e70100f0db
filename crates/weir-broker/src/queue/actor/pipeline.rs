//! The queue's send pipeline: one task per queue that follows its staged appends
//! (decision 0005) in the order they were submitted. For each, once it is written
//! the pipeline tells the actor (`Committed`, or `SendFailed`), which takes the
//! messages in; once it is synced it answers the senders and, for a queue that
//! keeps ids, tells the actor how far the log is durable.
//!
//! One task, two queues (written, then durable), each polled only at its front: a
//! log writes and syncs appends in the order they were submitted, so the front is
//! always the next to finish. Sends are thus taken in in append order, whatever the
//! runtime does, without a task per send. A send whose sync is slow does not hold
//! back the next one's "written": the stages overlap.

use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::task::Poll;

use tokio::sync::mpsc;
use weir_log::Appended;

use crate::api::SendOutcome;
use crate::error::BrokerError;
use crate::queue::record::Outgoing;

use super::{Internal, SendReply, entry_of_outgoing};

/// A future of the log, owned.
type LogFuture = Pin<Box<dyn Future<Output = weir_log::Result<Appended>> + Send>>;

/// One staged append of one or more sends.
pub(super) struct StagedSend {
    pub(super) written: LogFuture,
    pub(super) durable: LogFuture,
    /// The sends it holds, in order: the messages written, their outcomes, whom to
    /// answer.
    pub(super) parts: Vec<(Vec<Outgoing>, Vec<SendOutcome>, Option<SendReply>)>,
    /// The log's next offset when the append started (see `Actor::start_append`).
    pub(super) low: u64,
    pub(super) max_priority: u8,
    /// The queue keeps ids: the actor hears when each append is durable.
    pub(super) keeps_ids: bool,
}

/// A send written, waiting for its sync.
struct Written {
    durable: LogFuture,
    /// Whom to answer with what, once durable.
    answers: Vec<(SendReply, Vec<SendOutcome>)>,
    /// Where its records landed, if they did.
    landed: Option<(u64, u64)>,
    keeps_ids: bool,
}

enum Step {
    New(Option<StagedSend>),
    Written(weir_log::Result<Appended>),
    Durable(weir_log::Result<Appended>),
}

/// Runs the pipeline of queue `queue` until the actor drops its sender and every
/// send it queued is answered.
pub(super) async fn run(
    queue: String,
    mut sends: mpsc::UnboundedReceiver<StagedSend>,
    events: mpsc::UnboundedSender<Internal>,
) {
    let mut writing: VecDeque<StagedSend> = VecDeque::new();
    let mut syncing: VecDeque<Written> = VecDeque::new();
    let mut open = true;
    loop {
        if !open && writing.is_empty() && syncing.is_empty() {
            return;
        }
        let step = poll_fn(|cx| {
            if let Some(front) = writing.front_mut()
                && let Poll::Ready(result) = front.written.as_mut().poll(cx)
            {
                return Poll::Ready(Step::Written(result));
            }
            if let Some(front) = syncing.front_mut()
                && let Poll::Ready(result) = front.durable.as_mut().poll(cx)
            {
                return Poll::Ready(Step::Durable(result));
            }
            if open && let Poll::Ready(next) = sends.poll_recv(cx) {
                return Poll::Ready(Step::New(next));
            }
            Poll::Pending
        })
        .await;
        match step {
            Step::New(None) => open = false,
            Step::New(Some(send)) => writing.push_back(send),
            Step::Written(result) => {
                let send = writing
                    .pop_front()
                    .expect("invariant: a result comes from the front");
                if let Some(written) = taken_in(&queue, send, &result, &events) {
                    syncing.push_back(written);
                }
            }
            Step::Durable(result) => {
                let written = syncing
                    .pop_front()
                    .expect("invariant: a result comes from the front");
                answer(&queue, written, result, &events);
            }
        }
    }
}

/// Tells the actor what of `send` was written (or why not); returns what waits for
/// the sync, if anything does.
fn taken_in(
    queue: &str,
    send: StagedSend,
    result: &weir_log::Result<Appended>,
    events: &mpsc::UnboundedSender<Internal>,
) -> Option<Written> {
    let StagedSend {
        durable,
        parts,
        low,
        max_priority,
        keeps_ids,
        ..
    } = send;
    let last = parts.len() - 1;
    let mut answers = Vec::new();
    let start = result.as_ref().map_or(0, |a| a.first.0);
    let mut next = start;
    for (i, (kept, outcomes, reply)) in parts.into_iter().enumerate() {
        // The append is deregistered with the last part, once every part before it
        // was handled (the channel keeps order).
        let low = (i == last).then_some(low);
        match result {
            Ok(_) => {
                let first = next;
                next += kept.len() as u64;
                let entries = kept
                    .iter()
                    .zip(first..next)
                    .map(|(m, offset)| {
                        (
                            entry_of_outgoing(m, offset, max_priority),
                            m.meta.not_before_ms,
                        )
                    })
                    .collect();
                let _ = events.send(Internal::Committed {
                    low,
                    range: (first, next),
                    messages: kept,
                    entries,
                });
                answers.extend(reply.map(|reply| (reply, outcomes)));
            }
            Err(source) => {
                let _ = events.send(Internal::SendFailed {
                    low,
                    count: kept.len() as u64,
                    bytes: kept.iter().map(|m| m.body.len() as u64).sum(),
                    ids: kept.into_iter().map(|m| m.meta.id).collect(),
                    error: BrokerError::storage(queue, source.clone()),
                    reply,
                });
            }
        }
    }
    let landed = result.is_ok().then_some((start, next));
    (!answers.is_empty() || (keeps_ids && landed.is_some())).then_some(Written {
        durable,
        answers,
        landed,
        keeps_ids,
    })
}

/// Answers the senders of `written` once its sync is done.
fn answer(
    queue: &str,
    written: Written,
    result: weir_log::Result<Appended>,
    events: &mpsc::UnboundedSender<Internal>,
) {
    let synced = result.map_err(|source| BrokerError::storage(queue, source));
    if written.keeps_ids
        && let Some((from, to)) = written.landed
    {
        let _ = events.send(if synced.is_ok() {
            Internal::Synced { below: to }
        } else {
            Internal::SyncFailed { from, to }
        });
    }
    for (reply, outcomes) in written.answers {
        let _ = reply.send(synced.clone().map(|_| outcomes));
    }
}
