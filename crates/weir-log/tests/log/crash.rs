//! Deterministic crash tests on `CrashFs`: cut the power at every sync point of a
//! workload, rebuild the disk with each torn-write variant, reopen, and check that
//! every acknowledged append is present and intact, that nothing invented appears, and
//! that the recovery report counts exactly what was cut.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use weir_log::testing::{CrashFs, Torn};
use weir_log::{
    FileLog, FsyncPolicy, LogConfig, LogError, MessageLog, NewRecord, Offset, ReadLimits,
    RecoveryReport,
};

use crate::common::block_on;

const DIR: &str = "/data/log";

fn config() -> LogConfig {
    LogConfig {
        fsync: FsyncPolicy::Always,
        segment_bytes: 2048,
        index_interval_bytes: 128,
        max_record_bytes: 1024,
        max_batch_bytes: 8192,
        ..LogConfig::default()
    }
}

/// The record every test expects at `offset` (appends are sequential, so the content
/// can be a function of the offset).
fn record_for(offset: u64) -> NewRecord {
    let pad = "abcdefghij".repeat((offset % 23) as usize);
    let record = NewRecord::new(format!("offset={offset};{pad}"));
    if offset.is_multiple_of(3) {
        record
            .with_key(format!("k{}", offset % 7))
            .with_header("h", offset.to_string())
    } else {
        record
    }
}

/// What the workload got acknowledged before the power went out.
#[derive(Debug, Default)]
struct Acked {
    offsets: Vec<u64>,
    /// Highest trim that returned Ok.
    trimmed_to: u64,
    /// Highest trim requested (it may have reached the disk without returning).
    trim_requested: u64,
}

const STEPS: u64 = 45;

/// How the workload appends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Appends {
    /// `append_batch`: written and synced on the writer thread.
    Plain,
    /// `submit_batch_staged` (every other one also preceded by an unsynced append):
    /// the log pipelines its syncs on the sync thread. Only the synced answer counts
    /// as acknowledged.
    Staged,
}

/// Appends batches of 1..=4 records, trimming now and then, until an error.
async fn workload(log: &FileLog, acked: &mut Acked, appends: Appends) -> Result<(), LogError> {
    for step in 0..STEPS {
        if appends == Appends::Staged && step % 2 == 1 {
            let next = log.next_offset().0;
            log.append_batch_unsynced(&[record_for(next)]).await?;
        }
        let next = log.next_offset().0;
        let batch: Vec<_> = (0..=step % 4).map(|i| record_for(next + i)).collect();
        let appended = match appends {
            Appends::Plain => log.append_batch(&batch).await?,
            Appends::Staged => {
                let (written, durable) = log.submit_batch_staged(&batch);
                written.await?;
                durable.await?
            }
        };
        assert_eq!(
            appended.first,
            Offset(next),
            "sequential appends get the next offset"
        );
        acked.offsets.extend(appended.offsets().map(|o| o.0));
        if step % 15 == 14 {
            let to = next.saturating_sub(10);
            acked.trim_requested = to;
            log.trim_before(Offset(to)).await?;
            acked.trimmed_to = to;
        }
    }
    Ok(())
}

fn active_segment(fs: &CrashFs) -> Option<(PathBuf, usize)> {
    use weir_log::io::Fs;
    let mut names = fs.list(Path::new(DIR)).ok()?;
    names.retain(|n| Path::new(n).extension().is_some_and(|e| e == "log"));
    names.sort();
    let path = Path::new(DIR).join(names.last()?);
    let len = fs.file_bytes(&path)?.len();
    Some((path, len))
}

/// The length of every segment file.
fn segment_lengths(fs: &CrashFs) -> BTreeMap<PathBuf, usize> {
    use weir_log::io::Fs;
    let names = fs.list(Path::new(DIR)).unwrap_or_default();
    names
        .iter()
        .filter(|n| Path::new(n).extension().is_some_and(|e| e == "log"))
        .filter_map(|n| {
            let path = Path::new(DIR).join(n);
            Some((path.clone(), fs.file_bytes(&path)?.len()))
        })
        .collect()
}

