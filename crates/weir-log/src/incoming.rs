//! Batches encoded outside the log ([`IncomingBatch`]): an appender's records in the
//! stored format (docs/on-disk-format.md "Batch"), appended as they are.
//!
//! Why: an appender that already holds its records in the stored format (an HTTP
//! client sending `application/vnd.weir.batches`, the Kafka front end's Produce later)
//! would otherwise have the broker parse every record into a [`crate::NewRecord`] and
//! encode it again, which was most of an append's cost (docs/benchmarks.md "Streams").
//!
//! Nothing of such a batch is trusted: [`IncomingBatch::parse`] checks that the bytes
//! are whole batches (length, checksum, version, flags, record count) and that every
//! record parses (key, headers, body within the record). The log then checks its own
//! limits, stamps every record with its clock (as it stamps the records it encodes,
//! and as Kafka's `LogAppendTime` does), writes the base offset and computes the
//! checksum again: what is stored is exactly what [`crate::MessageLog::append_batch`]
//! would have written for the same records at that moment.

use bytes::Bytes;

use crate::batch::{self, BatchHeader, EncodedBatch, Format, Records};
use crate::error::{Corruption, LogError, Result};
use crate::kafka_batch;
use crate::record::{Header, NewRecord, RESERVED_HEADER_PREFIX};
use crate::stored::each_batch;

/// One batch from outside the log, checked: see the module doc.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IncomingBatch {
    bytes: Vec<u8>,
    count: u32,
    /// The largest record's encoded size, framing included.
    max_record_len: usize,
    /// The largest record body.
    max_body_len: usize,
    /// Where each record's timestamp is, to stamp it (a weir batch's; a Kafka
    /// batch's records take the batch's append time).
    stamps: Vec<usize>,
    /// In Kafka's format (`kafka_batch.rs`), not weir's.
    kafka: bool,
    /// Whether a record has a header named [`RESERVED_HEADER_PREFIX`]`…`.
    reserved_header: bool,
}

impl IncomingBatch {
    /// Splits `bytes` into the back-to-back batches it holds and checks each (see
    /// the module doc). Base offsets, timestamps and `max_timestamp_ms` are ignored:
    /// the log writes its own.
    ///
    /// # Errors
    /// A [`Corruption`] naming the first problem: no batch at all or one cut short
    /// ([`Corruption::Truncated`]), a bad length, checksum, version or flags, or a
    /// record that does not parse.
    pub fn parse(bytes: &[u8]) -> std::result::Result<Vec<IncomingBatch>, Corruption> {
        if bytes.is_empty() {
            return Err(Corruption::Truncated);
        }
        let mut out = Vec::new();
        each_batch(bytes, |header, at| {
            let one = &bytes[at];
            if header.format != Format::Weir {
                return Err(Corruption::BatchVersion(one[16]));
            }
            if one[17] != 0 || one[18..20] != [0, 0] {
                return Err(Corruption::BatchFlags(one[17]));
            }
            out.push(IncomingBatch::checked(one, one, header)?);
            Ok(())
        })?;
        Ok(out)
    }

    /// As [`IncomingBatch::parse`] for a Kafka producer's record set: back-to-back
    /// Kafka batches (magic 2), each stored as it is (`kafka_batch.rs`). Each is
    /// checked whole: length, checksum, attributes (no transactional or control
    /// batch), record count, and every record, inflated within `max_inflated`
    /// bytes when compressed, with offset deltas 0, 1, 2...
    ///
    /// # Errors
    /// A [`Corruption`] naming the first problem: also [`Corruption::BatchVersion`]
    /// for another magic, [`Corruption::BatchFlags`] for transactional, control or
    /// unknown attribute bits, [`Corruption::Compression`] and
    /// [`Corruption::Inflated`].
    pub fn parse_kafka(
        bytes: &[u8],
        max_inflated: usize,
    ) -> std::result::Result<Vec<IncomingBatch>, Corruption> {
        if bytes.is_empty() {
            return Err(Corruption::Truncated);
        }
        let mut out = Vec::new();
        each_batch(bytes, |header, at| {
            let one = &bytes[at];
            let Format::Kafka(fields) = header.format else {
                return Err(Corruption::BatchVersion(one[16]));
            };
            let (records, _) = kafka_batch::records_bytes(one, &fields, max_inflated)?;
            out.push(IncomingBatch::checked(one, &records, header)?);
            Ok(())
        })?;
        Ok(out)
    }

