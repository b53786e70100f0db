//! OffsetDelete (`kafka-consumer-groups --delete-offsets`, the admin clients'
//! `deleteConsumerGroupOffsets`): a group's committed offsets of some partitions
//! go, so the group starts those partitions again by its `auto.offset.reset`; the
//! group and its other offsets stay. As Kafka's coordinator answers it:
//! - no such group (no member and no offsets): `GROUP_ID_NOT_FOUND`;
//! - members of another protocol than `consumer`: `NON_EMPTY_GROUP`;
//! - a topic a live member subscribes to: `GROUP_SUBSCRIBED_TO_TOPIC` for its
//!   partitions (its offsets are in use), and the same while members of weir's own
//!   (HTTP or AMQP) groups read the stream;
//! - `read` on the stream is needed, as for committing.

use std::collections::HashSet;

use bytes::Bytes;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::{
    ConsumerProtocolSubscription, OffsetDeleteRequest, OffsetDeleteResponse,
};
use kafka_protocol::protocol::Decodable as _;
use weir_broker::BrokerError;
use weir_broker::access::Operation;

use crate::coordinator::GroupView;
use crate::errors;
use crate::state::Session;

/// The topics a live group's members subscribe to; `None` for every topic (a
/// subscription that does not decode).
fn subscriptions(group: &GroupView) -> Option<HashSet<String>> {
    let mut topics = HashSet::new();
    for member in &group.members {
        topics.extend(subscribed(&member.metadata)?);
    }
    Some(topics)
}

/// The topics of one member's `consumer` protocol metadata.
fn subscribed(metadata: &Bytes) -> Option<Vec<String>> {
    let version = i16::from_be_bytes(metadata.get(..2)?.try_into().ok()?);
    let mut rest = metadata.slice(2..);
    // A newer version than the codec knows starts as the newest it knows.
    let version = version.clamp(0, 3);
    let s = ConsumerProtocolSubscription::decode(&mut rest, version).ok()?;
    Some(s.topics.iter().map(ToString::to_string).collect())
}

impl Session {
    pub(crate) async fn offset_delete(&self, request: OffsetDeleteRequest) -> OffsetDeleteResponse {
        let group = request.group_id.0.to_string();
        let mut response = OffsetDeleteResponse::default();
        let view = self
            .shared
            .coordinator
            .views(Some(std::slice::from_ref(&group)))
            .into_iter()
            .find(|v| !v.members.is_empty());
        if let Some(v) = &view
            && v.protocol_type != "consumer"
        {
            response.error_code = ResponseError::NonEmptyGroup.code();
            return response;
        }
        // Only streams the user may read count: an unknown group and one it may
        // not see answer alike.
        if view.is_none() && !self.has_offsets(&group, true) {
            response.error_code = ResponseError::GroupIdNotFound.code();
            return response;
        }
        // The members' subscriptions, then the delete: a member that joins in
        // between may lose offsets it is about to read from (Kafka holds the
        // group's lock across both; its auto.offset.reset then applies).
        let in_use = view.as_ref().map(subscriptions);
        for topic in request.topics {
            let name = topic.name.0.to_string();
            let asked: Vec<i32> = topic.partitions.iter().map(|p| p.partition_index).collect();
            let refused = if !self.allowed(Operation::Read, &name) {
                Some(ResponseError::TopicAuthorizationFailed.code())
            } else if in_use
                .as_ref()
                .is_some_and(|t| t.as_ref().is_none_or(|t| t.contains(&name)))
            {
                Some(ResponseError::GroupSubscribedToTopic.code())
            } else {
                None
            };
            let codes = match refused {
                Some(code) => asked.iter().map(|p| (*p, code)).collect(),
                None => self.uncommit(&name, &group, &asked).await,
            };
            let mut result = OffsetDeleteResponseTopic::default();
            result.name = topic.name;
            result.partitions = codes
                .into_iter()
                .map(|(index, code)| {
                    let mut p = OffsetDeleteResponsePartition::default();
                    p.partition_index = index;
                    p.error_code = code;
                    p
                })
                .collect();
            response.topics.push(result);
        }
        response
    }

    /// Deletes `group`'s offsets of the `asked` partitions of `topic`: each
    /// partition with its error code (one the topic lacks: its own
    /// `UNKNOWN_TOPIC_OR_PARTITION`, the others deleted).
    async fn uncommit(&self, topic: &str, group: &str, asked: &[i32]) -> Vec<(i32, i16)> {
        let count = match self.broker.stream_info(topic) {
            Ok(info) => info.options.partitions,
            Err(e) => return asked.iter().map(|p| (*p, errors::code(&e))).collect(),
        };
        let valid = |p: i32| u32::try_from(p).ok().filter(|p| *p < count);
        let mut partitions: Vec<u32> = asked.iter().filter_map(|p| valid(*p)).collect();
        partitions.sort_unstable();
        partitions.dedup();
        let code = if partitions.is_empty() {
            errors::NONE
        } else {
            match self.broker.delete_offsets(topic, group, &partitions).await {
                // No offsets of the group on this stream: nothing to delete.
                Ok(())
                | Err(BrokerError::NotFound {
                    kind: weir_broker::Kind::Group,
                    ..
                }) => errors::NONE,
                Err(BrokerError::PreconditionFailed { .. }) => {
                    ResponseError::GroupSubscribedToTopic.code()
                }
                Err(e) => errors::code(&e),
            }
        };
        let unknown = ResponseError::UnknownTopicOrPartition.code();
        asked
            .iter()
            .map(|p| (*p, if valid(*p).is_some() { code } else { unknown }))
            .collect()
    }
}
