//! The writer thread: the only code that changes a log's files.
//!
//! One thread per log receives requests on a channel. It takes the first request,
//! then everything else already queued (up to [`MAX_GROUP_BYTES`]), writes all the
//! appends with one vectored write and — under `fsync = always` — makes them durable
//! with one `fdatasync`. While that sync runs, new appends queue up and form the next
//! group: this is group commit, and it is why many concurrent appenders cost about one
//! sync per round instead of one each. `fsync` never runs on an async runtime.
//!
//! Appenders encode and checksum their batches on their own threads (see `batch`);
//! here a batch only gets its base offset patched in.
//!
//! Order of effects per group (each step happens only after the previous succeeded):
//! 1. write the batches at the end of the active segment;
//! 2. `fdatasync` (policy `always`);
//! 3. write index entries for the synced batches (never for unsynced ones);
//! 4. publish the new end to readers, then answer the appenders.
//!
//! If 1 or 2 fails, the segment is truncated back to where the group began and every
//! append of the group gets the error; offsets are handed out again from there. A full
//! disk therefore costs the failed appends and nothing else: a failed *write* (ENOSPC
//! or any other) never puts the log in the failed state by itself, however many
//! appends before it still wait for their sync, and neither does a failed segment
//! roll. If the truncation (or the removal of a half-made segment) fails, the writer
//! refuses appends and retries that repair before each later group and on its timer;
//! once it succeeds the log takes appends again. Only a failed `fdatasync` of data
//! that may already have been seen (acknowledged, or readable) stops the log until it
//! is reopened, which runs recovery: after a failed sync the kernel may have dropped
//! the dirty pages, and a retried sync would falsely succeed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::mailbox::{Empty, Receiver};
use tokio::sync::oneshot;

use crate::batch::EncodedBatch;
use crate::config::FsyncPolicy;
use crate::error::{LogError, Result};
use crate::header::FILE_HEADER_LEN;
use crate::index::{ENTRY_LEN, IndexEntry};
use crate::io::{DirLock, FileIo};
use crate::meta;
use crate::record::{Appended, Offset};
use crate::recovery::ActiveState;
use crate::segment::{Segment, index_file_name, log_file_name};
use crate::shared::{Shared, now_ms};
use crate::syncer::{Job, Seal, SyncJob, Syncer};

/// Most bytes of appends written (and synced) as one group. Bounds the latency one
/// group adds to the next and the memory held by queued appends.
pub(crate) const MAX_GROUP_BYTES: u64 = 16 * 1024 * 1024;

/// Under `always`, how long an unsynced append (`FileLog::append_batch_unsynced`) may
/// stay unsynced when no synced append comes to carry it.
pub(crate) const UNSYNCED_APPENDS_WITHIN: Duration = Duration::from_millis(100);

/// While a trim is on the sync thread, how often the writer looks for its end.
const TRIM_PROGRESS_EVERY: Duration = Duration::from_millis(5);

/// While a repair is owed (see `Repair`), how often the writer retries it when no
/// append comes to try it first.
const REPAIR_EVERY: Duration = Duration::from_millis(100);

/// What the writer can be asked to do.
pub(crate) enum Request {
    Append {
        batch: EncodedBatch,
        /// False: answer once written; the data is synced with the next sync (see
        /// `FileLog::append_batch_unsynced`).
        sync: bool,
        /// Told once the batch is written and readable, before its sync (see
        /// `FileLog::submit_batch_staged`).
        written: Option<oneshot::Sender<Result<Appended>>>,
        reply: oneshot::Sender<Result<Appended>>,
    },
    Trim {
        before: u64,
        reply: oneshot::Sender<Result<()>>,
    },
    Retention {
        now_ms: i64,
        reply: oneshot::Sender<Result<RetentionReport>>,
    },
    Sync {
        reply: oneshot::Sender<Result<()>>,
    },
    Close {
        reply: oneshot::Sender<Result<()>>,
    },
}

/// When a new segment's files are synced (see `Writer::create_next_segment`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Durably {
    Now,
    Later,
}

/// How a segment removal is made durable (see `Writer::remove_segments`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Removal {
    /// The directory is synced after each segment.
    Durable,
    /// The start offset above the segments is durable already (a trim).
    BelowDurableStart,
}

/// A cleanup the writer owes before it may take appends again (see `Writer::repair`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Repair {
    /// Truncate the active segment back to this position, then sync it: bytes of a
    /// failed write may lie beyond it.
    Truncate { pos: u64 },
    /// Remove the half-made segment at this base offset, durably.
    RemoveSegment { base: u64 },
}

/// What one retention pass removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Segments removed.
    pub segments_removed: usize,
    /// Bytes of segment files removed.
    pub bytes_removed: u64,
    /// First offset after the pass.
    pub first_offset: Offset,
}

/// An append that has an offset and a position but is not yet written.
struct Pending {
    batch: EncodedBatch,
    sync: bool,
    written: Option<oneshot::Sender<Result<Appended>>>,
    reply: oneshot::Sender<Result<Appended>>,
    first: u64,
    pos: u64,
}

/// Answers an append that is not taken.
fn refuse(
    written: Option<oneshot::Sender<Result<Appended>>>,
    reply: oneshot::Sender<Result<Appended>>,
    error: &LogError,
) {
    if let Some(written) = written {
        let _ = written.send(Err(error.clone()));
    }
    let _ = reply.send(Err(error.clone()));
}

impl Pending {
    fn appended(&self) -> Appended {
        Appended {
            first: Offset(self.first),
            next: Offset(self.first + u64::from(self.batch.count())),
        }
    }
}

