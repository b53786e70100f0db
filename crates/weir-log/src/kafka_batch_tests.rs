//! Tests of Kafka's batch format as the log stores it (`kafka_batch.rs`).

use bytes::Bytes;

use crate::batch::{self, Check, Records};
use crate::error::Corruption;
use crate::incoming::IncomingBatch;
use crate::record::{NewRecord, Record};
use crate::testing::{GZIP, LZ4, SNAPPY, ZSTD, kafka_batch, kafka_compress, kafka_records};

fn sample() -> Vec<NewRecord> {
    vec![
        NewRecord::new("plain"),
        NewRecord::new("keyed")
            .with_key("k")
            .with_header("content-type", "text/plain")
            .with_header("", ""),
        NewRecord::new(vec![7u8; 3000]).with_key(""),
    ]
}

/// What the log stores for `bytes`: parsed, stamped at `now`, at `base`.
fn stored(bytes: &[u8], now: i64, base: u64) -> Bytes {
    let mut batch = IncomingBatch::parse_kafka(bytes, 1 << 20)
        .unwrap()
        .remove(0)
        .into_encoded(now, 1 << 20, 1 << 20)
        .unwrap();
    batch.set_base_offset(base);
    Bytes::from(batch.contiguous().into_owned())
}

fn read(bytes: &Bytes) -> Vec<Record> {
    let Check::Complete(header) = batch::check(bytes) else {
        panic!("a stored Kafka batch must check: {:?}", batch::check(bytes));
    };
    let source = batch::record_source(bytes, &header).unwrap();
    Records::new(&source, &header)
        .map(|r| r.and_then(|r| r.to_record(&source)).unwrap())
        .collect()
}

#[test]
fn every_codec_is_stored_as_it_came_and_reads_back_as_records() {
    for codec in [0, GZIP, SNAPPY, LZ4, ZSTD] {
        let produced = kafka_batch(&sample(), codec, Some((7, 1, 40)));
        let bytes = stored(&produced, 1234, 40);
        // Stored as it came but for the offset, the append time and the checksum.
        assert_eq!(bytes.len(), produced.len(), "codec {codec}");
        assert_eq!(
            bytes[61..],
            produced[61..],
            "codec {codec}: records untouched"
        );
        assert_eq!(
            bytes[43..61],
            produced[43..61],
            "codec {codec}: producer kept"
        );
        assert_eq!(&bytes[0..8], &40u64.to_be_bytes(), "codec {codec}");
        assert_eq!(
            bytes[22] & 0x0f,
            codec | 0x08,
            "codec {codec}: LogAppendTime"
        );
        let header = batch::header_of(&bytes);
        assert_eq!((header.base_offset, header.count), (40, 3));
        assert_eq!(header.max_timestamp_ms, 1234);
        let records = read(&bytes);
        assert_eq!(records.len(), 3, "codec {codec}");
        for (i, (got, want)) in records.iter().zip(sample()).enumerate() {
            assert_eq!(got.offset.0, 40 + i as u64, "codec {codec}");
            assert_eq!(got.timestamp_ms, 1234, "codec {codec}: the log's clock");
            assert_eq!((&got.key, &got.body), (&want.key, &want.body));
            assert_eq!(got.headers, want.headers, "codec {codec}");
        }
    }
}

#[test]
fn a_null_value_reads_as_an_empty_body_and_null_header_values_as_empty() {
    // One record: no key, value null, one header whose value is null.
    let mut record = vec![0u8, 0, 0, 1]; // attributes, deltas, key -1
    record.extend([1, 2, 2, b'h', 1]); // value -1, one header "h" = null
    let mut records = vec![u8::try_from(record.len() * 2).unwrap()];
    records.extend(&record);
    let mut batch = kafka_batch(&[NewRecord::new("")], 0, None);
    batch.truncate(61);
    batch.extend(&records);
    let length = i32::try_from(batch.len() - 12).unwrap();
    batch[8..12].copy_from_slice(&length.to_be_bytes());
    let crc = crc32c::crc32c(&batch[21..]);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
    let got = read(&stored(&batch, 5, 0));
    assert_eq!((got[0].key.as_ref(), got[0].body.len()), (None, 0));
    assert_eq!(got[0].headers[0].name, "h");
    assert!(got[0].headers[0].value.is_empty());
}

