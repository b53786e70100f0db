//! The task that owns one queue: it takes [`Command`]s on a bounded channel, applies
//! them to its [`QueueState`] and performs the effects (log appends, reads, copies to
//! the dead-letter queue) in tasks of its own, so slow I/O never holds the queue.
//!
//! Those tasks report back on an internal channel. Appends from many tasks run
//! concurrently (the log's group commit batches them); the state records are
//! designed to replay in any order (see [`super::record`]). A reply that promises
//! durability (send, ack, nack, purge) is sent only after the append is synced; an
//! unsynced ack (AMQP's) is answered once written. Sent messages are taken in, and
//! may be delivered, once written (decision 0005).

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use rustc_hash::{FxBuildHasher, FxHashMap};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::either::Either;
use tokio_util::task::TaskTracker;
use weir_log::{Header, LogStore, MessageLog, NewRecord, Offset, ReadLimits, Record};

use crate::api::{
    DeadLetterReason, Delivery, NackOptions, Overflow, QueueStats, ReceiveRequest, SendOutcome,
    SettleReport,
};
use crate::clock::now_ms;
use crate::error::{BrokerError, Result};
use crate::queue::counters::Counters;
use crate::queue::dlq;
use crate::queue::entry::{Entry, is_shared};
use crate::queue::host::{self, Host};
use crate::queue::record::{
    self, Decoded, MessageMeta, Outgoing, SHARED, SettleReason, StateOp, Totals,
};
use crate::queue::replay::{ReplayReport, entry_of, shared_expiry};
use crate::queue::state::{Admission, Effect, QueueState, format_receipt, key_hash, parse_receipt};

/// Sends dead letters to `target` through the broker.
async fn dead_letter(
    host: &Weak<dyn Host>,
    target: &dlq::Target,
    messages: Vec<Outgoing>,
) -> Result<()> {
    host::upgrade(host)?
        .dead_letter(target.clone(), messages)
        .await
}

/// The entry of `message` once written at `offset`.
fn entry_of_outgoing(message: &Outgoing, offset: u64, max_priority: u8) -> Entry {
    let mut entry = entry_of(offset, &message.meta, message.body.len() as u32);
    entry.priority = entry.priority.min(max_priority);
    entry
}

/// Messages of one publish stored once in the shared log (decision 0004), as every
/// destination queue sees them. Shared, so handing them to N queues copies nothing.
#[derive(Debug)]
pub(crate) struct SharedBatch {
    /// `SHARED | offset` of each message, ascending.
    pub(crate) keys: Vec<u64>,
    /// Their metadata: the message's own expiry and delay, priority up to 255 (each
    /// queue applies its TTL and priority cap).
    pub(crate) metas: Vec<MessageMeta>,
    /// Body sizes.
    pub(crate) sizes: Vec<u32>,
    /// When they were published (the first enqueue time in every queue).
    pub(crate) published_ms: i64,
}

/// The part of a [`SharedBatch`] that one queue gets.
#[derive(Debug)]
pub(crate) struct Arrival {
    pub(crate) batch: Arc<SharedBatch>,
    /// Positions in the batch, ascending.
    pub(crate) positions: Vec<u32>,
}

/// Per message of an [`Arrival`], whether the queue already had its id.
pub(crate) type ArriveReply = oneshot::Sender<Result<Vec<bool>>>;

/// Requests to a queue actor.
pub(crate) enum Command {
    Send {
        messages: Vec<Outgoing>,
        /// Redrives and dead letters skip de-duplication: the id was already
        /// accepted once.
        dedup: bool,
        reply: oneshot::Sender<Result<Vec<SendOutcome>>>,
    },
    /// Shared messages are durable in the shared log and name this queue. They come
    /// in shared-log order; the queue writes nothing for them unless it declines
    /// some.
    Arrive {
        arrival: Arrival,
        reply: ArriveReply,
    },
    Receive {
        request: ReceiveRequest,
        reply: oneshot::Sender<Result<Vec<Delivery>>>,
    },
    Ack {
        receipts: Vec<String>,
        /// False: answer once the ack record is written, before it is synced.
        synced: bool,
        reply: oneshot::Sender<SettleReport>,
    },
    Nack {
        receipts: Vec<String>,
        options: NackOptions,
        reply: oneshot::Sender<SettleReport>,
    },
    Extend {
        receipts: Vec<String>,
        visibility_timeout_ms: u64,
        reply: oneshot::Sender<SettleReport>,
    },
    Peek {
        origin: Option<String>,
        max: usize,
        reply: oneshot::Sender<Result<Vec<Delivery>>>,
    },
    Redrive {
        origin: Option<String>,
        max: usize,
        reply: oneshot::Sender<Result<u64>>,
    },
    Purge {
        reply: oneshot::Sender<Result<u64>>,
    },
    Stats {
        reply: oneshot::Sender<QueueStats>,
    },
    /// The lowest shared-log offset this queue may still need (`None`: none).
    BodyFloor {
        reply: oneshot::Sender<Option<u64>>,
    },
    /// Stop: answer waiting receivers, finish in-flight work, close the log.
    Stop {
        reply: oneshot::Sender<()>,
    },
    /// Tests only: the actor panics (a bug in it, as far as the broker can tell).
    #[cfg(test)]
    Panic,
}

/// Reports from the actor's own tasks.
enum Internal {
    Committed {
        /// The log's next offset when the append started (see `appends_in_flight`);
        /// on the last part of an append only.
        low: Option<u64>,
        /// Where the records landed.
        range: (u64, u64),
        /// The messages, in order (their ids for de-duplication, their bodies for
        /// [`Fresh`]).
        messages: Vec<Outgoing>,
        entries: Vec<(Entry, i64)>,
    },
    SendFailed {
        low: Option<u64>,
        ids: Vec<String>,
        count: u64,
        bytes: u64,
        error: BrokerError,
        reply: Option<oneshot::Sender<Result<Vec<SendOutcome>>>>,
    },
    Release(Vec<(u64, u64)>),
    /// A state append landed (or failed: `range` is `None`).
    Landed {
        low: u64,
        range: Option<(u64, u64)>,
        delta: Totals,
    },
    /// The `settled` record of these acks (offset, lease id) landed (`ok`) or
    /// failed (the acks are kept and the record is retried: see `unwritten_acks`).
    Acked {
        acks: Vec<(u64, u64)>,
        ok: bool,
    },
    /// The retry of the acks in `retrying_acks` landed (`Ok`) or failed.
    AcksRetried(Result<()>),
    /// A checkpoint landed; its dedup records are at these offsets.
    CheckpointLanded(Vec<(u64, Vec<(i64, String)>)>),
    /// A send of a queue that keeps ids is durable: every record below `below` is.
    Synced {
        below: u64,
    },
    /// The sync of a send's records `from..to` failed (the log is failed now).
    SyncFailed {
        from: u64,
        to: u64,
    },
    Transit {
        offsets: Vec<u64>,
        reason: SettleReason,
        /// Of `offsets`, those settled as `ExpiredDeadLettered` instead of `reason`.
        expired: Vec<u64>,
        ok: bool,
        done: Option<oneshot::Sender<()>>,
    },
    Moved {
        low: u64,
        old: Vec<u64>,
        new: Vec<(Entry, i64)>,
    },
    MoveFailed {
        low: u64,
        moved: Vec<(Entry, i64)>,
    },
    HousekeepingDone,
}

/// A receiver in a long poll.
struct Waiter {
    max: usize,
    visibility_ms: u64,
    deadline: Instant,
    reply: oneshot::Sender<Result<Vec<Delivery>>>,
}

