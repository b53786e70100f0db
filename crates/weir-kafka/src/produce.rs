//! Produce: each partition's record batches are checked and decoded
//! ([`crate::records`]), turned into the log's batches and appended where the
//! producer put them; acks 1 and all are answered once the append is synced (as
//! every durable append in weir), acks 0 not at all. Partitions are appended
//! together, so a request for many partitions waits for one group commit, and an
//! error is that partition's only.
//!
//! An idempotent producer's batches go through [`crate::producers`] first: a
//! retried batch is answered with its first offset and not stored twice.
//!
//! Permissions: `write` on the stream. A transactional producer's batches are
//! refused: weir has no transactions.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use futures_util::future::join_all;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{
    InitProducerIdRequest, InitProducerIdResponse, ProduceRequest, ProduceResponse, ProducerId,
};
use kafka_protocol::protocol::StrBytes;
use weir_broker::Vhost;
use weir_broker::access::{Operation, Principal};
use weir_broker::stream::{MAX_READ_RECORDS, PartitionBatches, visit_stored};

use crate::config::KafkaConfig;
use crate::errors;
use crate::metadata::permitted;
use crate::producers::{PRODUCER_HEADER, Place, SCAN_RECORDS, Stamp, Verdict};
use crate::records::{self, InBatch, RecordError};
use crate::state::{Session, Shared};

