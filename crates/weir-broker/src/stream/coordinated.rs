//! Offsets committed by a group coordinator outside the broker (the Kafka front
//! end's consumer groups, whose members and assignments the front end keeps, as
//! Kafka's classic protocol has the clients assign partitions). Their offsets are
//! the same group offsets weir's own groups commit, so lag shows in the HTTP API,
//! the dashboard and `/metrics` whichever protocol consumes.

use std::collections::BTreeMap;

use weir_log::{LogStore, MessageLog};

use super::group_api::check_name;
use super::groups::{Change, GroupConfig};
use crate::broker::Broker;
use crate::error::{BrokerError, Result};

impl<S: LogStore> Broker<S> {
    /// Commits `offsets` (partition -> the next offset to read) for group `group` of
    /// `stream` as its coordinator decided, with each partition's `metadata` string
    /// (none: empty), creating the group with the default settings if it does not
    /// exist; answers once durable.
    ///
    /// # Errors
    /// `NotFound` (stream), `InvalidArgument` (name, a partition the stream lacks,
    /// an offset past the end), `PreconditionFailed` (weir's own members of the
    /// group are live: one group, one coordinator), `LimitExceeded`, storage.
    pub async fn commit_coordinated(
        &self,
        stream: &str,
        group: &str,
        offsets: BTreeMap<u32, u64>,
        metadata: BTreeMap<u32, String>,
    ) -> Result<()> {
        check_name("group", group)?;
        let s = self.stream(stream)?;
        for (p, offset) in &offsets {
            let log = s.partitions.get(*p as usize).ok_or_else(|| {
                BrokerError::invalid("offsets", format!("stream has no partition {p}"))
            })?;
            if *offset > log.next_offset().0 {
                return Err(BrokerError::invalid(
                    "offsets",
                    format!("partition {p}: {offset} is past the end"),
                ));
            }
        }
        if s.groups.with(|g| g.config(group).is_none()) {
            s.groups
                .change(|g| {
                    if g.config(group).is_some() {
                        return Err(BrokerError::invalid("group", "made meanwhile"));
                    }
                    g.room_for(group)?;
                    Ok(Change::Config {
                        group: group.to_owned(),
                        config: GroupConfig::default(),
                    })
                })
                .await
                .or_else(|e| match e {
                    // Another commit made it first: fine.
                    BrokerError::InvalidArgument { field, .. } if field == "group" => Ok(()),
                    e => Err(e),
                })?;
        }
        s.groups
            .change(|g| {
                if g.has_live_members(group, std::time::Instant::now())? {
                    return Err(BrokerError::PreconditionFailed {
                        reason: format!(
                            "group '{group}' has live members of weir's own (HTTP) groups; \
                             a group has one coordinator"
                        ),
                    });
                }
                Ok(Change::Commit {
                    group: group.to_owned(),
                    offsets: offsets.clone(),
                    metadata: metadata.clone(),
                })
            })
            .await
    }

    /// The offsets committed for `group` of `stream` (partition -> next offset);
    /// `None` when there is no such group.
    ///
    /// # Errors
    /// `NotFound` (stream).
    pub fn committed_offsets(
        &self,
        stream: &str,
        group: &str,
    ) -> Result<Option<BTreeMap<u32, u64>>> {
        let s = self.stream(stream)?;
        Ok(s.groups.with(|g| g.committed(group).ok()))
    }

    /// The metadata strings of the last commits of `group` of `stream`, per
    /// partition (those without one left out).
    ///
    /// # Errors
    /// `NotFound` (stream).
    pub fn commit_metadata(&self, stream: &str, group: &str) -> Result<BTreeMap<u32, String>> {
        let s = self.stream(stream)?;
        Ok(s.groups.with(|g| g.commit_metadata(group)))
    }

    /// Deletes `group`'s committed offsets (and commit metadata) of `partitions`,
    /// as Kafka's OffsetDelete does; the group and its other offsets stay. A
    /// partition without one is no error. Refused while the group has live
    /// members of weir's own (HTTP or AMQP): they read from those offsets.
    ///
    /// # Errors
    /// `NotFound`, `InvalidArgument` (a partition the stream lacks),
    /// `PreconditionFailed` (live members), storage.
    pub async fn delete_offsets(
        &self,
        stream: &str,
        group: &str,
        partitions: &[u32],
    ) -> Result<()> {
        let s = self.stream(stream)?;
        let count = s.options.partitions;
        if let Some(p) = partitions.iter().find(|p| **p >= count) {
            return Err(BrokerError::invalid(
                "partition",
                format!("{p} is not below the stream's {count}"),
            ));
        }
        let held = s.groups.with(|groups| {
            no_live_members(groups, group)?;
            let committed = groups.committed(group)?;
            let metadata = groups.commit_metadata(group);
            Ok::<_, BrokerError>(
                partitions
                    .iter()
                    .any(|p| committed.contains_key(p) || metadata.contains_key(p)),
            )
        })?;
        if !held {
            // Nothing to delete, so nothing to write (a request may name the same
            // partitions over and over).
            return Ok(());
        }
        s.groups
            .change(|groups| {
                no_live_members(groups, group)?;
                let mut partitions = partitions.to_vec();
                partitions.sort_unstable();
                partitions.dedup();
                Ok(Change::Uncommit {
                    group: group.to_owned(),
                    partitions,
                })
            })
            .await
    }
}

/// `PreconditionFailed` while `group` has live members of weir's own (they read
/// from its offsets); `NotFound` without such a group.
fn no_live_members(groups: &mut super::groups::Groups, group: &str) -> Result<()> {
    if groups.has_live_members(group, std::time::Instant::now())? {
        return Err(BrokerError::PreconditionFailed {
            reason: format!("group '{group}' has live members"),
        });
    }
    Ok(())
}
