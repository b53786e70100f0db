//! The consumer-group requests: FindCoordinator (weir coordinates every group),
//! JoinGroup, SyncGroup, Heartbeat, LeaveGroup, ListGroups, DescribeGroups and
//! DeleteGroups, answered by the [`Coordinator`](crate::coordinator::Coordinator); OffsetCommit
//! and OffsetFetch, whose offsets are the broker's group offsets of each topic's
//! stream. Permissions: `read` on a topic to commit or fetch its offsets; groups
//! themselves are not guarded (Kafka's group ACLs have no weir equivalent).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kafka_protocol::ResponseError;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::find_coordinator_response::Coordinator as Found;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{
    BrokerId, DeleteGroupsRequest, DeleteGroupsResponse, DescribeGroupsRequest,
    DescribeGroupsResponse, FindCoordinatorRequest, FindCoordinatorResponse, GroupId,
    HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest,
    LeaveGroupResponse, ListGroupsRequest, ListGroupsResponse, OffsetCommitRequest,
    OffsetCommitResponse, OffsetFetchRequest, OffsetFetchResponse, SyncGroupRequest,
    SyncGroupResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use weir_broker::access::Operation;

use crate::coordinator::{Answer, Join};
use crate::errors;
use crate::metadata::NODE;
use crate::state::Session;

