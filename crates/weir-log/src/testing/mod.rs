//! Test support shipped with the crate, so the broker's tests (and any future log
//! implementation) use the same tools:
//!
//! - [`run_all`]: the conformance suite every [`crate::MessageLog`] must pass;
//! - [`CrashFs`]: a file system with live and durable images for crash tests;
//! - [`kafka_batch`]: Kafka record batches as a producer builds them.
//!
//! Nothing here is used by the log itself.

mod crash_fs;
mod factory;
mod kafka;
mod suite;
mod suite_incoming;

pub use crash_fs::{CrashFs, Torn};
pub use factory::{LogFactory, suite_config};
pub use kafka::{GZIP, LZ4, SNAPPY, ZSTD, kafka_batch, kafka_compress, kafka_records};
pub use suite::run_all;
