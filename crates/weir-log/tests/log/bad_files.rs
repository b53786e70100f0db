//! Bad files and directories: damage inside sealed segments and indexes, a segment
//! whose creation was cut short, a missing middle segment, files from a newer
//! format, the lock file and a second writer, an invalid configuration, and reads
//! that race trims. Each is a clear error or a repair, never a guess. Bad disks (a
//! full disk, failing syncs) are in `faults`, whose helpers these share.

use std::path::Path;

use weir_log::{
    Corruption, FileLog, FsyncPolicy, LogConfig, LogError, MessageLog, Offset, ReadLimits,
};

use crate::common::block_on;
use crate::faults::{append_one, assert_all_bodies, body, config};

/// Writes ~10 sealed segments of 2 KiB to a real directory and closes the log.
fn filled_log(dir: &Path) -> Vec<(u64, std::path::PathBuf)> {
    let (log, _) = FileLog::open(dir, config()).unwrap();
    block_on(async {
        for _ in 0..200 {
            append_one(&log).await.unwrap();
        }
        log.close().await.unwrap();
    });
    let mut segments: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("log")))
        .map(|p| {
            let base = p
                .file_stem()
                .unwrap()
                .to_str()
                .unwrap()
                .parse::<u64>()
                .unwrap();
            (base, p)
        })
        .collect();
    segments.sort();
    assert!(segments.len() >= 8, "{segments:?}");
    segments
}

#[test]
fn damage_inside_a_sealed_segment_is_a_clear_error_for_that_range_only() {
    let dir = tempfile::tempdir().unwrap();
    let other = tempfile::tempdir().unwrap();
    let segments = filled_log(dir.path());
    let (base, path) = segments[3].clone();
    let next_base = segments[4].0;
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&path, bytes).unwrap();

    let (log, report) =
        FileLog::open(dir.path(), config()).expect("open does not read sealed data");
    assert_eq!(report.truncated_bytes, 0);
    let (healthy, _) = FileLog::open(other.path(), config()).unwrap();
    block_on(async {
        let err = log
            .read_from(Offset(base), ReadLimits::records(usize::MAX))
            .await
            .unwrap_err();
        match &err {
            LogError::Corrupt {
                path: p, reason, ..
            } => {
                assert_eq!(p, &path);
                assert_eq!(reason, &Corruption::BatchChecksum);
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
        // Before and after the damaged segment everything reads, and appends go on.
        let before = log
            .read_from(Offset(0), ReadLimits::records(base as usize))
            .await
            .unwrap();
        assert_eq!(before.len() as u64, base);
        let after = log
            .read_from(Offset(next_base), ReadLimits::records(usize::MAX))
            .await
            .unwrap();
        assert_eq!(after.last().unwrap().offset, Offset(199));
        assert_eq!(append_one(&log).await.unwrap(), Offset(200));
        // Another log is untouched by this one's damage.
        append_one(&healthy).await.unwrap();
        assert_all_bodies(&healthy, "other log").await;
        healthy.close().await.unwrap();
        log.close().await.unwrap();
    });

    // A damaged header of a sealed segment: open names the file.
    let (_, path) = segments[2].clone();
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[3] ^= 1;
    std::fs::write(&path, bytes).unwrap();
    let err = FileLog::open(dir.path(), config()).unwrap_err();
    assert!(
        matches!(&err, LogError::Corrupt { path: p, reason: Corruption::BadMagic, .. } if p == &path),
        "{err:?}"
    );
}

#[test]
fn a_missing_or_damaged_sealed_index_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let segments = filled_log(dir.path());
    let (base_a, log_a) = segments[2].clone();
    let (base_b, log_b) = segments[5].clone();
    let index_a = log_a.with_extension("idx");
    let index_b = log_b.with_extension("idx");
    std::fs::remove_file(&index_a).unwrap();
    let mut bytes = std::fs::read(&index_b).unwrap();
    let last = bytes.len() - 3;
    bytes[last] ^= 0xff;
    std::fs::write(&index_b, bytes).unwrap();

    let (log, _) = FileLog::open(dir.path(), config()).unwrap();
    block_on(async {
        for start in [base_a, base_a + 3, base_b, base_b + 2] {
            let got = log
                .read_from(Offset(start), ReadLimits::records(2))
                .await
                .unwrap();
            assert_eq!(got[0].offset, Offset(start));
            assert_eq!(got[0].body, body(start).as_bytes());
        }
        assert_all_bodies(&log, "rebuilt indexes").await;
        log.close().await.unwrap();
    });
    assert!(index_a.exists(), "the rebuilt index is saved");
    let entries_len = std::fs::metadata(&index_a).unwrap().len() - 32;
    assert_eq!(entries_len % 20, 0);
    assert!(entries_len >= 20 * 2, "entries plus the end entry");
}

