//! Batches and records: the bytes of a segment after its file header.
//!
//! Appends are written as batches. A batch is the unit of checksumming, of atomicity
//! (recovery keeps or cuts whole batches) and of offset assignment (a batch's records
//! get consecutive offsets). All integers are little-endian and fixed-width.
//!
//! ```text
//! batch header, 32 bytes
//!   0  u64  base_offset       offset of the first record; NOT covered by the CRC
//!   8  u32  batch_len         bytes of the whole batch, header included
//!  12  u32  crc               CRC32C of bytes 8..12 then 16..batch_len
//!  16  u8   version           1
//!  17  u8   flags             0 (reserved, e.g. for compression)
//!  18  u16  reserved          0
//!  20  u32  record_count      >= 1
//!  24  i64  max_timestamp_ms  largest record timestamp in the batch
//! then record_count records, back to back:
//!   0  u32  record_len        bytes of this record after this field
//!   4  i64  timestamp_ms
//!  12  i32  key_len           -1 when there is no key
//!  16  ..   key
//!   .  u16  header_count
//!   .       header_count times: u16 name_len, name, u32 value_len, value
//!   .  ..   body              the rest of the record
//! ```
//!
//! The CRC skips `base_offset` so an appender can encode and checksum its batch on its
//! own thread; the writer thread then only patches the offset in (Kafka does the same).
//! An unprotected offset cannot go unnoticed: offsets are dense, so every reader checks
//! that each batch starts exactly where the previous one ended.

use std::borrow::Cow;

use bytes::Bytes;

use crate::batch_header::KafkaFields;
pub(crate) use crate::batch_header::{BatchHeader, Check, FORMAT_MAX_BATCH_LEN, Format, Layout};
use crate::error::{Corruption, LogError, Result};
use crate::kafka_batch;
use crate::record::{Header, NewRecord, Record};

/// Size of a batch header.
pub(crate) const BATCH_HEADER_LEN: usize = 32;
/// Batch format version written by this build.
pub(crate) const BATCH_VERSION: u8 = 1;
/// Fixed bytes per record: length, timestamp, key length and header count.
pub(crate) const RECORD_OVERHEAD: usize = 4 + 8 + 4 + 2;
const NO_KEY: i32 = -1;

/// Encoded size of one record, framing included (what `max_record_bytes` limits).
pub(crate) fn encoded_record_len(record: &NewRecord) -> usize {
    RECORD_OVERHEAD
        + record.key.as_ref().map_or(0, Bytes::len)
        + record
            .headers
            .iter()
            .map(|h| 2 + h.name.len() + 4 + h.value.len())
            .sum::<usize>()
        + record.body.len()
}

/// Checks `records` against the limits and returns the encoded batch size. Shared with
/// the in-memory log so both refuse exactly the same appends.
pub(crate) fn check_limits(
    records: &[NewRecord],
    max_record_bytes: u32,
    max_batch_bytes: u32,
) -> Result<usize> {
    if records.is_empty() {
        return Err(LogError::EmptyBatch);
    }
    let mut total = BATCH_HEADER_LEN;
    for record in records {
        if record.headers.len() > usize::from(u16::MAX) {
            return Err(LogError::TooLarge {
                what: "header count of a record",
                size: record.headers.len() as u64,
                limit: u64::from(u16::MAX),
            });
        }
        if let Some(h) = record
            .headers
            .iter()
            .find(|h| h.name.len() > usize::from(u16::MAX))
        {
            return Err(LogError::TooLarge {
                what: "header name",
                size: h.name.len() as u64,
                limit: u64::from(u16::MAX),
            });
        }
        let len = encoded_record_len(record);
        if len > max_record_bytes as usize {
            return Err(LogError::TooLarge {
                what: "record",
                size: len as u64,
                limit: u64::from(max_record_bytes),
            });
        }
        total += len;
    }
    let limit = max_batch_bytes.min(FORMAT_MAX_BATCH_LEN);
    if total > limit as usize {
        return Err(LogError::TooLarge {
            what: "batch",
            size: total as u64,
            limit: u64::from(limit),
        });
    }
    Ok(total)
}

/// Bodies at least this large are not copied into an encoded batch: it keeps the
/// record's own `Bytes` and the writer hands them to one vectored write, so a
/// 100 MiB message costs no second 100 MiB on its way to disk.
const BORROW_BODY_BYTES: usize = 64 << 10;

