//! The broker: a registry of queue actors under a data directory, and the one API
//! ([`Broker`]) that front ends call.
//!
//! Layout of the data directory:
//!
//! ```text
//! <data_dir>/LOCK                    held (flock) while a broker runs
//! <data_dir>/queues/@<id>/name      the queue's name, its exact UTF-8 bytes
//! <data_dir>/queues/@<id>/id        the queue's number, never reused (decimal)
//! <data_dir>/queues/@<id>/queue.json   the queue's options (written via .tmp + rename)
//! <data_dir>/queues/@<id>/log/      the queue's weir-log log
//! <data_dir>/queues/<name>/          a queue from before names were free (no `name`
//!                                    file; its name, in `[A-Za-z0-9_.:-]`, is the
//!                                    directory's), opened where it is
//! <data_dir>/queues/.trash-*         a deleted queue on its way out
//! <data_dir>/bodies/                 the shared log (messages published to several queues)
//! <data_dir>/meta/routing.json       durable exchanges and bindings
//! <data_dir>/meta/queue-ids.json     the next queue number
//! ```

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use tokio::sync::{Mutex, mpsc, oneshot};
use weir_log::{FileStore, LogStore, MessageLog};

use crate::access::Access;
use crate::api::{
    Declared, Delivery, NackOptions, QueueInfo, QueueOptions, ReceiveRequest, SendMessage,
    SendOutcome, SettleReport, check_duration, validate_name,
};
use crate::clock::now_ms;
use crate::config::{BrokerConfig, Limits};
use crate::error::{BrokerError, Kind, Limit, Result};
use crate::files::{io_error, write_durably};
use crate::handle::{QueueRef, UseGuard};
use crate::prepare::{check_receipts, prepare};
use crate::queue::actor::Actor;
use crate::queue::command::Command;
use crate::queue::record::Outgoing;
use crate::queue::replay::Arrivals;
use crate::routing::{DestinationType, Router};
use crate::shared::{Dispatch, Writes};
use crate::supervisor::{Reopen, Supervised};

pub(crate) struct Inner<S: LogStore> {
    pub(crate) config: BrokerConfig,
    pub(crate) queues: RwLock<HashMap<String, QueueRef>>,
    /// Exchanges and bindings. A std lock: held only for in-memory lookups and
    /// changes, never across an `.await`.
    pub(crate) router: RwLock<Router>,
    /// Serialises declarations and deletions (they touch the file system). Never
    /// held while a queue stops: a stopping queue may still need to declare its
    /// dead-letter queue.
    pub(crate) admin: Mutex<()>,
    /// The shared log: messages published to several queues, stored once with
    /// their destinations (`<data_dir>/bodies/`, decision 0004).
    pub(crate) bodies: S::Log,
    /// Appends to the shared log whose messages are not in their queues yet: the
    /// shared log is never trimmed above them.
    pub(crate) body_writes: Writes,
    /// The shared log's dispatcher (see [`crate::shared`]).
    pub(crate) dispatch: mpsc::Sender<Dispatch>,
    /// The next queue number; `meta/queue-ids.json` holds it durably before any
    /// number below it is used.
    pub(crate) next_queue_id: std::sync::Mutex<u32>,
    /// Queues being deleted: gone from `queues`, files not yet removed.
    pub(crate) deleting: std::sync::Mutex<HashSet<String>>,
    /// Each queue's directory, by name: queue names are any UTF-8 and never
    /// become paths (see the module doc).
    pub(crate) dirs: std::sync::Mutex<HashMap<String, PathBuf>>,
    /// Set once shutdown starts: new requests get `unavailable`, nothing is
    /// declared any more.
    pub(crate) closing: AtomicBool,
    /// Streams by broker-wide name (see [`crate::stream`]).
    pub(crate) streams: RwLock<HashMap<String, Arc<crate::stream::StreamRef<S::Log>>>>,
    /// Resource alarms (see [`crate::alarms`]).
    pub(crate) alarms: tokio::sync::watch::Receiver<crate::alarms::Alarms>,
    /// What the alarm monitor last measured (see [`crate::metrics`]).
    pub(crate) usage: Arc<crate::alarms::Usage>,
    /// The front ends' connections, channels and consumers (see [`crate::front_ends`]).
    pub(crate) front_ends: Arc<crate::front_ends::FrontEnds>,
    /// The client connections open now (see [`crate::connections`]).
    pub(crate) connections: Arc<crate::connections::Connections>,
    /// Message counters since the start (see [`crate::traffic`]).
    pub(crate) traffic: crate::traffic::Traffic,
    /// Users, vhosts and permissions (see [`crate::access`]).
    pub(crate) access: Arc<Access>,
    /// Where the queues' and the shared log live: files (on the real file
    /// system, or a test's that can hold or fail syncs), or memory in tests.
    pub(crate) store: Arc<S>,
    pub(crate) _lock: File,
}

