//! [`FileLog`]: the durable log on disk.
//!
//! Threads: the log's writer (see `writer`) owns every change to its files; it runs
//! on one thread of the process-wide writer pool (see `writer_pool`), shared with
//! other logs, and a pipelined log's syncs run on the sync pool (see `syncer`).
//! Reads run on a shared pool of blocking threads (see `pool`) and go straight to the
//! segment files with positional reads, so they never wait for the writer. Readers and
//! the writer share only the segment map (a `RwLock` held for map lookups, never across
//! I/O) and the *watermark*, a `tokio::sync::watch` of the first and next offsets,
//! which the writer moves when a group is committed. A group of plain appends
//! (`append_batch`, `submit_batch`) under `fsync = always` is committed after its
//! `fdatasync`, so readers see it only once durable; a group holding a staged append
//! (`submit_batch_staged`: the broker delivers a message once written and confirms it
//! once synced, decision 0005) is committed once written, and its sync follows on the
//! sync pool: readers may see those records before they are durable, and a crash
//! before the sync can lose records a reader saw. Under `interval` and `never` a group
//! is committed once written.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, watch};

use crate::batch::EncodedBatch;
use crate::config::{LogConfig, Retention};
use crate::error::{LogError, Result};
use crate::incoming::IncomingBatch;
use crate::io::{DirLock, Fs, StdFs};
use crate::message_log::{LogStats, MessageLog, Watermark, wait_for};
use crate::pool::IoPool;
use crate::record::{Appended, NewRecord, Offset, ReadLimits, Record};
use crate::recovery::{self, RecoveryReport};
use crate::shared::{Counters, Shared, now_ms};
use crate::stored::StoredBatches;
use crate::tail_cache::TailCache;
use crate::writer::{Request, RetentionReport, Writer};
use crate::writer_pool::{WriterHandle, WriterPool};

/// How long `open` keeps trying a held directory lock before answering `Locked`.
///
/// A lock can outlive its holder's `close` by a moment: when any thread of the process
/// spawns a child, the child holds a copy of every file descriptor between `fork` and
/// `exec` (close-on-exec only closes them at `exec`), and an `flock` lasts while any
/// copy is open. A real second writer still gets `Locked`, just not instantly.
const LOCK_WAIT: Duration = Duration::from_millis(500);

fn lock_dir(fs: &dyn Fs, dir: &Path) -> Result<DirLock> {
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        match fs.lock_dir(dir) {
            Ok(lock) => return Ok(lock),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    return Err(LogError::Locked {
                        path: dir.to_path_buf(),
                    });
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(LogError::io("lock", dir, e)),
        }
    }
}

/// A log stored in a directory of segment files. Cheap to clone: clones share the same
/// writer. When the last clone is dropped without [`FileLog::close`], the writer pool
/// still syncs the log and lets go of it, but `close` is the way to know it is done.
#[derive(Clone, Debug)]
pub struct FileLog {
    shared: Arc<Shared>,
    requests: WriterHandle,
}

impl FileLog {
    /// Opens the log in `dir` (creating it if needed), repairing a torn tail.
    ///
    /// This blocks on file I/O (recovery reads the tail and syncs what it repairs);
    /// from async code, call it where blocking is allowed (e.g. `spawn_blocking`).
    ///
    /// # Errors
    /// [`LogError::InvalidConfig`], [`LogError::Locked`] if another writer has the
    /// directory, [`LogError::Corrupt`] / [`LogError::UnsupportedVersion`] for damage
    /// recovery may not repair on its own, [`LogError::Io`] for I/O failures.
    pub fn open(dir: impl AsRef<Path>, config: LogConfig) -> Result<(FileLog, RecoveryReport)> {
        FileLog::open_with(StdFs::shared(), dir, config)
    }

    /// [`FileLog::open`] on another file system (the crash tests' `CrashFs`).
    pub fn open_with(
        fs: Arc<dyn Fs>,
        dir: impl AsRef<Path>,
        config: LogConfig,
    ) -> Result<(FileLog, RecoveryReport)> {
        config.validate()?;
        let dir = dir.as_ref().to_path_buf();
        fs.create_dir_all(&dir)
            .map_err(|e| LogError::io("create directory", &dir, e))?;
        let lock = if config.lock_dir {
            Some(lock_dir(&*fs, &dir)?)
        } else {
            None
        };
        let recovered = recovery::recover(&fs, &dir, &config, now_ms())?;
        let (watermark, _) = watch::channel(Watermark {
            start: recovered.start_offset,
            next: recovered.active.next_offset,
            closed: false,
        });
        let tail_cache_bytes = usize::try_from(config.tail_cache_bytes).unwrap_or(usize::MAX);
        let shared = Arc::new(Shared {
            dir,
            fs,
            config,
            segments: RwLock::new(recovered.segments),
            watermark,
            counters: Counters::default(),
            sync_thread: AtomicUsize::new(usize::MAX),
            tail: TailCache::new(tail_cache_bytes),
        });
        let writer = Writer::new(
            shared.clone(),
            lock,
            recovered.active,
            recovered.start_offset,
        );
        let requests = WriterPool::global(&shared.dir)?.register(writer);
        Ok((FileLog { shared, requests }, recovered.report))
    }

