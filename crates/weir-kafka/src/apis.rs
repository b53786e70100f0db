//! The APIs and versions weir serves ([`SERVED`]), ApiVersions' answer, and the
//! version check every request goes through. The ranges are those whose fields weir
//! answers in full: what current librdkafka, the Java client and kafka-python ask
//! for (docs/kafka-compat.md).

use kafka_protocol::ResponseError;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsResponse, RequestHeader};

/// Each served API with its lowest and highest version.
pub(crate) const SERVED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 10),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 7),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::DescribeLogDirs, 1, 4),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::FindCoordinator, 0, 4),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::OffsetCommit, 2, 8),
    (ApiKey::OffsetFetch, 1, 8),
    (ApiKey::ListGroups, 0, 4),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::OffsetDelete, 0, 0),
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::DescribeCluster, 0, 2),
    (ApiKey::SaslHandshake, 1, 1),
    (ApiKey::SaslAuthenticate, 0, 2),
];

/// Whether `version` of `key` is served.
pub(crate) fn serves(key: ApiKey, version: i16) -> bool {
    SERVED
        .iter()
        .any(|(k, min, max)| *k == key && (*min..=*max).contains(&version))
}

fn list() -> Vec<ApiVersion> {
    SERVED
        .iter()
        .map(|(key, min, max)| {
            ApiVersion::default()
                .with_api_key(*key as i16)
                .with_min_version(*min)
                .with_max_version(*max)
        })
        .collect()
}

/// ApiVersions' answer.
pub(crate) fn api_versions() -> ApiVersionsResponse {
    ApiVersionsResponse::default().with_api_keys(list())
}

/// ApiVersions at a version weir does not serve: `UNSUPPORTED_VERSION` with the
/// list, answered at version 0 so any client reads it (Kafka's behaviour).
pub(crate) fn unsupported(_header: &RequestHeader) -> ApiVersionsResponse {
    ApiVersionsResponse::default()
        .with_error_code(ResponseError::UnsupportedVersion.code())
        .with_api_keys(list())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::protocol::Message as _;

    #[test]
    fn every_served_range_is_one_the_codec_has() {
        for (key, min, max) in SERVED {
            let codec = key.valid_versions();
            assert!(
                codec.min <= *min && *max <= codec.max,
                "{key:?} {min}..={max} is outside the codec's {codec}"
            );
        }
        assert!(serves(ApiKey::Produce, 9));
        assert!(!serves(ApiKey::Produce, 2));
        assert!(!serves(ApiKey::ElectLeaders, 0));
        let _ = ApiVersionsResponse::VERSIONS;
    }
}