/// A running broker. Cheap to clone; every clone is the same broker.
///
/// Generic over where its logs live ([`LogStore`]): files by default; tests run the
/// same broker over [`weir_log::MemStore`].
pub struct Broker<S: LogStore = FileStore> {
    pub(crate) inner: Arc<Inner<S>>,
}

impl<S: LogStore> Clone for Broker<S> {
    fn clone(&self) -> Self {
        Broker {
            inner: self.inner.clone(),
        }
    }
}

/// What starting the broker found.
#[derive(Debug, Default)]
pub struct StartReport {
    /// Queues recovered.
    pub queues: usize,
    /// Durable exchanges recovered.
    pub exchanges: usize,
    /// Streams recovered.
    pub streams: usize,
    /// Messages held across them (ready, delayed, leased before the stop).
    pub messages: u64,
    /// Files the logs hold open once recovered (`weir_log::io::open_files`).
    pub open_files: u64,
    /// How long recovery took.
    pub elapsed: std::time::Duration,
}

impl<S: LogStore> Broker<S> {
    pub(crate) fn queue_exists(&self, name: &str) -> bool {
        crate::locks::read(&self.inner.queues).contains_key(name)
    }

    pub(crate) fn get(&self, name: &str) -> Result<QueueRef> {
        if self.inner.closing.load(Ordering::Acquire) {
            return Err(closing());
        }
        crate::locks::read(&self.inner.queues)
            .get(name)
            .cloned()
            .ok_or_else(|| not_found(name))
    }

    /// A queue's settings, without asking the queue (no wait).
    ///
    /// # Errors
    /// `NotFound`, or `Unavailable` while the broker shuts down.
    pub fn options(&self, name: &str) -> Result<Arc<QueueOptions>> {
        Ok(self.get(name)?.options)
    }

    /// Declares a queue: creates it, or confirms an identical one exists.
    pub async fn declare(&self, name: &str, options: QueueOptions) -> Result<Declared> {
        validate_name(name)?;
        options.validate(name)?;
        let _admin = self.inner.admin.lock().await;
        self.declare_locked(name, options).await
    }

    pub(crate) async fn declare_locked(
        &self,
        name: &str,
        options: QueueOptions,
    ) -> Result<Declared> {
        if self.inner.closing.load(Ordering::Acquire) {
            return Err(closing());
        }
        if crate::locks::lock(&self.inner.deleting).contains(name) {
            return Err(BrokerError::Unavailable {
                reason: format!(
                    "queue '{name}' is being deleted; declare it again once that is done"
                ),
            });
        }
        if let Ok(existing) = self.get(name) {
            existing.usage.touch();
            return match options.difference(&existing.options) {
                None => Ok(Declared::Existed),
                Some(difference) => Err(BrokerError::Conflict {
                    kind: Kind::Queue,
                    name: name.to_owned(),
                    difference,
                }),
            };
        }
        if self.stream_exists(name) {
            return Err(BrokerError::PreconditionFailed {
                reason: format!("'{name}' is a stream; a queue and a stream cannot share a name"),
            });
        }
        let count = self.queue_and_stream_count();
        let limit = self.inner.config.limits.max_queues;
        let extra = u64::from(
            options
                .dead_letter_queue
                .as_ref()
                .is_some_and(|d| self.get(d).is_err()),
        );
        if count + 1 + extra > limit {
            return Err(BrokerError::LimitExceeded {
                what: Limit::Queues,
                limit,
            });
        }
        if let Some(dlq) = &options.dead_letter_queue
            && self.get(dlq).is_err()
        {
            Box::pin(self.declare_locked(dlq, QueueOptions::default())).await?;
        }
        let id = self.assign_queue_id(name)?;
        let dir = self.queue_dir(name)?;
        let json = serde_json::to_vec_pretty(&options)
            .map_err(|e| BrokerError::internal(e.to_string()))?;
        let path = dir.join("queue.json");
        let opened = match write_durably(&path, &json).map_err(|e| io_error("write", &path, e)) {
            Ok(()) => self.open_queue(name, options, id).await,
            Err(e) => Err(e),
        };
        let opened = match opened {
            Ok(opened) => opened,
            Err(e) => {
                // Nothing of a queue that could not be opened may stay: the next
                // start would try to recover it (and could fail the same way).
                if let Err(cleanup) = self.remove_files(name) {
                    tracing::warn!(queue = name, error = %cleanup, "could not remove the files of a queue that failed to open");
                }
                return Err(e);
            }
        };
        self.start_queue(opened, Arrivals::default());
        tracing::info!(queue = name, "declared queue");
        Ok(Declared::Created)
    }

