//! Segment rolls, retention, trims reclaiming space, and the bound on recovery work.

use std::path::Path;
use std::time::{Duration, Instant};

use weir_log::testing::{CrashFs, Torn};
use weir_log::{
    FileLog, LogConfig, LogError, MessageLog, NewRecord, Offset, ReadLimits, Retention,
};

use crate::common::block_on;

fn segment_files(dir: &Path) -> Vec<(u64, u64)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("log")))
        .map(|p| {
            let base = p.file_stem().unwrap().to_str().unwrap().parse().unwrap();
            (base, std::fs::metadata(&p).unwrap().len())
        })
        .collect();
    files.sort_unstable();
    files
}

/// The body of record `i` in these tests: its number, forty times.
fn numbered(i: u32) -> String {
    i.to_string().repeat(40)
}

/// Appends one record per number of `range`, each in a batch of its own.
async fn append_numbered(log: &FileLog, range: std::ops::Range<u32>) {
    for i in range {
        log.append_batch(&[NewRecord::new(numbered(i))])
            .await
            .unwrap();
    }
}

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 4096,
        index_interval_bytes: 256,
        max_record_bytes: 16 * 1024,
        max_batch_bytes: 64 * 1024,
        ..LogConfig::default()
    }
}

#[test]
fn segments_roll_at_the_size_limit_and_an_oversized_batch_gets_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = FileLog::open(dir.path(), config()).unwrap();
    block_on(async {
        for i in 0..100 {
            log.append_batch(&[NewRecord::new(vec![i as u8; 200])])
                .await
                .unwrap();
        }
        log.append_batch(&[NewRecord::new(vec![1u8; 6000])])
            .await
            .unwrap();
        log.append_batch(&[NewRecord::new("after")]).await.unwrap();
        log.close().await.unwrap();
    });
    let files = segment_files(dir.path());
    assert!(files.len() >= 6, "{files:?}");
    let (big_base, big_len) = files[files.len() - 2];
    assert_eq!(big_base, 100, "the big record starts its own segment");
    assert!(big_len > 6000);
    for (base, len) in &files[..files.len() - 2] {
        assert!(*len <= 4096, "segment {base} is {len} bytes");
    }
    assert_eq!(files.last().unwrap().0, 101);
}

#[test]
fn an_old_segment_is_rolled_by_age_with_or_without_appends() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_max_age_ms: Some(30),
        retention_check_interval_ms: 10,
        ..config()
    };
    let (log, _) = FileLog::open(dir.path(), config).unwrap();
    block_on(async {
        log.append_batch(&[NewRecord::new("one")]).await.unwrap();
        // The writer's own check rolls the aged segment, without any append.
        let deadline = Instant::now() + Duration::from_secs(10);
        while log.stats().segments < 2 {
            assert!(
                Instant::now() < deadline,
                "the aged segment was never rolled"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        log.append_batch(&[NewRecord::new("two")]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(40)).await;
        log.append_batch(&[NewRecord::new("three")]).await.unwrap();
        assert!(log.stats().segments >= 3);
        let all = log
            .read_from(Offset(0), ReadLimits::records(10))
            .await
            .unwrap();
        let bodies: Vec<_> = all.iter().map(|r| r.body.clone()).collect();
        assert_eq!(bodies, ["one", "two", "three"]);
        log.close().await.unwrap();
    });
}

#[test]
fn retention_by_size_removes_oldest_segments_and_keeps_the_rest_readable() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        retention_max_bytes: Some(3 * 4096),
        ..config()
    };
    let (log, _) = FileLog::open(dir.path(), config.clone()).unwrap();
    block_on(async {
        append_numbered(&log, 0..300).await;
        let before = log.stats();
        let report = log.enforce_retention(i64::MAX).await.unwrap();
        let after = log.stats();
        assert!(report.segments_removed > 0);
        assert_eq!(after.segments, before.segments - report.segments_removed);
        assert!(after.size_bytes <= 3 * 4096, "{after:?}");
        assert_eq!(report.first_offset, after.first_offset);
        assert!(after.first_offset > Offset(0));
        let err = log
            .read_from(Offset(0), ReadLimits::records(1))
            .await
            .unwrap_err();
        assert!(
            matches!(err, weir_log::LogError::OffsetOutOfRange { .. }),
            "{err:?}"
        );
        let kept = log
            .read_from(after.first_offset, ReadLimits::records(1000))
            .await
            .unwrap();
        assert_eq!(kept.last().unwrap().offset, Offset(299));
        for r in &kept {
            assert_eq!(r.body, numbered(r.offset.0 as u32).as_bytes());
        }
        log.close().await.unwrap();
    });
    // The removed files are gone from disk, and a reopen agrees on what is left.
    let files = segment_files(dir.path());
    let (log, _) = FileLog::open(dir.path(), config).unwrap();
    assert_eq!(log.stats().segments, files.len());
    assert_eq!(log.first_offset(), Offset(files[0].0));
    block_on(log.close()).unwrap();
}

