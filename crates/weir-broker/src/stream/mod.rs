//! Streams (issue 21): replayable logs of records beside the queues. A record stays
//! after it is read; readers say where to start (an offset, a time, first, last,
//! next) and several read the same records at their own pace.
//!
//! A stream has P partitions, each a weir-log log with its own dense `u64`
//! offsets that are never reused. A record is its offset, the broker's timestamp
//! (ms, the log's), an optional key, headers and a body — the log's own record, so a
//! stream record is stored once, as written, and read back without a copy of its
//! own format. A keyed record goes to partition `murmur2(key) mod P` (Kafka's
//! default partitioner, [`partition_for`]); unkeyed records are spread round-robin.
//!
//! Retention (`max_age_ms`, `max_bytes`, each per partition as Kafka's
//! `retention.ms` / `retention.bytes`) is the log's: whole sealed segments go, the
//! newest is always kept, and a reader asking below the first offset is clamped to
//! it. Appends are answered once synced under the fsync policy (group commit), or,
//! for a stream declared with `durable: false`, once written.
//!
//! Layout (beside `queues/`, numbered from the same counter, `meta/queue-ids.json`):
//!
//! ```text
//! <data_dir>/streams/@<id>/name          its broker-wide name (crate::names)
//! <data_dir>/streams/@<id>/stream.json   its options (written via .tmp + rename)
//! <data_dir>/streams/@<id>/p<N>/         partition N's weir-log log
//! <data_dir>/streams/@<id>/groups/       its consumer groups (group_log.rs)
//! <data_dir>/streams/.trash-*            a deleted stream on its way out
//! ```
//!
//! Streams and queues share one namespace per vhost, as RabbitMQ's stream queues
//! are queues: a name is a queue or a stream, never both.

mod api;
mod coordinated;
mod files;
mod group_api;
mod group_log;
#[cfg(test)]
mod group_tests;
pub mod groups;
mod incoming;
mod partitions;
mod read;
#[cfg(test)]
mod tests;
mod vhost;
mod wire;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::error::{BrokerError, Result};

pub use api::{PROPERTIES_HEADER, RESERVED_HEADER_PREFIX};
pub use group_api::{GroupPoll, PollOptions};
pub use incoming::{PartitionBatches, PlacedBatch};
pub use read::ReadFrom;
/// What a stored read answers, and the parser for it (a reader of the binary format).
pub use weir_log::{Corruption, IncomingBatch, Offset, StoredBatches, decode_stored};
/// Records as an appender encodes them, and stored batches walked without a copy
/// (the Kafka front end's Produce and Fetch).
pub use weir_log::{Header, NewRecord, RecordView, visit_stored};
pub use wire::MAX_READ_WITHIN_BYTES;

/// Most partitions a stream may have.
pub const MAX_PARTITIONS: u32 = 1024;

/// Most records one read answers.
pub const MAX_READ_RECORDS: u32 = 10_000;

/// How a stream is made.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamOptions {
    /// Partitions (1 by default; may grow, never shrink).
    #[serde(default = "one")]
    pub partitions: u32,
    /// Records older than this go, whole segments at a time.
    #[serde(default)]
    pub max_age_ms: Option<u64>,
    /// Each partition keeps at most about this many bytes (whole segments).
    #[serde(default)]
    pub max_bytes: Option<u64>,
    /// The size at which a partition's segment is sealed (1 KiB ..= 1 GiB;
    /// the broker's `[log] segment_bytes` when unset). Retention removes whole
    /// segments, so smaller segments make it finer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment_bytes: Option<u64>,
    /// Appends are answered once synced (the default), or once written.
    #[serde(default = "yes")]
    pub durable: bool,
}

fn one() -> u32 {
    1
}

fn yes() -> bool {
    true
}

impl Default for StreamOptions {
    fn default() -> Self {
        StreamOptions {
            partitions: 1,
            max_age_ms: None,
            max_bytes: None,
            segment_bytes: None,
            durable: true,
        }
    }
}