pub(crate) struct Writer {
    shared: Arc<Shared>,
    /// Held for the writer's life (unless the config turns it off); released
    /// before `close` answers.
    lock: Option<DirLock>,
    active: Arc<Segment>,
    index_file: Arc<dyn FileIo>,
    /// Bytes of the index file written so far (header + persisted entries).
    index_file_len: u64,
    /// Bytes of the index file known to be on disk.
    index_synced_len: u64,
    /// End of the bytes written to the active segment.
    write_pos: u64,
    /// End of the bytes of the active segment known to be on disk.
    synced_pos: u64,
    next_offset: u64,
    start_offset: u64,
    /// Newest timestamp in the active segment.
    max_timestamp_ms: i64,
    /// Batch bytes written since the last index entry.
    bytes_since_entry: u64,
    /// Index entries readers already use that are not yet in the index file, because
    /// the data they point at is not yet synced.
    unpersisted: Vec<IndexEntry>,
    last_sync: Instant,
    next_housekeeping: Instant,
    /// Set while the log refuses appends: a failed sync (until reopened) or a
    /// rollback or cleanup that failed (until `repair` succeeds).
    failed: Option<LogError>,
    /// The cleanup that would lift `failed`; `None` while `failed` is set means the
    /// failure is one only a reopen (recovery) can lift.
    repair: Option<Repair>,
    /// The sync thread, once the log pipelines its syncs (see `syncer`): from the
    /// first staged append on.
    syncer: Option<Syncer>,
    /// Base of the segment whose roll the sync thread may still be making durable.
    sealing: Option<u64>,
    /// Set while a trim is on the sync thread: the writer then looks at its progress
    /// often, to remove the segments below soon even if nothing else happens.
    trim_posted: bool,
}

impl Writer {
    pub(crate) fn new(
        shared: Arc<Shared>,
        lock: Option<DirLock>,
        active: ActiveState,
        start_offset: u64,
    ) -> Self {
        let check_every = Duration::from_millis(shared.config.retention_check_interval_ms);
        Writer {
            shared,
            lock,
            active: active.segment,
            index_file: active.index_file,
            index_file_len: active.index_file_len,
            index_synced_len: active.index_file_len,
            write_pos: active.write_pos,
            synced_pos: active.write_pos,
            next_offset: active.next_offset,
            start_offset,
            max_timestamp_ms: active.max_timestamp_ms,
            bytes_since_entry: active.bytes_since_entry,
            unpersisted: Vec::new(),
            last_sync: Instant::now(),
            next_housekeeping: Instant::now() + check_every,
            failed: None,
            repair: None,
            syncer: None,
            sealing: None,
            trim_posted: false,
        }
    }

    pub(crate) fn run(mut self, requests: &Receiver<Request>) {
        loop {
            let deadline = self.next_deadline();
            let first = match requests.recv_until(Some(deadline)) {
                Ok(request) => request,
                Err(Empty::Timeout) => {
                    self.on_timer();
                    continue;
                }
                Err(Empty::Disconnected) => {
                    // Every handle was dropped without close(): shut down cleanly anyway.
                    if let Err(e) = self.shutdown() {
                        tracing::error!(dir = %self.shared.dir.display(), error = %e, "log shutdown failed");
                    }
                    return;
                }
            };
            let mut group_bytes = request_bytes(&first);
            let mut group = vec![first];
            while group_bytes < MAX_GROUP_BYTES {
                match requests.try_recv() {
                    Some(request) => {
                        group_bytes += request_bytes(&request);
                        group.push(request);
                    }
                    None => break,
                }
            }
            if self.handle_group(group) {
                return;
            }
            if Instant::now() >= deadline {
                self.on_timer();
            }
        }
    }

    fn policy(&self) -> FsyncPolicy {
        self.shared.config.fsync
    }

    /// How long written data may stay unsynced: the policy's interval, or under
    /// `always` [`UNSYNCED_APPENDS_WITHIN`] (unsynced appends only).
    fn sync_within(&self) -> Option<Duration> {
        match self.policy() {
            FsyncPolicy::Interval(every) => Some(every),
            FsyncPolicy::Always => Some(UNSYNCED_APPENDS_WITHIN),
            FsyncPolicy::Never => None,
        }
    }

    fn next_deadline(&self) -> Instant {
        let mut deadline = self.next_housekeeping;
        if self.trim_posted {
            deadline = deadline.min(Instant::now() + TRIM_PROGRESS_EVERY);
        }
        if self.repair.is_some() {
            deadline = deadline.min(Instant::now() + REPAIR_EVERY);
        }
        if let Some(every) = self.sync_within()
            && self.write_pos > self.synced_pos
            && self.failed.is_none()
        {
            deadline = deadline.min(self.last_sync + every);
        }
        deadline
    }

    fn on_timer(&mut self) {
        self.refresh_synced();
        self.try_repair();
        if self.policy() == FsyncPolicy::Always
            && self.syncer.is_some()
            && self.write_pos > self.synced_pos
            && self.failed.is_none()
            && self.last_sync.elapsed() >= UNSYNCED_APPENDS_WITHIN
            && !self.syncs_in_flight()
        {
            self.post_sync(Vec::new());
        } else if let Some(every) = self.sync_within()
            && self.syncer.is_none()
            && self.write_pos > self.synced_pos
            && self.failed.is_none()
            && self.last_sync.elapsed() >= every
            && self.sync_active().is_ok()
            && let Err(e) = self.sync_index()
        {
            tracing::warn!(error = %e, "could not sync the index");
        }
        if Instant::now() >= self.next_housekeeping {
            self.next_housekeeping = Instant::now()
                + Duration::from_millis(self.shared.config.retention_check_interval_ms);
            // A pipelined log does not stop its writer for this sync (it could be one
            // of the slow ones): its index entries are written as their data is
            // synced, and the index file is synced when the segment is sealed and at
            // close. A power cut may cost recent entries; recovery then scans more.
            if self.failed.is_none()
                && self.syncer.is_none()
                && let Err(e) = self.sync_index()
            {
                tracing::warn!(error = %e, "could not sync the index");
            }
            if self.failed.is_none()
                && self.active_is_too_old()
                && let Err(e) = self.roll()
            {
                tracing::warn!(error = %e, "could not roll an old segment");
            }
            if let Err(e) = self.enforce_retention(now_ms()) {
                tracing::warn!(error = %e, "retention pass failed");
            }
        }
    }

