//! Bad disks: a full disk and failing syncs (of an append, a group, a background
//! sync, a roll, a pipelined seal), each answered as a failure and never lost or
//! invented after a reopen. Bad files (damaged, missing, from a newer format) are in
//! `bad_files`, which shares the helpers here: the small-segment configuration and
//! the numbered bodies.

use std::path::Path;
use std::time::Duration;

use weir_log::io::Fs;
use weir_log::testing::{CrashFs, Torn};
use weir_log::{
    FileLog, FsyncPolicy, LogConfig, LogError, MessageLog, NewRecord, Offset, ReadLimits,
};

use crate::common::block_on;

const DIR: &str = "/data/log";

pub(crate) fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 2048,
        index_interval_bytes: 128,
        max_record_bytes: 1024,
        max_batch_bytes: 8192,
        ..LogConfig::default()
    }
}

pub(crate) fn body(offset: u64) -> String {
    format!("{offset}:{}", "q".repeat((offset % 37) as usize * 3))
}

pub(crate) async fn append_one(log: &FileLog) -> Result<Offset, LogError> {
    let next = log.next_offset().0;
    let appended = log.append_batch(&[NewRecord::new(body(next))]).await?;
    Ok(appended.first)
}

pub(crate) async fn assert_all_bodies(log: &FileLog, context: &str) {
    let first = log.first_offset().0;
    let records = log
        .read_from(Offset(first), ReadLimits::records(usize::MAX))
        .await
        .unwrap_or_else(|e| panic!("{context}: read failed: {e}"));
    assert_eq!(
        records.len() as u64,
        log.next_offset().0 - first,
        "{context}"
    );
    for r in &records {
        assert_eq!(
            r.body,
            body(r.offset.0).as_bytes(),
            "{context}: offset {}",
            r.offset
        );
    }
}

/// Runs out of space at many different points (data write, index write, segment
/// creation, meta rewrite) and checks the log stays readable, refuses cleanly, and
/// takes appends again once space returns, with no gap in the offsets.
#[test]
fn a_full_disk_fails_appends_and_the_log_recovers_when_space_returns() {
    let mut kinds_of_failure = std::collections::BTreeSet::new();
    for limit in (700..4500).step_by(11) {
        let context = format!("space limit {limit}");
        let fs = CrashFs::new();
        let (log, _) = FileLog::open_with(fs.shared(), DIR, config()).unwrap();
        fs.set_space_limit(Some(limit));
        block_on(async {
            let mut appended = 0u64;
            let err = loop {
                assert!(appended < 10_000, "{context}: the disk never filled up");
                match append_one(&log).await {
                    Ok(offset) => {
                        assert_eq!(offset, Offset(appended), "{context}");
                        appended += 1;
                        // Trims early on (to hit a full disk while rewriting log.meta),
                        // then none, so the disk fills up.
                        if appended.is_multiple_of(11)
                            && appended < 60
                            && let Err(e) = log.trim_before(Offset(appended - 8)).await
                        {
                            break e;
                        }
                    }
                    Err(e) => break e,
                }
            };
            let LogError::NoSpace { op, path } = &err else {
                panic!("{context}: expected NoSpace, got {err:?}");
            };
            kinds_of_failure.insert(format!(
                "{op} {}",
                path.extension().unwrap().to_string_lossy()
            ));
            let next = log.next_offset();
            assert_all_bodies(&log, &context).await;
            // A power cut right now keeps every acknowledged append: the failed
            // write, roll or rewrite left nothing that recovery could misread.
            let disk = fs.after_crash(weir_log::testing::Torn::Synced);
            let (crashed, _) = FileLog::open_with(disk.shared(), DIR, config())
                .unwrap_or_else(|e| panic!("{context}: recovery after ENOSPC: {e}"));
            assert_eq!(crashed.next_offset(), next, "{context}: after a power cut");
            assert_all_bodies(&crashed, &format!("{context}, after a power cut")).await;
            crashed.close().await.unwrap();
            assert!(
                matches!(append_one(&log).await, Err(LogError::NoSpace { .. })),
                "{context}: still full"
            );
            assert_eq!(
                log.next_offset(),
                next,
                "{context}: a refused append changes nothing"
            );

            fs.set_space_limit(None);
            for i in 0..30 {
                let offset = append_one(&log)
                    .await
                    .unwrap_or_else(|e| panic!("{context}: append {i} after space returned: {e}"));
                assert_eq!(offset.0, next.0 + i, "{context}: no gap after the failure");
            }
            assert_all_bodies(&log, &context).await;
            log.close().await.unwrap();
        });
        let names = fs.list(Path::new(DIR)).unwrap();
        assert!(
            !names
                .iter()
                .any(|n| Path::new(n).extension().is_some_and(|e| e == "tmp")),
            "{context}: {names:?}"
        );
        let (log, report) = FileLog::open_with(fs.shared(), DIR, config()).unwrap();
        assert_eq!(report.truncated_bytes, 0, "{context}");
        assert!(
            report.removed_files.is_empty(),
            "{context}: {:?}",
            report.removed_files
        );
        block_on(assert_all_bodies(&log, &context));
        block_on(log.close()).unwrap();
    }
    // The sweep must have hit the disk limit appending to a segment, writing its index,
    // creating the next segment and rewriting log.meta.
    for kind in ["write log", "write idx", "write header of log", "write tmp"] {
        assert!(
            kinds_of_failure.iter().any(|k| k.starts_with(kind)),
            "{kind} never failed: {kinds_of_failure:?}"
        );
    }
}

