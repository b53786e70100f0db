//! The conformance suite against every implementation and fsync policy.

use std::path::PathBuf;
use std::time::Duration;

use tempfile::TempDir;
use weir_log::testing::{LogFactory, run_all};
use weir_log::{FileLog, FsyncPolicy, LogConfig, MemLog};

use crate::common::block_on;

struct FileFactory {
    fsync: FsyncPolicy,
    dirs: Vec<TempDir>,
    last: Option<(PathBuf, LogConfig)>,
}

impl FileFactory {
    fn new(fsync: FsyncPolicy) -> Self {
        FileFactory {
            fsync,
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
        let (log, report) = FileLog::open(&path, config.clone()).expect("open a new log");
        assert_eq!(report.truncated_bytes, 0);
        self.last = Some((path, config));
        log
    }

    fn reopen(&mut self) -> FileLog {
        let (path, config) = self.last.clone().expect("a log was created");
        let (log, report) = FileLog::open(&path, config).expect("reopen");
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

#[test]
fn mem_log_conforms() {
    block_on(run_all(&mut MemFactory::default()));
}