    /// Handles one group; returns true once the log is closed.
    fn handle_group(&mut self, group: Vec<Request>) -> bool {
        self.refresh_synced();
        self.try_repair();
        let mut pending: Vec<Pending> = Vec::new();
        let mut requests = group.into_iter();
        while let Some(request) = requests.next() {
            match request {
                Request::Append {
                    mut batch,
                    sync,
                    written,
                    reply,
                } => {
                    if self.failed.is_none() && self.needs_roll_before(batch.len()) {
                        self.commit(&mut pending);
                        // The commit may have failed and been rolled back, emptying the
                        // segment: decide again on what is really written.
                        if self.failed.is_none()
                            && self.needs_roll_before(batch.len())
                            && let Err(e) = self.roll()
                        {
                            refuse(written, reply, &e);
                            continue;
                        }
                    }
                    if let Some(e) = &self.failed {
                        refuse(written, reply, e);
                        continue;
                    }
                    let first = self.next_offset;
                    batch.set_base_offset(first);
                    let pos = self.write_pos;
                    self.write_pos += batch.len();
                    self.next_offset += u64::from(batch.count());
                    pending.push(Pending {
                        batch,
                        sync,
                        written,
                        reply,
                        first,
                        pos,
                    });
                }
                Request::Trim { before, reply } => {
                    self.commit(&mut pending);
                    if let Some(reply) = self.post_trim(before, reply) {
                        let _ = reply.send(self.trim(before));
                    }
                }
                Request::Retention { now_ms, reply } => {
                    self.commit(&mut pending);
                    let _ = reply.send(self.enforce_retention(now_ms));
                }
                Request::Sync { reply } => {
                    self.commit(&mut pending);
                    // A segment sealed by a pipelined roll may still have an unsynced
                    // tail: the seal syncs it.
                    let result = self
                        .wait_for_seal()
                        .and_then(|()| self.sync_active())
                        .and_then(|()| self.sync_index());
                    let _ = reply.send(result);
                }
                Request::Close { reply } => {
                    self.commit(&mut pending);
                    let result = self.shutdown();
                    for later in requests.by_ref() {
                        refuse_closed(later);
                    }
                    let _ = reply.send(result);
                    return true;
                }
            }
        }
        self.commit(&mut pending);
        false
    }

    fn needs_roll_before(&self, batch_len: u64) -> bool {
        let has_data = self.write_pos > FILE_HEADER_LEN as u64;
        has_data
            && (self.write_pos + batch_len > self.shared.config.segment_bytes
                || self.active_is_too_old())
    }

    /// Reads the clock only when a maximum age is configured: this runs per append.
    fn active_is_too_old(&self) -> bool {
        let has_data = self.write_pos > FILE_HEADER_LEN as u64;
        match self.shared.config.segment_max_age_ms {
            Some(max_age) => {
                has_data
                    && now_ms().saturating_sub(self.active.created_ms)
                        >= i64::try_from(max_age).unwrap_or(i64::MAX)
            }
            None => false,
        }
    }

    /// Writes (and under `always`, unless no append asks for it, syncs) the pending
    /// appends, then answers them.
    ///
    /// A group with staged appends is made readable, and those are told so, between
    /// the write and the sync; a failed sync then cannot be rolled back (readers may
    /// have seen the data), so it stops the log as a failed background sync does.
    fn commit(&mut self, pending: &mut Vec<Pending>) {
        let Some(head) = pending.first() else {
            return;
        };
        let (start_pos, start_offset) = (head.pos, head.first);
        // Unsynced appends written before this group: a failed sync may have cost
        // them too.
        let unsynced_before = self.synced_pos < start_pos;
        let bufs: Vec<&[u8]> = pending.iter().flat_map(|p| p.batch.parts()).collect();
        let path = self.active.log_path.clone();
        let mut result = self
            .active
            .file
            .write_all_at(start_pos, &bufs)
            .map_err(|e| LogError::io("write", &path, e));
        drop(bufs);
        // A failed write leaves nothing that was synced in doubt: the rollback
        // truncates its bytes and syncs everything before them.
        let written = result.is_ok();
        let sync_now = self.policy() == FsyncPolicy::Always && pending.iter().any(|p| p.sync);
        let staged = result.is_ok() && pending.iter().any(|p| p.written.is_some());
        if staged && sync_now && self.syncer.is_none() {
            match Syncer::start(self.shared.clone()) {
                Ok(syncer) => self.syncer = Some(syncer),
                Err(e) => {
                    tracing::warn!(error = %e, "could not start a sync thread; syncing on the writer");
                }
            }
        }
        if result.is_ok() && sync_now && self.syncer.is_some() {
            self.commit_pipelined(pending);
            return;
        }
        if staged {
            self.index_and_publish(pending);
            for p in pending.iter_mut() {
                if let Some(written) = p.written.take() {
                    let _ = written.send(Ok(p.appended()));
                }
            }
        }
        if result.is_ok() && sync_now {
            count(&self.shared.counters.data_syncs, 1);
            result = self
                .active
                .file
                .sync_data()
                .map_err(|e| LogError::io("fsync", &path, e));
        }
        if let Err(e) = result {
            if staged {
                self.fail_after_sync_error(&e);
            } else {
                self.roll_back(start_pos, start_offset);
                tracing::warn!(error = %e, appends = pending.len(), "append failed and was rolled back");
                if written && sync_now && unsynced_before {
                    self.fail_after_sync_error(&e);
                }
            }
            for p in pending.drain(..) {
                refuse(p.written, p.reply, &e);
            }
            return;
        }
        if !staged {
            self.index_and_publish(pending);
        }
        if sync_now {
            self.synced_pos = self.write_pos;
            self.last_sync = Instant::now();
            self.persist_index_entries_or_warn();
        } else if self.policy() == FsyncPolicy::Always && !unsynced_before {
            // The first unsynced bytes since the last sync: they are synced within
            // UNSYNCED_APPENDS_WITHIN from now (see `next_deadline`).
            self.last_sync = Instant::now();
        }
        count(&self.shared.counters.commit_groups, 1);
        count(&self.shared.counters.appends, pending.len() as u64);
        for p in pending.drain(..) {
            let appended = p.appended();
            let _ = p.reply.send(Ok(appended));
        }
    }

