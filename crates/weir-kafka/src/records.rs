//! Kafka record batches (magic 2, Kafka's `DefaultRecordBatch`) in and out.
//!
//! In (Produce): a record set is split into its batches, each checked whole by the
//! log (`weir_log`'s `IncomingBatch::parse_kafka`: length, CRC32C, attributes,
//! every record, inflated within `max_uncompressed` when compressed) and stored as
//! it came, compressed or not (decision 0012). Here: the refusals' Kafka errors,
//! and each batch's producer fields for the idempotent producer.
//!
//! Out (Fetch): a stored Kafka batch goes back as it is stored; a batch appended
//! over HTTP or AMQP (weir's own format) becomes one uncompressed Kafka batch of
//! the records from the offset asked for ([`OutBatch`]), with the log's append
//! times (timestamp type `LogAppendTime`: weir stamps every record with its own
//! clock).
//!
//! Batch layout (big-endian): base offset i64, batch length i32 (bytes after this
//! field), partition leader epoch i32, magic i8 = 2, CRC32C u32 (of the bytes from
//! the attributes to the end), attributes i16 (bits 0-2 compression, 3 timestamp
//! type, 4 transactional, 5 control), last offset delta i32, base timestamp i64, max
//! timestamp i64, producer id i64, producer epoch i16, base sequence i32, record
//! count i32, then the records. A record: length, attributes i8, timestamp delta,
//! offset delta, key length, key, value length, value, header count, headers (key
//! length, key, value length, value); lengths and deltas are zigzag varints, -1 is
//! null.

use bytes::{BufMut, Bytes, BytesMut};
use weir_broker::stream::{Corruption, IncomingBatch, RESERVED_HEADER_PREFIX, RecordView};

/// Bytes before the first record.
const HEADER_LEN: usize = 61;
/// Bytes counted in the batch length field's own value but before it.
const LOG_OVERHEAD: usize = 12;
/// Where the CRC'd part starts.
const CRC_FROM: usize = 21;
/// Attribute bits.
const LOG_APPEND_TIME: i16 = 0x08;
const TRANSACTIONAL_OR_CONTROL: u8 = 0x30;

/// Why a batch was refused: the Kafka error it answers.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum RecordError {
    /// Bad framing, CRC or record (Kafka's `CORRUPT_MESSAGE`).
    #[error("corrupt record batch: {0}")]
    Corrupt(String),
    /// A magic other than 2 (`UNSUPPORTED_FOR_MESSAGE_FORMAT`).
    #[error("record batch magic {0} is not supported (only 2)")]
    Magic(i8),
    /// Inflates past the limit (`RECORD_LIST_TOO_LARGE`).
    #[error("record batch inflates past {0} bytes")]
    TooLarge(usize),
    /// A transactional or control batch (no transactions).
    #[error("transactional batches are not supported")]
    Transactional,
}

fn corrupt(what: impl Into<String>) -> RecordError {
    RecordError::Corrupt(what.into())
}

impl From<Corruption> for RecordError {
    fn from(c: Corruption) -> Self {
        match c {
            Corruption::BatchVersion(magic) => RecordError::Magic(magic.cast_signed()),
            Corruption::BatchFlags(bits) if bits & TRANSACTIONAL_OR_CONTROL != 0 => {
                RecordError::Transactional
            }
            Corruption::Inflated { limit } => RecordError::TooLarge(limit),
            other => RecordError::Corrupt(other.to_string()),
        }
    }
}

/// One Kafka batch as produced, checked, to be stored as it is.
#[derive(Debug)]
pub(crate) struct InBatch {
    /// The idempotent producer's id (-1 without one), epoch and first sequence.
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    /// The batch, for the log.
    pub batch: IncomingBatch,
}

/// Splits a Produce request's record set into its batches, each checked whole.
///
/// # Errors
/// [`RecordError`] for the first batch that does not pass.
pub(crate) fn parse_batches(
    bytes: &Bytes,
    max_uncompressed: usize,
) -> Result<Vec<InBatch>, RecordError> {
    // Another magic first: the log would see weir's format or garbage in it.
    let mut pos = 0;
    while pos < bytes.len() {
        let rest = &bytes[pos..];
        if rest.len() < LOG_OVERHEAD + 5 {
            return Err(corrupt("a batch is cut short"));
        }
        let magic = rest[16].cast_signed();
        if magic != 2 {
            return Err(RecordError::Magic(magic));
        }
        let total = batch_len(rest)
            .ok_or_else(|| corrupt(format!("batch length {} does not fit", be_i32(rest, 8))))?;
        pos += total;
    }
    if bytes.is_empty() {
        return Err(corrupt("no record batch"));
    }
    let batches = IncomingBatch::parse_kafka(bytes, max_uncompressed)?;
    Ok(batches
        .into_iter()
        .map(|batch| {
            let b = batch.as_bytes();
            InBatch {
                producer_id: be_i64(b, 43),
                producer_epoch: be_i16(b, 51),
                base_sequence: be_i32(b, 53),
                batch,
            }
        })
        .collect())
}