/// `torn` for segment files, every write landed for the rest.
fn segments_only(path: &Path, torn: Torn) -> Torn {
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("log"))
    {
        torn
    } else {
        Torn::Everything
    }
}

/// Opens the crashed disk and checks everything it must hold.
fn verify(fs: &CrashFs, acked: &Acked, context: &str) -> RecoveryReport {
    let before = segment_lengths(fs);
    let (log, report) = FileLog::open_with(fs.shared(), DIR, config())
        .unwrap_or_else(|e| panic!("{context}: recovery failed: {e}"));
    // The bytes cut are counted for the segment that is active now. It was the last
    // one, or the one before if a roll was cut short (the last one is then removed).
    if let Some((path, after)) = active_segment(fs)
        && let Some(&len) = before.get(&path)
    {
        // A segment whose creation was cut short is made again, longer.
        assert_eq!(
            report.truncated_bytes,
            len.saturating_sub(after) as u64,
            "{context}: the report counts exactly the bytes cut"
        );
        let later: Vec<&PathBuf> = before.keys().filter(|p| **p > path).collect();
        assert!(
            later.len() <= 1,
            "{context}: at most the last segment is removed, not {later:?}"
        );
    }
    let first = log.first_offset().0;
    let next = log.next_offset().0;
    assert!(
        first >= acked.trimmed_to && first <= acked.trim_requested.max(acked.trimmed_to),
        "{context}: first offset {first}, acknowledged trim {}, requested {}",
        acked.trimmed_to,
        acked.trim_requested
    );
    for &o in &acked.offsets {
        assert!(
            o < next,
            "{context}: acknowledged offset {o} lost (next is {next})"
        );
    }
    let records = block_on(log.read_from(Offset(first), ReadLimits::records(usize::MAX)))
        .unwrap_or_else(|e| panic!("{context}: reading back failed: {e}"));
    assert_eq!(
        records.len() as u64,
        next - first,
        "{context}: every offset readable"
    );
    for record in &records {
        let expected = record_for(record.offset.0);
        assert_eq!(
            record.body, expected.body,
            "{context}: body at {}",
            record.offset
        );
        assert_eq!(
            record.key, expected.key,
            "{context}: key at {}",
            record.offset
        );
        assert_eq!(
            record.headers, expected.headers,
            "{context}: headers at {}",
            record.offset
        );
    }
    // The recovered log takes appends and survives a clean restart.
    block_on(async {
        let batch = [record_for(next), record_for(next + 1)];
        let appended = log.append_batch(&batch).await.unwrap_or_else(|e| {
            panic!("{context}: append after recovery failed: {e}");
        });
        assert_eq!(appended.first, Offset(next));
        log.close().await.unwrap();
    });
    let (log, clean) = FileLog::open_with(fs.shared(), DIR, config()).unwrap();
    assert_eq!(
        clean.truncated_bytes, 0,
        "{context}: a clean close leaves no tail"
    );
    assert!(
        clean.removed_files.is_empty(),
        "{context}: {:?}",
        clean.removed_files
    );
    assert_eq!(log.next_offset(), Offset(next + 2));
    block_on(log.close()).unwrap();
    report
}

/// Runs the workload on a fresh disk that loses power at sync `k` (None: never).
fn crash_run(k: Option<u64>, appends: Appends) -> (CrashFs, Acked) {
    let fs = CrashFs::new();
    if let Some(k) = k {
        fs.crash_at_sync(k);
    }
    let mut acked = Acked::default();
    if let Ok((log, _)) = FileLog::open_with(fs.shared(), DIR, config()) {
        let result = block_on(async {
            workload(&log, &mut acked, appends).await?;
            log.close().await
        });
        if k.is_none() {
            result.expect("workload without a crash");
        }
    }
    (fs, acked)
}