type BoxFuture = Pin<Box<dyn Future<Output = Result<()>> + Send>>;

/// A queue's command receiver, as an actor holds it (see `Actor::commands`).
pub(crate) type Commands = tokio::sync::OwnedMutexGuard<mpsc::Receiver<Command>>;
type SendReply = oneshot::Sender<Result<Vec<SendOutcome>>>;

/// Most queued sends merged into one append, and the body bytes after which no
/// more are merged (far below the log's batch limit).
const MAX_SENDS_PER_APPEND: usize = 64;
const MAX_BYTES_PER_APPEND: usize = 8 << 20;

/// Longest a delivery's `Delivered` record waits to ride on another append before it
/// is written on its own (decision 0005).
const DELIVERY_RECORD_DELAY: Duration = Duration::from_millis(100);

/// The first retry of an ack record that could not be written comes this long
/// after the failure; each failed retry doubles the wait, up to the maximum.
const ACK_RETRY_FIRST: Duration = Duration::from_millis(100);
const ACK_RETRY_MAX: Duration = Duration::from_secs(2);

/// How often the actor looks at trimming and compaction.
const HOUSEKEEPING_EVERY: Duration = Duration::from_millis(500);
/// A span of the log at least this long (in records) may have its few long-waiting
/// messages moved to the head so the old segments can go.
const MOVE_MIN_SPAN: u64 = 50_000;

/// `ms` from now, clamped to [`crate::api::MAX_DURATION_MS`] so that a
/// far-off time (a client's wait, a damaged record's due time) cannot overflow
/// the clock.
fn instant_in(ms: u64) -> Instant {
    Instant::now() + Duration::from_millis(ms.min(crate::api::MAX_DURATION_MS))
}

/// Most body bytes [`Fresh`] holds per queue, the largest body it takes, and how long
/// it keeps one (a message not delivered by then waits behind a backlog, and is
/// read from the log when its turn comes).
const FRESH_BYTES: usize = 4 << 20;
const FRESH_MAX_BODY: usize = 64 << 10;
const FRESH_FOR: Duration = Duration::from_secs(2);

/// Copies of the messages this queue wrote lately, by offset, so delivering one
/// right after it was written needs no read from the log (a hop to a read thread
/// and back). Bodies are copied: the originals may be slices of a much larger
/// network buffer, which they would keep alive.
#[derive(Default)]
pub(crate) struct Fresh {
    by_offset: FxHashMap<u64, Outgoing>,
    /// Insertion order, for expiry; offsets taken since stay here until they age out.
    order: VecDeque<(u64, Instant)>,
    bytes: usize,
}

impl Fresh {
    pub(crate) fn insert(&mut self, offset: u64, message: Outgoing) {
        let size = message.body.len();
        if size > FRESH_MAX_BODY || self.bytes + size > FRESH_BYTES {
            return;
        }
        let copy = |b: &Bytes| Bytes::copy_from_slice(b);
        let message = Outgoing {
            meta: message.meta,
            headers: message
                .headers
                .iter()
                .map(|h| Header {
                    name: copy(&h.name),
                    value: copy(&h.value),
                })
                .collect(),
            body: copy(&message.body),
        };
        // Those taken already leave the queue from the front.
        while let Some(&(front, _)) = self.order.front()
            && !self.by_offset.contains_key(&front)
        {
            self.order.pop_front();
        }
        self.bytes += size;
        self.by_offset.insert(offset, message);
        self.order.push_back((offset, Instant::now()));
    }

    /// The message at `offset` as its log record would give it, if held.
    pub(crate) fn take(&mut self, offset: u64) -> Option<(MessageMeta, Record)> {
        let m = self.by_offset.remove(&offset)?;
        self.bytes -= m.body.len();
        let rec = Record {
            offset: weir_log::Offset(offset),
            timestamp_ms: 0,
            key: None,
            headers: m.headers,
            body: m.body,
        };
        Some((m.meta, rec))
    }

    /// Drops what was written before `FRESH_FOR` ago.
    pub(crate) fn expire(&mut self, now: Instant) {
        while let Some(&(offset, at)) = self.order.front() {
            if now.duration_since(at) < FRESH_FOR {
                break;
            }
            self.order.pop_front();
            if let Some(m) = self.by_offset.remove(&offset) {
                self.bytes -= m.body.len();
            }
        }
    }
}

pub(crate) struct Actor<S: LogStore> {
    name: String,
    log: S::Log,
    /// The broker's shared log (messages published to several queues).
    bodies: S::Log,
    state: QueueState,
    host: Weak<dyn Host>,
    /// The queue's command channel, held for the actor's life. It outlives the
    /// actor: if the actor panics, the lock is released and the commands queued
    /// meanwhile wait for the actor restarted from the log (see
    /// `broker::supervise`).
    commands: Commands,
    internal_tx: mpsc::UnboundedSender<Internal>,
    internal_rx: mpsc::UnboundedReceiver<Internal>,
    waiters: VecDeque<Waiter>,
    tasks: TaskTracker,
    housekeeping_busy: bool,
    /// Appends in flight (sends, state records, moves), by the log's next offset
    /// when each started (a lower bound of the offsets it gets), with a count.
    /// Their records may be in the log before this actor has heard back, so trims
    /// (and the counters checkpoint that goes with them) stay below.
    appends_in_flight: BTreeMap<u64, usize>,
    /// What the log's records add up to, for the checkpoint written at each trim.
    counters: Counters,
    /// Sends that wait for an earlier send of one of their ids to land.
    deferred: VecDeque<(Vec<Outgoing>, bool, Option<SendReply>)>,
    /// Shared arrivals waiting the same way; later arrivals queue behind them, so
    /// they are taken in shared-log order.
    deferred_arrivals: VecDeque<(Arrival, ArriveReply)>,
    next_housekeeping: Instant,
    /// When the log was last trimmed (dedup queues trim less often: each trim
    /// rewrites the ids still inside the window).
    last_trim: Instant,
    /// Deliveries whose `Delivered` record is not written yet, offset → delivery
    /// count (decision 0005): they go out with the next append of this queue, by
    /// `record_due` at the latest, and a first delivery acked before that needs none.
    unrecorded: FxHashMap<u64, u32>,
    record_due: Option<Instant>,
    fresh: Fresh,
    /// Resolves once the latest send has reported its append (see `send_batch`).
    send_order: Option<oneshot::Receiver<()>>,
    /// Acks whose `settled` record could not be written (a full disk), by offset,
    /// with the lease id of the receipt. They stay acked: the message is never
    /// delivered again by this run (no redelivery storm while the disk is full), and
    /// the record is retried until it is durable. A stop before then leaves the
    /// message to come back at the next start (at least once). The same receipt
    /// acked again joins the retry, so an HTTP client told 507 can ask again.
    unwritten_acks: FxHashMap<u64, u64>,
    /// The unwritten acks whose retry is in flight.
    retrying_acks: FxHashMap<u64, u64>,
    /// Acks of receipts in `retrying_acks`, answered when that retry lands.
    ack_retry_waiters: Vec<oneshot::Sender<Result<()>>>,
    /// When unwritten acks are next retried, and the wait after a failed retry.
    ack_retry_due: Option<Instant>,
    ack_retry_backoff: Duration,
}

