//! Kafka group requests as raw frames (encoded with kafka-protocol), for what a
//! client library does not let a test do: a member that asks for a rebalance
//! timeout of weeks and then never joins again.

use std::time::Duration;

use bytes::{Buf as _, Bytes};
use kafka_protocol_client::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol_client::messages::{ApiKey, GroupId, JoinGroupRequest, JoinGroupResponse};
use kafka_protocol_client::protocol::{Decodable as _, StrBytes};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::kafka::{request_frame, start_configured};

/// Sends JoinGroup v1 for group `slow` and reads its answer.
async fn join(socket: &mut TcpStream, rebalance_timeout_ms: i32) -> JoinGroupResponse {
    let mut protocol = JoinGroupRequestProtocol::default();
    protocol.name = StrBytes::from_static_str("range");
    protocol.metadata = Bytes::from_static(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    let mut request = JoinGroupRequest::default();
    request.group_id = GroupId(StrBytes::from_static_str("slow"));
    request.session_timeout_ms = 3_600_000;
    request.rebalance_timeout_ms = rebalance_timeout_ms;
    request.protocol_type = StrBytes::from_static_str("consumer");
    request.protocols = vec![protocol];
    let frame = request_frame(ApiKey::JoinGroup, 1, 1, &request);
    socket.write_all(&frame).await.unwrap();
    let size = socket.read_i32().await.unwrap();
    let mut body = vec![0u8; usize::try_from(size).unwrap()];
    socket.read_exact(&mut body).await.unwrap();
    let mut body = Bytes::from(body);
    assert_eq!(body.get_i32(), 1, "the correlation id");
    JoinGroupResponse::decode(&mut body, 1).unwrap()
}

/// A member asks for a rebalance timeout of 23 days, then goes quiet: when a
/// second member joins, the rebalance waits for the first only as long as
/// `[kafka] max_rebalance_timeout_ms` (here 1 s), then goes on without it.
#[tokio::test]
async fn a_rebalance_waits_for_a_silent_member_no_longer_than_the_configured_cap() {
    let (broker, _dir) = start_configured("max_rebalance_timeout_ms = 1000").await;
    let addr = broker.kafka_addr().unwrap().to_owned();
    let mut first = TcpStream::connect(&addr).await.unwrap();
    let joined = join(&mut first, 2_000_000_000).await;
    assert_eq!(joined.error_code, 0, "{joined:?}");
    assert_eq!(joined.generation_id, 1, "{joined:?}");
    let mut second = TcpStream::connect(&addr).await.unwrap();
    let rejoined = tokio::time::timeout(Duration::from_secs(60), join(&mut second, 1000))
        .await
        .expect("the rebalance went on without the silent member");
    assert_eq!(rejoined.error_code, 0, "{rejoined:?}");
    assert_eq!(rejoined.generation_id, 2, "{rejoined:?}");
    assert_eq!(
        rejoined.members.len(),
        1,
        "the silent member is out: {rejoined:?}"
    );
    assert_eq!(rejoined.members[0].member_id, rejoined.member_id);
}
