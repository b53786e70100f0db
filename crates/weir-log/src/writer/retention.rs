//! Trims and retention: moving the first offset up durably and removing the sealed
//! segments below it, and freeing their space off the writer.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;

use super::{Removal, RetentionReport, Writer};
use crate::error::{LogError, Result};
use crate::meta;
use crate::record::Offset;
use crate::segment::Segment;
use crate::syncer::Job;

impl Writer {
    /// A pipelined log hands a trim that moves the start to its sync thread (see
    /// `syncer`); the reply comes back when it cannot.
    pub(super) fn post_trim(
        &mut self,
        before: u64,
        reply: oneshot::Sender<Result<()>>,
    ) -> Option<oneshot::Sender<Result<()>>> {
        match &self.syncer {
            Some(syncer) if before <= self.next_offset && before > self.start_offset => {
                syncer.post(Job::Trim { before, reply });
                self.trim_posted = true;
                None
            }
            _ => Some(reply),
        }
    }

    pub(super) fn trim(&mut self, before: u64) -> Result<()> {
        if before > self.next_offset {
            return Err(LogError::OffsetOutOfRange {
                requested: before,
                first: self.start_offset,
                next: self.next_offset,
            });
        }
        if before <= self.start_offset {
            return Ok(());
        }
        if let Err(e) = meta::write(&*self.shared.fs, &self.shared.dir, before) {
            // The rename may have happened before the failure: believe the disk, so the
            // first offset never moves back after a restart.
            if let Ok(Some(on_disk)) = meta::read(&*self.shared.fs, &self.shared.dir)
                && on_disk > self.start_offset
                && on_disk <= self.next_offset
            {
                self.start_offset = on_disk;
                self.publish();
            }
            return Err(e);
        }
        self.start_offset = before;
        self.publish();
        // The trim is durable now; reclaiming its space is best effort (the next trim,
        // retention pass or open finishes the job).
        let doomed = self.sealed_segments_where(|_, end| end <= before);
        if let Err(e) = self.remove_segments(doomed, Removal::BelowDurableStart) {
            tracing::warn!(error = %e, "trimmed, but could not remove the segments below yet");
        }
        Ok(())
    }

    pub(super) fn enforce_retention(&mut self, now_ms: i64) -> Result<RetentionReport> {
        let retention = self.retention;
        let mut doomed = Vec::new();
        if let Some(max_age) = retention.max_age_ms {
            let cutoff = now_ms.saturating_sub(i64::try_from(max_age).unwrap_or(i64::MAX));
            for segment in self.sealed_segments_where(|_, _| true) {
                match segment.sealed_max_timestamp() {
                    Ok(newest) if newest < cutoff => doomed.push(segment),
                    Ok(_) => break,
                    Err(e) => {
                        // Its age is unknown: keep it (and everything newer), but let
                        // the size limit still apply.
                        tracing::warn!(error = %e, segment = %segment.log_path.display(), "cannot tell a segment's age; retention by age stops there");
                        break;
                    }
                }
            }
        }
        if let Some(max_bytes) = retention.max_bytes {
            let segments = self.shared.segments_snapshot();
            let mut total: u64 = segments.values().map(|s| s.committed_len()).sum();
            total -= doomed.iter().map(|s| s.committed_len()).sum::<u64>();
            for segment in self
                .sealed_segments_where(|_, _| true)
                .into_iter()
                .skip(doomed.len())
            {
                if total <= max_bytes {
                    break;
                }
                total -= segment.committed_len();
                doomed.push(segment);
            }
        }
        let segments_removed = doomed.len();
        let removed = self.remove_segments(doomed, Removal::Durable)?;
        Ok(RetentionReport {
            segments_removed,
            bytes_removed: removed,
            first_offset: Offset(self.shared.watermark.borrow().start),
        })
    }

    /// Sealed segments, oldest first, for which `keep(base, end_offset)` holds.
    pub(super) fn sealed_segments_where(
        &self,
        keep: impl Fn(u64, u64) -> bool,
    ) -> Vec<Arc<Segment>> {
        let segments = self.shared.segments_snapshot();
        let bases: Vec<u64> = segments.keys().copied().collect();
        segments
            .values()
            .zip(bases.iter().skip(1))
            .filter(|(segment, end)| keep(segment.base, **end))
            .map(|(segment, _)| segment.clone())
            .collect()
    }