impl<S: LogStore> Actor<S> {
    pub(crate) fn new(
        name: String,
        log: S::Log,
        bodies: S::Log,
        state: QueueState,
        host: Weak<dyn Host>,
        commands: Commands,
        replayed: &ReplayReport,
    ) -> Self {
        let (internal_tx, internal_rx) = mpsc::unbounded_channel();
        // The checkpoint does not hold the shared messages replay counted above its
        // `shared_below`: they fold in when that moves past them.
        let mut base = state.totals;
        base.sent -= replayed.shared_sent;
        Actor {
            name,
            log,
            bodies,
            state,
            host,
            commands,
            internal_tx,
            internal_rx,
            waiters: VecDeque::new(),
            tasks: TaskTracker::new(),
            housekeeping_busy: false,
            appends_in_flight: BTreeMap::new(),
            // Replay restored the counters of every record below its end.
            counters: Counters::new(base, replayed.end, replayed.shared_below),
            deferred: VecDeque::new(),
            deferred_arrivals: VecDeque::new(),
            next_housekeeping: Instant::now() + HOUSEKEEPING_EVERY,
            last_trim: Instant::now(),
            unrecorded: FxHashMap::default(),
            record_due: None,
            fresh: Fresh::default(),
            send_order: None,
            unwritten_acks: FxHashMap::default(),
            retrying_acks: FxHashMap::default(),
            ack_retry_waiters: Vec::new(),
            ack_retry_due: None,
            ack_retry_backoff: ACK_RETRY_FIRST,
        }
    }

    /// The queue's log (the supervisor closes it when the actor panics, before a
    /// new one is opened on the same directory).
    pub(crate) fn log(&self) -> &S::Log {
        &self.log
    }

    /// Runs until stopped or until every handle is gone.
    pub(crate) async fn run(mut self) {
        let stopped = loop {
            let wake = self.next_wake();
            tokio::select! {
                biased;
                Some(event) = self.internal_rx.recv() => self.on_internal(event),
                command = self.commands.recv() => match command {
                    Some(Command::Stop { reply }) => break Some(reply),
                    Some(Command::Send { messages, dedup, reply }) => {
                        // Sends queued behind this one go into the same append.
                        let size = |m: &[Outgoing]| m.iter().map(|o| o.body.len()).sum::<usize>();
                        let mut bytes = size(&messages);
                        let mut sends = vec![(messages, dedup, Some(reply))];
                        let mut other = None;
                        while sends.len() < MAX_SENDS_PER_APPEND && bytes < MAX_BYTES_PER_APPEND {
                            match self.commands.try_recv() {
                                Ok(Command::Send { messages, dedup, reply }) => {
                                    bytes += size(&messages);
                                    sends.push((messages, dedup, Some(reply)));
                                }
                                Ok(command) => {
                                    other = Some(command);
                                    break;
                                }
                                Err(_) => break,
                            }
                        }
                        self.send_batch(sends);
                        match other {
                            Some(Command::Stop { reply }) => break Some(reply),
                            Some(command) => self.on_command(command),
                            None => {}
                        }
                    }
                    Some(command) => self.on_command(command),
                    None => break None,
                },
                () = tokio::time::sleep_until(wake) => {}
            }
            self.on_time();
        };
        self.stop().await;
        if let Some(reply) = stopped {
            let _ = reply.send(());
        }
    }

    fn next_wake(&self) -> Instant {
        let mut wake = self.next_housekeeping;
        if let Some(due) = self.state.next_due() {
            let wait = u64::try_from(due.saturating_sub(now_ms())).unwrap_or(0);
            wake = wake.min(instant_in(wait));
        }
        for w in &self.waiters {
            wake = wake.min(w.deadline);
        }
        if let Some(due) = self.record_due {
            wake = wake.min(due);
        }
        if let Some(due) = self.ack_retry_due {
            wake = wake.min(due);
        }
        wake
    }

    async fn stop(&mut self) {
        for waiter in self.waiters.drain(..) {
            let _ = waiter.reply.send(Ok(Vec::new()));
        }
        self.commands.close();
        // Refuse what is still queued, then let in-flight work finish: its replies
        // may need this loop (a committed send is answered from here).
        while let Ok(command) = self.commands.try_recv() {
            refuse(command, &self.name);
        }
        for (_, _, reply) in self.deferred.drain(..) {
            if let Some(reply) = reply {
                let _ = reply.send(Err(BrokerError::Unavailable {
                    reason: format!("queue '{}' is shutting down", self.name),
                }));
            }
        }
        for (_, reply) in self.deferred_arrivals.drain(..) {
            let _ = reply.send(Err(BrokerError::Unavailable {
                reason: format!("queue '{}' is shutting down", self.name),
            }));
        }
        self.record_deliveries();
        if self.retrying_acks.is_empty() {
            // A last try: what is not durable now comes back at the next start.
            self.retry_acks();
        }
        self.tasks.close();
        loop {
            while let Ok(event) = self.internal_rx.try_recv() {
                self.on_internal(event);
            }
            if self.tasks.is_empty() {
                break;
            }
            tokio::select! {
                Some(event) = self.internal_rx.recv() => self.on_internal(event),
                () = self.tasks.wait() => {}
            }
        }
        if let Err(e) = self.log.close().await {
            tracing::error!(queue = %self.name, error = %e, "closing the queue's log failed");
        }
    }

    fn on_time(&mut self) {
        let now = now_ms();
        let effects = self.state.tick(now);
        self.perform(effects);
        let instant = Instant::now();
        if self.waiters.iter().any(|w| w.deadline <= instant) {
            let (due, waiting): (VecDeque<Waiter>, VecDeque<Waiter>) =
                std::mem::take(&mut self.waiters)
                    .into_iter()
                    .partition(|w| w.deadline <= instant);
            self.waiters = waiting;
            for waiter in due {
                let _ = waiter.reply.send(Ok(Vec::new()));
            }
        }
        self.serve_waiters();
        if self.record_due.is_some_and(|due| due <= instant) {
            self.record_deliveries();
        }
        if self.ack_retry_due.is_some_and(|due| due <= instant) && self.retrying_acks.is_empty() {
            self.retry_acks();
        }
        if instant >= self.next_housekeeping {
            self.next_housekeeping = instant + HOUSEKEEPING_EVERY;
            self.housekeeping();
        }
    }

    /// Registers an append about to start; see `appends_in_flight`.
    fn start_append(&mut self) -> u64 {
        let low = self.log.next_offset().0;
        *self.appends_in_flight.entry(low).or_default() += 1;
        low
    }

    /// An append registered at `low` landed (at `range`, adding `delta`) or failed.
    fn append_landed(&mut self, low: u64, range: Option<(u64, u64)>, delta: Totals) {
        if let Some(count) = self.appends_in_flight.get_mut(&low) {
            *count -= 1;
            if *count == 0 {
                self.appends_in_flight.remove(&low);
            }
        }
        if let Some((first, next)) = range {
            self.counters.landed(first, next, delta);
        }
    }

    /// Writes the deliveries not recorded yet, on their own.
    fn record_deliveries(&mut self) {
        if !self.unrecorded.is_empty() {
            let done = self.persist(Vec::new());
            let queue = self.name.clone();
            self.tasks.spawn(async move {
                if let Err(e) = done.await {
                    tracing::warn!(%queue, error = %e, "recording deliveries failed");
                }
            });
        }
        self.record_due = None;
    }

    /// Starts an append of state ops, with the deliveries not recorded yet in front;
    /// the future resolves when it is durable.
    fn persist(&mut self, ops: Vec<StateOp>) -> BoxFuture {
        self.append_ops(ops, true)
    }

    /// As `persist`, but resolves once the records are written; they are synced
    /// with the log's next synced append, or within 100 ms.
    fn persist_unsynced(&mut self, ops: Vec<StateOp>) -> BoxFuture {
        self.append_ops(ops, false)
    }