    /// The log's directory.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// The configuration it was opened with.
    pub fn config(&self) -> &LogConfig {
        &self.shared.config
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<Result<T>>) -> Request) -> Result<T> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(make(reply))
            .map_err(|_| LogError::Closed)?;
        answer.await.map_err(|_| LogError::Closed)?
    }

    /// Encodes `records` and queues their append now; see [`MessageLog::submit_batch`].
    fn submit(
        &self,
        records: &[NewRecord],
        sync: bool,
        written: Option<oneshot::Sender<Result<Appended>>>,
    ) -> impl Future<Output = Result<Appended>> + Send + use<> {
        let config = &self.shared.config;
        let batch = EncodedBatch::encode(
            records,
            now_ms(),
            config.max_record_bytes,
            config.max_batch_bytes,
        );
        self.submit_encoded(batch, sync, written)
    }

    /// Queues the append of `batch` now. An append that is not queued tells
    /// `written` why.
    fn submit_encoded(
        &self,
        batch: Result<EncodedBatch>,
        sync: bool,
        written: Option<oneshot::Sender<Result<Appended>>>,
    ) -> impl Future<Output = Result<Appended>> + Send + use<> {
        let (reply, answer) = oneshot::channel();
        let submitted = match batch {
            Err(e) => {
                if let Some(written) = written {
                    let _ = written.send(Err(e.clone()));
                }
                Err(e)
            }
            Ok(batch) => self
                .requests
                .send(Request::Append {
                    batch,
                    sync,
                    written,
                    reply,
                })
                .map_err(|request| {
                    if let Request::Append {
                        written: Some(written),
                        ..
                    } = request
                    {
                        let _ = written.send(Err(LogError::Closed));
                    }
                    LogError::Closed
                }),
        };
        async move {
            submitted?;
            answer.await.map_err(|_| LogError::Closed)?
        }
    }

    /// Removes sealed segments past the retention limits as of `now_ms`. The writer
    /// also does this by itself every `retention_check_interval_ms`.
    pub async fn enforce_retention(&self, now_ms: i64) -> Result<RetentionReport> {
        self.ask(|reply| Request::Retention {
            new: None,
            now_ms,
            reply,
        })
        .await
    }

    /// Syncs everything written so far, whatever the policy.
    pub async fn sync(&self) -> Result<()> {
        self.ask(|reply| Request::Sync { reply }).await
    }

    /// Reads on the calling thread. For callers that are already allowed to block.
    pub fn read_blocking(&self, from: Offset, limits: ReadLimits) -> Result<Vec<Record>> {
        self.shared.read(from.0, limits)
    }
}

impl MessageLog for FileLog {
    fn submit_batch(
        &self,
        records: &[NewRecord],
    ) -> impl Future<Output = Result<Appended>> + Send + use<> {
        self.submit(records, true, None)
    }

    fn submit_batch_staged(
        &self,
        records: &[NewRecord],
    ) -> (
        impl Future<Output = Result<Appended>> + Send + use<>,
        impl Future<Output = Result<Appended>> + Send + use<>,
    ) {
        let (written, is_written) = oneshot::channel();
        let durable = self.submit(records, true, Some(written));
        let written = async move {
            match is_written.await {
                Ok(result) => result,
                // Not queued (the error comes from `durable`) or refused unanswered.
                Err(_) => Err(LogError::Closed),
            }
        };
        (written, durable)
    }

    /// Under `fsync = always` the batch becomes durable with the next synced
    /// append of this log, or within 100 ms (`UNSYNCED_APPENDS_WITHIN`) when none
    /// comes. Under `interval` and `never` it is the same as `append_batch`.
    fn append_batch_unsynced(
        &self,
        records: &[NewRecord],
    ) -> impl Future<Output = Result<Appended>> + Send + use<> {
        self.submit(records, false, None)
    }

    fn append_incoming(
        &self,
        batch: IncomingBatch,
        sync: bool,
    ) -> impl Future<Output = Result<Appended>> + Send + use<> {
        let config = &self.shared.config;
        let batch = batch.into_encoded(now_ms(), config.max_record_bytes, config.max_batch_bytes);
        self.submit_encoded(batch, sync, None)
    }

