//! The broker's configuration: where its data lives, the log settings its queues
//! use, and the limits on what clients may ask for ([`Limits`]), each enforced with
//! a clear error.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use weir_log::LogConfig;

/// Limits on what clients may ask for. Each is enforced with a clear error.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Most queues a broker holds.
    pub max_queues: u64,
    /// Most exchanges clients may declare (the built-in ones not counted).
    pub max_exchanges: u64,
    /// Most bindings, all exchanges together.
    pub max_bindings: u64,
    /// Largest message, bytes (body; over AMQP also its properties). RabbitMQ
    /// 3.x's default, 128 MiB; at most 512 MiB, RabbitMQ's ceiling.
    pub max_message_bytes: u64,
    /// Most messages in one send.
    pub max_batch_messages: u64,
    /// Most messages one receive may ask for.
    pub max_receive: u32,
    /// Longest long poll, ms.
    pub max_wait_ms: u64,
    /// Below this much free space under the data directory the disk alarm is
    /// raised and publishers are blocked (0: never). RabbitMQ's default, 50 MB.
    pub disk_free_min_bytes: u64,
    /// Above this much resident memory the memory alarm is raised and publishers
    /// are blocked (0: 40% of the machine's memory, RabbitMQ's default).
    pub memory_high_watermark_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_queues: 10_000,
            max_exchanges: 10_000,
            max_bindings: 100_000,
            max_message_bytes: 128 << 20,
            max_batch_messages: 1_000,
            max_receive: 1_000,
            max_wait_ms: 60_000,
            disk_free_min_bytes: 50_000_000,
            memory_high_watermark_bytes: 0,
        }
    }
}

/// The largest `max_message_bytes` may be (RabbitMQ's ceiling, 512 MiB).
pub const MAX_MESSAGE_BYTES_CEILING: u64 = 512 << 20;

/// Room a stored record needs besides the message's body and properties: its
/// id, group and the HTTP headers map (which come in a request of at most
/// `[http] max_body_bytes`, 16 MiB by default, whose body counts too).
pub(crate) const RECORD_ROOM: u64 = 16 << 20;

impl Limits {
    /// What is wrong with these limits, one sentence each (empty: nothing).
    /// Durations are capped at [`crate::api::MAX_DURATION_MS`] so that no
    /// deadline computed from them can overflow a clock.
    #[must_use]
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !(1..=MAX_MESSAGE_BYTES_CEILING).contains(&self.max_message_bytes) {
            problems.push(format!(
                "limits.max_message_bytes {} is outside 1 ..= {MAX_MESSAGE_BYTES_CEILING} (512 MiB)",
                self.max_message_bytes
            ));
        }
        if self.max_wait_ms > crate::api::MAX_DURATION_MS {
            problems.push(format!(
                "limits.max_wait_ms {} is over {} (30 days)",
                self.max_wait_ms,
                crate::api::MAX_DURATION_MS
            ));
        }
        problems
    }
}

/// The broker's settings.
#[derive(Clone, Debug)]
pub struct BrokerConfig {
    /// Where queues live.
    pub data_dir: PathBuf,
    /// Settings of each queue's log (fsync policy, segment size...).
    pub log: LogConfig,
    /// Client limits.
    pub limits: Limits,
    /// Users who may log in only from a loopback address (RabbitMQ's
    /// `loopback_users`): `guest` by default.
    pub loopback_users: Vec<String>,
    /// Bytes of each stream partition's newest batches kept in memory for readers
    /// at the tail (`LogConfig::tail_cache_bytes`; queues keep none). 0: none.
    pub stream_tail_cache_bytes: u64,
}

/// Default of [`BrokerConfig::stream_tail_cache_bytes`]: about sixteen appends of
/// 1,000 records of 100 bytes.
pub const STREAM_TAIL_CACHE_BYTES: u64 = 2 << 20;

impl BrokerConfig {
    /// Defaults for a data directory: fsync always, 64 MiB segments (small enough
    /// that settled messages free space soon).
    pub fn new(data_dir: impl Into<PathBuf>) -> BrokerConfig {
        BrokerConfig {
            data_dir: data_dir.into(),
            log: LogConfig {
                segment_bytes: 64 << 20,
                ..LogConfig::default()
            },
            limits: Limits::default(),
            loopback_users: vec!["guest".to_owned()],
            stream_tail_cache_bytes: STREAM_TAIL_CACHE_BYTES,
        }
    }
}
