//! The log's one error type.
//!
//! Every variant carries what an operator needs to act on it (the file, the position,
//! the limit). Errors are `Clone` because one failed write fails every append of its
//! commit group, and each appender gets its own copy; the `io::Error` inside is shared
//! through an `Arc` for that reason.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

/// Result alias for the log.
pub type Result<T, E = LogError> = std::result::Result<T, E>;

/// Everything that can go wrong in the log.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LogError {
    /// A file operation failed.
    #[error("could not {op} {path}: {source}")]
    Io {
        /// What the log was doing (`"write"`, `"fsync"`, `"open"`...).
        op: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: Arc<io::Error>,
    },

    /// The disk (or quota) is full. The append that hit it was rolled back; the log
    /// stays readable, and appendable once space is freed.
    #[error("no space left on the device while trying to {op} {path}")]
    NoSpace {
        /// What the log was doing.
        op: &'static str,
        /// The file involved.
        path: PathBuf,
    },

    /// Stored bytes failed a check. Recovery repairs a torn tail by itself; this error
    /// means damage that recovery may not silently cut (inside a sealed segment, or data
    /// that was already acknowledged).
    #[error("corrupt data in {path} at byte {position}: {reason}")]
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// Byte position of the first bad byte range found.
        position: u64,
        /// What check failed.
        reason: Corruption,
    },

    /// A file was written by a newer (or unknown) version of the format.
    #[error("{path} has format version {found}; this build reads versions up to {supported}")]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// Version found in its header.
        found: u16,
        /// The version this build writes and reads.
        supported: u16,
    },

    /// A record or batch is over the configured maximum.
    #[error("{what} of {size} bytes is over the limit of {limit} bytes")]
    TooLarge {
        /// `"record"`, `"batch"`, `"header name"`...
        what: &'static str,
        /// Its size.
        size: u64,
        /// The configured (or format) limit.
        limit: u64,
    },

    /// The requested offset is not in the log: below the first retained offset, or
    /// beyond the next offset to be written.
    #[error("offset {requested} is outside the log, which holds offsets {first}..{next}")]
    OffsetOutOfRange {
        /// The offset asked for.
        requested: u64,
        /// First offset still in the log.
        first: u64,
        /// The offset the next append will get.
        next: u64,
    },

    /// An append with no records.
    #[error("an append needs at least one record")]
    EmptyBatch,

    /// The configuration has one or more problems (all of them are listed).
    #[error("invalid log configuration: {}", ConfigProblems(problems))]
    InvalidConfig {
        /// Every problem found.
        problems: Vec<ConfigProblem>,
    },

    /// Another process (or another `FileLog` in this one) has the directory open.
    #[error("the log directory {path} is in use by another writer")]
    Locked {
        /// The log directory.
        path: PathBuf,
    },

    /// The log was closed; nothing more can be appended.
    #[error("the log is closed")]
    Closed,

    /// The log can no longer vouch for its tail: a sync of data that was already
    /// acknowledged or readable failed (after a failed `fdatasync` the kernel may
    /// have dropped the dirty pages, and a retried sync would falsely succeed), or
    /// the removal of a half-made segment could not be synced. It refuses appends
    /// until it is reopened, which runs recovery. Reads of committed data still work.
    #[error(
        "the log refuses appends until it is reopened, after a failed {op} of {path}: {source}"
    )]
    Failed {
        /// The operation whose failure could not be undone.
        op: &'static str,
        /// The file involved.
        path: PathBuf,
        /// The error from the rollback attempt.
        #[source]
        source: Arc<io::Error>,
    },

    /// A failed write left something the log must clean up before it takes appends
    /// again: the failed bytes past the end of the active segment (the truncation
    /// failed too), or a half-made segment from a failed roll. The log retries the
    /// cleanup by itself before each append and every 100 ms, and takes appends again
    /// once it works; no reopen is needed. Reads of committed data still work.
    #[error("the log refuses appends until it can {op} {path} (it retries by itself): {source}")]
    Repairing {
        /// The cleanup that failed.
        op: &'static str,
        /// The file involved.
        path: PathBuf,
        /// Why the cleanup failed.
        #[source]
        source: Arc<io::Error>,
    },
}

impl LogError {
    /// Whether the disk (or quota) being full is the cause: [`LogError::NoSpace`],
    /// or another error whose operating-system error is ENOSPC or EDQUOT.
    pub fn is_no_space(&self) -> bool {
        match self {
            LogError::NoSpace { .. } => true,
            LogError::Io { source, .. }
            | LogError::Failed { source, .. }
            | LogError::Repairing { source, .. } => is_no_space(source),
            _ => false,
        }
    }

