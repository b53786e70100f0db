//! Issue 19: idle logs hold no open file. Hundreds of logs run on a file system that
//! keeps a handful of files open: appends, reads across sealed segments, a trim that
//! removes segments, and a reopen of every log all see exactly the records they
//! would with every file open, and the count of open files stays near
//! the limit instead of two per log.

use std::sync::Arc;

use weir_log::io::{Fs, StdFs};
use weir_log::{FileLog, FsyncPolicy, LogConfig, MessageLog, NewRecord, Offset, ReadLimits};

use crate::common::block_on;

const LOGS: usize = 300;
const RECORDS: usize = 12;
const LIMIT: u64 = 16;
/// Files that may be open over the limit at a quiet moment: the limit is soft for
/// files being written (one per writer-pool thread) and the ones a sweep found in
/// use. Without the cache the count would be over 600 here.
const SLACK: u64 = 16;

fn config() -> LogConfig {
    LogConfig {
        fsync: FsyncPolicy::Always,
        // Small segments, so every log has sealed ones to read back.
        segment_bytes: 1024,
        lock_dir: false,
        ..LogConfig::default()
    }
}

fn body(log: usize, record: usize) -> Vec<u8> {
    format!("log {log} record {record} {}", "x".repeat(200)).into_bytes()
}

#[test]
fn hundreds_of_logs_run_with_a_handful_of_open_files() {
    let root = tempfile::tempdir().expect("a temporary directory");
    let std_fs = StdFs::with_open_files_limit(LIMIT);
    let fs: Arc<dyn Fs> = Arc::new(std_fs.clone());
    let open = |i: usize| {
        FileLog::open_with(fs.clone(), root.path().join(format!("q{i}")), config())
            .expect("the log opens")
            .0
    };
    let logs: Vec<FileLog> = (0..LOGS).map(open).collect();
    block_on(async {
        // Round-robin appends: every append reopens a file another log's closed.
        for record in 0..RECORDS {
            let pending: Vec<_> = logs
                .iter()
                .enumerate()
                .map(|(i, log)| log.submit_batch(&[NewRecord::new(body(i, record))]))
                .collect();
            for (i, appended) in pending.into_iter().enumerate() {
                let appended = appended.await.expect("the append is durable");
                assert_eq!(appended.first, Offset(record as u64), "log {i}");
            }
        }
        assert!(
            std_fs.open_files() <= LIMIT + SLACK,
            "{} files open with {LOGS} logs and a limit of {LIMIT}",
            std_fs.open_files()
        );
        for (i, log) in logs.iter().enumerate() {
            let records = log
                .read_from(Offset(0), ReadLimits::records(RECORDS))
                .await
                .expect("read back");
            let bodies: Vec<Vec<u8>> = records.iter().map(|r| r.body.to_vec()).collect();
            let want: Vec<Vec<u8>> = (0..RECORDS).map(|r| body(i, r)).collect();
            assert_eq!(bodies, want, "log {i}");
        }
        logs[1].trim_before(Offset(6)).await.expect("trim");
        for log in &logs {
            log.close().await.expect("close");
        }
    });
    drop(logs);
    // The trim's segment removal runs on a thread of its own and may still hold the
    // removed segment for a moment after the close: wait for it, within reason.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std_fs.open_files() > 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(std_fs.open_files(), 0, "closed logs hold no file");

    // Every log opens again (recovery under the same limit) with all its records.
    let logs: Vec<FileLog> = (0..LOGS).map(open).collect();
    block_on(async {
        for (i, log) in logs.iter().enumerate() {
            let first = if i == 1 { 6 } else { 0 };
            assert_eq!(log.first_offset(), Offset(first), "log {i}");
            let records = log
                .read_from(Offset(first), ReadLimits::records(RECORDS))
                .await
                .expect("read after reopen");
            assert_eq!(records.len(), RECORDS - first as usize, "log {i}");
            assert_eq!(records.last().expect("records").body, body(i, RECORDS - 1));
        }
        assert!(std_fs.open_files() <= LIMIT + SLACK);
        for log in &logs {
            log.close().await.expect("close");
        }
    });
}
