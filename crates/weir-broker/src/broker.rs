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

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs::File;
use std::hash::{BuildHasher, RandomState};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, mpsc, oneshot};
use weir_log::io::create_dir_all_durably;
use weir_log::{FileStore, Header, LogConfig, LogStore, MessageLog};

use crate::api::{
    Declared, Delivery, MAX_GROUP_BYTES, MAX_ID_BYTES, NackOptions, QueueInfo, QueueOptions,
    ReceiveRequest, SendMessage, SendOutcome, SettleReport, check_duration, validate_name,
};
use crate::clock::now_ms;
use crate::error::{BrokerError, Kind, Limit, Result};
use crate::handle::{QueueRef, Usage, UseGuard};
use crate::hex::push_hex;
use crate::queue::actor::{Actor, Command};
use crate::queue::dlq::Target;
use crate::queue::host::{Host, HostFuture};
use crate::queue::record::{
    EXCHANGE_HEADER, MessageMeta, Outgoing, PROPERTIES_HEADER, ROUTING_KEY_HEADER,
};
use crate::queue::replay::{Arrivals, OwnReplay, Wanted, finish, replay_own, scan_shared};
use crate::queue::state::QueueState;
use crate::routing::{DestinationType, Router};
use crate::shared::{self, Dispatch, Writes};
use crate::supervisor::{Reopen, Supervised, supervise};

/// Limits on what clients may ask for. Each is enforced with a clear error.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Most queues a broker holds.
    pub max_queues: u64,
    /// Most exchanges clients may declare (the built-in ones not counted).
    pub max_exchanges: u64,
    /// Most bindings, all exchanges together.
    pub max_bindings: u64,
    /// Largest message, bytes (body; over AMQP also its properties). RabbitMQ
    /// 3.x's default, 128 MiB; at most 512 MiB, RabbitMQ's ceiling.
    pub max_message_bytes: u64,
    /// Most messages in one send.
    pub max_batch_messages: u64,
    /// Most messages one receive may ask for.
    pub max_receive: u32,
    /// Longest long poll, ms.
    pub max_wait_ms: u64,
    /// Below this much free space under the data directory the disk alarm is
    /// raised and publishers are blocked (0: never). RabbitMQ's default, 50 MB.
    pub disk_free_min_bytes: u64,
    /// Above this much resident memory the memory alarm is raised and publishers
    /// are blocked (0: 40% of the machine's memory, RabbitMQ's default).
    pub memory_high_watermark_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_queues: 10_000,
            max_exchanges: 10_000,
            max_bindings: 100_000,
            max_message_bytes: 128 << 20,
            max_batch_messages: 1_000,
            max_receive: 1_000,
            max_wait_ms: 60_000,
            disk_free_min_bytes: 50_000_000,
            memory_high_watermark_bytes: 0,
        }
    }
}

/// The largest `max_message_bytes` may be (RabbitMQ's ceiling, 512 MiB).
pub const MAX_MESSAGE_BYTES_CEILING: u64 = 512 << 20;

/// Room a stored record needs besides the message's body and properties: its
/// id, group and the HTTP headers map (which come in a request of at most
/// `[http] max_body_bytes`, 16 MiB by default, whose body counts too).
const RECORD_ROOM: u64 = 16 << 20;

impl Limits {
    /// What is wrong with these limits, one sentence each (empty: nothing).
    /// Durations are capped at [`crate::api::MAX_DURATION_MS`] so that no
    /// deadline computed from them can overflow a clock.
    #[must_use]
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !(1..=MAX_MESSAGE_BYTES_CEILING).contains(&self.max_message_bytes) {
            problems.push(format!(
                "limits.max_message_bytes {} is outside 1 ..= {MAX_MESSAGE_BYTES_CEILING} (512 MiB)",
                self.max_message_bytes
            ));
        }
        if self.max_wait_ms > crate::api::MAX_DURATION_MS {
            problems.push(format!(
                "limits.max_wait_ms {} is over {} (30 days)",
                self.max_wait_ms,
                crate::api::MAX_DURATION_MS
            ));
        }
        problems
    }
}

/// The broker's settings.
#[derive(Clone, Debug)]
pub struct BrokerConfig {
    /// Where queues live.
    pub data_dir: PathBuf,
    /// Settings of each queue's log (fsync policy, segment size...).
    pub log: LogConfig,
    /// Client limits.
    pub limits: Limits,
    /// Most files the logs may hold open (`weir_log::io::open_files`) for a new
    /// queue to be accepted; `None`: no budget. A queue's log holds two (its active
    /// segment and index) plus one per sealed segment, and recovery opens the same
    /// ones, so a broker that stays within the budget can open every queue it
    /// accepted again at its next start. The binary sets it from `RLIMIT_NOFILE`
    /// minus a reserve for connections and the rest (docs/configuration.md).
    pub open_files_budget: Option<u64>,
}