    /// Wraps an I/O error with its context. Out-of-space errors become
    /// [`LogError::NoSpace`] so callers can raise a disk alarm without string matching.
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        let path = path.into();
        if is_no_space(&source) {
            LogError::NoSpace { op, path }
        } else {
            LogError::Io {
                op,
                path,
                source: Arc::new(source),
            }
        }
    }

    pub(crate) fn corrupt(path: impl Into<PathBuf>, position: u64, reason: Corruption) -> Self {
        LogError::Corrupt {
            path: path.into(),
            position,
            reason,
        }
    }
}

/// ENOSPC (28) and EDQUOT (122) both mean "no room for this write".
fn is_no_space(error: &io::Error) -> bool {
    error.kind() == io::ErrorKind::StorageFull
        || error.kind() == io::ErrorKind::QuotaExceeded
        || matches!(error.raw_os_error(), Some(28 | 122))
}

/// Which integrity check failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Corruption {
    /// The file does not start with the magic bytes of its kind.
    BadMagic,
    /// A file header's checksum does not match.
    HeaderChecksum,
    /// A file header names a different base offset than the file name.
    HeaderBaseOffset {
        /// Base offset in the file name.
        expected: u64,
        /// Base offset in the header.
        found: u64,
    },
    /// A batch's length field is impossible (smaller than a header, or past the limit).
    BatchLength(u32),
    /// A batch's checksum does not match its bytes.
    BatchChecksum,
    /// A batch has an unknown format version byte.
    BatchVersion(u8),
    /// A batch from outside the log has flags or reserved bytes set (this version
    /// defines none).
    BatchFlags(u8),
    /// A batch starts at another offset than the one before it ended at.
    OffsetGap {
        /// The offset the batch should start at.
        expected: u64,
        /// The offset it claims.
        found: u64,
    },
    /// Offsets past what a log holds: a batch whose base offset (which its
    /// checksum does not cover) and record count overflow a u64, or a segment name
    /// or stored start offset past 2^62 (nothing writes one). The offset is damaged.
    OffsetOverflow {
        /// The offset claimed.
        base_offset: u64,
        /// How many records follow it (0 for a segment name or a start offset).
        count: u32,
    },
    /// The file ends in the middle of a batch that should be complete.
    Truncated,
    /// A record inside a checksummed batch does not parse.
    RecordFraming,
    /// A compressed (Kafka) batch does not inflate with its codec.
    Compression {
        /// Kafka's codec number (1 gzip, 2 snappy, 3 lz4, 4 zstd).
        codec: u8,
        /// What the decoder said.
        reason: String,
    },
    /// A compressed batch inflates past the bytes allowed.
    Inflated {
        /// The bytes allowed.
        limit: usize,
    },
}

impl fmt::Display for Corruption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Corruption::BadMagic => f.write_str("bad magic bytes"),
            Corruption::HeaderChecksum => f.write_str("file header checksum mismatch"),
            Corruption::HeaderBaseOffset { expected, found } => write!(
                f,
                "file header names base offset {found}, file name says {expected}"
            ),
            Corruption::BatchLength(len) => write!(f, "impossible batch length {len}"),
            Corruption::BatchChecksum => f.write_str("batch checksum mismatch"),
            Corruption::BatchVersion(v) => write!(f, "unknown batch format version {v}"),
            Corruption::BatchFlags(flags) => {
                write!(
                    f,
                    "batch flags {flags} or its reserved bytes are set (none is defined)"
                )
            }
            Corruption::OffsetGap { expected, found } => {
                write!(f, "batch starts at offset {found}, expected {expected}")
            }
            Corruption::OffsetOverflow { base_offset, count } => write!(
                f,
                "offset {base_offset} (and {count} records after it) is past what a log holds"
            ),
            Corruption::Truncated => f.write_str("file ends inside a batch"),
            Corruption::RecordFraming => f.write_str("record framing inconsistent"),
            Corruption::Compression { codec, reason } => {
                write!(
                    f,
                    "compressed batch (codec {codec}) does not inflate: {reason}"
                )
            }
            Corruption::Inflated { limit } => {
                write!(f, "compressed batch inflates past {limit} bytes")
            }
        }
    }
}

/// One problem in a [`crate::LogConfig`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// The field's name as written in configuration files.
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

struct ConfigProblems<'a>(&'a [ConfigProblem]);

impl fmt::Display for ConfigProblems<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{}: {}", p.field, p.reason)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enospc_maps_to_no_space() {
        let e = LogError::io("write", "/x", io::Error::from_raw_os_error(28));
        assert!(matches!(e, LogError::NoSpace { op: "write", .. }), "{e:?}");
        let e = LogError::io("write", "/x", io::Error::from_raw_os_error(5));
        assert!(matches!(e, LogError::Io { .. }), "{e:?}");
    }

    #[test]
    fn config_problems_are_all_listed() {
        let e = LogError::InvalidConfig {
            problems: vec![
                ConfigProblem {
                    field: "a",
                    reason: "x".into(),
                },
                ConfigProblem {
                    field: "b",
                    reason: "y".into(),
                },
            ],
        };
        assert_eq!(e.to_string(), "invalid log configuration: a: x; b: y");
    }
}
