//! CreateTopics, DeleteTopics, CreatePartitions and DescribeConfigs: a topic is a
//! stream, its retention the stream's (Kafka's `retention.ms`, `retention.bytes`
//! and `segment.bytes` are the stream's `max_age_ms`, `max_bytes` and
//! `segment_bytes`; `alter_configs.rs` changes them). Permissions: `configure` on
//! the stream to create, delete or grow it; seeing the vhost to describe it.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::{
    CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest, CreateTopicsResponse,
    DeleteTopicsRequest, DeleteTopicsResponse, DescribeConfigsRequest, DescribeConfigsResponse,
    TopicName,
};
use kafka_protocol::protocol::StrBytes;
use weir_broker::access::Operation;
use weir_broker::stream::{StreamInfo, StreamOptions};

use crate::errors;
use crate::state::Session;

/// DescribeConfigs' resource type of a topic.
pub(crate) const TOPIC_RESOURCE: i8 = 2;
/// Config sources: set on the topic, or the default.
const SOURCE_TOPIC: i8 = 1;
const SOURCE_DEFAULT: i8 = 5;

fn text(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

/// A topic's configs as Kafka names them: (name, value, set on the topic).
fn configs(options: &StreamOptions) -> Vec<(&'static str, String, bool)> {
    let or_none = |v: Option<u64>| v.map_or_else(|| "-1".to_owned(), |v| v.to_string());
    vec![
        ("cleanup.policy", "delete".to_owned(), false),
        (
            "retention.ms",
            or_none(options.max_age_ms),
            options.max_age_ms.is_some(),
        ),
        (
            "retention.bytes",
            or_none(options.max_bytes),
            options.max_bytes.is_some(),
        ),
        (
            "segment.bytes",
            options
                .segment_bytes
                .map_or_else(|| "1073741824".to_owned(), |v| v.to_string()),
            options.segment_bytes.is_some(),
        ),
        ("message.timestamp.type", "LogAppendTime".to_owned(), false),
        ("compression.type", "producer".to_owned(), false),
        ("min.insync.replicas", "1".to_owned(), false),
    ]
}

/// A config value as a number, `-1` meaning none.
fn limit(name: &str, value: Option<&str>) -> Result<Option<u64>, String> {
    let value = value.unwrap_or("-1");
    match value.parse::<i64>() {
        Ok(-1) => Ok(None),
        Ok(n) if n > 0 => Ok(Some(n.unsigned_abs())),
        _ => Err(format!("{name}={value} is not -1 or a positive number")),
    }
}

/// The stream options a CreateTopics entry asks for.
fn options_of(
    topic: &CreatableTopic,
    default_partitions: u32,
) -> Result<StreamOptions, (i16, String)> {
    let invalid = |m: String| (ResponseError::InvalidConfig.code(), m);
    if !topic.assignments.is_empty() {
        return Err((
            ResponseError::InvalidRequest.code(),
            "manual replica assignments are not supported: weir is one broker".to_owned(),
        ));
    }
    if topic.replication_factor > 1 {
        return Err((
            ResponseError::InvalidReplicationFactor.code(),
            format!(
                "replication factor {} is more than the 1 broker weir is",
                topic.replication_factor
            ),
        ));
    }
    let partitions = match topic.num_partitions {
        -1 => default_partitions,
        n => u32::try_from(n).ok().filter(|n| *n >= 1).ok_or_else(|| {
            (
                ResponseError::InvalidPartitions.code(),
                format!("{n} partitions"),
            )
        })?,
    };
    let mut options = StreamOptions {
        partitions,
        ..StreamOptions::default()
    };
    for config in &topic.configs {
        let value = config.value.as_ref().map(StrBytes::as_str);
        set_config(&mut options, config.name.as_str(), value).map_err(invalid)?;
    }
    Ok(options)
}

/// Sets one topic config on `options` (`None`: the value `null`, which is `-1`
/// for a limit); why not if it cannot be.
pub(crate) fn set_config(
    options: &mut StreamOptions,
    name: &str,
    value: Option<&str>,
) -> Result<(), String> {
    match name {
        "retention.ms" => options.max_age_ms = limit("retention.ms", value)?,
        "retention.bytes" => options.max_bytes = limit("retention.bytes", value)?,
        "segment.bytes" => options.segment_bytes = limit("segment.bytes", value)?,
        "cleanup.policy" if value != Some("delete") => {
            return Err(format!(
                "cleanup.policy={} is not supported (only delete)",
                value.unwrap_or("null")
            ));
        }
        known if HELD.contains(&known) => {}
        other => return Err(format!("config {other} is not supported")),
    }
    Ok(())
}

/// Kafka's own topic settings that hold as asked, or do not apply to one broker.
const HELD: &[&str] = &[
    "cleanup.policy",
    "compression.type",
    "min.insync.replicas",
    "message.timestamp.type",
    "max.message.bytes",
    "unclean.leader.election.enable",
    "message.downconversion.enable",
];

/// Puts one topic config back to its default on `options`.
pub(crate) fn reset_config(options: &mut StreamOptions, name: &str) -> Result<(), String> {
    match name {
        "retention.ms" => options.max_age_ms = None,
        "retention.bytes" => options.max_bytes = None,
        "segment.bytes" => options.segment_bytes = None,
        known if HELD.contains(&known) => {}
        other => return Err(format!("config {other} is not supported")),
    }
    Ok(())
}

impl Session {
    pub(crate) async fn create_topics(&self, request: CreateTopicsRequest) -> CreateTopicsResponse {
        let mut response = CreateTopicsResponse::default();
        for topic in request.topics {
            let mut result = CreatableTopicResult::default();
            result.name = topic.name.clone();
            let name = topic.name.0.as_str();
            let outcome = if self.allowed(Operation::Configure, name) {
                match options_of(&topic, self.config.default_partitions) {
                    Err(e) => Err(e),
                    Ok(options) if self.broker.is_stream(name) => {
                        let _ = options;
                        Err((
                            ResponseError::TopicAlreadyExists.code(),
                            format!("topic '{name}' already exists"),
                        ))
                    }
                    Ok(options) if request.validate_only => options
                        .validate()
                        .map(|()| options)
                        .map_err(|e| (errors::code(&e), e.to_string())),
                    Ok(options) => match self.broker.declare_stream(name, options.clone()).await {
                        Ok(_) => Ok(options),
                        Err(e) => Err((errors::code(&e), e.to_string())),
                    },
                }
            } else {
                Err((
                    ResponseError::TopicAuthorizationFailed.code(),
                    format!("no configure permission on '{name}'"),
                ))
            };
            match outcome {
                Ok(options) => {
                    result.num_partitions = i32::try_from(options.partitions).unwrap_or(i32::MAX);
                    result.replication_factor = 1;
                    result.configs = Some(
                        configs(&options)
                            .into_iter()
                            .map(|(name, value, set)| {
                                let mut c = CreatableTopicConfigs::default();
                                c.name = text(name);
                                c.value = Some(text(value));
                                c.config_source = if set { SOURCE_TOPIC } else { SOURCE_DEFAULT };
                                c
                            })
                            .collect(),
                    );
                }
                Err((code, message)) => {
                    result.error_code = code;
                    result.error_message = Some(text(message));
                    result.num_partitions = -1;
                    result.replication_factor = -1;
                }
            }
            response.topics.push(result);
        }
        response
    }

    pub(crate) async fn delete_topics(&self, request: DeleteTopicsRequest) -> DeleteTopicsResponse {
        let names: Vec<Option<TopicName>> = request
            .topic_names
            .into_iter()
            .map(Some)
            .chain(request.topics.into_iter().map(|t| t.name))
            .collect();
        let mut response = DeleteTopicsResponse::default();
        for name in names {
            let mut result = DeletableTopicResult::default();
            let Some(name) = name else {
                // Deleting by topic id: weir's topics have none.
                result.error_code = ResponseError::UnknownTopicId.code();
                response.responses.push(result);
                continue;
            };
            let topic = name.0.to_string();
            result.name = Some(name);
            if !self.allowed(Operation::Configure, &topic) {
                result.error_code = ResponseError::TopicAuthorizationFailed.code();
            } else if let Ok(stream) = self.broker.stream_id(&topic) {
                match self.broker.delete_stream(&topic).await {
                    Ok(()) => self.shared.producers.forget(stream),
                    Err(e) => {
                        result.error_code = errors::code(&e);
                        result.error_message = Some(text(e.to_string()));
                    }
                }
            } else {
                result.error_code = ResponseError::UnknownTopicOrPartition.code();
            }
            response.responses.push(result);
        }
        response
    }

    pub(crate) async fn create_partitions(
        &self,
        request: CreatePartitionsRequest,
    ) -> CreatePartitionsResponse {
        let mut response = CreatePartitionsResponse::default();
        for topic in request.topics {
            let mut result = CreatePartitionsTopicResult::default();
            let name = topic.name.0.to_string();
            result.name = topic.name;
            let outcome = self.grow(&name, topic.count, request.validate_only).await;
            if let Err((code, message)) = outcome {
                result.error_code = code;
                result.error_message = Some(text(message));
            }
            response.results.push(result);
        }
        response
    }

    async fn grow(&self, name: &str, count: i32, validate_only: bool) -> Result<(), (i16, String)> {
        if !self.allowed(Operation::Configure, name) {
            return Err((
                ResponseError::TopicAuthorizationFailed.code(),
                format!("no configure permission on '{name}'"),
            ));
        }
        let info = self
            .broker
            .stream_info(name)
            .map_err(|e| (errors::code(&e), e.to_string()))?;
        let count = u32::try_from(count).unwrap_or(0);
        if count <= info.options.partitions {
            return Err((
                ResponseError::InvalidPartitions.code(),
                format!(
                    "topic '{name}' has {} partitions; it can only grow",
                    info.options.partitions
                ),
            ));
        }
        let options = StreamOptions {
            partitions: count,
            ..info.options
        };
        if validate_only {
            return options
                .validate()
                .map_err(|e| (ResponseError::InvalidPartitions.code(), e.to_string()));
        }
        self.broker
            .declare_stream(name, options)
            .await
            .map(|_| ())
            .map_err(|e| (errors::code(&e), e.to_string()))
    }

    pub(crate) fn describe_configs(
        &self,
        request: DescribeConfigsRequest,
    ) -> DescribeConfigsResponse {
        let mut response = DescribeConfigsResponse::default();
        for resource in request.resources {
            let mut result = DescribeConfigsResult::default();
            result.resource_type = resource.resource_type;
            result.resource_name = resource.resource_name.clone();
            let name = resource.resource_name.as_str();
            let found: Result<StreamInfo, i16> = if resource.resource_type != TOPIC_RESOURCE {
                // Broker configs: none are described.
                response.results.push(result);
                continue;
            } else if !self.may_view() {
                Err(ResponseError::TopicAuthorizationFailed.code())
            } else {
                self.broker.stream_info(name).map_err(|e| errors::code(&e))
            };
            match found {
                Ok(info) => {
                    let keys = resource.configuration_keys;
                    result.configs = configs(&info.options)
                        .into_iter()
                        .filter(|(n, _, _)| {
                            keys.as_ref()
                                .is_none_or(|k| k.iter().any(|k| k.as_str() == *n))
                        })
                        .map(|(n, value, set)| {
                            let mut c = DescribeConfigsResourceResult::default();
                            c.name = text(n);
                            c.value = Some(text(value));
                            c.config_source = if set { SOURCE_TOPIC } else { SOURCE_DEFAULT };
                            c.read_only = matches!(
                                n,
                                "message.timestamp.type"
                                    | "compression.type"
                                    | "min.insync.replicas"
                                    | "cleanup.policy"
                            );
                            c
                        })
                        .collect();
                }
                Err(code) => {
                    result.error_code = code;
                    result.error_message = Some(text(format!("topic '{name}'")));
                }
            }
            response.results.push(result);
        }
        response
    }
}
