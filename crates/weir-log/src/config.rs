//! How a log is tuned: fsync policy, segment size and age, index density, limits and
//! retention. Every field has a default; `validate` reports every problem at once.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{ConfigProblem, LogError, Result};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const GIB: u64 = 1024 * MIB;

/// When an append counts as durable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum FsyncPolicy {
    /// An append resolves only after `fdatasync` returned for its bytes. Appends that
    /// arrive while a sync is running are written together and share the next one
    /// (group commit).
    #[default]
    Always,
    /// An append resolves once written to the operating system; a sync runs at least
    /// this often. A machine crash may lose the last interval; a process crash loses
    /// nothing.
    Interval(Duration),
    /// An append resolves once written to the operating system, which flushes when it
    /// likes. The log still syncs when it seals a segment and when it closes.
    Never,
}

impl fmt::Display for FsyncPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FsyncPolicy::Always => f.write_str("always"),
            FsyncPolicy::Interval(every) => write!(f, "interval:{}", every.as_millis()),
            FsyncPolicy::Never => f.write_str("never"),
        }
    }
}

impl FromStr for FsyncPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "always" => Ok(FsyncPolicy::Always),
            "never" => Ok(FsyncPolicy::Never),
            _ => {
                let ms = s.strip_prefix("interval:").ok_or_else(|| {
                    format!("unknown fsync policy {s:?}: use always, interval:<ms> or never")
                })?;
                let ms: u64 = ms
                    .parse()
                    .map_err(|_| format!("interval:<ms> needs a whole number of ms, got {ms:?}"))?;
                if ms == 0 {
                    return Err("interval:<ms> needs at least 1 ms".into());
                }
                Ok(FsyncPolicy::Interval(Duration::from_millis(ms)))
            }
        }
    }
}

impl TryFrom<String> for FsyncPolicy {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

impl From<FsyncPolicy> for String {
    fn from(value: FsyncPolicy) -> Self {
        value.to_string()
    }
}

/// Configuration of one log. Field names carry their units.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// When appends are durable: `always` (default), `interval:<ms>`, `never`.
    pub fsync: FsyncPolicy,
    /// A segment is sealed and a new one started once it reaches this size.
    /// 1 KiB ..= 1 GiB; default 64 MiB.
    pub segment_bytes: u64,
    /// A non-empty segment older than this is sealed even if not full. `None`: never.
    pub segment_max_age_ms: Option<u64>,
    /// One index entry per this many bytes of batches (at batch boundaries). Smaller
    /// means faster seeks and a larger index. Default 4 KiB.
    pub index_interval_bytes: u32,
    /// Largest encoded record (body, key, headers and 18 bytes of framing).
    /// Default 16 MiB.
    pub max_record_bytes: u32,
    /// Largest encoded batch (all its records plus a 32-byte header). Default 64 MiB.
    pub max_batch_bytes: u32,
    /// Sealed segments whose newest record is older than this are removed. `None`: keep.
    pub retention_max_age_ms: Option<u64>,
    /// Oldest sealed segments are removed while the log is larger than this. `None`: keep.
    pub retention_max_bytes: Option<u64>,
    /// How often the writer checks retention and segment age on its own. Default 60 s.
    pub retention_check_interval_ms: u64,
    /// Whether the open log holds an `flock` on `LOCK` in its directory, so two
    /// writers can never share it (default). An owner that already excludes other
    /// processes (the broker holds its data directory's `LOCK`) turns it off and
    /// saves one open file per log.
    pub lock_dir: bool,
    /// Bytes of the newest batches kept in memory for readers at the tail (stored
    /// reads from them touch no file). 0 (default): none. At most 1 GiB.
    pub tail_cache_bytes: u64,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            fsync: FsyncPolicy::Always,
            segment_bytes: 64 * MIB,
            segment_max_age_ms: None,
            index_interval_bytes: 4 * KIB as u32,
            max_record_bytes: 16 * MIB as u32,
            max_batch_bytes: 64 * MIB as u32,
            retention_max_age_ms: None,
            retention_max_bytes: None,
            retention_check_interval_ms: 60_000,
            lock_dir: true,
            tail_cache_bytes: 0,
        }
    }
}

