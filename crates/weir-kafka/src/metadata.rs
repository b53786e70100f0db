//! Metadata: weir is the one broker (node 0), the controller and the leader of
//! every partition, with itself as the only replica. Topics are the streams of the
//! front end's vhost; a topic a client names that does not exist is created when
//! `auto_create_topics` is on, the request allows it and the user may configure it.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{
    BrokerId, DescribeClusterRequest, DescribeClusterResponse, DescribeLogDirsRequest,
    DescribeLogDirsResponse, MetadataRequest, MetadataResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use weir_broker::Vhost;
use weir_broker::access::{Operation, Principal};
use weir_broker::stream::{StreamInfo, StreamOptions};

use crate::errors;
use crate::state::Session;

/// weir's node id in every answer.
pub(crate) const NODE: i32 = 0;

/// The cluster id Metadata reports.
const CLUSTER_ID: &str = "weir";

/// DescribeCluster's endpoint types: brokers, controllers.
const BROKER_ENDPOINTS: i8 = 1;
const CONTROLLER_ENDPOINTS: i8 = 2;

impl Session {
    pub(crate) async fn metadata(
        &self,
        request: MetadataRequest,
        version: i16,
    ) -> MetadataResponse {
        let asked: Option<Vec<String>> = match request.topics {
            None => None,
            // Version 0 has no null: an empty list means every topic.
            Some(t) if t.is_empty() && version == 0 => None,
            Some(t) => Some(
                t.into_iter()
                    .filter_map(|t| t.name.map(|n| n.0.to_string()))
                    .collect(),
            ),
        };
        let create =
            self.config.auto_create_topics && (version < 4 || request.allow_auto_topic_creation);
        let mut topics = Vec::new();
        match asked {
            None => {
                if self.may_view() {
                    for info in self.broker.streams() {
                        topics.push(topic(&info));
                    }
                }
            }
            Some(names) => {
                for name in names {
                    topics.push(self.described(&name, create).await);
                }
            }
        }
        let mut response = MetadataResponse::default();
        response.brokers = vec![self.broker_entry()];
        response.cluster_id = Some(StrBytes::from_static_str(CLUSTER_ID));
        response.controller_id = BrokerId(NODE);
        response.topics = topics;
        response
    }

    /// DescribeCluster (the admin clients' `describeCluster`, KIP-700): this
    /// broker, the controller too. Asked for controller endpoints (KIP-919), weir
    /// answers as a Kafka broker does, `MISMATCHED_ENDPOINT_TYPE`; another unknown
    /// type is `UNSUPPORTED_ENDPOINT_TYPE`. Authorized operations are not reported
    /// (weir's permissions are not Kafka's ACLs).
    pub(crate) fn describe_cluster(
        &self,
        request: &DescribeClusterRequest,
    ) -> DescribeClusterResponse {
        let mut response = DescribeClusterResponse::default();
        let refused = match request.endpoint_type {
            BROKER_ENDPOINTS => None,
            CONTROLLER_ENDPOINTS => Some((
                ResponseError::MismatchedEndpointType,
                "this is a broker's endpoint: weir has no controller endpoints of its own",
            )),
            _ => Some((
                ResponseError::UnsupportedEndpointType,
                "endpoint types are 1 (brokers) and 2 (controllers)",
            )),
        };
        if let Some((error, message)) = refused {
            response.error_code = error.code();
            response.error_message = Some(StrBytes::from_static_str(message));
            return response;
        }
        let entry = self.broker_entry();
        let mut broker = DescribeClusterBroker::default();
        broker.broker_id = entry.node_id;
        broker.host = entry.host;
        broker.port = entry.port;
        response.brokers = vec![broker];
        response.cluster_id = StrBytes::from_static_str(CLUSTER_ID);
        response.controller_id = BrokerId(NODE);
        response
    }

    /// This broker as Metadata lists it: the advertised address, or the one the
    /// client connected to.
    pub(crate) fn broker_entry(&self) -> MetadataResponseBroker {
        let mut entry = MetadataResponseBroker::default();
        entry.node_id = BrokerId(NODE);
        entry.host = StrBytes::from_string(
            self.config
                .advertised_host
                .clone()
                .unwrap_or_else(|| self.local.ip().to_string()),
        );
        entry.port = i32::from(self.config.advertised_port.unwrap_or(self.local.port()));
        entry
    }

    /// Whether the user may see the vhost's topics at all.
    pub(crate) fn may_view(&self) -> bool {
        self.who.as_ref().is_some_and(|who| {
            self.broker
                .access()
                .check_view(who, self.broker.name())
                .is_ok()
        })
    }

    /// Whether the user may do `operation` on topic `name`.
    pub(crate) fn allowed(&self, operation: Operation, name: &str) -> bool {
        permitted(self.who.as_ref(), &self.broker, operation, name)
    }

