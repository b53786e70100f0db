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
//!
//! This file holds the actor's loop (commands, internal reports, timers) and its
//! appends of state records. The rest, by what it does: `sending` (taking messages
//! in), `delivering` (receives, leases), `settle` (ack, nack, extend),
//! `dead_letters` (dead letters and redrives), `upkeep` (expiry, trims, moves,
//! checkpoints) and `reads` (reading messages back). What the broker sends it is in
//! [`super::command`], the cache of fresh bodies in [`super::fresh`].

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Weak;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::either::Either;
use tokio_util::task::TaskTracker;
use weir_log::{LogStore, MessageLog};

use crate::api::{Delivery, SendOutcome};
use crate::clock::now_ms;
use crate::error::{BrokerError, Result};
use crate::queue::command::{Arrival, ArriveReply, Command, Commands, SharedBatch, refuse};
use crate::queue::counters::Counters;
use crate::queue::entry::Entry;
use crate::queue::fresh::Fresh;
use crate::queue::host::Host;
use crate::queue::record::{Outgoing, SHARED, SettleReason, StateOp, Totals};
use crate::queue::replay::ReplayReport;
use crate::queue::state::{Effect, Pick, QueueState, key_hash};

mod dead_letters;
mod delivering;
mod pipeline;
mod reads;
mod sending;
mod settle;
mod upkeep;

use reads::{deliveries, peeked, read_entries, release};
use sending::entry_of_outgoing;

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
    /// The `settled` record of these acks landed (`ok`) or failed (the state keeps
    /// the acks and the record is written again: see `QueueState::retry_acks`).
    Acked {
        acks: Vec<u64>,
        ok: bool,
    },
    /// The rewrite of the acks whose record failed landed (`Ok`) or failed.
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

/// How often the actor asks the state what housekeeping is to do (trims, moves).
const HOUSEKEEPING_EVERY: Duration = Duration::from_millis(500);

/// `ms` from now, clamped to [`crate::api::MAX_DURATION_MS`] so that a
/// far-off time (a client's wait, a damaged record's due time) cannot overflow
/// the clock.
fn instant_in(ms: u64) -> Instant {
    Instant::now() + Duration::from_millis(ms.min(crate::api::MAX_DURATION_MS))
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
    /// When the deferred `Delivered` records (`Effect::PersistWithNextAppend`) are
    /// written on their own, if no append took them along before.
    record_due: Option<Instant>,
    fresh: Fresh,
    /// The send pipeline (see `pipeline`), started by the first send.
    send_pipeline: Option<mpsc::UnboundedSender<pipeline::StagedSend>>,
    /// Acks that joined the rewrite of ack records in flight (the state keeps the
    /// acks whose record failed: see `state/acks.rs`), answered when it lands, so
    /// an HTTP client told 507 can ask again.
    ack_retry_waiters: Vec<oneshot::Sender<Result<()>>>,
    /// When acks whose record failed are next written again, and the wait after a
    /// failed rewrite.
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
            record_due: None,
            fresh: Fresh::default(),
            send_pipeline: None,
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
        if !self.state.ack_retry_in_flight() {
            // A last try: what is not durable now comes back at the next start.
            self.retry_acks();
        }
        // The pipeline ends once it has answered what it holds.
        self.send_pipeline = None;
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
        if self.ack_retry_due.is_some_and(|due| due <= instant) && !self.state.ack_retry_in_flight()
        {
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

    /// Starts an append of state ops, with the state's deferred `Delivered` records
    /// in front; the future resolves when it is durable.
    fn persist(&mut self, ops: Vec<StateOp>) -> BoxFuture {
        self.append_ops(ops, true)
    }

    /// As `persist`; `synced: false` resolves once the records are written (they are
    /// synced with the log's next synced append, or within 100 ms).
    fn append_ops(&mut self, mut ops: Vec<StateOp>, synced: bool) -> BoxFuture {
        if let Some(delivered) = self.state.take_deferred() {
            ops.insert(0, delivered);
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
    /// (persisted, synced or only written as `synced` says, or copied to the
    /// dead-letter queue). Every call appends, if only the deferred records.
    fn perform_tracked(&mut self, effects: Vec<Effect>, synced: bool) -> BoxFuture {
        let mut ops = Vec::new();
        let mut copies = Vec::new();
        for effect in effects {
            match effect {
                Effect::Persist(op) => ops.push(op),
                Effect::PersistWithNextAppend => self.defer_records(),
                Effect::DeadLetter(items) => copies.push(self.dead_letter(items)),
            }
        }
        let persisted = self.append_ops(ops, synced);
        Box::pin(async move {
            let result = persisted.await;
            for copy in copies {
                let () = copy.await;
            }
            result
        })
    }

    /// The state holds records back for the next append: make sure they are
    /// written within `DELIVERY_RECORD_DELAY` all the same.
    fn defer_records(&mut self) {
        self.record_due
            .get_or_insert_with(|| Instant::now() + DELIVERY_RECORD_DELAY);
    }

    /// Performs effects in the background. Records held back for the next append
    /// do not start one.
    fn perform(&mut self, effects: Vec<Effect>) {
        if effects.iter().all(|e| *e == Effect::PersistWithNextAppend) {
            if !effects.is_empty() {
                self.defer_records();
            }
            return;
        }
        let done = self.perform_tracked(effects, true);
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
                            .map(|((meta, rec), entry)| peeked(meta, rec, entry))
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
                                    out.push(peeked(meta, rec, entry));
                                }
                            }
                            if out.is_empty() { Err(error) } else { Ok(out) }
                        }
                    };
                    let _ = reply.send(result);
                });
            }
            Command::Redrive {
                origin,
                at,
                max,
                reply,
            } => self.redrive(&Pick::of(origin.as_deref(), at), max, reply),
            Command::Remove { at, reply } => self.remove(at, reply),
            Command::Purge { reply } => {
                let (count, effects) = self.state.purge();
                let done = self.perform_tracked(effects, true);
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
                let unwritten = self.state.unwritten_acks();
                self.state.acks_written(&acks, ok);
                if !ok {
                    self.acks_unwritten(unwritten);
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
                ok,
                done,
            } => self.on_transit(&offsets, reason, ok, done),
            Internal::Moved { low, old, new } => {
                let range = new
                    .first()
                    .zip(new.last())
                    .map(|(a, b)| (a.0.offset, b.0.offset + 1));
                self.append_landed(low, range, Totals::default());
                let effects = self.state.finish_move(&old, new, now_ms());
                let persisted = self.perform_tracked(effects, true);
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
}
