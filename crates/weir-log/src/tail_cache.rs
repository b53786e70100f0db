//! The newest batches of a log, kept in memory as the writer made them
//! (`LogConfig::tail_cache_bytes`, off by default).
//!
//! Why: readers that keep up with a stream read what was just appended. From the
//! segment file each such read costs a zeroed buffer, a copy out of the page cache
//! and a checksum pass, per reader: ten consumer groups paid that ten times for every
//! appended byte and took the CPU the appender needed (docs/benchmarks.md
//! "Streams"). Served from here, a read of the tail is a few reference-count
//! increments. The cache holds a contiguous run of whole batches ending at the
//! newest one written; readers never see past the watermark they took, so a batch
//! cached before it is published stays invisible until it is.

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};

use bytes::Bytes;

use crate::record::ReadLimits;
use crate::stored::StoredBatches;

/// One cached batch.
#[derive(Debug)]
struct Cached {
    base: u64,
    count: u32,
    bytes: Bytes,
}

impl Cached {
    fn next(&self) -> u64 {
        self.base + u64::from(self.count)
    }
}

#[derive(Debug, Default)]
struct Run {
    batches: VecDeque<Cached>,
    bytes: usize,
}

/// The cache of one log.
#[derive(Debug)]
pub(crate) struct TailCache {
    cap: usize,
    run: Mutex<Run>,
}

impl TailCache {
    /// A cache of at most `cap` bytes of batches (0: off).
    pub(crate) fn new(cap: usize) -> TailCache {
        TailCache {
            cap,
            run: Mutex::new(Run::default()),
        }
    }

    pub(crate) fn enabled(&self) -> bool {
        self.cap > 0
    }

    pub(crate) fn cap(&self) -> usize {
        self.cap
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Run> {
        // Every change under the lock is a push or a pop: a panic cannot leave the
        // run half-changed.
        self.run.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds the batch of `count` records at `base`, just written; the oldest go to
    /// keep the cap. A batch that does not continue the run starts a new one; one
    /// larger than the cap empties it (so the run stays contiguous).
    pub(crate) fn push(&self, base: u64, count: u32, bytes: Bytes) {
        let mut run = self.lock();
        let continues = run.batches.back().is_none_or(|last| last.next() == base);
        if !continues || bytes.len() > self.cap {
            run.batches.clear();
            run.bytes = 0;
            if bytes.len() > self.cap {
                return;
            }
        }
        run.bytes += bytes.len();
        run.batches.push_back(Cached { base, count, bytes });
        while run.bytes > self.cap {
            let Some(old) = run.batches.pop_front() else {
                break;
            };
            run.bytes -= old.bytes.len();
        }
    }

    /// Forgets everything (after the log cut batches it had written).
    pub(crate) fn clear(&self) {
        let mut run = self.lock();
        run.batches.clear();
        run.bytes = 0;
    }

    /// The read [`crate::shared::Shared::read_stored`] would answer from `from`
    /// (below `visible_end`, the watermark the reader took), if the cache holds the
    /// batch with `from` in it; `None` sends the reader to the files.
    pub(crate) fn read(
        &self,
        from: u64,
        visible_end: u64,
        limits: &ReadLimits,
    ) -> Option<StoredBatches> {
        let run = self.lock();
        let first = run.batches.front()?;
        if from < first.base {
            return None;
        }
        let at = run.batches.partition_point(|b| b.next() <= from);
        let mut out = StoredBatches::empty(crate::record::Offset(from));
        for batch in run.batches.range(at..) {
            if batch.next() > visible_end {
                break;
            }
            if !out.batches.is_empty()
                && out.bytes.saturating_add(batch.bytes.len()) > limits.max_bytes
            {
                break;
            }
            out.push(batch.base, batch.count, batch.bytes.clone());
            if out.records >= limits.max_records {
                break;
            }
        }
        // Nothing visible from `from` yet (or it is past the run): the files decide.
        if out.batches.is_empty() {
            return None;
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache_with(cap: usize, batches: &[(u64, u32, usize)]) -> TailCache {
        let cache = TailCache::new(cap);
        for (base, count, len) in batches {
            cache.push(*base, *count, Bytes::from(vec![0u8; *len]));
        }
        cache
    }

    #[test]
    fn reads_whole_batches_within_limits_and_the_visible_end() {
        let cache = cache_with(1000, &[(0, 10, 100), (10, 10, 100), (20, 10, 100)]);
        let all = ReadLimits::new(1000, 1000);
        let read = cache.read(15, 30, &all).expect("cached");
        assert_eq!((read.records, read.next.0, read.batches.len()), (15, 30, 2));
        // Not yet published: invisible.
        let read = cache.read(15, 20, &all).expect("cached");
        assert_eq!(read.next.0, 20);
        assert!(cache.read(20, 20, &all).is_none());
        // Limits: records, then bytes (at least one batch).
        let read = cache
            .read(0, 30, &ReadLimits::new(5, 1000))
            .expect("cached");
        assert_eq!(read.next.0, 10);
        let read = cache
            .read(0, 30, &ReadLimits::new(100, 150))
            .expect("cached");
        assert_eq!(read.next.0, 10);
    }

    #[test]
    fn keeps_a_contiguous_run_within_the_cap() {
        let cache = cache_with(250, &[(0, 10, 100), (10, 10, 100), (20, 10, 100)]);
        let all = ReadLimits::new(1000, 1000);
        assert!(cache.read(5, 30, &all).is_none(), "the oldest went");
        assert_eq!(cache.read(10, 30, &all).expect("cached").next.0, 30);
        // A gap (the log cut and rewrote) starts a new run.
        cache.push(25, 5, Bytes::from(vec![0u8; 10]));
        assert!(cache.read(10, 30, &all).is_none());
        assert_eq!(cache.read(25, 30, &all).expect("cached").records, 5);
        // Larger than the cap: not kept, and the run is gone.
        cache.push(30, 5, Bytes::from(vec![0u8; 300]));
        assert!(cache.read(25, 35, &all).is_none());
        cache.clear();
        assert!(cache.read(25, 35, &all).is_none());
    }
}