    /// One asked-for topic: described, created first if allowed, or its error.
    async fn described(&self, name: &str, create: bool) -> MetadataResponseTopic {
        let failed = |code: i16| {
            let mut t = MetadataResponseTopic::default();
            t.name = Some(TopicName(StrBytes::from_string(name.to_owned())));
            t.error_code = code;
            t
        };
        if !self.may_view() {
            return failed(ResponseError::TopicAuthorizationFailed.code());
        }
        if let Ok(info) = self.broker.stream_info(name) {
            return topic(&info);
        }
        if !create {
            return failed(ResponseError::UnknownTopicOrPartition.code());
        }
        if !self.allowed(Operation::Configure, name) {
            return failed(ResponseError::TopicAuthorizationFailed.code());
        }
        let options = StreamOptions {
            partitions: self.config.default_partitions,
            ..StreamOptions::default()
        };
        if let Err(e) = self.broker.declare_stream(name, options).await {
            return failed(errors::code(&e));
        }
        match self.broker.stream_info(name) {
            Ok(info) => topic(&info),
            Err(e) => failed(errors::code(&e)),
        }
    }
}

/// Whether `who` may do `operation` on the stream `name` (a stream's permissions
/// are a queue's: configure, write, read).
pub(crate) fn permitted(
    who: Option<&Principal>,
    broker: &Vhost,
    operation: Operation,
    name: &str,
) -> bool {
    who.is_some_and(|who| {
        broker
            .access()
            .check(who, broker.name(), operation, "queue", name)
            .is_ok()
    })
}

/// A stream as a Metadata topic.
fn topic(info: &StreamInfo) -> MetadataResponseTopic {
    let mut t = MetadataResponseTopic::default();
    t.name = Some(TopicName(StrBytes::from_string(info.name.clone())));
    t.partitions = (0..info.options.partitions)
        .map(|p| {
            let mut part = MetadataResponsePartition::default();
            part.partition_index = i32::try_from(p).unwrap_or(i32::MAX);
            part.leader_id = BrokerId(NODE);
            part.leader_epoch = 0;
            part.replica_nodes = vec![BrokerId(NODE)];
            part.isr_nodes = vec![BrokerId(NODE)];
            part
        })
        .collect();
    t.error_code = errors::NONE;
    t
}

impl Session {
    /// DescribeLogDirs (`kafka-log-dirs`, and the consoles that show topic sizes):
    /// one log directory, the data directory's `streams`, with each asked
    /// partition's bytes on disk (every one with `topics` null); its free space
    /// as measured for the disk alarm (total: -1, not measured).
    pub(crate) fn describe_log_dirs(
        &self,
        request: DescribeLogDirsRequest,
    ) -> DescribeLogDirsResponse {
        let mut response = DescribeLogDirsResponse::default();
        if !self.may_view() {
            response.error_code = ResponseError::ClusterAuthorizationFailed.code();
            return response;
        }
        let streams = self.broker.streams();
        // Looked up by name: a request may name many topics.
        let by_name: std::collections::HashMap<&str, &StreamInfo> =
            streams.iter().map(|s| (s.name.as_str(), s)).collect();
        let asked: Vec<(String, Option<Vec<i32>>)> = match request.topics {
            None => streams.iter().map(|s| (s.name.clone(), None)).collect(),
            Some(topics) => topics
                .into_iter()
                .map(|t| (t.topic.0.to_string(), Some(t.partitions)))
                .collect(),
        };
        let mut dir = DescribeLogDirsResult::default();
        dir.log_dir = StrBytes::from_string(
            self.broker
                .broker()
                .data_dir()
                .join("streams")
                .display()
                .to_string(),
        );
        dir.total_bytes = -1;
        dir.usable_bytes = self
            .broker
            .broker()
            .resources()
            .disk_free_bytes
            .and_then(|b| i64::try_from(b).ok())
            .unwrap_or(-1);
        for (name, partitions) in asked {
            // As Kafka: partitions it does not hold are left out.
            let Some(info) = by_name.get(name.as_str()) else {
                continue;
            };
            let mut topic = DescribeLogDirsTopic::default();
            topic.name = TopicName(StrBytes::from_string(name));
            topic.partitions = info
                .partition_stats
                .iter()
                .filter(|p| {
                    partitions.as_ref().is_none_or(|want| {
                        i32::try_from(p.partition).is_ok_and(|i| want.contains(&i))
                    })
                })
                .map(|p| {
                    let mut d = DescribeLogDirsPartition::default();
                    d.partition_index = i32::try_from(p.partition).unwrap_or(i32::MAX);
                    d.partition_size = i64::try_from(p.bytes).unwrap_or(i64::MAX);
                    d
                })
                .collect();
            dir.topics.push(topic);
        }
        response.results.push(dir);
        response
    }
}
