//! Consumer groups through the broker (broker-wide stream names): declare, delete,
//! list, describe, poll, commit, leave and reset. The state is `groups.rs`; what is
//! durable goes through `group_log.rs`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use weir_log::{LogStore, MessageLog, Offset, ReadLimits};

use super::groups::{Change, GroupConfig, GroupInfo};
use super::read::{
    MAX_READ_BYTES, check_read, read_partition, read_partition_stored, start_offset,
};
use super::{ReadFrom, StoredRead, StreamRecord, StreamRef};
use crate::api::{Declared, MAX_NAME_BYTES};
use crate::broker::Broker;
use crate::clock::now_ms;
use crate::error::{BrokerError, Kind, Result};

/// What a poll answers: the member's partitions and records from them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupPoll {
    /// Bumped at each reassignment of the group's partitions.
    pub generation: u64,
    /// The partitions the member owns now.
    pub partitions: Vec<u32>,
    /// Records from them, partition by partition, each in offset order.
    pub records: Vec<StreamRecord>,
    /// For a stored poll ([`PollOptions::stored`], instead of `records`): the batches read, one
    /// entry per partition that had records.
    pub stored: Vec<StoredRead>,
}

impl GroupPoll {
    /// Whether it answers no record.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty() && self.stored.is_empty()
    }
}

/// How a poll reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PollOptions {
    /// At most this many records; a stored poll answers whole batches, so at least
    /// this many unless the end or the byte limit comes first.
    pub max: u32,
    /// Wait (up to `wait_ms`) until the member's partitions hold at least this many
    /// records it has not read (Kafka's `fetch.min.bytes`, in records): fewer, larger
    /// answers. 1 answers as soon as there is any.
    pub min: u32,
    /// How long to wait, in ms.
    pub wait_ms: u64,
    /// Answer the batches as stored (`GroupPoll::stored`) instead of records.
    pub stored: bool,
}

impl PollOptions {
    /// Records, as soon as there are any, waiting up to `wait_ms`.
    pub fn records(max: u32, wait_ms: u64) -> PollOptions {
        PollOptions {
            max,
            min: 1,
            wait_ms,
            stored: false,
        }
    }
}

pub(super) fn check_name(what: &str, name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_NAME_BYTES {
        return Err(BrokerError::invalid(what, "must be 1 to 255 bytes"));
    }
    Ok(())
}

impl<S: LogStore> Broker<S> {
    /// Declares consumer group `group` of `stream`: creates it, or confirms an
    /// identical one.
    ///
    /// # Errors
    /// `NotFound` (stream), `InvalidArgument`, `Conflict` (other settings), storage.
    pub async fn declare_group(
        &self,
        stream: &str,
        group: &str,
        config: GroupConfig,
    ) -> Result<Declared> {
        check_name("group", group)?;
        config.start_from()?;
        let s = self.stream(stream)?;
        let mut created = true;
        s.groups
            .change(|groups| {
                match groups.config(group) {
                    Some(existing) if *existing == config => created = false,
                    Some(existing) => {
                        return Err(BrokerError::Conflict {
                            kind: Kind::Group,
                            name: group.to_owned(),
                            difference: format!(
                                "it is {} but {} was asked",
                                serde_json::to_string(existing).unwrap_or_default(),
                                serde_json::to_string(&config).unwrap_or_default()
                            ),
                        });
                    }
                    None => groups.room_for(group)?,
                }
                Ok(Change::Config {
                    group: group.to_owned(),
                    config: config.clone(),
                })
            })
            .await?;
        Ok(if created {
            Declared::Created
        } else {
            Declared::Existed
        })
    }

    /// Deletes a group with its committed offsets.
    ///
    /// # Errors
    /// `NotFound`, storage.
    pub async fn delete_group(&self, stream: &str, group: &str) -> Result<()> {
        let s = self.stream(stream)?;
        s.groups
            .change(|groups| {
                groups.config(group).ok_or_else(|| not_found(group))?;
                Ok(Change::Delete {
                    group: group.to_owned(),
                })
            })
            .await
    }