    /// The batch `one` once every record of it (in `records`: `one` itself, or its
    /// records inflated) parses, with the sizes the log's limits need. A weir
    /// batch's records are stamped where their timestamps are; a Kafka batch's
    /// take the batch's append time.
    fn checked(
        one: &[u8],
        records: &[u8],
        header: &BatchHeader,
    ) -> std::result::Result<IncomingBatch, Corruption> {
        let kafka = header.format != Format::Weir;
        let mut stamps = Vec::with_capacity(if kafka { 0 } else { header.count as usize });
        let (mut max_record_len, mut max_body_len, mut reserved_header) = (0, 0, false);
        for record in Records::new(records, header) {
            let record = record?;
            let layout = record.layout(records)?;
            if !kafka {
                stamps.push(record.timestamp_at());
            }
            max_record_len = max_record_len.max(record.encoded_len());
            max_body_len = max_body_len.max(layout.body.len());
            reserved_header |= layout.headers.iter().any(|(name, _)| {
                records[name.clone()].starts_with(RESERVED_HEADER_PREFIX.as_bytes())
            });
        }
        Ok(IncomingBatch {
            bytes: one.to_vec(),
            count: header.count,
            max_record_len,
            max_body_len,
            stamps,
            kafka,
            reserved_header,
        })
    }

    /// Whether a record of it has a header named [`RESERVED_HEADER_PREFIX`]`…`
    /// (found while it was checked).
    pub fn has_reserved_header(&self) -> bool {
        self.reserved_header
    }

    /// The bytes of a batch as it came (for a Kafka batch: its producer fields).
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Its records.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Its largest record body, in bytes.
    pub fn max_body_len(&self) -> usize {
        self.max_body_len
    }

    /// Its size in bytes, header included.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether it is empty (never: a batch holds at least one record).
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Encodes `records` as an appender sends them: one batch in the stored format,
    /// whose base offset and timestamps the log overwrites.
    ///
    /// # Errors
    /// [`LogError::EmptyBatch`]; [`LogError::TooLarge`] past what the format holds.
    pub fn encode(records: &[NewRecord]) -> Result<Vec<u8>> {
        let batch = EncodedBatch::encode(records, 0, u32::MAX, batch::FORMAT_MAX_BATCH_LEN)?;
        Ok(batch.contiguous().into_owned())
    }

    /// Each record's key, in order, through `f` (`None` for a record without one):
    /// borrowed from the batch, not copied (a compressed batch is inflated once).
    pub fn map_keys<T>(&self, mut f: impl FnMut(Option<&[u8]>) -> T) -> Vec<T> {
        let header = batch::header_of(&self.bytes);
        // `parse` and `parse_kafka` checked every record: the bytes read.
        let Ok(bytes) = batch::record_bytes(&self.bytes, &header) else {
            return Vec::new();
        };
        Records::new(&bytes, &header)
            .map(|record| {
                let key = record.ok().and_then(|r| r.layout(&bytes).ok()?.key);
                f(key.map(|k| &bytes[k]))
            })
            .collect()
    }

    /// Checks the log's limits: the same refusals `EncodedBatch::encode` gives.
    fn check_limits(&self, max_record_bytes: u32, max_batch_bytes: u32) -> Result<()> {
        if self.max_record_len > max_record_bytes as usize {
            return Err(LogError::TooLarge {
                what: "record",
                size: self.max_record_len as u64,
                limit: u64::from(max_record_bytes),
            });
        }
        if self.bytes.len() > max_batch_bytes as usize {
            return Err(LogError::TooLarge {
                what: "batch",
                size: self.bytes.len() as u64,
                limit: u64::from(max_batch_bytes),
            });
        }
        Ok(())
    }

    /// The batch as the log writes it: within its limits, every record stamped with
    /// `now_ms`, the checksum computed again.
    pub(crate) fn into_encoded(
        mut self,
        now_ms: i64,
        max_record_bytes: u32,
        max_batch_bytes: u32,
    ) -> Result<EncodedBatch> {
        self.check_limits(max_record_bytes, max_batch_bytes)?;
        if self.kafka {
            kafka_batch::stamp(&mut self.bytes, now_ms);
            return Ok(EncodedBatch::from_sealed(self.bytes, self.count, now_ms));
        }
        let stamp = now_ms.to_le_bytes();
        for at in &self.stamps {
            self.bytes[*at..*at + 8].copy_from_slice(&stamp);
        }
        self.bytes[0..8].fill(0);
        self.bytes[24..32].copy_from_slice(&stamp);
        batch::seal(&mut self.bytes);
        Ok(EncodedBatch::from_sealed(self.bytes, self.count, now_ms))
    }

