//! [`LogStore`]: where a broker's logs come from. The broker names a directory per
//! log and never opens files itself, so the same broker code runs over files
//! ([`FileStore`]), over memory in tests ([`MemStore`]), and later over a
//! replicated log.

use std::collections::HashMap;
use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::config::LogConfig;
use crate::error::Result;
use crate::file_log::FileLog;
use crate::io::{Fs, StdFs};
use crate::mem_log::MemLog;
use crate::message_log::MessageLog;
use crate::recovery::RecoveryReport;

/// Opens the logs of a broker, one per directory.
pub trait LogStore: Send + Sync + Debug + 'static {
    /// The logs it opens.
    type Log: MessageLog + Clone + Debug;

    /// Opens the log in `dir` with `config`, creating it when missing and
    /// recovering it after a crash. It may block (file I/O): async callers run it
    /// on a blocking thread.
    ///
    /// # Errors
    /// What opening the log can fail with ([`FileLog::open`]).
    fn open(&self, dir: &Path, config: LogConfig) -> Result<(Self::Log, RecoveryReport)>;
}

/// Logs in files ([`FileLog`]) on a file system: the real one, or a test's.
#[derive(Clone, Debug)]
pub struct FileStore {
    fs: Arc<dyn Fs>,
}

impl FileStore {
    /// Logs on `fs`.
    pub fn new(fs: Arc<dyn Fs>) -> FileStore {
        FileStore { fs }
    }
}

impl Default for FileStore {
    /// Logs on the real file system.
    fn default() -> FileStore {
        FileStore::new(StdFs::shared())
    }
}

impl LogStore for FileStore {
    type Log = FileLog;

    fn open(&self, dir: &Path, config: LogConfig) -> Result<(FileLog, RecoveryReport)> {
        FileLog::open_with(self.fs.clone(), dir, config)
    }
}

/// Logs in memory ([`MemLog`]), kept by directory: opening a directory again
/// (a simulated restart) finds every record appended there, as if each append
/// were durable. Clones share the logs, so a test can open a broker again on the
/// same store.
#[derive(Clone, Debug, Default)]
pub struct MemStore {
    logs: Arc<Mutex<HashMap<PathBuf, MemLog>>>,
}

impl LogStore for MemStore {
    type Log = MemLog;

    fn open(&self, dir: &Path, config: LogConfig) -> Result<(MemLog, RecoveryReport)> {
        config.validate()?;
        let mut logs = self
            .logs
            .lock()
            .expect("invariant: MemStore lock never poisoned");
        let log = match logs.get(dir) {
            Some(earlier) => earlier.reopen(),
            None => MemLog::new(config),
        };
        logs.insert(dir.to_path_buf(), log.clone());
        Ok((log, RecoveryReport::default()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{NewRecord, Offset};

    #[test]
    fn a_mem_store_reopens_a_directory_with_its_records() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let store = MemStore::default();
        let (log, _) = store.open(Path::new("a"), LogConfig::default()).unwrap();
        rt.block_on(log.append_batch(&[NewRecord::new("kept")]))
            .unwrap();
        let (other, _) = store.open(Path::new("b"), LogConfig::default()).unwrap();
        assert_eq!(other.next_offset(), Offset(0), "another directory is empty");
        let (again, _) = store.open(Path::new("a"), LogConfig::default()).unwrap();
        assert_eq!(again.next_offset(), Offset(1));
    }
}