#[test]
fn a_failed_fsync_rolls_back_the_group_and_the_next_append_reuses_its_offsets() {
    let fs = CrashFs::new();
    let (log, _) = FileLog::open_with(fs.shared(), DIR, config()).unwrap();
    block_on(async {
        for _ in 0..5 {
            append_one(&log).await.unwrap();
        }
        fs.fail_next_syncs(1);
        let err = append_one(&log).await.unwrap_err();
        assert!(matches!(err, LogError::Io { op: "fsync", .. }), "{err:?}");
        assert_eq!(log.next_offset(), Offset(5));
        assert_eq!(append_one(&log).await.unwrap(), Offset(5));
        assert_all_bodies(&log, "after a failed sync").await;
        log.close().await.unwrap();
    });
    let (log, report) = FileLog::open_with(fs.shared(), DIR, config()).unwrap();
    assert_eq!(report.truncated_bytes, 0);
    assert_eq!(log.next_offset(), Offset(6));
    block_on(log.close()).unwrap();
}

/// Under `interval`, appends were acknowledged before the sync; if the sync then
/// fails, the log cannot vouch for them and refuses appends until reopened.
#[test]
fn a_failed_background_sync_stops_appends_until_reopen() {
    let fs = CrashFs::new();
    let config = LogConfig {
        fsync: FsyncPolicy::Interval(Duration::from_millis(1)),
        ..config()
    };
    let (log, _) = FileLog::open_with(fs.shared(), DIR, config.clone()).unwrap();
    block_on(async {
        append_one(&log).await.unwrap();
        // Everything synced first, so the failure below meets the next record's
        // sync, whichever comes first: the 1 ms timer's (the log is failed when
        // ours runs) or ours (which reports the I/O error itself).
        log.sync().await.unwrap();
        fs.fail_next_syncs(1);
        append_one(&log).await.unwrap();
        let err = log.sync().await.unwrap_err();
        assert!(
            matches!(
                err,
                LogError::Io { op: "fsync", .. } | LogError::Failed { op: "fsync", .. }
            ),
            "{err:?}"
        );
        let refused = append_one(&log).await.unwrap_err();
        assert!(
            matches!(refused, LogError::Failed { op: "fsync", .. }),
            "{refused:?}"
        );
        assert_all_bodies(&log, "reads still work").await;
        // No retry loop: a retried fsync can report success without writing anything.
        let syncs = fs.sync_count();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            fs.sync_count() <= syncs + 1,
            "the writer keeps retrying fsync"
        );
        let closed = log.close().await;
        assert!(
            matches!(closed, Err(LogError::Failed { .. })),
            "close reports it: {closed:?}"
        );
    });
    let (log, _) = FileLog::open_with(fs.shared(), DIR, config).unwrap();
    // Both records were written (the second's sync failed, its write did not).
    assert_eq!(block_on(append_one(&log)).unwrap(), Offset(2));
    block_on(log.close()).unwrap();
}

/// A failed fsync may still have persisted part of the group. Its offsets are handed
/// out again, so the rollback's truncation must itself be durable.
#[test]
fn a_rolled_back_append_never_comes_back_after_a_power_cut() {
    let fs = CrashFs::new();
    let (log, _) = FileLog::open_with(fs.shared(), DIR, config()).unwrap();
    block_on(async {
        append_one(&log).await.unwrap();
        fs.fail_next_syncs_after_persisting(1);
        let err = log
            .append_batch(&[NewRecord::new("failed")])
            .await
            .unwrap_err();
        assert!(matches!(err, LogError::Io { op: "fsync", .. }), "{err:?}");
    });
    fs.crash();
    drop(log);
    let (log, _) =
        FileLog::open_with(fs.after_crash(Torn::Synced).shared(), DIR, config()).unwrap();
    assert_eq!(
        log.next_offset(),
        Offset(1),
        "the failed append is gone for good"
    );
    block_on(log.close()).unwrap();
}

