//! Kafka's record batch (magic 2, Kafka's `DefaultRecordBatch`) as a second stored
//! batch format, beside weir's own (`batch.rs`, format version 1).
//!
//! Why: a Kafka producer's batch is stored as it came (its offset, append time and
//! checksum written by the log), so a compressed batch stays compressed on disk and
//! a Kafka Fetch hands stored bytes back without parsing or encoding a record
//! (decision 0012). Every other reader (HTTP, AMQP, the log's own reads by offset
//! and time) gets the same records as from a weir batch: [`crate::batch::Records`]
//! walks either format, inflating a compressed batch first.
//!
//! The two formats tell themselves apart by byte 16: weir's version (1) and
//! Kafka's magic (2) sit at the same place, and both keep the base offset in
//! bytes 0..8 and the length in 8..12 outside their checksums.
//!
//! ```text
//! header, 61 bytes, big-endian
//!   0  i64  base_offset             written by the log
//!   8  i32  batch_length            bytes after this field
//!  12  i32  partition_leader_epoch  -1 (not checksummed)
//!  16  i8   magic                   2
//!  17  u32  crc                     CRC32C of bytes 21..end
//!  21  i16  attributes              bits 0-2 compression (0 none, 1 gzip, 2 snappy,
//!                                   3 lz4, 4 zstd), bit 3 timestamp type (set: the
//!                                   log's append time); transactional and control
//!                                   bits are never stored
//!  23  i32  last_offset_delta       record_count - 1
//!  27  i64  base_timestamp
//!  35  i64  max_timestamp           the append time the log wrote
//!  43  i64  producer_id             -1, or an idempotent producer's
//!  51  i16  producer_epoch
//!  53  i32  base_sequence
//!  57  i32  record_count            >= 1
//! then the records, compressed as a whole when bits 0-2 say so:
//!   varint length (of the rest), i8 attributes, varlong timestamp_delta,
//!   varint offset_delta (its index in the batch), varint key_length (-1: none),
//!   key, varint value_length (-1: null, read as empty), value, varint
//!   header_count, then per header varint name_length, name, varint value_length
//!   (-1: null, read as empty), value. Varints are zigzag-encoded.
//! ```

use std::borrow::Cow;
use std::io::Read;

use crate::batch_header::{BatchHeader, Check, FORMAT_MAX_BATCH_LEN, Format, KafkaFields, Layout};
use crate::error::Corruption;

/// Kafka's magic byte, at weir's version byte.
pub(crate) const MAGIC: u8 = 2;
/// Bytes before the first record.
pub(crate) const HEADER_LEN: usize = 61;
/// Bytes before the length field's count starts.
const LOG_OVERHEAD: usize = 12;
/// Where the checksummed part starts.
const CRC_FROM: usize = 21;
/// The smallest record: length, attributes, two deltas, key and value lengths,
/// header count, one byte each.
const MIN_RECORD: usize = 7;
/// Attribute bits.
const COMPRESSION_MASK: i16 = 0x07;
const LOG_APPEND_TIME: i16 = 0x08;
/// The bits a stored batch may have: compression and timestamp type.
const STORED_BITS: i16 = COMPRESSION_MASK | LOG_APPEND_TIME;
/// The most records a compressed batch may claim. Its bytes do not bound its count
/// before it is inflated, and a segment's index counts offsets in a u32: a batch
/// claiming billions must be refused from its header. librdkafka's largest batch
/// is 1,000,000 records.
const MAX_COMPRESSED_RECORDS: u32 = 1 << 21;

fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}

fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(b[at..at + 4].try_into().expect("invariant: 4-byte slice"))
}

fn be_i64(b: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(b[at..at + 8].try_into().expect("invariant: 8-byte slice"))
}

fn crc_of(batch: &[u8]) -> u32 {
    crc32c::crc32c(&batch[CRC_FROM..])
}

