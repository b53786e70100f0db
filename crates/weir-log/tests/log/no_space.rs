//! A full disk under a pipelined log (staged appends, the broker's queues): a write,
//! a segment roll or a seal that runs out of space refuses what it must, and the log
//! takes appends again once there is space, without a reopen, keeping every
//! acknowledged append through a crash. Only a failed `fdatasync` stops a log until
//! it is reopened (see `faults`).
//!
//! [`FaultyFs`] puts switches over [`CrashFs`]: writes of segment data, of segment
//! headers (a roll's new segment) and of index entries can fail with ENOSPC after
//! writing part of what they were given, as a real disk does, and truncations can
//! fail too.

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use weir_log::io::{DirLock, FileIo, Fs};
use weir_log::testing::{CrashFs, Torn};
use weir_log::{Appended, FileLog, LogConfig, LogError, MessageLog, NewRecord, Offset, ReadLimits};

use crate::common::block_on;

const DIR: &str = "/data/log";
/// Every file starts with a 32-byte header; index entries and batches come after.
const HEADER: u64 = 32;

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 2048,
        index_interval_bytes: 128,
        max_record_bytes: 1024,
        max_batch_bytes: 8192,
        ..LogConfig::default()
    }
}

fn body(offset: u64) -> String {
    format!("{offset}:{}", "n".repeat((offset % 29) as usize * 5))
}

/// Which writes fail.
#[derive(Debug, Default)]
struct Switches {
    /// Batches written to a segment.
    data: AtomicBool,
    /// A new segment's header (the first write of a roll).
    segment_headers: AtomicBool,
    /// Index entries (the writer's, and the ones a seal writes).
    index_entries: AtomicBool,
    /// Truncations (`set_len`), e.g. the rollback of a failed write.
    truncates: AtomicBool,
}

#[derive(Debug)]
struct FaultyFs {
    inner: Arc<dyn Fs>,
    switches: Arc<Switches>,
}

#[derive(Debug)]
struct FaultyFile {
    inner: Arc<dyn FileIo>,
    /// A segment (`.log`) or an index (`.idx`) file; others never fail.
    segment: bool,
    index: bool,
    switches: Arc<Switches>,
}

fn no_space() -> io::Error {
    io::Error::from_raw_os_error(28)
}

impl FileIo for FaultyFile {
    fn read_at(&self, pos: u64, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read_at(pos, buf)
    }
    fn write_all_at(&self, pos: u64, bufs: &[&[u8]]) -> io::Result<()> {
        let on = |s: &AtomicBool| s.load(Ordering::SeqCst);
        let fail = (self.segment && pos == 0 && on(&self.switches.segment_headers))
            || (self.segment && pos >= HEADER && on(&self.switches.data))
            || (self.index && pos >= HEADER && on(&self.switches.index_entries));
        if !fail {
            return self.inner.write_all_at(pos, bufs);
        }
        // What fit before the disk filled up: half of the first buffer.
        if let Some(first) = bufs.first() {
            self.inner.write_all_at(pos, &[&first[..first.len() / 2]])?;
        }
        Err(no_space())
    }
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        if self.switches.truncates.load(Ordering::SeqCst) {
            return Err(no_space());
        }
        self.inner.set_len(len)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.inner.sync_data()
    }
}

impl FaultyFs {
    fn over(fs: &CrashFs) -> (Arc<dyn Fs>, Arc<Switches>) {
        let switches = Arc::new(Switches::default());
        let fs = Arc::new(FaultyFs {
            inner: fs.shared(),
            switches: switches.clone(),
        });
        (fs, switches)
    }

    fn wrap(&self, path: &Path, file: Arc<dyn FileIo>) -> Arc<dyn FileIo> {
        let ext = path.extension().and_then(|e| e.to_str());
        Arc::new(FaultyFile {
            inner: file,
            segment: ext == Some("log"),
            index: ext == Some("idx"),
            switches: self.switches.clone(),
        })
    }
}