    /// Every group of `stream`, described.
    ///
    /// # Errors
    /// `NotFound` (stream), storage.
    pub async fn groups(&self, stream: &str) -> Result<Vec<GroupInfo>> {
        let s = self.stream(stream)?;
        let mut out = Vec::new();
        for name in s.groups.with(|g| g.names()) {
            if let Ok(info) = describe(&s, &name).await {
                out.push(info);
            }
        }
        Ok(out)
    }

    /// One group: members, assignment, and per partition the committed offset, the
    /// end, the lag in records and in ms.
    ///
    /// # Errors
    /// `NotFound`, storage.
    pub async fn group(&self, stream: &str, group: &str) -> Result<GroupInfo> {
        let s = self.stream(stream)?;
        describe(&s, group).await
    }

    /// A member polls: it joins (or heartbeats), and gets up to `max` records from
    /// its partitions, waiting up to `wait_ms` for a first one. Each partition is
    /// read from where the member's last poll left off, else from the committed
    /// offset, else (or below retention) from the group's start policy.
    ///
    /// # Errors
    /// `NotFound`, `InvalidArgument`, `LimitExceeded` (members), storage.
    pub async fn poll(
        &self,
        stream: &str,
        group: &str,
        member: &str,
        max: u32,
        wait_ms: u64,
    ) -> Result<GroupPoll> {
        self.poll_with(stream, group, member, PollOptions::records(max, wait_ms))
            .await
    }

    /// As [`Broker::poll`], with [`PollOptions`]: a `min` to wait for, and stored
    /// batches (`GroupPoll::stored`) instead of records, in which case the member's
    /// position moves to the end of the last batch answered.
    ///
    /// # Errors
    /// As [`Broker::poll`]; `InvalidArgument` for a `min` of 0 or over `max`.
    pub async fn poll_with(
        &self,
        stream: &str,
        group: &str,
        member: &str,
        options: PollOptions,
    ) -> Result<GroupPoll> {
        let PollOptions {
            max, min, wait_ms, ..
        } = options;
        check_name("member", member)?;
        check_read(max, wait_ms, self.inner.config.limits.max_wait_ms)?;
        if min == 0 || min > max {
            return Err(BrokerError::invalid(
                "min",
                format!("{min} is outside 1..=max ({max})"),
            ));
        }
        let s = self.stream(stream)?;
        let deadline = tokio::time::Instant::now() + Duration::from_millis(wait_ms);
        loop {
            // Interest first, then the read: an append in between still wakes us.
            let appended = s.appended.notified();
            tokio::pin!(appended);
            appended.as_mut().enable();
            let waiting = tokio::time::Instant::now() < deadline;
            let joined = positions(&s, group, member).await?;
            if min > 1 && waiting && unread(&s, &joined.1) < u64::from(min) {
                if tokio::time::timeout_at(deadline, appended).await.is_err() {
                    return poll_once(&s, group, member, options).await;
                }
                continue;
            }
            let polled = read_at(&s, group, member, joined, options).await?;
            if !polled.is_empty() || !waiting {
                return Ok(polled);
            }
            if tokio::time::timeout_at(deadline, appended).await.is_err() {
                return poll_once(&s, group, member, options).await;
            }
        }
    }

    /// Commits `offsets` (partition -> the next offset to read) for `member`.
    ///
    /// # Errors
    /// `NotFound`, `NotOwner` (a partition the member does not own now),
    /// `InvalidArgument` (an offset past the end), storage.
    pub async fn commit(
        &self,
        stream: &str,
        group: &str,
        member: &str,
        offsets: BTreeMap<u32, u64>,
    ) -> Result<()> {
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
        s.groups
            .change(|groups| {
                groups.check_commit(group, member, &offsets, Instant::now())?;
                Ok(Change::Commit {
                    group: group.to_owned(),
                    offsets: offsets.clone(),
                    metadata: BTreeMap::new(),
                })
            })
            .await
    }

    /// `member` leaves; its partitions go to the others at once.
    ///
    /// # Errors
    /// `NotFound`.
    pub fn leave(&self, stream: &str, group: &str, member: &str) -> Result<bool> {
        let s = self.stream(stream)?;
        let partitions = u32::try_from(s.partitions.len()).unwrap_or(0);
        s.groups.with(|g| g.leave(group, member, partitions))
    }

