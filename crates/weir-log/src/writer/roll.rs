//! Segment rolls: sealing the active segment and starting the next one, synced on
//! the writer (`roll`) or handed to the sync thread (`roll_pipelined`, see
//! `syncer::Seal`).

use std::sync::Arc;

use super::{Durably, Writer};
use crate::error::{LogError, Result};
use crate::header::FILE_HEADER_LEN;
use crate::index::{ENTRY_LEN, IndexEntry};
use crate::io::FileIo;
use crate::segment::Segment;
use crate::shared::now_ms;
use crate::syncer::{Job, Seal, SyncJob};

impl Writer {
    /// Seals the active segment and starts a new one at the next offset.
    pub(super) fn roll(&mut self) -> Result<()> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        if self.next_offset == self.active.base {
            // Nothing to seal; a new segment would reuse this one's base and files.
            return Ok(());
        }
        if self.syncer.is_some() {
            return self.roll_pipelined();
        }
        self.sync_active()?;
        debug_assert_eq!(self.write_pos, self.synced_pos);
        self.add_end_entry()?;
        // The end entry points at the synced end of the segment: persist it too.
        self.persist_index_entries_below(self.synced_pos + 1)?;
        self.sync_index()?;

        let (segment, index_file) = self.create_next_segment(Durably::Now)?;
        self.start_segment(segment, index_file);
        debug_assert!(self.unpersisted.is_empty());
        Ok(())
    }

    /// A pipelined log's roll: the writer creates the next segment's files and
    /// writes on into them at once; the sync thread makes the roll durable (see
    /// `syncer::Seal`) before it answers any append of the new segment. Before, the
    /// roll's five syncs ran here, and one slow `fdatasync` among them held every
    /// delivery of the queue for its length.
    pub(super) fn roll_pipelined(&mut self) -> Result<()> {
        // One roll at a time on its way to disk: recovery repairs only the last
        // sealed segment (see `recovery`).
        self.wait_for_seal()?;
        self.add_end_entry()?;
        let base = self.next_offset;
        let (segment, index_file) = self.create_next_segment(Durably::Later)?;
        let seal = Seal {
            index_file: self.index_file.clone(),
            index_path: self.active.index_path.clone(),
            index_len: self.index_file_len,
            entries: crate::segment::encode_entries(&std::mem::take(&mut self.unpersisted)),
            new_base: base,
            new_log: segment.file.clone(),
            new_log_path: segment.log_path.clone(),
            new_index: index_file.clone(),
            new_index_path: segment.index_path.clone(),
        };
        let job = SyncJob {
            file: self.active.file.clone(),
            path: self.active.log_path.clone(),
            base: self.active.base,
            upto: self.write_pos,
            replies: Vec::new(),
            seal: Some(Box::new(seal)),
        };
        if let Some(syncer) = &self.syncer {
            syncer.post(Job::Sync(job));
        }
        self.sealing = Some(base);
        self.start_segment(segment, index_file);
        Ok(())
    }

    /// Creates the segment that starts at the next offset: synced with the directory
    /// (`Now`), or for the sync thread to make durable (`Later`). A failure removes
    /// what was made.
    pub(super) fn create_next_segment(
        &mut self,
        durably: Durably,
    ) -> Result<(Segment, Arc<dyn FileIo>)> {
        let shared = &self.shared;
        let base = self.next_offset;
        let (fs, dir, interval) = (
            shared.fs.clone(),
            &shared.dir,
            shared.config.index_interval_bytes,
        );
        let created = match durably {
            Durably::Now => Segment::create(fs, dir, base, now_ms(), interval).and_then(|made| {
                shared
                    .fs
                    .sync_dir(dir)
                    .map_err(|e| LogError::io("sync", dir, e))?;
                Ok(made)
            }),
            Durably::Later => Segment::create_unsynced(fs, dir, base, now_ms(), interval),
        };
        created.inspect_err(|_| self.discard_half_made_segment(base))
    }

    /// Adds the end entry to the active segment's index: it points at the end of the
    /// segment, so recovery can check cheaply that the next segment joins up.
    pub(super) fn add_end_entry(&mut self) -> Result<()> {
        let end = IndexEntry {
            rel_offset: (self.next_offset - self.active.base) as u32,
            position: self.write_pos as u32,
            max_ts_before: self.max_timestamp_ms,
        };
        if self.active.with_index(|i| i.last().copied())? != Some(end) {
            self.active.extend_index(&[end]);
            self.unpersisted.push(end);
        }
        Ok(())
    }

    /// Makes `segment` the active one, empty.
    pub(super) fn start_segment(&mut self, segment: Segment, index_file: Arc<dyn FileIo>) {
        let segment = Arc::new(segment);
        self.shared
            .segments
            .write()
            .expect("invariant: segment map lock never poisoned")
            .insert(segment.base, segment.clone());
        tracing::debug!(
            base = segment.base,
            sealed = self.active.base,
            "rolled to a new segment"
        );
        self.active = segment;
        self.index_file = index_file;
        self.index_file_len = FILE_HEADER_LEN as u64;
        self.index_synced_len = self.index_file_len;
        self.write_pos = FILE_HEADER_LEN as u64;
        self.synced_pos = self.write_pos;
        self.max_timestamp_ms = i64::MIN;
        self.bytes_since_entry = 0;
        debug_assert_eq!(ENTRY_LEN, 20);
    }

    /// Waits until the sync thread has made the last pipelined roll durable.
    pub(super) fn wait_for_seal(&mut self) -> Result<()> {
        if let (Some(base), Some(syncer)) = (self.sealing, &self.syncer) {
            let sealed = syncer.progress().synced.is_some_and(|(b, _)| b >= base);
            if !sealed {
                syncer.wait_idle();
            }
        }
        self.sealing = None;
        let failed = self
            .syncer
            .as_ref()
            .and_then(|s| s.progress().failed.clone());
        if let Some(e) = failed
            && self.failed.is_none()
        {
            self.fail_after_sync_error(&e);
        }
        match &self.failed {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }
}
