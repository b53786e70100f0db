//! Broker errors as Kafka error codes, in a leaf module.

use kafka_protocol::ResponseError;
use weir_broker::{BrokerError, Kind, StorageFailure};

/// The Kafka error code closest to `e`.
pub(crate) fn code(e: &BrokerError) -> i16 {
    let error = match e {
        BrokerError::NotFound {
            kind: Kind::Group, ..
        } => ResponseError::GroupIdNotFound,
        BrokerError::NotFound { .. } => ResponseError::UnknownTopicOrPartition,
        BrokerError::Conflict { .. } => ResponseError::TopicAlreadyExists,
        BrokerError::InvalidName { .. } => ResponseError::InvalidTopicException,
        BrokerError::AccessRefused { .. } => ResponseError::TopicAuthorizationFailed,
        BrokerError::InvalidArgument { field, .. } if field == "partition" => {
            ResponseError::UnknownTopicOrPartition
        }
        BrokerError::InvalidArgument { .. } | BrokerError::PreconditionFailed { .. } => {
            ResponseError::InvalidRequest
        }
        BrokerError::LimitExceeded { .. } => ResponseError::PolicyViolation,
        BrokerError::Storage {
            failure: StorageFailure::TooLarge,
            ..
        } => ResponseError::MessageTooLarge,
        BrokerError::Storage { .. } => ResponseError::KafkaStorageError,
        BrokerError::Unavailable { .. } => ResponseError::LeaderNotAvailable,
        BrokerError::NotOwner { .. } => ResponseError::UnknownMemberId,
        _ => ResponseError::UnknownServerError,
    };
    error.code()
}

/// Kafka's "no error".
pub(crate) const NONE: i16 = 0;