#[test]
fn every_bit_flip_past_the_leader_epoch_is_detected() {
    let bytes = stored(&kafka_batch(&sample()[..2], 0, None), 9, 0);
    for at in 16..bytes.len() {
        for bit in 0..8 {
            let mut bad = bytes.to_vec();
            bad[at] ^= 1 << bit;
            assert!(
                matches!(batch::check(&bad), Check::Invalid(_)),
                "a flip of bit {bit} at {at} went unnoticed"
            );
        }
    }
}

#[test]
fn short_buffers_ask_for_more() {
    let bytes = kafka_batch(&sample(), 0, None);
    assert_eq!(batch::check(&bytes[..20]), Check::Incomplete { need: 61 });
    assert_eq!(
        batch::check(&bytes[..100]),
        Check::Incomplete { need: bytes.len() }
    );
}

/// A batch with its header fields changed and its checksum made to hold again.
fn resealed(mut bytes: Vec<u8>, change: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    change(&mut bytes);
    let crc = crc32c::crc32c(&bytes[21..]);
    bytes[17..21].copy_from_slice(&crc.to_be_bytes());
    bytes
}

#[test]
fn batches_the_log_does_not_store_are_refused_with_the_reason() {
    let good = kafka_batch(&sample(), 0, None);
    let parse = |b: &[u8]| IncomingBatch::parse_kafka(b, 1 << 20).map(|_| ());
    let transactional = resealed(good.clone(), |b| b[22] |= 0x10);
    assert_eq!(parse(&transactional), Err(Corruption::BatchFlags(0x10)));
    let control = resealed(good.clone(), |b| b[22] |= 0x20);
    assert_eq!(parse(&control), Err(Corruption::BatchFlags(0x20)));
    let last_delta = resealed(good.clone(), |b| b[26] = 5);
    assert_eq!(parse(&last_delta), Err(Corruption::RecordFraming));
    let count = resealed(good.clone(), |b| {
        b[60] = 2;
        b[26] = 1;
    });
    assert_eq!(parse(&count), Err(Corruption::RecordFraming));
    // The second record's offset delta made 5.
    let mut records = kafka_records(&sample());
    let second = 1 + usize::from(records[0] >> 1);
    records[second + 3] = 10;
    let delta = resealed(good.clone(), |b| {
        b.truncate(61);
        b.extend(&records);
    });
    assert_eq!(parse(&delta), Err(Corruption::RecordFraming));
    let trailing = resealed(good.clone(), |b| {
        b.push(0);
        let length = i32::try_from(b.len() - 12).unwrap();
        b[8..12].copy_from_slice(&length.to_be_bytes());
    });
    assert_eq!(parse(&trailing), Err(Corruption::RecordFraming));
    assert_eq!(
        IncomingBatch::parse(&good).map(|_| ()),
        Err(Corruption::BatchVersion(2)),
        "a Kafka batch is not weir's"
    );
    let weir = IncomingBatch::encode(&sample()).unwrap();
    assert_eq!(parse(&weir), Err(Corruption::BatchVersion(1)));
}

#[test]
fn a_compressed_batch_is_bounded_when_it_inflates() {
    let many: Vec<NewRecord> = (0..1000).map(|_| NewRecord::new(vec![0u8; 1000])).collect();
    for codec in [GZIP, SNAPPY, LZ4, ZSTD] {
        let bomb = kafka_batch(&many, codec, None);
        assert!(bomb.len() < 100_000, "codec {codec}: {} bytes", bomb.len());
        assert_eq!(
            IncomingBatch::parse_kafka(&bomb, 500_000).map(|_| ()),
            Err(Corruption::Inflated { limit: 500_000 }),
            "codec {codec}"
        );
        assert_eq!(
            IncomingBatch::parse_kafka(&bomb, 2 << 20).unwrap()[0].count(),
            1000
        );
    }
    // A flip in the gzip stream's own CRC32, under a batch checksum that holds.
    let garbage = resealed(kafka_batch(&sample(), GZIP, None), |b| {
        let at = b.len() - 6;
        b[at] ^= 0xff;
    });
    assert!(matches!(
        IncomingBatch::parse_kafka(&garbage, 1 << 20),
        Err(Corruption::Compression { codec: GZIP, .. })
    ));
    // A compressed batch claiming more records than any producer sends.
    let claims = resealed(kafka_batch(&sample(), ZSTD, None), |b| {
        b[57..61].copy_from_slice(&(1i32 << 30).to_be_bytes());
        b[23..27].copy_from_slice(&((1i32 << 30) - 1).to_be_bytes());
    });
    assert_eq!(
        batch::check(&claims),
        Check::Invalid(Corruption::RecordFraming)
    );
    let _ = kafka_compress(0, b"");
}
