//! Reading batches as they are stored ([`StoredBatches`]), and decoding them again
//! ([`decode_stored`]).
//!
//! Why: a reader that hands records on (an HTTP reader asking for the binary format,
//! the Kafka front end's Fetch later) would otherwise pay to parse every record here
//! and to encode it again on the way out. A stored read visits only batch headers:
//! each batch's checksum is checked, its bytes are handed on as a slice of what was
//! read (no copy), and the reader parses the records it wants (docs/on-disk-format.md
//! "Batch" is the format; the base offset is written in each batch's first 8 bytes).
//! Batches are whole: the first may start before the offset asked for, which the
//! reader skips, as Kafka's Fetch does.

use std::ops::Range;

use bytes::Bytes;

use crate::batch::{self, BatchHeader, Check, Records};
use crate::error::{Corruption, Result};
use crate::record::{Offset, ReadLimits, Record};
use crate::segment::{ReadFlow, Segment};

/// Whole stored batches, in offset order, as one read answered them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoredBatches {
    /// The offset the read asked for: records below it in the first batch are not
    /// part of the answer.
    pub from: Offset,
    /// One past the last record of the last batch (`from` when there is none).
    pub next: Offset,
    /// Records from `from` on in these batches.
    pub records: usize,
    /// Bytes of the batches, headers included.
    pub bytes: usize,
    /// The batches, each exactly as stored (docs/on-disk-format.md "Batch").
    pub batches: Vec<Bytes>,
}

impl StoredBatches {
    /// No batches, for a read from `from`.
    pub fn empty(from: Offset) -> StoredBatches {
        StoredBatches {
            from,
            next: from,
            ..StoredBatches::default()
        }
    }

    /// Adds one checked batch of `count` records starting at `base`.
    pub(crate) fn push(&mut self, base: u64, count: u32, bytes: Bytes) {
        let next = base + u64::from(count);
        self.records += usize::try_from(next - base.max(self.from.0)).unwrap_or(usize::MAX);
        self.bytes += bytes.len();
        self.next = Offset(next);
        self.batches.push(bytes);
    }

    /// The records from `from` on, parsed (slices of the batches, no copies).
    ///
    /// # Errors
    /// A [`Corruption`] if a batch does not parse.
    pub fn to_records(&self) -> std::result::Result<Vec<Record>, Corruption> {
        let mut out = Vec::with_capacity(self.records);
        for batch in &self.batches {
            decode_into(batch, self.from, &mut out)?;
        }
        Ok(out)
    }
}

impl StoredBatches {
    /// The records from `from` on within `limits`, as `read_from` counts them: at
    /// most `max_records`, and encoded records within `max_bytes` (at least one).
    /// For batches this log encoded itself (the tail cache's): their checksums are
    /// not computed again on every read of them.
    pub(crate) fn records_within(
        &self,
        limits: ReadLimits,
    ) -> std::result::Result<Vec<Record>, Corruption> {
        let mut out = Vec::new();
        let mut used = 0usize;
        for batch in &self.batches {
            let header = batch::header_of(batch);
            let batch = &batch::record_source(batch, &header)?;
            for record in Records::new(batch, &header) {
                let record = record?;
                if record.offset < self.from.0 {
                    continue;
                }
                let len = record.encoded_len();
                if out.len() >= limits.max_records
                    || (!out.is_empty() && used.saturating_add(len) > limits.max_bytes)
                {
                    return Ok(out);
                }
                out.push(record.to_record(batch)?);
                used += len;
            }
        }
        Ok(out)
    }
}

/// Parses back-to-back stored batches (the bytes of one or more [`StoredBatches`],
/// as the HTTP API's binary format carries them) into their records from `from` on,
/// checking each batch's checksum and length. The records' key, headers and body
/// are slices of `bytes`.
///
/// # Errors
/// A [`Corruption`]: a batch cut short, a bad checksum or framing.
pub fn decode_stored(bytes: &Bytes, from: Offset) -> std::result::Result<Vec<Record>, Corruption> {
    let mut out = Vec::new();
    decode_into(bytes, from, &mut out)?;
    Ok(out)
}

