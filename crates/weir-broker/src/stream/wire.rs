//! What a front end speaking a log protocol of its own needs beyond the HTTP
//! reader's calls (the Kafka front end, issue 23): reads bounded in bytes as the
//! client asks, the offset a position names without reading there, a wake-up at
//! each append for a wait over several partitions, and a trim of a partition's
//! oldest records.

use std::sync::Arc;

use weir_log::{LogStore, MessageLog};

use super::read::{check_read, read_partition_stored, start_offset};
use super::{ReadFrom, StoredRead};
use crate::broker::Broker;
use crate::error::{BrokerError, Result};

/// Most bytes a bounded read may ask for.
pub const MAX_READ_WITHIN_BYTES: usize = 256 << 20;

impl<S: LogStore> Broker<S> {
    /// As [`Broker::read_stream_stored`] from `offset`, within `max_bytes` of whole
    /// batches (at least one batch is answered, whatever its size, as Kafka's Fetch
    /// does) instead of the broker's own read size.
    ///
    /// # Errors
    /// As [`Broker::read_stream_stored`]; `InvalidArgument` for `max_bytes` 0 or
    /// over [`MAX_READ_WITHIN_BYTES`].
    pub async fn read_stream_within(
        &self,
        name: &str,
        partition: u32,
        offset: u64,
        max_records: u32,
        max_bytes: usize,
        wait_ms: u64,
    ) -> Result<StoredRead> {
        if max_bytes == 0 || max_bytes > MAX_READ_WITHIN_BYTES {
            return Err(BrokerError::invalid(
                "max_bytes",
                format!("{max_bytes} is outside 1..={MAX_READ_WITHIN_BYTES}"),
            ));
        }
        let (stream, partition) = self.stream_part(name, partition)?;
        check_read(max_records, wait_ms, self.inner.config.limits.max_wait_ms)?;
        let log = &stream.partitions[partition as usize];
        let start = start_offset(log, ReadFrom::Offset(offset)).await?;
        read_partition_stored(log, partition, start, max_records, max_bytes, wait_ms).await
    }

    /// The offset `from` names in `partition` now (the end when a time is past the
    /// last record), without reading.
    ///
    /// # Errors
    /// `NotFound`, `InvalidArgument` (partition, an offset past the end), storage.
    pub async fn stream_offset(&self, name: &str, partition: u32, from: ReadFrom) -> Result<u64> {
        let (stream, partition) = self.stream_part(name, partition)?;
        start_offset(&stream.partitions[partition as usize], from).await
    }

    /// Woken at every append to `name` (and when it grows): a wait over several
    /// partitions takes `notified()` before it reads, then waits on it.
    ///
    /// # Errors
    /// `NotFound`.
    pub fn stream_appended(&self, name: &str) -> Result<Arc<tokio::sync::Notify>> {
        Ok(self.stream(name)?.appended.clone())
    }

    /// The number of this stream: a stream made anew under the same name after a
    /// delete has another (its directory's, `streams/@<id>`), so state kept by
    /// name elsewhere can tell the two apart.
    ///
    /// # Errors
    /// `NotFound`.
    pub fn stream_id(&self, name: &str) -> Result<u64> {
        let stream = self.stream(name)?;
        let id = stream
            .dir
            .file_name()
            .and_then(|n| n.to_str()?.strip_prefix('@')?.parse().ok());
        id.ok_or_else(|| BrokerError::internal(format!("stream '{name}' has no number")))
    }

    /// Removes the records of `partition` below `before` (Kafka's DeleteRecords,
    /// HTTP's `DELETE /api/streams/{name}/messages`): the partition's first offset
    /// moves there durably, and segments wholly below it are reclaimed. `None` is
    /// the end: every record appended so far goes. A `before` at or below the
    /// first offset changes nothing. Returns the partition's first offset after.
    ///
    /// # Errors
    /// `NotFound` (also for a partition's queue name), `InvalidArgument`
    /// (partition, `before` past the end), storage.
    pub async fn trim_stream(
        &self,
        name: &str,
        partition: u32,
        before: Option<u64>,
    ) -> Result<u64> {
        // The stream by its own name only: a partition's queue name
        // (`<stream>-N`) is for readers, not for removing the stream's records.
        let stream = self.stream(name)?;
        let log = stream.partitions.get(partition as usize).ok_or_else(|| {
            BrokerError::invalid(
                "partition",
                format!("the stream has {}", stream.partitions.len()),
            )
        })?;
        let next = log.next_offset().0;
        let before = before.unwrap_or(next);
        if before > next {
            return Err(BrokerError::invalid(
                "before",
                format!("{before} is past the end of partition {partition} ({next})"),
            ));
        }
        log.trim_before(weir_log::Offset(before))
            .await
            .map_err(|e| BrokerError::storage(name.to_owned(), e))?;
        tracing::info!(stream = name, partition, before, "trimmed stream");
        Ok(log.first_offset().0)
    }

    /// The first and next offsets of `partition`, read without waiting.
    ///
    /// # Errors
    /// `NotFound`, `InvalidArgument` (partition).
    pub fn stream_bounds(&self, name: &str, partition: u32) -> Result<(u64, u64)> {
        let (stream, partition) = self.stream_part(name, partition)?;
        let log = &stream.partitions[partition as usize];
        Ok((log.first_offset().0, log.next_offset().0))
    }
}