/// Under `interval`, a sync that fails while sealing a segment stops the log too.
#[test]
fn a_failed_sync_while_rolling_stops_appends_until_reopen() {
    let fs = CrashFs::new();
    let config = LogConfig {
        fsync: FsyncPolicy::Interval(Duration::from_secs(3600)),
        ..config()
    };
    let (log, _) = FileLog::open_with(fs.shared(), DIR, config).unwrap();
    block_on(async {
        // Appends without syncs until a roll is one append away, then fail its sync.
        let mut outcome = Ok(Offset(0));
        fs.fail_next_syncs(1);
        for _ in 0..200 {
            outcome = append_one(&log).await;
            if outcome.is_err() {
                break;
            }
        }
        assert!(
            matches!(outcome, Err(LogError::Io { op: "fsync", .. })),
            "the roll's sync failure surfaced: {outcome:?}"
        );
        let refused = append_one(&log).await.unwrap_err();
        assert!(
            matches!(refused, LogError::Failed { op: "fsync", .. }),
            "{refused:?}"
        );
    });
}

/// Under `always`, a synced append's sync that fails after unsynced appends were
/// answered may have cost those too: the log refuses appends until reopened, as
/// after a failed background sync.
#[test]
fn a_failed_sync_after_unsynced_appends_stops_appends_until_reopen() {
    let fs = CrashFs::new();
    let (log, _) = FileLog::open_with(fs.shared(), DIR, config()).unwrap();
    block_on(async {
        append_one(&log).await.unwrap();
        let next = log.next_offset().0;
        log.append_batch_unsynced(&[NewRecord::new(body(next))])
            .await
            .unwrap();
        fs.fail_next_syncs(1);
        let err = append_one(&log).await.unwrap_err();
        assert!(matches!(err, LogError::Io { op: "fsync", .. }), "{err:?}");
        let refused = append_one(&log).await.unwrap_err();
        assert!(
            matches!(refused, LogError::Failed { op: "fsync", .. }),
            "{refused:?}"
        );
        let _ = log.close().await;
    });
    let (log, _) = FileLog::open_with(fs.shared(), DIR, config()).unwrap();
    assert!(block_on(append_one(&log)).is_ok());
    block_on(log.close()).unwrap();
}

/// A staged append is readable once written; when its sync then fails it is not
/// rolled back (a reader may have seen it): the durable answer is the error and the
/// log refuses appends until reopened.
#[test]
fn a_failed_sync_of_a_staged_append_stops_appends_and_keeps_it_readable() {
    let fs = CrashFs::new();
    let (log, _) = FileLog::open_with(fs.shared(), DIR, config()).unwrap();
    block_on(async {
        append_one(&log).await.unwrap();
        fs.fail_next_syncs(1);
        let (written, durable) = log.submit_batch_staged(&[NewRecord::new(body(1))]);
        assert_eq!(written.await.unwrap().first, Offset(1));
        let err = durable.await.unwrap_err();
        assert!(matches!(err, LogError::Io { op: "fsync", .. }), "{err:?}");
        assert_eq!(log.next_offset(), Offset(2), "not rolled back");
        assert_all_bodies(&log, "the staged record stays readable").await;
        let refused = append_one(&log).await.unwrap_err();
        assert!(
            matches!(refused, LogError::Failed { op: "fsync", .. }),
            "{refused:?}"
        );
        let (written, durable) = log.submit_batch_staged(&[NewRecord::new(body(2))]);
        assert!(matches!(written.await, Err(LogError::Failed { .. })));
        assert!(matches!(durable.await, Err(LogError::Failed { .. })));
        let _ = log.close().await;
    });
    let (log, _) = FileLog::open_with(fs.shared(), DIR, config()).unwrap();
    assert!(block_on(append_one(&log)).is_ok());
    block_on(log.close()).unwrap();
}