    fn append_ops(&mut self, mut ops: Vec<StateOp>, synced: bool) -> BoxFuture {
        if !self.unrecorded.is_empty() {
            let mut items: Vec<(u64, u32)> = self.unrecorded.drain().collect();
            items.sort_unstable();
            ops.insert(0, StateOp::Delivered(items));
            self.record_due = None;
        }
        if ops.is_empty() {
            return Box::pin(async { Ok(()) });
        }
        let mut delta = Totals::default();
        for op in &ops {
            delta.add(&op.delta());
        }
        let records = StateOp::records(&ops);
        let low = self.start_append();
        let log = self.log.clone();
        let queue = self.name.clone();
        let events = self.internal_tx.clone();
        // Queued now, so appends land in the order this actor starts them.
        let appended = if synced {
            Either::Left(log.submit_batch(&records))
        } else {
            Either::Right(log.append_batch_unsynced(&records))
        };
        Box::pin(async move {
            let result = appended.await;
            let range = result.as_ref().ok().map(|a| (a.first.0, a.next.0));
            let _ = events.send(Internal::Landed { low, range, delta });
            result
                .map(|_| ())
                .map_err(|source| BrokerError::storage(queue, source))
        })
    }

    /// Performs effects, returning a future that resolves when all are done
    /// (persisted, or copied to the dead-letter queue).
    fn perform_tracked(&mut self, effects: Vec<Effect>) -> BoxFuture {
        let mut ops = Vec::new();
        let mut copies = Vec::new();
        for effect in effects {
            match effect {
                Effect::Persist(op) => ops.push(op),
                Effect::DeadLetter(items) => copies.push(self.dead_letter(items)),
            }
        }
        let persisted = self.persist(ops);
        Box::pin(async move {
            let result = persisted.await;
            for copy in copies {
                let () = copy.await;
            }
            result
        })
    }