    /// Removes sealed segments oldest first. What makes the new first offset durable
    /// is `removal`: a trim wrote it to `log.meta` already, so a removal the crash
    /// undoes is redone at open (segments below the start offset are removed), and
    /// no directory sync is needed; retention syncs the directory after each segment,
    /// so a crash can only leave a suffix of the log, never a gap. The syncs a trim
    /// saves here ran on the writer, at a queue's pace, and held its deliveries.
    pub(super) fn remove_segments(
        &mut self,
        doomed: Vec<Arc<Segment>>,
        removal: Removal,
    ) -> Result<u64> {
        if doomed.is_empty() {
            return Ok(0);
        }
        // A removal may reach the disk (with a directory sync, or any journal
        // commit): never before the headers of a segment a pipelined roll just
        // created are durable, or recovery could find that segment first and
        // headless.
        self.wait_for_seal()?;
        let mut bytes = 0;
        for segment in &doomed {
            debug_assert!(segment.base != self.active.base, "never the active segment");
            let shared = self.shared.clone();
            // Durable removal first: the first offset readers see must never move
            // back after a crash. Readers holding the segment keep reading it through
            // their open file until they are done.
            for path in [&segment.log_path, &segment.index_path] {
                match shared.fs.remove(path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(LogError::io("remove", path, e)),
                }
            }
            if removal == Removal::Durable {
                shared
                    .fs
                    .sync_dir(&shared.dir)
                    .map_err(|e| LogError::io("sync", &shared.dir, e))?;
            }
            let next_base = shared
                .segments
                .read()
                .expect("invariant: segment map lock never poisoned")
                .range(segment.base + 1..)
                .next()
                .map(|(base, _)| *base);
            if let Some(next_base) = next_base {
                self.start_offset = self.start_offset.max(next_base);
            }
            self.publish();
            shared
                .segments
                .write()
                .expect("invariant: segment map lock never poisoned")
                .remove(&segment.base);
            bytes += segment.committed_len();
            tracing::debug!(base = segment.base, "removed a segment");
        }
        close_elsewhere(doomed);
        Ok(bytes)
    }
}

/// Lets removed segments free their disk space on a short-lived thread. Freeing the
/// blocks of an unlinked 64 MiB segment (at its last `close`) took 37-42 ms on the
/// writer thread, holding every delivery of the queue that long (`strace -T` on the
/// writer during the steady-rate benchmark). On its own thread, done at once, it
/// still held the file system's journal long enough to stall the writer's next
/// writes, so the thread frees the space in steps: once no reader holds the segment
/// any more, it truncates the file [`RELEASE_STEP`] at a time, pausing between.
fn close_elsewhere(segments: Vec<Arc<Segment>>) {
    if segments.is_empty() {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("weir-log-close".into())
        .spawn(move || segments.into_iter().for_each(release_gradually));
    if let Err(e) = spawned {
        // The segments were closed here, as the closure was dropped.
        tracing::debug!(error = %e, "closed removed segments on the writer");
    }
}

/// Bytes of a removed segment freed at a time, and the pause between steps.
const RELEASE_STEP: u64 = 4 << 20;
const RELEASE_PAUSE: Duration = Duration::from_millis(2);

fn release_gradually(segment: Arc<Segment>) {
    // A reader that took the segment before its removal may still be reading it:
    // truncating under it would cut its read short. Wait (a while) for it to finish.
    let mut segment = segment;
    for _ in 0..500 {
        match Arc::try_unwrap(segment) {
            Ok(owned) => {
                let file = owned.file.clone();
                drop(owned);
                if Arc::strong_count(&file) == 1 {
                    let mut len = file.len().unwrap_or(0);
                    while len > RELEASE_STEP {
                        len -= RELEASE_STEP;
                        if file.set_len(len).is_err() {
                            break;
                        }
                        std::thread::sleep(RELEASE_PAUSE);
                    }
                }
                return;
            }
            Err(shared) => {
                segment = shared;
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}