/// A batch encoded and checksummed, waiting for its base offset.
#[derive(Debug)]
pub(crate) struct EncodedBatch {
    /// The header and the encoded bytes up to the first borrowed body.
    head: Vec<u8>,
    /// The rest, in order: large bodies as their records' own `Bytes`, and the
    /// bytes encoded between them. Empty for a batch of small records.
    tail: Vec<Bytes>,
    len: u64,
    count: u32,
    max_timestamp_ms: i64,
}

impl EncodedBatch {
    /// Encodes `records`, stamping those without a timestamp with `now_ms`.
    pub(crate) fn encode(
        records: &[NewRecord],
        now_ms: i64,
        max_record_bytes: u32,
        max_batch_bytes: u32,
    ) -> Result<Self> {
        let total = check_limits(records, max_record_bytes, max_batch_bytes)?;
        let borrowed: usize = records
            .iter()
            .map(|r| r.body.len())
            .filter(|&n| n >= BORROW_BODY_BYTES)
            .sum();
        let mut head = Vec::with_capacity(total - borrowed);
        head.resize(BATCH_HEADER_LEN, 0);
        let mut tail: Vec<Bytes> = Vec::new();
        // Where encoding goes: `head` until the first borrowed body, then a chunk
        // of `tail`.
        let mut chunk: Option<Vec<u8>> = None;
        let mut max_timestamp_ms = i64::MIN;
        for record in records {
            let buf = chunk.as_mut().unwrap_or(&mut head);
            let timestamp_ms = record.timestamp_ms.unwrap_or(now_ms);
            max_timestamp_ms = max_timestamp_ms.max(timestamp_ms);
            let record_len = encoded_record_len(record) - 4;
            put_u32(buf, record_len as u32);
            buf.extend_from_slice(&timestamp_ms.to_le_bytes());
            match &record.key {
                Some(key) => {
                    put_u32(buf, key.len() as u32);
                    buf.extend_from_slice(key);
                }
                None => buf.extend_from_slice(&NO_KEY.to_le_bytes()),
            }
            buf.extend_from_slice(&(record.headers.len() as u16).to_le_bytes());
            for header in &record.headers {
                buf.extend_from_slice(&(header.name.len() as u16).to_le_bytes());
                buf.extend_from_slice(&header.name);
                put_u32(buf, header.value.len() as u32);
                buf.extend_from_slice(&header.value);
            }
            if record.body.len() >= BORROW_BODY_BYTES {
                if let Some(done) = chunk.take() {
                    tail.push(Bytes::from(done));
                }
                tail.push(record.body.clone());
                chunk = Some(Vec::new());
            } else {
                buf.extend_from_slice(&record.body);
            }
        }
        if let Some(done) = chunk.filter(|c| !c.is_empty()) {
            tail.push(Bytes::from(done));
        }
        let count = records.len() as u32;
        head[8..12].copy_from_slice(&(total as u32).to_le_bytes());
        head[16] = BATCH_VERSION;
        head[20..24].copy_from_slice(&count.to_le_bytes());
        head[24..32].copy_from_slice(&max_timestamp_ms.to_le_bytes());
        let mut crc = crc32c::crc32c_append(crc32c::crc32c(&head[8..12]), &head[16..]);
        for part in &tail {
            crc = crc32c::crc32c_append(crc, part);
        }
        head[12..16].copy_from_slice(&crc.to_le_bytes());
        let batch = EncodedBatch {
            head,
            tail,
            len: total as u64,
            count,
            max_timestamp_ms,
        };
        debug_assert_eq!(batch.parts().map(<[u8]>::len).sum::<usize>(), total);
        Ok(batch)
    }

    /// A batch already in one buffer with its checksum computed ([`seal`]).
    pub(crate) fn from_sealed(bytes: Vec<u8>, count: u32, max_timestamp_ms: i64) -> Self {
        EncodedBatch {
            len: bytes.len() as u64,
            head: bytes,
            tail: Vec::new(),
            count,
            max_timestamp_ms,
        }
    }

    /// Writes the base offset into the header, in its format's byte order. The
    /// CRC does not cover it.
    pub(crate) fn set_base_offset(&mut self, base_offset: u64) {
        if self.head[16] == kafka_batch::MAGIC {
            kafka_batch::set_base_offset(&mut self.head, base_offset);
        } else {
            self.head[0..8].copy_from_slice(&base_offset.to_le_bytes());
        }
    }

