//! The conformance suite against every implementation and fsync policy.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tempfile::TempDir;
use weir_log::io::{Fs, StdFs};
use weir_log::testing::{LogFactory, run_all};
use weir_log::{FileLog, FsyncPolicy, LogConfig, MemLog, MessageLog};

use crate::common::block_on;

struct FileFactory {
    fsync: FsyncPolicy,
    fs: Arc<dyn Fs>,
    dirs: Vec<TempDir>,
    last: Option<(PathBuf, LogConfig)>,
}

impl FileFactory {
    fn new(fsync: FsyncPolicy) -> Self {
        FileFactory::on(StdFs::shared(), fsync)
    }

    fn on(fs: Arc<dyn Fs>, fsync: FsyncPolicy) -> Self {
        FileFactory {
            fsync,
            fs,
            dirs: Vec::new(),
            last: None,
        }
    }
}

impl LogFactory for FileFactory {
    type Log = FileLog;

    fn create(&mut self, mut config: LogConfig) -> FileLog {
        config.fsync = self.fsync;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log");
        self.dirs.push(dir);
        let (log, report) =
            FileLog::open_with(self.fs.clone(), &path, config.clone()).expect("open a new log");
        assert_eq!(report.truncated_bytes, 0);
        self.last = Some((path, config));
        log
    }

    fn reopen(&mut self) -> FileLog {
        let (path, config) = self.last.clone().expect("a log was created");
        let (log, report) = FileLog::open_with(self.fs.clone(), &path, config).expect("reopen");
        assert_eq!(
            report.truncated_bytes, 0,
            "a clean close leaves nothing to cut"
        );
        log
    }
}

#[derive(Default)]
struct MemFactory {
    last: Option<MemLog>,
}

impl LogFactory for MemFactory {
    type Log = MemLog;

    fn create(&mut self, config: LogConfig) -> MemLog {
        let log = MemLog::new(config);
        self.last = Some(log.clone());
        log
    }

    fn reopen(&mut self) -> MemLog {
        let log = self.last.as_ref().expect("a log was created").reopen();
        self.last = Some(log.clone());
        log
    }
}

#[test]
fn file_log_fsync_always_conforms() {
    block_on(run_all(&mut FileFactory::new(FsyncPolicy::Always)));
}

#[test]
fn file_log_fsync_interval_conforms() {
    block_on(run_all(&mut FileFactory::new(FsyncPolicy::Interval(
        Duration::from_millis(5),
    ))));
}

#[test]
fn file_log_fsync_never_conforms() {
    block_on(run_all(&mut FileFactory::new(FsyncPolicy::Never)));
}

/// With two open files at most, every read, roll, trim and reopen closes and reopens
/// files all the time (issue 19's file cache); nothing a log does may notice.
#[test]
fn file_log_conforms_with_two_open_files() {
    for fsync in [FsyncPolicy::Always, FsyncPolicy::Never] {
        let fs = StdFs::with_open_files_limit(2);
        block_on(run_all(&mut FileFactory::on(Arc::new(fs), fsync)));
    }
}

#[test]
fn mem_log_conforms() {
    block_on(run_all(&mut MemFactory::default()));
}

/// `submit_batch` queues at the call: offsets follow the calls, not the awaits, and
/// the futures own what they need.
#[test]
fn submitted_batches_get_offsets_in_call_order() {
    let dir = TempDir::new().expect("temp dir");
    let (log, _) = FileLog::open(dir.path(), LogConfig::default()).expect("open");
    block_on(async {
        let futures: Vec<_> = (0..3u8)
            .map(|i| {
                let records = vec![
                    weir_log::NewRecord::new(vec![i; 10]),
                    weir_log::NewRecord::new(vec![i; 20]),
                ];
                log.submit_batch(&records)
            })
            .collect();
        // Awaited last to first, and on other tasks.
        let mut handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
        handles.reverse();
        let mut firsts = Vec::new();
        for handle in handles {
            firsts.push(handle.await.expect("task").expect("append").first.0);
        }
        firsts.reverse();
        assert_eq!(firsts, [0, 2, 4]);
        let read = log
            .read_from(weir_log::Offset(0), weir_log::ReadLimits::records(100))
            .await
            .expect("read");
        let bodies: Vec<u8> = read.iter().map(|r| r.body[0]).collect();
        assert_eq!(bodies, [0, 0, 1, 1, 2, 2]);
        // A batch the log refuses fails when awaited, and takes no offset.
        let too_big = vec![weir_log::NewRecord::new(vec![0u8; 32 << 20])];
        assert!(log.submit_batch(&too_big).await.is_err());
        assert_eq!(log.next_offset().0, 6);
    });
}
