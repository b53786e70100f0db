//! The sync pool: the threads that run the `fdatasync`s of pipelined logs, so a
//! log's writer can go on writing while one is in progress.
//!
//! Threads: a process-wide pool of sync threads (as many as the writer pool,
//! `shared::default_threads`) serves every pipelined log. A log is assigned to one of
//! them (the one with the fewest logs) when it takes its first staged append, and
//! stays there until it closes, so its jobs are run in the order they were queued,
//! by one thread. A thread takes everything queued, from all its logs, and runs each
//! log's jobs together, one log after the other: each file of each log is synced
//! once per pass, so a fan-out to many queues costs one `fdatasync` per queue per
//! pass, not one per append (group commit across logs). The cost: the logs of one
//! thread wait for each other, and a slow `fdatasync` of one log (30 to 400 ms, see
//! below) delays the syncs, and so the confirms, of the others on its thread. A
//! panic while running one log's jobs fails that log only (as a failed sync does);
//! the thread goes on with the others. Below, "this thread" is the log's sync thread.
//!
//! Why: one `fdatasync` on the machines we measure usually takes 0.2 to 0.4 ms, but
//! every few seconds one takes 30 to 400 ms. With the sync on the writer thread,
//! nothing could be written, and so nothing delivered, for that long. A log that has
//! taken a staged append (`FileLog::submit_batch_staged`: readable once written,
//! answered once synced) therefore hands its syncs here: the writer writes a group,
//! makes it readable, queues a [`SyncJob`] with the group's answers and takes the
//! next group. This thread syncs whatever is queued with one `fdatasync` (a sync
//! covers everything written to the file before it started) and answers.
//!
//! A roll does not stop the writer either: it creates the next segment's files and
//! writes on into them, and queues a [`Seal`] with the old segment's last sync. This
//! thread then makes the roll durable in an order recovery relies on: the old
//! segment's data, the new files' headers, the old index's end entry, the directory.
//! Every job queued after the seal (the first appends of the new segment) is
//! answered only after all of that. Recovery handles a crash in between: see
//! `recovery`.
//!
//! Trims go here too: a trim writes the log's start offset with two syncs (see
//! `meta`), and at a queue's pace of one trim every half second those syncs were the
//! writer's most frequent stall. This thread writes it, publishes the new start to
//! readers and answers; the writer removes the segments below it when it next takes
//! in [`Progress`].
//!
//! A failed sync cannot be rolled back here (later groups are written and readable),
//! so it fails the log: every job after it is answered with the error, and the
//! writer, which reads [`Progress`] before each group, refuses appends until the log
//! is reopened and recovery finds what is really on disk.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};

use tokio::sync::oneshot;

use crate::error::{LogError, Result};
use crate::header::FILE_HEADER_LEN;
use crate::io::FileIo;
use crate::mailbox::{Sender, mailbox};
use crate::meta;
use crate::record::Appended;
use crate::shared::{Shared, default_threads};

/// What the sync thread is asked to do.
pub(crate) enum Job {
    Sync(SyncJob),
    /// Make `before` the log's first offset, durably.
    Trim {
        before: u64,
        reply: oneshot::Sender<Result<()>>,
    },
}

/// Sync `file` (everything written to it so far, at least up to `upto`), then
/// answer `replies`.
pub(crate) struct SyncJob {
    pub(crate) file: Arc<dyn FileIo>,
    pub(crate) path: PathBuf,
    /// The base offset of the segment `file` belongs to.
    pub(crate) base: u64,
    pub(crate) upto: u64,
    pub(crate) replies: Vec<(oneshot::Sender<Result<Appended>>, Appended)>,
    /// Set when `file` was just sealed: what else makes the roll durable.
    pub(crate) seal: Option<Box<Seal>>,
}

/// The rest of a roll, after the old segment's data is synced.
pub(crate) struct Seal {
    /// The old segment's index file, and how many bytes of it are written.
    pub(crate) index_file: Arc<dyn FileIo>,
    pub(crate) index_path: PathBuf,
    pub(crate) index_len: u64,
    /// Index entries not yet written, the end entry last (encoded).
    pub(crate) entries: Vec<u8>,
    /// The new segment's files, headers written, not synced.
    pub(crate) new_base: u64,
    pub(crate) new_log: Arc<dyn FileIo>,
    pub(crate) new_log_path: PathBuf,
    pub(crate) new_index: Arc<dyn FileIo>,
    pub(crate) new_index_path: PathBuf,
}

