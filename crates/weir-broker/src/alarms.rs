//! Resource alarms: the broker watches the free space of its data directory's file
//! system and its own resident memory, and raises an alarm when either crosses its
//! limit (RabbitMQ's disk and memory alarms). Front ends subscribe with
//! [`crate::Broker::alarms`]: the AMQP front end stops reading from publishing
//! connections and tells them with `connection.blocked`, so producers slow down
//! before the disk is full instead of failing on it.
//!
//! The check runs once a second on a blocking thread (`statvfs` and
//! `/proc/self/statm` are cheap but are system calls).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::watch;

/// Which alarms are raised.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Alarms {
    /// Free space under the data directory is below `Limits::disk_free_min_bytes`.
    pub disk: bool,
    /// The broker's resident memory is above `Limits::memory_high_watermark_bytes`.
    pub memory: bool,
}

impl Alarms {
    /// Why publishers are blocked, or `None` when they are not.
    pub fn reason(&self) -> Option<&'static str> {
        match (self.disk, self.memory) {
            (false, false) => None,
            (true, false) => Some("low on disk"),
            (false, true) => Some("low on memory"),
            (true, true) => Some("low on disk and memory"),
        }
    }
}

/// What the monitor compares against.
#[derive(Clone, Debug)]
pub(crate) struct Thresholds {
    pub(crate) data_dir: PathBuf,
    /// 0: no disk alarm.
    pub(crate) disk_free_min_bytes: u64,
    /// 0: no memory alarm.
    pub(crate) memory_high_watermark_bytes: u64,
}

/// What the monitor last measured, with the limits it compares against: for
/// metrics ([`crate::Broker::resources`]). `u64::MAX`: not known.
#[derive(Debug)]
pub(crate) struct Usage {
    pub(crate) thresholds: Thresholds,
    disk_free_bytes: AtomicU64,
    memory_used_bytes: AtomicU64,
}

impl Usage {
    fn store(&self, measured: Measured) {
        let known = |v: Option<u64>| v.unwrap_or(u64::MAX);
        self.disk_free_bytes
            .store(known(measured.disk_free_bytes), Ordering::Relaxed);
        self.memory_used_bytes
            .store(known(measured.memory_used_bytes), Ordering::Relaxed);
    }

    /// The figures as last measured, with the alarms `alarms`.
    pub(crate) fn resources(&self, alarms: Alarms) -> Resources {
        let known = |v: u64| (v != u64::MAX).then_some(v);
        Resources {
            disk_free_bytes: known(self.disk_free_bytes.load(Ordering::Relaxed)),
            disk_free_limit_bytes: self.thresholds.disk_free_min_bytes,
            memory_used_bytes: known(self.memory_used_bytes.load(Ordering::Relaxed)),
            memory_limit_bytes: self.thresholds.memory_high_watermark_bytes,
            alarms,
        }
    }
}

/// The broker's resources against their alarm limits, as last measured (once a
/// second).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resources {
    /// Free space under the data directory (`None`: could not be measured).
    pub disk_free_bytes: Option<u64>,
    /// The disk alarm's limit (0: none).
    pub disk_free_limit_bytes: u64,
    /// The broker's resident memory (`None`: not measured on this system).
    pub memory_used_bytes: Option<u64>,
    /// The memory alarm's watermark (0: none).
    pub memory_limit_bytes: u64,
    /// The alarms raised.
    pub alarms: Alarms,
}

/// One measurement.
#[derive(Clone, Copy, Debug)]
struct Measured {
    disk_free_bytes: Option<u64>,
    memory_used_bytes: Option<u64>,
}

/// Checks once now, then every second until every receiver is gone.
pub(crate) fn spawn_monitor(thresholds: Thresholds) -> (watch::Receiver<Alarms>, Arc<Usage>) {
    let usage = Arc::new(Usage {
        thresholds,
        disk_free_bytes: AtomicU64::new(u64::MAX),
        memory_used_bytes: AtomicU64::new(u64::MAX),
    });
    let (alarms, measured) = check(&usage.thresholds);
    usage.store(measured);
    let (tx, rx) = watch::channel(alarms);
    if let Some(reason) = rx.borrow().reason() {
        tracing::warn!(
            reason,
            "resource alarm raised at start: publishers will be blocked"
        );
    }
    let monitored = usage.clone();
    tokio::spawn(async move {
        let usage = monitored;
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if tx.is_closed() {
                return;
            }
            let t = usage.thresholds.clone();
            let Ok((now, measured)) = tokio::task::spawn_blocking(move || check(&t)).await else {
                return;
            };
            usage.store(measured);
            let before = *tx.borrow();
            if now != before {
                if let Some(reason) = now.reason() {
                    tracing::warn!(reason, "resource alarm raised: publishers are blocked");
                } else {
                    tracing::info!("resource alarm cleared: publishers may go on");
                }
                tx.send_replace(now);
            }
        }
    });
    (rx, usage)
}

fn check(t: &Thresholds) -> (Alarms, Measured) {
    let measured = Measured {
        disk_free_bytes: free_bytes(&t.data_dir),
        memory_used_bytes: resident_bytes(),
    };
    let disk = t.disk_free_min_bytes > 0
        && measured
            .disk_free_bytes
            .is_some_and(|free| free < t.disk_free_min_bytes);
    let memory = t.memory_high_watermark_bytes > 0
        && measured
            .memory_used_bytes
            .is_some_and(|rss| rss > t.memory_high_watermark_bytes);
    (Alarms { disk, memory }, measured)
}

/// Bytes an unprivileged process may still write under `path`.
fn free_bytes(path: &Path) -> Option<u64> {
    let s = rustix::fs::statvfs(path).ok()?;
    Some(s.f_bavail.saturating_mul(s.f_frsize))
}

/// This process's resident set size (Linux; `None` elsewhere).
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * rustix::param::page_size() as u64)
}

/// The memory this process may use (for the default watermark): the machine's
/// (`/proc/meminfo`), or its cgroup's limit when lower (in a container the
/// machine's figure is not what the process is held to).
pub(crate) fn total_memory_bytes() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    let machine = kib * 1024;
    // cgroup v2, then v1; "max" (or a huge v1 figure) means no limit.
    let cgroup = [
        "/sys/fs/cgroup/memory.max",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ]
    .into_iter()
    .find_map(|path| {
        std::fs::read_to_string(path)
            .ok()?
            .trim()
            .parse::<u64>()
            .ok()
    });
    Some(cgroup.map_or(machine, |limit| limit.min(machine)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_raise_and_zero_disables() {
        let dir = tempfile::tempdir().unwrap();
        let t = |disk, memory| Thresholds {
            data_dir: dir.path().to_owned(),
            disk_free_min_bytes: disk,
            memory_high_watermark_bytes: memory,
        };
        assert_eq!(check(&t(0, 0)).0, Alarms::default());
        assert_eq!(
            check(&t(u64::MAX, 1)).0,
            Alarms {
                disk: true,
                memory: true
            }
        );
        let (alarms, measured) = check(&t(1, u64::MAX));
        assert_eq!(alarms, Alarms::default());
        assert!(measured.disk_free_bytes.is_some() && measured.memory_used_bytes.is_some());
        assert!(free_bytes(dir.path()).unwrap() > 0);
        assert!(resident_bytes().unwrap() > 0);
        assert!(total_memory_bytes().unwrap() > 0);
        assert_eq!(
            Alarms {
                disk: true,
                memory: false
            }
            .reason(),
            Some("low on disk")
        );
    }
}