#[test]
fn every_sync_point_and_torn_variant_keeps_acknowledged_appends() {
    every_sync_point(Appends::Plain);
}

/// The same crash matrix for a pipelined log (staged appends, syncs on the sync
/// thread, unsynced appends in between): what was answered as synced survives.
#[test]
fn every_sync_point_of_a_pipelined_log_keeps_acknowledged_appends() {
    every_sync_point(Appends::Staged);
}

fn every_sync_point(appends: Appends) {
    let (clean, _) = crash_run(None, appends);
    let total_syncs = clean.sync_count();
    assert!(
        total_syncs > 60,
        "the workload should sync often: {total_syncs}"
    );
    let mut cut_reports = 0;
    let mut undone_rolls = 0;
    for k in 1..=total_syncs {
        let (fs, acked) = crash_run(Some(k), appends);
        assert!(fs.crashed(), "sync {k} of {total_syncs} was reached");
        let synced = fs.after_crash(Torn::Synced);
        let written = fs.after_crash(Torn::Everything);
        let unsynced_tail = match (active_segment(&synced), active_segment(&written)) {
            (Some((a, synced_len)), Some((b, written_len))) if a == b => written_len - synced_len,
            _ => 0,
        };
        for torn in Torn::ALL {
            // Segments torn while every index write landed: an index entry must never
            // point past data that was synced.
            let context =
                format!("crash at sync {k}/{total_syncs}, segments {torn:?}, indexes whole");
            verify(
                &fs.after_crash_per_file(|p| segments_only(p, torn)),
                &acked,
                &context,
            );

            let context = format!("crash at sync {k}/{total_syncs}, {torn:?}, names landed");
            let report = verify(&fs.after_crash_names_landed(torn), &acked, &context);
            undone_rolls += usize::from(removed_a_tail_segment(&report));

            let context = format!("crash at sync {k}/{total_syncs}, {torn:?}");
            let report = verify(&fs.after_crash(torn), &acked, &context);
            undone_rolls += usize::from(removed_a_tail_segment(&report));
            if appends == Appends::Staged {
                // The unsynced tail may hold several batches (an unsynced append,
                // then a staged one): what is cut depends on where each ends, so only
                // `verify`'s guarantees are checked.
                continue;
            }
            match torn {
                Torn::Synced | Torn::Everything => {
                    assert_eq!(report.truncated_bytes, 0, "{context}: whole batches only");
                }
                Torn::HalfTail if unsynced_tail > 0 => {
                    assert_eq!(
                        report.truncated_bytes,
                        (unsynced_tail / 2) as u64,
                        "{context}"
                    );
                    assert_eq!(
                        report.lost_batches,
                        u64::from(unsynced_tail / 2 >= 32),
                        "{context}: a half batch with a readable header counts as lost"
                    );
                    cut_reports += 1;
                }
                Torn::TrailingGarbage(n) if unsynced_tail > 0 => {
                    assert_eq!(
                        report.truncated_bytes, n as u64,
                        "{context}: only the garbage"
                    );
                }
                Torn::FlippedBit | Torn::ZeroedTail | Torn::Hole if unsynced_tail > 0 => {
                    assert_eq!(
                        report.truncated_bytes, unsynced_tail as u64,
                        "{context}: the damaged unsynced batch is cut whole"
                    );
                    if torn == Torn::FlippedBit {
                        assert_eq!(report.lost_batches, 1, "{context}");
                    }
                    cut_reports += 1;
                }
                _ => {}
            }
        }
    }
    match appends {
        Appends::Plain => {
            assert!(cut_reports > 40, "torn tails were exercised: {cut_reports}");
            assert_eq!(undone_rolls, 0, "a plain roll is durable before it is used");
        }
        Appends::Staged => assert!(
            undone_rolls > 10,
            "crashes in the middle of pipelined rolls were exercised: {undone_rolls}"
        ),
    }
}