/// What the sync thread has done, for the writer.
#[derive(Default)]
pub(crate) struct Progress {
    /// Segment (by base offset) and position synced up to, newest first.
    pub(crate) synced: Option<(u64, u64)>,
    /// Jobs queued and not yet answered.
    pub(crate) in_flight: usize,
    /// The error of the first failed sync.
    pub(crate) failed: Option<LogError>,
    /// The highest start offset this thread has made durable.
    pub(crate) trimmed: u64,
    /// Jobs answered so far (what a panic did not answer is counted from it).
    answered: u64,
}

/// A pipelined log's side of the sync pool: its progress, and the pool thread its
/// jobs go to.
pub(crate) struct Syncer {
    log: Arc<LogSync>,
    /// The mailbox of the log's sync thread; `None` once finished.
    jobs: Option<Sender<(Arc<LogSync>, Job)>>,
    /// Logs on that thread, counted down when this one is done.
    load: Arc<AtomicUsize>,
}

/// What a sync thread needs of a log: its shared state and its progress.
struct LogSync {
    shared: Arc<Shared>,
    progress: Mutex<Progress>,
    /// Told whenever jobs of the log are answered.
    answered: Condvar,
}

impl Syncer {
    /// Assigns the log to the sync thread with the fewest logs, for as long as this
    /// `Syncer` lives.
    pub(crate) fn start(shared: Arc<Shared>) -> std::io::Result<Syncer> {
        let pool = SyncPool::global()?;
        let (thread, slot) = pool
            .slots
            .iter()
            .enumerate()
            .min_by_key(|(_, s)| s.logs.load(Ordering::Relaxed))
            .expect("invariant: a pool has at least one thread");
        slot.logs.fetch_add(1, Ordering::Relaxed);
        shared.sync_thread.store(thread, Ordering::Relaxed);
        Ok(Syncer {
            log: Arc::new(LogSync {
                shared,
                progress: Mutex::new(Progress::default()),
                answered: Condvar::new(),
            }),
            jobs: Some(slot.jobs.clone()),
            load: slot.logs.clone(),
        })
    }

    /// Queues a job.
    pub(crate) fn post(&self, job: Job) {
        lock(&self.log.progress).in_flight += 1;
        let sent = match &self.jobs {
            Some(jobs) => jobs.send((self.log.clone(), job)).map_err(|(_, job)| job),
            None => Err(job),
        };
        if let Err(job) = sent {
            // Finished, or the pool is gone (the global one never is): nobody will
            // sync these.
            answered(&mut lock(&self.log.progress), 1);
            let e = LogError::Closed;
            match job {
                Job::Sync(job) => {
                    for (reply, _) in job.replies {
                        let _ = reply.send(Err(e.clone()));
                    }
                }
                Job::Trim { reply, .. } => {
                    let _ = reply.send(Err(e));
                }
            }
        }
    }

    pub(crate) fn progress(&self) -> MutexGuard<'_, Progress> {
        lock(&self.log.progress)
    }

    /// Blocks until every queued job of this log is answered. A panic on the sync
    /// thread answers the jobs it held (see `SyncPool`), so this cannot hang on one.
    pub(crate) fn wait_idle(&self) {
        let mut p = lock(&self.log.progress);
        while p.in_flight > 0 {
            p = self
                .log
                .answered
                .wait_timeout(p, std::time::Duration::from_millis(100))
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
    }

    /// Lets the sync thread sync and answer what is queued, and waits for that.
    pub(crate) fn finish(&mut self) {
        if self.jobs.take().is_some() {
            self.wait_idle();
            self.load.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        self.finish();
    }
}

/// One sync thread, as a log joining the pool sees it.
struct Slot {
    jobs: Sender<(Arc<LogSync>, Job)>,
    /// Logs assigned to the thread.
    logs: Arc<AtomicUsize>,
}

/// The process-wide pool of sync threads, sized as the writer pool
/// (`shared::default_threads`).
struct SyncPool {
    slots: Vec<Slot>,
}

impl SyncPool {
    fn global() -> std::io::Result<&'static SyncPool> {
        static POOL: OnceLock<std::result::Result<SyncPool, (std::io::ErrorKind, String)>> =
            OnceLock::new();
        POOL.get_or_init(|| SyncPool::new(default_threads()).map_err(|e| (e.kind(), e.to_string())))
            .as_ref()
            .map_err(|(kind, message)| std::io::Error::new(*kind, message.clone()))
    }

    fn new(threads: usize) -> std::io::Result<SyncPool> {
        let mut slots = Vec::with_capacity(threads);
        for i in 0..threads {
            let (jobs, queue) = mailbox::<(Arc<LogSync>, Job)>();
            std::thread::Builder::new()
                .name(format!("weir-log-sync-{i}"))
                .spawn(move || {
                    while let Ok(first) = queue.recv_until(None) {
                        let mut taken = vec![first];
                        taken.extend(std::iter::from_fn(|| queue.try_recv()));
                        run_pass(taken);
                    }
                })?;
            slots.push(Slot {
                jobs,
                logs: Arc::new(AtomicUsize::new(0)),
            });
        }
        Ok(SyncPool { slots })
    }
}