/// A stored batch's producer, if it is a Kafka batch an idempotent producer sent:
/// its id, epoch, first sequence, record count and base offset.
pub(crate) fn stored_producer(stored: &[u8]) -> Option<(i64, i16, i32, u32, u64)> {
    if stored.len() < HEADER_LEN || stored[16] != 2 || be_i64(stored, 43) < 0 {
        return None;
    }
    Some((
        be_i64(stored, 43),
        be_i16(stored, 51),
        be_i32(stored, 53),
        be_i32(stored, 57).cast_unsigned(),
        be_i64(stored, 0).cast_unsigned(),
    ))
}

/// Whether a stored batch is in Kafka's format (Fetch sends it as it is).
pub(crate) fn is_kafka(stored: &[u8]) -> bool {
    stored.len() > 16 && stored[16] == 2
}

/// Whether a Produce record set carries an idempotent producer's batch (one that
/// names a producer id), judged in order against the batches before it. A record
/// set that does not look like batches says yes: it takes the careful path, where
/// [`parse_batches`] refuses it.
pub(crate) fn names_a_producer(bytes: &Bytes) -> bool {
    let mut pos = 0;
    while pos < bytes.len() {
        let rest = &bytes[pos..];
        if rest.len() < HEADER_LEN || be_i64(rest, 43) >= 0 {
            return true;
        }
        let Some(total) = batch_len(rest) else {
            return true;
        };
        pos += total;
    }
    false
}

/// The whole length of the batch at the head of `rest` (its length field plus the
/// offset and length before it), if it is at least a batch header and fits in
/// `rest`.
fn batch_len(rest: &[u8]) -> Option<usize> {
    usize::try_from(be_i32(rest, 8))
        .ok()
        .and_then(|l| l.checked_add(LOG_OVERHEAD))
        .filter(|t| *t >= HEADER_LEN && *t <= rest.len())
}

fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}

fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn be_i64(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(a)
}