impl StreamOptions {
    /// Checks the options' bounds.
    ///
    /// # Errors
    /// `InvalidArgument` naming the field.
    pub fn validate(&self) -> Result<()> {
        if self.partitions == 0 || self.partitions > MAX_PARTITIONS {
            return Err(BrokerError::invalid(
                "partitions",
                format!("{} is outside 1..={MAX_PARTITIONS}", self.partitions),
            ));
        }
        if self.max_age_ms == Some(0) {
            return Err(BrokerError::invalid("max_age_ms", "must be at least 1"));
        }
        if self.max_bytes == Some(0) {
            return Err(BrokerError::invalid("max_bytes", "must be at least 1"));
        }
        if let Some(n) = self.segment_bytes
            && !(1 << 10..=1 << 30).contains(&n)
        {
            return Err(BrokerError::invalid(
                "segment_bytes",
                format!("{n} is outside 1 KiB ..= 1 GiB"),
            ));
        }
        Ok(())
    }
}

/// One record to append.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StreamRecordIn {
    /// Its key: records with the same key go to the same partition, in order.
    pub key: Option<Bytes>,
    /// Its headers.
    pub headers: BTreeMap<String, Bytes>,
    /// Its body.
    pub body: Bytes,
}

/// Where an appended record went.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Placed {
    /// Its partition.
    pub partition: u32,
    /// Its offset there.
    pub offset: u64,
}

/// One record read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamRecord {
    /// Its partition.
    pub partition: u32,
    /// Its offset in the partition.
    pub offset: u64,
    /// When the broker appended it (ms since the epoch).
    pub timestamp_ms: i64,
    /// Its key.
    pub key: Option<Bytes>,
    /// Its headers (in append order; a name given twice keeps the last).
    pub headers: BTreeMap<String, Bytes>,
    /// Its body.
    pub body: Bytes,
}

/// What a read answers: the records, and the offset to read from next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamRead {
    /// In offset order.
    pub records: Vec<StreamRecord>,
    /// One past the last record answered (where the read started if none).
    pub next: u64,
}

/// Records of one partition as stored: whole batches in the log's format
/// (docs/on-disk-format.md "Batch"), for readers that take the binary format.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredRead {
    /// The partition.
    pub partition: u32,
    /// Its batches; `batches.from` is where the read started (records below it in
    /// the first batch are not part of the answer), `batches.next` where the next
    /// read starts.
    pub batches: StoredBatches,
}

/// One partition as listed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PartitionInfo {
    /// Its number.
    pub partition: u32,
    /// The first offset still held.
    pub first_offset: u64,
    /// The offset the next record gets.
    pub next_offset: u64,
    /// Bytes on disk.
    pub bytes: u64,
    /// Segment files.
    pub segments: usize,
}

/// A stream as listed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StreamInfo {
    /// Its name.
    pub name: String,
    /// Its options.
    #[serde(flatten)]
    pub options: StreamOptions,
    /// Each partition.
    pub partition_stats: Vec<PartitionInfo>,
}

/// A running stream: its partitions' logs.
pub(crate) struct StreamRef<L> {
    pub(crate) options: StreamOptions,
    pub(crate) dir: PathBuf,
    pub(crate) partitions: Vec<L>,
    /// The next partition of an unkeyed record.
    pub(crate) round_robin: AtomicU64,
    /// Its consumer groups.
    pub(crate) groups: std::sync::Arc<group_log::GroupStore<L>>,
    /// Woken at each append: consumer-group polls waiting for records.
    pub(crate) appended: std::sync::Arc<tokio::sync::Notify>,
}

/// `7D`, `12h`, `30m`, `10s` (also `Y` years and `M` months), as RabbitMQ's
/// `x-max-age`, in ms.
pub fn interval_ms(text: &str) -> Option<u64> {
    let unit = text.chars().last()?;
    let n: u64 = text[..text.len() - unit.len_utf8()].parse().ok()?;
    let seconds = match unit {
        'Y' => 365 * 86_400,
        'M' => 30 * 86_400,
        'D' => 86_400,
        'h' => 3600,
        'm' => 60,
        's' => 1,
        _ => return None,
    };
    n.checked_mul(seconds)?.checked_mul(1000)
}

/// The partition of a keyed record: Kafka's default partitioner,
/// `toPositive(murmur2(key)) % partitions`, so a Kafka front end and Kafka's own
/// clients agree on where a key lives.
pub fn partition_for(key: &[u8], partitions: u32) -> u32 {
    let positive = murmur2(key) & 0x7fff_ffff;
    positive % partitions.max(1)
}

/// Kafka's `Utils.murmur2` (`MurmurHash2`, seed `0x9747b28c`), as a `u32`.
fn murmur2(data: &[u8]) -> u32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let length = data.len();
    #[allow(
        clippy::cast_possible_truncation,
        reason = "Kafka hashes the length as an int"
    )]
    let mut h: u32 = SEED ^ (length as u32);
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}
