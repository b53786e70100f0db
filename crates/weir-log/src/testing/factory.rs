//! What the conformance suite needs from its caller ([`LogFactory`]) and the
//! configuration it creates logs with.

use crate::config::LogConfig;
use crate::message_log::MessageLog;

/// Makes logs for the suite.
pub trait LogFactory {
    /// The implementation under test.
    type Log: MessageLog + Clone;

    /// A new, empty log with `config` (a factory may change its fsync policy).
    fn create(&mut self, config: LogConfig) -> Self::Log;

    /// The most recently created log, reopened after the suite closed it: a restart.
    fn reopen(&mut self) -> Self::Log;
}

/// The configuration the suite creates logs with: small segments and a dense index,
/// so that reads, trims and reopens cross segment boundaries.
pub fn suite_config() -> LogConfig {
    LogConfig {
        segment_bytes: 16 * 1024,
        index_interval_bytes: 256,
        max_record_bytes: 512 * 1024,
        max_batch_bytes: 1024 * 1024,
        ..LogConfig::default()
    }
}