/// One pass of a sync thread over what it took from its mailbox: the jobs of each
/// log, in the order they were queued, are run together (so each file of each log
/// is synced once: group commit across the logs of the thread), one log after the
/// other. A panic while running one log's jobs fails that log only.
fn run_pass(taken: Vec<(Arc<LogSync>, Job)>) {
    let mut by_log: Vec<(Arc<LogSync>, Vec<Job>)> = Vec::new();
    let mut index: HashMap<*const LogSync, usize> = HashMap::new();
    for (log, job) in taken {
        let at = *index.entry(Arc::as_ptr(&log)).or_insert_with(|| {
            by_log.push((log.clone(), Vec::new()));
            by_log.len() - 1
        });
        by_log[at].1.push(job);
    }
    for (log, jobs) in by_log {
        let count = jobs.len();
        let answered_before = lock(&log.progress).answered;
        let outcome = catch_unwind(AssertUnwindSafe(|| run(&log.shared, &log.progress, jobs)));
        if let Err(panic) = outcome {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".to_string());
            tracing::error!(dir = %log.shared.dir.display(), %message, "a log's sync panicked; the log refuses appends until reopened");
            let mut p = lock(&log.progress);
            // The replies of the jobs it held were dropped with them (their callers
            // hear `Closed`); count them answered so the writer does not wait on them.
            let done = usize::try_from(p.answered - answered_before).unwrap_or(count);
            answered(&mut p, count.saturating_sub(done));
            if p.failed.is_none() {
                p.failed = Some(LogError::Failed {
                    op: "sync",
                    path: log.shared.dir.clone(),
                    source: Arc::new(std::io::Error::other(format!(
                        "the log's sync panicked: {message}"
                    ))),
                });
            }
        }
        log.answered.notify_all();
    }
}

/// Counts `n` jobs answered.
fn answered(progress: &mut Progress, n: usize) {
    progress.in_flight -= n;
    progress.answered += n as u64;
}

fn lock(progress: &Mutex<Progress>) -> MutexGuard<'_, Progress> {
    // Only plain field updates happen under this lock.
    progress
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Carries out the seals of `group` in order, then syncs each other file of it once
/// (the last job of a file has the highest `upto`) and answers every sync job, then
/// carries out and answers the trims.
fn run(shared: &Shared, progress: &Mutex<Progress>, jobs: Vec<Job>) {
    let mut group = Vec::with_capacity(jobs.len());
    let mut trims = Vec::new();
    for job in jobs {
        match job {
            Job::Sync(job) => group.push(job),
            Job::Trim { before, reply } => trims.push((before, reply)),
        }
    }
    if !group.is_empty() {
        sync_all(shared, progress, group);
    }
    for (before, reply) in trims {
        let result = trim(shared, progress, before);
        answered(&mut lock(progress), 1);
        let _ = reply.send(result);
    }
}