    /// Deletes a queue and everything in it.
    pub async fn delete(&self, name: &str) -> Result<()> {
        validate_name(name)?;
        let queue = {
            let _admin = self.inner.admin.lock().await;
            if self.inner.closing.load(Ordering::Acquire) {
                return Err(closing());
            }
            if !self.queue_exists(name) {
                return Err(not_found(name));
            }
            // Its bindings go first (and durably); then the queue.
            self.change_routing(|r| {
                r.remove_destination(DestinationType::Queue, name);
                Ok(())
            })?;
            let queue = crate::locks::write(&self.inner.queues)
                .remove(name)
                .ok_or_else(|| not_found(name))?;
            crate::locks::lock(&self.inner.deleting).insert(name.to_owned());
            queue
        };
        // Outside the admin lock: the queue's in-flight dead letters may declare its
        // dead-letter queue while it stops.
        stop_queue(&queue).await;
        let removed = self.remove_files(name);
        crate::locks::lock(&self.inner.deleting).remove(name);
        removed?;
        tracing::info!(queue = name, "deleted queue");
        Ok(())
    }

    fn remove_files(&self, name: &str) -> Result<()> {
        let dir = self.queue_dir(name)?;
        let trash = self.inner.config.data_dir.join("queues").join(format!(
            ".trash-{}-{}",
            dir.file_name().unwrap_or_default().to_string_lossy(),
            now_ms()
        ));
        std::fs::rename(&dir, &trash).map_err(|e| io_error("rename", &dir, e))?;
        // The rename must be durable before the delete is answered: a queue that
        // came back after a power cut would be a deleted queue with its messages.
        let queues = self.inner.config.data_dir.join("queues");
        File::open(&queues)
            .and_then(|parent| parent.sync_all())
            .map_err(|e| io_error("sync", &queues, e))?;
        crate::locks::lock(&self.inner.dirs).remove(name);
        if let Err(e) = std::fs::remove_dir_all(&trash) {
            tracing::warn!(path = %trash.display(), error = %e, "could not remove a deleted queue's files; they go at the next start");
        }
        Ok(())
    }

