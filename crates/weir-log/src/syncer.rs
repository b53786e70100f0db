//! The sync thread of a pipelined log: it runs the `fdatasync`s so the writer thread
//! can go on writing while one is in progress.
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
//! A failed sync cannot be rolled back here (later groups are written and readable),
//! so it fails the log: every job after it is answered with the error, and the
//! writer, which reads [`Progress`] before each group, refuses appends until the log
//! is reopened and recovery finds what is really on disk.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use tokio::sync::oneshot;

use crate::error::{LogError, Result};
use crate::file_log::Shared;
use crate::io::FileIo;
use crate::mailbox::{Sender, mailbox};
use crate::record::Appended;

/// Sync `file` (everything written to it so far, at least up to `upto`), then
/// answer `replies`.
pub(crate) struct SyncJob {
    pub(crate) file: Arc<dyn FileIo>,
    pub(crate) path: PathBuf,
    /// The base offset of the segment `file` belongs to.
    pub(crate) base: u64,
    pub(crate) upto: u64,
    pub(crate) replies: Vec<(oneshot::Sender<Result<Appended>>, Appended)>,
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
}

pub(crate) struct Syncer {
    jobs: Option<Sender<SyncJob>>,
    progress: Arc<Mutex<Progress>>,
    thread: Option<JoinHandle<()>>,
}

impl Syncer {
    /// Starts the sync thread.
    pub(crate) fn start(shared: Arc<Shared>) -> std::io::Result<Syncer> {
        let (jobs, queue) = mailbox::<SyncJob>();
        let progress = Arc::new(Mutex::new(Progress::default()));
        let state = progress.clone();
        let thread = std::thread::Builder::new()
            .name("weir-log-sync".into())
            .spawn(move || {
                while let Ok(first) = queue.recv_until(None) {
                    let mut group = vec![first];
                    group.extend(std::iter::from_fn(|| queue.try_recv()));
                    run(&shared, &state, group);
                }
            })?;
        Ok(Syncer {
            jobs: Some(jobs),
            progress,
            thread: Some(thread),
        })
    }

    /// Queues a job.
    pub(crate) fn post(&self, job: SyncJob) {
        lock(&self.progress).in_flight += 1;
        let sent = match &self.jobs {
            Some(jobs) => jobs.send(job),
            None => Err(job),
        };
        if let Err(job) = sent {
            // Finished, or the thread is gone (it cannot exit while `jobs` lives,
            // unless it panicked): nobody will sync these.
            lock(&self.progress).in_flight -= 1;
            let e = LogError::Closed;
            for (reply, _) in job.replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }

    pub(crate) fn progress(&self) -> MutexGuard<'_, Progress> {
        lock(&self.progress)
    }

    /// Lets the thread sync and answer what is queued, and waits for it to end.
    pub(crate) fn finish(&mut self) {
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        self.finish();
    }
}

fn lock(progress: &Mutex<Progress>) -> MutexGuard<'_, Progress> {
    // Only plain field updates happen under this lock.
    progress
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Syncs each file of `group` once (the last job of a file has the highest `upto`)
/// and answers every job.
fn run(shared: &Shared, progress: &Mutex<Progress>, group: Vec<SyncJob>) {
    let failed = lock(progress).failed.clone();
    let mut outcome: Result<()> = failed.map_or(Ok(()), Err);
    let mut synced = None;
    if outcome.is_ok() {
        let mut done: Vec<u64> = Vec::new();
        for job in group.iter().rev() {
            if done.contains(&job.base) {
                continue;
            }
            done.push(job.base);
            shared
                .counters
                .data_syncs
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if let Err(e) = job.file.sync_data() {
                let e = LogError::io("fsync", &job.path, e);
                tracing::error!(error = %e, "fsync failed; the log refuses appends until reopened");
                outcome = Err(e);
                break;
            }
            if synced.is_none() {
                synced = Some((job.base, job.upto));
            }
        }
    }
    {
        let mut p = lock(progress);
        p.in_flight -= group.len();
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
