//! Kafka record batches built the way a Kafka producer builds them (magic 2, each
//! codec), for tests of the log's second batch format (`kafka_batch.rs`) here, in
//! the fuzz targets and in the Kafka front end.

use std::io::Write;

use crate::record::NewRecord;

/// Kafka's codec numbers.
pub const GZIP: u8 = 1;
/// Snappy, one raw block (as librdkafka sends it).
pub const SNAPPY: u8 = 2;
/// LZ4 frames.
pub const LZ4: u8 = 3;
/// Zstandard.
pub const ZSTD: u8 = 4;

fn put_varlong(out: &mut Vec<u8>, value: i64) {
    let mut v = ((value << 1) ^ (value >> 63)).cast_unsigned();
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_bytes(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        None => put_varlong(out, -1),
        Some(b) => {
            put_varlong(out, i64::try_from(b.len()).expect("test sizes"));
            out.extend_from_slice(b);
        }
    }
}

/// The records of a batch, uncompressed: offset deltas 0, 1, 2...; each
/// record's timestamp delta is its index.
pub fn kafka_records(records: &[NewRecord]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, record) in records.iter().enumerate() {
        let mut one = vec![0u8]; // attributes
        let i = i64::try_from(i).expect("test sizes");
        put_varlong(&mut one, i);
        put_varlong(&mut one, i);
        put_bytes(&mut one, record.key.as_deref());
        put_bytes(&mut one, Some(&record.body));
        put_varlong(
            &mut one,
            i64::try_from(record.headers.len()).expect("test sizes"),
        );
        for header in &record.headers {
            put_bytes(&mut one, Some(&header.name));
            put_bytes(&mut one, Some(&header.value));
        }
        put_varlong(&mut out, i64::try_from(one.len()).expect("test sizes"));
        out.extend_from_slice(&one);
    }
    out
}

/// `data` compressed with Kafka's codec `codec` (0: as it is).
///
/// # Panics
/// For a codec Kafka does not have.
pub fn kafka_compress(codec: u8, data: &[u8]) -> Vec<u8> {
    match codec {
        0 => data.to_vec(),
        GZIP => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(data).expect("in memory");
            e.finish().expect("in memory")
        }
        SNAPPY => snap::raw::Encoder::new()
            .compress_vec(data)
            .expect("in memory"),
        LZ4 => {
            let mut e = lz4::EncoderBuilder::new()
                .build(Vec::new())
                .expect("in memory");
            e.write_all(data).expect("in memory");
            let (out, done) = e.finish();
            done.expect("in memory");
            out
        }
        ZSTD => zstd::stream::encode_all(data, 1).expect("in memory"),
        other => panic!("no Kafka codec {other}"),
    }
}

/// One Kafka batch of `records` (their timestamps ignored: base timestamp 1000),
/// compressed with `codec`, as an idempotent producer's when `producer` names its
/// id, epoch and first sequence.
pub fn kafka_batch(records: &[NewRecord], codec: u8, producer: Option<(i64, i16, i32)>) -> Vec<u8> {
    let body = kafka_compress(codec, &kafka_records(records));
    let count = i32::try_from(records.len()).expect("test sizes");
    let (id, epoch, sequence) = producer.unwrap_or((-1, -1, -1));
    let mut out = Vec::with_capacity(61 + body.len());
    out.extend_from_slice(&0i64.to_be_bytes());
    let length = i32::try_from(49 + body.len()).expect("test sizes");
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(&0i32.to_be_bytes());
    out.push(2);
    out.extend_from_slice(&[0; 4]); // the CRC, below
    out.extend_from_slice(&i16::from(codec).to_be_bytes());
    out.extend_from_slice(&(count - 1).to_be_bytes());
    out.extend_from_slice(&1000i64.to_be_bytes());
    out.extend_from_slice(&(1000 + i64::from(count) - 1).to_be_bytes());
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&epoch.to_be_bytes());
    out.extend_from_slice(&sequence.to_be_bytes());
    out.extend_from_slice(&count.to_be_bytes());
    out.extend_from_slice(&body);
    let crc = crc32c::crc32c(&out[21..]);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    out
}