/// A pipelined log seals a full segment on its sync thread while the writer goes on
/// in the next one. When a sync of the seal fails (whether or not the disk kept the
/// data), the first append of the new segment gets the error as its durable answer,
/// the log refuses appends, and a reopen keeps every acknowledged append.
#[test]
fn a_failed_sync_while_sealing_a_pipelined_segment_stops_appends_until_reopen() {
    fn segment_files(fs: &CrashFs) -> usize {
        let names = fs.list(Path::new(DIR)).unwrap();
        names
            .iter()
            .filter(|n| Path::new(n).extension().is_some_and(|e| e == "log"))
            .count()
    }
    async fn staged(
        log: &FileLog,
        offset: u64,
    ) -> (
        Result<weir_log::Appended, LogError>,
        Result<weir_log::Appended, LogError>,
    ) {
        let (written, durable) = log.submit_batch_staged(&[NewRecord::new(body(offset))]);
        (written.await, durable.await)
    }
    // A clean run finds the append that starts the third segment.
    let fs = CrashFs::new();
    let (log, _) = FileLog::open_with(fs.shared(), DIR, config()).unwrap();
    let rolls_at = block_on(async {
        let mut next = 0;
        while segment_files(&fs) < 3 {
            let before = fs.sync_count();
            let files = segment_files(&fs);
            staged(&log, next).await.1.unwrap();
            if segment_files(&fs) > files {
                assert!(
                    fs.sync_count() - before >= 6,
                    "the seal synced the old data, both new files, the old index and the directory, then the append"
                );
            }
            next += 1;
        }
        log.close().await.unwrap();
        next - 1
    });
    for persisting in [false, true] {
        let fs = CrashFs::new();
        let (log, _) = FileLog::open_with(fs.shared(), DIR, config()).unwrap();
        block_on(async {
            for offset in 0..rolls_at {
                staged(&log, offset).await.1.unwrap();
            }
            if persisting {
                fs.fail_next_syncs_after_persisting(1);
            } else {
                fs.fail_next_syncs(1);
            }
            let (written, durable) = staged(&log, rolls_at).await;
            assert_eq!(segment_files(&fs), 3, "this append rolled");
            assert_eq!(
                written.unwrap().first,
                Offset(rolls_at),
                "written before the seal"
            );
            let err = durable.unwrap_err();
            assert!(matches!(err, LogError::Io { op: "fsync", .. }), "{err:?}");
            let refused = append_one(&log).await.unwrap_err();
            assert!(
                matches!(refused, LogError::Failed { op: "fsync", .. }),
                "{refused:?}"
            );
            let _ = log.close().await;
        });
        let (log, _) = FileLog::open_with(fs.shared(), DIR, config()).unwrap();
        assert!(
            log.next_offset().0 >= rolls_at,
            "persisting {persisting}: {} < {rolls_at}",
            log.next_offset().0
        );
        block_on(assert_all_bodies(&log, "after the failed seal"));
        assert!(block_on(append_one(&log)).is_ok());
        block_on(log.close()).unwrap();
    }
}

/// `sync` on a pipelined log makes everything appended durable, including the
/// unsynced tail of a segment a roll just sealed (the seal syncs it on the sync
/// thread; `sync` waits for it).
#[test]
fn sync_after_a_pipelined_roll_covers_the_sealed_segments_tail() {
    let fs = CrashFs::new();
    let (log, _) = FileLog::open_with(fs.shared(), DIR, config()).unwrap();
    let appended = block_on(async {
        let (_, durable) = log.submit_batch_staged(&[NewRecord::new(body(0))]);
        durable.await.unwrap();
        // A slow disk: the seal is still running when `sync` is asked.
        fs.set_sync_delay(Duration::from_millis(30));
        // Unsynced appends up to and across a roll: only `sync` vouches for them.
        let mut next = 1;
        while log.first_offset() == Offset(0) && next < 200 {
            log.append_batch_unsynced(&[NewRecord::new(body(next))])
                .await
                .unwrap();
            next += 1;
            let names = fs.list(Path::new(DIR)).unwrap();
            let segments = names
                .iter()
                .filter(|n| Path::new(n).extension().is_some_and(|e| e == "log"))
                .count();
            if segments > 1 {
                break;
            }
        }
        log.sync().await.unwrap();
        next
    });
    fs.crash();
    let fs = fs.after_crash(Torn::Synced);
    let (log, _) = FileLog::open_with(fs.shared(), DIR, config()).unwrap();
    assert_eq!(log.next_offset(), Offset(appended), "every append survived");
    block_on(assert_all_bodies(&log, "after sync and a power cut"));
    block_on(log.close()).unwrap();
}

/// A staged append that cannot be taken says why on both answers.
#[test]
fn a_staged_append_too_large_is_refused_on_both_answers() {
    let fs = CrashFs::new();
    let (log, _) = FileLog::open_with(fs.shared(), DIR, config()).unwrap();
    block_on(async {
        let (written, durable) = log.submit_batch_staged(&[NewRecord::new("x".repeat(4096))]);
        assert!(matches!(written.await, Err(LogError::TooLarge { .. })));
        assert!(matches!(durable.await, Err(LogError::TooLarge { .. })));
        let (written, durable) = log.submit_batch_staged(&[NewRecord::new(body(0))]);
        assert_eq!(written.await.unwrap(), durable.await.unwrap());
        log.close().await.unwrap();
    });
}
