//! The seam between the broker and storage: [`MessageLog`], what any log (the durable
//! [`crate::FileLog`], the in-memory [`crate::MemLog`], a replicated log later) offers,
//! with [`LogStats`], and the watermark readers wait on. A leaf: it names records,
//! errors and the retention settings only, so every implementation can import it
//! without reaching upward.

use std::future::Future;

use crate::config::Retention;
use crate::error::{LogError, Result};
use crate::incoming::IncomingBatch;
use crate::record::{Appended, NewRecord, Offset, ReadLimits, Record};
use crate::stored::StoredBatches;

/// Sizes and bounds of a log, for metrics and tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogStats {
    /// First offset still in the log.
    pub first_offset: Offset,
    /// Offset the next append gets.
    pub next_offset: Offset,
    /// Segment files.
    pub segments: usize,
    /// Bytes of committed data in segment files, headers included.
    pub size_bytes: u64,
    /// Appends committed since open.
    pub appends: u64,
    /// Commit groups written since open: each is one write (and, under `always`, one
    /// `fdatasync`); `appends / commit_groups` is what group commit achieved.
    pub commit_groups: u64,
    /// `fdatasync` calls on segment data since open (all policies).
    pub data_syncs: u64,
}

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

    /// Reads whole batches as they are stored, from the one holding `from` on
    /// ([`StoredBatches`]): batches while their bytes stay within `limits.max_bytes`
    /// (at least one if any record exists at or after `from`), until
    /// `limits.max_records` records from `from` on are in. Records keep the offsets
    /// and timestamps `read_from` gives them; how appends were cut into batches is
    /// the log's own (the in-memory log answers one batch per read).
    ///
    /// # Errors
    /// As `read_from`.
    fn read_stored(
        &self,
        from: Offset,
        limits: ReadLimits,
    ) -> impl Future<Output = Result<StoredBatches>> + Send;

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

    /// Takes new retention settings and a segment size for the segments sealed
    /// from now on, then applies the retention at once (records past the new
    /// limits go, whole segments at a time, the newest always kept). They last
    /// until the log closes: whoever opens it again passes them in its
    /// configuration.
    ///
    /// # Errors
    /// [`LogError::InvalidConfig`] for settings [`crate::LogConfig::validate`]
    /// refuses (nothing changes); as `trim_before` for the removal.
    fn reconfigure(&self, retention: Retention) -> impl Future<Output = Result<()>> + Send;

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

    /// Queues an append of a batch encoded outside the log, now, as
    /// [`MessageLog::submit_batch`] (`sync`) or [`MessageLog::append_batch_unsynced`]
    /// (not `sync`) do for records: its records get consecutive offsets and this log's
    /// timestamp, and what is stored is what those would store for the same records
    /// ([`IncomingBatch`]).
    ///
    /// # Errors
    /// As [`MessageLog::append_batch`].
    fn append_incoming(
        &self,
        batch: IncomingBatch,
        sync: bool,
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
pub(crate) async fn wait_for(
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