/// What a live log may change of its configuration
/// ([`crate::MessageLog::reconfigure`]): its retention and the size at which it
/// seals a segment. The rest is fixed at open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    /// As [`LogConfig::retention_max_age_ms`].
    pub max_age_ms: Option<u64>,
    /// As [`LogConfig::retention_max_bytes`].
    pub max_bytes: Option<u64>,
    /// As [`LogConfig::segment_bytes`]: segments sealed from now on.
    pub segment_bytes: u64,
}

impl LogConfig {
    /// The settings [`Retention`] names, as configured.
    #[must_use]
    pub fn retention(&self) -> Retention {
        Retention {
            max_age_ms: self.retention_max_age_ms,
            max_bytes: self.retention_max_bytes,
            segment_bytes: self.segment_bytes,
        }
    }

    /// This configuration with `retention`'s settings.
    #[must_use]
    pub fn with_retention(&self, retention: Retention) -> LogConfig {
        LogConfig {
            retention_max_age_ms: retention.max_age_ms,
            retention_max_bytes: retention.max_bytes,
            segment_bytes: retention.segment_bytes,
            ..self.clone()
        }
    }

    /// Checks every field and reports all problems together.
    pub fn validate(&self) -> Result<()> {
        let mut problems = Vec::new();
        let mut problem = |field: &'static str, reason: String| {
            problems.push(ConfigProblem { field, reason });
        };
        if !(KIB..=GIB).contains(&self.segment_bytes) {
            problem(
                "segment_bytes",
                format!("{} is outside 1 KiB ..= 1 GiB", self.segment_bytes),
            );
        }
        if self.segment_max_age_ms == Some(0) {
            problem("segment_max_age_ms", "must be at least 1 ms".into());
        }
        if self.max_record_bytes < 64 {
            problem(
                "max_record_bytes",
                format!("{} is below the minimum of 64", self.max_record_bytes),
            );
        }
        if u64::from(self.max_batch_bytes) > GIB {
            problem(
                "max_batch_bytes",
                format!("{} is over 1 GiB", self.max_batch_bytes),
            );
        }
        if u64::from(self.max_batch_bytes)
            < u64::from(self.max_record_bytes) + crate::batch::BATCH_HEADER_LEN as u64
        {
            problem(
                "max_batch_bytes",
                format!(
                    "{} cannot hold one record of max_record_bytes ({}) plus the 32-byte batch header",
                    self.max_batch_bytes, self.max_record_bytes
                ),
            );
        }
        if self.retention_max_age_ms == Some(0) {
            problem("retention_max_age_ms", "must be at least 1 ms".into());
        }
        if self.retention_check_interval_ms < 10 {
            problem(
                "retention_check_interval_ms",
                format!(
                    "{} is below the minimum of 10",
                    self.retention_check_interval_ms
                ),
            );
        }
        if self.tail_cache_bytes > GIB {
            problem(
                "tail_cache_bytes",
                format!("{} is over 1 GiB", self.tail_cache_bytes),
            );
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(LogError::InvalidConfig { problems })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fsync_policy_round_trips_through_text() {
        for text in ["always", "never", "interval:250"] {
            let policy: FsyncPolicy = text.parse().unwrap();
            assert_eq!(policy.to_string(), text);
        }
        assert_eq!(
            "interval:5".parse::<FsyncPolicy>().unwrap(),
            FsyncPolicy::Interval(Duration::from_millis(5))
        );
        assert!("interval:0".parse::<FsyncPolicy>().is_err());
        assert!("interval:x".parse::<FsyncPolicy>().is_err());
        assert!("sometimes".parse::<FsyncPolicy>().is_err());
    }

    #[test]
    fn default_config_is_valid() {
        LogConfig::default().validate().unwrap();
    }

    #[test]
    fn validate_reports_every_problem() {
        let config = LogConfig {
            segment_bytes: 10,
            max_record_bytes: 1,
            retention_check_interval_ms: 0,
            ..LogConfig::default()
        };
        let Err(LogError::InvalidConfig { problems }) = config.validate() else {
            panic!("expected InvalidConfig");
        };
        let fields: Vec<_> = problems.iter().map(|p| p.field).collect();
        assert_eq!(
            fields,
            [
                "segment_bytes",
                "max_record_bytes",
                "retention_check_interval_ms"
            ]
        );
    }
}
