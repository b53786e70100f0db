//! weir's durable log: segmented append-only files with group commit, per-segment
//! indexes and crash recovery.
//!
//! This crate owns how bytes reach the disk and come back. It knows nothing of queues,
//! exchanges or protocols, and it uses no async runtime: blocking I/O runs on its own
//! threads, a fixed number whatever the number of logs (a pool of writer threads and
//! one of sync threads sized by the machine's cores, each thread serving many logs,
//! and a small read pool), and the async API only awaits channel replies, so any
//! executor can drive it.
//!
//! Main types:
//! - [`MessageLog`]: the seam the broker uses. [`FileLog`] is the durable
//!   implementation, [`MemLog`] the in-memory one for tests, and a replicated log can
//!   implement it later. [`LogStore`] opens them by directory ([`FileStore`],
//!   [`MemStore`]), so the broker is generic over where its logs live.
//! - [`LogConfig`] and [`FsyncPolicy`]: segment size and age, index density, limits,
//!   retention, and when an append counts as durable.
//! - [`RecoveryReport`]: what opening a log repaired after a crash.
//! - [`io::Fs`] / [`io::FileIo`]: the file layer, with [`testing::CrashFs`] for
//!   deterministic crash tests and [`testing::run_all`], the conformance suite.
//!
//! The on-disk format is documented where it is written and read: `batch` (records
//! and batches), `header` (file headers), `index` (offset and time index), `meta`
//! (start offset); `docs/on-disk-format.md` gives the crash reasoning.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! use weir_log::{FileLog, LogConfig, MessageLog, NewRecord, Offset, ReadLimits};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let (log, _report) = FileLog::open(dir.path(), LogConfig::default()).unwrap();
//! let appended = log
//!     .append_batch(&[NewRecord::new("hello"), NewRecord::new("world")])
//!     .await
//!     .unwrap(); // durable: fdatasync has returned
//! assert_eq!(appended.first, Offset(0));
//! let records = log.read_from(Offset(1), ReadLimits::records(10)).await.unwrap();
//! assert_eq!(records[0].body, "world");
//! log.close().await.unwrap();
//! # });
//! ```

mod batch;
#[doc(hidden)]
pub mod bench_api;
mod config;
mod error;
mod file_cache;
mod file_log;
#[doc(hidden)]
pub mod fuzzing;
mod header;
mod index;
pub mod io;
mod mailbox;
mod mem_log;
mod meta;
mod pool;
mod record;
mod recovery;
mod segment;
mod shared;
mod store;
mod syncer;
mod tail;
pub mod testing;
mod writer;
mod writer_pool;

use std::future::Future;

pub use config::{FsyncPolicy, LogConfig};
pub use error::{ConfigProblem, Corruption, LogError, Result};
pub use file_log::{FileLog, LogStats};
pub use mem_log::MemLog;
pub use record::{Appended, Header, NewRecord, Offset, ReadLimits, Record};
pub use recovery::RecoveryReport;
pub use shared::set_pool_threads;
pub use store::{FileStore, LogStore, MemStore};
pub use tail::TailReader;
pub use writer::RetentionReport;

