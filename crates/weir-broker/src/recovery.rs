//! Opening a broker ([`Broker::open`]) and what its data directory holds: the queues' directories and numbers
//! (`queues/@<id>`, `meta/queue-ids.json`), each queue's log replayed (its own
//! records, then its messages in the shared log, see `queue::replay`), its actor
//! started under a supervisor; and again for one queue whose actor panicked.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::hash::{BuildHasher, RandomState};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, RwLock, Weak};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, mpsc};
use tracing::Instrument as _;
use weir_log::io::create_dir_all_durably;
use weir_log::{FileStore, LogStore};

use crate::access::Access;
use crate::api::{QueueOptions, validate_name};
use crate::broker::{Broker, Inner, StartReport};
use crate::clock::now_ms;
use crate::config::{BrokerConfig, MAX_MESSAGE_BYTES_CEILING, RECORD_ROOM};
use crate::error::{BrokerError, Result};
use crate::files::{io_error, write_durably};
use crate::handle::{QueueRef, Usage};
use crate::queue::actor::Actor;
use crate::queue::replay::{Arrivals, OwnReplay, Wanted, finish, replay_own, scan_shared};
use crate::queue::state::QueueState;
use crate::routing::Router;
use crate::shared::{self, Writes};
use crate::supervisor::{Supervised, supervise};

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
        if config.stream_tail_cache_bytes > 1 << 30 {
            return Err(BrokerError::invalid(
                "stream_tail_cache_bytes",
                format!("{} is over 1 GiB", config.stream_tail_cache_bytes),
            ));
        }
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
        let access_dir = config.data_dir.clone();
        let loopback_users = config.loopback_users.clone();
        // Opening may hash the default password (argon2id): off the runtime's workers.
        let access = tokio::task::spawn_blocking(move || Access::open(&access_dir, loopback_users))
            .await
            .map_err(|e| BrokerError::internal(format!("opening access.json: {e}")))?
            .map_err(|e| BrokerError::internal(e.to_string()))?;
        let body_writes = Writes::default();
        let (alarms, usage) = crate::alarms::spawn_monitor(crate::alarms::Thresholds {
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
            streams: RwLock::new(HashMap::new()),
            admin: Mutex::new(()),
            deleting: std::sync::Mutex::new(HashSet::new()),
            dirs: std::sync::Mutex::new(HashMap::new()),
            closing: AtomicBool::new(false),
            alarms,
            usage,
            front_ends: Arc::default(),
            connections: Arc::default(),
            traffic: crate::traffic::Traffic::default(),
            access: Arc::new(access),
            store,
            _lock: lock,
        });
        let broker = Broker { inner };
        let mut report = StartReport::default();
        let found = queue_dirs(&queues_dir)?;
        let (queues, messages) = broker.recover_queues(found).await?;
        report.queues = queues;
        report.messages = messages;
        // Streams first: bindings to them are kept only if they exist.
        report.streams = broker.recover_streams().await?;
        report.exchanges = broker.load_routing()?;
        report.queues -= broker.delete_exclusive_queues().await?;
        report.queues = report.queues.saturating_sub(broker.remove_orphans().await?);
        broker.start_housekeeping();
        report.open_files = weir_log::io::open_files();
        report.elapsed = started.elapsed();
        Ok((broker, report))
    }

    /// Recovers the queues `names` in two phases (see `queue::replay`): every
    /// queue's own log, then one pass over the shared log for all of them. Returns
    /// how many queues and messages.
    pub(crate) async fn recover_queues(
        &self,
        found: Vec<(String, PathBuf)>,
    ) -> Result<(usize, u64)> {
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
    pub(crate) fn queue_dir(&self, name: &str) -> Result<PathBuf> {
        crate::locks::lock(&self.inner.dirs)
            .get(name)
            .cloned()
            .ok_or_else(|| BrokerError::internal(format!("queue '{name}' has no directory")))
    }

    /// The number of the queue in `dir`, from its `id` file; a queue from before
    /// queues had numbers gets one now.
    pub(crate) fn queue_id_in(&self, dir: &Path) -> Result<u32> {
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
    pub(crate) fn next_queue_id(&self) -> Result<u32> {
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
    pub(crate) fn assign_queue_id(&self, name: &str) -> Result<u32> {
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
    pub(crate) async fn open_queue(
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
    pub(crate) fn start_queue(&self, queue: OpenedQueue<S::Log>, arrivals: Arrivals) -> u64 {
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
        // Everything logged by the queue's actor and its tasks names the queue.
        let span = tracing::info_span!("queue", queue = %name, id);
        let task = tokio::spawn(
            supervise(
                Arc::downgrade(&self.inner),
                Supervised {
                    name: name.clone(),
                    id,
                    options: options.clone(),
                    commands: receiver,
                },
                actor,
            )
            .instrument(span),
        );
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
    pub(crate) fn make_actor(
        &self,
        queue: OpenedQueue<S::Log>,
        arrivals: Arrivals,
        commands: crate::queue::command::Commands,
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

    /// Deletes the exclusive and transient queues a previous run left behind,
    /// with their bindings: the connection that owned an exclusive queue is gone,
    /// and RabbitMQ recovers neither kind (whether it stopped cleanly or was
    /// killed). Returns how many.
    pub(crate) async fn delete_exclusive_queues(&self) -> Result<usize> {
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
}

/// A queue whose own log is replayed, waiting for its shared messages.
pub(crate) struct OpenedQueue<L> {
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

pub(crate) fn queue_ids_path(data_dir: &Path) -> PathBuf {
    data_dir.join("meta").join("queue-ids.json")
}

pub(crate) fn read_next_queue_id(data_dir: &Path) -> Result<u32> {
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
pub(crate) fn queue_dirs(queues_dir: &Path) -> Result<Vec<(String, PathBuf)>> {
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
pub(crate) fn is_legacy_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
}

/// Takes `<data_dir>/LOCK` (an `flock`, released by the kernel if the process dies).
pub(crate) fn lock_data_dir(data_dir: &Path) -> Result<File> {
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

pub(crate) fn write_next_queue_id(data_dir: &Path, next: u32) -> Result<()> {
    let path = queue_ids_path(data_dir);
    if let Some(dir) = path.parent() {
        create_dir_all_durably(dir).map_err(|e| io_error("create", dir, e))?;
    }
    let json =
        serde_json::to_vec(&QueueIds { next }).map_err(|e| BrokerError::internal(e.to_string()))?;
    write_durably(&path, &json).map_err(|e| io_error("write", &path, e))
}

pub(crate) fn lease_seed() -> u64 {
    RandomState::new().hash_one(now_ms()) >> 2
}
