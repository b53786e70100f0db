//! The writer's failure states: what a failed write, sync or segment creation
//! leaves behind, how it is rolled back, and the repair retried until the log takes
//! appends again (see the failure rules in the parent module's doc).

use std::sync::Arc;

use super::{Repair, Writer};
use crate::error::{LogError, Result};
use crate::segment::{index_file_name, log_file_name};

impl Writer {
    /// A failed sync of data that was already acknowledged (policies `interval` and
    /// `never`) may have lost it: the kernel can drop the dirty pages after reporting
    /// the error, and a retried `fsync` then succeeds without writing them. The log
    /// cannot vouch for its tail any more, so it stops syncing and taking appends until
    /// reopened; recovery then finds what really is on disk.
    pub(super) fn fail_after_sync_error(&mut self, error: &LogError) {
        tracing::error!(error = %error, "fsync failed; the log refuses appends until reopened");
        self.fail("fsync", &self.active.log_path.clone(), error);
    }

    /// Enters the failed state: appends, syncs and rolls are refused until reopen.
    pub(super) fn fail(&mut self, op: &'static str, path: &std::path::Path, error: &LogError) {
        let source = match error {
            LogError::Io { source, .. }
            | LogError::Failed { source, .. }
            | LogError::Repairing { source, .. } => source.clone(),
            other => Arc::new(std::io::Error::other(other.to_string())),
        };
        self.failed = Some(LogError::Failed {
            op,
            path: path.to_path_buf(),
            source,
        });
        self.repair = None;
    }

    /// Refuses appends with `error` until `repair` succeeds (see `try_repair`).
    /// A failure only a reopen can lift is never downgraded to a repairable one.
    pub(super) fn fail_until_repaired(&mut self, error: &LogError, repair: Repair) {
        if self.failed.is_some() && self.repair.is_none() {
            return;
        }
        self.failed = Some(error.clone());
        self.repair = Some(repair);
    }

    /// Retries the repair the log owes, if any; on success the log takes appends
    /// again. A sync that fails here stops the log until reopened, as any failed
    /// sync does.
    pub(super) fn try_repair(&mut self) {
        let Some(repair) = self.repair else {
            return;
        };
        match repair {
            Repair::Truncate { pos } => {
                let file = self.active.file.clone();
                let path = self.active.log_path.clone();
                if let Err(e) = file.set_len(pos) {
                    tracing::debug!(error = %e, "the truncation after a failed append failed again");
                    return;
                }
                if let Err(e) = file.sync_data() {
                    let e = LogError::io("fsync", &path, e);
                    self.fail_after_sync_error(&e);
                    return;
                }
                if self.syncer.is_none() {
                    self.synced_pos = pos;
                }
            }
            Repair::RemoveSegment { base } => match self.remove_half_made_segment(base) {
                Ok(()) => {}
                Err(e @ LogError::Failed { .. }) => {
                    tracing::error!(error = %e, "could not sync the removal of a half-made segment; the log refuses appends until reopened");
                    let path = self.shared.dir.join(log_file_name(base));
                    self.fail("remove a half-made segment", &path, &e);
                    return;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "removing a half-made segment failed again");
                    return;
                }
            },
        }
        tracing::info!(dir = %self.shared.dir.display(), ?repair, "repaired after a failed write; the log takes appends again");
        self.failed = None;
        self.repair = None;
    }

    /// Undoes a failed group: truncate it away and make the truncation durable. The
    /// sync matters: a failed `fdatasync` may still have persisted part of the group,
    /// and its offsets are about to be handed out again, so it must never come back.
    ///
    /// A truncation that fails is retried before the next group (`Repair`); a sync
    /// that fails stops the log until reopened.
    pub(super) fn roll_back(&mut self, start_pos: u64, start_offset: u64) {
        self.shared.tail.clear();
        self.write_pos = start_pos;
        self.next_offset = start_offset;
        let file = self.active.file.clone();
        let path = self.active.log_path.clone();
        // A pipelined log learns how far its segment is synced from its sync thread
        // only: the segment may be one whose roll is not durable yet, and its index
        // must not get entries before then (see `recovery`).
        let pipelined = self.syncer.is_some();
        self.synced_pos = self.synced_pos.min(start_pos);
        if let Err(e) = file.set_len(start_pos) {
            tracing::error!(error = %e, "could not truncate after a failed append; appends are refused until the truncation succeeds");
            let failed = LogError::Repairing {
                op: "truncate",
                path,
                source: Arc::new(e),
            };
            self.fail_until_repaired(&failed, Repair::Truncate { pos: start_pos });
            return;
        }
        match file.sync_data() {
            // Everything before the group is now durable too.
            Ok(()) if !pipelined => self.synced_pos = start_pos,
            Ok(()) => {}
            Err(e) => {
                let e = LogError::io("fsync", &path, e);
                self.fail_after_sync_error(&e);
            }
        }
    }

    /// After a failed roll the old segment stays active and takes more appends. A
    /// half-made next segment must not survive: at the next open it would become the
    /// active segment and hide those appends. If it cannot be removed durably, the log
    /// stops taking appends.
    pub(super) fn discard_half_made_segment(&mut self, base: u64) {
        let path = self.shared.dir.join(log_file_name(base));
        match self.remove_half_made_segment(base) {
            Ok(()) => {}
            Err(e @ LogError::Failed { .. }) => {
                tracing::error!(error = %e, "could not sync the removal of a half-made segment; the log refuses appends until reopened");
                self.fail("remove a half-made segment", &path, &e);
            }
            Err(e) => {
                tracing::error!(error = %e, "could not remove a half-made segment; appends are refused until it is removed");
                let source = match &e {
                    LogError::Io { source, .. } => source.clone(),
                    other => Arc::new(std::io::Error::other(other.to_string())),
                };
                let failed = LogError::Repairing {
                    op: "remove the half-made segment",
                    path,
                    source,
                };
                self.fail_until_repaired(&failed, Repair::RemoveSegment { base });
            }
        }
    }

    /// Removes the files of the segment at `base` (missing ones are fine) and syncs
    /// the directory. A failed sync comes back as [`LogError::Failed`]: a retried
    /// sync could falsely succeed, so it stops the log.
    pub(super) fn remove_half_made_segment(&mut self, base: u64) -> Result<()> {
        let dir = self.shared.dir.clone();
        for name in [log_file_name(base), index_file_name(base)] {
            let path = dir.join(name);
            match self.shared.fs.remove(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(LogError::io("remove", &path, e)),
            }
        }
        self.shared.fs.sync_dir(&dir).map_err(|e| LogError::Failed {
            op: "sync",
            path: dir.clone(),
            source: Arc::new(e),
        })
    }
}