/// As [`crate::batch::check`], for a buffer whose byte 16 is [`MAGIC`].
pub(crate) fn check(buf: &[u8]) -> Check {
    if buf.len() < HEADER_LEN {
        return Check::Incomplete { need: HEADER_LEN };
    }
    let field = be_i32(buf, 8);
    let Some(len) = usize::try_from(field)
        .ok()
        .map(|l| l + LOG_OVERHEAD)
        .filter(|l| (HEADER_LEN + 1..=FORMAT_MAX_BATCH_LEN as usize).contains(l))
    else {
        return Check::Invalid(Corruption::BatchLength(field.cast_unsigned()));
    };
    if buf.len() < len {
        return Check::Incomplete { need: len };
    }
    let batch = &buf[..len];
    if u32::from_be_bytes(batch[17..21].try_into().expect("invariant: 4 bytes")) != crc_of(batch) {
        return Check::Invalid(Corruption::BatchChecksum);
    }
    let attributes = be_i16(batch, 21);
    if attributes & !STORED_BITS != 0 || attributes & COMPRESSION_MASK > 4 {
        return Check::Invalid(Corruption::BatchFlags(attributes.to_be_bytes()[1]));
    }
    let count = be_i32(batch, 57);
    let compressed = attributes & COMPRESSION_MASK != 0;
    let records_fit = |count: u32| {
        if compressed {
            count <= MAX_COMPRESSED_RECORDS
        } else {
            count as usize <= (len - HEADER_LEN) / MIN_RECORD
        }
    };
    let Some(count) = u32::try_from(count).ok().filter(|c| {
        *c >= 1 && records_fit(*c) && i64::from(be_i32(batch, 23)) == i64::from(*c) - 1
    }) else {
        return Check::Invalid(Corruption::RecordFraming);
    };
    let base_offset = be_i64(batch, 0).cast_unsigned();
    if base_offset.checked_add(u64::from(count)).is_none() {
        return Check::Invalid(Corruption::OffsetOverflow { base_offset, count });
    }
    Check::Complete(header_of(batch))
}

/// As [`crate::batch::header_of`], for a Kafka batch.
pub(crate) fn header_of(batch: &[u8]) -> BatchHeader {
    let attributes = be_i16(batch, 21);
    BatchHeader {
        base_offset: be_i64(batch, 0).cast_unsigned(),
        len: (be_i32(batch, 8).cast_unsigned()).wrapping_add(LOG_OVERHEAD as u32),
        count: be_i32(batch, 57).cast_unsigned(),
        max_timestamp_ms: be_i64(batch, 35),
        format: Format::Kafka(KafkaFields {
            codec: attributes.to_be_bytes()[1] & 0x07,
            log_append_time: attributes & LOG_APPEND_TIME != 0,
            base_timestamp_ms: be_i64(batch, 27),
        }),
    }
}

/// Writes the base offset (big-endian, as Kafka's).
pub(crate) fn set_base_offset(batch: &mut [u8], base_offset: u64) {
    batch[0..8].copy_from_slice(&base_offset.to_be_bytes());
}

/// Stamps a checked batch as the log stores it: the log's append time as every
/// record's timestamp (Kafka's `LogAppendTime`), leader epoch -1, offset 0 until the
/// writer sets it, and the checksum computed again.
pub(crate) fn stamp(batch: &mut [u8], now_ms: i64) {
    batch[0..8].fill(0);
    batch[12..16].copy_from_slice(&(-1i32).to_be_bytes());
    let attributes = be_i16(batch, 21) | LOG_APPEND_TIME;
    batch[21..23].copy_from_slice(&attributes.to_be_bytes());
    batch[35..43].copy_from_slice(&now_ms.to_be_bytes());
    let crc = crc_of(batch);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
}

/// The bytes the records of a checked batch are read from, and where they start:
/// the batch itself, or its records inflated (within `limit` bytes).
pub(crate) fn records_bytes<'a>(
    batch: &'a [u8],
    fields: &KafkaFields,
    limit: usize,
) -> Result<(Cow<'a, [u8]>, usize), Corruption> {
    if fields.codec == 0 {
        return Ok((Cow::Borrowed(batch), HEADER_LEN));
    }
    let inflated = inflate(fields.codec, &batch[HEADER_LEN..], limit)?;
    Ok((Cow::Owned(inflated), 0))
}

/// Inflates a compressed record set, refusing past `limit` bytes.
fn inflate(codec: u8, data: &[u8], limit: usize) -> Result<Vec<u8>, Corruption> {
    let failed = |e: &dyn std::fmt::Display| Corruption::Compression {
        codec,
        reason: e.to_string(),
    };
    let bound = |mut reader: Box<dyn Read + '_>| -> Result<Vec<u8>, Corruption> {
        let mut out = Vec::new();
        (&mut reader)
            .take(limit as u64 + 1)
            .read_to_end(&mut out)
            .map_err(|e| failed(&e))?;
        if out.len() > limit {
            return Err(Corruption::Inflated { limit });
        }
        Ok(out)
    };
    match codec {
        1 => bound(Box::new(flate2::read::MultiGzDecoder::new(data))),
        2 => snappy(data, limit).map_err(|e| match e {
            Snappy::TooLarge => Corruption::Inflated { limit },
            Snappy::Bad(reason) => failed(&reason),
        }),
        3 => bound(Box::new(lz4::Decoder::new(data).map_err(|e| failed(&e))?)),
        4 => bound(Box::new(
            zstd::stream::read::Decoder::new(data).map_err(|e| failed(&e))?,
        )),
        _ => Err(Corruption::BatchFlags(codec)),
    }
}

enum Snappy {
    TooLarge,
    Bad(String),
}

