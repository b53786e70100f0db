//! Which handler answers which request, in a module nothing else imports.

use kafka_protocol::messages::{RequestKind, ResponseKind};

use crate::apis;
use crate::state::{Closed, Request, Session};

/// The answer to `request`; `None` for a Produce with acks 0.
pub(crate) async fn answer(
    s: &mut Session,
    request: Request,
) -> Result<Option<ResponseKind>, Closed> {
    let version = request.header.request_api_version;
    let client_id = request.header.client_id.as_ref().map_or("", |c| c.as_str());
    Ok(Some(match request.body {
        RequestKind::ApiVersions(_) => ResponseKind::ApiVersions(apis::api_versions()),
        RequestKind::Metadata(r) => ResponseKind::Metadata(s.metadata(r, version).await),
        RequestKind::Produce(r) => {
            return Ok(s.producing().produce(r).await.map(ResponseKind::Produce));
        }
        RequestKind::Fetch(r) => ResponseKind::Fetch(s.fetch(r).await),
        RequestKind::ListOffsets(r) => ResponseKind::ListOffsets(s.list_offsets(r).await),
        RequestKind::CreateTopics(r) => ResponseKind::CreateTopics(s.create_topics(r).await),
        RequestKind::DeleteTopics(r) => ResponseKind::DeleteTopics(s.delete_topics(r).await),
        RequestKind::CreatePartitions(r) => {
            ResponseKind::CreatePartitions(s.create_partitions(r).await)
        }
        RequestKind::DescribeConfigs(r) => ResponseKind::DescribeConfigs(s.describe_configs(r)),
        RequestKind::DescribeLogDirs(r) => ResponseKind::DescribeLogDirs(s.describe_log_dirs(r)),
        RequestKind::DescribeCluster(r) => ResponseKind::DescribeCluster(s.describe_cluster(&r)),
        RequestKind::DeleteRecords(r) => ResponseKind::DeleteRecords(s.delete_records(r).await),
        RequestKind::AlterConfigs(r) => ResponseKind::AlterConfigs(s.alter_configs(r).await),
        RequestKind::IncrementalAlterConfigs(r) => {
            ResponseKind::IncrementalAlterConfigs(s.incremental_alter_configs(r).await)
        }
        RequestKind::FindCoordinator(r) => {
            ResponseKind::FindCoordinator(s.find_coordinator(&r, version))
        }
        RequestKind::JoinGroup(r) => {
            ResponseKind::JoinGroup(s.join_group(r, version, client_id).await)
        }
        RequestKind::SyncGroup(r) => ResponseKind::SyncGroup(s.sync_group(r).await),
        RequestKind::Heartbeat(r) => ResponseKind::Heartbeat(s.heartbeat(&r)),
        RequestKind::LeaveGroup(r) => ResponseKind::LeaveGroup(s.leave_group(&r, version)),
        RequestKind::OffsetCommit(r) => ResponseKind::OffsetCommit(s.offset_commit(r).await),
        RequestKind::OffsetFetch(r) => ResponseKind::OffsetFetch(s.offset_fetch(r, version)),
        RequestKind::ListGroups(r) => ResponseKind::ListGroups(s.list_groups(&r).await),
        RequestKind::DescribeGroups(r) => {
            ResponseKind::DescribeGroups(s.describe_groups(&r, version))
        }
        RequestKind::DeleteGroups(r) => ResponseKind::DeleteGroups(s.delete_groups(r).await),
        RequestKind::OffsetDelete(r) => ResponseKind::OffsetDelete(s.offset_delete(r).await),
        RequestKind::InitProducerId(r) => ResponseKind::InitProducerId(s.init_producer_id(&r)),
        RequestKind::SaslHandshake(r) => ResponseKind::SaslHandshake(s.sasl_handshake(&r)),
        RequestKind::SaslAuthenticate(r) => {
            ResponseKind::SaslAuthenticate(s.sasl_authenticate(&r).await?)
        }
        _ => return Err(Closed::Because(format!("{:?} is not served", request.key))),
    }))
}