/// The Kafka error a refused batch answers.
fn record_error(e: &RecordError) -> i16 {
    match e {
        RecordError::Corrupt(_) => ResponseError::CorruptMessage,
        RecordError::Magic(_) => ResponseError::UnsupportedForMessageFormat,
        RecordError::TooLarge(_) => ResponseError::RecordListTooLarge,
        RecordError::Transactional => ResponseError::TransactionalIdAuthorizationFailed,
    }
    .code()
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// One partition's answer.
fn answer(index: i32, code: i16, message: Option<String>) -> PartitionProduceResponse {
    let mut r = PartitionProduceResponse::default();
    r.index = index;
    r.error_code = code;
    r.base_offset = -1;
    r.log_append_time_ms = -1;
    r.log_start_offset = -1;
    r.error_message = message.map(StrBytes::from_string);
    r
}

/// What a Produce needs of its connection, owned, so that an answer can be
/// awaited while the connection reads on (see `session.rs` on pipelining).
pub(crate) struct Producing {
    broker: Vhost,
    config: Arc<KafkaConfig>,
    shared: Arc<Shared>,
    who: Option<Principal>,
}

impl Session {
    /// This connection's producing context.
    pub(crate) fn producing(&self) -> Producing {
        Producing {
            broker: self.broker.clone(),
            config: self.config.clone(),
            shared: self.shared.clone(),
            who: self.who.clone(),
        }
    }
}

/// Whether a Produce may be answered while the requests after it are read: one
/// without transactions or idempotent producers' batches, whose sequences are
/// judged against the batches before them once those are stored.
pub(crate) fn pipelines(request: &ProduceRequest) -> bool {
    request.transactional_id.is_none()
        && request
            .topic_data
            .iter()
            .flat_map(|t| &t.partition_data)
            .all(|p| {
                p.records
                    .as_ref()
                    .is_none_or(|r| !records::names_a_producer(r))
            })
}

impl Producing {
    /// Produce's answer; `None` for acks 0. Every append is queued by the first
    /// poll of this future, in the order of the request's partitions.
    pub(crate) async fn produce(&self, request: ProduceRequest) -> Option<ProduceResponse> {
        let transactional = request.transactional_id.is_some();
        let mut work = Vec::new();
        for topic in request.topic_data {
            let name = topic.name.0.to_string();
            let refusal = if transactional {
                Some((
                    ResponseError::TransactionalIdAuthorizationFailed.code(),
                    "transactions are not supported by weir".to_owned(),
                ))
            } else if !permitted(self.who.as_ref(), &self.broker, Operation::Write, &name) {
                Some((
                    ResponseError::TopicAuthorizationFailed.code(),
                    format!("no write permission on '{name}'"),
                ))
            } else if !self.broker.is_stream(&name) {
                Some((
                    ResponseError::UnknownTopicOrPartition.code(),
                    format!("no topic '{name}'"),
                ))
            } else {
                None
            };
            for part in topic.partition_data {
                work.push((
                    topic.name.clone(),
                    name.clone(),
                    part.index,
                    part.records.unwrap_or_default(),
                    refusal.clone(),
                ));
            }
        }
        // Every partition at once: their appends share group commits.
        let answered = join_all(work.into_iter().map(
            |(topic, name, index, records, refusal)| async move {
                let answer = match refusal {
                    Some((code, message)) => answer(index, code, Some(message)),
                    None => self.produce_partition(&name, index, &records).await,
                };
                (topic, answer)
            },
        ))
        .await;
        if request.acks == 0 {
            return None;
        }
        let mut response = ProduceResponse::default();
        for (topic, partition) in answered {
            if let Some(t) = response.responses.iter_mut().find(|t| t.name == topic) {
                t.partition_responses.push(partition);
            } else {
                let mut t = TopicProduceResponse::default();
                t.name = topic;
                t.partition_responses.push(partition);
                response.responses.push(t);
            }
        }
        Some(response)
    }

    /// One partition's record set: checked, judged (idempotent producers),
    /// appended, answered.
    async fn produce_partition(
        &self,
        name: &str,
        index: i32,
        records: &bytes::Bytes,
    ) -> PartitionProduceResponse {
        let Ok(partition) = u32::try_from(index) else {
            return answer(
                index,
                ResponseError::UnknownTopicOrPartition.code(),
                Some(format!("partition {index}")),
            );
        };
        let parsed = match records::parse_batches(records, self.config.max_uncompressed_batch_bytes)
        {
            Ok(parsed) => parsed,
            Err(e) => return answer(index, record_error(&e), Some(e.to_string())),
        };
        // Where an idempotent producer's batches go, looked up at the first one.
        let mut place = None;
        let mut first_offset = None;
        let mut batches = Vec::with_capacity(parsed.len());
        let mut stamps = Vec::new();
        for batch in parsed {
            let stamp = stamp_of(&batch);
            if let Some(stamp) = stamp {
                let at = match place {
                    Some(at) => at,
                    None => match self.broker.stream_id(name) {
                        Ok(stream) => *place.insert(Place {
                            topic: name,
                            stream,
                            partition,
                        }),
                        Err(e) => return answer(index, errors::code(&e), Some(e.to_string())),
                    },
                };
                match self.judge(at, stamp).await {
                    Verdict::Append => {}
                    Verdict::Duplicate(offset) => {
                        tracing::info!(
                            topic = name,
                            partition,
                            producer = stamp.id,
                            sequence = stamp.first,
                            offset,
                            "a retried batch was stored before: answered, not stored again"
                        );
                        first_offset.get_or_insert(offset);
                        continue;
                    }
                    Verdict::Refuse(code) => {
                        return answer(
                            index,
                            code,
                            Some(format!("producer {} sequence {}", stamp.id, stamp.first)),
                        );
                    }
                }
            }
            stamps.push(stamp);
            batches.push(batch.batch);
        }
        let mut r = answer(index, errors::NONE, None);
        if !batches.is_empty() {
            let parts = vec![PartitionBatches { partition, batches }];
            match self.broker.append_placed_batches(name, parts).await {
                Ok(placed) => {
                    for (stamp, batch) in stamps.iter().zip(&placed) {
                        if let (Some(stamp), Some(at)) = (stamp, place) {
                            self.shared.producers.appended(at, *stamp, batch.offset);
                        }
                    }
                    first_offset = first_offset.or(placed.first().map(|p| p.offset));
                }
                Err(e) => return answer(index, errors::code(&e), Some(e.to_string())),
            }
        }
        r.base_offset = first_offset.map_or(-1, |o| i64::try_from(o).unwrap_or(-1));
        r.log_append_time_ms = now_ms();
        let bounds = self.broker.stream_bounds(name, partition).ok();
        r.log_start_offset = bounds.map_or(-1, |(first, _)| i64::try_from(first).unwrap_or(-1));
        r
    }

    /// The verdict on an idempotent producer's batch, once the partition's
    /// producers are known (read back from its newest records after a start).
    async fn judge(&self, place: Place<'_>, stamp: Stamp) -> Verdict {
        if !self.shared.producers.loaded(place) {
            let found = self.stamps_in(place.topic, place.partition).await;
            self.shared.producers.load(place, &found);
        }
        self.shared.producers.check(place, stamp)
    }

    /// The producer stamps of the newest [`SCAN_RECORDS`] records of a partition.
    async fn stamps_in(&self, name: &str, partition: u32) -> Vec<(u64, Stamp)> {
        let mut found = Vec::new();
        let Ok((first, next)) = self.broker.stream_bounds(name, partition) else {
            return found;
        };
        let mut at = next.saturating_sub(SCAN_RECORDS).max(first);
        while at < next {
            let Ok(read) = self
                .broker
                .read_stream_within(name, partition, at, MAX_READ_RECORDS, 8 << 20, 0)
                .await
            else {
                break;
            };
            if read.batches.next.0 <= at {
                break;
            }
            for bytes in &read.batches.batches {
                if let Some((id, epoch, first, count, offset)) = records::stored_producer(bytes) {
                    found.push((offset, Stamp::of(id, epoch, first, count)));
                    continue;
                }
                // Written before batches were stored as Kafka's: the producer in a
                // reserved header of the batch's first record.
                let _ = visit_stored(bytes, read.batches.from, |r| {
                    if let Some((_, v)) = r
                        .headers
                        .iter()
                        .find(|(k, _)| *k == PRODUCER_HEADER.as_bytes())
                        && let Some(stamp) = Stamp::parse(v)
                    {
                        found.push((r.offset, stamp));
                    }
                });
            }
            at = read.batches.next.0;
        }
        found
    }
}

/// An idempotent producer's batch stamp, if it has one.
fn stamp_of(batch: &InBatch) -> Option<Stamp> {
    (batch.producer_id >= 0).then(|| {
        Stamp::of(
            batch.producer_id,
            batch.producer_epoch,
            batch.base_sequence,
            batch.batch.count(),
        )
    })
}

impl Session {
    /// InitProducerId: a new producer id (epoch 0), or the same id with the next
    /// epoch when the producer asks to bump its own (version 3 and later).
    /// Transactional producers are refused: weir has no transactions.
    pub(crate) fn init_producer_id(
        &self,
        request: &InitProducerIdRequest,
    ) -> InitProducerIdResponse {
        let mut response = InitProducerIdResponse::default();
        if request.transactional_id.is_some() {
            response.error_code = ResponseError::UnsupportedVersion.code();
            response.producer_id = ProducerId(-1);
            response.producer_epoch = -1;
            return response;
        }
        let (id, epoch) =
            if request.producer_id.0 >= 0 && (0..i16::MAX - 1).contains(&request.producer_epoch) {
                (request.producer_id.0, request.producer_epoch + 1)
            } else {
                (self.shared.producers.new_id(), 0)
            };
        response.producer_id = ProducerId(id);
        response.producer_epoch = epoch;
        response
    }
}
