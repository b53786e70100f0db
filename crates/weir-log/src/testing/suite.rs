//! The conformance suite for [`MessageLog`] implementations (openraft's `Suite`,
//! NATS's `testAllStore…`): one body of expectations, run against the file log under
//! each fsync policy and against the in-memory log.
//!
//! It needs no particular runtime: await [`run_all`] from any executor. A failed
//! expectation panics with the case's name.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;

use crate::config::LogConfig;
use crate::error::LogError;
use crate::message_log::MessageLog;
use crate::record::{Header, NewRecord, Offset, ReadLimits, Record};
use crate::tail::TailReader;

use super::factory::{LogFactory, suite_config};

/// Runs every case against logs from `factory`.
pub async fn run_all<F: LogFactory>(factory: &mut F) {
    appends_get_dense_offsets_in_order(factory).await;
    records_read_back_exactly(factory).await;
    read_limits_are_honoured(factory).await;
    an_empty_log_reads_nothing(factory).await;
    oversized_and_empty_appends_are_refused_and_change_nothing(factory).await;
    offset_for_timestamp_finds_the_first_record_at_or_after(factory).await;
    trim_moves_the_first_offset_and_hides_older_records(factory).await;
    new_retention_keeps_the_newest_and_refused_settings_change_nothing(factory).await;
    waiters_and_tail_readers_wake_on_append(factory).await;
    concurrent_appends_get_distinct_contiguous_offsets(factory).await;
    reads_cross_many_segments(factory).await;
    stored_reads_decode_to_what_reads_give(factory).await;
    close_refuses_appends_and_wakes_waiters(factory).await;
    nothing_happens_until_a_future_is_polled(factory).await;
    reopen_keeps_records_and_trim(factory).await;
    submitted_appends_take_offsets_in_call_order(factory).await;
    super::suite_incoming::incoming_batches_store_what_records_would(factory).await;
    super::suite_incoming::incoming_batches_over_the_limits_are_refused(factory).await;
    super::suite_incoming::kafka_batches_read_as_records(factory).await;
}

fn body(i: u64) -> Bytes {
    Bytes::from(format!("record-{i:06}-{}", "x".repeat((i % 50) as usize)))
}

async fn append_n<L: MessageLog>(log: &L, n: u64) {
    for i in 0..n {
        let next = log.next_offset().0;
        log.append_batch(&[NewRecord::new(body(next))])
            .await
            .unwrap_or_else(|e| {
                panic!("append {i} failed: {e}");
            });
    }
}

fn assert_bodies(case: &str, records: &[Record], from: u64) {
    for (i, r) in records.iter().enumerate() {
        let expected = from + i as u64;
        assert_eq!(r.offset, Offset(expected), "{case}: offsets must be dense");
        assert_eq!(r.body, body(expected), "{case}: body of offset {expected}");
    }
}

async fn appends_get_dense_offsets_in_order<F: LogFactory>(factory: &mut F) {
    let log = factory.create(suite_config());
    let a = log.append_batch(&[NewRecord::new("a")]).await.unwrap();
    let b = log
        .append_batch(&[
            NewRecord::new("b"),
            NewRecord::new("c"),
            NewRecord::new("d"),
        ])
        .await
        .unwrap();
    let c = log.append_batch(&[NewRecord::new("e")]).await.unwrap();
    assert_eq!((a.first, a.next), (Offset(0), Offset(1)));
    assert_eq!((b.first, b.next), (Offset(1), Offset(4)));
    assert_eq!(
        b.offsets().collect::<Vec<_>>(),
        [Offset(1), Offset(2), Offset(3)]
    );
    assert_eq!((c.first, c.next), (Offset(4), Offset(5)));
    assert_eq!(log.first_offset(), Offset(0));
    assert_eq!(log.next_offset(), Offset(5));
    assert_eq!(log.last_offset(), Some(Offset(4)));
    let all = log
        .read_from(Offset(0), ReadLimits::records(100))
        .await
        .unwrap();
    let bodies: Vec<_> = all.iter().map(|r| r.body.clone()).collect();
    assert_eq!(bodies, ["a", "b", "c", "d", "e"]);
    log.close().await.unwrap();
}