/// An append-only log of records with dense offsets: the seam between the broker and
/// storage.
///
/// Offsets start at 0 and grow by one per record. The log holds the offsets
/// `first_offset()..next_offset()`; trimming and retention move `first_offset` up,
/// nothing ever renumbers. Nothing happens until a returned future is polled: a
/// dropped append appends nothing, and concurrent appends are ordered by when they
/// first run. Every method is required: a default that answered "unsupported" would
/// hide a missing implementation until a rare path ran.
pub trait MessageLog: Send + Sync + 'static {
    /// Appends `records` as one batch: they get consecutive offsets, in order, and are
    /// kept or lost together. Resolves once they are durable under the fsync policy
    /// (for `FileLog` with `always`: after `fdatasync` returned). They are visible to
    /// readers once the group they were written with is committed: for a group of
    /// such appends, only then; `FileLog` publishes a group that also holds a staged
    /// append (`submit_batch_staged`) once it is written, before its sync.
    ///
    /// # Errors
    /// [`LogError::EmptyBatch`]; [`LogError::TooLarge`] for a record over
    /// `max_record_bytes` or a batch over `max_batch_bytes` (nothing is written);
    /// [`LogError::NoSpace`] / [`LogError::Io`] when the write or sync failed (nothing
    /// of the batch is kept, and the log stays usable); [`LogError::Closed`];
    /// [`LogError::Failed`] after a failure the log could not roll back.
    fn append_batch(&self, records: &[NewRecord]) -> impl Future<Output = Result<Appended>> + Send;

    /// Reads records from `from` on, in offset order: at most `limits.max_records`,
    /// and at most `limits.max_bytes` of encoded records, except that at least one
    /// record is returned if any exists at or after `from`. Reading at
    /// `next_offset()` returns an empty list.
    ///
    /// # Errors
    /// [`LogError::OffsetOutOfRange`] if `from` is below `first_offset()` or above
    /// `next_offset()`; [`LogError::Corrupt`] if stored bytes fail their checksum.
    fn read_from(
        &self,
        from: Offset,
        limits: ReadLimits,
    ) -> impl Future<Output = Result<Vec<Record>>> + Send;

    /// The first offset still held.
    fn first_offset(&self) -> Offset;

    /// The offset the next append will get (one past the last record).
    fn next_offset(&self) -> Offset;

    /// The offset of the first record, in offset order from `first_offset()`, whose
    /// timestamp is at least `timestamp_ms`; `None` if there is none.
    ///
    /// # Errors
    /// [`LogError::Corrupt`] or [`LogError::Io`] from the reads it needs.
    fn offset_for_timestamp(
        &self,
        timestamp_ms: i64,
    ) -> impl Future<Output = Result<Option<Offset>>> + Send;

    /// Durably moves `first_offset()` up to `offset`; records below it can no longer
    /// be read and their space is reclaimed whole segments at a time. Trimming to or
    /// below the current first offset does nothing.
    ///
    /// # Errors
    /// [`LogError::OffsetOutOfRange`] if `offset > next_offset()`.
    fn trim_before(&self, offset: Offset) -> impl Future<Output = Result<()>> + Send;

    /// Resolves once the record at `offset` is readable (`next_offset() > offset`),
    /// with the new `next_offset()`. The wake-up for tailing readers.
    ///
    /// # Errors
    /// [`LogError::Closed`] if the log closes first.
    fn wait_for(&self, offset: Offset) -> impl Future<Output = Result<Offset>> + Send;

    /// Finishes pending appends, syncs and closes. Later appends fail with
    /// [`LogError::Closed`]; closing twice is fine.
    ///
    /// # Errors
    /// [`LogError::Io`] if the final sync failed.
    fn close(&self) -> impl Future<Output = Result<()>> + Send;

    /// Queues an append *now*, not at the first poll: appends submitted one after
    /// the other get offsets in that order, whoever awaits them and when. For a
    /// caller that must know the order of its appends before they are durable (a
    /// queue answering sends in order, the broker's shared-log dispatcher). The
    /// returned future resolves as [`MessageLog::append_batch`] does and borrows
    /// nothing.
    ///
    /// # Errors
    /// As [`MessageLog::append_batch`].
    fn submit_batch(
        &self,
        records: &[NewRecord],
    ) -> impl Future<Output = Result<Appended>> + Send + use<Self>;

    /// Queues an append now, as [`MessageLog::submit_batch`], and returns two
    /// futures: the first resolves once the batch is written and readable (before
    /// its sync), the second once it is durable. For a caller that may let records
    /// be seen before they are durable but must not say they are (the broker
    /// delivers a message once written and confirms it once synced, decision 0005).
    /// A reader may therefore see these records before they are durable, and a
    /// crash before the sync can lose records a reader saw. Once the first future
    /// has resolved, a failed sync is not rolled back: the log then refuses appends
    /// until reopened ([`LogError::Failed`]). A log without a separate sync step
    /// resolves both together.
    ///
    /// # Errors
    /// Both futures fail as [`MessageLog::append_batch`] does; the first only when
    /// the batch was not written.
    fn submit_batch_staged(
        &self,
        records: &[NewRecord],
    ) -> (
        impl Future<Output = Result<Appended>> + Send + use<Self>,
        impl Future<Output = Result<Appended>> + Send + use<Self>,
    );

    /// Queues an append now, as [`MessageLog::submit_batch`], that resolves once
    /// written, without waiting for a sync of its own: it becomes durable with the
    /// log's next synced append, or within a bound the implementation documents
    /// (`FileLog`: 100 ms). A crash before that may lose it. For records whose
    /// loss costs little (acks of deliveries: losing one means a redelivery), so
    /// that they do not each cost a sync.
    ///
    /// # Errors
    /// As [`MessageLog::append_batch`].
    fn append_batch_unsynced(
        &self,
        records: &[NewRecord],
    ) -> impl Future<Output = Result<Appended>> + Send + use<Self>;

    /// Current bounds, size and counters.
    fn stats(&self) -> LogStats;

    /// The last offset, if the log holds any record.
    fn last_offset(&self) -> Option<Offset> {
        let (first, next) = (self.first_offset(), self.next_offset());
        (next > first).then(|| Offset(next.0 - 1))
    }
}

/// What readers may see of a log: offsets `start..next`, and whether it closed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Watermark {
    pub(crate) start: u64,
    pub(crate) next: u64,
    pub(crate) closed: bool,
}

/// Waits on a watermark until `offset` is readable or the log closes.
async fn wait_for(
    mut marks: tokio::sync::watch::Receiver<Watermark>,
    offset: Offset,
) -> Result<Offset> {
    let mark = *marks
        .wait_for(|m| m.next > offset.0 || m.closed)
        .await
        .map_err(|_| LogError::Closed)?;
    if mark.next > offset.0 {
        Ok(Offset(mark.next))
    } else {
        Err(LogError::Closed)
    }
}
