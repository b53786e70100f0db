//! What the handle ([`crate::FileLog`]), the writer thread, the sync thread and
//! readers share: the directory, the segment map, the watermark and the counters
//! (a leaf module, so the writer and syncer need not import the handle's module),
//! and the size of the writer and sync pools.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

use crate::config::LogConfig;
use crate::error::{Corruption, LogError, Result};
use crate::io::Fs;
use crate::message_log::Watermark;
use crate::record::{Offset, ReadLimits, Record};
use crate::segment::{ReadFlow, Segment};
use crate::stored::{self, StoredBatches};
use crate::tail_cache::TailCache;

/// Wall-clock milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Threads per pool set by [`set_pool_threads`]; 0: not set.
static POOL_THREADS: AtomicUsize = AtomicUsize::new(0);

/// Sets how many threads the writer pool and the sync pool each get (`None`: the
/// default, one per core, at least 2 and at most 32). The pools start when the first
/// log opens and keep their size for the life of the process, so this counts only
/// before that; it returns whether it was in time.
pub fn set_pool_threads(threads: Option<usize>) -> bool {
    POOL_THREADS.store(threads.unwrap_or(0), Ordering::Relaxed);
    !POOLS_STARTED.load(Ordering::Relaxed)
}

/// Set when a pool reads its size.
static POOLS_STARTED: AtomicBool = AtomicBool::new(false);

/// Threads in a pool: as [`set_pool_threads`] set, else `WEIR_LOG_THREADS` (tests,
/// and hosts whose core count says little about their disks), else one per core, at
/// least 2 (so one slow log cannot hold every other) and at most 32 (more threads
/// only add syncs contending for the same disks). Read once, when the first log opens,
/// for both the writer and the sync pool.
pub(crate) fn default_threads() -> usize {
    POOLS_STARTED.store(true, Ordering::Relaxed);
    let set = POOL_THREADS.load(Ordering::Relaxed);
    if set > 0 {
        return set;
    }
    if let Some(n) = std::env::var("WEIR_LOG_THREADS")
        .ok()
        .and_then(|n| n.parse::<usize>().ok())
        .filter(|n| *n > 0)
    {
        return n;
    }
    std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 32))
}

/// State shared by the handle, the writer thread and readers.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) dir: PathBuf,
    pub(crate) fs: Arc<dyn Fs>,
    pub(crate) config: LogConfig,
    /// Every segment by base offset; the last one is active.
    pub(crate) segments: RwLock<BTreeMap<u64, Arc<Segment>>>,
    /// First and next offsets as readers may see them.
    pub(crate) watermark: watch::Sender<Watermark>,
    pub(crate) counters: Counters,
    /// The sync pool thread that syncs this log once it is pipelined (`usize::MAX`
    /// before): which logs share their syncs, for tests and debugging.
    pub(crate) sync_thread: AtomicUsize,
    /// The newest batches in memory, for readers at the tail (`tail_cache_bytes`).
    pub(crate) tail: TailCache,
}