    /// Its records, stamped with `now_ms`, for a log that keeps records rather than
    /// bytes (the in-memory log).
    pub(crate) fn into_records(
        self,
        now_ms: i64,
        max_record_bytes: u32,
        max_batch_bytes: u32,
    ) -> Result<Vec<NewRecord>> {
        self.check_limits(max_record_bytes, max_batch_bytes)?;
        let bytes = Bytes::from(self.bytes);
        let header = batch::header_of(&bytes);
        let mut out = Vec::with_capacity(self.count as usize);
        let corrupt = |reason| LogError::Corrupt {
            path: "<incoming batch>".into(),
            position: 0,
            reason,
        };
        // `parse` and `parse_kafka` checked every record: not reached.
        let bytes = batch::record_source(&bytes, &header).map_err(corrupt)?;
        for record in Records::new(&bytes, &header) {
            let record = record.and_then(|r| r.to_record(&bytes)).map_err(corrupt)?;
            out.push(NewRecord {
                timestamp_ms: Some(now_ms),
                key: record.key,
                headers: record
                    .headers
                    .into_iter()
                    .map(|h| Header {
                        name: h.name,
                        value: h.value,
                    })
                    .collect(),
                body: record.body,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Corruption;

    fn encoded() -> Vec<u8> {
        let records = [
            NewRecord::new("a").with_key("k"),
            NewRecord::new("bb").with_header("h", "v"),
        ];
        IncomingBatch::encode(&records).unwrap()
    }

    #[test]
    fn back_to_back_batches_parse_with_their_keys_and_sizes() {
        let mut two = encoded();
        two.extend(encoded());
        let batches = IncomingBatch::parse(&two).unwrap();
        assert_eq!(batches.len(), 2);
        assert_eq!(batches[0].count(), 2);
        assert_eq!(batches[0].max_body_len(), 2);
        assert_eq!(batches[0].len(), two.len() / 2);
        let keys = batches[1].map_keys(|k| k.map(<[u8]>::to_vec));
        assert_eq!(keys, [Some(b"k".to_vec()), None]);
    }

    #[test]
    fn reserved_header_names_are_found_in_both_formats() {
        let weir = IncomingBatch::parse(&encoded()).unwrap().remove(0);
        assert!(!weir.has_reserved_header(), "only `h`");
        let records = [
            NewRecord::new("a"),
            NewRecord::new("b").with_header("x-weir-properties", "v"),
        ];
        let reserved = IncomingBatch::parse(&IncomingBatch::encode(&records).unwrap())
            .unwrap()
            .remove(0);
        assert!(reserved.has_reserved_header());
        let kafka_batch = crate::testing::kafka_batch(&records, crate::testing::ZSTD, None);
        let kafka = IncomingBatch::parse_kafka(&kafka_batch, 1 << 20)
            .unwrap()
            .remove(0);
        assert!(kafka.has_reserved_header());
        let plain = IncomingBatch::parse(&IncomingBatch::encode(&records[..1]).unwrap())
            .unwrap()
            .remove(0);
        assert!(!plain.has_reserved_header(), "no headers at all");
    }

    #[test]
    fn stamping_writes_the_clock_and_a_checksum_that_holds() {
        let batch = IncomingBatch::parse(&encoded()).unwrap().remove(0);
        let mut sealed = batch.into_encoded(1234, 1 << 20, 1 << 20).unwrap();
        sealed.set_base_offset(40);
        let bytes = Bytes::from(sealed.contiguous().into_owned());
        let batch::Check::Complete(header) = batch::check(&bytes) else {
            panic!("the stamped batch must check");
        };
        assert_eq!((header.base_offset, header.max_timestamp_ms), (40, 1234));
        let stamps: Vec<i64> = Records::new(&bytes, &header)
            .map(|r| r.unwrap().timestamp_ms)
            .collect();
        assert_eq!(stamps, [1234, 1234]);
    }

    #[test]
    fn damaged_batches_are_refused_with_the_reason() {
        let good = encoded();
        assert_eq!(IncomingBatch::parse(&[]), Err(Corruption::Truncated));
        assert_eq!(
            IncomingBatch::parse(&good[..good.len() - 1]),
            Err(Corruption::Truncated)
        );
        let mut trailing = good.clone();
        trailing.push(0);
        assert_eq!(IncomingBatch::parse(&trailing), Err(Corruption::Truncated));
        let mut crc = good.clone();
        crc[40] ^= 1;
        assert_eq!(IncomingBatch::parse(&crc), Err(Corruption::BatchChecksum));
        let mut flags = good.clone();
        flags[17] = 1;
        batch::seal(&mut flags);
        assert_eq!(IncomingBatch::parse(&flags), Err(Corruption::BatchFlags(1)));
        // A key length past its record, under a checksum that holds.
        let mut framing = good.clone();
        framing[32 + 12..32 + 16].copy_from_slice(&1000i32.to_le_bytes());
        batch::seal(&mut framing);
        assert_eq!(
            IncomingBatch::parse(&framing),
            Err(Corruption::RecordFraming)
        );
    }
}
