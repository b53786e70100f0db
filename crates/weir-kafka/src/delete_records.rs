//! DeleteRecords (`kafka-delete-records`, the admin clients' `deleteRecords`):
//! each named partition's records below an offset go, as the stream's trim
//! ([`weir_broker::Vhost::trim_stream`]) removes them: the partition's first
//! offset moves there durably and whole segments below it are reclaimed, so the
//! same records are gone over HTTP and AMQP too. Offset -1 is the partition's end
//! (Kafka's high watermark). Kafka asks for `DELETE` on the topic; weir asks for
//! `configure` on the stream, as it does to delete the topic.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};
use weir_broker::access::Operation;

use crate::errors;
use crate::state::Session;

impl Session {
    pub(crate) async fn delete_records(
        &self,
        request: DeleteRecordsRequest,
    ) -> DeleteRecordsResponse {
        let mut response = DeleteRecordsResponse::default();
        for topic in request.topics {
            let name = topic.name.0.to_string();
            let allowed = self.allowed(Operation::Configure, &name);
            let mut result = DeleteRecordsTopicResult::default();
            result.name = topic.name;
            for asked in topic.partitions {
                let mut p = DeleteRecordsPartitionResult::default();
                p.partition_index = asked.partition_index;
                p.low_watermark = -1;
                let outcome = if allowed {
                    self.trim(&name, asked.partition_index, asked.offset).await
                } else {
                    Err(ResponseError::TopicAuthorizationFailed.code())
                };
                match outcome {
                    Ok(first) => p.low_watermark = i64::try_from(first).unwrap_or(i64::MAX),
                    Err(code) => p.error_code = code,
                }
                result.partitions.push(p);
            }
            response.topics.push(result);
        }
        response
    }

    /// Trims `partition` of `topic` below `offset` (-1: its end); the partition's
    /// first offset after, or the error code. The stream checks the topic, the
    /// partition, then the offset against its end (an offset below -1 is past any
    /// end).
    async fn trim(&self, topic: &str, partition: i32, offset: i64) -> Result<u64, i16> {
        let partition =
            u32::try_from(partition).map_err(|_| ResponseError::UnknownTopicOrPartition.code())?;
        let before = match offset {
            -1 => None,
            o => Some(u64::try_from(o).unwrap_or(u64::MAX)),
        };
        let trimmed = self.broker.trim_stream(topic, partition, before).await;
        trimmed.map_err(|e| match e {
            weir_broker::BrokerError::InvalidArgument { field, .. } if field == "before" => {
                ResponseError::OffsetOutOfRange.code()
            }
            e => errors::code(&e),
        })
    }
}