    /// The batch's bytes, in order, in pieces (for one vectored write).
    pub(crate) fn parts(&self) -> impl Iterator<Item = &[u8]> {
        std::iter::once(self.head.as_slice()).chain(self.tail.iter().map(|b| &b[..]))
    }

    /// The batch's bytes in one buffer (a copy when a body was borrowed).
    pub(crate) fn contiguous(&self) -> std::borrow::Cow<'_, [u8]> {
        if self.tail.is_empty() {
            std::borrow::Cow::Borrowed(&self.head)
        } else {
            std::borrow::Cow::Owned(self.parts().flatten().copied().collect())
        }
    }

    /// The batch's bytes as one `Bytes`, taking the encoded buffer (a copy only
    /// when a body was borrowed). Only once it is written: its parts are empty after.
    pub(crate) fn take_bytes(&mut self) -> Bytes {
        if self.tail.is_empty() {
            Bytes::from(std::mem::take(&mut self.head))
        } else {
            let bytes = Bytes::from(self.contiguous().into_owned());
            self.head = Vec::new();
            self.tail.clear();
            bytes
        }
    }

    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    pub(crate) fn count(&self) -> u32 {
        self.count
    }

    pub(crate) fn max_timestamp_ms(&self) -> i64 {
        self.max_timestamp_ms
    }
}

fn put_u32(buf: &mut Vec<u8>, v: u32) {
    buf.extend_from_slice(&v.to_le_bytes());
}

/// Writes `batch`'s checksum (its bytes otherwise complete).
pub(crate) fn seal(batch: &mut [u8]) {
    let crc = checksum(batch);
    batch[12..16].copy_from_slice(&crc.to_le_bytes());
}

/// CRC32C over `batch_len` and everything after the CRC field.
fn checksum(batch: &[u8]) -> u32 {
    let crc = crc32c::crc32c(&batch[8..12]);
    crc32c::crc32c_append(crc, &batch[16..])
}

fn u32_at(buf: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(buf[at..at + 4].try_into().expect("invariant: 4-byte slice"))
}

fn u64_at(buf: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(buf[at..at + 8].try_into().expect("invariant: 8-byte slice"))
}

fn i64_at(buf: &[u8], at: usize) -> i64 {
    i64::from_le_bytes(buf[at..at + 8].try_into().expect("invariant: 8-byte slice"))
}

/// Looks at the batch at the start of `buf` without allocating; parsing records is
/// left to [`Records`], which runs only on batches that passed.
pub(crate) fn check(buf: &[u8]) -> Check {
    if buf.len() > 16 && buf[16] == kafka_batch::MAGIC {
        return kafka_batch::check(buf);
    }
    if buf.len() < BATCH_HEADER_LEN {
        return Check::Incomplete {
            need: BATCH_HEADER_LEN,
        };
    }
    let len = u32_at(buf, 8);
    if (len as usize) < BATCH_HEADER_LEN + RECORD_OVERHEAD || len > FORMAT_MAX_BATCH_LEN {
        return Check::Invalid(Corruption::BatchLength(len));
    }
    if buf.len() < len as usize {
        return Check::Incomplete { need: len as usize };
    }
    let batch = &buf[..len as usize];
    if u32_at(batch, 12) != checksum(batch) {
        return Check::Invalid(Corruption::BatchChecksum);
    }
    if batch[16] != BATCH_VERSION {
        return Check::Invalid(Corruption::BatchVersion(batch[16]));
    }
    let count = u32_at(batch, 20);
    // Every record takes at least its fixed fields: a count the length cannot hold
    // is damage (found by fuzzing: a tiny batch claiming billions of records moved
    // the offsets on by that much, past what a segment's u32 index entries hold).
    if count == 0 || count as usize > (len as usize - BATCH_HEADER_LEN) / RECORD_OVERHEAD {
        return Check::Invalid(Corruption::RecordFraming);
    }
    let base_offset = u64_at(batch, 0);
    // The checksum does not cover the base offset: a damaged one must not make
    // `next_offset` (and the record walk) overflow.
    if base_offset.checked_add(u64::from(count)).is_none() {
        return Check::Invalid(Corruption::OffsetOverflow { base_offset, count });
    }
    Check::Complete(header_of(batch))
}