async fn records_read_back_exactly<F: LogFactory>(factory: &mut F) {
    let log = factory.create(suite_config());
    let records = vec![
        NewRecord::new("plain"),
        NewRecord::new("with key").with_key("k1"),
        NewRecord::new("")
            .with_key("")
            .with_header("content-type", "application/json")
            .with_header("dup", "1")
            .with_header("dup", "2"),
        NewRecord::new(vec![0u8, 255, 10, 13]).with_timestamp(1_234),
        NewRecord::new(vec![7u8; 200 * 1024]).with_header("big", "yes"),
    ];
    let before = crate::shared::now_ms();
    log.append_batch(&records).await.unwrap();
    let after = crate::shared::now_ms();
    let read = log
        .read_from(Offset(0), ReadLimits::records(10))
        .await
        .unwrap();
    assert_eq!(
        read.len(),
        records.len(),
        "records_read_back_exactly: count"
    );
    for (new, got) in records.iter().zip(&read) {
        assert_eq!(got.key, new.key);
        assert_eq!(got.headers, new.headers);
        assert_eq!(got.body, new.body);
        match new.timestamp_ms {
            Some(ts) => assert_eq!(got.timestamp_ms, ts),
            None => assert!(
                (before..=after).contains(&got.timestamp_ms),
                "append time stamped"
            ),
        }
    }
    assert_eq!(
        read[2].headers,
        vec![
            Header::new("content-type", "application/json"),
            Header::new("dup", "1"),
            Header::new("dup", "2")
        ]
    );
    let middle = log
        .read_from(Offset(3), ReadLimits::records(1))
        .await
        .unwrap();
    assert_eq!(middle.len(), 1);
    assert_eq!(middle[0].offset, Offset(3));
    assert_eq!(middle[0].body, records[3].body);
    log.close().await.unwrap();
}

async fn read_limits_are_honoured<F: LogFactory>(factory: &mut F) {
    let log = factory.create(suite_config());
    append_n(&log, 40).await;
    let case = "read_limits_are_honoured";
    let five = log
        .read_from(Offset(10), ReadLimits::records(5))
        .await
        .unwrap();
    assert_eq!(five.len(), 5, "{case}: max_records");
    assert_bodies(case, &five, 10);

    // Each record here encodes to 18 + 14..64 bytes; 300 bytes holds a few, not all.
    let by_bytes = log
        .read_from(Offset(0), ReadLimits::new(1000, 300))
        .await
        .unwrap();
    let used: usize = by_bytes.iter().map(|r| 18 + r.body.len()).sum();
    assert!(
        !by_bytes.is_empty() && by_bytes.len() < 40,
        "{case}: some but not all"
    );
    assert!(
        used <= 300,
        "{case}: {used} bytes returned with max_bytes 300"
    );
    let one_more = log
        .read_from(Offset(by_bytes.len() as u64), ReadLimits::records(1))
        .await
        .unwrap();
    assert!(
        used + 18 + one_more[0].body.len() > 300,
        "{case}: the read stopped before it had to"
    );
    assert_bodies(case, &by_bytes, 0);

    let at_least_one = log
        .read_from(Offset(7), ReadLimits::new(10, 1))
        .await
        .unwrap();
    assert_eq!(
        at_least_one.len(),
        1,
        "{case}: one record even over max_bytes"
    );
    assert_bodies(case, &at_least_one, 7);

    let at_end = log
        .read_from(Offset(40), ReadLimits::records(10))
        .await
        .unwrap();
    assert!(at_end.is_empty(), "{case}: reading at next_offset is empty");
    let beyond = log.read_from(Offset(41), ReadLimits::records(10)).await;
    assert!(
        matches!(
            beyond,
            Err(LogError::OffsetOutOfRange {
                requested: 41,
                next: 40,
                ..
            })
        ),
        "{case}: beyond the end: {beyond:?}"
    );
    let tail = log
        .read_from(Offset(35), ReadLimits::records(100))
        .await
        .unwrap();
    assert_eq!(tail.len(), 5, "{case}: a read stops at the end");
    log.close().await.unwrap();
}