    fn stats(&self) -> LogStats {
        let mark = *self.shared.watermark.borrow();
        let segments = self.shared.segments_snapshot();
        LogStats {
            first_offset: Offset(mark.start),
            next_offset: Offset(mark.next),
            segments: segments.len(),
            size_bytes: segments.values().map(|s| s.committed_len()).sum(),
            appends: self.shared.counters.appends.load(Ordering::Relaxed),
            commit_groups: self.shared.counters.commit_groups.load(Ordering::Relaxed),
            data_syncs: self.shared.counters.data_syncs.load(Ordering::Relaxed),
        }
    }

    fn append_batch(&self, records: &[NewRecord]) -> impl Future<Output = Result<Appended>> + Send {
        let config = &self.shared.config;
        // Encoding and checksumming happen here, on the caller's thread, so many
        // appenders share that work instead of queueing it on the writer.
        let batch = EncodedBatch::encode(
            records,
            now_ms(),
            config.max_record_bytes,
            config.max_batch_bytes,
        );
        async move {
            let batch = batch?;
            self.ask(|reply| Request::Append {
                batch,
                sync: true,
                written: None,
                reply,
            })
            .await
        }
    }

    fn read_from(
        &self,
        from: Offset,
        limits: ReadLimits,
    ) -> impl Future<Output = Result<Vec<Record>>> + Send {
        // The tail of a stream is answered here, without a trip to the I/O pool.
        let cached = self.shared.read_cached(from.0, limits);
        let shared = self.shared.clone();
        async move {
            match cached {
                Some(cached) => cached,
                None => {
                    IoPool::global()
                        .run(move || shared.read(from.0, limits))
                        .await
                }
            }
        }
    }

    fn read_stored(
        &self,
        from: Offset,
        limits: ReadLimits,
    ) -> impl Future<Output = Result<StoredBatches>> + Send {
        // The tail of a stream is answered here, without a trip to the I/O pool.
        let cached = self.shared.read_stored_cached(from.0, limits);
        let shared = self.shared.clone();
        async move {
            match cached {
                Some(cached) => Ok(cached),
                None => {
                    IoPool::global()
                        .run(move || shared.read_stored(from.0, limits))
                        .await
                }
            }
        }
    }

    fn first_offset(&self) -> Offset {
        Offset(self.shared.watermark.borrow().start)
    }

    fn next_offset(&self) -> Offset {
        Offset(self.shared.watermark.borrow().next)
    }

    fn offset_for_timestamp(
        &self,
        timestamp_ms: i64,
    ) -> impl Future<Output = Result<Option<Offset>>> + Send {
        let shared = self.shared.clone();
        IoPool::global().run(move || shared.offset_for_timestamp(timestamp_ms))
    }

    fn trim_before(&self, offset: Offset) -> impl Future<Output = Result<()>> + Send {
        self.ask(move |reply| Request::Trim {
            before: offset.0,
            reply,
        })
    }

    fn wait_for(&self, offset: Offset) -> impl Future<Output = Result<Offset>> + Send {
        wait_for(self.shared.watermark.subscribe(), offset)
    }

    async fn reconfigure(&self, retention: Retention) -> Result<()> {
        self.shared.config.with_retention(retention).validate()?;
        let report = self
            .ask(|reply| Request::Retention {
                new: Some(retention),
                now_ms: now_ms(),
                reply,
            })
            .await?;
        tracing::debug!(
            ?retention,
            removed = report.segments_removed,
            "log reconfigured"
        );
        Ok(())
    }

