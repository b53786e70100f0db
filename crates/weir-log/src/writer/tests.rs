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
    writer_with(fs, &config())
}

fn writer_with(fs: &CrashFs, config: &LogConfig) -> Writer {
    let fs = fs.shared();
    let dir = Path::new(DIR);
    fs.create_dir_all(dir).unwrap();
    let lock = fs.lock_dir(dir).unwrap();
    let recovered = crate::recovery::recover(&fs, dir, config, 0).unwrap();
    let (watermark, _) = watch::channel(Watermark {
        start: recovered.start_offset,
        next: recovered.active.next_offset,
        closed: false,
    });
    let shared = Arc::new(Shared {
        dir: dir.to_path_buf(),
        fs,
        config: config.clone(),
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

/// A Kafka batch's few compressed bytes may claim up to 2^21 records: a segment
/// rolls before its offsets pass what its index's u32 entries hold, whatever its
/// size, and the log opens again with every offset.
#[test]
fn a_segment_rolls_before_its_offsets_pass_a_u32() {
    const CLAIMED: u32 = 1 << 21;
    let fs = CrashFs::new();
    let config = LogConfig {
        segment_bytes: 1 << 20,
        ..config()
    };
    let mut writer = writer_with(&fs, &config);
    let mut bytes = crate::testing::kafka_batch(&[NewRecord::new("")], crate::testing::ZSTD, None);
    bytes[23..27].copy_from_slice(&(CLAIMED - 1).to_be_bytes());
    bytes[57..61].copy_from_slice(&CLAIMED.to_be_bytes());
    let crc = crc32c::crc32c(&bytes[21..]);
    bytes[17..21].copy_from_slice(&crc.to_be_bytes());
    let batches = 2049u32;
    let mut answers = Vec::new();
    let requests = (0..batches)
        .map(|_| {
            let (reply, answer) = oneshot::channel();
            answers.push(answer);
            Request::Append {
                batch: EncodedBatch::from_sealed(bytes.clone(), CLAIMED, 1000),
                sync: false,
                written: None,
                reply,
            }
        })
        .collect();
    assert!(!writer.handle_group(requests));
    let last = answers.pop().unwrap().blocking_recv().unwrap().unwrap();
    assert_eq!(last.next, Offset(u64::from(batches) * u64::from(CLAIMED)));
    let bases: Vec<u64> = writer.shared.segments_snapshot().keys().copied().collect();
    assert_eq!(
        bases,
        [0, 2047 * u64::from(CLAIMED)],
        "one roll, at the u32 edge"
    );
    writer.shutdown().unwrap();
    drop(writer);
    let disk = fs.after_crash(Torn::Synced);
    let (log, report) = FileLog::open_with(disk.shared(), DIR, config).unwrap();
    assert!(report.removed_files.is_empty(), "{report:?}");
    assert_eq!(log.stats().next_offset, last.next);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(log.close()).unwrap();
}