async fn an_empty_log_reads_nothing<F: LogFactory>(factory: &mut F) {
    let log = factory.create(suite_config());
    assert_eq!(log.first_offset(), Offset(0));
    assert_eq!(log.next_offset(), Offset(0));
    assert_eq!(log.last_offset(), None);
    assert!(
        log.read_from(Offset(0), ReadLimits::records(1))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(log.offset_for_timestamp(0).await.unwrap(), None);
    log.close().await.unwrap();
}

async fn oversized_and_empty_appends_are_refused_and_change_nothing<F: LogFactory>(
    factory: &mut F,
) {
    let config = suite_config();
    let log = factory.create(config.clone());
    append_n(&log, 3).await;
    let too_big = NewRecord::new(vec![0u8; config.max_record_bytes as usize]);
    let err = log.append_batch(&[too_big]).await.unwrap_err();
    assert!(
        matches!(err, LogError::TooLarge { what: "record", .. }),
        "{err:?}"
    );
    let many = vec![NewRecord::new(vec![0u8; 300 * 1024]); 4];
    let err = log.append_batch(&many).await.unwrap_err();
    assert!(
        matches!(err, LogError::TooLarge { what: "batch", .. }),
        "{err:?}"
    );
    let err = log.append_batch(&[]).await.unwrap_err();
    assert!(matches!(err, LogError::EmptyBatch), "{err:?}");
    assert_eq!(
        log.next_offset(),
        Offset(3),
        "refused appends change nothing"
    );
    append_n(&log, 1).await;
    let all = log
        .read_from(Offset(0), ReadLimits::records(10))
        .await
        .unwrap();
    assert_bodies("oversized", &all, 0);
    assert_eq!(all.len(), 4);
    log.close().await.unwrap();
}

async fn offset_for_timestamp_finds_the_first_record_at_or_after<F: LogFactory>(factory: &mut F) {
    let log = factory.create(suite_config());
    let stamped = |ts| NewRecord::new(vec![b't'; 100]).with_timestamp(ts);
    // 200 records across several segments, timestamps 1000, 1010, 1020, ...
    for chunk in 0..20 {
        let batch: Vec<_> = (0..10)
            .map(|i| stamped(1000 + (chunk * 10 + i) * 10))
            .collect();
        log.append_batch(&batch).await.unwrap();
    }
    let find = |ts| log.offset_for_timestamp(ts);
    assert_eq!(find(0).await.unwrap(), Some(Offset(0)));
    assert_eq!(find(1000).await.unwrap(), Some(Offset(0)));
    assert_eq!(find(1001).await.unwrap(), Some(Offset(1)));
    assert_eq!(find(1500).await.unwrap(), Some(Offset(50)));
    assert_eq!(find(2990).await.unwrap(), Some(Offset(199)));
    assert_eq!(find(2991).await.unwrap(), None);
    // An older timestamp later in the log does not hide the first match.
    log.append_batch(&[stamped(5)]).await.unwrap();
    assert_eq!(find(6).await.unwrap(), Some(Offset(0)));
    log.trim_before(Offset(120)).await.unwrap();
    assert_eq!(
        find(0).await.unwrap(),
        Some(Offset(120)),
        "trimmed records are not found"
    );
    log.close().await.unwrap();
}

/// `reconfigure`: settings `LogConfig::validate` refuses are refused and change
/// nothing; a size limit of one byte may remove whole segments (a log without
/// segments keeps everything) but never the newest record, and what is left reads
/// back in order.
async fn new_retention_keeps_the_newest_and_refused_settings_change_nothing<F: LogFactory>(
    factory: &mut F,
) {
    let log = factory.create(suite_config());
    append_n(&log, 300).await;
    let before = log.stats();
    let retention = suite_config().retention();
    let bad = crate::Retention {
        segment_bytes: 10,
        ..retention
    };
    let err = log.reconfigure(bad).await.unwrap_err();
    assert!(matches!(err, LogError::InvalidConfig { .. }), "{err:?}");
    assert_eq!(log.stats(), before);
    let tiny = crate::Retention {
        max_bytes: Some(1),
        ..retention
    };
    log.reconfigure(tiny).await.unwrap();
    let first = log.first_offset();
    assert!(first <= Offset(299), "the newest record stays: {first:?}");
    assert_eq!(log.next_offset(), Offset(300));
    let kept = log
        .read_from(first, ReadLimits::records(1000))
        .await
        .unwrap();
    assert_eq!(kept.len() as u64, 300 - first.0);
    assert_bodies("reconfigure", &kept, first.0);
    log.close().await.unwrap();
}

async fn trim_moves_the_first_offset_and_hides_older_records<F: LogFactory>(factory: &mut F) {
    let log = factory.create(suite_config());
    append_n(&log, 300).await;
    log.trim_before(Offset(150)).await.unwrap();
    assert_eq!(log.first_offset(), Offset(150));
    let below = log.read_from(Offset(149), ReadLimits::records(1)).await;
    assert!(
        matches!(
            below,
            Err(LogError::OffsetOutOfRange {
                requested: 149,
                first: 150,
                ..
            })
        ),
        "{below:?}"
    );
    let from = log
        .read_from(Offset(150), ReadLimits::records(1000))
        .await
        .unwrap();
    assert_eq!(from.len(), 150);
    assert_bodies("trim", &from, 150);
    log.trim_before(Offset(10)).await.unwrap();
    assert_eq!(
        log.first_offset(),
        Offset(150),
        "trimming lower does nothing"
    );
    let err = log.trim_before(Offset(301)).await.unwrap_err();
    assert!(
        matches!(err, LogError::OffsetOutOfRange { requested: 301, .. }),
        "{err:?}"
    );
    log.trim_before(Offset(300)).await.unwrap();
    assert_eq!(log.first_offset(), Offset(300));
    assert_eq!(log.last_offset(), None, "everything trimmed");
    append_n(&log, 2).await;
    let rest = log
        .read_from(Offset(300), ReadLimits::records(10))
        .await
        .unwrap();
    assert_bodies("trim then append", &rest, 300);
    assert_eq!(rest.len(), 2);
    log.close().await.unwrap();
}

/// Polls a future once with a waker that does nothing.
fn poll_once<T>(future: Pin<&mut impl Future<Output = T>>) -> Poll<T> {
    future.poll(&mut Context::from_waker(Waker::noop()))
}

async fn waiters_and_tail_readers_wake_on_append<F: LogFactory>(factory: &mut F) {
    let log = factory.create(suite_config());
    append_n(&log, 2).await;
    assert_eq!(
        log.wait_for(Offset(1)).await.unwrap(),
        Offset(2),
        "already there"
    );
    let mut waiter = std::pin::pin!(log.wait_for(Offset(2)));
    assert!(
        poll_once(waiter.as_mut()).is_pending(),
        "nothing at offset 2 yet"
    );
    append_n(&log, 1).await;
    assert_eq!(waiter.await.unwrap(), Offset(3));

    let mut tail = TailReader::new(log.clone(), Offset(1));
    let first = tail.next(ReadLimits::records(10)).await.unwrap();
    assert_bodies("tail", &first, 1);
    assert_eq!(tail.position(), Offset(3));
    let mut more = {
        let mut next = std::pin::pin!(tail.next(ReadLimits::records(10)));
        assert!(poll_once(next.as_mut()).is_pending(), "caught up: waits");
        append_n(&log, 2).await;
        next.await.unwrap()
    };
    // The pending read may have run between the two appends: it returns what was
    // there, and the next call returns the rest.
    if more.len() < 2 {
        more.extend(tail.next(ReadLimits::records(10)).await.unwrap());
    }
    assert_bodies("tail", &more, 3);
    assert_eq!(more.len(), 2);
    log.trim_before(Offset(5)).await.unwrap();
    tail.seek(Offset(0));
    let gone = tail.next(ReadLimits::records(1)).await;
    assert!(
        matches!(gone, Err(LogError::OffsetOutOfRange { .. })),
        "{gone:?}"
    );
    log.close().await.unwrap();
}

/// Polls every future until all are done (no runtime needed).
struct JoinAll<F: Future> {
    futures: Vec<Pin<Box<F>>>,
    results: Vec<Option<F::Output>>,
}

impl<F: Future> Future for JoinAll<F>
where
    F::Output: Unpin,
{
    type Output = Vec<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let mut done = true;
        for (future, slot) in this.futures.iter_mut().zip(this.results.iter_mut()) {
            if slot.is_none() {
                match future.as_mut().poll(cx) {
                    Poll::Ready(value) => *slot = Some(value),
                    Poll::Pending => done = false,
                }
            }
        }
        if done {
            Poll::Ready(
                this.results
                    .iter_mut()
                    .map(|r| r.take().expect("all done"))
                    .collect(),
            )
        } else {
            Poll::Pending
        }
    }
}