    /// Sets every partition's committed offset to where `to` points now, only while
    /// no member is live; with `dry_run`, only says what it would set.
    ///
    /// # Errors
    /// `NotFound`, `PreconditionFailed` (live members), storage.
    pub async fn reset_group(
        &self,
        stream: &str,
        group: &str,
        to: ReadFrom,
        dry_run: bool,
    ) -> Result<BTreeMap<u32, u64>> {
        let s = self.stream(stream)?;
        if s.groups.has_live_members(group)? {
            return Err(BrokerError::PreconditionFailed {
                reason: format!(
                    "group '{group}' has live members; a reset waits until none is \
                     (they time out after the session timeout, or leave)"
                ),
            });
        }
        let mut offsets = BTreeMap::new();
        for (p, log) in s.partitions.iter().enumerate() {
            offsets.insert(u32::try_from(p).unwrap_or(0), start_offset(log, to).await?);
        }
        if !dry_run {
            s.groups
                .change(|groups| {
                    if groups.has_live_members(group, Instant::now())? {
                        return Err(BrokerError::PreconditionFailed {
                            reason: format!("group '{group}' has live members"),
                        });
                    }
                    Ok(Change::Commit {
                        group: group.to_owned(),
                        offsets: offsets.clone(),
                        metadata: BTreeMap::new(),
                    })
                })
                .await?;
        }
        Ok(offsets)
    }
}

/// The group that keeps an AMQP consumer's tracked offset (server-side offset
/// tracking, `x-stream-automatic-offset-tracking`): one per consumer tag.
fn tracking_group(tag: &str) -> String {
    format!("amqp-offset-tracking/{tag}")
}

impl<S: LogStore> Broker<S> {
    /// The offset tracked for consumer tag `tag` of `stream` (the next to read), if
    /// any.
    ///
    /// # Errors
    /// `NotFound` (stream).
    pub fn tracked_offset(&self, stream: &str, tag: &str) -> Result<Option<u64>> {
        let (s, partition) = self.stream_part(stream, 0)?;
        let group = tracking_group(tag);
        Ok(s.groups
            .with(|g| g.committed(&group).ok())
            .and_then(|c| c.get(&partition).copied()))
    }

    /// Stores `next` as the offset tracked for consumer tag `tag` of `stream`
    /// (never moving it back); answers once durable.
    ///
    /// # Errors
    /// `NotFound` (stream), storage.
    pub async fn track_offset(&self, stream: &str, tag: &str, next: u64) -> Result<()> {
        let (s, partition) = self.stream_part(stream, 0)?;
        let group = tracking_group(tag);
        if s.groups.with(|g| g.config(&group).is_none()) {
            s.groups
                .change(|g| {
                    g.room_for(&group)?;
                    Ok(Change::Config {
                        group: group.clone(),
                        config: GroupConfig::default(),
                    })
                })
                .await?;
        }
        s.groups
            .change(|g| {
                let current = g.committed(&group)?.get(&partition).copied().unwrap_or(0);
                Ok(Change::Commit {
                    group: group.clone(),
                    offsets: BTreeMap::from([(partition, next.max(current))]),
                    metadata: BTreeMap::new(),
                })
            })
            .await
    }
}

fn not_found(group: &str) -> BrokerError {
    BrokerError::NotFound {
        kind: Kind::Group,
        name: group.to_owned(),
    }
}

/// Joins or heartbeats `member`: its generation and, per partition it owns, where
/// it reads next.
async fn positions<L: MessageLog + Clone>(
    s: &StreamRef<L>,
    group: &str,
    member: &str,
) -> Result<(u64, Vec<(u32, u64)>)> {
    let partitions = u32::try_from(s.partitions.len()).unwrap_or(0);
    let (assignment, start) = s.groups.with(|g| {
        let start = g.config(group).map(GroupConfig::start_from);
        g.poll(group, member, partitions, Instant::now())
            .map(|a| (a, start))
    })?;
    let start = start.ok_or_else(|| not_found(group))??;
    let mut out = Vec::with_capacity(assignment.positions.len());
    for (p, position) in &assignment.positions {
        let log = &s.partitions[*p as usize];
        let from = match position {
            Some(o) if *o >= log.first_offset().0 => *o,
            _ => {
                // Pinned at once, so `next` and `last` do not move with the end
                // while the member waits for its first records.
                let from = start_offset(log, start).await?;
                s.groups.with(|g| g.advance(group, member, *p, from));
                from
            }
        };
        out.push((*p, from));
    }
    Ok((assignment.generation, out))
}