/// Whether recovery removed the last segment because its roll was cut short.
fn removed_a_tail_segment(report: &RecoveryReport) -> bool {
    report.unfinished_roll
}

/// Concurrent appenders: group commit under a power cut. Content is keyed by writer
/// and sequence, since offsets depend on how groups formed.
fn group_body(task: u64, seq: u64, i: u64) -> Bytes {
    Bytes::from(format!(
        "{task}:{seq}:{i}:{}",
        "z".repeat(((task + seq) % 40) as usize)
    ))
}

#[test]
fn group_commit_under_a_power_cut_keeps_every_acknowledged_append() {
    for k in [3, 10, 25, 40, 77, 120] {
        for (torn, indexes_whole) in Torn::ALL.into_iter().flat_map(|t| [(t, false), (t, true)]) {
            let fs = CrashFs::new();
            let (log, _) = FileLog::open_with(fs.shared(), DIR, config()).unwrap();
            fs.crash_at_sync(k);
            let acked: Vec<(Offset, Bytes)> = block_on(async {
                let mut tasks = Vec::new();
                for task in 0..8u64 {
                    let log = log.clone();
                    tasks.push(tokio::spawn(async move {
                        let mut acked = Vec::new();
                        for seq in 0..30u64 {
                            let batch: Vec<_> = (0..=seq % 2)
                                .map(|i| NewRecord::new(group_body(task, seq, i)))
                                .collect();
                            let Ok(appended) = log.append_batch(&batch).await else {
                                break;
                            };
                            for (i, offset) in appended.offsets().enumerate() {
                                acked.push((offset, group_body(task, seq, i as u64)));
                            }
                        }
                        acked
                    }));
                }
                let mut all = Vec::new();
                for task in tasks {
                    all.extend(task.await.unwrap());
                }
                all
            });
            drop(log);
            let context = format!(
                "group commit, crash at sync {k}, {torn:?}, indexes whole: {indexes_whole}"
            );
            let disk = if indexes_whole {
                fs.after_crash_per_file(|p| segments_only(p, torn))
            } else {
                fs.after_crash(torn)
            };
            let (log, _) = FileLog::open_with(disk.shared(), DIR, config())
                .unwrap_or_else(|e| panic!("{context}: {e}"));
            let records =
                block_on(log.read_from(Offset(0), ReadLimits::records(usize::MAX))).unwrap();
            let by_offset: BTreeMap<u64, Bytes> = records
                .iter()
                .map(|r| (r.offset.0, r.body.clone()))
                .collect();
            for (offset, expected) in &acked {
                assert_eq!(
                    by_offset.get(&offset.0),
                    Some(expected),
                    "{context}: offset {offset}"
                );
            }
            // Nothing invented: every record is one some task sent, at most once.
            let mut seen = HashSet::new();
            for body in by_offset.values() {
                let text = std::str::from_utf8(body).expect("utf-8 body");
                let mut parts = text.splitn(4, ':');
                let (task, seq, i) = (
                    parts.next().unwrap().parse::<u64>().unwrap(),
                    parts.next().unwrap().parse::<u64>().unwrap(),
                    parts.next().unwrap().parse::<u64>().unwrap(),
                );
                assert_eq!(body, &group_body(task, seq, i), "{context}");
                assert!(seen.insert((task, seq, i)), "{context}: duplicate {text}");
            }
            block_on(log.close()).unwrap();
        }
    }
}

/// Arbitrary damage to the active segment and its index (flipped bytes, cuts, garbage):
/// opening never panics, and whatever is read back is exactly what was written at
/// that offset. Acknowledged data may be lost here: the damage hits synced bytes,
/// which is media failure, not a crash.
mod arbitrary_damage {
    use super::*;
    use proptest::prelude::*;

    #[derive(Clone, Debug)]
    enum Damage {
        Flip { at: u32, mask: u8 },
        Cut { keep: u32 },
        Garbage(Vec<u8>),
    }

