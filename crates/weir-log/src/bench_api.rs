//! Hooks for the crate's criterion benchmarks, which can only call public items: the
//! codec and index internals behind a small hidden surface. Not part of the API.

use bytes::Bytes;

use crate::batch::{self, Check, EncodedBatch, Records};
use crate::index::{Index, IndexEntry};
use crate::record::{NewRecord, Record};

/// Encodes and checksums a batch (what an appender does before queueing it).
pub fn encode_batch(records: &[NewRecord], now_ms: i64) -> Vec<u8> {
    EncodedBatch::encode(records, now_ms, u32::MAX >> 2, u32::MAX >> 2)
        .expect("benchmark batches are within limits")
        .contiguous()
        .into_owned()
}

/// Checks a batch's CRC and decodes every record (what a read does per batch).
pub fn decode_batch(batch: &Bytes) -> Vec<Record> {
    let Check::Complete(header) = batch::check(batch) else {
        panic!("benchmark batch does not check");
    };
    let batch = batch::record_source(batch, &header).expect("valid batch");
    Records::new(&batch, &header)
        .map(|r| {
            r.expect("valid record")
                .to_record(&batch)
                .expect("valid record")
        })
        .collect()
}

/// A segment index with `entries` entries, one per 4 KiB and 4 records.
pub struct IndexFixture(Index);

impl IndexFixture {
    /// Builds the fixture.
    pub fn new(entries: u32) -> Self {
        IndexFixture(Index::from_entries(
            (0..entries)
                .map(|i| IndexEntry {
                    rel_offset: i * 4,
                    position: i * 4096,
                    max_ts_before: i64::from(i),
                })
                .collect(),
        ))
    }

    /// Where a read of relative offset `rel` starts.
    pub fn floor_offset(&self, rel: u64) -> Option<u32> {
        self.0.floor_offset(rel).map(|e| e.position)
    }
}