/// Files a new queue's log opens: its first segment and that segment's index
/// (the broker's logs take no `LOCK` of their own: the data directory's covers them).
pub(crate) const FILES_PER_NEW_QUEUE: u64 = 2;

impl BrokerConfig {
    /// Defaults for a data directory: fsync always, 64 MiB segments (small enough
    /// that settled messages free space soon).
    pub fn new(data_dir: impl Into<PathBuf>) -> BrokerConfig {
        BrokerConfig {
            data_dir: data_dir.into(),
            log: LogConfig {
                segment_bytes: 64 << 20,
                ..LogConfig::default()
            },
            limits: Limits::default(),
            open_files_budget: None,
        }
    }
}

pub(crate) struct Inner<S: LogStore> {
    pub(crate) config: BrokerConfig,
    queues: RwLock<HashMap<String, QueueRef>>,
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
    next_queue_id: std::sync::Mutex<u32>,
    /// Queues being deleted: gone from `queues`, files not yet removed.
    deleting: std::sync::Mutex<HashSet<String>>,
    /// Each queue's directory, by name: queue names are any UTF-8 and never
    /// become paths (see the module doc).
    dirs: std::sync::Mutex<HashMap<String, PathBuf>>,
    /// Set once shutdown starts: new requests get `unavailable`, nothing is
    /// declared any more.
    closing: AtomicBool,
    /// Resource alarms (see [`crate::alarms`]).
    alarms: tokio::sync::watch::Receiver<crate::Alarms>,
    /// Where the queues' and the shared log live: files (on the real file
    /// system, or a test's that can hold or fail syncs), or memory in tests.
    store: Arc<S>,
    _lock: File,
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
    /// Messages held across them (ready, delayed, leased before the stop).
    pub messages: u64,
    /// Files the logs hold open once recovered (`weir_log::io::open_files`).
    pub open_files: u64,
    /// How long recovery took.
    pub elapsed: std::time::Duration,
}

#[allow(clippy::needless_pass_by_value)] // used as map_err(|e| io_error(.., e))
pub(crate) fn io_error(what: &str, path: &Path, e: std::io::Error) -> BrokerError {
    BrokerError::internal(format!("{what} {}: {e}", path.display()))
}

fn lease_seed() -> u64 {
    RandomState::new().hash_one(now_ms()) >> 2
}

pub(crate) fn write_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    let mut f = File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(parent) = path.parent() {
        File::open(parent)?.sync_all()?;
    }
    Ok(())
}

impl Broker {
    /// Opens the data directory and recovers every queue in it.
    pub async fn open(config: BrokerConfig) -> Result<(Broker, StartReport)> {
        Broker::open_with_store(config, FileStore::default()).await
    }

    /// [`Broker::open`] with the logs on `fs` (tests hold or fail its syncs).
    #[cfg(test)]
    pub(crate) async fn open_with_fs(
        config: BrokerConfig,
        fs: Arc<dyn weir_log::io::Fs>,
    ) -> Result<(Broker, StartReport)> {
        Broker::open_with_store(config, FileStore::new(fs)).await
    }
}

