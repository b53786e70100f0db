//! What happens when a queue actor panics: it is restarted from its log.
//!
//! A panic in an actor is a bug, but it must cost one queue a moment, never the
//! broker. Each queue's actor runs in a task of its own under a supervisor task
//! ([`supervise`]). The queue's command channel outlives the actor: the actor holds
//! its receiver behind a lock, which the panic releases, so commands queued meanwhile
//! are not lost. The supervisor then
//!
//! 1. closes the dead actor's log: everything already queued on it is written and
//!    synced, and nothing written after (the dead actor's tasks may still try) is
//!    taken. So the log holds exactly what was answered as durable, plus perhaps
//!    some writes whose answers were lost with the actor;
//! 2. opens the log again and replays it, with the queue's messages in the shared
//!    log, as at a broker start (`Broker::reopen_queue`);
//! 3. starts a new actor on the same channel.
//!
//! Callers whose answer the dead actor held (a long poll, a send waiting for an
//! earlier one) get an error (`gone`, 503) at once instead of waiting forever;
//! callers whose command was still queued are served by the new actor. As after a
//! restart of the broker, leases end (their messages are ready again, with the
//! delivery counted) and old receipts are stale. Other queues are not involved.
//!
//! A queue whose actor panics [`MAX_PANICS`] times within [`PANIC_WINDOW`] (a
//! message that makes it panic each time it is handled, say), or whose log cannot
//! be opened again, is *failed*: the supervisor answers every command with
//! `unavailable` and a reason that says so, keeps the shared log from being trimmed
//! under it, and the queue is recovered from its log at the next start. It can
//! still be deleted.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use tokio::sync::{Mutex, mpsc};
use tracing::Instrument as _;
use weir_log::{LogStore, MessageLog};

use crate::api::QueueOptions;
use crate::error::{BrokerError, Result};
use crate::queue::actor::Actor;
use crate::queue::command::{Command, refuse_with};

/// A queue actor that panics this many times within [`PANIC_WINDOW`] is not
/// restarted again: the queue is failed until the next start.
pub(crate) const MAX_PANICS: usize = 3;
pub(crate) const PANIC_WINDOW: Duration = Duration::from_secs(60);

/// What the supervisor needs to restart a queue.
pub(crate) struct Supervised {
    pub(crate) name: String,
    pub(crate) id: u32,
    pub(crate) options: QueueOptions,
    /// The queue's command receiver; each actor holds it for its life.
    pub(crate) commands: Arc<Mutex<mpsc::Receiver<Command>>>,
}

/// What the supervisor needs of the broker that owns the queue: to open it again
/// from its logs, and where the shared log starts now (a failed queue keeps it from
/// being trimmed above that). A trait, so this module does not import the broker.
pub(crate) trait Reopen<S: LogStore>: Send + Sync + 'static {
    /// Opens and replays `queue` again and builds its next actor.
    fn reopen(
        self: Arc<Self>,
        queue: Supervised,
    ) -> Pin<Box<dyn Future<Output = Result<Actor<S>>> + Send>>;

    /// The shared log's first offset.
    fn shared_first_offset(&self) -> u64;
}

/// Runs `actor`, and after each panic a new one replayed from the log, until the
/// queue stops (or fails; see the module docs).
pub(crate) async fn supervise<S: LogStore, R: Reopen<S>>(
    broker: Weak<R>,
    queue: Supervised,
    first: Actor<S>,
) {
    let name = queue.name.as_str();
    let mut actor = first;
    let mut panics: Vec<Instant> = Vec::new();
    loop {
        let log = actor.log().clone();
        let panic = match tokio::spawn(actor.run().in_current_span()).await {
            Ok(()) => {
                tracing::debug!(queue = name, "queue actor stopped");
                return;
            }
            Err(e) if e.is_panic() => panic_text(&*e.into_panic()),
            // Cancelled: the runtime is going away.
            Err(_) => return,
        };
        // The dead actor's tasks may still append; after the close nothing is taken.
        if let Err(e) = log.close().await {
            tracing::warn!(queue = name, error = %e, "closing the log of a queue whose actor panicked failed");
        }
        drop(log);
        let now = Instant::now();
        panics.retain(|at| now.duration_since(*at) < PANIC_WINDOW);
        panics.push(now);
        let Some(broker) = broker.upgrade() else {
            return;
        };
        let reason = if panics.len() >= MAX_PANICS {
            format!(
                "its task panicked {} times within {} s, the last time with: {panic}",
                panics.len(),
                PANIC_WINDOW.as_secs()
            )
        } else {
            tracing::error!(queue = name, %panic, "a queue's task panicked; restarting it from its log");
            let reopened = {
                let broker = broker.clone();
                let queue = Supervised {
                    name: queue.name.clone(),
                    id: queue.id,
                    options: queue.options.clone(),
                    commands: queue.commands.clone(),
                };
                // On a task of its own: a panic while replaying fails the queue too.
                tokio::spawn(broker.reopen(queue).in_current_span()).await
            };
            match reopened {
                Ok(Ok(next)) => {
                    tracing::info!(queue = name, "restarted a queue from its log after a panic");
                    actor = next;
                    continue;
                }
                Ok(Err(e)) => {
                    format!("its task panicked ({panic}) and it could not be opened again: {e}")
                }
                Err(e) if e.is_panic() => format!(
                    "its task panicked ({panic}), and again while it was replayed from its log ({})",
                    panic_text(&*e.into_panic())
                ),
                Err(_) => return,
            }
        };
        tracing::error!(queue = name, %reason, "queue failed: it refuses every request until the broker restarts, which recovers it from its log");
        let pin = broker.shared_first_offset();
        drop(broker);
        serve_failed(&queue, &reason, pin).await;
        return;
    }
}

/// Answers a failed queue's commands until it is stopped (deleted, or the broker
/// shuts down). `pin`: the shared log is not trimmed at or above it, so the queue's
/// shared messages are there when the next start recovers it.
async fn serve_failed(queue: &Supervised, reason: &str, pin: u64) {
    let mut commands = queue.commands.clone().lock_owned().await;
    let error = || BrokerError::Unavailable {
        reason: format!(
            "queue '{}' failed ({reason}); it is recovered from its log when the broker restarts",
            queue.name
        ),
    };
    while let Some(command) = commands.recv().await {
        match command {
            Command::Stop { reply } => {
                let _ = reply.send(());
                return;
            }
            Command::BodyFloor { reply } => {
                let _ = reply.send(Some(pin));
            }
            other => refuse_with(other, &error),
        }
    }
}

/// The message a panic carried.
fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = panic.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text.clone()
    } else {
        "(no message)".to_owned()
    }
}