    async fn close(&self) -> Result<()> {
        match self.ask(|reply| Request::Close { reply }).await {
            Err(LogError::Closed) if self.shared.watermark.borrow().closed => Ok(()),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    //! The log on the shared writer and sync pools: one log's failure stays its own.

    use std::time::Duration;

    use super::*;
    use crate::testing::{CrashFs, Torn};

    const DIR: &str = "/q";

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    fn open(fs: &CrashFs) -> FileLog {
        FileLog::open_with(fs.shared(), DIR, LogConfig::default())
            .unwrap()
            .0
    }

    /// The writer thread and (once pipelined) the sync thread of a log.
    fn threads(log: &FileLog) -> (usize, usize) {
        (
            log.requests.thread(),
            log.shared.sync_thread.load(Ordering::Relaxed),
        )
    }

    /// Opens pipelined logs, each on its own `CrashFs`, until two run on the same
    /// writer thread and the same sync thread; returns those two.
    fn two_logs_on_the_same_threads(rt: &tokio::runtime::Runtime) -> [(CrashFs, FileLog); 2] {
        let mut opened: Vec<(CrashFs, FileLog)> = Vec::new();
        for i in 0..1000 {
            let fs = CrashFs::new();
            let log = open(&fs);
            let (written, durable) = log.submit_batch_staged(&[NewRecord::new(format!("{i}"))]);
            rt.block_on(written).unwrap();
            rt.block_on(durable).unwrap();
            let key = threads(&log);
            if let Some(at) = opened.iter().position(|(_, l)| threads(l) == key) {
                return [opened.swap_remove(at), (fs, log)];
            }
            opened.push((fs, log));
        }
        panic!("no two logs shared their threads");
    }

    /// Issue 19: a failed `fdatasync` fails its own log only; another log synced by
    /// the same sync thread and written by the same writer thread goes on.
    #[test]
    fn a_failed_sync_fails_only_its_log() {
        let rt = runtime();
        let [(fs_a, a), (_fs_b, b)] = two_logs_on_the_same_threads(&rt);
        fs_a.fail_next_syncs(1);
        let (written, durable) = a.submit_batch_staged(&[NewRecord::new("doomed")]);
        rt.block_on(written).unwrap();
        let failed = rt.block_on(durable);
        assert!(
            matches!(failed, Err(LogError::Io { op: "fsync", .. })),
            "{failed:?}"
        );
        let refused = rt.block_on(a.append_batch(&[NewRecord::new("after")]));
        assert!(
            matches!(refused, Err(LogError::Failed { .. })),
            "{refused:?}"
        );
        for i in 0..20 {
            let (written, durable) = b.submit_batch_staged(&[NewRecord::new(format!("s{i}"))]);
            rt.block_on(written).unwrap();
            rt.block_on(durable).unwrap();
            rt.block_on(b.append_batch(&[NewRecord::new(format!("p{i}"))]))
                .unwrap();
        }
        assert_eq!(b.next_offset(), Offset(41));
        rt.block_on(b.close()).unwrap();
        assert!(rt.block_on(a.close()).is_err(), "its final sync is refused");
    }

    /// A panic in one log's step fails that log with a clear error and releases its
    /// directory; the other logs of the writer thread go on.
    #[test]
    fn a_panicking_writer_step_fails_only_its_log() {
        let rt = runtime();
        let [(fs_a, a), (_fs_b, b)] = two_logs_on_the_same_threads(&rt);
        let closed = wait_for(a.shared.watermark.subscribe(), Offset(u64::MAX));
        a.requests
            .send(Request::Panic)
            .unwrap_or_else(|_| panic!("sent"));
        // Requests taken with the panicking step hear `Closed`; later ones the cause.
        assert!(matches!(rt.block_on(closed), Err(LogError::Closed)));
        let refused = rt.block_on(a.append_batch(&[NewRecord::new("after")]));
        assert!(
            matches!(
                &refused,
                Err(LogError::Failed {
                    op: "run the writer of",
                    ..
                })
            ),
            "{refused:?}"
        );
        rt.block_on(b.append_batch(&[NewRecord::new("goes on")]))
            .unwrap();
        // The directory was released: it opens again, with what was synced.
        let (reopened, _) = FileLog::open_with(fs_a.shared(), DIR, LogConfig::default()).unwrap();
        assert_eq!(reopened.next_offset(), Offset(1));
        rt.block_on(reopened.close()).unwrap();
        rt.block_on(b.close()).unwrap();
    }

    /// Dropping every handle without `close` still syncs the log and lets the pool
    /// let go of it.
    #[test]
    fn dropping_every_handle_syncs_and_releases_the_log() {
        let rt = runtime();
        let fs = CrashFs::new();
        let log = open(&fs);
        let clone = log.clone();
        // Pipelined, then one append answered before its sync.
        let (written, durable) = log.submit_batch_staged(&[NewRecord::new("staged")]);
        rt.block_on(written).unwrap();
        rt.block_on(durable).unwrap();
        rt.block_on(clone.append_batch_unsynced(&[NewRecord::new("unsynced")]))
            .unwrap();
        let shared = Arc::downgrade(&log.shared);
        let closed = wait_for(log.shared.watermark.subscribe(), Offset(u64::MAX));
        drop(log);
        drop(clone);
        assert!(matches!(rt.block_on(closed), Err(LogError::Closed)));
        let released = Instant::now() + Duration::from_secs(10);
        while shared.upgrade().is_some() {
            assert!(Instant::now() < released, "the pool still holds the log");
            std::thread::sleep(Duration::from_millis(5));
        }
        let disk = fs.after_crash(Torn::Synced);
        let (log, report) = FileLog::open_with(disk.shared(), DIR, LogConfig::default()).unwrap();
        assert_eq!(report.truncated_bytes, 0, "{report:?}");
        let records = rt
            .block_on(log.read_from(Offset(0), ReadLimits::records(10)))
            .unwrap();
        let bodies: Vec<&[u8]> = records.iter().map(|r| &r.body[..]).collect();
        assert_eq!(bodies, [&b"staged"[..], b"unsynced"]);
        rt.block_on(log.close()).unwrap();
    }
}