    pub(crate) async fn ask<T>(
        &self,
        name: &str,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T> {
        let queue = self.get(name)?;
        self.ask_queue(&queue, name, make).await
    }

    /// [`Broker::ask`] of a queue already looked up.
    async fn ask_queue<T>(
        &self,
        queue: &QueueRef,
        name: &str,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T> {
        let (reply, answer) = oneshot::channel();
        queue
            .commands
            .send(make(reply))
            .await
            .map_err(|_| gone(name))?;
        answer.await.map_err(|_| gone(name))
    }

    /// One queue's settings and stats.
    pub async fn info(&self, name: &str) -> Result<QueueInfo> {
        let queue = self.get(name)?;
        let stats = self
            .ask_queue(&queue, name, |reply| Command::Stats { reply })
            .await?;
        Ok(QueueInfo {
            name: name.to_owned(),
            options: (*queue.options).clone(),
            stats,
        })
    }

    /// Every queue, by name.
    pub async fn list(&self) -> Vec<QueueInfo> {
        self.list_where(|_| true).await
    }

    /// The queues whose names `keep` takes, by name.
    pub(crate) async fn list_where(&self, keep: impl Fn(&str) -> bool) -> Vec<QueueInfo> {
        let names: Vec<String> = {
            let queues = crate::locks::read(&self.inner.queues);
            let mut names: Vec<String> = queues.keys().filter(|n| keep(n)).cloned().collect();
            names.sort();
            names
        };
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            if let Ok(info) = self.info(&name).await {
                out.push(info);
            }
        }
        out
    }

    /// Sends messages; resolves once they are durable. Answers per message whether
    /// it was a duplicate.
    pub async fn send(&self, name: &str, messages: Vec<SendMessage>) -> Result<Vec<SendOutcome>> {
        let count = messages.len() as u64;
        let answer = self.send_queued(name, messages).await?;
        self.inner.traffic.published(count, 0, 0);
        answer.await.map_err(|_| gone(name))?
    }

    /// The first half of [`Broker::send`]: returns once the queue has the messages
    /// in its command queue (sends queued one after the other keep that order), with
    /// the receiver of the answer.
    pub(crate) async fn send_queued(
        &self,
        name: &str,
        messages: Vec<SendMessage>,
    ) -> Result<oneshot::Receiver<Result<Vec<SendOutcome>>>> {
        let limits = &self.inner.config.limits;
        if messages.is_empty() {
            return Err(BrokerError::invalid(
                "messages",
                "a send needs at least one message",
            ));
        }
        if messages.len() as u64 > limits.max_batch_messages {
            return Err(BrokerError::LimitExceeded {
                what: Limit::MessagesPerSend,
                limit: limits.max_batch_messages,
            });
        }
        let queue = self.get(name)?;
        let now = now_ms();
        let mut outgoing = Vec::with_capacity(messages.len());
        for (i, m) in messages.into_iter().enumerate() {
            outgoing.push(prepare(i, m, &queue.options, limits, now)?);
        }
        let (reply, answer) = oneshot::channel();
        queue
            .commands
            .send(Command::Send {
                messages: outgoing,
                dedup: true,
                reply,
            })
            .await
            .map_err(|_| gone(name))?;
        Ok(answer)
    }

    pub(crate) async fn send_prepared(
        &self,
        name: &str,
        messages: Vec<Outgoing>,
        dedup: bool,
    ) -> Result<Vec<SendOutcome>> {
        self.ask(name, |reply| Command::Send {
            messages,
            dedup,
            reply,
        })
        .await?
    }

    /// Leases up to `request.max` messages, waiting up to `request.wait_ms` for the
    /// first.
    pub async fn receive(&self, name: &str, request: ReceiveRequest) -> Result<Vec<Delivery>> {
        let limits = &self.inner.config.limits;
        if request.max == 0 || request.max > limits.max_receive {
            return Err(BrokerError::invalid(
                "max",
                format!("{} is outside 1..={}", request.max, limits.max_receive),
            ));
        }
        if request.wait_ms > limits.max_wait_ms {
            return Err(BrokerError::invalid(
                "wait_ms",
                format!(
                    "{} is over the limit of {}",
                    request.wait_ms, limits.max_wait_ms
                ),
            ));
        }
        if let Some(v) = request.visibility_timeout_ms {
            check_duration("visibility_timeout_ms", v, 1)?;
        }
        let queue = self.get(name)?;
        let _use = queue.usage.hold();
        self.ask_queue(&queue, name, |reply| Command::Receive { request, reply })
            .await?
    }

    /// Acks leased messages; answers once the acks are durable.
    pub async fn ack(&self, name: &str, receipts: Vec<String>) -> Result<SettleReport> {
        self.ack_with(name, receipts, true).await
    }

    /// Acks leased messages like [`Broker::ack`], but answers once the acks are
    /// written, before they are synced: they become durable with the queue's next
    /// synced write, within 100 ms, so a crash may bring those messages back (once
    /// more, as at-least-once delivery allows). For acks that nobody waits on, such
    /// as AMQP's `basic.ack`, so that each does not cost an `fdatasync`.
    pub async fn ack_unsynced(&self, name: &str, receipts: Vec<String>) -> Result<SettleReport> {
        self.ack_with(name, receipts, false).await
    }

    async fn ack_with(
        &self,
        name: &str,
        receipts: Vec<String>,
        synced: bool,
    ) -> Result<SettleReport> {
        check_receipts(&receipts)?;
        self.ask(name, |reply| Command::Ack {
            receipts,
            synced,
            reply,
        })
        .await
    }

    /// Nacks leased messages: requeue (after a delay) or dead-letter.
    pub async fn nack(
        &self,
        name: &str,
        receipts: Vec<String>,
        options: NackOptions,
    ) -> Result<SettleReport> {
        check_receipts(&receipts)?;
        if let Some(d) = options.delay_ms {
            check_duration("delay_ms", d, 0)?;
        }
        self.ask(name, |reply| Command::Nack {
            receipts,
            options,
            reply,
        })
        .await
    }

    /// Extends leases to `visibility_timeout_ms` from now.
    pub async fn extend(
        &self,
        name: &str,
        receipts: Vec<String>,
        visibility_timeout_ms: u64,
    ) -> Result<SettleReport> {
        check_receipts(&receipts)?;
        check_duration("visibility_timeout_ms", visibility_timeout_ms, 1)?;
        self.ask(name, |reply| Command::Extend {
            receipts,
            visibility_timeout_ms,
            reply,
        })
        .await
    }

    /// Removes every ready and delayed message; returns how many.
    pub async fn purge(&self, name: &str) -> Result<u64> {
        self.ask(name, |reply| Command::Purge { reply }).await?
    }

    /// The queue's dead-letter queue, or an error if it has none.
    fn dead_letter_queue_of(&self, name: &str) -> Result<String> {
        self.get(name)?
            .options
            .dead_letter_queue
            .clone()
            .ok_or_else(|| {
                BrokerError::invalid(
                    "dead_letter_queue",
                    format!("queue '{name}' has no dead-letter queue"),
                )
            })
    }

    /// Up to `max` messages dead-lettered from `name`, without leasing them.
    pub async fn peek_dead_letters(&self, name: &str, max: u32) -> Result<Vec<Delivery>> {
        let dlq = self.dead_letter_queue_of(name)?;
        self.peek(&dlq, Some(name.to_owned()), max).await
    }

    /// Up to `max` ready messages of `name` (only those dead-lettered from `origin`
    /// if given), without leasing them.
    pub async fn peek(
        &self,
        name: &str,
        origin: Option<String>,
        max: u32,
    ) -> Result<Vec<Delivery>> {
        self.check_max(max)?;
        self.ask(name, |reply| Command::Peek {
            origin,
            max: max as usize,
            reply,
        })
        .await?
    }

    /// Moves up to `max` messages dead-lettered from `name` back to it.
    pub async fn redrive_dead_letters(&self, name: &str, max: u32) -> Result<u64> {
        let dlq = self.dead_letter_queue_of(name)?;
        self.redrive(&dlq, Some(name.to_owned()), max).await
    }

    /// Moves up to `max` ready messages of dead-letter queue `name` (only those from
    /// `origin` if given) back to their source queues.
    pub async fn redrive(&self, name: &str, origin: Option<String>, max: u32) -> Result<u64> {
        if max == 0 {
            return Err(BrokerError::invalid("max", "must be at least 1"));
        }
        // In chunks, so a large dead-letter queue is never read into memory or
        // written as one batch.
        let chunk = u32::try_from(self.inner.config.limits.max_batch_messages)
            .unwrap_or(u32::MAX)
            .clamp(1, 1000);
        let mut moved = 0u64;
        let mut left = max;
        while left > 0 {
            let want = left.min(chunk);
            let origin = origin.clone();
            let n = self
                .ask(name, |reply| Command::Redrive {
                    origin,
                    at: None,
                    max: want as usize,
                    reply,
                })
                .await??;
            moved += n;
            self.inner.traffic.redriven(n);
            left -= want;
            if n < u64::from(want) {
                break;
            }
        }
        Ok(moved)
    }

    fn check_max(&self, max: u32) -> Result<()> {
        let limit = self.inner.config.limits.max_receive;
        if max == 0 || max > limit {
            return Err(BrokerError::invalid(
                "max",
                format!("{max} is outside 1..={limit}"),
            ));
        }
        Ok(())
    }

    /// Stops every queue: waiting receivers get empty answers, in-flight sends and
    /// acks finish, logs are synced and closed. Leased messages are ready again at
    /// the next start.
    pub async fn shutdown(&self) {
        self.inner.closing.store(true, Ordering::Release);
        let queues: Vec<QueueRef> = crate::locks::write(&self.inner.queues)
            .drain()
            .map(|(_, q)| q)
            .collect();
        for queue in &queues {
            stop_queue(queue).await;
        }
        let streams: Vec<_> = crate::locks::write(&self.inner.streams)
            .drain()
            .map(|(_, s)| s)
            .collect();
        for log in streams.iter().flat_map(|s| s.partitions.iter()) {
            if let Err(e) = log.close().await {
                tracing::error!(error = %e, "closing a stream's log failed");
            }
        }
        for stream in &streams {
            stream.groups.close().await;
        }
        if let Err(e) = self.inner.bodies.close().await {
            tracing::error!(error = %e, "closing the shared log failed");
        }
    }

    /// Tests only: makes queue `name`'s actor panic (see `supervisor`).
    #[cfg(test)]
    pub(crate) async fn panic_queue(&self, name: &str) -> Result<()> {
        let queue = self.get(name)?;
        queue
            .commands
            .send(Command::Panic)
            .await
            .map_err(|_| gone(name))
    }

    /// The limits clients are held to (front ends split their work to fit them).
    pub fn limits(&self) -> &Limits {
        &self.inner.config.limits
    }

    /// Keeps queue `name` from expiring (`expires_ms`) while the guard lives: a
    /// front end's consumer holds one, as RabbitMQ counts consumers as use.
    pub fn hold(&self, name: &str) -> Result<UseGuard> {
        Ok(self.get(name)?.usage.hold())
    }

    /// The resource alarms, as they change: front ends block publishers while one
    /// is raised.
    pub fn alarms(&self) -> tokio::sync::watch::Receiver<crate::alarms::Alarms> {
        self.inner.alarms.clone()
    }

    /// Users, vhosts and permissions: the front ends log clients in and check
    /// what they do against it.
    pub fn access(&self) -> Arc<Access> {
        self.inner.access.clone()
    }

    /// Disk bytes of the shared log.
    pub fn body_log_bytes(&self) -> u64 {
        self.inner.bodies.stats().size_bytes
    }
}

async fn stop_queue(queue: &QueueRef) {
    let (reply, answer) = oneshot::channel();
    if queue.commands.send(Command::Stop { reply }).await.is_ok() {
        let _ = answer.await;
    }
    if let Some(task) = queue.task.lock().await.take()
        && let Err(e) = task.await
    {
        tracing::error!(error = %e, "a queue actor panicked");
    }
}

impl<S: LogStore> Reopen<S> for Inner<S> {
    fn reopen(
        self: Arc<Self>,
        queue: Supervised,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Actor<S>>> + Send>> {
        Box::pin(async move { Broker { inner: self }.reopen_queue(&queue).await })
    }

    fn shared_first_offset(&self) -> u64 {
        self.bodies.first_offset().0
    }
}

fn not_found(name: &str) -> BrokerError {
    BrokerError::NotFound {
        kind: Kind::Queue,
        name: name.to_owned(),
    }
}

pub(crate) fn closing() -> BrokerError {
    BrokerError::Unavailable {
        reason: "the broker is shutting down".into(),
    }
}

pub(crate) fn gone(name: &str) -> BrokerError {
    BrokerError::Unavailable {
        reason: format!(
            "queue '{name}' stopped before it answered: it was deleted, the broker is \
             shutting down, or its task failed and is being restarted from its log"
        ),
    }
}
