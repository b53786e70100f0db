//! Streams through the [`Vhost`] view: the client's names in and out, only the
//! vhost's own streams listed (see [`crate::vhost`]).

use weir_log::LogStore;

use std::collections::BTreeMap;

use super::group_api::{GroupPoll, PollOptions};
use super::groups::{GroupConfig, GroupInfo};
use super::incoming::{PartitionBatches, PlacedBatch};
use super::{Placed, ReadFrom, StoredRead, StreamInfo, StreamOptions, StreamRead, StreamRecordIn};
use crate::api::Declared;
use crate::error::Result;
use crate::vhost::Vhost;

impl<S: LogStore> Vhost<S> {
    fn out_stream(&self, mut info: StreamInfo) -> StreamInfo {
        info.name = self.out(info.name);
        info
    }

    /// [`Broker::declare_stream`](crate::Broker::declare_stream).
    pub async fn declare_stream(&self, name: &str, options: StreamOptions) -> Result<Declared> {
        self.still_there()?;
        let full = self.full(name)?;
        let declared = self.broker.declare_stream(&full, options).await;
        declared.map_err(|e| self.out_error(e))
    }

    /// [`Broker::alter_stream`](crate::Broker::alter_stream).
    pub async fn alter_stream(&self, name: &str, options: StreamOptions) -> Result<()> {
        let full = self.full(name)?;
        let altered = self.broker.alter_stream(&full, options).await;
        altered.map_err(|e| self.out_error(e))
    }

    /// [`Broker::delete_stream`](crate::Broker::delete_stream).
    pub async fn delete_stream(&self, name: &str) -> Result<()> {
        let full = self.full(name)?;
        let deleted = self.broker.delete_stream(&full).await;
        deleted.map_err(|e| self.out_error(e))
    }

    /// Whether `name` is a stream of this vhost.
    pub fn is_stream(&self, name: &str) -> bool {
        self.full(name)
            .is_ok_and(|full| self.broker.stream_exists(&full))
    }

    /// [`Broker::stream_info`](crate::Broker::stream_info).
    pub fn stream_info(&self, name: &str) -> Result<StreamInfo> {
        let full = self.full(name)?;
        let info = self
            .broker
            .stream_info(&full)
            .map_err(|e| self.out_error(e))?;
        Ok(self.out_stream(info))
    }

    /// The streams of this vhost, by name.
    pub fn streams(&self) -> Vec<StreamInfo> {
        self.broker
            .streams_where(|full| self.owns(full))
            .into_iter()
            .map(|s| self.out_stream(s))
            .collect()
    }

    /// [`Broker::append`](crate::Broker::append).
    pub async fn append(&self, name: &str, records: Vec<StreamRecordIn>) -> Result<Vec<Placed>> {
        let full = self.full(name)?;
        let placed = self.broker.append(&full, records).await;
        placed.map_err(|e| self.out_error(e))
    }

    /// [`Broker::append_batches`](crate::Broker::append_batches).
    pub async fn append_batches(
        &self,
        name: &str,
        parts: Vec<PartitionBatches>,
    ) -> Result<Vec<PlacedBatch>> {
        let full = self.full(name)?;
        let placed = self.broker.append_batches(&full, parts).await;
        placed.map_err(|e| self.out_error(e))
    }

    /// [`Broker::append_placed_batches`](crate::Broker::append_placed_batches).
    pub async fn append_placed_batches(
        &self,
        name: &str,
        parts: Vec<PartitionBatches>,
    ) -> Result<Vec<PlacedBatch>> {
        let full = self.full(name)?;
        let placed = self.broker.append_placed_batches(&full, parts).await;
        placed.map_err(|e| self.out_error(e))
    }

    /// [`Broker::read_stream_within`](crate::Broker::read_stream_within).
    pub async fn read_stream_within(
        &self,
        name: &str,
        partition: u32,
        offset: u64,
        max_records: u32,
        max_bytes: usize,
        wait_ms: u64,
    ) -> Result<StoredRead> {
        let full = self.full(name)?;
        let read = self
            .broker
            .read_stream_within(&full, partition, offset, max_records, max_bytes, wait_ms)
            .await;
        read.map_err(|e| self.out_error(e))
    }