#[test]
fn a_segment_whose_creation_was_cut_short_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    let segments = filled_log(dir.path());
    let next = 200u64;
    let torn = dir.path().join(format!("{next:020}.log"));
    std::fs::write(&torn, b"WEIRLOG\0\x01").unwrap();
    let (log, report) = FileLog::open(dir.path(), config()).unwrap();
    assert_eq!(report.removed_files, vec![format!("{next:020}.log")]);
    assert_eq!(log.next_offset(), Offset(next));
    assert_eq!(report.segments, segments.len());
    assert_eq!(block_on(append_one(&log)).unwrap(), Offset(next));
    block_on(log.close()).unwrap();
}

#[test]
fn files_from_a_newer_format_are_refused_not_guessed_at() {
    let dir = tempfile::tempdir().unwrap();
    let segments = filled_log(dir.path());
    let (_, path) = segments[0].clone();
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[8] = 3; // format version 3
    let crc = crc32c::crc32c(&bytes[0..28]);
    bytes[28..32].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&path, bytes).unwrap();
    let err = FileLog::open(dir.path(), config()).unwrap_err();
    assert!(
        matches!(&err, LogError::UnsupportedVersion { found: 3, supported: 2, path: p } if p == &path),
        "{err:?}"
    );
}

/// With `lock_dir` off (an owner that excludes other processes itself) the log
/// holds no `LOCK`: one open file less per log, and nothing is left behind.
#[test]
fn a_log_without_its_lock_holds_no_lock_file() {
    let dir = tempfile::tempdir().unwrap();
    let unlocked = LogConfig {
        lock_dir: false,
        ..config()
    };
    let (log, _) = FileLog::open(dir.path(), unlocked).unwrap();
    assert!(!dir.path().join("LOCK").exists());
    block_on(log.close()).unwrap();
    let (log, _) = FileLog::open(dir.path(), config()).unwrap();
    assert!(dir.path().join("LOCK").exists(), "the default takes it");
    block_on(log.close()).unwrap();
}

#[test]
fn a_second_writer_on_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = FileLog::open(dir.path(), config()).unwrap();
    let err = FileLog::open(dir.path(), config()).unwrap_err();
    assert!(matches!(err, LogError::Locked { .. }), "{err:?}");
    block_on(log.close()).unwrap();
    let (log, _) = FileLog::open(dir.path(), config()).expect("free again after close");
    block_on(log.close()).unwrap();
}

#[test]
fn an_invalid_configuration_is_refused_with_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_bytes: 1,
        max_record_bytes: 10,
        ..LogConfig::default()
    };
    match FileLog::open(dir.path(), config) {
        Err(LogError::InvalidConfig { problems }) => assert_eq!(problems.len(), 2, "{problems:?}"),
        other => panic!("expected InvalidConfig, got {other:?}"),
    }
}