/// Records not read yet in the partitions at `positions`.
fn unread<L: MessageLog + Clone>(s: &StreamRef<L>, positions: &[(u32, u64)]) -> u64 {
    positions
        .iter()
        .map(|(p, from)| {
            s.partitions[*p as usize]
                .next_offset()
                .0
                .saturating_sub(*from)
        })
        .sum()
}

/// One pass of a poll: join or heartbeat, then read what is there.
async fn poll_once<L: MessageLog + Clone>(
    s: &StreamRef<L>,
    group: &str,
    member: &str,
    options: PollOptions,
) -> Result<GroupPoll> {
    let joined = positions(s, group, member).await?;
    read_at(s, group, member, joined, options).await
}

/// Reads what is there from a joined member's `(generation, positions)`, moving
/// its positions past what it answers.
async fn read_at<L: MessageLog + Clone>(
    s: &StreamRef<L>,
    group: &str,
    member: &str,
    (generation, positions): (u64, Vec<(u32, u64)>),
    options: PollOptions,
) -> Result<GroupPoll> {
    let (mut records, mut stored) = (Vec::new(), Vec::new());
    // One poll answers at most `max` records and about MAX_READ_BYTES in all, however
    // many partitions the member owns.
    let mut left = options.max;
    let mut bytes_left = MAX_READ_BYTES;
    for (p, from) in &positions {
        let (p, from) = (*p, *from);
        let log = &s.partitions[p as usize];
        if left == 0 || bytes_left == 0 {
            continue;
        }
        let next = if options.stored {
            let read = read_partition_stored(log, p, from, left, bytes_left, 0).await?;
            let batches = &read.batches;
            left = left.saturating_sub(u32::try_from(batches.records).unwrap_or(left));
            bytes_left = bytes_left.saturating_sub(batches.bytes.max(1));
            let next = batches.next.0;
            if batches.records > 0 {
                stored.push(read);
            }
            next
        } else {
            let read = read_partition(log, p, from, left, bytes_left, 0).await?;
            left -= u32::try_from(read.records.len()).unwrap_or(left);
            let read_bytes: usize = read.records.iter().map(|r| r.body.len()).sum();
            bytes_left = bytes_left.saturating_sub(read_bytes.max(1));
            records.extend(read.records);
            read.next
        };
        s.groups.with(|g| g.advance(group, member, p, next));
    }
    Ok(GroupPoll {
        generation,
        partitions: positions.iter().map(|(p, _)| *p).collect(),
        records,
        stored,
    })
}

/// The group with its lag: per partition, the end, and how old the first record
/// not committed is.
async fn describe<L: MessageLog + Clone>(s: &StreamRef<L>, group: &str) -> Result<GroupInfo> {
    let committed = s.groups.with(|g| g.committed(group))?;
    let mut ends = Vec::with_capacity(s.partitions.len());
    for (p, log) in s.partitions.iter().enumerate() {
        let (first, end) = (log.first_offset().0, log.next_offset().0);
        let from = committed
            .get(&u32::try_from(p).unwrap_or(0))
            .copied()
            .unwrap_or(first)
            .max(first);
        let lag_ms = if from < end {
            let one = ReadLimits {
                max_records: 1,
                max_bytes: 1,
            };
            match log.read_from(Offset(from), one).await {
                Ok(records) => records.first().map_or(0, |r| {
                    u64::try_from(now_ms().saturating_sub(r.timestamp_ms)).unwrap_or(0)
                }),
                Err(_) => 0,
            }
        } else {
            0
        };
        ends.push((first, end, lag_ms));
    }
    s.groups.with(|g| g.describe(group, &ends, Instant::now()))
}