impl Fs for FaultyFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.inner.create_dir_all(dir)
    }
    fn open(&self, path: &Path) -> io::Result<Arc<dyn FileIo>> {
        self.inner.open(path).map(|f| self.wrap(path, f))
    }
    fn create(&self, path: &Path) -> io::Result<Arc<dyn FileIo>> {
        self.inner.create(path).map(|f| self.wrap(path, f))
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.inner.list(dir)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        self.inner.remove(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.inner.rename(from, to)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.inner.sync_dir(dir)
    }
    fn lock_dir(&self, dir: &Path) -> io::Result<DirLock> {
        self.inner.lock_dir(dir)
    }
}

/// A staged append of `body(next offset)`: waits until it is written and returns
/// its durable answer, not awaited (so syncs stay in flight behind it).
async fn stage(
    log: &FileLog,
) -> Result<impl Future<Output = Result<Appended, LogError>> + use<>, LogError> {
    let next = log.next_offset().0;
    let (written, durable) = log.submit_batch_staged(&[NewRecord::new(body(next))]);
    let appended = written.await?;
    assert_eq!(appended.first, Offset(next), "offsets stay dense");
    Ok(durable)
}

/// Appends staged until `n` are durable, checking each.
async fn stage_durably(log: &FileLog, n: usize) {
    for _ in 0..n {
        let durable = stage(log).await.expect("written");
        durable.await.expect("durable");
    }
}