impl<S: LogStore> Broker<S> {
    /// [`Broker::open`] with the logs in `store` (tests use
    /// [`weir_log::MemStore`]). The data directory still holds the broker's own
    /// files: its lock, queue options and names, exchanges and bindings.
    pub async fn open_with_store(config: BrokerConfig, store: S) -> Result<(Self, StartReport)> {
        let store = Arc::new(store);
        let started = Instant::now();
        let mut config = config;
        // The data directory's LOCK keeps any other process out of every log in
        // it, so the logs' own LOCK files would only cost a file each.
        config.log.lock_dir = false;
        let problems = config.limits.problems();
        if !problems.is_empty() {
            return Err(BrokerError::invalid("limits", problems.join("; ")));
        }
        // Every message the limits accept must fit one record (and one batch).
        let record = config
            .limits
            .max_message_bytes
            .min(MAX_MESSAGE_BYTES_CEILING)
            .saturating_add(RECORD_ROOM);
        let record = u32::try_from(record).unwrap_or(u32::MAX);
        config.log.max_record_bytes = config.log.max_record_bytes.max(record);
        config.log.max_batch_bytes = config.log.max_batch_bytes.max(record.saturating_add(64));
        config
            .log
            .validate()
            .map_err(|e| BrokerError::invalid("log", e.to_string()))?;
        let queues_dir = config.data_dir.join("queues");
        create_dir_all_durably(&queues_dir).map_err(|e| io_error("create", &queues_dir, e))?;
        let lock = lock_data_dir(&config.data_dir)?;
        let bodies_dir = config.data_dir.join("bodies");
        let bodies_config = config.log.clone();
        let bodies_store = store.clone();
        let (bodies, _) =
            tokio::task::spawn_blocking(move || bodies_store.open(&bodies_dir, bodies_config))
                .await
                .map_err(|e| BrokerError::internal(format!("opening the shared log: {e}")))?
                .map_err(|source| BrokerError::storage("(shared log)", source))?;
        let next_queue_id = read_next_queue_id(&config.data_dir)?;
        let body_writes = Writes::default();
        let alarms = crate::alarms::spawn_monitor(crate::alarms::Thresholds {
            data_dir: config.data_dir.clone(),
            disk_free_min_bytes: config.limits.disk_free_min_bytes,
            memory_high_watermark_bytes: match config.limits.memory_high_watermark_bytes {
                0 => crate::alarms::total_memory_bytes().map_or(0, |total| total / 10 * 4),
                n => n,
            },
        });
        let (dispatch, requests) = mpsc::channel(1024);
        tokio::spawn(shared::run(bodies.clone(), body_writes.clone(), requests));
        let inner = Arc::new(Inner {
            bodies,
            body_writes,
            dispatch,
            next_queue_id: std::sync::Mutex::new(next_queue_id),
            config,
            queues: RwLock::new(HashMap::new()),
            router: RwLock::new(Router::default()),
            admin: Mutex::new(()),
            deleting: std::sync::Mutex::new(HashSet::new()),
            dirs: std::sync::Mutex::new(HashMap::new()),
            closing: AtomicBool::new(false),
            alarms,
            store,
            _lock: lock,
        });
        let broker = Broker { inner };
        let mut report = StartReport::default();
        let found = queue_dirs(&queues_dir)?;
        let (queues, messages) = broker.recover_queues(found).await?;
        report.queues = queues;
        report.messages = messages;
        report.exchanges = broker.load_routing()?;
        report.queues -= broker.delete_exclusive_queues().await?;
        // The shared log's housekeeping: a weak handle, so it ends with the broker.
        let weak = Arc::downgrade(&broker.inner);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                let Some(inner) = weak.upgrade() else { return };
                if inner.closing.load(Ordering::Acquire) {
                    return;
                }
                let broker = Broker { inner };
                broker.expire_unused().await;
                if let Err(e) = broker.trim_bodies().await {
                    tracing::warn!(error = %e, "trimming the shared log failed");
                }
            }
        });
        report.open_files = weir_log::io::open_files();
        if let Some(budget) = broker.inner.config.open_files_budget
            && report.open_files > budget
        {
            tracing::warn!(
                open_files = report.open_files,
                budget,
                "the recovered queues hold more files than the budget: new queues are refused \
                 until some are deleted or the file limit is raised"
            );
        }
        report.elapsed = started.elapsed();
        Ok((broker, report))
    }

    /// Recovers the queues `names` in two phases (see `queue::replay`): every
    /// queue's own log, then one pass over the shared log for all of them. Returns
    /// how many queues and messages.
    async fn recover_queues(&self, found: Vec<(String, PathBuf)>) -> Result<(usize, u64)> {
        let mut opened = Vec::with_capacity(found.len());
        for (name, dir) in found {
            let path = dir.join("queue.json");
            let bytes = std::fs::read(&path).map_err(|e| io_error("read", &path, e))?;
            let options: QueueOptions = serde_json::from_slice(&bytes).map_err(|e| {
                BrokerError::internal(format!("{} does not parse: {e}", path.display()))
            })?;
            // Written by this broker after the same check, so only damage fails it;
            // limits derived from the options (durations, deadlines) rely on it.
            options.validate(&name).map_err(|e| {
                BrokerError::internal(format!("{} holds invalid options: {e}", path.display()))
            })?;
            let id = self.queue_id_in(&dir)?;
            crate::locks::lock(&self.inner.dirs).insert(name.clone(), dir);
            opened.push(self.open_queue(&name, options, id).await?);
        }
        let wanted: HashMap<u32, Wanted> = opened
            .iter()
            .map(|o| {
                let wanted = Wanted {
                    from: o.own.shared_below,
                    ids: o.options.dedup_window_ms.is_some(),
                };
                (o.id, wanted)
            })
            .collect();
        let mut arrivals = scan_shared(&self.inner.bodies, &wanted)
            .await
            .map_err(|source| BrokerError::storage("(shared log)", source))?;
        let count = opened.len();
        let mut messages = 0;
        for queue in opened {
            let mine = arrivals.remove(&queue.id).unwrap_or_default();
            messages += self.start_queue(queue, mine);
        }
        Ok((count, messages))
    }

    /// The directory of queue `name` (declared or being recovered).
    fn queue_dir(&self, name: &str) -> Result<PathBuf> {
        crate::locks::lock(&self.inner.dirs)
            .get(name)
            .cloned()
            .ok_or_else(|| BrokerError::internal(format!("queue '{name}' has no directory")))
    }

    /// The number of the queue in `dir`, from its `id` file; a queue from before
    /// queues had numbers gets one now.
    fn queue_id_in(&self, dir: &Path) -> Result<u32> {
        let path = dir.join("id");
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let id: u32 = text.trim().parse().map_err(|e| {
                    BrokerError::internal(format!("{} does not parse: {e}", path.display()))
                })?;
                // A number at or above the counter (a crash between writing this
                // file and the counter cannot happen: the counter goes first, but
                // be safe) moves the counter past it.
                let mut next = crate::locks::lock(&self.inner.next_queue_id);
                if id >= *next {
                    *next = id + 1;
                    write_next_queue_id(&self.inner.config.data_dir, *next)?;
                }
                Ok(id)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let id = self.next_queue_id()?;
                write_durably(&path, id.to_string().as_bytes())
                    .map_err(|e| io_error("write", &path, e))?;
                Ok(id)
            }
            Err(e) => Err(io_error("read", &path, e)),
        }
    }

    /// A new queue number, durable in the counter before it is used.
    fn next_queue_id(&self) -> Result<u32> {
        let mut next = crate::locks::lock(&self.inner.next_queue_id);
        let id = *next;
        let after = id
            .checked_add(1)
            .ok_or_else(|| BrokerError::internal("every queue number has been used".to_owned()))?;
        write_next_queue_id(&self.inner.config.data_dir, after)?;
        *next = after;
        Ok(id)
    }

    /// Gives the new queue `name` a number and its directory `queues/@<id>` with
    /// its `name` and `id` files (durable before its `queue.json` is written, which
    /// is what makes the directory a queue).
    fn assign_queue_id(&self, name: &str) -> Result<u32> {
        let id = self.next_queue_id()?;
        let dir = self
            .inner
            .config
            .data_dir
            .join("queues")
            .join(format!("@{id}"));
        create_dir_all_durably(&dir).map_err(|e| io_error("create", &dir, e))?;
        for (file, bytes) in [("name", name.as_bytes()), ("id", id.to_string().as_bytes())] {
            let path = dir.join(file);
            write_durably(&path, bytes).map_err(|e| io_error("write", &path, e))?;
        }
        crate::locks::lock(&self.inner.dirs).insert(name.to_owned(), dir);
        Ok(id)
    }

    /// Opens a queue's log and replays it (phase 1: its own log).
    async fn open_queue(
        &self,
        name: &str,
        options: QueueOptions,
        id: u32,
    ) -> Result<OpenedQueue<S::Log>> {
        let dir = self.queue_dir(name)?.join("log");
        let log_config = self.inner.config.log.clone();
        let queue = name.to_owned();
        let store = self.inner.store.clone();
        let (log, recovery) = tokio::task::spawn_blocking(move || store.open(&dir, log_config))
            .await
            .map_err(|e| BrokerError::internal(format!("opening queue '{queue}': {e}")))?
            .map_err(|source| BrokerError::storage(name.to_owned(), source))?;
        if recovery.truncated_bytes > 0 {
            tracing::warn!(
                queue = name,
                truncated_bytes = recovery.truncated_bytes,
                "recovery cut a torn tail off the queue's log (writes that were never confirmed)"
            );
        }
        let mut state = QueueState::new(options.clone(), lease_seed());
        let own = replay_own(&log, &mut state, name, now_ms())
            .await
            .map_err(|source| BrokerError::storage(name.to_owned(), source))?;
        Ok(OpenedQueue {
            name: name.to_owned(),
            options,
            id,
            log,
            state,
            own,
        })
    }

    /// Finishes a queue's replay with its shared messages and starts its actor;
    /// returns how many messages it holds.
    fn start_queue(&self, queue: OpenedQueue<S::Log>, arrivals: Arrivals) -> u64 {
        let (commands, receiver) = mpsc::channel(1024);
        let receiver = Arc::new(Mutex::new(receiver));
        let held = receiver
            .clone()
            .try_lock_owned()
            .expect("invariant: a new channel's receiver is free");
        let name = queue.name.clone();
        let id = queue.id;
        let options = queue.options.clone();
        let (actor, count) = self.make_actor(queue, arrivals, held);
        let task = tokio::spawn(supervise(
            Arc::downgrade(&self.inner),
            Supervised {
                name: name.clone(),
                id,
                options: options.clone(),
                commands: receiver,
            },
            actor,
        ));
        crate::locks::write(&self.inner.queues).insert(
            name,
            QueueRef {
                commands,
                id,
                options: Arc::new(options),
                task: Arc::new(Mutex::new(Some(task))),
                usage: Arc::new(Usage::new()),
            },
        );
        count
    }

    /// Finishes a queue's replay and builds its actor on `commands`; returns it
    /// with how many messages it holds.
    fn make_actor(
        &self,
        queue: OpenedQueue<S::Log>,
        arrivals: Arrivals,
        commands: crate::queue::actor::Commands,
    ) -> (Actor<S>, u64) {
        let OpenedQueue {
            name,
            options: _,
            id: _,
            log,
            mut state,
            own,
        } = queue;
        let replayed = finish(own, arrivals, &mut state, now_ms());
        let stats = state.stats(0, now_ms());
        let held = stats.ready + stats.delayed;
        tracing::info!(
            queue = %name,
            records = replayed.records,
            ready = stats.ready,
            delayed = stats.delayed,
            "recovered queue"
        );
        // The actor sees the broker as its `Host` (weakly: it does not keep it alive).
        let host: Weak<Inner<S>> = Arc::downgrade(&self.inner);
        let actor = Actor::new(
            name,
            log,
            self.inner.bodies.clone(),
            state,
            host,
            commands,
            &replayed,
        );
        (actor, held)
    }

    /// Opens and replays a queue again for its restarted actor: its own log, then
    /// its messages in the shared log (to its end: arrivals queued for the dead
    /// actor meanwhile are skipped by the new one, see `Actor::arrive`).
    pub(crate) async fn reopen_queue(&self, queue: &Supervised) -> Result<Actor<S>> {
        let opened = self
            .open_queue(&queue.name, queue.options.clone(), queue.id)
            .await?;
        let wanted = HashMap::from([(
            queue.id,
            Wanted {
                from: opened.own.shared_below,
                ids: opened.options.dedup_window_ms.is_some(),
            },
        )]);
        let mut arrivals = scan_shared(&self.inner.bodies, &wanted)
            .await
            .map_err(|source| BrokerError::storage("(shared log)", source))?;
        let mine = arrivals.remove(&queue.id).unwrap_or_default();
        let held = queue.commands.clone().lock_owned().await;
        Ok(self.make_actor(opened, mine, held).0)
    }

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
        let count = crate::locks::read(&self.inner.queues).len() as u64;
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
        // Refused before anything is created: a queue the broker could not open
        // again at its next start must never be accepted.
        if let Some(budget) = self.inner.config.open_files_budget
            && weir_log::io::open_files() + FILES_PER_NEW_QUEUE * (1 + extra) > budget
        {
            return Err(BrokerError::LimitExceeded {
                what: Limit::OpenFiles,
                limit: budget,
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

    async fn ask<T>(
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
        let names: Vec<String> = {
            let queues = crate::locks::read(&self.inner.queues);
            let mut names: Vec<String> = queues.keys().cloned().collect();
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
        let answer = self.send_queued(name, messages).await?;
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

    async fn send_prepared(
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
                    max: want as usize,
                    reply,
                })
                .await??;
            moved += n;
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
        if let Err(e) = self.inner.bodies.close().await {
            tracing::error!(error = %e, "closing the shared log failed");
        }
    }

    /// Trims the shared log below what every queue may still need and every publish
    /// still being handed to its queues.
    /// Run periodically; returns the new first offset.
    pub(crate) async fn trim_bodies(&self) -> Result<u64> {
        if self.inner.bodies.first_offset() == self.inner.bodies.next_offset() {
            // Nothing to trim: spare every queue the question.
            return Ok(self.inner.bodies.next_offset().0);
        }
        // In-flight publishes first: one that finishes after this snapshot has its
        // messages held by its queues before they answer the floor query below.
        let next = self.inner.bodies.next_offset().0;
        let mut floor = shared::lowest_write(&self.inner.body_writes)
            .unwrap_or(next)
            .min(next);
        let queues: Vec<QueueRef> = crate::locks::read(&self.inner.queues)
            .values()
            .cloned()
            .collect();
        for queue in queues {
            let (reply, answer) = oneshot::channel();
            if queue
                .commands
                .send(Command::BodyFloor { reply })
                .await
                .is_err()
            {
                continue;
            }
            match answer.await {
                Ok(Some(held)) => floor = floor.min(held),
                Ok(None) => {}
                // The queue took the question and stopped answering (its actor
                // panicked; it is being restarted from its log, which needs its
                // shared messages): no trim this time.
                Err(_) => return Ok(self.inner.bodies.first_offset().0),
            }
        }
        if floor > self.inner.bodies.first_offset().0 {
            self.inner
                .bodies
                .trim_before(weir_log::Offset(floor))
                .await
                .map_err(|source| BrokerError::storage("(shared log)", source))?;
        }
        Ok(floor)
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

    /// Deletes the exclusive and transient queues a previous run left behind,
    /// with their bindings: the connection that owned an exclusive queue is gone,
    /// and RabbitMQ recovers neither kind (whether it stopped cleanly or was
    /// killed). Returns how many.
    async fn delete_exclusive_queues(&self) -> Result<usize> {
        let doomed: Vec<String> = crate::locks::read(&self.inner.queues)
            .iter()
            .filter(|(_, q)| q.options.exclusive || q.options.transient)
            .map(|(name, _)| name.clone())
            .collect();
        for name in &doomed {
            tracing::info!(queue = %name, "deleting an exclusive or transient queue of the previous run");
            self.delete(name).await?;
        }
        Ok(doomed.len())
    }

    /// Deletes the queues with `expires_ms` that have been unused that long.
    pub(crate) async fn expire_unused(&self) {
        let expired: Vec<String> = crate::locks::read(&self.inner.queues)
            .iter()
            .filter(|(_, q)| q.options.expires_ms.is_some_and(|ms| q.usage.idle_for(ms)))
            .map(|(name, _)| name.clone())
            .collect();
        for name in expired {
            tracing::info!(queue = %name, "queue unused for its expires_ms: deleting it");
            if let Err(e) = self.delete(&name).await {
                tracing::warn!(queue = %name, error = %e, "deleting an expired queue failed");
            }
        }
    }

    /// The resource alarms, as they change: front ends block publishers while one
    /// is raised.
    pub fn alarms(&self) -> tokio::sync::watch::Receiver<crate::Alarms> {
        self.inner.alarms.clone()
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

impl<S: LogStore> Host for Inner<S> {
    fn dead_letter(self: Arc<Self>, target: Target, messages: Vec<Outgoing>) -> HostFuture {
        let broker = Arc::downgrade(&self);
        Box::pin(async move { dead_letter_to(&broker, &target, messages).await })
    }

    fn send_to(self: Arc<Self>, name: String, messages: Vec<Outgoing>) -> HostFuture {
        let broker = Arc::downgrade(&self);
        Box::pin(async move { send_internal(&broker, &name, messages, false).await })
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

/// Sends already-built messages to a queue from inside the broker (dead letters,
/// redrives), creating a missing dead-letter queue.
pub(crate) async fn send_internal<S: LogStore>(
    broker: &Weak<Inner<S>>,
    name: &str,
    messages: Vec<Outgoing>,
    create_missing: bool,
) -> Result<()> {
    let inner = broker.upgrade().ok_or_else(|| BrokerError::Unavailable {
        reason: "the broker is shutting down".into(),
    })?;
    let broker = Broker { inner };
    if create_missing && broker.get(name).is_err() {
        broker.declare(name, QueueOptions::default()).await?;
    }
    broker
        .send_prepared(name, messages, false)
        .await
        .map(|_| ())
}

fn not_found(name: &str) -> BrokerError {
    BrokerError::NotFound {
        kind: Kind::Queue,
        name: name.to_owned(),
    }
}

fn closing() -> BrokerError {
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

fn check_receipts(receipts: &[String]) -> Result<()> {
    if receipts.is_empty() {
        return Err(BrokerError::invalid(
            "receipts",
            "at least one receipt is needed",
        ));
    }
    if receipts.len() > 10_000 {
        return Err(BrokerError::LimitExceeded {
            what: Limit::ReceiptsPerRequest,
            limit: 10_000,
        });
    }
    Ok(())
}

/// A process-unique message id: 32 hex digits of time, a counter and randomness.
pub(crate) fn generate_id(now: i64) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    static SALT: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let salt = *SALT.get_or_init(|| RandomState::new().hash_one(std::process::id()));
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut id = String::with_capacity(32);
    push_hex(
        &mut id,
        u64::try_from(now).unwrap_or(0) & 0xffff_ffff_ffff,
        12,
    );
    push_hex(&mut id, salt >> 48, 4);
    push_hex(&mut id, salt.wrapping_add(n), 16);
    id
}

/// Checks one message and builds what is written.
pub(crate) fn prepare(
    i: usize,
    m: SendMessage,
    options: &QueueOptions,
    limits: &Limits,
    now: i64,
) -> Result<Outgoing> {
    let field = |f: &str| format!("messages[{i}].{f}");
    if m.body.len() as u64 > limits.max_message_bytes {
        return Err(BrokerError::LimitExceeded {
            what: Limit::MessageBytes,
            limit: limits.max_message_bytes,
        });
    }
    if let Some(id) = &m.id
        && (id.is_empty() || id.len() > MAX_ID_BYTES)
    {
        return Err(BrokerError::invalid(
            field("id"),
            format!("must be 1..={MAX_ID_BYTES} bytes"),
        ));
    }
    if let Some(g) = &m.group
        && (g.is_empty() || g.len() > MAX_GROUP_BYTES)
    {
        return Err(BrokerError::invalid(
            field("group"),
            format!("must be 1..={MAX_GROUP_BYTES} bytes"),
        ));
    }
    if let Some(d) = m.delay_ms {
        check_duration(&field("delay_ms"), d, 0)?;
    }
    if let Some(t) = m.ttl_ms {
        check_duration(&field("ttl_ms"), t, 1)?;
    }
    let ms = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    let ttl = match (m.ttl_ms, options.message_ttl_ms) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let not_before = m.delay_ms.filter(|d| *d > 0).map_or(0, |d| now + ms(d));
    // A delayed message's TTL runs from when it becomes deliverable.
    let expires = ttl.map_or(0, |t| now.max(not_before) + ms(t));
    let headers: BTreeMap<String, String> = m.headers;
    if headers.keys().any(|k| k.starts_with('\0')) {
        return Err(BrokerError::invalid(
            field("headers"),
            "a header name may not start with a NUL character (reserved)",
        ));
    }
    let mut headers: Vec<Header> = headers
        .into_iter()
        .map(|(k, v)| Header::new(k, v))
        .collect();
    if let Some(properties) = m.properties {
        headers.push(Header::new(PROPERTIES_HEADER, properties));
    }
    if let Some(key) = m.routing_key.filter(|k| !k.is_empty()) {
        headers.push(Header::new(ROUTING_KEY_HEADER, key));
    }
    if let Some(exchange) = m.exchange.filter(|e| !e.is_empty()) {
        headers.push(Header::new(EXCHANGE_HEADER, exchange));
    }
    Ok(Outgoing {
        meta: MessageMeta {
            id: m.id.unwrap_or_else(|| generate_id(now)),
            priority: m.priority.unwrap_or(0).min(options.max_priority),
            not_before_ms: not_before,
            expires_at_ms: expires,
            group: m.group,
            attempts: 0,
            moved_from: None,
            enqueued_at_ms: now,
            dead_letter: None,
            shared_mark: 0,
        },
        headers,
        body: m.body,
    })
}

/// Sends dead letters (built by [`crate::queue::dlq::copy`]) to where their queue's
/// dead letters go. Through an exchange, each is routed with each of its routing
/// keys; unroutable ones, and all when the exchange does not exist, are dropped, as
/// in RabbitMQ. A dead letter is not sent to a queue it would go round a cycle
/// through ([`crate::queue::dlq::is_cycle`]).
pub(crate) async fn dead_letter_to<S: LogStore>(
    broker: &Weak<Inner<S>>,
    target: &crate::queue::dlq::Target,
    messages: Vec<Outgoing>,
) -> Result<()> {
    use crate::queue::dlq::{Target, is_cycle, report_cycle};
    let not_cycling = |m: &Outgoing, queue: &str| match &m.meta.dead_letter {
        Some(info) if is_cycle(info, queue) => {
            report_cycle(info, queue);
            false
        }
        _ => true,
    };
    let exchange = match target {
        Target::Queue(queue) => {
            let messages: Vec<Outgoing> = messages
                .into_iter()
                .filter(|m| not_cycling(m, queue))
                .collect();
            if messages.is_empty() {
                return Ok(());
            }
            return send_internal(broker, queue, messages, true).await;
        }
        Target::Exchange { name, .. } => name,
    };
    let inner = broker.upgrade().ok_or_else(closing)?;
    let broker = Broker { inner };
    let mut per_queue: BTreeMap<String, Vec<Outgoing>> = BTreeMap::new();
    for m in messages {
        let headers: BTreeMap<String, String> = m
            .headers
            .iter()
            .filter(|h| !h.name.starts_with(b"\0"))
            .map(|h| {
                (
                    String::from_utf8_lossy(&h.name).into_owned(),
                    String::from_utf8_lossy(&h.value).into_owned(),
                )
            })
            .collect();
        let keys = m
            .meta
            .dead_letter
            .as_ref()
            .map(|d| d.routing_keys.clone())
            .unwrap_or_default();
        let mut queues: BTreeSet<String> = BTreeSet::new();
        for key in &keys {
            match broker.route_dead_letter(exchange, key, &headers) {
                Ok(routed) => queues.extend(routed),
                Err(BrokerError::NotFound {
                    kind: Kind::Exchange,
                    ..
                }) => {
                    tracing::debug!(%exchange, "dead letter dropped: its dead-letter exchange does not exist");
                }
                Err(e) => return Err(e),
            }
        }
        for queue in queues {
            if not_cycling(&m, &queue) {
                per_queue.entry(queue).or_default().push(m.clone());
            }
        }
    }
    for (queue, messages) in per_queue {
        broker.send_prepared(&queue, messages, false).await?;
    }
    Ok(())
}

/// A queue whose own log is replayed, waiting for its shared messages.
struct OpenedQueue<L> {
    name: String,
    options: QueueOptions,
    id: u32,
    log: L,
    state: QueueState,
    own: OwnReplay,
}

/// `meta/queue-ids.json`.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct QueueIds {
    next: u32,
}

fn queue_ids_path(data_dir: &Path) -> PathBuf {
    data_dir.join("meta").join("queue-ids.json")
}

fn read_next_queue_id(data_dir: &Path) -> Result<u32> {
    let path = queue_ids_path(data_dir);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice::<QueueIds>(&bytes)
            .map(|ids| ids.next)
            .map_err(|e| BrokerError::internal(format!("{} does not parse: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(1),
        Err(e) => Err(io_error("read", &path, e)),
    }
}

/// The queues in `queues_dir` (directories with a `queue.json`), as (name,
/// directory), sorted by name. Leftovers are removed on the way: deleted queues
/// (`.trash-*`) and `@<id>` directories whose declaration never finished (no
/// `queue.json`: nothing in them was ever acknowledged).
fn queue_dirs(queues_dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let remove = |path: &Path| {
        if let Err(e) = std::fs::remove_dir_all(path) {
            tracing::warn!(path = %path.display(), error = %e, "could not remove a deleted queue's files");
        }
    };
    let mut found: BTreeMap<String, PathBuf> = BTreeMap::new();
    for entry in std::fs::read_dir(queues_dir).map_err(|e| io_error("list", queues_dir, e))? {
        let entry = entry.map_err(|e| io_error("list", queues_dir, e))?;
        let file_name = entry.file_name().to_string_lossy().into_owned();
        let dir = entry.path();
        if file_name.starts_with(".trash-") {
            remove(&dir);
            continue;
        }
        let numbered = file_name.starts_with('@');
        if !dir.join("queue.json").exists() {
            if numbered {
                remove(&dir);
            }
            continue;
        }
        let name = if numbered {
            let path = dir.join("name");
            let bytes = std::fs::read(&path).map_err(|e| io_error("read", &path, e))?;
            String::from_utf8(bytes)
                .map_err(|_| BrokerError::internal(format!("{} is not UTF-8", path.display())))?
        } else if is_legacy_name(&file_name) {
            file_name
        } else {
            continue;
        };
        validate_name(&name).map_err(|e| {
            BrokerError::internal(format!("{} holds an invalid name: {e}", dir.display()))
        })?;
        if let Some(other) = found.insert(name.clone(), dir.clone()) {
            return Err(BrokerError::internal(format!(
                "queue '{name}' is in both {} and {}",
                other.display(),
                dir.display()
            )));
        }
    }
    Ok(found.into_iter().collect())
}

/// A directory named after its queue, as before names were free: the old
/// alphabet, so that nothing else in `queues/` is taken for a queue.
fn is_legacy_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
}

/// Takes `<data_dir>/LOCK` (an `flock`, released by the kernel if the process dies).
fn lock_data_dir(data_dir: &Path) -> Result<File> {
    let lock_path = data_dir.join("LOCK");
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| io_error("open", &lock_path, e))?;
    if lock.try_lock().is_err() {
        return Err(BrokerError::Unavailable {
            reason: format!(
                "data directory {} is in use by another weir process",
                data_dir.display()
            ),
        });
    }
    Ok(lock)
}

fn write_next_queue_id(data_dir: &Path, next: u32) -> Result<()> {
    let path = queue_ids_path(data_dir);
    if let Some(dir) = path.parent() {
        create_dir_all_durably(dir).map_err(|e| io_error("create", dir, e))?;
    }
    let json =
        serde_json::to_vec(&QueueIds { next }).map_err(|e| BrokerError::internal(e.to_string()))?;
    write_durably(&path, &json).map_err(|e| io_error("write", &path, e))
}
