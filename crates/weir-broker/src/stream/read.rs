//! Reading a partition: where to start ([`ReadFrom`]), clamping to what retention
//! kept, waiting for records that are not there yet, and the records as read.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use weir_log::{LogError, MessageLog, Offset, ReadLimits, Record};

use super::{StoredRead, StreamRead, StreamRecord};
use crate::clock::now_ms;
use crate::error::{BrokerError, Result};

/// Most bytes of records one read (or one group poll, over all its partitions)
/// answers; at least one record is always answered, whatever its size.
pub(super) const MAX_READ_BYTES: usize = 8 << 20;

/// Checks a read's or a poll's `max` and `wait_ms`.
pub(super) fn check_read(max: u32, wait_ms: u64, max_wait_ms: u64) -> Result<()> {
    if max == 0 || max > super::MAX_READ_RECORDS {
        return Err(BrokerError::invalid(
            "max",
            format!("{max} is outside 1..={}", super::MAX_READ_RECORDS),
        ));
    }
    if wait_ms > max_wait_ms {
        return Err(BrokerError::invalid(
            "wait_ms",
            format!("{wait_ms} is over the limit of {max_wait_ms}"),
        ));
    }
    Ok(())
}

/// Where a reader starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadFrom {
    /// The first record still held.
    First,
    /// The last record (the end if there is none).
    Last,
    /// The end: only records appended from now on.
    Next,
    /// This offset (below the first: the first).
    Offset(u64),
    /// The first record appended at or after this time (ms since the epoch).
    Time(i64),
    /// The first record appended at most this many ms ago.
    Ago(u64),
}

impl std::str::FromStr for ReadFrom {
    type Err = BrokerError;

    /// `first`, `last`, `next`, an offset (also as `offset:N`), `time:<ms since
    /// epoch>` or `ago:<ms>`.
    fn from_str(text: &str) -> Result<ReadFrom> {
        let bad = || {
            BrokerError::invalid(
                "from",
                format!(
                    "'{text}' is not first, last, next, an offset, time:<ms since the epoch> \
                     or ago:<ms>"
                ),
            )
        };
        Ok(match text {
            "first" => ReadFrom::First,
            "last" => ReadFrom::Last,
            "next" => ReadFrom::Next,
            _ => {
                if let Some(n) = text.strip_prefix("offset:") {
                    ReadFrom::Offset(n.parse().map_err(|_| bad())?)
                } else if let Some(ms) = text.strip_prefix("time:") {
                    ReadFrom::Time(ms.parse().map_err(|_| bad())?)
                } else if let Some(ms) = text.strip_prefix("ago:") {
                    ReadFrom::Ago(ms.parse().map_err(|_| bad())?)
                } else {
                    ReadFrom::Offset(text.parse().map_err(|_| bad())?)
                }
            }
        })
    }
}

/// The offset `from` names in `log` now.
pub(super) async fn start_offset<L: MessageLog>(log: &L, from: ReadFrom) -> Result<u64> {
    let (first, next) = (log.first_offset().0, log.next_offset().0);
    let by_time = |ms: i64| async move {
        log.offset_for_timestamp(ms)
            .await
            .map(|found| found.map_or(next, |o| o.0))
    };
    let offset = match from {
        ReadFrom::First => first,
        ReadFrom::Last => next.saturating_sub(1).max(first),
        ReadFrom::Next => next,
        ReadFrom::Offset(n) if n > next => {
            return Err(BrokerError::invalid(
                "from",
                format!("offset {n} is beyond the end of the partition (next is {next})"),
            ));
        }
        ReadFrom::Offset(n) => n.max(first),
        ReadFrom::Time(ms) => by_time(ms).await.map_err(storage)?,
        ReadFrom::Ago(ms) => {
            let since = now_ms().saturating_sub(i64::try_from(ms).unwrap_or(i64::MAX));
            by_time(since).await.map_err(storage)?
        }
    };
    Ok(offset)
}

fn storage(e: LogError) -> BrokerError {
    BrokerError::storage("(stream)", e)
}

/// Up to `max` records (and about `max_bytes`) of partition `partition` from
/// `start`, waiting up to `wait_ms` for the first when there is none yet.
pub(super) async fn read_partition<L: MessageLog>(
    log: &L,
    partition: u32,
    start: u64,
    max: u32,
    max_bytes: usize,
    wait_ms: u64,
) -> Result<StreamRead> {
    let limits = ReadLimits::new(max as usize, max_bytes);
    let (records, from) = read_clamped(log, start, wait_ms, |from| {
        log.read_from(Offset(from), limits)
    })
    .await?;
    let next = records.last().map_or(from, |r| r.offset.0 + 1);
    Ok(StreamRead {
        records: records
            .into_iter()
            .map(|r| record_out(partition, r))
            .collect(),
        next,
    })
}

/// As [`read_partition`], answering whole batches as stored: at least `max` records
/// from `start` unless the end or `max_bytes` comes first (the last batch may go
/// past `max`; the first may begin before `start`).
pub(super) async fn read_partition_stored<L: MessageLog>(
    log: &L,
    partition: u32,
    start: u64,
    max: u32,
    max_bytes: usize,
    wait_ms: u64,
) -> Result<StoredRead> {
    let limits = ReadLimits::new(max as usize, max_bytes);
    let (batches, _) = read_clamped(log, start, wait_ms, |from| {
        log.read_stored(Offset(from), limits)
    })
    .await?;
    Ok(StoredRead { partition, batches })
}

/// Runs `read` from `start` (waiting up to `wait_ms` for a record there first), from
/// the first offset instead if retention moved it past `start` meanwhile; answers
/// what it read and where it read from.
async fn read_clamped<L: MessageLog, T, F, R>(
    log: &L,
    start: u64,
    wait_ms: u64,
    read: R,
) -> Result<(T, u64)>
where
    R: Fn(u64) -> F,
    F: Future<Output = std::result::Result<T, LogError>>,
{
    if wait_ms > 0 && log.next_offset().0 <= start {
        // Nothing yet: wait for it (a closed log answers what there is).
        let _ =
            tokio::time::timeout(Duration::from_millis(wait_ms), log.wait_for(Offset(start))).await;
    }
    let mut from = start;
    loop {
        match read(from).await {
            Ok(out) => return Ok((out, from)),
            // Retention moved the first offset up meanwhile: read from it.
            Err(LogError::OffsetOutOfRange { .. }) if from < log.first_offset().0 => {
                from = log.first_offset().0;
            }
            Err(e) => return Err(storage(e)),
        }
    }
}

fn record_out(partition: u32, r: Record) -> StreamRecord {
    let headers: BTreeMap<String, bytes::Bytes> = r
        .headers
        .into_iter()
        .map(|h| (String::from_utf8_lossy(&h.name).into_owned(), h.value))
        .collect();
    StreamRecord {
        partition,
        offset: r.offset.0,
        timestamp_ms: r.timestamp_ms,
        key: r.key,
        headers,
        body: r.body,
    }
}