async fn assert_all_bodies(log: &FileLog, context: &str) {
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

/// Reopens what a crash of kind `torn` leaves and checks it holds exactly `next`
/// records with their bodies, and takes an append.
fn assert_survives_a_crash(fs: &CrashFs, torn: Torn, next: u64, context: &str) {
    let disk = fs.after_crash(torn);
    let (log, report) = FileLog::open_with(disk.shared(), DIR, config())
        .unwrap_or_else(|e| panic!("{context}: reopen after a crash ({torn:?}): {e}"));
    assert_eq!(
        log.next_offset(),
        Offset(next),
        "{context}: after a crash ({torn:?}), {report:?}"
    );
    block_on(async {
        assert_all_bodies(&log, context).await;
        stage_durably(&log, 1).await;
        log.close().await.unwrap();
    });
}

/// The soak's defect A: a write that fails for lack of space while earlier groups
/// still wait for their sync (a pipelined log always has some) was taken for a
/// failed sync, and the log refused every append until reopened. Now the failed
/// group alone is refused, its partial bytes are cut, the groups before it become
/// durable, and the next append gets its offsets.
#[test]
fn a_failed_write_with_syncs_in_flight_refuses_only_that_group() {
    let crash = CrashFs::new();
    let (fs, switches) = FaultyFs::over(&crash);
    let (log, _) = FileLog::open_with(fs, DIR, config()).unwrap();
    block_on(async {
        stage_durably(&log, 3).await;
        // Slow syncs: the next two groups are written and wait for theirs.
        crash.set_sync_delay(Duration::from_millis(30));
        let a = stage(&log).await.unwrap();
        let b = stage(&log).await.unwrap();
        switches.data.store(true, Ordering::SeqCst);
        let refused = stage(&log).await.err().expect("no space for it");
        assert!(matches!(refused, LogError::NoSpace { .. }), "{refused:?}");
        switches.data.store(false, Ordering::SeqCst);
        a.await.expect("the groups before it become durable");
        b.await.expect("the groups before it become durable");
        crash.set_sync_delay(Duration::ZERO);
        assert_eq!(log.next_offset(), Offset(5), "the refused group is gone");
        stage_durably(&log, 4).await;
        assert_all_bodies(&log, "after the failed write").await;
    });
    assert_survives_a_crash(&crash, Torn::Synced, 9, "failed write");
    assert_survives_a_crash(&crash, Torn::Everything, 9, "failed write");
    block_on(log.close()).unwrap();
}

/// A roll whose new segment cannot be made (no space for its header) refuses the
/// append that needed it and removes the half-made files; the old segment stays
/// active. Once there is space the roll happens and appends go on.
#[test]
fn a_roll_that_runs_out_of_space_is_refused_then_succeeds() {
    let crash = CrashFs::new();
    let (fs, switches) = FaultyFs::over(&crash);
    let (log, _) = FileLog::open_with(fs, DIR, config()).unwrap();
    let segments = || {
        crash
            .list(Path::new(DIR))
            .unwrap()
            .iter()
            .filter(|n| Path::new(n).extension().is_some_and(|e| e == "log"))
            .count()
    };
    block_on(async {
        stage_durably(&log, 2).await;
        switches.segment_headers.store(true, Ordering::SeqCst);
        let mut refused = None;
        for _ in 0..200 {
            match stage(&log).await {
                Ok(durable) => {
                    durable.await.expect("durable");
                }
                Err(e) => {
                    refused = Some(e);
                    break;
                }
            }
        }
        let refused = refused.expect("a roll was needed and failed");
        assert!(matches!(refused, LogError::NoSpace { .. }), "{refused:?}");
        assert_eq!(segments(), 1, "the half-made segment is removed");
        let next = log.next_offset().0;
        // Still full: refused again, nothing changes.
        assert!(matches!(
            stage(&log).await.err(),
            Some(LogError::NoSpace { .. })
        ));
        assert_eq!(log.next_offset(), Offset(next));
        switches.segment_headers.store(false, Ordering::SeqCst);
        stage_durably(&log, 30).await;
        assert!(segments() >= 2, "rolled once there was space");
        assert_all_bodies(&log, "after the failed roll").await;
    });
    let next = log.next_offset().0;
    assert_survives_a_crash(&crash, Torn::Synced, next, "failed roll");
    block_on(log.close()).unwrap();
    let (log, report) = FileLog::open_with(crash.shared(), DIR, config()).unwrap();
    assert_eq!(report.truncated_bytes, 0);
    assert!(report.removed_files.is_empty(), "{report:?}");
    block_on(assert_all_bodies(&log, "reopened"));
    block_on(log.close()).unwrap();
}

/// A pipelined roll is sealed on the sync thread, which writes the old index's last
/// entries. When the disk is full there, the seal goes on without them (the index
/// is rebuilt from the synced data when needed) instead of stopping the log.
#[test]
fn a_seal_that_cannot_write_index_entries_does_not_stop_the_log() {
    let crash = CrashFs::new();
    let (fs, switches) = FaultyFs::over(&crash);
    let (log, _) = FileLog::open_with(fs, DIR, config()).unwrap();
    block_on(async {
        stage_durably(&log, 2).await;
        switches.index_entries.store(true, Ordering::SeqCst);
        // Several rolls while no index entry can be written.
        stage_durably(&log, 120).await;
        switches.index_entries.store(false, Ordering::SeqCst);
        stage_durably(&log, 5).await;
        assert_all_bodies(&log, "after seals without index entries").await;
    });
    for torn in [Torn::Synced, Torn::Everything] {
        assert_survives_a_crash(&crash, torn, 127, "seals without index entries");
    }
    block_on(log.close()).unwrap();
    let segments = crash
        .list(Path::new(DIR))
        .unwrap()
        .iter()
        .filter(|n| Path::new(n).extension().is_some_and(|e| e == "log"))
        .count();
    assert!(segments > 3, "the test rolled several times: {segments}");
    let (log, _) = FileLog::open_with(crash.shared(), DIR, config()).unwrap();
    block_on(assert_all_bodies(&log, "reopened"));
    block_on(log.close()).unwrap();
}

/// When even the rollback's truncation fails, the log refuses appends (the failed
/// group's bytes are still in the file) and retries the truncation; once it works,
/// appends go on without a reopen, and the cut bytes never come back.
#[test]
fn a_failed_rollback_is_retried_until_the_log_takes_appends_again() {
    let crash = CrashFs::new();
    let (fs, switches) = FaultyFs::over(&crash);
    let (log, _) = FileLog::open_with(fs, DIR, config()).unwrap();
    block_on(async {
        stage_durably(&log, 3).await;
        switches.data.store(true, Ordering::SeqCst);
        switches.truncates.store(true, Ordering::SeqCst);
        let refused = stage(&log).await.err().expect("no space");
        assert!(matches!(refused, LogError::NoSpace { .. }), "{refused:?}");
        let refused = stage(&log).await.err().expect("the rollback is owed");
        assert!(
            matches!(refused, LogError::Repairing { op: "truncate", .. }),
            "{refused:?}"
        );
        assert!(refused.is_no_space(), "and why: {refused}");
        assert_eq!(log.next_offset(), Offset(3));
        switches.data.store(false, Ordering::SeqCst);
        switches.truncates.store(false, Ordering::SeqCst);
        stage_durably(&log, 4).await;
        assert_all_bodies(&log, "after the repaired rollback").await;
    });
    for torn in [Torn::Synced, Torn::Everything] {
        assert_survives_a_crash(&crash, torn, 7, "repaired rollback");
    }
    block_on(log.close()).unwrap();
}

/// The sweep of `faults::a_full_disk_fails_appends_and_the_log_recovers_when_space_returns`
/// for a pipelined log with slow syncs (so groups are in flight at every failure) and
/// unsynced appends between the staged ones: wherever the disk fills up, the log
/// refuses with `NoSpace` (never `Failed`), keeps every durable append through a
/// crash, and takes appends again once space returns.
#[test]
fn a_full_disk_at_any_point_never_stops_a_pipelined_log() {
    for limit in (900..4200).step_by(37) {
        let context = format!("space limit {limit}");
        let fs = CrashFs::new();
        let (log, _) = FileLog::open_with(fs.shared(), DIR, config()).unwrap();
        fs.set_space_limit(Some(limit));
        fs.set_sync_delay(Duration::from_millis(1));
        block_on(async {
            let mut in_flight = Vec::new();
            let mut durable_below = 0;
            let err = loop {
                assert!(log.next_offset().0 < 10_000, "{context}: never filled up");
                let next = log.next_offset().0;
                let result = if next % 5 == 4 {
                    log.append_batch_unsynced(&[NewRecord::new(body(next))])
                        .await
                        .map(|_| None)
                } else {
                    stage(&log).await.map(Some)
                };
                match result {
                    Ok(Some(durable)) => in_flight.push(durable),
                    Ok(None) => {}
                    Err(e) => break e,
                }
                if in_flight.len() == 3 {
                    for durable in in_flight.drain(..) {
                        let appended = durable
                            .await
                            .unwrap_or_else(|e| panic!("{context}: a written append's sync: {e}"));
                        durable_below = appended.next.0;
                    }
                }
            };
            assert!(
                matches!(err, LogError::NoSpace { .. }),
                "{context}: expected NoSpace, got {err:?}"
            );
            for durable in in_flight.drain(..) {
                let appended = durable
                    .await
                    .unwrap_or_else(|e| panic!("{context}: a written append's sync: {e}"));
                durable_below = appended.next.0;
            }
            let next = log.next_offset().0;
            assert!(durable_below <= next);
            assert_all_bodies(&log, &context).await;
            fs.set_space_limit(None);
            fs.set_sync_delay(Duration::ZERO);
            stage_durably(&log, 20).await;
            assert_all_bodies(&log, &context).await;
            let next = log.next_offset().0;
            log.close().await.unwrap();
            let (log, report) = FileLog::open_with(fs.shared(), DIR, config())
                .unwrap_or_else(|e| panic!("{context}: reopen: {e}"));
            assert_eq!(log.next_offset(), Offset(next), "{context}: {report:?}");
            assert_eq!(report.truncated_bytes, 0, "{context}");
            assert_all_bodies(&log, &context).await;
            log.close().await.unwrap();
        });
    }
}
