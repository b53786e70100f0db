//! Consumer groups of one stream, as state (no I/O): members join by polling and
//! leave by timing out or leaving, partitions are spread over the live members
//! (each partition has at most one owner), members read from their partitions'
//! positions, and commits (the next offset to read) are accepted from owners only.
//!
//! What must survive a restart (each group's settings and committed offsets) is
//! changed through [`Change`]s that the caller writes to the stream's offsets log
//! before applying them (`group_log.rs`); members, positions and the assignment
//! live in memory and are rebuilt as members poll again.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::ReadFrom;
use crate::error::{BrokerError, Kind, Result};

/// Default time a member may go without polling before it is dropped.
pub const DEFAULT_SESSION_TIMEOUT_MS: u64 = 30_000;

/// Most members a group keeps (each costs a little memory and a share of the
/// partitions; more than partitions is allowed, the rest stand by).
pub const MAX_MEMBERS: usize = 1000;

/// Most consumer groups a stream keeps (each is kept in memory and in its log;
/// an AMQP consumer tag with offset tracking is one too).
pub const MAX_GROUPS: usize = 10_000;

/// A group's settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupConfig {
    /// Where a partition without a committed offset (or whose committed offset fell
    /// below retention) starts: `first`, `last`, `next`, `offset:N`, `time:<ms>`,
    /// `ago:<ms>`.
    #[serde(default = "default_start")]
    pub start: String,
    /// A member that has not polled for this long is dropped and its partitions go
    /// to the others.
    #[serde(default = "default_session_timeout")]
    pub session_timeout_ms: u64,
}

fn default_start() -> String {
    "first".to_owned()
}

fn default_session_timeout() -> u64 {
    DEFAULT_SESSION_TIMEOUT_MS
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            start: default_start(),
            session_timeout_ms: DEFAULT_SESSION_TIMEOUT_MS,
        }
    }
}

impl GroupConfig {
    /// The start policy, parsed.
    ///
    /// # Errors
    /// `InvalidArgument` for a policy out of shape or a timeout out of bounds.
    pub fn start_from(&self) -> Result<ReadFrom> {
        let from: ReadFrom = self.start.parse().map_err(|_| {
            BrokerError::invalid(
                "start",
                format!(
                    "'{}' is not first, last, next, offset:N, time:<ms> or ago:<ms>",
                    self.start
                ),
            )
        })?;
        if !(100..=3_600_000).contains(&self.session_timeout_ms) {
            return Err(BrokerError::invalid(
                "session_timeout_ms",
                format!("{} is outside 100..=3600000", self.session_timeout_ms),
            ));
        }
        Ok(from)
    }
}

/// A durable change of the groups (written to the offsets log, then applied).
/// Externally tagged (`{"commit": {...}}`): an internally tagged enum is buffered
/// by serde, and buffered maps lose their integer keys (the partitions).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// A group is made or its settings changed.
    Config {
        /// The group.
        group: String,
        /// Its settings.
        config: GroupConfig,
    },
    /// Committed offsets (the next offset to read, per partition).
    Commit {
        /// The group.
        group: String,
        /// Partition -> next offset.
        offsets: BTreeMap<u32, u64>,
        /// Partition -> the committer's metadata string (Kafka's OffsetCommit
        /// carries one; kept until the partition's next commit). Absent: none.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        metadata: BTreeMap<u32, String>,
    },
    /// Some partitions' committed offsets (and metadata) are deleted; the group
    /// stays (Kafka's OffsetDelete).
    Uncommit {
        /// The group.
        group: String,
        /// The partitions.
        partitions: Vec<u32>,
    },
    /// A group is deleted with its offsets.
    Delete {
        /// The group.
        group: String,
    },
    /// Every group's settings and offsets: what came before it no longer counts.
    Snapshot {
        /// Group -> (settings, offsets).
        groups: BTreeMap<String, (GroupConfig, BTreeMap<u32, u64>)>,
        /// Group -> partition -> commit metadata, for groups that have any.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        metadata: BTreeMap<String, BTreeMap<u32, String>>,
    },
}

/// A live member.
#[derive(Clone, Debug)]
struct Member {
    last_seen: Instant,
    /// Where it reads next in each partition it owns.
    positions: BTreeMap<u32, u64>,
}

/// One group.
#[derive(Clone, Debug, Default)]
struct Group {
    config: GroupConfig,
    committed: BTreeMap<u32, u64>,
    /// The metadata strings of the last commits, where not empty.
    metadata: BTreeMap<u32, String>,
    members: BTreeMap<String, Member>,
    /// Partition -> owner.
    owners: BTreeMap<u32, String>,
    /// Bumped at each reassignment.
    generation: u64,
}

/// The groups of one stream.
#[derive(Debug, Default)]
pub(crate) struct Groups {
    groups: BTreeMap<String, Group>,
}

/// A member's part of a group after a poll: its partitions and where it reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Assignment {
    pub(crate) generation: u64,
    /// Partition -> position (`None`: not known yet, the start policy decides).
    pub(crate) positions: BTreeMap<u32, Option<u64>>,
}