fn join_all<F: Future>(futures: impl IntoIterator<Item = F>) -> JoinAll<F> {
    let futures: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let results = futures.iter().map(|_| None).collect();
    JoinAll { futures, results }
}

async fn concurrent_appends_get_distinct_contiguous_offsets<F: LogFactory>(factory: &mut F) {
    let log = factory.create(suite_config());
    let appenders = (0..16u64).map(|task| {
        let log = log.clone();
        async move {
            let mut got = Vec::new();
            for seq in 0..20u64 {
                let batch: Vec<_> = (0..=(seq % 3))
                    .map(|i| NewRecord::new(format!("{task}/{seq}/{i}")))
                    .collect();
                let appended = log.append_batch(&batch).await.expect("concurrent append");
                got.push((appended, task, seq));
            }
            got
        }
    });
    let results: Vec<_> = join_all(appenders).await.into_iter().flatten().collect();
    let total: u64 = results.iter().map(|(a, _, _)| a.count()).sum();
    assert_eq!(log.next_offset(), Offset(total));
    let all = log
        .read_from(Offset(0), ReadLimits::records(total as usize))
        .await
        .unwrap();
    assert_eq!(all.len() as u64, total);
    for (appended, task, seq) in &results {
        for (i, offset) in appended.offsets().enumerate() {
            let expected = format!("{task}/{seq}/{i}");
            assert_eq!(
                all[offset.0 as usize].body,
                expected.as_bytes(),
                "offset {offset}"
            );
        }
    }
    log.close().await.unwrap();
}