    fn damage() -> impl Strategy<Value = Damage> {
        prop_oneof![
            (any::<u32>(), 1u8..=255).prop_map(|(at, mask)| Damage::Flip { at, mask }),
            any::<u32>().prop_map(|keep| Damage::Cut { keep }),
            proptest::collection::vec(any::<u8>(), 1..200).prop_map(Damage::Garbage),
        ]
    }

    fn apply(bytes: &mut Vec<u8>, damage: &Damage) {
        if bytes.is_empty() {
            return;
        }
        match damage {
            Damage::Flip { at, mask } => {
                let at = *at as usize % bytes.len();
                bytes[at] ^= mask;
            }
            Damage::Cut { keep } => bytes.truncate(*keep as usize % (bytes.len() + 1)),
            Damage::Garbage(extra) => bytes.extend_from_slice(extra),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

        #[test]
        fn recovery_never_panics_or_invents_records(
            appends in 1u64..40,
            segment_damage in proptest::collection::vec(damage(), 0..4),
            index_damage in proptest::collection::vec(damage(), 0..4),
        ) {
            let fs = CrashFs::new();
            let (log, _) = FileLog::open_with(fs.shared(), DIR, config()).unwrap();
            block_on(async {
                for _ in 0..appends {
                    let next = log.next_offset().0;
                    log.append_batch(&[record_for(next), record_for(next + 1)]).await.unwrap();
                }
                log.close().await.unwrap();
            });
            let (segment, _) = active_segment(&fs).unwrap();
            let index = segment.with_extension("idx");
            for (path, damages) in [(&segment, &segment_damage), (&index, &index_damage)] {
                let mut bytes = fs.file_bytes(path).unwrap();
                for d in damages {
                    apply(&mut bytes, d);
                }
                fs.set_file_bytes(path, bytes);
            }
            let Ok((log, _)) = FileLog::open_with(fs.shared(), DIR, config()) else {
                // A clear error (e.g. a damaged header with data after it) is allowed.
                return Ok(());
            };
            let first = log.first_offset();
            if let Ok(records) = block_on(log.read_from(first, ReadLimits::records(usize::MAX))) {
                for r in &records {
                    let expected = record_for(r.offset.0);
                    prop_assert_eq!(&r.body, &expected.body);
                    prop_assert_eq!(&r.key, &expected.key);
                    prop_assert_eq!(&r.headers, &expected.headers);
                }
            }
            // Whatever survived, the log takes appends again.
            let next = log.next_offset().0;
            let appended = block_on(log.append_batch(&[record_for(next)]));
            prop_assert!(appended.is_ok(), "{:?}", appended);
            block_on(log.close()).unwrap();
        }
    }
}

/// Under `never` and `interval`, a power cut may lose acknowledged appends, but what
/// survives must be a readable prefix, even after the writer's quiet-moment index
/// sync, and even when unsynced segment pages landed out of order while every index
/// write landed (an index entry must never point past unsynced data).
#[test]
fn unsynced_policies_leave_a_readable_prefix_after_a_power_cut() {
    for fsync in [
        FsyncPolicy::Never,
        FsyncPolicy::Interval(std::time::Duration::from_secs(3600)),
    ] {
        let config = LogConfig {
            fsync,
            retention_check_interval_ms: 10,
            ..config()
        };
        for appends in [5u64, 20, 60] {
            let fs = CrashFs::new();
            let (log, _) = FileLog::open_with(fs.shared(), DIR, config.clone()).unwrap();
            block_on(async {
                for step in 0..appends {
                    let next = log.next_offset().0;
                    log.append_batch(&[record_for(next), record_for(next + 1)])
                        .await
                        .unwrap();
                    if step % 7 == 3 {
                        // Let the writer's housekeeping run (it syncs the index).
                        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
                    }
                }
            });
            fs.crash();
            drop(log);
            for torn in Torn::ALL {
                for disk in [
                    fs.after_crash(torn),
                    fs.after_crash_per_file(|p| segments_only(p, torn)),
                ] {
                    let context = format!("{fsync} after {appends} appends, {torn:?}");
                    let (log, _) = FileLog::open_with(disk.shared(), DIR, config.clone())
                        .unwrap_or_else(|e| panic!("{context}: {e}"));
                    let first = log.first_offset().0;
                    let records =
                        block_on(log.read_from(Offset(first), ReadLimits::records(usize::MAX)))
                            .unwrap_or_else(|e| panic!("{context}: survivors unreadable: {e}"));
                    assert_eq!(
                        records.len() as u64,
                        log.next_offset().0 - first,
                        "{context}"
                    );
                    for r in &records {
                        assert_eq!(r.body, record_for(r.offset.0).body, "{context}");
                    }
                    block_on(log.close()).unwrap();
                }
            }
        }
    }
}

/// Under `always`, an unsynced append is answered once written and costs no sync of
/// its own; a power cut before the next sync may take it (and only it and what came
/// after), a synced append after it carries it, and with no such append the writer
/// syncs it by itself.
#[test]
fn unsynced_appends_ride_on_the_next_sync_or_the_writers_own() {
    // A power cut right after an unsynced append: the synced prefix survives whole.
    let fs = CrashFs::new();
    let (log, _) = FileLog::open_with(fs.shared(), DIR, config()).unwrap();
    block_on(async {
        log.append_batch(&[record_for(0)]).await.unwrap();
        let syncs = fs.sync_count();
        log.append_batch_unsynced(&[record_for(1)]).await.unwrap();
        assert_eq!(fs.sync_count(), syncs, "an unsynced append syncs nothing");
        assert_eq!(log.next_offset(), Offset(2));
    });
    fs.crash();
    drop(log);
    for torn in Torn::ALL {
        let (log, _) = FileLog::open_with(fs.after_crash(torn).shared(), DIR, config()).unwrap();
        let next = log.next_offset().0;
        assert!(
            (1..=2).contains(&next),
            "{torn:?}: the synced append survives ({next})"
        );
        block_on(log.close()).unwrap();
    }

    // A synced append after an unsynced one makes both durable.
    let fs = CrashFs::new();
    let (log, _) = FileLog::open_with(fs.shared(), DIR, config()).unwrap();
    block_on(async {
        log.append_batch_unsynced(&[record_for(0)]).await.unwrap();
        log.append_batch(&[record_for(1)]).await.unwrap();
    });
    fs.crash();
    drop(log);
    for torn in Torn::ALL {
        let (log, _) = FileLog::open_with(fs.after_crash(torn).shared(), DIR, config()).unwrap();
        assert_eq!(log.next_offset(), Offset(2), "{torn:?}");
        let records = block_on(log.read_from(Offset(0), ReadLimits::records(10))).unwrap();
        assert_eq!(records[0].body, record_for(0).body, "{torn:?}");
        block_on(log.close()).unwrap();
    }

    // Alone, it is synced by the writer within UNSYNCED_APPENDS_WITHIN (waited for
    // here up to 10 s: only that it happens is asserted, not when).
    let fs = CrashFs::new();
    let (log, _) = FileLog::open_with(fs.shared(), DIR, config()).unwrap();
    block_on(async {
        let syncs = fs.sync_count();
        log.append_batch_unsynced(&[record_for(0)]).await.unwrap();
        let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while fs.sync_count() == syncs && std::time::Instant::now() < until {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(
            fs.sync_count() > syncs,
            "the writer never synced the append"
        );
    });
    fs.crash();
    drop(log);
    for torn in Torn::ALL {
        let (log, _) = FileLog::open_with(fs.after_crash(torn).shared(), DIR, config()).unwrap();
        assert_eq!(log.next_offset(), Offset(1), "{torn:?}");
        block_on(log.close()).unwrap();
    }
}