/// The fixed fields at the start of `batch`, read without a check: for a batch that
/// passed [`check`] or that this log encoded itself (the tail cache's).
pub(crate) fn header_of(batch: &[u8]) -> BatchHeader {
    if batch[16] == kafka_batch::MAGIC {
        return kafka_batch::header_of(batch);
    }
    BatchHeader {
        base_offset: u64_at(batch, 0),
        len: u32_at(batch, 8),
        count: u32_at(batch, 20),
        max_timestamp_ms: i64_at(batch, 24),
        format: Format::Weir,
    }
}

/// The most a stored compressed batch may inflate to when it is read. Appends
/// bound it more tightly (the Kafka front end's `max_uncompressed_batch_bytes`).
const READ_INFLATE_LIMIT: usize = FORMAT_MAX_BATCH_LEN as usize;

/// The bytes [`Records`] walks for a checked batch: the batch itself, or (a
/// compressed Kafka batch) its records inflated.
///
/// # Errors
/// [`Corruption::Compression`] or [`Corruption::Inflated`] for a batch that does
/// not inflate.
pub(crate) fn record_bytes<'a>(
    batch: &'a [u8],
    header: &BatchHeader,
) -> std::result::Result<Cow<'a, [u8]>, Corruption> {
    match &header.format {
        Format::Kafka(fields) => {
            kafka_batch::records_bytes(batch, fields, READ_INFLATE_LIMIT).map(|(bytes, _)| bytes)
        }
        Format::Weir => Ok(Cow::Borrowed(batch)),
    }
}

/// As [`record_bytes`], as a `Bytes` that records can be slices of: the batch
/// itself (no copy) unless it had to be inflated.
///
/// # Errors
/// As [`record_bytes`].
pub(crate) fn record_source(
    batch: &Bytes,
    header: &BatchHeader,
) -> std::result::Result<Bytes, Corruption> {
    Ok(match record_bytes(batch, header)? {
        Cow::Borrowed(_) => batch.clone(),
        Cow::Owned(inflated) => Bytes::from(inflated),
    })
}

/// Iterates over the records of a checked batch. Skipping a record reads only its
/// length and timestamp; [`RecordRef::to_record`] parses the rest.
pub(crate) struct Records<'a> {
    batch: &'a [u8],
    pos: usize,
    offset: u64,
    left: u32,
    /// A Kafka batch's: the first offset, its timestamps.
    kafka: Option<(u64, i64, KafkaFields)>,
}

impl<'a> Records<'a> {
    /// `batch` must be what [`record_bytes`] gave for one batch that passed
    /// [`check`].
    pub(crate) fn new(batch: &'a [u8], header: &BatchHeader) -> Self {
        let (pos, kafka) = match header.format {
            Format::Weir => (BATCH_HEADER_LEN, None),
            Format::Kafka(fields) => (
                if fields.codec == 0 {
                    kafka_batch::HEADER_LEN
                } else {
                    0
                },
                Some((header.base_offset, header.max_timestamp_ms, fields)),
            ),
        };
        Records {
            batch,
            pos,
            offset: header.base_offset,
            left: header.count,
            kafka,
        }
    }

    /// The next record of a Kafka batch.
    fn next_kafka(
        &mut self,
        base: u64,
        max_timestamp_ms: i64,
        fields: KafkaFields,
    ) -> Result<RecordRef, Corruption> {
        let frame = kafka_batch::frame(self.batch, &mut self.pos)?;
        if u64::try_from(frame.offset_delta).ok() != Some(self.offset - base) {
            return Err(Corruption::RecordFraming);
        }
        let timestamp_ms = if fields.log_append_time {
            max_timestamp_ms
        } else {
            fields
                .base_timestamp_ms
                .saturating_add(frame.timestamp_delta)
        };
        Ok(RecordRef {
            offset: self.offset,
            timestamp_ms,
            start: frame.fields,
            end: frame.end,
            kafka: true,
        })
    }
}

/// Where one record sits in its batch.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RecordRef {
    pub(crate) offset: u64,
    pub(crate) timestamp_ms: i64,
    /// First byte after the length field (a Kafka record's: its key length).
    start: usize,
    /// One past the record's last byte.
    end: usize,
    /// In a Kafka batch (`kafka_batch.rs` frames it).
    kafka: bool,
}

impl RecordRef {
    /// Where its timestamp is in the batch.
    pub(crate) fn timestamp_at(&self) -> usize {
        self.start
    }

    /// Encoded size, framing included (what read limits count).
    pub(crate) fn encoded_len(&self) -> usize {
        self.end - self.start + 4
    }