async fn reads_cross_many_segments<F: LogFactory>(factory: &mut F) {
    let log = factory.create(suite_config());
    // About 20 segments of 16 KiB.
    for chunk in 0..40u64 {
        let batch: Vec<_> = (0..10)
            .map(|i| NewRecord::new(body(chunk * 10 + i)).with_header("pad", vec![b'p'; 700]))
            .collect();
        log.append_batch(&batch).await.unwrap();
    }
    let mut from = 0;
    while from < 400 {
        let got = log
            .read_from(Offset(from), ReadLimits::new(37, 64 * 1024))
            .await
            .unwrap();
        assert!(!got.is_empty());
        assert_bodies("cross segments", &got, from);
        from += got.len() as u64;
    }
    for start in [0, 1, 99, 100, 101, 255, 399] {
        let got = log
            .read_from(Offset(start), ReadLimits::records(1))
            .await
            .unwrap();
        assert_bodies("seek", &got, start);
    }
    log.close().await.unwrap();
}

async fn stored_reads_decode_to_what_reads_give<F: LogFactory>(factory: &mut F) {
    stored_reads_with(factory, suite_config()).await;
    // The same with the newest ~4 batches in memory: reads near the end come from
    // there, older ones from the files, and the answers are the same.
    let cached = LogConfig {
        tail_cache_bytes: 32 * 1024,
        ..suite_config()
    };
    stored_reads_with(factory, cached.clone()).await;
    // Record reads near the end come from the cache too: the same records, within
    // the same limits, as a log without one.
    let (plain, cached) = (factory.create(suite_config()), factory.create(cached));
    for chunk in 0..40u64 {
        let batch: Vec<_> = (0..10)
            .map(|i| NewRecord::new(body(chunk * 10 + i)).with_header("pad", vec![b'p'; 700]))
            .collect();
        plain.append_batch(&batch).await.unwrap();
        cached.append_batch(&batch).await.unwrap();
    }
    let without_time = |records: Vec<Record>| -> Vec<(Offset, Bytes, Vec<Header>)> {
        records
            .into_iter()
            .map(|r| (r.offset, r.body, r.headers))
            .collect()
    };
    for from in [0, 355, 361, 390, 399, 400] {
        for limits in [
            ReadLimits::records(1),
            ReadLimits::records(25),
            ReadLimits::new(100, 3000),
            ReadLimits::new(100, 1),
        ] {
            let a = plain.read_from(Offset(from), limits).await.unwrap();
            let b = cached.read_from(Offset(from), limits).await.unwrap();
            assert_eq!(
                without_time(a),
                without_time(b),
                "read_from {from} with {limits:?}"
            );
        }
    }
    plain.close().await.unwrap();
    cached.close().await.unwrap();
}