/// Makes `before` the log's first offset on disk, then for readers.
fn trim(shared: &Shared, progress: &Mutex<Progress>, before: u64) -> Result<()> {
    let trimmed = lock(progress).trimmed;
    if before <= trimmed {
        return Ok(());
    }
    let result = meta::write(&*shared.fs, &shared.dir, before);
    // After a failure the rename may still have happened: believe the disk, so the
    // first offset never moves back after a restart.
    let now = match &result {
        Ok(()) => before,
        Err(_) => match meta::read(&*shared.fs, &shared.dir) {
            Ok(Some(on_disk)) if on_disk > trimmed && on_disk <= before => on_disk,
            _ => trimmed,
        },
    };
    if now > trimmed {
        lock(progress).trimmed = now;
        shared.watermark.send_modify(|w| w.start = w.start.max(now));
    }
    result
}

fn sync_all(shared: &Shared, progress: &Mutex<Progress>, group: Vec<SyncJob>) {
    let failed = lock(progress).failed.clone();
    let mut outcome: Result<()> = failed.map_or(Ok(()), Err);
    let mut synced = None;
    let mut done: Vec<u64> = Vec::new();
    for job in &group {
        let Some(seal) = &job.seal else {
            continue;
        };
        if outcome.is_err() {
            break;
        }
        outcome = seal_durably(shared, job, seal);
        done.push(job.base);
        synced = Some((seal.new_base, FILE_HEADER_LEN as u64));
    }
    if outcome.is_ok() {
        for job in group.iter().rev() {
            if done.contains(&job.base) {
                continue;
            }
            done.push(job.base);
            if let Err(e) = sync_file(shared, &job.file, &job.path) {
                outcome = Err(e);
                break;
            }
            if synced.is_none_or(|newest| (job.base, job.upto) > newest) {
                synced = Some((job.base, job.upto));
            }
        }
    }
    if let Err(e) = &outcome {
        tracing::error!(error = %e, "fsync failed; the log refuses appends until reopened");
    }
    {
        let mut p = lock(progress);
        answered(&mut p, group.len());
        match &outcome {
            Ok(()) => {
                if let Some((base, upto)) = synced
                    && p.synced
                        .is_none_or(|(b, u)| base > b || (base == b && upto > u))
                {
                    p.synced = Some((base, upto));
                }
            }
            Err(e) => {
                if p.failed.is_none() {
                    p.failed = Some(e.clone());
                }
            }
        }
    }
    for job in group {
        for (reply, appended) in job.replies {
            let _ = reply.send(outcome.clone().map(|()| appended));
        }
    }
}

fn sync_file(shared: &Shared, file: &Arc<dyn FileIo>, path: &std::path::Path) -> Result<()> {
    shared
        .counters
        .data_syncs
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let started = std::time::Instant::now();
    let synced = file.sync_data();
    crate::io_metrics::record_data_sync(started.elapsed());
    synced.map_err(|e| LogError::io("fsync", path, e))
}

/// Makes a roll durable, in the order recovery relies on: the old segment's data
/// (so its end entry never points past data that is not on disk), the new files'
/// headers (so a durable end entry means the next segment's headers are too), the
/// old index's remaining entries and end entry, and last the directory, which makes
/// the new files' names durable.
fn seal_durably(shared: &Shared, job: &SyncJob, seal: &Seal) -> Result<()> {
    sync_file(shared, &job.file, &job.path)?;
    sync_file(shared, &seal.new_log, &seal.new_log_path)?;
    sync_file(shared, &seal.new_index, &seal.new_index_path)?;
    if !seal.entries.is_empty()
        && let Err(e) = seal
            .index_file
            .write_all_at(seal.index_len, &[&seal.entries])
    {
        // The index only speeds reads up: the sealed segment's data is synced whole
        // by now, and an index without its end entry is rebuilt from it (in memory
        // by readers, on disk at the next open). A full disk must not stop the log
        // for it. The cut-off entries are truncated away so the file holds whole
        // entries only.
        let e = LogError::io("write", &seal.index_path, e);
        tracing::warn!(error = %e, "could not write a sealed segment's last index entries; its index is rebuilt when needed");
        let _ = seal.index_file.set_len(seal.index_len);
    }
    seal.index_file
        .sync_data()
        .map_err(|e| LogError::io("fsync", &seal.index_path, e))?;
    shared
        .fs
        .sync_dir(&shared.dir)
        .map_err(|e| LogError::io("sync", &shared.dir, e))?;
    tracing::debug!(sealed = job.base, next = seal.new_base, "sealed a segment");
    Ok(())
}