fn text(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

fn opt_text(s: Option<String>) -> Option<StrBytes> {
    s.map(StrBytes::from_string)
}

/// Waits for an answer the coordinator gives later, up to `limit`.
async fn settle<T: Default>(answer: Answer<T>, limit: Duration, gone: impl FnOnce() -> T) -> T {
    match answer {
        Answer::Now(t) => t,
        Answer::Later(rx) => match tokio::time::timeout(limit, rx).await {
            Ok(Ok(t)) => t,
            _ => gone(),
        },
    }
}

/// Longest commit metadata string kept (Kafka's `offset.metadata.max.bytes`); a
/// longer one is refused with `OFFSET_METADATA_TOO_LARGE`.
const MAX_COMMIT_METADATA: usize = 4096;

fn ms(value: i32) -> Duration {
    Duration::from_millis(u64::try_from(value).unwrap_or(0))
}

impl Session {
    pub(crate) fn find_coordinator(
        &self,
        request: &FindCoordinatorRequest,
        version: i16,
    ) -> FindCoordinatorResponse {
        let me = self.broker_entry();
        // Transactions have no coordinator here: weir has no transactions.
        let error = if request.key_type == 0 {
            errors::NONE
        } else {
            ResponseError::InvalidRequest.code()
        };
        let message =
            (error != errors::NONE).then(|| text("weir does not support Kafka transactions"));
        let mut response = FindCoordinatorResponse::default();
        if version >= 4 {
            response.coordinators = request
                .coordinator_keys
                .iter()
                .map(|key| {
                    let mut c = Found::default();
                    c.key = key.clone();
                    c.node_id = BrokerId(NODE);
                    c.host = me.host.clone();
                    c.port = me.port;
                    c.error_code = error;
                    c.error_message.clone_from(&message);
                    c
                })
                .collect();
        } else {
            response.node_id = BrokerId(NODE);
            response.host = me.host;
            response.port = me.port;
            response.error_code = error;
            response.error_message = message;
        }
        response
    }

    pub(crate) async fn join_group(
        &self,
        request: JoinGroupRequest,
        version: i16,
        client_id: &str,
    ) -> JoinGroupResponse {
        let rebalance = if version == 0 {
            request.session_timeout_ms
        } else {
            request.rebalance_timeout_ms
        };
        let join = Join {
            group: request.group_id.0.to_string(),
            member_id: request.member_id.to_string(),
            instance_id: request.group_instance_id.map(|s| s.to_string()),
            client_id: client_id.to_owned(),
            client_host: format!("/{}", self.peer.ip()),
            session_timeout: ms(request.session_timeout_ms),
            // A member's own timeout, up to `[kafka] max_rebalance_timeout_ms`.
            rebalance_timeout: ms(rebalance).min(self.config.max_rebalance_timeout),
            protocol_type: request.protocol_type.to_string(),
            protocols: request
                .protocols
                .into_iter()
                .map(|p| (p.name.to_string(), p.metadata))
                .collect(),
            id_required: version >= 4,
            may_skip_assignment: version >= 9,
        };
        let mut response = JoinGroupResponse::default();
        if !(1..=3_600_000).contains(&request.session_timeout_ms) {
            response.error_code = ResponseError::InvalidSessionTimeout.code();
            response.generation_id = -1;
            return response;
        }
        // The coordinator's tick ends a rebalance at its deadline; this is a margin.
        let wait = join.rebalance_timeout + join.rebalance_timeout.min(Duration::from_secs(5));
        let answer = self.shared.coordinator.join(join, Instant::now());
        let joined = settle(answer, wait, || crate::coordinator::Joined {
            error: ResponseError::RebalanceInProgress.code(),
            generation: -1,
            ..Default::default()
        })
        .await;
        response.error_code = joined.error;
        response.generation_id = joined.generation;
        response.protocol_type = opt_text(joined.protocol_type);
        response.protocol_name = opt_text(joined.protocol);
        response.leader = text(joined.leader);
        response.member_id = text(joined.member_id);
        response.skip_assignment = joined.skip_assignment;
        response.members = joined
            .members
            .into_iter()
            .map(|(id, instance, metadata)| {
                let mut m = JoinGroupResponseMember::default();
                m.member_id = text(id);
                // Instance ids exist from v5: an older leader's answer has none.
                m.group_instance_id = opt_text(instance.filter(|_| version >= 5));
                m.metadata = metadata;
                m
            })
            .collect();
        response
    }

    pub(crate) async fn sync_group(&self, request: SyncGroupRequest) -> SyncGroupResponse {
        let mut response = SyncGroupResponse::default();
        let assignments = request
            .assignments
            .into_iter()
            .map(|a| (a.member_id.to_string(), a.assignment))
            .collect();
        let answer = self.shared.coordinator.sync(
            request.group_id.0.as_str(),
            request.member_id.as_str(),
            request.group_instance_id.as_deref(),
            request.generation_id,
            assignments,
            Instant::now(),
        );
        // A follower waits for the leader: at most 5 minutes, or the longest
        // rebalance timeout if that is shorter.
        let wait = self
            .config
            .max_rebalance_timeout
            .min(Duration::from_secs(300));
        let synced = settle(answer, wait, || crate::coordinator::Synced {
            error: ResponseError::RebalanceInProgress.code(),
            ..Default::default()
        })
        .await;
        response.error_code = synced.error;
        response.protocol_type = opt_text(synced.protocol_type);
        response.protocol_name = opt_text(synced.protocol);
        response.assignment = synced.assignment;
        response
    }

    pub(crate) fn heartbeat(&self, request: &HeartbeatRequest) -> HeartbeatResponse {
        let mut response = HeartbeatResponse::default();
        response.error_code = self.shared.coordinator.heartbeat(
            request.group_id.0.as_str(),
            request.member_id.as_str(),
            request.group_instance_id.as_deref(),
            request.generation_id,
            Instant::now(),
        );
        response
    }

    pub(crate) fn leave_group(
        &self,
        request: &LeaveGroupRequest,
        version: i16,
    ) -> LeaveGroupResponse {
        let mut response = LeaveGroupResponse::default();
        let group = request.group_id.0.as_str();
        if version < 3 {
            let errors = self.shared.coordinator.leave(
                group,
                &[(request.member_id.to_string(), None)],
                Instant::now(),
            );
            response.error_code = errors[0];
            return response;
        }
        let ids: Vec<(String, Option<String>)> = request
            .members
            .iter()
            .map(|m| {
                let instance = m.group_instance_id.as_ref().map(ToString::to_string);
                (m.member_id.to_string(), instance)
            })
            .collect();
        let errors = self.shared.coordinator.leave(group, &ids, Instant::now());
        response.members = request
            .members
            .iter()
            .zip(errors)
            .map(|(m, error)| {
                let mut r = MemberResponse::default();
                r.member_id = m.member_id.clone();
                r.group_instance_id.clone_from(&m.group_instance_id);
                r.error_code = error;
                r
            })
            .collect();
        response
    }

    /// The coordinator's groups, and as `Empty` consumer groups those that only
    /// have committed offsets (weir's own groups of the vhost's streams among them,
    /// as Kafka lists a group whose members are gone).
    pub(crate) async fn list_groups(&self, request: &ListGroupsRequest) -> ListGroupsResponse {
        let mut listed: BTreeMap<String, (String, &'static str)> = self
            .shared
            .coordinator
            .views(None)
            .into_iter()
            .map(|g| (g.id, (g.protocol_type, g.state.name())))
            .collect();
        if self.may_view() {
            for stream in self.broker.streams() {
                for group in self.broker.groups(&stream.name).await.unwrap_or_default() {
                    if !group.name.starts_with("amqp-offset-tracking/") {
                        listed
                            .entry(group.name)
                            .or_insert_with(|| ("consumer".to_owned(), "Empty"));
                    }
                }
            }
        }
        let mut response = ListGroupsResponse::default();
        response.groups = listed
            .into_iter()
            .filter(|(_, (_, state))| {
                request.states_filter.is_empty()
                    || request.states_filter.iter().any(|s| s.as_str() == *state)
            })
            .map(|(id, (protocol_type, state))| {
                let mut l = ListedGroup::default();
                l.group_id = GroupId(text(id));
                l.protocol_type = text(protocol_type);
                l.group_state = StrBytes::from_static_str(state);
                l
            })
            .collect();
        response
    }

    pub(crate) fn describe_groups(
        &self,
        request: &DescribeGroupsRequest,
        version: i16,
    ) -> DescribeGroupsResponse {
        let names: Vec<String> = request.groups.iter().map(|g| g.0.to_string()).collect();
        let views = self.shared.coordinator.views(Some(&names));
        let mut response = DescribeGroupsResponse::default();
        for name in names {
            let mut d = DescribedGroup::default();
            d.group_id = GroupId(text(name.clone()));
            match views.iter().find(|v| v.id == name) {
                // Only committed offsets: "Empty" (a consumer group), as Kafka says;
                // unknown: "Dead".
                None if self.has_offsets(&name, false) => {
                    d.group_state = StrBytes::from_static_str("Empty");
                    d.protocol_type = StrBytes::from_static_str("consumer");
                }
                None => d.group_state = StrBytes::from_static_str("Dead"),
                Some(v) => {
                    d.group_state = StrBytes::from_static_str(v.state.name());
                    d.protocol_type = text(v.protocol_type.clone());
                    d.protocol_data = text(v.protocol.clone());
                    d.members = v
                        .members
                        .iter()
                        .map(|m| {
                            let mut dm = DescribedGroupMember::default();
                            dm.member_id = text(m.id.clone());
                            // Instance ids exist from v4.
                            dm.group_instance_id =
                                opt_text(m.instance_id.clone().filter(|_| version >= 4));
                            dm.client_id = text(m.client_id.clone());
                            dm.client_host = text(m.client_host.clone());
                            dm.member_metadata = m.metadata.clone();
                            dm.member_assignment = m.assignment.clone();
                            dm
                        })
                        .collect();
                }
            }
            response.groups.push(d);
        }
        response
    }

    pub(crate) async fn offset_commit(&self, request: OffsetCommitRequest) -> OffsetCommitResponse {
        let group = request.group_id.0.to_string();
        let allowed = self.shared.coordinator.may_commit(
            &group,
            request.member_id.as_str(),
            request.group_instance_id.as_deref(),
            request.generation_id_or_member_epoch,
            Instant::now(),
        );
        let mut response = OffsetCommitResponse::default();
        for topic in request.topics {
            let name = topic.name.0.to_string();
            let mut offsets = BTreeMap::new();
            let mut metadata = BTreeMap::new();
            let (mut bad, mut too_large) = (Vec::new(), Vec::new());
            for p in &topic.partitions {
                let text = p.committed_metadata.as_deref().unwrap_or_default();
                match (
                    u32::try_from(p.partition_index),
                    u64::try_from(p.committed_offset),
                ) {
                    _ if text.len() > MAX_COMMIT_METADATA => too_large.push(p.partition_index),
                    (Ok(partition), Ok(offset)) => {
                        offsets.insert(partition, offset);
                        if !text.is_empty() {
                            metadata.insert(partition, text.to_owned());
                        }
                    }
                    _ => bad.push(p.partition_index),
                }
            }
            let error = if allowed != errors::NONE {
                allowed
            } else if !self.allowed(Operation::Read, &name) {
                ResponseError::TopicAuthorizationFailed.code()
            } else if offsets.is_empty() {
                errors::NONE
            } else {
                match self
                    .broker
                    .commit_coordinated(&name, &group, offsets, metadata)
                    .await
                {
                    Ok(()) => errors::NONE,
                    Err(e) => {
                        tracing::info!(topic = %name, %group, error = %e, "a Kafka offset commit was refused");
                        match e {
                            weir_broker::BrokerError::InvalidArgument { .. } => {
                                ResponseError::OffsetOutOfRange.code()
                            }
                            e => errors::code(&e),
                        }
                    }
                }
            };
            let mut t = OffsetCommitResponseTopic::default();
            t.name = topic.name;
            t.partitions = topic
                .partitions
                .iter()
                .map(|p| {
                    let mut r = OffsetCommitResponsePartition::default();
                    r.partition_index = p.partition_index;
                    r.error_code = if bad.contains(&p.partition_index) {
                        ResponseError::InvalidCommitOffsetSize.code()
                    } else if too_large.contains(&p.partition_index) {
                        ResponseError::OffsetMetadataTooLarge.code()
                    } else {
                        error
                    };
                    r
                })
                .collect();
            response.topics.push(t);
        }
        response
    }

    pub(crate) fn offset_fetch(
        &self,
        request: OffsetFetchRequest,
        version: i16,
    ) -> OffsetFetchResponse {
        let mut response = OffsetFetchResponse::default();
        if version >= 8 {
            for g in request.groups {
                let asked = g.topics.map(|ts| {
                    ts.into_iter()
                        .map(|t| (t.name, t.partition_indexes))
                        .collect()
                });
                let mut out = OffsetFetchResponseGroup::default();
                out.topics = self
                    .committed(g.group_id.0.as_str(), asked)
                    .into_iter()
                    .map(|(name, parts)| {
                        let mut t = OffsetFetchResponseTopics::default();
                        t.name = name;
                        t.partitions = parts
                            .into_iter()
                            .map(|(index, offset, metadata, error)| {
                                let mut p = OffsetFetchResponsePartitions::default();
                                p.partition_index = index;
                                p.committed_offset = offset;
                                p.metadata = Some(text(metadata));
                                p.error_code = error;
                                p
                            })
                            .collect();
                        t
                    })
                    .collect();
                out.group_id = g.group_id;
                response.groups.push(out);
            }
            return response;
        }
        let asked = request.topics.map(|ts| {
            ts.into_iter()
                .map(|t| (t.name, t.partition_indexes))
                .collect()
        });
        response.topics = self
            .committed(request.group_id.0.as_str(), asked)
            .into_iter()
            .map(|(name, parts)| {
                let mut t = OffsetFetchResponseTopic::default();
                t.name = name;
                t.partitions = parts
                    .into_iter()
                    .map(|(index, offset, metadata, error)| {
                        let mut p = OffsetFetchResponsePartition::default();
                        p.partition_index = index;
                        p.committed_offset = offset;
                        p.metadata = Some(text(metadata));
                        p.error_code = error;
                        p
                    })
                    .collect();
                t
            })
            .collect();
        response
    }

    /// DeleteGroups: a group without members loses its committed offsets on
    /// every stream (`read` on each needed, as weir's HTTP group delete); one with
    /// members (Kafka's or weir's own) is `NON_EMPTY_GROUP`, an unknown one
    /// `GROUP_ID_NOT_FOUND`.
    pub(crate) async fn delete_groups(&self, request: DeleteGroupsRequest) -> DeleteGroupsResponse {
        let mut response = DeleteGroupsResponse::default();
        for id in request.groups_names {
            let mut result = DeletableGroupResult::default();
            result.error_code = self.delete_group(id.0.as_str()).await;
            result.group_id = id;
            response.results.push(result);
        }
        response
    }

    async fn delete_group(&self, group: &str) -> i16 {
        let mut streams = Vec::new();
        for s in self.broker.streams() {
            let Ok(info) = self.broker.group(&s.name, group).await else {
                continue;
            };
            if !self.allowed(Operation::Read, &s.name) {
                return ResponseError::GroupAuthorizationFailed.code();
            }
            if !info.members.is_empty() {
                return ResponseError::NonEmptyGroup.code();
            }
            streams.push(s.name);
        }
        if self.shared.coordinator.forget_unless_active(group) {
            return ResponseError::NonEmptyGroup.code();
        }
        if streams.is_empty() {
            return ResponseError::GroupIdNotFound.code();
        }
        for stream in streams {
            if let Err(e) = self.broker.delete_group(&stream, group).await {
                tracing::info!(%stream, %group, error = %e, "a Kafka group's delete failed");
                if !matches!(e, weir_broker::BrokerError::NotFound { .. }) {
                    return errors::code(&e);
                }
            }
        }
        errors::NONE
    }

    /// Whether `group` has committed offsets on a stream of the vhost (with
    /// `readable_only`, on one the user may read).
    pub(crate) fn has_offsets(&self, group: &str, readable_only: bool) -> bool {
        self.broker.streams().iter().any(|s| {
            (!readable_only || self.allowed(Operation::Read, &s.name))
                && self
                    .broker
                    .committed_offsets(&s.name, group)
                    .ok()
                    .flatten()
                    .is_some()
        })
    }

    /// The committed offsets of `group` per asked topic and partition (-1 when
    /// none) with their metadata strings, or of every topic it has offsets for
    /// when `asked` is `None`.
    #[allow(
        clippy::type_complexity,
        reason = "topic -> (partition, offset, metadata, error)"
    )]
    fn committed(
        &self,
        group: &str,
        asked: Option<Vec<(TopicName, Vec<i32>)>>,
    ) -> Vec<(TopicName, Vec<(i32, i64, String, i16)>)> {
        let asked = asked.unwrap_or_else(|| {
            self.broker
                .streams()
                .into_iter()
                .filter(|s| {
                    self.broker
                        .committed_offsets(&s.name, group)
                        .ok()
                        .flatten()
                        .is_some()
                })
                .map(|s| {
                    let parts = (0..i32::try_from(s.options.partitions).unwrap_or(0)).collect();
                    (TopicName(text(s.name)), parts)
                })
                .collect()
        });
        asked
            .into_iter()
            .map(|(name, partitions)| {
                let topic = name.0.to_string();
                let readable = self.allowed(Operation::Read, &topic);
                let committed = self.broker.committed_offsets(&topic, group);
                let mut metadata = self
                    .broker
                    .commit_metadata(&topic, group)
                    .unwrap_or_default();
                let parts = partitions
                    .into_iter()
                    .map(|index| {
                        let none = String::new();
                        if !readable {
                            let refused = ResponseError::TopicAuthorizationFailed.code();
                            return (index, -1, none, refused);
                        }
                        match &committed {
                            Ok(offsets) => {
                                let partition = u32::try_from(index).ok();
                                let offset = partition
                                    .and_then(|p| offsets.as_ref()?.get(&p).copied())
                                    .map_or(-1, |o| i64::try_from(o).unwrap_or(-1));
                                let text =
                                    partition.and_then(|p| metadata.remove(&p)).unwrap_or(none);
                                (index, offset, text, errors::NONE)
                            }
                            Err(e) => (index, -1, none, errors::code(e)),
                        }
                    })
                    .collect();
                (name, parts)
            })
            .collect()
    }
}