    /// The rest of `commit` for a pipelined log, once the group is written: it is
    /// made readable, staged appends are told, and the sync thread syncs and answers.
    fn commit_pipelined(&mut self, pending: &mut Vec<Pending>) {
        self.index_and_publish(pending);
        let mut replies = Vec::with_capacity(pending.len());
        for p in pending.drain(..) {
            let appended = p.appended();
            if let Some(written) = p.written {
                let _ = written.send(Ok(appended));
            }
            if p.sync {
                replies.push((p.reply, appended));
            } else {
                // An unsynced append is answered once written; the sync below
                // covers it anyway.
                let _ = p.reply.send(Ok(appended));
            }
        }
        count(&self.shared.counters.commit_groups, 1);
        count(&self.shared.counters.appends, replies.len() as u64);
        self.post_sync(replies);
    }

    /// Queues a sync of everything written to the active segment, answering
    /// `replies` after it.
    fn post_sync(&mut self, replies: Vec<(oneshot::Sender<Result<Appended>>, Appended)>) {
        let Some(syncer) = &self.syncer else {
            return;
        };
        syncer.post(Job::Sync(SyncJob {
            file: self.active.file.clone(),
            path: self.active.log_path.clone(),
            base: self.active.base,
            upto: self.write_pos,
            replies,
            seal: None,
        }));
        // Counted from here for the unsynced-append deadline: this sync covers them.
        self.last_sync = Instant::now();
    }

    /// Takes in what the sync thread has done: how far the active segment is synced
    /// (and the index entries that allows), and whether a sync failed.
    fn refresh_synced(&mut self) {
        let Some(syncer) = &self.syncer else {
            return;
        };
        let (synced, failed, trimmed, idle) = {
            let p = syncer.progress();
            (p.synced, p.failed.clone(), p.trimmed, p.in_flight == 0)
        };
        if idle {
            self.trim_posted = false;
        }
        if let Some(e) = failed
            && self.failed.is_none()
        {
            self.fail_after_sync_error(&e);
        }
        if let Some((base, upto)) = synced
            && base == self.active.base
            && upto > self.synced_pos
        {
            self.synced_pos = upto;
            self.persist_index_entries_or_warn();
        }
        if trimmed > self.start_offset {
            self.start_offset = trimmed;
            self.publish();
            let doomed = self.sealed_segments_where(|_, end| end <= trimmed);
            if let Err(e) = self.remove_segments(doomed, Removal::BelowDurableStart) {
                tracing::warn!(error = %e, "trimmed, but could not remove the segments below yet");
            }
        }
    }

    /// Whether syncs are queued on the sync thread.
    fn syncs_in_flight(&self) -> bool {
        self.syncer
            .as_ref()
            .is_some_and(|s| s.progress().in_flight > 0)
    }

    /// Indexes the written group and makes it readable.
    fn index_and_publish(&mut self, pending: &[Pending]) {
        let interval = u64::from(self.shared.config.index_interval_bytes);
        let mut entries = Vec::new();
        for p in pending {
            if self.bytes_since_entry >= interval {
                entries.push(IndexEntry {
                    rel_offset: (p.first - self.active.base) as u32,
                    position: p.pos as u32,
                    max_ts_before: self.max_timestamp_ms,
                });
                self.bytes_since_entry = 0;
            }
            self.bytes_since_entry += p.batch.len();
            self.max_timestamp_ms = self.max_timestamp_ms.max(p.batch.max_timestamp_ms());
        }
        self.active.extend_index(&entries);
        self.unpersisted.extend(entries);
        self.publish();
    }

