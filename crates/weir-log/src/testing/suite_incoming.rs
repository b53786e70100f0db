//! The conformance suite's cases for batches encoded outside the log
//! ([`MessageLog::append_incoming`]).

use crate::error::LogError;
use crate::incoming::IncomingBatch;
use crate::message_log::MessageLog;
use crate::record::{NewRecord, Offset, ReadLimits};

use super::factory::{LogFactory, suite_config};
use super::kafka::{GZIP, LZ4, SNAPPY, ZSTD, kafka_batch};

fn records() -> Vec<NewRecord> {
    vec![
        NewRecord::new("plain").with_timestamp(5),
        NewRecord::new("keyed")
            .with_key("k")
            .with_header("content-type", "text/plain")
            .with_header("", ""),
        NewRecord::new(vec![7u8; 3000]).with_key(""),
    ]
}

/// An incoming batch stores what `append_batch` stores for the same records, stamped
/// with the log's clock whatever the appender wrote, at the offsets the log gives,
/// synced or not; stored reads give it back as the log's own batches.
pub(super) async fn incoming_batches_store_what_records_would<F: LogFactory>(factory: &mut F) {
    let case = "incoming_batches_store_what_records_would";
    let log = factory.create(suite_config());
    log.append_batch(&[NewRecord::new("before")]).await.unwrap();
    let bytes = IncomingBatch::encode(&records()).unwrap();
    let before = crate::shared::now_ms();
    for (i, sync) in [true, false].into_iter().enumerate() {
        let mut batches = IncomingBatch::parse(&bytes).unwrap();
        assert_eq!(batches.len(), 1, "{case}: one batch");
        let batch = batches.remove(0);
        assert_eq!(batch.count(), 3, "{case}: its records");
        let keys = batch.map_keys(|k| k.map(<[u8]>::to_vec));
        assert_eq!(
            keys,
            [None, Some(b"k".to_vec()), Some(Vec::new())],
            "{case}"
        );
        let appended = log.append_incoming(batch, sync).await.unwrap();
        assert_eq!(appended.first, Offset(1 + 3 * i as u64), "{case}: offsets");
        assert_eq!(appended.next, Offset(4 + 3 * i as u64), "{case}: offsets");
    }
    let read = log
        .read_from(Offset(1), ReadLimits::records(10))
        .await
        .unwrap();
    assert_eq!(read.len(), 6, "{case}: both batches read back");
    for (i, (got, want)) in read.iter().zip(records().iter().cycle()).enumerate() {
        assert_eq!(got.offset, Offset(1 + i as u64), "{case}");
        assert_eq!(
            (&got.key, &got.headers),
            (&want.key, &want.headers),
            "{case}"
        );
        assert_eq!(got.body, want.body, "{case}");
        assert!(got.timestamp_ms >= before, "{case}: the log's timestamp");
    }
    let stored = log
        .read_stored(Offset(1), ReadLimits::records(10))
        .await
        .unwrap();
    let decoded = stored.to_records().unwrap();
    assert_eq!(decoded, read, "{case}: stored reads decode to the same");
    log.close().await.unwrap();
}

/// The log's limits hold for incoming batches as for records, and a refused batch
/// changes nothing.
pub(super) async fn incoming_batches_over_the_limits_are_refused<F: LogFactory>(factory: &mut F) {
    let case = "incoming_batches_over_the_limits_are_refused";
    let config = suite_config();
    let log = factory.create(config.clone());
    let record = vec![NewRecord::new(vec![0u8; config.max_record_bytes as usize])];
    let mut too_big = IncomingBatch::parse(&IncomingBatch::encode(&record).unwrap()).unwrap();
    let refused = log.append_incoming(too_big.remove(0), true).await;
    assert!(
        matches!(refused, Err(LogError::TooLarge { what: "record", .. })),
        "{case}: {refused:?}"
    );
    let many: Vec<NewRecord> = (0..8)
        .map(|_| NewRecord::new(vec![0u8; config.max_record_bytes as usize / 2]))
        .collect();
    let mut batch = IncomingBatch::parse(&IncomingBatch::encode(&many).unwrap()).unwrap();
    let refused = log.append_incoming(batch.remove(0), false).await;
    assert!(
        matches!(refused, Err(LogError::TooLarge { what: "batch", .. })),
        "{case}: {refused:?}"
    );
    assert_eq!(log.next_offset(), Offset(0), "{case}: nothing appended");
    log.close().await.unwrap();
}

/// A Kafka producer's batches, compressed with each codec or not, are appended as
/// they are and read back as records, by offset (also from inside a batch), by
/// time, as stored batches, and after a reopen.
pub(super) async fn kafka_batches_read_as_records<F: LogFactory>(factory: &mut F) {
    let case = "kafka_batches_read_as_records";
    let log = factory.create(suite_config());
    log.append_batch(&[NewRecord::new("before")]).await.unwrap();
    let before = crate::shared::now_ms();
    let codecs = [0, GZIP, SNAPPY, LZ4, ZSTD];
    for codec in codecs {
        let bytes = kafka_batch(&records(), codec, Some((9, 0, 0)));
        let batch = IncomingBatch::parse_kafka(&bytes, 1 << 20)
            .unwrap()
            .remove(0);
        assert_eq!(batch.count(), 3, "{case}: codec {codec}");
        log.append_incoming(batch, true).await.unwrap();
    }
    let want = 1 + 3 * codecs.len();
    let check = |read: &[crate::record::Record], from: usize| {
        assert_eq!(read.len(), want - from, "{case}: every record from {from}");
        for (got, at) in read.iter().zip(from..) {
            let expected = &records()[(at - 1) % 3];
            assert_eq!(got.offset, Offset(at as u64), "{case}");
            assert_eq!((&got.key, &got.body), (&expected.key, &expected.body));
            assert_eq!(got.headers, expected.headers, "{case}");
            assert!(got.timestamp_ms >= before, "{case}: the log's clock");
        }
    };
    let read = log
        .read_from(Offset(1), ReadLimits::records(100))
        .await
        .unwrap();
    check(&read, 1);
    check(
        &log.read_from(Offset(5), ReadLimits::records(100))
            .await
            .unwrap(),
        5,
    );
    let stored = log
        .read_stored(Offset(5), ReadLimits::records(100))
        .await
        .unwrap();
    assert_eq!(
        stored.to_records().unwrap(),
        read[4..],
        "{case}: stored reads"
    );
    let by_time = log.offset_for_timestamp(before).await.unwrap();
    assert!(
        by_time.is_some_and(|o| o <= Offset(1)),
        "{case}: {by_time:?}"
    );
    log.close().await.unwrap();
    let log = factory.reopen();
    check(
        &log.read_from(Offset(1), ReadLimits::records(100))
            .await
            .unwrap(),
        1,
    );
    log.close().await.unwrap();
}
