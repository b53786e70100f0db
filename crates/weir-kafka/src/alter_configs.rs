//! IncrementalAlterConfigs and AlterConfigs: a topic's `retention.ms`,
//! `retention.bytes` and `segment.bytes` change its stream's `max_age_ms`,
//! `max_bytes` and `segment_bytes` (`Broker::alter_stream`: at once, on every
//! partition, and across restarts), as `kafka-configs --alter` and the admin
//! clients expect. The incremental form sets or deletes (back to the default)
//! each named config; the legacy form replaces the topic's whole set, so what it
//! leaves out goes back to its default, as Kafka does. Kafka's settings that
//! hold here as asked are accepted as at CreateTopics; others are
//! `INVALID_CONFIG`. Broker resources are refused: weir's broker settings are its
//! configuration file. Permissions: `configure` on the topic's stream.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::{
    AlterConfigsRequest, AlterConfigsResponse, IncrementalAlterConfigsRequest,
    IncrementalAlterConfigsResponse, alter_configs_request, alter_configs_response,
    incremental_alter_configs_request, incremental_alter_configs_response,
};
use kafka_protocol::protocol::StrBytes;
use weir_broker::access::Operation;
use weir_broker::stream::StreamOptions;

use crate::errors;
use crate::state::Session;
use crate::topics::{TOPIC_RESOURCE, reset_config, set_config};

/// IncrementalAlterConfigs' operations.
const SET: i8 = 0;
const DELETE: i8 = 1;

/// A refusal: the error code and its message.
type Refusal = (i16, String);

fn invalid(message: String) -> Refusal {
    (ResponseError::InvalidConfig.code(), message)
}

/// A resource's error code and message in an answer.
fn answer(outcome: Result<(), Refusal>) -> (i16, Option<StrBytes>) {
    match outcome {
        Ok(()) => (errors::NONE, None),
        Err((code, message)) => (code, Some(StrBytes::from_string(message))),
    }
}

/// IncrementalAlterConfigs' changes to one topic: each set or deleted.
fn incremental(
    options: &mut StreamOptions,
    changes: &[incremental_alter_configs_request::AlterableConfig],
) -> Result<(), Refusal> {
    for c in changes {
        let name = c.name.as_str();
        match c.config_operation {
            SET => set_config(options, name, c.value.as_deref()).map_err(invalid)?,
            DELETE => reset_config(options, name).map_err(invalid)?,
            _ => {
                return Err(invalid(format!(
                    "{name} is not a list: it can be set or deleted, not appended to or subtracted from"
                )));
            }
        }
    }
    Ok(())
}

/// AlterConfigs' set for one topic: the whole set, so what is left out is back
/// to its default.
fn whole_set(
    options: &mut StreamOptions,
    changes: &[alter_configs_request::AlterableConfig],
) -> Result<(), Refusal> {
    options.max_age_ms = None;
    options.max_bytes = None;
    options.segment_bytes = None;
    for c in changes {
        set_config(options, c.name.as_str(), c.value.as_deref()).map_err(invalid)?;
    }
    Ok(())
}

impl Session {
    pub(crate) async fn incremental_alter_configs(
        &self,
        request: IncrementalAlterConfigsRequest,
    ) -> IncrementalAlterConfigsResponse {
        let mut response = IncrementalAlterConfigsResponse::default();
        for resource in request.resources {
            let (kind, name) = (resource.resource_type, &resource.resource_name);
            let change = |options: &mut StreamOptions| incremental(options, &resource.configs);
            let outcome = self
                .alter_topic(kind, name, request.validate_only, change)
                .await;
            let (code, message) = answer(outcome);
            response.responses.push(
                incremental_alter_configs_response::AlterConfigsResourceResponse::default()
                    .with_resource_type(kind)
                    .with_resource_name(resource.resource_name)
                    .with_error_code(code)
                    .with_error_message(message),
            );
        }
        response
    }

    pub(crate) async fn alter_configs(&self, request: AlterConfigsRequest) -> AlterConfigsResponse {
        let mut response = AlterConfigsResponse::default();
        for resource in request.resources {
            let (kind, name) = (resource.resource_type, &resource.resource_name);
            let change = |options: &mut StreamOptions| whole_set(options, &resource.configs);
            let outcome = self
                .alter_topic(kind, name, request.validate_only, change)
                .await;
            let (code, message) = answer(outcome);
            response.responses.push(
                alter_configs_response::AlterConfigsResourceResponse::default()
                    .with_resource_type(kind)
                    .with_resource_name(resource.resource_name)
                    .with_error_code(code)
                    .with_error_message(message),
            );
        }
        response
    }

    /// Applies `change` to the options of topic `name` and alters its stream (or
    /// only checks, with `validate_only`).
    async fn alter_topic(
        &self,
        resource_type: i8,
        name: &StrBytes,
        validate_only: bool,
        change: impl FnOnce(&mut StreamOptions) -> Result<(), Refusal>,
    ) -> Result<(), Refusal> {
        let name = name.as_str();
        if resource_type != TOPIC_RESOURCE {
            return Err((
                ResponseError::InvalidRequest.code(),
                "only topic configs can be altered: weir's broker settings are its configuration file".to_owned(),
            ));
        }
        if !self.allowed(Operation::Configure, name) {
            return Err((
                ResponseError::TopicAuthorizationFailed.code(),
                format!("no configure permission on '{name}'"),
            ));
        }
        let refused = |e: weir_broker::BrokerError| {
            let code = match e {
                weir_broker::BrokerError::InvalidArgument { .. } => {
                    ResponseError::InvalidConfig.code()
                }
                ref other => errors::code(other),
            };
            (code, e.to_string())
        };
        let mut options = self.broker.stream_info(name).map_err(refused)?.options;
        change(&mut options)?;
        if validate_only {
            return options.validate().map_err(refused);
        }
        self.broker
            .alter_stream(name, options)
            .await
            .map_err(refused)
    }
}