/// A record of stored batches, borrowed from them ([`visit_stored`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordView<'a> {
    /// Its offset.
    pub offset: u64,
    /// Its timestamp (ms since the epoch).
    pub timestamp_ms: i64,
    /// Its key.
    pub key: Option<&'a [u8]>,
    /// Its headers, names and values, in order.
    pub headers: Vec<(&'a [u8], &'a [u8])>,
    /// Its body.
    pub body: &'a [u8],
}

/// Calls `f` with each record from `from` on in back-to-back stored batches, as
/// [`decode_stored`] parses them but borrowing from `bytes`: nothing is allocated for
/// a record without headers.
///
/// # Errors
/// A [`Corruption`]: a batch cut short, a bad checksum or framing.
pub fn visit_stored(
    bytes: &[u8],
    from: Offset,
    mut f: impl FnMut(RecordView<'_>),
) -> std::result::Result<(), Corruption> {
    each_batch(bytes, |header, at| {
        let one = batch::record_bytes(&bytes[at], header)?;
        let one = &*one;
        for record in Records::new(one, header) {
            let record = record?;
            if record.offset < from.0 {
                continue;
            }
            let layout = record.layout(one)?;
            f(RecordView {
                offset: record.offset,
                timestamp_ms: record.timestamp_ms,
                key: layout.key.map(|k| &one[k]),
                headers: layout
                    .headers
                    .into_iter()
                    .map(|(name, value)| (&one[name], &one[value]))
                    .collect(),
                body: &one[layout.body],
            });
        }
        Ok(())
    })
}

fn decode_into(
    bytes: &Bytes,
    from: Offset,
    out: &mut Vec<Record>,
) -> std::result::Result<(), Corruption> {
    each_batch(bytes, |header, at| {
        let one = batch::record_source(&bytes.slice(at), header)?;
        for record in Records::new(&one, header) {
            let record = record?;
            if record.offset >= from.0 {
                out.push(record.to_record(&one)?);
            }
        }
        Ok(())
    })
}

/// Runs `f` on each of the back-to-back batches in `bytes`, once it passed
/// [`batch::check`] (length, checksum, version, count), with where it lies. Also
/// the walk of an appender's batches (`IncomingBatch::parse`).
pub(crate) fn each_batch(
    bytes: &[u8],
    mut f: impl FnMut(&BatchHeader, Range<usize>) -> std::result::Result<(), Corruption>,
) -> std::result::Result<(), Corruption> {
    let mut pos = 0;
    while pos < bytes.len() {
        let header = match batch::check(&bytes[pos..]) {
            Check::Complete(header) => header,
            Check::Incomplete { .. } => return Err(Corruption::Truncated),
            Check::Invalid(reason) => return Err(reason),
        };
        let end = pos + header.len as usize;
        f(&header, pos..end)?;
        pos = end;
    }
    Ok(())
}

/// Adds to `out` the whole batches of `segment` holding offsets from `from` up to
/// `end_offset` (exclusive), within `limits`: whole batches while the bytes stay
/// within `max_bytes` (at least one), until `max_records` records from `out.from`
/// on are in.
pub(crate) fn read_segment(
    segment: &Segment,
    from: u64,
    end_offset: u64,
    limits: &ReadLimits,
    out: &mut StoredBatches,
) -> Result<ReadFlow> {
    let records_left = limits.max_records.saturating_sub(out.records);
    let bytes_left = limits.max_bytes.saturating_sub(out.bytes);
    let mut cursor = segment.cursor_from(from, records_left, bytes_left)?;
    loop {
        let Some((header, bytes)) = cursor.next_committed()? else {
            return Ok(ReadFlow::Exhausted {
                next_offset: cursor.expected_offset(),
            });
        };
        if header.next_offset() <= from {
            continue;
        }
        // A batch past the end this read may see (committed after the watermark
        // it took) waits for the next read; batches never straddle that end.
        if header.next_offset() > end_offset {
            return Ok(ReadFlow::Done);
        }
        if !out.batches.is_empty() && out.bytes.saturating_add(bytes.len()) > limits.max_bytes {
            return Ok(ReadFlow::Done);
        }
        out.push(header.base_offset, header.count, bytes);
        if out.records >= limits.max_records {
            return Ok(ReadFlow::Done);
        }
    }
}