/// The Java client's snappy framing (snappy-java's "xerial" blocks).
const XERIAL: [u8; 8] = [0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0];

/// Snappy: one raw block (librdkafka), or xerial-framed blocks (the Java client).
fn snappy(data: &[u8], limit: usize) -> Result<Vec<u8>, Snappy> {
    let block = |raw: &[u8], out: &mut Vec<u8>| -> Result<(), Snappy> {
        let len = snap::raw::decompress_len(raw).map_err(|e| Snappy::Bad(e.to_string()))?;
        if out.len().saturating_add(len) > limit {
            return Err(Snappy::TooLarge);
        }
        let start = out.len();
        out.resize(start + len, 0);
        snap::raw::Decoder::new()
            .decompress(raw, &mut out[start..])
            .map_err(|e| Snappy::Bad(e.to_string()))?;
        Ok(())
    };
    let cut = || Snappy::Bad("a block is cut short".into());
    let mut out = Vec::new();
    if data.len() >= 16 && data[..8] == XERIAL {
        let mut pos = 16;
        while pos < data.len() {
            let len = data.get(pos..pos + 4).ok_or_else(cut)?;
            let len = u32::from_be_bytes(len.try_into().expect("invariant: 4 bytes")) as usize;
            let raw = data
                .get(pos + 4..pos.saturating_add(4).saturating_add(len))
                .ok_or_else(cut)?;
            block(raw, &mut out)?;
            pos += 4 + len;
        }
    } else {
        block(data, &mut out)?;
    }
    Ok(out)
}

/// A zigzag varint of at most `max_bytes` bytes at `*at`.
fn varlong(buf: &[u8], at: &mut usize, max_bytes: u32) -> Result<i64, Corruption> {
    let mut value: u64 = 0;
    for i in 0..max_bytes {
        let b = *buf.get(*at).ok_or(Corruption::RecordFraming)?;
        *at += 1;
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok((value >> 1).cast_signed() ^ -((value & 1).cast_signed()));
        }
    }
    Err(Corruption::RecordFraming)
}

fn varint(buf: &[u8], at: &mut usize) -> Result<i32, Corruption> {
    i32::try_from(varlong(buf, at, 5)?).map_err(|_| Corruption::RecordFraming)
}

/// One record's place: `fields..end` holds its key length onwards.
pub(crate) struct Frame {
    pub(crate) fields: usize,
    pub(crate) end: usize,
    pub(crate) timestamp_delta: i64,
    pub(crate) offset_delta: i32,
}

/// The record at `*pos` in `buf`, moving `*pos` past it.
pub(crate) fn frame(buf: &[u8], pos: &mut usize) -> Result<Frame, Corruption> {
    let length = varint(buf, pos)?;
    let end = usize::try_from(length)
        .ok()
        .and_then(|l| pos.checked_add(l))
        .filter(|e| *e <= buf.len())
        .ok_or(Corruption::RecordFraming)?;
    let record = &buf[..end];
    let mut at = *pos + 1; // attributes
    let timestamp_delta = varlong(record, &mut at, 10)?;
    let offset_delta = varint(record, &mut at)?;
    *pos = end;
    Ok(Frame {
        fields: at,
        end,
        timestamp_delta,
        offset_delta,
    })
}

/// `len` bytes at `*at` (a length of -1, null, is an empty range there).
fn take(buf: &[u8], at: &mut usize) -> Result<Option<std::ops::Range<usize>>, Corruption> {
    let len = varint(buf, at)?;
    if len == -1 {
        return Ok(None);
    }
    let len = usize::try_from(len).map_err(|_| Corruption::RecordFraming)?;
    let end = at
        .checked_add(len)
        .filter(|e| *e <= buf.len())
        .ok_or(Corruption::RecordFraming)?;
    let range = *at..end;
    *at = end;
    Ok(Some(range))
}

/// Where the key, each header and the value are in the record whose fields run
/// from `fields` to `end` of `buf`.
pub(crate) fn layout(buf: &[u8], fields: usize, end: usize) -> Result<Layout, Corruption> {
    let record = &buf[..end];
    let mut at = fields;
    let key = take(record, &mut at)?;
    let body = take(record, &mut at)?.unwrap_or(at..at);
    let count = varint(record, &mut at)?;
    let count = usize::try_from(count).map_err(|_| Corruption::RecordFraming)?;
    let mut headers = Vec::with_capacity(count.min(end - at));
    for _ in 0..count {
        let name = take(record, &mut at)?.ok_or(Corruption::RecordFraming)?;
        let value = take(record, &mut at)?.unwrap_or(at..at);
        headers.push((name, value));
    }
    if at != end {
        return Err(Corruption::RecordFraming);
    }
    Ok(Layout { key, headers, body })
}

#[cfg(test)]
#[path = "kafka_batch_tests.rs"]
mod tests;