impl Shared {
    pub(crate) fn segments_snapshot(&self) -> BTreeMap<u64, Arc<Segment>> {
        self.segments
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The segment holding `offset` and the base of the one after it; `None` if no
    /// segment starts at or below `offset` (retention or a trim just removed it).
    /// One map lookup per segment a read visits, however long the log is.
    fn segment_at(&self, offset: u64) -> Option<(Arc<Segment>, Option<u64>)> {
        // A panic elsewhere cannot leave the map half-changed (every change is one
        // insert or remove), so a poisoned lock is used as it is: one failure must
        // not fail every later read.
        let map = self.segments.read().unwrap_or_else(PoisonError::into_inner);
        let (_, segment) = map.range(..=offset).next_back()?;
        let next_base = map.range(offset + 1..).next().map(|(base, _)| *base);
        Some((segment.clone(), next_base))
    }

    fn out_of_range(&self, requested: u64) -> LogError {
        let now = *self.watermark.borrow();
        LogError::OffsetOutOfRange {
            requested,
            first: now.start,
            next: now.next,
        }
    }

    pub(crate) fn read(&self, from: u64, limits: ReadLimits) -> Result<Vec<Record>> {
        let mut out = Vec::new();
        let mut used = 0;
        self.walk(from, |segment, at, end| {
            if limits.max_records == 0 {
                return Ok(ReadFlow::Done);
            }
            segment.read(at, end, &limits, &mut out, &mut used)
        })?;
        Ok(out)
    }

    /// The stored batches from the one holding `from` on, as they are on disk
    /// ([`StoredBatches`]). The tail cache is the caller's to try first
    /// ([`Shared::read_stored_cached`]).
    pub(crate) fn read_stored(&self, from: u64, limits: ReadLimits) -> Result<StoredBatches> {
        let mut out = StoredBatches::empty(Offset(from));
        self.walk(from, |segment, at, end| {
            stored::read_segment(segment, at, end, &limits, &mut out)
        })?;
        Ok(out)
    }

    /// What `read_stored` answers, when the tail cache holds it (no file, no
    /// blocking: callers may run it on any thread).
    pub(crate) fn read_stored_cached(
        &self,
        from: u64,
        limits: ReadLimits,
    ) -> Option<StoredBatches> {
        if !self.tail.enabled() || limits.max_records == 0 {
            return None;
        }
        let mark = *self.watermark.borrow();
        if from < mark.start {
            return None;
        }
        self.tail.read(from, mark.next, &limits)
    }

    /// What `read` answers, when the tail cache holds the batch with `from` (no
    /// file, no blocking: callers may run it on any thread).
    pub(crate) fn read_cached(&self, from: u64, limits: ReadLimits) -> Option<Result<Vec<Record>>> {
        // Whole batches holding `max_records` records: the byte limit is applied per
        // record below, as the files' read does.
        let records = ReadLimits::records(limits.max_records);
        let stored = self.read_stored_cached(from, records)?;
        Some(
            stored
                .records_within(limits)
                .map_err(|reason| LogError::corrupt(&self.dir, 0, reason)),
        )
    }

    /// Runs `visit` on each segment from the one holding `from`, with where to start
    /// in it and the offset where its readable part ends, until it is done or the
    /// committed data ends. Checks `from` against the watermark and that each sealed
    /// segment ends where the next one begins.
    fn walk(
        &self,
        from: u64,
        mut visit: impl FnMut(&Segment, u64, u64) -> Result<ReadFlow>,
    ) -> Result<()> {
        let mark = *self.watermark.borrow();
        if from < mark.start || from > mark.next {
            return Err(LogError::OffsetOutOfRange {
                requested: from,
                first: mark.start,
                next: mark.next,
            });
        }
        if from == mark.next {
            return Ok(());
        }
        let mut at = from;
        loop {
            let Some((segment, next_base)) = self.segment_at(at) else {
                return Err(self.out_of_range(from));
            };
            let end = next_base.map_or(mark.next, |b| b.min(mark.next));
            match visit(&segment, at, end) {
                Ok(ReadFlow::Done) => return Ok(()),
                Ok(ReadFlow::Exhausted { next_offset }) => match next_base {
                    None => return Ok(()),
                    // A sealed segment must end exactly where the next one begins.
                    Some(base) if next_offset != base => {
                        return Err(LogError::corrupt(
                            &segment.log_path,
                            segment.committed_len(),
                            Corruption::OffsetGap {
                                expected: next_offset,
                                found: base,
                            },
                        ));
                    }
                    Some(base) if base >= mark.next => return Ok(()),
                    Some(base) => at = base,
                },
                Err(e) => {
                    // Retention may have removed the segment under us.
                    if from < self.watermark.borrow().start {
                        return Err(self.out_of_range(from));
                    }
                    return Err(e);
                }
            }
        }
    }

    pub(crate) fn offset_for_timestamp(&self, timestamp_ms: i64) -> Result<Option<Offset>> {
        let mark = *self.watermark.borrow();
        // Every segment from the one holding the start (if retention just removed it,
        // from the next).
        let segments: Vec<Arc<Segment>> = {
            let map = self.segments.read().unwrap_or_else(PoisonError::into_inner);
            let first = map.range(..=mark.start).next_back().map_or(0, |(b, _)| *b);
            map.range(first..).map(|(_, s)| s.clone()).collect()
        };
        for (i, segment) in segments.iter().enumerate() {
            let next_base = segments.get(i + 1).map(|s| s.base);
            if next_base.is_some() && segment.sealed_max_timestamp()? < timestamp_ms {
                continue;
            }
            let end = next_base.map_or(mark.next, |b| b.min(mark.next));
            if let Some(offset) = segment.find_timestamp(timestamp_ms, mark.start, end)? {
                return Ok(Some(Offset(offset)));
            }
        }
        Ok(None)
    }
}

/// Counters the writer keeps for [`LogStats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) appends: AtomicU64,
    pub(crate) commit_groups: AtomicU64,
    pub(crate) data_syncs: AtomicU64,
}