#[test]
fn a_live_log_takes_new_retention_and_segment_size_and_applies_them_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = FileLog::open(dir.path(), config()).unwrap();
    block_on(async {
        append_numbered(&log, 0..300).await;
        let before = log.stats();
        assert_eq!(before.first_offset, Offset(0), "no retention yet");
        // Refused settings change nothing.
        let bad = Retention {
            segment_bytes: 10,
            ..config().retention()
        };
        let err = log.reconfigure(bad).await.unwrap_err();
        assert!(matches!(err, LogError::InvalidConfig { .. }), "{err:?}");
        assert_eq!(log.stats(), before);
        // A size limit: applied now, not at the next check a minute later.
        let retention = Retention {
            max_bytes: Some(3 * 4096),
            segment_bytes: 16 * 1024,
            ..config().retention()
        };
        log.reconfigure(retention).await.unwrap();
        let after = log.stats();
        assert!(after.first_offset > Offset(0), "{after:?}");
        assert!(after.size_bytes <= 3 * 4096, "{after:?}");
        // Segments sealed from now on are the new size.
        append_numbered(&log, 0..200).await;
        log.close().await.unwrap();
    });
    let files = segment_files(dir.path());
    let (_, sealed_last) = files[files.len() - 2];
    assert!(
        sealed_last > 4096,
        "a segment sealed after the change: {files:?}"
    );
}

#[test]
fn retention_by_age_removes_segments_whose_newest_record_is_too_old() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        retention_max_age_ms: Some(1500),
        ..config()
    };
    let (log, _) = FileLog::open(dir.path(), config).unwrap();
    block_on(async {
        // Three segments' worth at t=1000, then t=2000, then t=3000.
        for (ts, n) in [(1000, 40), (2000, 40), (3000, 5)] {
            for _ in 0..n {
                let record = NewRecord::new(vec![0u8; 200]).with_timestamp(ts);
                log.append_batch(&[record]).await.unwrap();
            }
        }
        let report = log.enforce_retention(3000).await.unwrap();
        assert!(report.segments_removed >= 1);
        let first = log.first_offset();
        let records = log
            .read_from(first, ReadLimits::records(1000))
            .await
            .unwrap();
        // Every record at t=1000 that is left shares a segment with t=2000 ones.
        assert!(records.iter().any(|r| r.timestamp_ms == 2000));
        assert!(records.iter().filter(|r| r.timestamp_ms == 1000).count() < 40);
        // Nothing newer than the cutoff was removed.
        assert!(first <= Offset(40), "first offset {first}");
        let again = log.enforce_retention(3000).await.unwrap();
        assert_eq!(again.segments_removed, 0, "idempotent");
        log.close().await.unwrap();
    });
}

#[test]
fn trim_reclaims_whole_segments_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = FileLog::open(dir.path(), config()).unwrap();
    block_on(async {
        for _ in 0..200 {
            log.append_batch(&[NewRecord::new(vec![7u8; 150])])
                .await
                .unwrap();
        }
    });
    let files = segment_files(dir.path());
    let cut = files[4].0 + 3;
    block_on(log.trim_before(Offset(cut))).unwrap();
    let left = segment_files(dir.path());
    assert_eq!(
        left[0].0, files[4].0,
        "segments wholly below the trim are gone"
    );
    assert_eq!(left.len(), files.len() - 4);
    block_on(log.close()).unwrap();
    let (log, _) = FileLog::open(dir.path(), config()).unwrap();
    assert_eq!(log.first_offset(), Offset(cut));
    assert_eq!(log.next_offset(), Offset(200));
    block_on(log.close()).unwrap();
}