    /// [`Broker::stream_offset`](crate::Broker::stream_offset).
    pub async fn stream_offset(&self, name: &str, partition: u32, from: ReadFrom) -> Result<u64> {
        let full = self.full(name)?;
        let offset = self.broker.stream_offset(&full, partition, from).await;
        offset.map_err(|e| self.out_error(e))
    }

    /// [`Broker::stream_appended`](crate::Broker::stream_appended).
    pub fn stream_appended(&self, name: &str) -> Result<std::sync::Arc<tokio::sync::Notify>> {
        let full = self.full(name)?;
        self.broker
            .stream_appended(&full)
            .map_err(|e| self.out_error(e))
    }

    /// [`Broker::commit_coordinated`](crate::Broker::commit_coordinated).
    pub async fn commit_coordinated(
        &self,
        stream: &str,
        group: &str,
        offsets: BTreeMap<u32, u64>,
        metadata: BTreeMap<u32, String>,
    ) -> Result<()> {
        let full = self.full(stream)?;
        let committed = self
            .broker
            .commit_coordinated(&full, group, offsets, metadata)
            .await;
        committed.map_err(|e| self.out_error(e))
    }

    /// [`Broker::commit_metadata`](crate::Broker::commit_metadata).
    pub fn commit_metadata(&self, stream: &str, group: &str) -> Result<BTreeMap<u32, String>> {
        let full = self.full(stream)?;
        self.broker
            .commit_metadata(&full, group)
            .map_err(|e| self.out_error(e))
    }

    /// [`Broker::committed_offsets`](crate::Broker::committed_offsets).
    pub fn committed_offsets(
        &self,
        stream: &str,
        group: &str,
    ) -> Result<Option<BTreeMap<u32, u64>>> {
        let full = self.full(stream)?;
        self.broker
            .committed_offsets(&full, group)
            .map_err(|e| self.out_error(e))
    }

    /// [`Broker::stream_id`](crate::Broker::stream_id).
    pub fn stream_id(&self, name: &str) -> Result<u64> {
        let full = self.full(name)?;
        self.broker.stream_id(&full).map_err(|e| self.out_error(e))
    }

    /// [`Broker::stream_bounds`](crate::Broker::stream_bounds).
    pub fn stream_bounds(&self, name: &str, partition: u32) -> Result<(u64, u64)> {
        let full = self.full(name)?;
        self.broker
            .stream_bounds(&full, partition)
            .map_err(|e| self.out_error(e))
    }

    /// [`Broker::trim_stream`](crate::Broker::trim_stream).
    pub async fn trim_stream(
        &self,
        name: &str,
        partition: u32,
        before: Option<u64>,
    ) -> Result<u64> {
        let full = self.full(name)?;
        let trimmed = self.broker.trim_stream(&full, partition, before).await;
        trimmed.map_err(|e| self.out_error(e))
    }

    /// [`Broker::read_stream`](crate::Broker::read_stream).
    pub async fn read_stream(
        &self,
        name: &str,
        partition: u32,
        from: ReadFrom,
        max: u32,
        wait_ms: u64,
    ) -> Result<StreamRead> {
        let full = self.full(name)?;
        let read = self
            .broker
            .read_stream(&full, partition, from, max, wait_ms)
            .await;
        read.map_err(|e| self.out_error(e))
    }

    /// [`Broker::read_stream_stored`](crate::Broker::read_stream_stored).
    pub async fn read_stream_stored(
        &self,
        name: &str,
        partition: u32,
        from: ReadFrom,
        max: u32,
        wait_ms: u64,
    ) -> Result<StoredRead> {
        let full = self.full(name)?;
        let read = self
            .broker
            .read_stream_stored(&full, partition, from, max, wait_ms)
            .await;
        read.map_err(|e| self.out_error(e))
    }