/// A group as described.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GroupInfo {
    /// Its name.
    pub name: String,
    /// Its settings.
    #[serde(flatten)]
    pub config: GroupConfig,
    /// Bumped at each reassignment.
    pub generation: u64,
    /// Live members, by id, with their partitions.
    pub members: BTreeMap<String, Vec<u32>>,
    /// Per partition.
    pub partitions: Vec<GroupPartition>,
}

/// A group's view of one partition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GroupPartition {
    /// The partition.
    pub partition: u32,
    /// Its owner, if any.
    pub owner: Option<String>,
    /// The committed offset (the next to read), if any.
    pub committed: Option<u64>,
    /// The partition's end (its next offset).
    pub end: u64,
    /// Records not yet committed: `end - committed` (`end - first` without a commit).
    pub lag: u64,
    /// Now minus the timestamp of the first record not committed (0 when caught up).
    pub lag_ms: u64,
}

fn no_group(name: &str) -> BrokerError {
    BrokerError::NotFound {
        kind: Kind::Group,
        name: name.to_owned(),
    }
}

impl Groups {
    /// Applies a durable change (at replay, or after it was written).
    pub(crate) fn apply(&mut self, change: Change) {
        match change {
            Change::Config { group, config } => {
                self.groups.entry(group).or_default().config = config;
            }
            Change::Commit {
                group,
                offsets,
                mut metadata,
            } => {
                if let Some(g) = self.groups.get_mut(&group) {
                    for p in offsets.keys() {
                        match metadata.remove(p).filter(|m| !m.is_empty()) {
                            Some(m) => g.metadata.insert(*p, m),
                            None => g.metadata.remove(p),
                        };
                    }
                    g.committed.extend(offsets);
                }
            }
            Change::Uncommit { group, partitions } => {
                if let Some(g) = self.groups.get_mut(&group) {
                    for p in &partitions {
                        g.committed.remove(p);
                        g.metadata.remove(p);
                    }
                }
            }
            Change::Delete { group } => {
                self.groups.remove(&group);
            }
            Change::Snapshot {
                groups,
                mut metadata,
            } => {
                self.groups = groups
                    .into_iter()
                    .map(|(name, (config, committed))| {
                        let metadata = metadata.remove(&name).unwrap_or_default();
                        (
                            name,
                            Group {
                                config,
                                committed,
                                metadata,
                                ..Group::default()
                            },
                        )
                    })
                    .collect();
            }
        }
    }

    /// The snapshot of what is durable.
    pub(crate) fn snapshot(&self) -> Change {
        Change::Snapshot {
            groups: self
                .groups
                .iter()
                .map(|(n, g)| (n.clone(), (g.config.clone(), g.committed.clone())))
                .collect(),
            metadata: self
                .groups
                .iter()
                .filter(|(_, g)| !g.metadata.is_empty())
                .map(|(n, g)| (n.clone(), g.metadata.clone()))
                .collect(),
        }
    }

    pub(crate) fn config(&self, group: &str) -> Option<&GroupConfig> {
        self.groups.get(group).map(|g| &g.config)
    }

    pub(crate) fn names(&self) -> Vec<String> {
        self.groups.keys().cloned().collect()
    }

    /// Refuses a new group past [`MAX_GROUPS`]; an existing one is fine.
    pub(crate) fn room_for(&self, group: &str) -> Result<()> {
        if self.groups.contains_key(group) || self.groups.len() < MAX_GROUPS {
            return Ok(());
        }
        Err(BrokerError::LimitExceeded {
            what: crate::error::Limit::Groups,
            limit: MAX_GROUPS as u64,
        })
    }

    pub(crate) fn has_live_members(&mut self, group: &str, now: Instant) -> Result<bool> {
        let g = self.groups.get_mut(group).ok_or_else(|| no_group(group))?;
        expire(g, now);
        Ok(!g.members.is_empty())
    }

    /// A poll: `member` joins or heartbeats; dead members are dropped and the
    /// partitions reassigned if the members changed. Answers its assignment.
    pub(crate) fn poll(
        &mut self,
        group: &str,
        member: &str,
        partitions: u32,
        now: Instant,
    ) -> Result<Assignment> {
        let g = self.groups.get_mut(group).ok_or_else(|| no_group(group))?;
        let mut changed = expire(g, now);
        if let Some(m) = g.members.get_mut(member) {
            m.last_seen = now;
        } else {
            if g.members.len() >= MAX_MEMBERS {
                return Err(BrokerError::LimitExceeded {
                    what: crate::error::Limit::Members,
                    limit: MAX_MEMBERS as u64,
                });
            }
            g.members.insert(
                member.to_owned(),
                Member {
                    last_seen: now,
                    positions: BTreeMap::new(),
                },
            );
            changed = true;
        }
        if changed || g.owners.len() != partitions as usize {
            reassign(g, partitions);
        }
        let m = &g.members[member];
        let positions = g
            .owners
            .iter()
            .filter(|(_, owner)| owner.as_str() == member)
            .map(|(p, _)| {
                (
                    *p,
                    m.positions.get(p).copied().or(g.committed.get(p).copied()),
                )
            })
            .collect();
        Ok(Assignment {
            generation: g.generation,
            positions,
        })
    }

