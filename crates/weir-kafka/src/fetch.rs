//! Fetch and ListOffsets.
//!
//! Fetch reads each asked partition from its offset within the partition's and the
//! request's byte budgets (at least one batch, as Kafka does). A batch a Kafka
//! producer sent is stored as it came and goes back as stored, compressed or not,
//! without parsing a record; a batch appended over HTTP or AMQP (weir's format)
//! becomes one uncompressed Kafka batch ([`crate::records::OutBatch`]).
//! Either may start before the offset asked for: clients skip those records.
//! With fewer than `min_bytes` it waits for an append to one of the topics, up to
//! `max_wait_ms` (cut to the configured `max_wait`), or until the client sends
//! another kind of request on the connection (`session.rs`). An offset below the
//! first kept or past the end answers `OFFSET_OUT_OF_RANGE`, so the client applies its
//! `auto.offset.reset`. There are no transactions, so `read_committed` reads what
//! `read_uncommitted` does, and the last stable offset is the high watermark. No
//! fetch sessions (KIP-227): the answer's session id 0 tells clients to send full
//! fetches.
//!
//! Permissions: `read` on the stream.

use std::time::Duration;

use bytes::BytesMut;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{
    BrokerId, FetchRequest, FetchResponse, ListOffsetsRequest, ListOffsetsResponse,
};
use weir_broker::access::Operation;
use weir_broker::stream::{MAX_READ_RECORDS, ReadFrom, visit_stored};

use crate::errors;
use crate::records::{self, OutBatch};
use crate::state::Session;

/// ListOffsets' special timestamps.
const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn empty_partition(index: i32, code: i16) -> PartitionData {
    let mut p = PartitionData::default();
    p.partition_index = index;
    p.error_code = code;
    p.high_watermark = -1;
    p.last_stable_offset = -1;
    p.log_start_offset = -1;
    p.aborted_transactions = Some(Vec::new());
    p.preferred_read_replica = BrokerId(-1);
    p.records = Some(bytes::Bytes::new());
    p
}

impl Session {
    pub(crate) async fn fetch(&self, request: FetchRequest) -> FetchResponse {
        let wait = Duration::from_millis(u64::try_from(request.max_wait_ms).unwrap_or(0))
            .min(self.config.max_wait);
        let deadline = tokio::time::Instant::now() + wait;
        let min_bytes = usize::try_from(request.min_bytes).unwrap_or(0);
        loop {
            // Taken before reading: an append between the read and the wait wakes it.
            let woken: Vec<_> = request
                .topics
                .iter()
                .filter_map(|t| self.broker.stream_appended(t.topic.0.as_str()).ok())
                .collect();
            let mut waits: Vec<_> = woken.iter().map(|n| Box::pin(n.notified())).collect();
            for w in &mut waits {
                w.as_mut().enable();
            }
            let (response, bytes, failed) = self.fetch_once(&request).await;
            let now = tokio::time::Instant::now();
            if bytes >= min_bytes.max(1) || failed || now >= deadline || waits.is_empty() {
                return response;
            }
            tokio::select! {
                _ = futures_util::future::select_all(waits) => {}
                () = tokio::time::sleep_until(deadline) => {}
                () = self.config.shutdown.cancelled() => return response,
                () = self.next_request.cancelled() => return response,
            }
        }
    }

    /// One pass over the asked partitions: the answer, its record bytes, and whether
    /// a partition answered an error (which answers at once).
    async fn fetch_once(&self, request: &FetchRequest) -> (FetchResponse, usize, bool) {
        let mut budget = usize::try_from(request.max_bytes).unwrap_or(0).max(1);
        let (mut total, mut failed) = (0usize, false);
        let mut response = FetchResponse::default();
        for topic in &request.topics {
            let name = topic.topic.0.as_str();
            let readable = self.allowed(Operation::Read, name);
            let mut out = FetchableTopicResponse::default();
            out.topic = topic.topic.clone();
            for part in &topic.partitions {
                let data = if readable {
                    self.fetch_partition(
                        name,
                        part.partition,
                        part.fetch_offset,
                        part.partition_max_bytes,
                        budget,
                    )
                    .await
                } else {
                    empty_partition(
                        part.partition,
                        ResponseError::TopicAuthorizationFailed.code(),
                    )
                };
                let len = data.records.as_ref().map_or(0, bytes::Bytes::len);
                failed |= data.error_code != errors::NONE;
                total += len;
                budget = budget.saturating_sub(len);
                out.partitions.push(data);
            }
            response.responses.push(out);
        }
        (response, total, failed)
    }