    /// Performs effects in the background.
    fn perform(&mut self, effects: Vec<Effect>) {
        if effects.is_empty() {
            return;
        }
        let done = self.perform_tracked(effects);
        let queue = self.name.clone();
        self.tasks.spawn(async move {
            if let Err(e) = done.await {
                tracing::warn!(%queue, error = %e, "a state update of the queue failed");
            }
        });
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Send {
                messages,
                dedup,
                reply,
            } => self.send(messages, dedup, Some(reply)),
            Command::Arrive { arrival, reply } => {
                if self.deferred_arrivals.is_empty() {
                    if let Some(waiting) = self.arrive(arrival, reply) {
                        self.deferred_arrivals.push_back(waiting);
                    }
                } else {
                    self.deferred_arrivals.push_back((arrival, reply));
                }
            }
            Command::Receive { request, reply } => self.receive(request, reply),
            Command::Ack {
                receipts,
                synced,
                reply,
            } => self.ack(receipts, synced, reply),
            Command::Nack {
                receipts,
                options,
                reply,
            } => self.nack(receipts, options, reply),
            Command::Extend {
                receipts,
                visibility_timeout_ms,
                reply,
            } => {
                let _ = reply.send(self.extend(receipts, visibility_timeout_ms));
            }
            Command::Peek { origin, max, reply } => {
                let entries = self
                    .state
                    .peek(max, origin.as_deref().map(|o| key_hash(o) as u32));
                let log = self.log.clone();
                let bodies = self.bodies.clone();
                let queue = self.name.clone();
                self.tasks.spawn(async move {
                    let result = match read_entries(&log, &bodies, &queue, &entries).await {
                        Ok(records) => Ok(records
                            .into_iter()
                            .zip(&entries)
                            .map(|((meta, rec), entry)| delivery(None, meta, rec, entry.attempts))
                            .collect()),
                        Err(error) => {
                            // Some were settled (and their records trimmed) since the
                            // snapshot: read one by one and leave those out.
                            let mut out = Vec::new();
                            for entry in &entries {
                                if let Ok(mut one) =
                                    read_entries(&log, &bodies, &queue, std::slice::from_ref(entry))
                                        .await
                                {
                                    let (meta, rec) = one.remove(0);
                                    out.push(delivery(None, meta, rec, entry.attempts));
                                }
                            }
                            if out.is_empty() { Err(error) } else { Ok(out) }
                        }
                    };
                    let _ = reply.send(result);
                });
            }
            Command::Redrive { origin, max, reply } => self.redrive(origin, max, reply),
            Command::Purge { reply } => {
                let offsets = self.state.purge();
                let count = offsets.len() as u64;
                let ops = if offsets.is_empty() {
                    Vec::new()
                } else {
                    vec![StateOp::Settled(SettleReason::Purged, offsets)]
                };
                let done = self.persist(ops);
                self.tasks.spawn(async move {
                    let _ = reply.send(done.await.map(|()| count));
                });
            }
            Command::Stats { reply } => {
                // Receivers that went away (client closed its connection) do not count.
                self.waiters.retain(|w| !w.reply.is_closed());
                let mut stats = self.state.stats(self.waiters.len() as u64, now_ms());
                // A message is taken in once written, a moment after it is
                // admitted; counted from its admission, as RabbitMQ counts an
                // enqueued message at once (amqplib's tests publish, then count
                // the queue from another connection).
                stats.ready += self.state.admitted_unwritten();
                stats.disk_bytes = self.log.stats().size_bytes;
                let _ = reply.send(stats);
            }
            Command::BodyFloor { reply } => {
                self.state.prune_batches();
                let floor = self.state.holds_shared().then(|| self.state.shared_below());
                let _ = reply.send(floor.map(|key| key & !SHARED));
            }
            Command::Stop { .. } => unreachable!("handled by run"),
            #[cfg(test)]
            Command::Panic => panic!("queue '{}': the test asked this actor to panic", self.name),
        }
    }

    fn extend(&mut self, receipts: Vec<String>, visibility_timeout_ms: u64) -> SettleReport {
        let mut report = SettleReport::default();
        let now = now_ms();
        for receipt in receipts {
            match self
                .state
                .extend(&self.name, &receipt, visibility_timeout_ms, now)
            {
                Ok(()) => report.settled += 1,
                Err(e) => report.failed.push((receipt, e)),
            }
        }
        report
    }

    fn ack(&mut self, receipts: Vec<String>, synced: bool, reply: oneshot::Sender<SettleReport>) {
        let mut report = SettleReport::default();
        let mut entries = Vec::new();
        // Acks of this request whose record failed before and is not being retried
        // now: written again with the new ones.
        let mut again = Vec::new();
        // Acks whose retry is in flight: answered when it lands.
        let mut joined = 0;
        for receipt in receipts {
            match self.state.ack(&self.name, &receipt) {
                Ok(entry) => {
                    let lease = parse_receipt(&receipt).map_or(0, |(_, lease)| lease);
                    entries.push((entry, lease));
                }
                Err(e @ BrokerError::StaleReceipt { .. }) => match parse_receipt(&receipt) {
                    Some((offset, lease)) if self.unwritten_acks.get(&offset) == Some(&lease) => {
                        self.unwritten_acks.remove(&offset);
                        again.push((offset, lease));
                    }
                    Some((offset, lease)) if self.retrying_acks.get(&offset) == Some(&lease) => {
                        joined += 1;
                    }
                    _ => report.failed.push((receipt, e)),
                },
                Err(e) => report.failed.push((receipt, e)),
            }
        }
        report.settled = (entries.len() + again.len() + joined) as u32;
        for (entry, _) in &entries {
            // A first delivery settled before its record was written needs none (a
            // redelivery's record counts it in `redelivered_total`).
            if entry.attempts == 1 && self.unrecorded.get(&entry.offset) == Some(&1) {
                self.unrecorded.remove(&entry.offset);
            }
        }
        self.serve_waiters();
        let mut acks: Vec<(u64, u64)> = entries
            .iter()
            .map(|(e, lease)| (e.offset, *lease))
            .collect();
        acks.extend(again);
        let retried = (joined > 0).then(|| {
            let (tx, rx) = oneshot::channel();
            self.ack_retry_waiters.push(tx);
            rx
        });
        if acks.is_empty() && retried.is_none() {
            let _ = reply.send(report);
            return;
        }
        let written = if acks.is_empty() {
            None
        } else {
            let offsets = acks.iter().map(|(offset, _)| *offset).collect();
            let ops = vec![StateOp::Settled(SettleReason::Acked, offsets)];
            Some(if synced {
                self.persist(ops)
            } else {
                self.persist_unsynced(ops)
            })
        };
        let events = self.internal_tx.clone();
        let queue = self.name.clone();
        self.tasks.spawn(async move {
            let mut result = Ok(());
            if let Some(written) = written {
                result = written.await;
                let _ = events.send(Internal::Acked {
                    acks,
                    ok: result.is_ok(),
                });
            }
            if let Some(retried) = retried {
                let joined = retried.await.unwrap_or_else(|_| {
                    Err(BrokerError::Unavailable {
                        reason: format!("queue '{queue}' stopped before the ack was written"),
                    })
                });
                result = result.and(joined);
            }
            if let Err(e) = result {
                // Not durable (yet): every receipt of this request is reported failed.
                // The acks are kept and retried; acking the same receipts again
                // answers once they are durable.
                report.failed.push((String::new(), e));
                report.settled = 0;
            }
            let _ = reply.send(report);
        });
    }

    /// Writes the `settled` record of the unwritten acks again (see
    /// `unwritten_acks`).
    fn retry_acks(&mut self) {
        self.ack_retry_due = None;
        if self.unwritten_acks.is_empty() {
            return;
        }
        self.retrying_acks = std::mem::take(&mut self.unwritten_acks);
        let offsets = self.retrying_acks.keys().copied().collect();
        let done = self.persist(vec![StateOp::Settled(SettleReason::Acked, offsets)]);
        let events = self.internal_tx.clone();
        self.tasks.spawn(async move {
            let _ = events.send(Internal::AcksRetried(done.await));
        });
    }

    /// The `settled` record of acks could not be written: they stay acked and the
    /// record is retried.
    fn keep_unwritten_acks(&mut self, acks: impl IntoIterator<Item = (u64, u64)>) {
        let before = self.unwritten_acks.len();
        self.unwritten_acks.extend(acks);
        if before == 0 {
            tracing::warn!(
                queue = %self.name,
                acks = self.unwritten_acks.len(),
                "acks could not be written; they are kept (not delivered again) and retried"
            );
        }
        if self.ack_retry_due.is_none() {
            self.ack_retry_due = Some(Instant::now() + self.ack_retry_backoff);
        }
    }

    fn nack(
        &mut self,
        receipts: Vec<String>,
        options: NackOptions,
        reply: oneshot::Sender<SettleReport>,
    ) {
        let mut report = SettleReport::default();
        let mut effects = Vec::new();
        let now = now_ms();
        for receipt in receipts {
            match self
                .state
                .nack(&self.name, &receipt, options.requeue, options.delay_ms, now)
            {
                Ok(e) => {
                    report.settled += 1;
                    effects.extend(e);
                }
                Err(e) => report.failed.push((receipt, e)),
            }
        }
        let done = self.perform_tracked(effects);
        self.serve_waiters();
        self.reply_after(done, report, reply);
    }

    fn reply_after(
        &self,
        done: BoxFuture,
        mut report: SettleReport,
        reply: oneshot::Sender<SettleReport>,
    ) {
        self.tasks.spawn(async move {
            if let Err(e) = done.await {
                // Nothing of it is known durable: report every receipt as failed.
                report.failed.push((String::new(), e));
                report.settled = 0;
            }
            let _ = reply.send(report);
        });
    }

    fn send(&mut self, messages: Vec<Outgoing>, dedup: bool, reply: Option<SendReply>) {
        self.send_batch(vec![(messages, dedup, reply)]);
    }

    /// Admits one send: answers it at once when nothing of it is to be written
    /// (refused, all duplicates, or deferred), else returns what to write.
    #[allow(clippy::type_complexity)]
    fn admit_send(
        &mut self,
        mut messages: Vec<Outgoing>,
        dedup: bool,
        reply: Option<SendReply>,
        now: i64,
    ) -> Option<(Vec<Outgoing>, Vec<SendOutcome>, Option<SendReply>)> {
        // Dead letters and redrives arrive without an expiry: the queue's own
        // TTL applies to them as to any send.
        if let Some(ttl) = self.state.options().message_ttl_ms {
            let ttl = i64::try_from(ttl).unwrap_or(i64::MAX);
            for m in messages.iter_mut().filter(|m| m.meta.expires_at_ms == 0) {
                m.meta.expires_at_ms = now.max(m.meta.not_before_ms).saturating_add(ttl);
            }
        }
        let items: Vec<(Option<&str>, u32)> = messages
            .iter()
            .map(|m| {
                (
                    Some(m.meta.id.as_str()).filter(|_| dedup),
                    m.body.len() as u32,
                )
            })
            .collect();
        let duplicate = match self.state.admit(&self.name, &items, now) {
            Ok(Admission::Admitted(d)) => d,
            Ok(Admission::Wait) => {
                drop(items);
                self.deferred.push_back((messages, dedup, reply));
                return None;
            }
            Err(e) => {
                let mut answer = Err(e);
                if self.state.options().overflow == Overflow::RejectPublishDlx
                    && matches!(answer, Err(BrokerError::QueueFull { .. }))
                {
                    // Dead letters the queue refuses go on down the dead-letter
                    // chain, which answers for them: their sender must not retry.
                    if messages.iter().all(|m| m.meta.dead_letter.is_some()) {
                        answer = Ok(messages
                            .iter()
                            .map(|m| SendOutcome {
                                id: m.meta.id.clone(),
                                duplicate: false,
                            })
                            .collect());
                    }
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
        let duplicates = duplicate.iter().filter(|d| **d).count() as u64;
        if duplicates > 0 {
            // Counted durably (duplicates leave no message record); the answer
            // does not wait for it: the original is durable already.
            let done = self.persist(vec![StateOp::Duplicates(duplicates)]);
            self.tasks.spawn(done);
        }
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
    fn send_batch(&mut self, sends: Vec<(Vec<Outgoing>, bool, Option<SendReply>)>) {
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
        let log = self.log.clone();
        let events = self.internal_tx.clone();
        let queue = self.name.clone();
        // The messages are taken in (and may be delivered) once written; each send is
        // answered once they are durable (decision 0005).
        let (written, durable) = log.submit_batch_staged(&records);
        // Sends are taken in in the order they were appended: each task reports after
        // the one before it (tasks may run in any order, and a channel's publishes
        // must reach the queue in order).
        let (reported, next_may_report) = oneshot::channel::<()>();
        let turn = self.send_order.replace(next_may_report);
        self.tasks.spawn(async move {
            let result = written.await;
            if let Some(turn) = turn {
                let _ = turn.await;
            }
            let last = parts.len() - 1;
            let mut answers = Vec::new();
            let mut next = result.as_ref().map_or(0, |a| a.first.0);
            for (i, (kept, outcomes, reply)) in parts.into_iter().enumerate() {
                // The append is deregistered with the last part, once every part
                // before it was handled (the channel keeps order).
                let low = (i == last).then_some(low);
                match &result {
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
                            error: BrokerError::storage(queue.clone(), source.clone()),
                            reply,
                        });
                    }
                }
            }
            drop(reported);
            let landed = result.as_ref().map(|a| a.first.0..next);
            if answers.is_empty() && !keeps_ids {
                return;
            }
            let synced = durable
                .await
                .map_err(|source| BrokerError::storage(queue.clone(), source));
            if keeps_ids && let Ok(range) = landed {
                let _ = events.send(if synced.is_ok() {
                    Internal::Synced { below: range.end }
                } else {
                    Internal::SyncFailed {
                        from: range.start,
                        to: range.end,
                    }
                });
            }
            for (reply, outcomes) in answers {
                let _ = reply.send(synced.clone().map(|_| outcomes));
            }
        });
    }

    /// Takes in shared messages (already durable in the shared log): admits them
    /// (de-duplication, `reject-publish`), holds the admitted ones and records the
    /// declined ones so replay leaves them out. Gives the arrival back when one of
    /// its ids is still being written by an earlier send.
    fn arrive(&mut self, arrival: Arrival, reply: ArriveReply) -> Option<(Arrival, ArriveReply)> {
        let now = now_ms();
        let batch = arrival.batch.clone();
        // Arrivals come in shared-log order, so one below what the queue has seen
        // was seen already: by the replay of an actor restarted after a panic (it
        // scans the shared log to its end), while the arrival waited in the channel.
        // The shared log is appended a batch at a time, so a batch is in the replay
        // whole or not at all.
        if let Some(last) = arrival.positions.last()
            && batch.keys[*last as usize] < self.state.next_shared()
        {
            let _ = reply.send(Ok(vec![false; arrival.positions.len()]));
            return None;
        }
        let dedup = self.state.options().dedup_window_ms.is_some();
        let at = |p: &u32| *p as usize;
        let items: Vec<(Option<&str>, u32)> = arrival
            .positions
            .iter()
            .map(|p| {
                let meta = &batch.metas[at(p)];
                (
                    Some(meta.id.as_str()).filter(|id| dedup && !id.is_empty()),
                    batch.sizes[at(p)],
                )
            })
            .collect();
        let (Some(first), Some(last)) = (arrival.positions.first(), arrival.positions.last())
        else {
            let _ = reply.send(Ok(Vec::new()));
            return None;
        };
        let (first, last) = (batch.keys[at(first)], batch.keys[at(last)]);
        let mark = self.log.next_offset().0;
        let admission = self.state.admit(&self.name, &items, now);
        drop(items);
        let duplicate = match admission {
            Ok(Admission::Wait) => return Some((arrival, reply)),
            Ok(Admission::Admitted(duplicate)) => duplicate,
            Err(e) => {
                // Refused whole (`reject-publish`): the shared record names this
                // queue all the same, so the refusal is recorded.
                self.state.arrived(first, last, 0, mark);
                let keys: Vec<u64> = arrival
                    .positions
                    .iter()
                    .map(|p| batch.keys[at(p)])
                    .collect();
                if matches!(e, BrokerError::QueueFull { .. }) {
                    self.dead_letter_refused_shared(&batch, &arrival.positions);
                }
                let done = self.persist(vec![StateOp::Declined(keys)]);
                self.tasks.spawn(async move {
                    let _ = reply.send(match done.await {
                        Ok(()) => Err(e),
                        Err(write) => Err(write),
                    });
                });
                return None;
            }
        };
        let max_priority = self.state.options().max_priority;
        let queue_ttl = self.state.options().message_ttl_ms;
        let mut entries = Vec::with_capacity(arrival.positions.len());
        let mut ids = Vec::new();
        let mut declined = Vec::new();
        for (p, dup) in arrival.positions.iter().zip(&duplicate) {
            let (key, meta) = (batch.keys[at(p)], &batch.metas[at(p)]);
            if *dup {
                declined.push(key);
                continue;
            }
            let mut entry = entry_of(key, meta, batch.sizes[at(p)]);
            entry.priority = entry.priority.min(max_priority);
            entry.enqueued_at = batch.published_ms;
            entry.expires_at = shared_expiry(
                meta.expires_at_ms,
                meta.not_before_ms,
                batch.published_ms,
                queue_ttl,
            );
            entries.push((entry, meta.not_before_ms));
            if dedup {
                ids.push((meta.id.as_str(), key));
            }
        }
        self.state.arrived(first, last, entries.len() as u64, mark);
        self.state.confirm_ids(ids);
        let effects = self.state.commit(entries, true, now);
        self.perform(effects);
        let mut ops = Vec::new();
        if !declined.is_empty() {
            ops.push(StateOp::Duplicates(declined.len() as u64));
            ops.push(StateOp::Declined(declined));
        }
        if ops.is_empty() {
            let _ = reply.send(Ok(duplicate));
        } else {
            let done = self.persist(ops);
            self.tasks.spawn(async move {
                let _ = reply.send(done.await.map(|()| duplicate));
            });
        }
        self.serve_waiters();
        None
    }

    fn receive(&mut self, request: ReceiveRequest, reply: oneshot::Sender<Result<Vec<Delivery>>>) {
        let visibility_ms = request
            .visibility_timeout_ms
            .unwrap_or(self.state.options().visibility_timeout_ms);
        let max = request.max as usize;
        if self.waiters.is_empty() && self.state.has_ready() {
            let reply = self.lease_and_deliver(max, visibility_ms, reply);
            match reply {
                None => (),
                Some(reply) if request.wait_ms == 0 => {
                    let _ = reply.send(Ok(Vec::new()));
                }
                Some(reply) => self.wait(max, visibility_ms, request.wait_ms, reply),
            }
        } else if request.wait_ms == 0 {
            let _ = reply.send(Ok(Vec::new()));
        } else {
            self.wait(max, visibility_ms, request.wait_ms, reply);
        }
    }

    fn wait(
        &mut self,
        max: usize,
        visibility_ms: u64,
        wait_ms: u64,
        reply: oneshot::Sender<Result<Vec<Delivery>>>,
    ) {
        self.waiters.push_back(Waiter {
            max,
            visibility_ms,
            deadline: instant_in(wait_ms),
            reply,
        });
    }

    /// Leases up to `max` and starts their delivery; gives the reply back if nothing
    /// could be leased.
    fn lease_and_deliver(
        &mut self,
        max: usize,
        visibility_ms: u64,
        reply: oneshot::Sender<Result<Vec<Delivery>>>,
    ) -> Option<oneshot::Sender<Result<Vec<Delivery>>>> {
        let (leased, effects) = self.state.lease(max, visibility_ms, now_ms());
        let mut others = Vec::new();
        for effect in effects {
            match effect {
                // Delivered before its record is written (decision 0005).
                Effect::Persist(StateOp::Delivered(items)) => {
                    self.unrecorded.extend(items);
                    self.record_due
                        .get_or_insert_with(|| Instant::now() + DELIVERY_RECORD_DELAY);
                }
                other => others.push(other),
            }
        }
        self.perform(others);
        if leased.is_empty() {
            return Some(reply);
        }
        // Bodies written lately come from memory; the others are read.
        let mut found: Vec<Option<(MessageMeta, Record)>> = leased
            .iter()
            .map(|(entry, _)| self.fresh.take(entry.offset))
            .collect();
        let events = self.internal_tx.clone();
        if found.iter().all(Option::is_some) {
            if reply.send(Ok(deliveries(found, &leased))).is_err() {
                let _ = events.send(release(&leased));
            }
            return None;
        }
        let log = self.log.clone();
        let bodies = self.bodies.clone();
        let queue = self.name.clone();
        let missing: Vec<Entry> = leased
            .iter()
            .zip(&found)
            .filter(|(_, f)| f.is_none())
            .map(|((e, _), _)| *e)
            .collect();
        self.tasks.spawn(async move {
            let result = read_entries(&log, &bodies, &queue, &missing)
                .await
                .map(|records| {
                    let mut records = records.into_iter();
                    for slot in found.iter_mut().filter(|f| f.is_none()) {
                        *slot = records.next();
                    }
                    deliveries(found, &leased)
                });
            let failed = result.is_err();
            if reply.send(result).is_err() || failed {
                let _ = events.send(release(&leased));
            }
        });
        None
    }

    fn serve_waiters(&mut self) {
        while self.state.has_ready() {
            let Some(waiter) = self.waiters.pop_front() else {
                break;
            };
            if waiter.reply.is_closed() {
                continue;
            }
            if let Some(reply) =
                self.lease_and_deliver(waiter.max, waiter.visibility_ms, waiter.reply)
            {
                // Everything ready was parked or expired: keep waiting.
                self.waiters.push_front(Waiter { reply, ..waiter });
                break;
            }
        }
    }

    fn on_internal(&mut self, event: Internal) {
        match event {
            Internal::Committed {
                low,
                range,
                messages,
                entries,
            } => {
                let delta = Totals {
                    sent: range.1 - range.0,
                    ..Totals::default()
                };
                self.counters.landed(range.0, range.1, delta);
                if let Some(low) = low {
                    self.append_landed(low, None, Totals::default());
                }
                self.state.confirm_ids(
                    messages
                        .iter()
                        .map(|m| m.meta.id.as_str())
                        .zip(range.0..range.1),
                );
                for (offset, message) in (range.0..range.1).zip(messages) {
                    self.fresh.insert(offset, message);
                }
                let effects = self.state.commit(entries, true, now_ms());
                self.perform(effects);
                self.retry_deferred();
                self.serve_waiters();
            }
            Internal::SendFailed {
                low,
                ids,
                count,
                bytes,
                error,
                reply,
            } => {
                if let Some(low) = low {
                    self.append_landed(low, None, Totals::default());
                }
                let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
                self.state.cancel(&ids, count, bytes);
                if let Some(reply) = reply {
                    let _ = reply.send(Err(error));
                }
                self.retry_deferred();
            }
            Internal::Landed { low, range, delta } => self.append_landed(low, range, delta),
            Internal::Acked { acks, ok } => {
                if ok {
                    let offsets: Vec<u64> = acks.iter().map(|(offset, _)| *offset).collect();
                    self.state.finish_settle(&offsets);
                } else {
                    self.keep_unwritten_acks(acks);
                }
            }
            Internal::AcksRetried(result) => self.acks_retried(&result),
            Internal::CheckpointLanded(chunks) => self.checkpoint_landed(chunks),
            Internal::Synced { below } => {
                self.state.synced_below(below);
                self.retry_deferred();
            }
            Internal::SyncFailed { from, to } => self.sync_failed(from, to),
            Internal::Release(leases) => {
                for (offset, lease_id) in leases {
                    self.state.release(offset, lease_id);
                }
                self.serve_waiters();
            }
            Internal::Transit {
                offsets,
                reason,
                expired,
                ok,
                done,
            } => self.on_transit(&offsets, reason, &expired, ok, done),
            Internal::Moved { low, old, new } => {
                let range = new
                    .first()
                    .zip(new.last())
                    .map(|(a, b)| (a.0.offset, b.0.offset + 1));
                self.append_landed(low, range, Totals::default());
                let op = self.state.finish_move(&old, new, now_ms());
                let persisted = self.persist(vec![op]);
                let events = self.internal_tx.clone();
                self.tasks.spawn(async move {
                    let _ = persisted.await;
                    let _ = events.send(Internal::HousekeepingDone);
                });
            }
            Internal::MoveFailed { low, moved } => {
                self.append_landed(low, None, Totals::default());
                self.state.abort_move(&moved);
                self.housekeeping_busy = false;
            }
            Internal::HousekeepingDone => self.housekeeping_busy = false,
        }
    }

    /// The retry of the acks in `retrying_acks` landed (or failed: they wait for
    /// the next one, later each time).
    fn acks_retried(&mut self, result: &Result<()>) {
        let acks = std::mem::take(&mut self.retrying_acks);
        let waiters = std::mem::take(&mut self.ack_retry_waiters);
        if result.is_ok() {
            let offsets: Vec<u64> = acks.keys().copied().collect();
            self.state.finish_settle(&offsets);
            tracing::info!(queue = %self.name, acks = offsets.len(), "acks that could not be written before are durable now");
            self.ack_retry_backoff = ACK_RETRY_FIRST;
            if !self.unwritten_acks.is_empty() && self.ack_retry_due.is_none() {
                self.ack_retry_due = Some(Instant::now() + ACK_RETRY_FIRST);
            }
        } else {
            self.ack_retry_backoff = (self.ack_retry_backoff * 2).min(ACK_RETRY_MAX);
            self.unwritten_acks.extend(acks);
            self.ack_retry_due = Some(Instant::now() + self.ack_retry_backoff);
        }
        for waiter in waiters {
            let _ = waiter.send(result.clone());
        }
    }

    /// Messages copied to the dead-letter queue or redriven (`ok`), or not.
    fn on_transit(
        &mut self,
        offsets: &[u64],
        reason: SettleReason,
        expired: &[u64],
        ok: bool,
        done: Option<oneshot::Sender<()>>,
    ) {
        if ok && offsets.is_empty() {
            if let Some(done) = done {
                let _ = done.send(());
            }
        } else if ok {
            let (expired, others): (Vec<u64>, Vec<u64>) =
                offsets.iter().partition(|o| expired.contains(o));
            let mut ops = Vec::new();
            for (offsets, reason) in [
                (others, reason),
                (expired, SettleReason::ExpiredDeadLettered),
            ] {
                if !offsets.is_empty() {
                    ops.push(self.state.finish_transit(&offsets, reason));
                }
            }
            let persisted = self.persist(ops);
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
    fn dead_letter(
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
            let expired = items
                .iter()
                .filter(|(_, r)| *r == DeadLetterReason::Expired)
                .map(|(e, _)| e.offset)
                .collect();
            let _ = events.send(Internal::Transit {
                offsets,
                reason: SettleReason::DeadLettered,
                expired,
                ok: result.is_ok(),
                done: Some(done_tx),
            });
        });
        Box::pin(async move {
            let _ = done_rx.await;
        })
    }

    /// [`Actor::dead_letter_refused`] for the shared messages of `batch` at
    /// `positions`, read from the shared log (with `reject-publish-dlx`).
    fn dead_letter_refused_shared(&mut self, batch: &SharedBatch, positions: &[u32]) {
        if self.state.options().overflow != Overflow::RejectPublishDlx {
            return;
        }
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

    /// Dead-letters messages this queue refused (`reject-publish-dlx`) with reason
    /// `maxlen`, as RabbitMQ does: at most once, nothing of them is kept here.
    fn dead_letter_refused(&mut self, refused: Vec<(MessageMeta, Vec<Header>, Bytes)>) {
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

    #[allow(clippy::needless_pass_by_value)]
    fn redrive(&mut self, origin: Option<String>, max: usize, reply: oneshot::Sender<Result<u64>>) {
        let entries = self
            .state
            .take_for_transit(max, origin.as_deref().map(|o| key_hash(o) as u32));
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
                expired: Vec::new(),
                ok: result.is_ok(),
                done: Some(done_tx),
            });
            let _ = done_rx.await;
            let _ = reply.send(result);
        });
    }

    /// Runs the sends and arrivals that waited for an earlier send of one of their
    /// ids.
    /// A checkpoint's records landed: its dedup ids are remembered there now.
    fn checkpoint_landed(&mut self, chunks: Vec<(u64, Vec<(i64, String)>)>) {
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
    fn sync_failed(&mut self, from: u64, to: u64) {
        let forgotten = self.state.sync_failed(from, to);
        tracing::debug!(
            queue = self.name,
            forgotten,
            "a send's sync failed: retries of its ids are new sends"
        );
        self.retry_deferred();
    }

    fn retry_deferred(&mut self) {
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

    /// Trims the log below the lowest held message, and moves the few delayed
    /// messages that would otherwise pin old segments.
    fn housekeeping(&mut self) {
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

    fn start_move(&mut self, moved: Vec<(Entry, i64)>) {
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
}

/// Answers a command that arrived while the queue was stopping.
fn refuse(command: Command, queue: &str) {
    refuse_with(command, &|| BrokerError::Unavailable {
        reason: format!("queue '{queue}' is shutting down"),
    });
}

/// Answers a command with `error` (queries with nothing: no stats, no shared
/// messages held).
pub(crate) fn refuse_with(command: Command, error: &dyn Fn() -> BrokerError) {
    match command {
        Command::Send { reply, .. } => drop(reply.send(Err(error()))),
        Command::Arrive { reply, .. } => drop(reply.send(Err(error()))),
        Command::Receive { reply, .. } | Command::Peek { reply, .. } => {
            drop(reply.send(Err(error())));
        }
        Command::Ack { reply, .. }
        | Command::Nack { reply, .. }
        | Command::Extend { reply, .. } => {
            drop(reply.send(SettleReport {
                settled: 0,
                failed: vec![(String::new(), error())],
            }));
        }
        Command::Redrive { reply, .. } | Command::Purge { reply } => drop(reply.send(Err(error()))),
        Command::Stats { reply } => drop(reply.send(QueueStats::default())),
        Command::BodyFloor { reply } => drop(reply.send(None)),
        Command::Stop { reply } => drop(reply.send(())),
        #[cfg(test)]
        Command::Panic => {}
    }
}

/// Reads the records at `offsets` of `log` into a map, one read per run of
/// consecutive offsets.
async fn read_offsets<L: MessageLog>(
    log: &L,
    queue: &str,
    offsets: &mut [u64],
) -> Result<FxHashMap<u64, Record>> {
    offsets.sort_unstable();
    let mut found: FxHashMap<u64, Record> =
        FxHashMap::with_capacity_and_hasher(offsets.len(), FxBuildHasher);
    let mut i = 0;
    while i < offsets.len() {
        let start = offsets[i];
        let mut j = i + 1;
        while j < offsets.len() && offsets[j] <= offsets[j - 1] + 1 {
            j += 1;
        }
        let records = log
            .read_from(
                Offset(start),
                ReadLimits {
                    max_records: usize::try_from(offsets[j - 1] - start + 1).unwrap_or(usize::MAX),
                    max_bytes: usize::MAX,
                },
            )
            .await
            .map_err(|source| BrokerError::storage(queue.to_owned(), source))?;
        for rec in records {
            found.insert(rec.offset.0, rec);
        }
        i = j;
    }
    Ok(found)
}

/// Reads the messages of `entries` (in their order): own ones from the queue's log,
/// shared ones from the shared log.
async fn read_entries<L: MessageLog>(
    log: &L,
    bodies: &L,
    queue: &str,
    entries: &[Entry],
) -> Result<Vec<(MessageMeta, Record)>> {
    let (mut shared, mut own): (Vec<u64>, Vec<u64>) = entries
        .iter()
        .map(|e| e.offset)
        .partition(|k| is_shared(*k));
    for key in &mut shared {
        *key &= !SHARED;
    }
    let mut found = read_offsets(log, queue, &mut own).await?;
    let mut found_shared = if shared.is_empty() {
        FxHashMap::default()
    } else {
        read_offsets(bodies, queue, &mut shared).await?
    };
    let missing = |what: &str, at: u64| {
        BrokerError::internal(format!("queue '{queue}': {what} at offset {at} is missing"))
    };
    let mut out = Vec::with_capacity(entries.len());
    for e in entries {
        let (rec, what) = if is_shared(e.offset) {
            let at = e.offset & !SHARED;
            (
                found_shared
                    .remove(&at)
                    .ok_or_else(|| missing("shared message", at))?,
                "shared message",
            )
        } else {
            (
                found
                    .remove(&e.offset)
                    .ok_or_else(|| missing("message", e.offset))?,
                "message",
            )
        };
        let meta = match record::decode(rec.key.as_deref(), &rec.body) {
            Ok(Decoded::Message(meta)) if !is_shared(e.offset) => meta,
            Ok(Decoded::Shared(_, mut meta)) if is_shared(e.offset) => {
                // Each queue has its own expiry, priority cap and first enqueue time
                // for it.
                meta.expires_at_ms = e.expires_at;
                meta.enqueued_at_ms = e.enqueued_at;
                meta.priority = e.priority;
                meta
            }
            Ok(_) => {
                return Err(BrokerError::internal(format!(
                    "queue '{queue}': the record at key {:#x} is not a {what} record",
                    e.offset
                )));
            }
            Err(err) => {
                return Err(BrokerError::internal(format!(
                    "queue '{queue}': the {what} at key {:#x} does not decode: {}",
                    e.offset, err.0
                )));
            }
        };
        out.push((meta, rec));
    }
    Ok(out)
}

/// The deliveries of `leased` messages, whose records are in `found`.
fn deliveries(found: Vec<Option<(MessageMeta, Record)>>, leased: &[(Entry, u64)]) -> Vec<Delivery> {
    found
        .into_iter()
        .zip(leased)
        .filter_map(|(message, (entry, lease_id))| {
            let (meta, rec) = message?;
            Some(delivery(
                Some(format_receipt(entry.offset, *lease_id)),
                meta,
                rec,
                entry.attempts,
            ))
        })
        .collect()
}

/// Gives back leases whose deliveries did not reach their receiver.
fn release(leased: &[(Entry, u64)]) -> Internal {
    Internal::Release(leased.iter().map(|(e, id)| (e.offset, *id)).collect())
}

fn delivery(
    receipt: Option<String>,
    meta: MessageMeta,
    rec: Record,
    delivery_count: u32,
) -> Delivery {
    let mut properties = None;
    let headers = rec
        .headers
        .into_iter()
        .filter_map(|h| {
            if h.name.as_ref() == crate::queue::record::PROPERTIES_HEADER {
                properties = Some(h.value);
                return None;
            }
            if h.name.starts_with(b"\0") {
                // The broker's own (the routing key): not the user's headers.
                return None;
            }
            Some((
                String::from_utf8_lossy(&h.name).into_owned(),
                String::from_utf8_lossy(&h.value).into_owned(),
            ))
        })
        .collect();
    Delivery {
        receipt,
        id: meta.id,
        body: rec.body,
        headers,
        priority: meta.priority,
        group: meta.group,
        delivery_count,
        enqueued_at_ms: meta.enqueued_at_ms,
        dead_letter: meta.dead_letter,
        properties,
    }
}
