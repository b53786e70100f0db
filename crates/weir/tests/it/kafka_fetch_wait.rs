//! A Fetch waiting for records and the requests a client sends behind it on the
//! same connection (raw frames, encoded with kafka-protocol): another kind of
//! request ends the wait at once, so it is not held up behind it; a second Fetch
//! lets the first wait on.

use std::time::Duration;

use bytes::{Buf as _, Bytes};
use kafka_protocol_client::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol_client::messages::{ApiKey, BrokerId, FetchRequest, FetchResponse, TopicName};
use kafka_protocol_client::protocol::{Decodable as _, StrBytes};
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use weir_testkit::Broker;

use crate::Api;
use crate::kafka::{request_frame, start};

/// A size-prefixed Fetch v4 for partition 0 of `topic` from offset 0, waiting up
/// to 30 s (the broker's default cap) for one byte.
fn fetch_frame(topic: &str, correlation_id: i32) -> Vec<u8> {
    let mut partition = FetchPartition::default();
    partition.partition = 0;
    partition.fetch_offset = 0;
    partition.partition_max_bytes = 1 << 20;
    let mut wanted = FetchTopic::default();
    wanted.topic = TopicName(StrBytes::from_string(topic.to_owned()));
    wanted.partitions = vec![partition];
    let mut request = FetchRequest::default();
    request.replica_id = BrokerId(-1);
    request.max_wait_ms = 30_000;
    request.min_bytes = 1;
    request.max_bytes = 1 << 20;
    request.topics = vec![wanted];
    request_frame(ApiKey::Fetch, 4, correlation_id, &request)
}

/// ApiVersions v0, size-prefixed.
fn api_versions_frame(correlation_id: i32) -> Vec<u8> {
    let mut frame = vec![0, 0, 0, 10, 0, 18, 0, 0];
    frame.extend_from_slice(&correlation_id.to_be_bytes());
    frame.extend_from_slice(&[0xff, 0xff]); // no client id
    frame
}

/// The next answer on `socket`: its correlation id and body, within 20 s (less
/// than the Fetch's 30 s wait).
async fn answer(socket: &mut tokio::net::TcpStream) -> (i32, Bytes) {
    tokio::time::timeout(Duration::from_secs(20), async {
        let size = socket.read_i32().await.unwrap();
        let mut body = vec![0u8; usize::try_from(size).unwrap()];
        socket.read_exact(&mut body).await.unwrap();
        let mut body = Bytes::from(body);
        (body.get_i32(), body)
    })
    .await
    .expect("an answer before the Fetch's wait ran out")
}

/// The bytes of records a Fetch v4 answer carries for its one partition.
fn records_len(mut body: Bytes) -> usize {
    let response = FetchResponse::decode(&mut body, 4).unwrap();
    let partition = &response.responses[0].partitions[0];
    assert_eq!(partition.error_code, 0, "{response:?}");
    partition.records.as_ref().map_or(0, Bytes::len)
}

async fn broker_with_stream(name: &str) -> Broker {
    let broker = start().await;
    let (status, body) = Api::new(&broker)
        .call("PUT", &format!("/api/streams/{name}"), Some(json!({})))
        .await;
    assert_eq!(status, 201, "{body}");
    broker
}

#[tokio::test]
async fn a_request_sent_behind_a_waiting_fetch_ends_its_wait() {
    let broker = broker_with_stream("quiet").await;
    let addr = broker.kafka_addr().unwrap().to_owned();
    let mut socket = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut frames = fetch_frame("quiet", 1);
    frames.extend(api_versions_frame(2));
    socket.write_all(&frames).await.unwrap();
    let (id, body) = answer(&mut socket).await;
    assert_eq!(id, 1, "the Fetch is answered first");
    assert_eq!(records_len(body), 0, "with no records: there are none");
    let (id, body) = answer(&mut socket).await;
    assert_eq!(id, 2, "then ApiVersions");
    assert_eq!(&body[..2], &[0, 0], "without an error");
}

#[tokio::test]
async fn a_fetch_sent_behind_a_waiting_fetch_lets_it_wait_for_records() {
    let broker = broker_with_stream("later").await;
    let addr = broker.kafka_addr().unwrap().to_owned();
    let mut socket = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut frames = fetch_frame("later", 1);
    frames.extend(fetch_frame("later", 2));
    socket.write_all(&frames).await.unwrap();
    // Time for the broker to read the second Fetch, had it ended the first's wait.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, body) = Api::new(&broker)
        .call(
            "POST",
            "/api/streams/later/messages",
            Some(json!({"body": "late"})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (id, body) = answer(&mut socket).await;
    assert_eq!(id, 1);
    assert!(
        records_len(body) > 0,
        "the first Fetch waited for the record"
    );
    let (id, body) = answer(&mut socket).await;
    assert_eq!(id, 2);
    assert!(records_len(body) > 0, "and the second read it too");
}