fn len_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn put_varlong(out: &mut BytesMut, value: i64) {
    #[allow(clippy::cast_sign_loss, reason = "zigzag encoding")]
    let mut v = ((value << 1) ^ (value >> 63)) as u64;
    while v >= 0x80 {
        out.put_u8((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.put_u8(v as u8);
}

fn varlong_len(value: i64) -> usize {
    #[allow(clippy::cast_sign_loss, reason = "zigzag encoding")]
    let v = ((value << 1) ^ (value >> 63)) as u64;
    (64 - v.leading_zeros() as usize).max(1).div_ceil(7)
}

fn put_bytes(out: &mut BytesMut, bytes: Option<&[u8]>) {
    match bytes {
        None => put_varlong(out, -1),
        Some(b) => {
            put_varlong(out, len_i64(b.len()));
            out.put_slice(b);
        }
    }
}

fn bytes_len(bytes: Option<&[u8]>) -> usize {
    bytes.map_or(1, |b| varlong_len(len_i64(b.len())) + b.len())
}

/// Builds one Kafka batch from records of a stored weir batch, as Fetch answers.
#[derive(Default)]
pub(crate) struct OutBatch {
    records: BytesMut,
    base_offset: i64,
    base_timestamp: i64,
    max_timestamp: i64,
    last_offset: i64,
    count: i32,
}

impl OutBatch {
    /// Adds a record (in offset order).
    pub(crate) fn push(&mut self, record: &RecordView<'_>) {
        #[allow(clippy::cast_possible_wrap, reason = "offsets stay below 2^63")]
        let offset = record.offset as i64;
        if self.count == 0 {
            self.base_offset = offset;
            self.base_timestamp = record.timestamp_ms;
        }
        self.max_timestamp = self.max_timestamp.max(record.timestamp_ms);
        self.last_offset = offset;
        self.count += 1;
        let timestamp_delta = record.timestamp_ms - self.base_timestamp;
        let offset_delta = offset - self.base_offset;
        let shown = || {
            record
                .headers
                .iter()
                .filter(|(k, _)| !k.starts_with(RESERVED_HEADER_PREFIX.as_bytes()))
        };
        let headers_len: usize = shown()
            .map(|(k, v)| bytes_len(Some(k)) + bytes_len(Some(v)))
            .sum();
        let body_len = 1
            + varlong_len(timestamp_delta)
            + varlong_len(offset_delta)
            + bytes_len(record.key)
            + bytes_len(Some(record.body))
            + varlong_len(len_i64(shown().count()))
            + headers_len;
        let out = &mut self.records;
        put_varlong(out, len_i64(body_len));
        out.put_u8(0);
        put_varlong(out, timestamp_delta);
        put_varlong(out, offset_delta);
        put_bytes(out, record.key);
        put_bytes(out, Some(record.body));
        put_varlong(out, len_i64(shown().count()));
        for (k, v) in shown() {
            put_bytes(out, Some(k));
            put_bytes(out, Some(v));
        }
    }

    /// Whether it holds no record.
    pub(crate) fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Appends the batch to `out`.
    pub(crate) fn finish(self, out: &mut BytesMut) {
        let start = out.len();
        let length = HEADER_LEN - LOG_OVERHEAD + self.records.len();
        out.reserve(HEADER_LEN + self.records.len());
        out.put_i64(self.base_offset);
        out.put_i32(i32::try_from(length).unwrap_or(i32::MAX));
        out.put_i32(-1); // partition leader epoch
        out.put_i8(2);
        out.put_u32(0); // the CRC, below
        out.put_i16(LOG_APPEND_TIME);
        out.put_i32(i32::try_from(self.last_offset - self.base_offset).unwrap_or(i32::MAX));
        out.put_i64(self.base_timestamp);
        out.put_i64(self.max_timestamp);
        out.put_i64(-1); // producer id
        out.put_i16(-1); // producer epoch
        out.put_i32(-1); // base sequence
        out.put_i32(self.count);
        out.put_slice(&self.records);
        let crc = crc32c::crc32c(&out[start + CRC_FROM..]);
        out[start + 17..start + 21].copy_from_slice(&crc.to_be_bytes());
    }
}

#[cfg(test)]
#[allow(clippy::cast_possible_wrap, reason = "small test figures")]
mod tests {
    use super::*;

    /// The records of a checked batch, as every reader sees them.
    fn records_of(batch: &InBatch) -> Vec<crate::fuzzing::Owned> {
        crate::fuzzing::owned_records(batch.batch.as_bytes())
    }

    fn view<'a>(offset: u64, key: Option<&'a [u8]>, body: &'a [u8]) -> RecordView<'a> {
        RecordView {
            offset,
            timestamp_ms: 1_700_000_000_000 + offset as i64,
            key,
            headers: vec![(b"h".as_slice(), b"v".as_slice())],
            body,
        }
    }

    fn batch_of(views: &[RecordView<'_>]) -> Bytes {
        let mut b = OutBatch::default();
        for v in views {
            b.push(v);
        }
        let mut out = BytesMut::new();
        b.finish(&mut out);
        out.freeze()
    }

    #[test]
    fn a_batch_written_for_fetch_reads_back() {
        let big = vec![7u8; 300];
        let bytes = batch_of(&[view(5, Some(b"k"), b"one"), view(6, None, &big)]);
        let parsed = parse_batches(&bytes, 1 << 20).unwrap();
        assert_eq!(parsed.len(), 1);
        let records = records_of(&parsed[0]);
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].0.as_deref(), Some(b"k".as_slice()));
        assert_eq!(records[0].2, b"one");
        assert_eq!(records[0].1, [(b"h".to_vec(), b"v".to_vec())]);
        assert_eq!(records[1].0, None);
        assert_eq!(records[1].2.len(), 300);
        assert_eq!(parsed[0].producer_id, -1);
        assert_eq!(be_i64(&bytes, 0), 5, "base offset");
        assert_eq!(be_i32(&bytes, 23), 1, "last offset delta");
        assert_eq!(parsed[0].batch.as_bytes(), &bytes[..], "kept as it came");
    }

    #[test]
    fn a_record_set_names_a_producer_if_any_batch_does() {
        let plain = batch_of(&[view(0, None, b"x")]);
        let two = [plain.to_vec(), plain.to_vec()].concat();
        assert!(!names_a_producer(&Bytes::from(two.clone())));
        let mut second_named = two;
        second_named[plain.len() + 43..plain.len() + 51].copy_from_slice(&7i64.to_be_bytes());
        assert!(names_a_producer(&Bytes::from(second_named)));
        // What is not batches takes the careful path.
        assert!(names_a_producer(&plain.slice(..30)));
        let mut bad_length = plain.to_vec();
        bad_length[8..12].copy_from_slice(&(-1i32).to_be_bytes());
        assert!(names_a_producer(&Bytes::from(bad_length)));
    }

    #[test]
    fn bad_batches_are_refused_with_their_reason() {
        let bytes = batch_of(&[view(0, None, b"x")]);
        let mut flipped = bytes.to_vec();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert_eq!(
            parse_batches(&Bytes::from(flipped), 1 << 20).unwrap_err(),
            corrupt("batch checksum mismatch")
        );
        let mut magic = bytes.to_vec();
        magic[16] = 1;
        assert_eq!(
            parse_batches(&Bytes::from(magic), 1 << 20).unwrap_err(),
            RecordError::Magic(1)
        );
        let mut transactional = bytes.to_vec();
        transactional[22] |= 0x10;
        let crc = crc32c::crc32c(&transactional[CRC_FROM..]);
        transactional[17..21].copy_from_slice(&crc.to_be_bytes());
        assert_eq!(
            parse_batches(&Bytes::from(transactional), 1 << 20).unwrap_err(),
            RecordError::Transactional
        );
        let cut = bytes.slice(..bytes.len() - 1);
        assert!(matches!(
            parse_batches(&cut, 1 << 20),
            Err(RecordError::Corrupt(_))
        ));
        assert!(parse_batches(&Bytes::new(), 1 << 20).is_err());
    }

    /// A batch whose records are `data` compressed with `codec`.
    fn compressed(codec: i16, data: &[u8], count: i32) -> Bytes {
        let mut out = BytesMut::new();
        out.put_i64(0);
        out.put_i32((HEADER_LEN - LOG_OVERHEAD + data.len()) as i32);
        out.put_i32(-1);
        out.put_i8(2);
        out.put_u32(0);
        out.put_i16(codec);
        out.put_i32(count - 1);
        out.put_i64(0);
        out.put_i64(0);
        out.put_i64(-1);
        out.put_i16(-1);
        out.put_i32(-1);
        out.put_i32(count);
        out.put_slice(data);
        let crc = crc32c::crc32c(&out[CRC_FROM..]);
        out[17..21].copy_from_slice(&crc.to_be_bytes());
        out.freeze()
    }

    /// The Java client's snappy framing (snappy-java's "xerial" blocks).
    const XERIAL: [u8; 8] = [0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0];

    #[test]
    fn every_codec_is_kept_and_reads_and_a_bomb_is_refused() {
        let plain = batch_of(&[view(0, Some(b"k"), b"hello"), view(1, None, b"world")]);
        let records = &plain[HEADER_LEN..];
        let gz = {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            std::io::Write::write_all(&mut e, records).unwrap();
            e.finish().unwrap()
        };
        let sn = snap::raw::Encoder::new().compress_vec(records).unwrap();
        let mut xerial = XERIAL.to_vec();
        xerial.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1]);
        xerial.extend_from_slice(&(sn.len() as u32).to_be_bytes());
        xerial.extend_from_slice(&sn);
        let lz = {
            let mut e = lz4::EncoderBuilder::new().build(Vec::new()).unwrap();
            std::io::Write::write_all(&mut e, records).unwrap();
            let (out, r) = e.finish();
            r.unwrap();
            out
        };
        let zs = zstd::encode_all(records, 1).unwrap();
        for (codec, data) in [(1, gz), (2, sn), (2, xerial), (3, lz), (4, zs)] {
            let batch = compressed(codec, &data, 2);
            let parsed = parse_batches(&batch, 1 << 20).unwrap();
            assert_eq!(
                parsed[0].batch.as_bytes(),
                &batch[..],
                "codec {codec}: kept"
            );
            let bodies: Vec<Vec<u8>> = records_of(&parsed[0]).into_iter().map(|r| r.2).collect();
            assert_eq!(
                bodies,
                [b"hello".to_vec(), b"world".to_vec()],
                "codec {codec}"
            );
        }
        let zeros = vec![0u8; 1 << 20];
        let bomb = zstd::encode_all(&zeros[..], 3).unwrap();
        assert_eq!(
            parse_batches(&compressed(4, &bomb, 1), 4096).unwrap_err(),
            RecordError::TooLarge(4096)
        );
    }

    #[test]
    fn varints_have_the_length_written() {
        for v in [
            0i64,
            1,
            -1,
            63,
            64,
            -65,
            300,
            i64::from(i32::MAX),
            i64::MIN,
            i64::MAX,
        ] {
            let mut out = BytesMut::new();
            put_varlong(&mut out, v);
            assert_eq!(out.len(), varlong_len(v), "{v}");
            let mut value = 0u64;
            for (i, b) in out.iter().enumerate() {
                value |= u64::from(b & 0x7f) << (7 * i);
            }
            let decoded = ((value >> 1) as i64) ^ -((value & 1) as i64);
            assert_eq!(decoded, v);
        }
    }
}
