//! The file descriptors of `weir serve`: the soft `RLIMIT_NOFILE` is raised to the
//! hard limit at start, and what is left once connections and the broker's own files
//! are reserved is how many files the queues' logs may keep open at once
//! (`weir_log::io::set_open_files_limit`, or `[log] max_open_files` below it).
//!
//! Why: every queue's log has files (its active segment and index, and one per sealed
//! segment), and without a limit ten thousand queues would hold twenty thousand
//! descriptors, nearly all idle, and `open` would fail with EMFILE for connections
//! and queues alike. weir-log's file cache keeps at most the budget open and closes
//! idle files (never one with unsynced writes) to open others, so the number of
//! queues is bounded by `[limits] max_queues`, not by descriptors, and connections
//! always have their share.

/// Files kept for everything but the queues' logs and the connections: stdio, the
/// runtime's epoll and wakers, the two listeners, the data directory's `LOCK`,
/// metadata files being rewritten and their directories synced, and the files that
/// recovery and reads open for a moment.
pub(crate) const FIXED_RESERVE: u64 = 64;

/// The file limits `weir serve` runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileLimits {
    /// The soft `RLIMIT_NOFILE` found at start, when it was raised.
    pub(crate) raised_from: Option<u64>,
    /// The soft limit now (`None`: unlimited).
    pub(crate) limit: Option<u64>,
    /// Files reserved for connections: one per allowed HTTP and AMQP connection, at
    /// most half the limit.
    pub(crate) connections: u64,
    /// What the queues' logs may keep open at once (`None`: no limit).
    pub(crate) budget: Option<u64>,
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (an unlimited hard limit is
/// taken as `/proc/sys/fs/nr_open`, the most the kernel allows) and computes the
/// budget for `max_connections` connections in all.
pub(crate) fn raise_and_budget(max_connections: u64) -> FileLimits {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let found = getrlimit(Resource::Nofile);
    let target = found.maximum.or_else(nr_open);
    let mut raised_from = None;
    let mut limit = found.current;
    if let (Some(current), Some(target)) = (found.current, target)
        && target > current
    {
        let wanted = Rlimit {
            current: Some(target),
            maximum: found.maximum,
        };
        match setrlimit(Resource::Nofile, wanted) {
            Ok(()) => {
                raised_from = Some(current);
                limit = Some(target);
            }
            Err(e) => {
                tracing::warn!(error = %e, current, target, "could not raise the open-file limit");
            }
        }
    }
    let (connections, budget) = match limit {
        Some(limit) => {
            let (connections, budget) = budget(limit, max_connections);
            (connections, Some(budget))
        }
        None => (max_connections, None),
    };
    FileLimits {
        raised_from,
        limit,
        connections,
        budget,
    }
}

/// For a file limit of `limit` and `max_connections` allowed connections: the files
/// reserved for connections (at most half the limit, so logs always get some) and
/// the budget left for the queues' logs.
pub(crate) fn budget(limit: u64, max_connections: u64) -> (u64, u64) {
    let connections = max_connections.min(limit / 2);
    let budget = limit.saturating_sub(FIXED_RESERVE + connections);
    (connections, budget)
}

/// `/proc/sys/fs/nr_open`: the highest file limit the kernel allows.
fn nr_open() -> Option<u64> {
    std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_are_reserved_and_queues_get_the_rest() {
        // The default 1,024 HTTP + 10,000 AMQP connections under a typical systemd
        // limit, then under this machine's 20,000 (half of it at most).
        assert_eq!(budget(524_288, 11_024), (11_024, 524_288 - 64 - 11_024));
        assert_eq!(budget(20_000, 11_024), (10_000, 20_000 - 64 - 10_000));
        // Connections may take at most half: a low limit still leaves queues some.
        assert_eq!(budget(400, 11_024), (200, 400 - 64 - 200));
        // A limit below the fixed reserve leaves nothing: the logs then keep one file
        // open at a time (the cache's least), slow but working.
        assert_eq!(budget(100, 11_024), (50, 0));
    }
}