    /// Makes everything written to the active segment durable. What it syncs was
    /// already acknowledged (policies `interval` and `never`), so a failure here puts
    /// the log in the failed state (see `fail_after_sync_error`).
    fn sync_active(&mut self) -> Result<()> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        if self.write_pos > self.synced_pos {
            count(&self.shared.counters.data_syncs, 1);
            if let Err(e) = self.active.file.sync_data() {
                let e = LogError::io("fsync", &self.active.log_path, e);
                self.fail_after_sync_error(&e);
                return Err(e);
            }
            self.synced_pos = self.write_pos;
        }
        self.last_sync = Instant::now();
        self.persist_index_entries_or_warn();
        Ok(())
    }

    /// A failed sync of data that was already acknowledged (policies `interval` and
    /// `never`) may have lost it: the kernel can drop the dirty pages after reporting
    /// the error, and a retried `fsync` then succeeds without writing them. The log
    /// cannot vouch for its tail any more, so it stops syncing and taking appends until
    /// reopened; recovery then finds what really is on disk.
    fn fail_after_sync_error(&mut self, error: &LogError) {
        tracing::error!(error = %error, "fsync failed; the log refuses appends until reopened");
        self.fail("fsync", &self.active.log_path.clone(), error);
    }

    /// Enters the failed state: appends, syncs and rolls are refused until reopen.
    fn fail(&mut self, op: &'static str, path: &std::path::Path, error: &LogError) {
        let source = match error {
            LogError::Io { source, .. }
            | LogError::Failed { source, .. }
            | LogError::Repairing { source, .. } => source.clone(),
            other => Arc::new(std::io::Error::other(other.to_string())),
        };
        self.failed = Some(LogError::Failed {
            op,
            path: path.to_path_buf(),
            source,
        });
        self.repair = None;
    }

    /// Refuses appends with `error` until `repair` succeeds (see `try_repair`).
    /// A failure only a reopen can lift is never downgraded to a repairable one.
    fn fail_until_repaired(&mut self, error: &LogError, repair: Repair) {
        if self.failed.is_some() && self.repair.is_none() {
            return;
        }
        self.failed = Some(error.clone());
        self.repair = Some(repair);
    }

    /// Retries the repair the log owes, if any; on success the log takes appends
    /// again. A sync that fails here stops the log until reopened, as any failed
    /// sync does.
    fn try_repair(&mut self) {
        let Some(repair) = self.repair else {
            return;
        };
        match repair {
            Repair::Truncate { pos } => {
                let file = self.active.file.clone();
                let path = self.active.log_path.clone();
                if let Err(e) = file.set_len(pos) {
                    tracing::debug!(error = %e, "the truncation after a failed append failed again");
                    return;
                }
                if let Err(e) = file.sync_data() {
                    let e = LogError::io("fsync", &path, e);
                    self.fail_after_sync_error(&e);
                    return;
                }
                if self.syncer.is_none() {
                    self.synced_pos = pos;
                }
            }
            Repair::RemoveSegment { base } => match self.remove_half_made_segment(base) {
                Ok(()) => {}
                Err(e @ LogError::Failed { .. }) => {
                    tracing::error!(error = %e, "could not sync the removal of a half-made segment; the log refuses appends until reopened");
                    let path = self.shared.dir.join(log_file_name(base));
                    self.fail("remove a half-made segment", &path, &e);
                    return;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "removing a half-made segment failed again");
                    return;
                }
            },
        }
        tracing::info!(dir = %self.shared.dir.display(), ?repair, "repaired after a failed write; the log takes appends again");
        self.failed = None;
        self.repair = None;
    }

    /// Writes the index entries whose batch lies wholly in synced data: entries that
    /// start below `synced_pos` (a sync always covers whole batches). Never an entry
    /// for unsynced data: recovery trusts any entry that checks out, so one pointing
    /// past a hole in unsynced data would make it keep the hole. A failure loses
    /// nothing: the entries stay in memory, are retried, and recovery can rebuild them.
    fn persist_index_entries(&mut self) -> Result<()> {
        let synced = self.synced_pos;
        self.persist_index_entries_below(synced)
    }

    /// Writes the unpersisted entries whose position is below `limit`.
    fn persist_index_entries_below(&mut self, limit: u64) -> Result<()> {
        let ready = self
            .unpersisted
            .partition_point(|e| u64::from(e.position) < limit);
        if ready == 0 {
            return Ok(());
        }
        let bytes = crate::segment::encode_entries(&self.unpersisted[..ready]);
        match self.index_file.write_all_at(self.index_file_len, &[&bytes]) {
            Ok(()) => {
                self.index_file_len += bytes.len() as u64;
                self.unpersisted.drain(..ready);
                Ok(())
            }
            Err(e) => {
                let _ = self.index_file.set_len(self.index_file_len);
                Err(LogError::io("write", &self.active.index_path, e))
            }
        }
    }

    /// Like `persist_index_entries`, for the paths where a failure is only worth a
    /// warning (the entries are retried with the next sync).
    fn persist_index_entries_or_warn(&mut self) {
        if let Err(e) = self.persist_index_entries() {
            tracing::warn!(error = %e, "could not write index entries; will retry");
        }
    }

    /// Writes and syncs the active index. Not done per append (that would double the
    /// syncs); done at rolls, at close and when the writer has a quiet moment, so a
    /// power cut leaves a recent index and recovery's tail scan stays short.
    fn sync_index(&mut self) -> Result<()> {
        self.persist_index_entries()?;
        if self.index_file_len > self.index_synced_len {
            self.index_file
                .sync_data()
                .map_err(|e| LogError::io("fsync", &self.active.index_path, e))?;
            self.index_synced_len = self.index_file_len;
        }
        Ok(())
    }

    /// Undoes a failed group: truncate it away and make the truncation durable. The
    /// sync matters: a failed `fdatasync` may still have persisted part of the group,
    /// and its offsets are about to be handed out again, so it must never come back.
    ///
    /// A truncation that fails is retried before the next group (`Repair`); a sync
    /// that fails stops the log until reopened.
    fn roll_back(&mut self, start_pos: u64, start_offset: u64) {
        self.write_pos = start_pos;
        self.next_offset = start_offset;
        let file = self.active.file.clone();
        let path = self.active.log_path.clone();
        // A pipelined log learns how far its segment is synced from its sync thread
        // only: the segment may be one whose roll is not durable yet, and its index
        // must not get entries before then (see `recovery`).
        let pipelined = self.syncer.is_some();
        self.synced_pos = self.synced_pos.min(start_pos);
        if let Err(e) = file.set_len(start_pos) {
            tracing::error!(error = %e, "could not truncate after a failed append; appends are refused until the truncation succeeds");
            let failed = LogError::Repairing {
                op: "truncate",
                path,
                source: Arc::new(e),
            };
            self.fail_until_repaired(&failed, Repair::Truncate { pos: start_pos });
            return;
        }
        match file.sync_data() {
            // Everything before the group is now durable too.
            Ok(()) if !pipelined => self.synced_pos = start_pos,
            Ok(()) => {}
            Err(e) => {
                let e = LogError::io("fsync", &path, e);
                self.fail_after_sync_error(&e);
            }
        }
    }

    fn publish(&self) {
        self.active.set_committed_len(self.write_pos);
        let (start, next) = (self.start_offset, self.next_offset);
        self.shared.watermark.send_modify(|w| {
            // A pipelined log's sync thread may have published a later trim.
            w.start = w.start.max(start);
            w.next = next;
        });
    }

    /// Seals the active segment and starts a new one at the next offset.
    fn roll(&mut self) -> Result<()> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        if self.next_offset == self.active.base {
            // Nothing to seal; a new segment would reuse this one's base and files.
            return Ok(());
        }
        if self.syncer.is_some() {
            return self.roll_pipelined();
        }
        self.sync_active()?;
        debug_assert_eq!(self.write_pos, self.synced_pos);
        self.add_end_entry()?;
        // The end entry points at the synced end of the segment: persist it too.
        self.persist_index_entries_below(self.synced_pos + 1)?;
        self.sync_index()?;

        let (segment, index_file) = self.create_next_segment(Durably::Now)?;
        self.start_segment(segment, index_file);
        debug_assert!(self.unpersisted.is_empty());
        Ok(())
    }

    /// A pipelined log's roll: the writer creates the next segment's files and
    /// writes on into them at once; the sync thread makes the roll durable (see
    /// `syncer::Seal`) before it answers any append of the new segment. Before, the
    /// roll's five syncs ran here, and one slow `fdatasync` among them held every
    /// delivery of the queue for its length.
    fn roll_pipelined(&mut self) -> Result<()> {
        // One roll at a time on its way to disk: recovery repairs only the last
        // sealed segment (see `recovery`).
        self.wait_for_seal()?;
        self.add_end_entry()?;
        let base = self.next_offset;
        let (segment, index_file) = self.create_next_segment(Durably::Later)?;
        let seal = Seal {
            index_file: self.index_file.clone(),
            index_path: self.active.index_path.clone(),
            index_len: self.index_file_len,
            entries: crate::segment::encode_entries(&std::mem::take(&mut self.unpersisted)),
            new_base: base,
            new_log: segment.file.clone(),
            new_log_path: segment.log_path.clone(),
            new_index: index_file.clone(),
            new_index_path: segment.index_path.clone(),
        };
        let job = SyncJob {
            file: self.active.file.clone(),
            path: self.active.log_path.clone(),
            base: self.active.base,
            upto: self.write_pos,
            replies: Vec::new(),
            seal: Some(Box::new(seal)),
        };
        if let Some(syncer) = &self.syncer {
            syncer.post(Job::Sync(job));
        }
        self.sealing = Some(base);
        self.start_segment(segment, index_file);
        Ok(())
    }

    /// Creates the segment that starts at the next offset: synced with the directory
    /// (`Now`), or for the sync thread to make durable (`Later`). A failure removes
    /// what was made.
    fn create_next_segment(&mut self, durably: Durably) -> Result<(Segment, Arc<dyn FileIo>)> {
        let shared = &self.shared;
        let base = self.next_offset;
        let (fs, dir, interval) = (
            shared.fs.clone(),
            &shared.dir,
            shared.config.index_interval_bytes,
        );
        let created = match durably {
            Durably::Now => Segment::create(fs, dir, base, now_ms(), interval).and_then(|made| {
                shared
                    .fs
                    .sync_dir(dir)
                    .map_err(|e| LogError::io("sync", dir, e))?;
                Ok(made)
            }),
            Durably::Later => Segment::create_unsynced(fs, dir, base, now_ms(), interval),
        };
        created.inspect_err(|_| self.discard_half_made_segment(base))
    }

    /// Adds the end entry to the active segment's index: it points at the end of the
    /// segment, so recovery can check cheaply that the next segment joins up.
    fn add_end_entry(&mut self) -> Result<()> {
        let end = IndexEntry {
            rel_offset: (self.next_offset - self.active.base) as u32,
            position: self.write_pos as u32,
            max_ts_before: self.max_timestamp_ms,
        };
        if self.active.with_index(|i| i.last().copied())? != Some(end) {
            self.active.extend_index(&[end]);
            self.unpersisted.push(end);
        }
        Ok(())
    }

    /// Makes `segment` the active one, empty.
    fn start_segment(&mut self, segment: Segment, index_file: Arc<dyn FileIo>) {
        let segment = Arc::new(segment);
        self.shared
            .segments
            .write()
            .expect("invariant: segment map lock never poisoned")
            .insert(segment.base, segment.clone());
        tracing::debug!(
            base = segment.base,
            sealed = self.active.base,
            "rolled to a new segment"
        );
        self.active = segment;
        self.index_file = index_file;
        self.index_file_len = FILE_HEADER_LEN as u64;
        self.index_synced_len = self.index_file_len;
        self.write_pos = FILE_HEADER_LEN as u64;
        self.synced_pos = self.write_pos;
        self.max_timestamp_ms = i64::MIN;
        self.bytes_since_entry = 0;
        debug_assert_eq!(ENTRY_LEN, 20);
    }

    /// Waits until the sync thread has made the last pipelined roll durable.
    fn wait_for_seal(&mut self) -> Result<()> {
        if let (Some(base), Some(syncer)) = (self.sealing, &self.syncer) {
            let sealed = syncer.progress().synced.is_some_and(|(b, _)| b >= base);
            if !sealed {
                syncer.wait_idle();
            }
        }
        self.sealing = None;
        let failed = self
            .syncer
            .as_ref()
            .and_then(|s| s.progress().failed.clone());
        if let Some(e) = failed
            && self.failed.is_none()
        {
            self.fail_after_sync_error(&e);
        }
        match &self.failed {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    /// After a failed roll the old segment stays active and takes more appends. A
    /// half-made next segment must not survive: at the next open it would become the
    /// active segment and hide those appends. If it cannot be removed durably, the log
    /// stops taking appends.
    fn discard_half_made_segment(&mut self, base: u64) {
        let path = self.shared.dir.join(log_file_name(base));
        match self.remove_half_made_segment(base) {
            Ok(()) => {}
            Err(e @ LogError::Failed { .. }) => {
                tracing::error!(error = %e, "could not sync the removal of a half-made segment; the log refuses appends until reopened");
                self.fail("remove a half-made segment", &path, &e);
            }
            Err(e) => {
                tracing::error!(error = %e, "could not remove a half-made segment; appends are refused until it is removed");
                let source = match &e {
                    LogError::Io { source, .. } => source.clone(),
                    other => Arc::new(std::io::Error::other(other.to_string())),
                };
                let failed = LogError::Repairing {
                    op: "remove the half-made segment",
                    path,
                    source,
                };
                self.fail_until_repaired(&failed, Repair::RemoveSegment { base });
            }
        }
    }

    /// Removes the files of the segment at `base` (missing ones are fine) and syncs
    /// the directory. A failed sync comes back as [`LogError::Failed`]: a retried
    /// sync could falsely succeed, so it stops the log.
    fn remove_half_made_segment(&mut self, base: u64) -> Result<()> {
        let dir = self.shared.dir.clone();
        for name in [log_file_name(base), index_file_name(base)] {
            let path = dir.join(name);
            match self.shared.fs.remove(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(LogError::io("remove", &path, e)),
            }
        }
        self.shared.fs.sync_dir(&dir).map_err(|e| LogError::Failed {
            op: "sync",
            path: dir.clone(),
            source: Arc::new(e),
        })
    }

    /// A pipelined log hands a trim that moves the start to its sync thread (see
    /// `syncer`); the reply comes back when it cannot.
    fn post_trim(
        &mut self,
        before: u64,
        reply: oneshot::Sender<Result<()>>,
    ) -> Option<oneshot::Sender<Result<()>>> {
        match &self.syncer {
            Some(syncer) if before <= self.next_offset && before > self.start_offset => {
                syncer.post(Job::Trim { before, reply });
                self.trim_posted = true;
                None
            }
            _ => Some(reply),
        }
    }

    fn trim(&mut self, before: u64) -> Result<()> {
        if before > self.next_offset {
            return Err(LogError::OffsetOutOfRange {
                requested: before,
                first: self.start_offset,
                next: self.next_offset,
            });
        }
        if before <= self.start_offset {
            return Ok(());
        }
        if let Err(e) = meta::write(&*self.shared.fs, &self.shared.dir, before) {
            // The rename may have happened before the failure: believe the disk, so the
            // first offset never moves back after a restart.
            if let Ok(Some(on_disk)) = meta::read(&*self.shared.fs, &self.shared.dir)
                && on_disk > self.start_offset
                && on_disk <= self.next_offset
            {
                self.start_offset = on_disk;
                self.publish();
            }
            return Err(e);
        }
        self.start_offset = before;
        self.publish();
        // The trim is durable now; reclaiming its space is best effort (the next trim,
        // retention pass or open finishes the job).
        let doomed = self.sealed_segments_where(|_, end| end <= before);
        if let Err(e) = self.remove_segments(doomed, Removal::BelowDurableStart) {
            tracing::warn!(error = %e, "trimmed, but could not remove the segments below yet");
        }
        Ok(())
    }

    fn enforce_retention(&mut self, now_ms: i64) -> Result<RetentionReport> {
        let config = &self.shared.config;
        let mut doomed = Vec::new();
        if let Some(max_age) = config.retention_max_age_ms {
            let cutoff = now_ms.saturating_sub(i64::try_from(max_age).unwrap_or(i64::MAX));
            for segment in self.sealed_segments_where(|_, _| true) {
                match segment.sealed_max_timestamp() {
                    Ok(newest) if newest < cutoff => doomed.push(segment),
                    Ok(_) => break,
                    Err(e) => {
                        // Its age is unknown: keep it (and everything newer), but let
                        // the size limit still apply.
                        tracing::warn!(error = %e, segment = %segment.log_path.display(), "cannot tell a segment's age; retention by age stops there");
                        break;
                    }
                }
            }
        }
        if let Some(max_bytes) = config.retention_max_bytes {
            let segments = self.shared.segments_snapshot();
            let mut total: u64 = segments.values().map(|s| s.committed_len()).sum();
            total -= doomed.iter().map(|s| s.committed_len()).sum::<u64>();
            for segment in self
                .sealed_segments_where(|_, _| true)
                .into_iter()
                .skip(doomed.len())
            {
                if total <= max_bytes {
                    break;
                }
                total -= segment.committed_len();
                doomed.push(segment);
            }
        }
        let segments_removed = doomed.len();
        let removed = self.remove_segments(doomed, Removal::Durable)?;
        Ok(RetentionReport {
            segments_removed,
            bytes_removed: removed,
            first_offset: Offset(self.shared.watermark.borrow().start),
        })
    }

    /// Sealed segments, oldest first, for which `keep(base, end_offset)` holds.
    fn sealed_segments_where(&self, keep: impl Fn(u64, u64) -> bool) -> Vec<Arc<Segment>> {
        let segments = self.shared.segments_snapshot();
        let bases: Vec<u64> = segments.keys().copied().collect();
        segments
            .values()
            .zip(bases.iter().skip(1))
            .filter(|(segment, end)| keep(segment.base, **end))
            .map(|(segment, _)| segment.clone())
            .collect()
    }

    /// Removes sealed segments oldest first. What makes the new first offset durable
    /// is `removal`: a trim wrote it to `log.meta` already, so a removal the crash
    /// undoes is redone at open (segments below the start offset are removed), and
    /// no directory sync is needed; retention syncs the directory after each segment,
    /// so a crash can only leave a suffix of the log, never a gap. The syncs a trim
    /// saves here ran on the writer, at a queue's pace, and held its deliveries.
    fn remove_segments(&mut self, doomed: Vec<Arc<Segment>>, removal: Removal) -> Result<u64> {
        if doomed.is_empty() {
            return Ok(0);
        }
        // A removal may reach the disk (with a directory sync, or any journal
        // commit): never before the headers of a segment a pipelined roll just
        // created are durable, or recovery could find that segment first and
        // headless.
        self.wait_for_seal()?;
        let mut bytes = 0;
        for segment in &doomed {
            debug_assert!(segment.base != self.active.base, "never the active segment");
            let shared = self.shared.clone();
            // Durable removal first: the first offset readers see must never move
            // back after a crash. Readers holding the segment keep reading it through
            // their open file until they are done.
            for path in [&segment.log_path, &segment.index_path] {
                match shared.fs.remove(path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(LogError::io("remove", path, e)),
                }
            }
            if removal == Removal::Durable {
                shared
                    .fs
                    .sync_dir(&shared.dir)
                    .map_err(|e| LogError::io("sync", &shared.dir, e))?;
            }
            let next_base = shared
                .segments
                .read()
                .expect("invariant: segment map lock never poisoned")
                .range(segment.base + 1..)
                .next()
                .map(|(base, _)| *base);
            if let Some(next_base) = next_base {
                self.start_offset = self.start_offset.max(next_base);
            }
            self.publish();
            shared
                .segments
                .write()
                .expect("invariant: segment map lock never poisoned")
                .remove(&segment.base);
            bytes += segment.committed_len();
            tracing::debug!(base = segment.base, "removed a segment");
        }
        close_elsewhere(doomed);
        Ok(bytes)
    }

    /// Final sync of data and index, then release the directory.
    fn shutdown(&mut self) -> Result<()> {
        // Queued syncs are done and answered first.
        if let Some(syncer) = &mut self.syncer {
            syncer.finish();
        }
        self.refresh_synced();
        self.syncer = None;
        self.sealing = None;
        let result = self.sync_active().and_then(|()| self.sync_index());
        self.shared.watermark.send_modify(|w| w.closed = true);
        self.lock = None;
        result
    }
}

/// Only the writer changes the counters, so a relaxed add is enough.
/// Lets removed segments free their disk space on a short-lived thread. Freeing the
/// blocks of an unlinked 64 MiB segment (at its last `close`) took 37-42 ms on the
/// writer thread, holding every delivery of the queue that long (`strace -T` on the
/// writer during the steady-rate benchmark). On its own thread, done at once, it
/// still held the file system's journal long enough to stall the writer's next
/// writes, so the thread frees the space in steps: once no reader holds the segment
/// any more, it truncates the file [`RELEASE_STEP`] at a time, pausing between.
fn close_elsewhere(segments: Vec<Arc<Segment>>) {
    if segments.is_empty() {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("weir-log-close".into())
        .spawn(move || segments.into_iter().for_each(release_gradually));
    if let Err(e) = spawned {
        // The segments were closed here, as the closure was dropped.
        tracing::debug!(error = %e, "closed removed segments on the writer");
    }
}

/// Bytes of a removed segment freed at a time, and the pause between steps.
const RELEASE_STEP: u64 = 4 << 20;
const RELEASE_PAUSE: Duration = Duration::from_millis(2);

fn release_gradually(segment: Arc<Segment>) {
    // A reader that took the segment before its removal may still be reading it:
    // truncating under it would cut its read short. Wait (a while) for it to finish.
    let mut segment = segment;
    for _ in 0..500 {
        match Arc::try_unwrap(segment) {
            Ok(owned) => {
                let file = owned.file.clone();
                drop(owned);
                if Arc::strong_count(&file) == 1 {
                    let mut len = file.len().unwrap_or(0);
                    while len > RELEASE_STEP {
                        len -= RELEASE_STEP;
                        if file.set_len(len).is_err() {
                            break;
                        }
                        std::thread::sleep(RELEASE_PAUSE);
                    }
                }
                return;
            }
            Err(shared) => {
                segment = shared;
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

fn count(counter: &std::sync::atomic::AtomicU64, n: u64) {
    counter.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
}

fn request_bytes(request: &Request) -> u64 {
    match request {
        Request::Append { batch, .. } => batch.len(),
        _ => 0,
    }
}

fn refuse_closed(request: Request) {
    match request {
        Request::Append { reply, .. } => drop(reply.send(Err(LogError::Closed))),
        Request::Trim { reply, .. } | Request::Sync { reply } | Request::Close { reply } => {
            drop(reply.send(Err(LogError::Closed)));
        }
        Request::Retention { reply, .. } => drop(reply.send(Err(LogError::Closed))),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::RwLock;

    use tokio::sync::watch;

    use super::*;
    use crate::config::LogConfig;
    use crate::record::{NewRecord, ReadLimits};
    use crate::shared::Counters;
    use crate::testing::{CrashFs, Torn};
    use crate::{FileLog, MessageLog, Watermark};

    const DIR: &str = "/w";

    fn config() -> LogConfig {
        LogConfig {
            segment_bytes: 1024,
            index_interval_bytes: 64,
            ..LogConfig::default()
        }
    }

    /// A writer driven by hand, so a test decides exactly what one group holds.
    fn writer(fs: &CrashFs) -> Writer {
        let fs = fs.shared();
        let dir = Path::new(DIR);
        fs.create_dir_all(dir).unwrap();
        let lock = fs.lock_dir(dir).unwrap();
        let recovered = crate::recovery::recover(&fs, dir, &config(), 0).unwrap();
        let (watermark, _) = watch::channel(Watermark {
            start: recovered.start_offset,
            next: recovered.active.next_offset,
            closed: false,
        });
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            fs,
            config: config(),
            segments: RwLock::new(recovered.segments),
            watermark,
            counters: Counters::default(),
        });
        Writer::new(shared, Some(lock), recovered.active, recovered.start_offset)
    }

    fn append(records: &[NewRecord]) -> (Request, oneshot::Receiver<Result<Appended>>) {
        let batch = EncodedBatch::encode(records, 1, 1 << 20, 1 << 20).unwrap();
        let (reply, answer) = oneshot::channel();
        (
            Request::Append {
                batch,
                sync: true,
                written: None,
                reply,
            },
            answer,
        )
    }

    /// A group [A, B] where B would not fit after A: A's commit fails and is rolled
    /// back, leaving the segment empty, so B must go into the same segment. Rolling
    /// there would create a "new" segment at the active one's own base and wipe it.
    #[test]
    fn a_failed_commit_before_a_roll_does_not_roll_an_empty_segment() {
        let fs = CrashFs::new();
        let mut writer = writer(&fs);
        let (a, a_answer) = append(&[NewRecord::new(vec![b'a'; 600])]);
        let (b, b_answer) = append(&[NewRecord::new(vec![b'b'; 600])]);
        fs.fail_next_syncs(1);
        let active_before = writer.active.clone();
        assert!(!writer.handle_group(vec![a, b]));
        assert!(
            Arc::ptr_eq(&writer.active, &active_before),
            "no roll: the emptied segment stays active"
        );
        assert_eq!(writer.shared.segments_snapshot().len(), 1);
        let a = a_answer.blocking_recv().unwrap();
        assert!(matches!(a, Err(LogError::Io { op: "fsync", .. })), "{a:?}");
        let b = b_answer.blocking_recv().unwrap().unwrap();
        assert_eq!(b.first, Offset(0), "B takes the offsets A gave back");
        assert!(writer.failed.is_none());
        writer.shutdown().unwrap();
        drop(writer);

        let disk = fs.after_crash(Torn::Synced);
        let (log, report) = FileLog::open_with(disk.shared(), DIR, config()).unwrap();
        assert!(report.removed_files.is_empty(), "{report:?}");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let records = runtime
            .block_on(log.read_from(Offset(0), ReadLimits::records(10)))
            .unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].body, vec![b'b'; 600]);
        runtime.block_on(log.close()).unwrap();
    }
}
