//! Where a stream's consumer groups are kept: a weir-log log of its own
//! (`streams/@<id>/groups/`), one JSON [`Change`] per record, read back in order at
//! start (Kafka keeps its offsets in a log too). Every [`SNAPSHOT_EVERY`] changes a
//! snapshot of every group is appended and the log trimmed before it, so it stays
//! small whatever the commit rate.
//!
//! Changes are queued in the log and applied to memory under one lock, so memory
//! and the log see them in the same order; the caller is answered once its change
//! is durable (commits share syncs: group commit).

use std::sync::Mutex;
use std::time::Instant;

use weir_log::{MessageLog, NewRecord, Offset, ReadLimits};

use super::groups::{Change, Groups};
use crate::error::{BrokerError, Result};

/// Changes between two snapshots.
const SNAPSHOT_EVERY: u64 = 1000;

/// The groups of one stream and their log.
pub(crate) struct GroupStore<L> {
    log: L,
    state: Mutex<(Groups, u64)>,
}

fn storage(e: weir_log::LogError) -> BrokerError {
    BrokerError::storage("(consumer groups)", e)
}

impl<L: MessageLog + Clone> GroupStore<L> {
    /// Reads the groups back from `log`.
    pub(crate) async fn open(log: L) -> Result<GroupStore<L>> {
        let mut groups = Groups::default();
        let mut from = log.first_offset().0;
        let end = log.next_offset().0;
        let limits = ReadLimits {
            max_records: 1024,
            max_bytes: 4 << 20,
        };
        while from < end {
            let records = log.read_from(Offset(from), limits).await.map_err(storage)?;
            let Some(last) = records.last() else {
                break;
            };
            from = last.offset.0 + 1;
            for record in records {
                match serde_json::from_slice::<Change>(&record.body) {
                    Ok(change) => groups.apply(change),
                    Err(e) => {
                        tracing::warn!(offset = record.offset.0, error = %e, "skipping a consumer-group record that does not parse");
                    }
                }
            }
        }
        Ok(GroupStore {
            log,
            state: Mutex::new((groups, 0)),
        })
    }

    /// Reads or changes the groups in memory (nothing durable).
    pub(crate) fn with<T>(&self, f: impl FnOnce(&mut Groups) -> T) -> T {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut state.0)
    }

    /// Checks with `check`, then writes the change it returns and applies it;
    /// answers once the change is durable.
    pub(crate) async fn change(
        &self,
        check: impl FnOnce(&mut Groups) -> Result<Change>,
    ) -> Result<()> {
        let (durable, snapshot) = {
            let mut state = self
                .state
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let change = check(&mut state.0)?;
            let body =
                serde_json::to_vec(&change).map_err(|e| BrokerError::internal(e.to_string()))?;
            let durable = self.log.submit_batch(&[NewRecord::new(body)]);
            state.0.apply(change);
            state.1 += 1;
            let snapshot = if state.1 >= SNAPSHOT_EVERY {
                state.1 = 0;
                let body = serde_json::to_vec(&state.0.snapshot())
                    .map_err(|e| BrokerError::internal(e.to_string()))?;
                Some(self.log.submit_batch(&[NewRecord::new(body)]))
            } else {
                None
            };
            (durable, snapshot)
        };
        durable.await.map_err(storage)?;
        if let Some(snapshot) = snapshot {
            let at = snapshot.await.map_err(storage)?;
            self.log.trim_before(at.first).await.map_err(storage)?;
        }
        Ok(())
    }

    /// Closes the log.
    pub(crate) async fn close(&self) {
        if let Err(e) = self.log.close().await {
            tracing::warn!(error = %e, "closing a consumer-group log failed");
        }
    }

    /// Whether `group` has live members now.
    pub(crate) fn has_live_members(&self, group: &str) -> Result<bool> {
        self.with(|g| g.has_live_members(group, Instant::now()))
    }
}