    /// [`Broker::declare_group`](crate::Broker::declare_group).
    pub async fn declare_group(
        &self,
        stream: &str,
        group: &str,
        config: GroupConfig,
    ) -> Result<Declared> {
        let full = self.full(stream)?;
        let declared = self.broker.declare_group(&full, group, config).await;
        declared.map_err(|e| self.out_error(e))
    }

    /// [`Broker::delete_group`](crate::Broker::delete_group).
    pub async fn delete_group(&self, stream: &str, group: &str) -> Result<()> {
        let full = self.full(stream)?;
        let deleted = self.broker.delete_group(&full, group).await;
        deleted.map_err(|e| self.out_error(e))
    }

    /// [`Broker::delete_offsets`](crate::Broker::delete_offsets).
    pub async fn delete_offsets(
        &self,
        stream: &str,
        group: &str,
        partitions: &[u32],
    ) -> Result<()> {
        let full = self.full(stream)?;
        let deleted = self.broker.delete_offsets(&full, group, partitions).await;
        deleted.map_err(|e| self.out_error(e))
    }

    /// [`Broker::groups`](crate::Broker::groups).
    pub async fn groups(&self, stream: &str) -> Result<Vec<GroupInfo>> {
        let full = self.full(stream)?;
        let groups = self.broker.groups(&full).await;
        groups.map_err(|e| self.out_error(e))
    }

    /// [`Broker::group`](crate::Broker::group).
    pub async fn group(&self, stream: &str, group: &str) -> Result<GroupInfo> {
        let full = self.full(stream)?;
        let info = self.broker.group(&full, group).await;
        info.map_err(|e| self.out_error(e))
    }

    /// [`Broker::poll`](crate::Broker::poll).
    pub async fn poll(
        &self,
        stream: &str,
        group: &str,
        member: &str,
        max: u32,
        wait_ms: u64,
    ) -> Result<GroupPoll> {
        let full = self.full(stream)?;
        let polled = self.broker.poll(&full, group, member, max, wait_ms).await;
        polled.map_err(|e| self.out_error(e))
    }

    /// [`Broker::poll_with`](crate::Broker::poll_with).
    pub async fn poll_with(
        &self,
        stream: &str,
        group: &str,
        member: &str,
        options: PollOptions,
    ) -> Result<GroupPoll> {
        let full = self.full(stream)?;
        let polled = self.broker.poll_with(&full, group, member, options).await;
        polled.map_err(|e| self.out_error(e))
    }

    /// [`Broker::commit`](crate::Broker::commit).
    pub async fn commit(
        &self,
        stream: &str,
        group: &str,
        member: &str,
        offsets: BTreeMap<u32, u64>,
    ) -> Result<()> {
        let full = self.full(stream)?;
        let committed = self.broker.commit(&full, group, member, offsets).await;
        committed.map_err(|e| self.out_error(e))
    }

    /// [`Broker::leave`](crate::Broker::leave).
    pub fn leave(&self, stream: &str, group: &str, member: &str) -> Result<bool> {
        let full = self.full(stream)?;
        self.broker
            .leave(&full, group, member)
            .map_err(|e| self.out_error(e))
    }

    /// [`Broker::tracked_offset`](crate::Broker::tracked_offset).
    pub fn tracked_offset(&self, stream: &str, tag: &str) -> Result<Option<u64>> {
        let full = self.full(stream)?;
        self.broker
            .tracked_offset(&full, tag)
            .map_err(|e| self.out_error(e))
    }

    /// [`Broker::track_offset`](crate::Broker::track_offset).
    pub async fn track_offset(&self, stream: &str, tag: &str, next: u64) -> Result<()> {
        let full = self.full(stream)?;
        let tracked = self.broker.track_offset(&full, tag, next).await;
        tracked.map_err(|e| self.out_error(e))
    }

    /// [`Broker::reset_group`](crate::Broker::reset_group).
    pub async fn reset_group(
        &self,
        stream: &str,
        group: &str,
        to: ReadFrom,
        dry_run: bool,
    ) -> Result<BTreeMap<u32, u64>> {
        let full = self.full(stream)?;
        let reset = self.broker.reset_group(&full, group, to, dry_run).await;
        reset.map_err(|e| self.out_error(e))
    }
}