async fn stored_reads_with<F: LogFactory>(factory: &mut F, config: LogConfig) {
    let log = factory.create(config);
    // Batches of 10 records over about 20 segments of 16 KiB.
    for chunk in 0..40u64 {
        let batch: Vec<_> = (0..10)
            .map(|i| NewRecord::new(body(chunk * 10 + i)).with_header("pad", vec![b'p'; 700]))
            .collect();
        log.append_batch(&batch).await.unwrap();
    }
    // From inside a batch, within a segment and across segments: the answer decodes
    // to the records `read_from` gives from there, and `next` is where to go on.
    let mut from = 3;
    while from < 400 {
        let stored = log
            .read_stored(Offset(from), ReadLimits::new(25, 64 * 1024))
            .await
            .unwrap();
        assert_eq!(stored.from, Offset(from));
        let records = stored.to_records().unwrap();
        assert_eq!(records.len(), stored.records, "stored: its record count");
        assert!(stored.records >= 1 && stored.bytes <= 64 * 1024 + 8 * 1024);
        assert_eq!(stored.next.0, from + records.len() as u64);
        let read = log
            .read_from(Offset(from), ReadLimits::records(records.len()))
            .await
            .unwrap();
        assert_eq!(records, read, "stored from {from}: the same records");
        let joined: Vec<u8> = stored.batches.iter().flat_map(|b| b.to_vec()).collect();
        let joined_bytes = Bytes::from(joined);
        let decoded = crate::decode_stored(&joined_bytes, Offset(from)).unwrap();
        assert_eq!(decoded, read, "decode_stored from {from}");
        let mut visited = Vec::new();
        crate::visit_stored(&joined_bytes, Offset(from), |r| {
            visited.push((r.offset, r.body.to_vec(), r.headers.len()));
        })
        .unwrap();
        let expected: Vec<_> = read
            .iter()
            .map(|r| (r.offset.0, r.body.to_vec(), r.headers.len()))
            .collect();
        assert_eq!(visited, expected, "visit_stored from {from}");
        from = stored.next.0;
    }
    let at_end = log
        .read_stored(Offset(400), ReadLimits::records(10))
        .await
        .unwrap();
    assert_eq!((at_end.records, at_end.next), (0, Offset(400)));
    assert!(at_end.batches.is_empty());
    assert!(matches!(
        log.read_stored(Offset(401), ReadLimits::records(1)).await,
        Err(LogError::OffsetOutOfRange { .. })
    ));
    // A damaged batch is refused, not decoded.
    let one = log
        .read_stored(Offset(0), ReadLimits::records(1))
        .await
        .unwrap();
    let mut bytes = one.batches[0].to_vec();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    assert!(crate::decode_stored(&Bytes::from(bytes), Offset(0)).is_err());
    log.close().await.unwrap();
}

async fn close_refuses_appends_and_wakes_waiters<F: LogFactory>(factory: &mut F) {
    let log = factory.create(suite_config());
    append_n(&log, 1).await;
    let mut waiter = std::pin::pin!(log.wait_for(Offset(5)));
    assert!(poll_once(waiter.as_mut()).is_pending());
    log.close().await.unwrap();
    assert!(matches!(waiter.await, Err(LogError::Closed)));
    let err = log
        .append_batch(&[NewRecord::new("late")])
        .await
        .unwrap_err();
    assert!(matches!(err, LogError::Closed), "{err:?}");
    let err = log.trim_before(Offset(1)).await.unwrap_err();
    assert!(matches!(err, LogError::Closed), "trim after close: {err:?}");
    let still = log
        .read_from(Offset(0), ReadLimits::records(5))
        .await
        .unwrap();
    assert_eq!(still.len(), 1, "a closed log still reads");
    log.close().await.unwrap();
}

