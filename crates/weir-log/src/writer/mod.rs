//! The writer: the only code that changes a log's files.
//!
//! A [`Writer`] is one log's state machine; it owns no thread. The shared writer
//! pool (`writer_pool`) runs it: each log is assigned to one pool thread for its life,
//! which hands it its requests in order, a group at a time ([`Writer::handle_group`]),
//! and calls [`Writer::on_timer`] when [`Writer::next_deadline`] passes. A group is
//! the log's first queued request and everything else already queued (up to
//! [`MAX_GROUP_BYTES`]): all its appends are written with one vectored write and —
//! under `fsync = always` — made durable with one `fdatasync`. While that sync runs,
//! new appends queue up and form the next group: this is group commit, and it is why
//! many concurrent appenders cost about one sync per round instead of one each.
//! `fsync` never runs on an async runtime.
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

use tokio::sync::oneshot;

use crate::batch::EncodedBatch;
use crate::config::{FsyncPolicy, Retention};
use crate::error::{LogError, Result};
use crate::header::FILE_HEADER_LEN;
use crate::index::IndexEntry;
use crate::io::{DirLock, FileIo};
use crate::record::{Appended, Offset};
use crate::recovery::ActiveState;
use crate::segment::Segment;
use crate::shared::{Shared, now_ms};
use crate::syncer::{Job, SyncJob, Syncer};

mod repair;
mod retention;
mod roll;
#[cfg(test)]
mod tests;

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
        /// New retention settings to take first (`reconfigure`), if any.
        new: Option<Retention>,
        now_ms: i64,
        reply: oneshot::Sender<Result<RetentionReport>>,
    },
    Sync {
        reply: oneshot::Sender<Result<()>>,
    },
    Close {
        reply: oneshot::Sender<Result<()>>,
    },
    /// Panics on the writer: tests of the pool's panic handling.
    #[cfg(test)]
    Panic,
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
    /// The answer to `close`, which the pool sends once it has dropped the writer
    /// and with it the log's files: a closed log holds no open file.
    pub(crate) close_reply: Option<(oneshot::Sender<Result<()>>, Result<()>)>,
    /// Retention and segment size: the configuration's until reconfigured.
    retention: Retention,
}

impl Writer {
    pub(crate) fn new(
        shared: Arc<Shared>,
        lock: Option<DirLock>,
        active: ActiveState,
        start_offset: u64,
    ) -> Self {
        let check_every = Duration::from_millis(shared.config.retention_check_interval_ms);
        let retention = shared.config.retention();
        Writer {
            retention,
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
            close_reply: None,
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

    /// What the writer pool needs of the log for itself: its directory (for
    /// messages) and watermark (closed when a step panicked).
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The earliest moment `on_timer` has work to do.
    pub(crate) fn next_deadline(&self) -> Instant {
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

    /// The log's timers: the unsynced-data deadline, repairs, trims in progress,
    /// and every `retention_check_interval_ms` the index sync, the age roll and
    /// retention.
    pub(crate) fn on_timer(&mut self) {
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
    pub(crate) fn handle_group(&mut self, group: Vec<Request>) -> bool {
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
                    if self.failed.is_none() && self.needs_roll_before(&batch) {
                        self.commit(&mut pending);
                        // The commit may have failed and been rolled back, emptying the
                        // segment: decide again on what is really written.
                        if self.failed.is_none()
                            && self.needs_roll_before(&batch)
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
                Request::Retention { new, now_ms, reply } => {
                    self.commit(&mut pending);
                    if let Some(retention) = new {
                        self.retention = retention;
                    }
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
                #[cfg(test)]
                Request::Panic => panic!("a test asked the writer to panic"),
                Request::Close { reply } => {
                    self.commit(&mut pending);
                    let result = self.shutdown();
                    for later in requests.by_ref() {
                        refuse_closed(later);
                    }
                    self.close_reply = Some((reply, result));
                    return true;
                }
            }
        }
        self.commit(&mut pending);
        false
    }

    /// Whether `batch` goes into a new segment: the active one would pass its size,
    /// its age, or the offsets its index holds (u32 from its base: a Kafka batch's
    /// few compressed bytes may hold up to 2^21 records).
    fn needs_roll_before(&self, batch: &EncodedBatch) -> bool {
        let has_data = self.write_pos > FILE_HEADER_LEN as u64;
        let offsets = self.next_offset - self.active.base + u64::from(batch.count());
        has_data
            && (self.write_pos + batch.len() > self.retention.segment_bytes
                || offsets > u64::from(u32::MAX)
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
            let started = Instant::now();
            result = self
                .active
                .file
                .sync_data()
                .map_err(|e| LogError::io("fsync", &path, e));
            crate::io_metrics::record_data_sync(started.elapsed());
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
        crate::io_metrics::record_commit_group(pending.len());
        for p in pending.drain(..) {
            let appended = p.appended();
            let _ = p.reply.send(Ok(appended));
        }
    }

    /// The rest of `commit` for a pipelined log, once the group is written: it is
    /// made readable, staged appends are told, and the sync thread syncs and answers.
    fn commit_pipelined(&mut self, pending: &mut Vec<Pending>) {
        crate::io_metrics::record_commit_group(pending.len());
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
    fn index_and_publish(&mut self, pending: &mut [Pending]) {
        let interval = u64::from(self.shared.config.index_interval_bytes);
        let mut entries = Vec::new();
        for p in pending.iter() {
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
        let tail = &self.shared.tail;
        if tail.enabled() {
            for p in pending.iter_mut() {
                if p.batch.len() > tail.cap() as u64 {
                    tail.clear();
                } else {
                    tail.push(p.first, p.batch.count(), p.batch.take_bytes());
                }
            }
        }
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
            let started = Instant::now();
            let synced = self.active.file.sync_data();
            crate::io_metrics::record_data_sync(started.elapsed());
            if let Err(e) = synced {
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

    fn publish(&self) {
        self.active.set_committed_len(self.write_pos);
        let (start, next) = (self.start_offset, self.next_offset);
        self.shared.watermark.send_modify(|w| {
            // A pipelined log's sync thread may have published a later trim.
            w.start = w.start.max(start);
            w.next = next;
        });
    }

    /// Final sync of data and index, then release the directory.
    pub(crate) fn shutdown(&mut self) -> Result<()> {
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
fn count(counter: &std::sync::atomic::AtomicU64, n: u64) {
    counter.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
}

/// Bytes an append adds to a group (0 for other requests): groups stop growing at
/// [`MAX_GROUP_BYTES`].
pub(crate) fn request_bytes(request: &Request) -> u64 {
    match request {
        Request::Append { batch, .. } => batch.len(),
        _ => 0,
    }
}

/// Answers a request of a log that is closed.
pub(crate) fn refuse_closed(request: Request) {
    refuse_request(request, &LogError::Closed);
}

/// Answers a request that will not be carried out with `error`.
pub(crate) fn refuse_request(request: Request, error: &LogError) {
    match request {
        Request::Append { written, reply, .. } => refuse(written, reply, error),
        Request::Trim { reply, .. } | Request::Sync { reply } | Request::Close { reply } => {
            drop(reply.send(Err(error.clone())));
        }
        Request::Retention { reply, .. } => drop(reply.send(Err(error.clone()))),
        #[cfg(test)]
        Request::Panic => {}
    }
}