    /// Records where `member` reads next in `partition` (after a poll answered
    /// records up to there), if it still owns it.
    pub(crate) fn advance(&mut self, group: &str, member: &str, partition: u32, next: u64) {
        if let Some(g) = self.groups.get_mut(group)
            && g.owners.get(&partition).is_some_and(|o| o == member)
            && let Some(m) = g.members.get_mut(member)
        {
            m.positions.insert(partition, next);
        }
    }

    /// Leaves: the member's partitions go to the others.
    pub(crate) fn leave(&mut self, group: &str, member: &str, partitions: u32) -> Result<bool> {
        let g = self.groups.get_mut(group).ok_or_else(|| no_group(group))?;
        let left = g.members.remove(member).is_some();
        if left {
            reassign(g, partitions);
        }
        Ok(left)
    }

    /// Checks a commit: the group exists, `member` is live and owns every partition
    /// named. (The caller then writes and applies a [`Change::Commit`].)
    pub(crate) fn check_commit(
        &mut self,
        group: &str,
        member: &str,
        offsets: &BTreeMap<u32, u64>,
        now: Instant,
    ) -> Result<()> {
        let g = self.groups.get_mut(group).ok_or_else(|| no_group(group))?;
        if expire(g, now) {
            let partitions = u32::try_from(g.owners.len()).unwrap_or(0);
            reassign(g, partitions);
        }
        for p in offsets.keys() {
            if g.owners.get(p).is_none_or(|o| o != member) {
                return Err(BrokerError::NotOwner {
                    group: group.to_owned(),
                    member: member.to_owned(),
                    partition: *p,
                });
            }
        }
        if let Some(m) = g.members.get_mut(member) {
            m.last_seen = now;
        }
        Ok(())
    }

    /// The metadata strings of `group`'s last commits (partitions without one
    /// left out).
    pub(crate) fn commit_metadata(&self, group: &str) -> BTreeMap<u32, String> {
        self.groups
            .get(group)
            .map(|g| g.metadata.clone())
            .unwrap_or_default()
    }

    /// The committed offsets of `group`.
    pub(crate) fn committed(&self, group: &str) -> Result<BTreeMap<u32, u64>> {
        self.groups
            .get(group)
            .map(|g| g.committed.clone())
            .ok_or_else(|| no_group(group))
    }

    /// The group as described, given each partition's end and lag in ms.
    pub(crate) fn describe(
        &mut self,
        group: &str,
        ends: &[(u64, u64, u64)],
        now: Instant,
    ) -> Result<GroupInfo> {
        let g = self.groups.get_mut(group).ok_or_else(|| no_group(group))?;
        if expire(g, now) {
            reassign(g, u32::try_from(ends.len()).unwrap_or(0));
        }
        let mut members: BTreeMap<String, Vec<u32>> =
            g.members.keys().map(|m| (m.clone(), Vec::new())).collect();
        for (p, owner) in &g.owners {
            members.entry(owner.clone()).or_default().push(*p);
        }
        let partitions = ends
            .iter()
            .enumerate()
            .map(|(p, (first, end, lag_ms))| {
                let p = u32::try_from(p).unwrap_or(0);
                let committed = g.committed.get(&p).copied();
                GroupPartition {
                    partition: p,
                    owner: g.owners.get(&p).cloned(),
                    committed,
                    end: *end,
                    lag: end.saturating_sub(committed.unwrap_or(*first).max(*first)),
                    lag_ms: *lag_ms,
                }
            })
            .collect();
        Ok(GroupInfo {
            name: group.to_owned(),
            config: g.config.clone(),
            generation: g.generation,
            members,
            partitions,
        })
    }
}

/// Drops the members that have not polled within the session timeout; true if any.
fn expire(g: &mut Group, now: Instant) -> bool {
    let timeout = Duration::from_millis(g.config.session_timeout_ms);
    let before = g.members.len();
    g.members
        .retain(|_, m| now.saturating_duration_since(m.last_seen) <= timeout);
    g.members.len() != before
}

/// Spreads the partitions over the live members in name order (partition p to the
/// member p mod n), keeping nothing of the old assignment: a member's positions
/// for partitions it no longer owns are dropped, so a new owner starts from the
/// committed offset.
fn reassign(g: &mut Group, partitions: u32) {
    g.generation += 1;
    g.owners.clear();
    let names: Vec<String> = g.members.keys().cloned().collect();
    if names.is_empty() {
        return;
    }
    for p in 0..partitions {
        g.owners.insert(p, names[p as usize % names.len()].clone());
    }
    for (name, m) in &mut g.members {
        m.positions
            .retain(|p, _| g.owners.get(p).is_some_and(|o| o == name));
    }
}