/// Recovery reads about one index interval plus the unsynced tail after a process
/// crash, and at most the active segment after a power cut (the active index is synced
/// at quiet moments, not per append); never the sealed segments.
#[test]
fn recovery_scans_a_bounded_tail_whatever_the_log_size() {
    let config = LogConfig {
        segment_bytes: 1024 * 1024,
        index_interval_bytes: 4096,
        ..config()
    };
    let batch: Vec<_> = (0..16).map(|_| NewRecord::new(vec![3u8; 1000])).collect();
    let batch_bytes = 32 + 16 * (18 + 1000);

    let fs = CrashFs::new();
    let (log, _) = FileLog::open_with(fs.shared(), "/log", config.clone()).unwrap();
    block_on(async {
        for _ in 0..400 {
            log.append_batch(&batch).await.unwrap();
        }
    });
    fs.crash();
    drop(log);
    for torn in [Torn::Everything, Torn::Synced] {
        let disk = fs.after_crash(torn);
        let (log, report) = FileLog::open_with(disk.shared(), "/log", config.clone()).unwrap();
        assert_eq!(log.next_offset(), Offset(400 * 16), "{torn:?}");
        assert!(report.segments >= 6, "{report:?}");
        let bound = match torn {
            Torn::Everything => 4096 + batch_bytes as u64,
            _ => config.segment_bytes + batch_bytes as u64,
        };
        assert!(
            report.scanned_bytes <= bound,
            "{torn:?}: scanned {} bytes of a {} byte log",
            report.scanned_bytes,
            log.stats().size_bytes
        );
        block_on(log.close()).unwrap();
    }
}

#[test]
fn concurrent_appends_share_syncs_and_the_counters_say_so() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = FileLog::open(dir.path(), config()).unwrap();
    block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..32 {
            let log = log.clone();
            tasks.push(tokio::spawn(async move {
                for _ in 0..50 {
                    log.append_batch(&[NewRecord::new("x")]).await.unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
    let stats = log.stats();
    assert_eq!(stats.appends, 32 * 50);
    assert!(stats.commit_groups >= 1 && stats.commit_groups <= stats.appends);
    assert!(
        stats.data_syncs >= stats.commit_groups,
        "one sync per group under always"
    );
    assert!(
        stats.data_syncs < stats.appends,
        "32 concurrent appenders must share fdatasyncs: {stats:?}"
    );
    block_on(log.close()).unwrap();
}

/// A pipelined log (one that took a staged append) trims on its sync thread: the
/// first offset has moved when the trim is answered, older records are gone for
/// readers, the segments below are removed, and a reopen keeps the trim.
#[test]
fn a_pipelined_log_trims_on_its_sync_thread() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = FileLog::open(dir.path(), config()).unwrap();
    let body = |i: u64| format!("{i}:{}", "p".repeat(200));
    block_on(async {
        for i in 0..100u64 {
            let (written, durable) = log.submit_batch_staged(&[NewRecord::new(body(i))]);
            written.await.unwrap();
            assert_eq!(durable.await.unwrap().first, Offset(i));
        }
        let before = segment_files(dir.path());
        assert!(before.len() >= 4, "{before:?}");
        log.trim_before(Offset(60)).await.unwrap();
        assert_eq!(log.first_offset(), Offset(60), "moved when answered");
        let gone = log.read_from(Offset(59), ReadLimits::records(1)).await;
        assert!(
            matches!(gone, Err(LogError::OffsetOutOfRange { first: 60, .. })),
            "older records are gone: {gone:?}"
        );
        let got = log
            .read_from(Offset(60), ReadLimits::records(1))
            .await
            .unwrap();
        assert_eq!(got[0].body, body(60).as_bytes());
        // A lower trim afterwards changes nothing.
        log.trim_before(Offset(10)).await.unwrap();
        assert_eq!(log.first_offset(), Offset(60));
        // The writer removes the segments below soon after, with no other request
        // to wake it.
        let deadline = Instant::now() + Duration::from_secs(5);
        while segment_files(dir.path()).len() == before.len() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(
            segment_files(dir.path()).len() < before.len(),
            "removed without another request"
        );
        let (_, durable) = log.submit_batch_staged(&[NewRecord::new(body(100))]);
        durable.await.unwrap();
        let after = segment_files(dir.path());
        assert!(after.len() < before.len(), "{before:?} -> {after:?}");
        for pair in before.windows(2) {
            let (base, next_base) = (pair[0].0, pair[1].0);
            let removed = !after.iter().any(|(b, _)| *b == base);
            assert_eq!(
                removed,
                next_base <= 60,
                "segment {base}: removed exactly when wholly below 60: {before:?} -> {after:?}"
            );
        }
        log.close().await.unwrap();
    });
    let (log, _) = FileLog::open(dir.path(), config()).unwrap();
    assert_eq!(log.first_offset(), Offset(60), "the trim is durable");
    assert_eq!(log.next_offset(), Offset(101));
    block_on(log.close()).unwrap();
}