    async fn fetch_partition(
        &self,
        name: &str,
        index: i32,
        offset: i64,
        max_bytes: i32,
        budget: usize,
    ) -> PartitionData {
        let Ok(partition) = u32::try_from(index) else {
            return empty_partition(index, ResponseError::UnknownTopicOrPartition.code());
        };
        let (first, next) = match self.broker.stream_bounds(name, partition) {
            Ok(bounds) => bounds,
            Err(e) => return empty_partition(index, errors::code(&e)),
        };
        let mut data = empty_partition(index, errors::NONE);
        data.high_watermark = to_i64(next);
        data.last_stable_offset = to_i64(next);
        data.log_start_offset = to_i64(first);
        let offset = match u64::try_from(offset) {
            Ok(o) if o >= first && o <= next => o,
            _ => {
                data.error_code = ResponseError::OffsetOutOfRange.code();
                return data;
            }
        };
        if offset == next || budget == 0 {
            return data;
        }
        let max_bytes = usize::try_from(max_bytes)
            .unwrap_or(0)
            .clamp(1, budget.max(1));
        let read = match self
            .broker
            .read_stream_within(name, partition, offset, MAX_READ_RECORDS, max_bytes, 0)
            .await
        {
            Ok(read) => read,
            Err(e) => {
                data.error_code = errors::code(&e);
                return data;
            }
        };
        let mut out = BytesMut::with_capacity(read.batches.bytes + 64);
        for stored in &read.batches.batches {
            if records::is_kafka(stored) {
                out.extend_from_slice(stored);
                continue;
            }
            let mut batch = OutBatch::default();
            if let Err(e) = visit_stored(stored, read.batches.from, |r| batch.push(&r)) {
                tracing::error!(topic = name, partition, error = %e, "a stored batch does not parse");
                data.error_code = ResponseError::KafkaStorageError.code();
                return data;
            }
            if !batch.is_empty() {
                batch.finish(&mut out);
            }
        }
        data.records = Some(out.freeze());
        data
    }

    pub(crate) async fn list_offsets(&self, request: ListOffsetsRequest) -> ListOffsetsResponse {
        let mut response = ListOffsetsResponse::default();
        for topic in request.topics {
            let name = topic.name.0.to_string();
            let readable = self.allowed(Operation::Read, &name);
            let mut out = ListOffsetsTopicResponse::default();
            out.name = topic.name;
            for part in topic.partitions {
                let mut p = ListOffsetsPartitionResponse::default();
                p.partition_index = part.partition_index;
                p.timestamp = -1;
                p.offset = -1;
                if readable {
                    match self
                        .offset_for(&name, part.partition_index, part.timestamp)
                        .await
                    {
                        Ok((offset, timestamp)) => {
                            p.offset = offset;
                            p.timestamp = timestamp;
                        }
                        Err(code) => p.error_code = code,
                    }
                } else {
                    p.error_code = ResponseError::TopicAuthorizationFailed.code();
                }
                out.partitions.push(p);
            }
            response.topics.push(out);
        }
        response
    }

    /// The offset (and its record's timestamp, -1 for the ends) ListOffsets answers
    /// for `timestamp`: the end, the start, the newest record, or the first record
    /// appended at or after it (-1 if none is).
    async fn offset_for(&self, name: &str, index: i32, timestamp: i64) -> Result<(i64, i64), i16> {
        let partition =
            u32::try_from(index).map_err(|_| ResponseError::UnknownTopicOrPartition.code())?;
        let (first, next) = self
            .broker
            .stream_bounds(name, partition)
            .map_err(|e| errors::code(&e))?;
        let at = match timestamp {
            LATEST => return Ok((to_i64(next), -1)),
            EARLIEST => return Ok((to_i64(first), -1)),
            MAX_TIMESTAMP if next == first => return Ok((-1, -1)),
            MAX_TIMESTAMP => next - 1,
            t if t < 0 => return Err(ResponseError::InvalidRequest.code()),
            t => {
                let found = self
                    .broker
                    .stream_offset(name, partition, ReadFrom::Time(t))
                    .await
                    .map_err(|e| errors::code(&e))?;
                if found >= next {
                    return Ok((-1, -1));
                }
                found
            }
        };
        let read = self
            .broker
            .read_stream(name, partition, ReadFrom::Offset(at), 1, 0)
            .await
            .map_err(|e| errors::code(&e))?;
        let stamp = read.records.first().map_or(-1, |r| r.timestamp_ms);
        Ok((to_i64(at), stamp))
    }
}