#[test]
fn a_missing_middle_segment_is_reported_not_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let segments = filled_log(dir.path());
    let (_, before_gap) = segments[3].clone();
    let (_, gone) = segments[4].clone();
    std::fs::remove_file(&gone).unwrap();
    std::fs::remove_file(gone.with_extension("idx")).unwrap();
    let err = FileLog::open(dir.path(), config()).unwrap_err();
    match &err {
        LogError::Corrupt {
            path,
            reason: Corruption::OffsetGap { expected, found },
            ..
        } => {
            assert_eq!(path, &before_gap);
            assert_eq!((*expected, *found), (segments[4].0, segments[5].0));
        }
        other => panic!("expected an offset gap, got {other:?}"),
    }
}

/// A child spawned by any thread briefly holds a copy of the lock's descriptor (between
/// fork and exec); a close-then-reopen racing with that must not fail with `Locked`.
#[test]
fn reopen_after_close_succeeds_while_the_process_spawns_children() {
    let dir = tempfile::tempdir().unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let spawner = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                std::process::Command::new("true").status().unwrap();
            }
        })
    };
    for i in 0..150 {
        let (log, _) = FileLog::open(dir.path(), config())
            .unwrap_or_else(|e| panic!("reopen {i} while children spawn: {e}"));
        block_on(log.close()).unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    spawner.join().unwrap();
}

/// Readers never write to the directory: an index with a damaged entry is rebuilt in
/// memory by the reader, and the file is left for the next open to repair.
#[test]
fn readers_rebuild_a_damaged_index_in_memory_without_writing() {
    let dir = tempfile::tempdir().unwrap();
    let segments = filled_log(dir.path());
    let (base, path) = segments[2].clone();
    let index = path.with_extension("idx");
    let mut bytes = std::fs::read(&index).unwrap();
    bytes[32 + 5] ^= 0x20; // the first entry; the end entry stays valid
    std::fs::write(&index, &bytes).unwrap();
    let (log, _) = FileLog::open(dir.path(), config()).unwrap();
    block_on(async {
        let got = log
            .read_from(Offset(base + 1), ReadLimits::records(3))
            .await
            .unwrap();
        assert_eq!(got[0].offset, Offset(base + 1));
        assert_eq!(got[0].body, body(base + 1).as_bytes());
        log.close().await.unwrap();
    });
    assert_eq!(
        std::fs::read(&index).unwrap(),
        bytes,
        "the reader wrote nothing"
    );
}

/// Reads racing trims that remove segments under them start exactly where they asked,
/// or fail with `OffsetOutOfRange`; never another error. (A smoke test: the window in
/// which a reader could see the old start but not the old segment is microseconds
/// wide, so the code's ordering, not this test, is what closes it.)
#[test]
fn reads_racing_trims_start_exactly_where_asked_or_fail_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    // Minimum-size segments: a trim removes a segment every few records.
    let config = LogConfig {
        segment_bytes: 1024,
        fsync: FsyncPolicy::Never,
        ..config()
    };
    let (log, _) = FileLog::open(dir.path(), config).unwrap();
    block_on(async {
        for _ in 0..1500 {
            append_one(&log).await.unwrap();
        }
        let trimmer = {
            let log = log.clone();
            tokio::spawn(async move {
                while log.first_offset() < Offset(1450) {
                    let to = log.first_offset().0 + 1;
                    log.trim_before(Offset(to)).await.unwrap();
                }
            })
        };
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let log = log.clone();
                tokio::spawn(async move {
                    let mut reads = 0;
                    while log.first_offset() < Offset(1450) {
                        let from = log.first_offset();
                        match log.read_from(from, ReadLimits::records(5)).await {
                            Ok(records) => {
                                assert_eq!(records[0].offset, from, "a read starts where asked");
                                reads += 1;
                            }
                            Err(LogError::OffsetOutOfRange { .. }) => {}
                            Err(e) => panic!("unexpected error racing a trim: {e}"),
                        }
                    }
                    reads
                })
            })
            .collect();
        trimmer.await.unwrap();
        for reader in readers {
            assert!(reader.await.unwrap() > 0);
        }
        log.close().await.unwrap();
    });
}
