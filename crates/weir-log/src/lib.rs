//! weir's durable log: segmented append-only files with group commit, per-segment
//! indexes and crash recovery.
//!
//! This crate owns how bytes reach the disk and come back. It knows nothing of queues,
//! exchanges or protocols, and it uses no async runtime: blocking I/O runs on its own
//! threads, a fixed number whatever the number of logs (a pool of writer threads and
//! one of sync threads sized by the machine's cores, each thread serving many logs,
//! and a small read pool), and the async API only awaits channel replies, so any
//! executor can drive it.
//!
//! Main types:
//! - [`MessageLog`]: the seam the broker uses. [`FileLog`] is the durable
//!   implementation, [`MemLog`] the in-memory one for tests, and a replicated log can
//!   implement it later. [`LogStore`] opens them by directory ([`FileStore`],
//!   [`MemStore`]), so the broker is generic over where its logs live.
//! - [`LogConfig`] and [`FsyncPolicy`]: segment size and age, index density, limits,
//!   retention, and when an append counts as durable.
//! - [`RecoveryReport`]: what opening a log repaired after a crash.
//! - [`io::Fs`] / [`io::FileIo`]: the file layer, with [`testing::CrashFs`] for
//!   deterministic crash tests and [`testing::run_all`], the conformance suite.
//!
//! The on-disk format is documented where it is written and read: `batch` (records
//! and batches), `header` (file headers), `index` (offset and time index), `meta`
//! (start offset); `docs/on-disk-format.md` gives the crash reasoning.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! use weir_log::{FileLog, LogConfig, MessageLog, NewRecord, Offset, ReadLimits};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let (log, _report) = FileLog::open(dir.path(), LogConfig::default()).unwrap();
//! let appended = log
//!     .append_batch(&[NewRecord::new("hello"), NewRecord::new("world")])
//!     .await
//!     .unwrap(); // durable: fdatasync has returned
//! assert_eq!(appended.first, Offset(0));
//! let records = log.read_from(Offset(1), ReadLimits::records(10)).await.unwrap();
//! assert_eq!(records[0].body, "world");
//! log.close().await.unwrap();
//! # });
//! ```

mod batch;
mod batch_header;
#[doc(hidden)]
pub mod bench_api;
mod config;
mod error;
mod file_cache;
mod file_log;
#[doc(hidden)]
pub mod fuzzing;
mod header;
mod incoming;
mod index;
pub mod io;
mod io_metrics;
mod kafka_batch;
mod mailbox;
mod mem_log;
mod message_log;
mod meta;
mod pool;
mod record;
mod recovery;
mod segment;
mod shared;
mod store;
mod stored;
mod syncer;
mod tail;
mod tail_cache;
pub mod testing;
mod writer;
mod writer_pool;

pub use config::{FsyncPolicy, LogConfig, Retention};
pub use error::{ConfigProblem, Corruption, LogError, Result};
pub use file_log::FileLog;
pub use incoming::IncomingBatch;
pub use io_metrics::{HistogramSnapshot, IoMetrics, io_metrics};
pub use mem_log::MemLog;
pub use message_log::{LogStats, MessageLog};
pub use record::{Appended, Header, NewRecord, Offset, RESERVED_HEADER_PREFIX, ReadLimits, Record};
pub use recovery::RecoveryReport;
pub use shared::set_pool_threads;
pub use store::{FileStore, LogStore, MemStore};
pub use stored::{RecordView, StoredBatches, decode_stored, visit_stored};
pub use tail::TailReader;
pub use writer::RetentionReport;