    /// Parses key, headers and body as slices of `batch` (no copies).
    pub(crate) fn to_record(self, batch: &Bytes) -> Result<Record, Corruption> {
        let layout = self.layout(batch)?;
        Ok(Record {
            offset: crate::record::Offset(self.offset),
            timestamp_ms: self.timestamp_ms,
            key: layout.key.map(|k| batch.slice(k)),
            headers: layout
                .headers
                .into_iter()
                .map(|(name, value)| Header {
                    name: batch.slice(name),
                    value: batch.slice(value),
                })
                .collect(),
            body: batch.slice(layout.body),
        })
    }

    /// Where the key, each header's name and value, and the body are in `batch`.
    pub(crate) fn layout(self, batch: &[u8]) -> Result<Layout, Corruption> {
        if self.kafka {
            return kafka_batch::layout(batch, self.start, self.end);
        }
        // `Records` checked that the record is inside the batch and at least
        // RECORD_OVERHEAD - 4 long: the timestamp and key length are in it.
        let bytes = &batch[..self.end];
        let mut at = self.start + 8;
        let key_len = i32::from_le_bytes(
            bytes[at..at + 4]
                .try_into()
                .expect("invariant: 4-byte slice"),
        );
        at += 4;
        let key = if key_len == NO_KEY {
            None
        } else {
            let key_len = usize::try_from(key_len).map_err(|_| Corruption::RecordFraming)?;
            Some(take(bytes, &mut at, key_len)?)
        };
        let header_count = u16::from_le_bytes(
            bytes
                .get(at..at + 2)
                .ok_or(Corruption::RecordFraming)?
                .try_into()
                .expect("invariant: 2-byte slice"),
        );
        at += 2;
        let mut headers = Vec::with_capacity(usize::from(header_count));
        for _ in 0..header_count {
            let name_len = bytes.get(at..at + 2).ok_or(Corruption::RecordFraming)?;
            let name_len = usize::from(u16::from_le_bytes(
                name_len.try_into().expect("invariant: 2-byte slice"),
            ));
            at += 2;
            let name = take(bytes, &mut at, name_len)?;
            if at + 4 > bytes.len() {
                return Err(Corruption::RecordFraming);
            }
            let value_len = u32_at(bytes, at) as usize;
            at += 4;
            let value = take(bytes, &mut at, value_len)?;
            headers.push((name, value));
        }
        Ok(Layout {
            key,
            headers,
            body: at..self.end,
        })
    }
}

fn take(bytes: &[u8], at: &mut usize, len: usize) -> Result<std::ops::Range<usize>, Corruption> {
    let end = at.checked_add(len).ok_or(Corruption::RecordFraming)?;
    if end > bytes.len() {
        return Err(Corruption::RecordFraming);
    }
    let range = *at..end;
    *at = end;
    Ok(range)
}

impl Iterator for Records<'_> {
    type Item = Result<RecordRef, Corruption>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            if self.pos != self.batch.len() {
                // Bytes after the last record: framing disagrees with the header.
                self.pos = self.batch.len();
                return Some(Err(Corruption::RecordFraming));
            }
            return None;
        }
        if let Some((base, max_timestamp_ms, fields)) = self.kafka {
            let item = self.next_kafka(base, max_timestamp_ms, fields);
            if item.is_err() {
                self.left = 0;
                self.pos = self.batch.len();
            } else {
                self.offset += 1;
                self.left -= 1;
            }
            return Some(item);
        }
        let fixed_end = self.pos + RECORD_OVERHEAD;
        if fixed_end > self.batch.len() {
            self.left = 0;
            self.pos = self.batch.len();
            return Some(Err(Corruption::RecordFraming));
        }
        let record_len = u32_at(self.batch, self.pos) as usize;
        let start = self.pos + 4;
        let end = start + record_len;
        if record_len < RECORD_OVERHEAD - 4 || end > self.batch.len() {
            self.left = 0;
            self.pos = self.batch.len();
            return Some(Err(Corruption::RecordFraming));
        }
        let item = RecordRef {
            offset: self.offset,
            timestamp_ms: i64_at(self.batch, start),
            start,
            end,
            kafka: false,
        };
        self.pos = end;
        self.offset += 1;
        self.left -= 1;
        Some(Ok(item))
    }
}

#[cfg(test)]
#[path = "batch_tests.rs"]
mod tests;
