//! Unit tests of the writer's per-log steps, driven by hand.

use std::path::Path;
use std::sync::RwLock;
use std::sync::atomic::AtomicUsize;

use tokio::sync::watch;

use super::*;
use crate::FileLog;
use crate::config::LogConfig;
use crate::message_log::{MessageLog, Watermark};
use crate::record::{NewRecord, ReadLimits};
use crate::shared::Counters;
use crate::testing::{CrashFs, Torn};

const DIR: &str = "/w";

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 1024,
        index_interval_bytes: 64,
        ..LogConfig::default()
    }
}

/// A writer driven by hand, so a test decides exactly what one group holds.
fn writer(fs: &CrashFs) -> Writer {
    let fs = fs.shared();
    let dir = Path::new(DIR);
    fs.create_dir_all(dir).unwrap();
    let lock = fs.lock_dir(dir).unwrap();
    let recovered = crate::recovery::recover(&fs, dir, &config(), 0).unwrap();
    let (watermark, _) = watch::channel(Watermark {
        start: recovered.start_offset,
        next: recovered.active.next_offset,
        closed: false,
    });
    let shared = Arc::new(Shared {
        dir: dir.to_path_buf(),
        fs,
        config: config(),
        segments: RwLock::new(recovered.segments),
        watermark,
        counters: Counters::default(),
        sync_thread: AtomicUsize::new(usize::MAX),
        tail: crate::tail_cache::TailCache::new(0),
    });
    Writer::new(shared, Some(lock), recovered.active, recovered.start_offset)
}

fn append(records: &[NewRecord]) -> (Request, oneshot::Receiver<Result<Appended>>) {
    let batch = EncodedBatch::encode(records, 1, 1 << 20, 1 << 20).unwrap();
    let (reply, answer) = oneshot::channel();
    (
        Request::Append {
            batch,
            sync: true,
            written: None,
            reply,
        },
        answer,
    )
}

/// A group [A, B] where B would not fit after A: A's commit fails and is rolled
/// back, leaving the segment empty, so B must go into the same segment. Rolling
/// there would create a "new" segment at the active one's own base and wipe it.
#[test]
fn a_failed_commit_before_a_roll_does_not_roll_an_empty_segment() {
    let fs = CrashFs::new();
    let mut writer = writer(&fs);
    let (a, a_answer) = append(&[NewRecord::new(vec![b'a'; 600])]);
    let (b, b_answer) = append(&[NewRecord::new(vec![b'b'; 600])]);
    fs.fail_next_syncs(1);
    let active_before = writer.active.clone();
    assert!(!writer.handle_group(vec![a, b]));
    assert!(
        Arc::ptr_eq(&writer.active, &active_before),
        "no roll: the emptied segment stays active"
    );
    assert_eq!(writer.shared.segments_snapshot().len(), 1);
    let a = a_answer.blocking_recv().unwrap();
    assert!(matches!(a, Err(LogError::Io { op: "fsync", .. })), "{a:?}");
    let b = b_answer.blocking_recv().unwrap().unwrap();
    assert_eq!(b.first, Offset(0), "B takes the offsets A gave back");
    assert!(writer.failed.is_none());
    writer.shutdown().unwrap();
    drop(writer);

    let disk = fs.after_crash(Torn::Synced);
    let (log, report) = FileLog::open_with(disk.shared(), DIR, config()).unwrap();
    assert!(report.removed_files.is_empty(), "{report:?}");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let records = runtime
        .block_on(log.read_from(Offset(0), ReadLimits::records(10)))
        .unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].body, vec![b'b'; 600]);
    runtime.block_on(log.close()).unwrap();
}