async fn nothing_happens_until_a_future_is_polled<F: LogFactory>(factory: &mut F) {
    let log = factory.create(suite_config());
    append_n(&log, 3).await;
    drop(log.append_batch(&[NewRecord::new("never polled")]));
    drop(log.trim_before(Offset(2)));
    assert_eq!(
        log.next_offset(),
        Offset(3),
        "a dropped append appends nothing"
    );
    assert_eq!(
        log.first_offset(),
        Offset(0),
        "a dropped trim trims nothing"
    );
    // Appends take effect in the order they first run, not the order they were made.
    let (a, b) = (
        [NewRecord::new("made first")],
        [NewRecord::new("made second")],
    );
    let made_first = log.append_batch(&a);
    let made_second = log.append_batch(&b);
    let second = made_second.await.unwrap();
    let first = made_first.await.unwrap();
    assert_eq!((second.first, first.first), (Offset(3), Offset(4)));
    log.close().await.unwrap();
}

async fn reopen_keeps_records_and_trim<F: LogFactory>(factory: &mut F) {
    let log = factory.create(suite_config());
    append_n(&log, 250).await;
    log.trim_before(Offset(40)).await.unwrap();
    log.close().await.unwrap();
    let log = factory.reopen();
    assert_eq!(log.first_offset(), Offset(40));
    assert_eq!(log.next_offset(), Offset(250));
    let all = log
        .read_from(Offset(40), ReadLimits::records(1000))
        .await
        .unwrap();
    assert_eq!(all.len(), 210);
    assert_bodies("reopen", &all, 40);
    append_n(&log, 5).await;
    assert_eq!(log.next_offset(), Offset(255));
    log.close().await.unwrap();
    let log = factory.reopen();
    let tail = log
        .read_from(Offset(245), ReadLimits::records(100))
        .await
        .unwrap();
    assert_bodies("reopen twice", &tail, 245);
    assert_eq!(tail.len(), 10);
    log.close().await.unwrap();
}

/// `submit_batch`, `submit_batch_staged` and `append_batch_unsynced` queue at the
/// call: offsets follow the calls, not the awaits, and the futures own what they
/// need. `stats` agrees with the bounds.
async fn submitted_appends_take_offsets_in_call_order<F: LogFactory>(factory: &mut F) {
    let case = "submitted appends";
    let log = factory.create(suite_config());
    let first = {
        let records = vec![NewRecord::new(body(0)), NewRecord::new(body(1))];
        log.submit_batch(&records)
    };
    let (written, durable) = {
        let records = vec![NewRecord::new(body(2))];
        log.submit_batch_staged(&records)
    };
    let unsynced = {
        let records = vec![NewRecord::new(body(3)), NewRecord::new(body(4))];
        log.append_batch_unsynced(&records)
    };
    // A batch the log refuses fails when awaited, and takes no offset.
    let too_big = log.submit_batch(&[NewRecord::new(vec![0u8; 2 * 1024 * 1024])]);
    let last = log.submit_batch(&[NewRecord::new(body(5))]);
    // Awaited last to first.
    assert_eq!(last.await.unwrap().first, Offset(5), "{case}");
    assert!(too_big.await.is_err(), "{case}: an oversized submit fails");
    assert_eq!(unsynced.await.unwrap().first, Offset(3), "{case}");
    assert_eq!(durable.await.unwrap().first, Offset(2), "{case}");
    assert_eq!(written.await.unwrap().first, Offset(2), "{case}");
    assert_eq!(first.await.unwrap().first, Offset(0), "{case}");
    let all = log
        .read_from(Offset(0), ReadLimits::records(100))
        .await
        .unwrap();
    assert_eq!(all.len(), 6, "{case}");
    assert_bodies(case, &all, 0);
    let stats = log.stats();
    assert_eq!(
        (stats.first_offset, stats.next_offset),
        (log.first_offset(), log.next_offset()),
        "{case}: stats agree with the bounds"
    );
    assert!(
        stats.size_bytes > 0 && stats.appends > 0,
        "{case}: {stats:?}"
    );
    log.close().await.unwrap();
}
