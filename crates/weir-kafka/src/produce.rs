//! Produce: each partition's record batches are checked and decoded
//! ([`crate::records`]), turned into the log's batches and appended where the
//! producer put them; acks 1 and all are answered once the append is synced (as
//! every durable append in weir), acks 0 not at all. Partitions are appended
//! together, so a request for many partitions waits for one group commit, and an
//! error is that partition's only.
//!
//! Permissions: `write` on the stream. A transactional producer's batches are
//! refused: weir has no transactions.

use std::time::{SystemTime, UNIX_EPOCH};

use futures_util::future::join_all;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use kafka_protocol::protocol::StrBytes;
use weir_broker::access::Operation;
use weir_broker::stream::{IncomingBatch, PartitionBatches};

use crate::errors;
use crate::records::{self, RecordError};
use crate::session::Session;

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

impl Session {
    /// Produce's answer; `None` for acks 0.
    pub(crate) async fn produce(&self, request: ProduceRequest) -> Option<ProduceResponse> {
        let transactional = request.transactional_id.is_some();
        let mut appends = Vec::new();
        let mut refused = Vec::new();
        for topic in request.topic_data {
            let name = topic.name.0.to_string();
            let refusal = if transactional {
                Some((
                    ResponseError::TransactionalIdAuthorizationFailed.code(),
                    "transactions are not supported by weir".to_owned(),
                ))
            } else if !self.allowed(Operation::Write, &name) {
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
                if let Some((code, message)) = &refusal {
                    refused.push((
                        topic.name.clone(),
                        answer(part.index, *code, Some(message.clone())),
                    ));
                    continue;
                }
                match self.batches_of(part.index, &part.records.unwrap_or_default()) {
                    Ok(batches) => {
                        appends.push((topic.name.clone(), name.clone(), part.index, batches));
                    }
                    Err((code, message)) => {
                        refused.push((topic.name.clone(), answer(part.index, code, Some(message))));
                    }
                }
            }
        }
        let appended = join_all(appends.into_iter().map(
            |(topic, name, index, batches)| async move {
                let placed = self
                    .broker
                    .append_placed_batches(&name, vec![batches])
                    .await;
                let response = match placed {
                    Ok(placed) => {
                        let mut r = answer(index, errors::NONE, None);
                        r.base_offset = placed
                            .first()
                            .map_or(-1, |p| i64::try_from(p.offset).unwrap_or(-1));
                        r.log_append_time_ms = now_ms();
                        let first = u32::try_from(index)
                            .ok()
                            .and_then(|p| self.broker.stream_bounds(&name, p).ok());
                        r.log_start_offset =
                            first.map_or(-1, |(first, _)| i64::try_from(first).unwrap_or(-1));
                        r
                    }
                    Err(e) => answer(index, errors::code(&e), Some(e.to_string())),
                };
                (topic, response)
            },
        ))
        .await;
        if request.acks == 0 {
            return None;
        }
        let mut response = ProduceResponse::default();
        for (topic, partition) in appended.into_iter().chain(refused) {
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

    /// A partition's record set as the log's batches, one per Kafka batch.
    fn batches_of(
        &self,
        index: i32,
        records: &bytes::Bytes,
    ) -> Result<PartitionBatches, (i16, String)> {
        let partition = u32::try_from(index).map_err(|_| {
            (
                ResponseError::UnknownTopicOrPartition.code(),
                format!("partition {index}"),
            )
        })?;
        let parsed = records::parse_batches(records, self.config.max_uncompressed_batch_bytes)
            .map_err(|e| (record_error(&e), e.to_string()))?;
        let mut batches = Vec::with_capacity(parsed.len());
        for batch in parsed {
            let encoded = IncomingBatch::encode(&batch.records)
                .map_err(|e| (ResponseError::MessageTooLarge.code(), e.to_string()))?;
            let mut incoming = IncomingBatch::parse(&encoded)
                .map_err(|e| (ResponseError::CorruptMessage.code(), e.to_string()))?;
            batches.append(&mut incoming);
        }
        Ok(PartitionBatches { partition, batches })
    }
}
