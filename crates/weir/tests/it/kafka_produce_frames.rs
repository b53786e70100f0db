//! Kafka Produce requests as raw frames (encoded with kafka-protocol), for what a
//! client library does not let a test choose: many requests written at once, an
//! idempotent producer's exact sequence numbers, a retry after kill -9, a gap, and
//! a retry into a topic deleted and made anew.

use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::Api;
use crate::kafka::{kafka, request_frame, start};

/// Sends Produce v9 (acks all) of one batch of `count` records from producer 42,
/// epoch 0, first sequence `first`; answers the partition's error and base offset.
async fn produce_stamped(addr: &str, topic: &str, first: i32, count: i32) -> (i16, i64) {
    produce_as(addr, topic, 42, first, count).await
}

/// As [`produce_stamped`], from producer `producer`.
async fn produce_as(addr: &str, topic: &str, producer: i64, first: i32, count: i32) -> (i16, i64) {
    let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    let frame = produce_frame_from(topic, producer, Some(first), count, 1);
    socket.write_all(&frame).await.unwrap();
    let (_, error, offset) = produce_answer(&mut socket).await;
    (error, offset)
}

/// A size-prefixed Produce v9 request (acks all) of one batch of `count` records
/// to partition 0: from producer 42, epoch 0, its first sequence `stamped`, or
/// from no producer.
fn produce_frame(topic: &str, stamped: Option<i32>, count: i32, correlation_id: i32) -> Vec<u8> {
    produce_frame_from(topic, 42, stamped, count, correlation_id)
}

/// As [`produce_frame`], from producer `producer`.
fn produce_frame_from(
    topic: &str,
    producer: i64,
    stamped: Option<i32>,
    count: i32,
    correlation_id: i32,
) -> Vec<u8> {
    use bytes::BytesMut;
    use kafka_protocol_client::messages::produce_request::{
        PartitionProduceData, TopicProduceData,
    };
    use kafka_protocol_client::messages::{ApiKey, ProduceRequest, TopicName};
    use kafka_protocol_client::protocol::StrBytes;
    use kafka_protocol_client::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };
    let records: Vec<Record> = (0..count)
        .map(|i| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: if stamped.is_some() { producer } else { -1 },
            producer_epoch: if stamped.is_some() { 0 } else { -1 },
            timestamp_type: TimestampType::Creation,
            offset: i64::from(i),
            sequence: stamped.map_or(-1, |first| first + i),
            timestamp: 0,
            key: None,
            value: Some(bytes::Bytes::from(format!("seq-{i}"))),
            headers: kafka_protocol_client::indexmap::IndexMap::default(),
        })
        .collect();
    let mut batch = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression: Compression::None,
    };
    RecordBatchEncoder::encode(&mut batch, &records, &options).unwrap();
    let mut partition = PartitionProduceData::default();
    partition.index = 0;
    partition.records = Some(batch.freeze());
    let mut data = TopicProduceData::default();
    data.name = TopicName(StrBytes::from_string(topic.to_owned()));
    data.partition_data = vec![partition];
    let mut request = ProduceRequest::default();
    request.acks = -1;
    request.timeout_ms = 5000;
    request.topic_data = vec![data];
    request_frame(ApiKey::Produce, 9, correlation_id, &request)
}

/// Reads a Produce v9 answer: its correlation id, and the first partition's error
/// and base offset.
async fn produce_answer(socket: &mut tokio::net::TcpStream) -> (i32, i16, i64) {
    use bytes::Buf as _;
    use kafka_protocol_client::messages::ProduceResponse;
    use kafka_protocol_client::protocol::Decodable as _;
    let size = socket.read_i32().await.unwrap();
    let mut answer = vec![0u8; usize::try_from(size).unwrap()];
    socket.read_exact(&mut answer).await.unwrap();
    let mut answer = bytes::Bytes::from(answer);
    let correlation_id = answer.get_i32();
    answer.advance(1); // the response header's tagged fields (flexible version)
    let response = ProduceResponse::decode(&mut answer, 9).unwrap();
    let p = &response.responses[0].partition_responses[0];
    (correlation_id, p.error_code, p.base_offset)
}

/// Produce requests sent back to back on one connection are answered in the order
/// they came and stored in that order, whether pipelined (plain batches, which
/// share syncs) or not (an idempotent producer's batch, judged in turn).
#[tokio::test]
async fn produce_requests_sent_back_to_back_are_stored_and_answered_in_order() {
    let broker = start().await;
    let api = Api::new(&broker);
    let (status, body) = api.call("PUT", "/api/streams/piped", Some(json!({}))).await;
    assert_eq!(status, 201, "{body}");
    let mut socket = tokio::net::TcpStream::connect(kafka(&broker))
        .await
        .unwrap();
    let mut frames = Vec::new();
    for id in 0..60 {
        let stamped = (id == 30).then_some(0);
        frames.extend(produce_frame("piped", stamped, 5, id));
    }
    socket.write_all(&frames).await.unwrap();
    for id in 0..60 {
        let answer = produce_answer(&mut socket).await;
        assert_eq!(answer, (id, 0, i64::from(id) * 5), "answer {id}");
    }
    let (status, body) = api
        .call(
            "GET",
            "/api/streams/piped/messages?from=first&max=1000",
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["messages"].as_array().map(Vec::len),
        Some(300),
        "{body}"
    );
}

#[tokio::test]
async fn a_retried_idempotent_batch_is_found_after_kill_9_and_a_gap_is_refused() {
    let mut broker = start().await;
    let api = Api::new(&broker);
    let (status, body) = api.call("PUT", "/api/streams/idem2", Some(json!({}))).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        produce_stamped(&kafka(&broker), "idem2", 0, 3).await,
        (0, 0)
    );
    // The answer is lost with the broker; the producer sends the batch again.
    broker.kill9().await.unwrap();
    broker.restart().await.unwrap();
    assert_eq!(
        produce_stamped(&kafka(&broker), "idem2", 0, 3).await,
        (0, 0),
        "the first offset again"
    );
    let api = Api::new(&broker);
    let (_, body) = api
        .call(
            "GET",
            "/api/streams/idem2/messages?from=first&max=100",
            None,
        )
        .await;
    let messages = body["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 3, "stored once: {body}");
    assert!(
        messages[0]["headers"].as_object().unwrap().is_empty(),
        "the producer's stamp is not shown: {body}"
    );
    assert_eq!(
        produce_stamped(&kafka(&broker), "idem2", 3, 2).await,
        (0, 3),
        "the next batch"
    );
    assert_eq!(
        produce_stamped(&kafka(&broker), "idem2", 7, 1).await.0,
        45,
        "a gap: OUT_OF_ORDER_SEQUENCE_NUMBER"
    );
}

/// An idempotent producer's batch stored in a topic that is then deleted over
/// HTTP and made anew is stored again when the producer sends it once more: the
/// new topic did not hold it, so it is not answered with the old one's offset.
#[tokio::test]
async fn a_batch_the_deleted_topic_held_is_stored_in_the_one_made_anew() {
    let broker = start().await;
    let api = Api::new(&broker);
    let (status, body) = api.call("PUT", "/api/streams/anew", Some(json!({}))).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(produce_stamped(&kafka(&broker), "anew", 0, 3).await, (0, 0));
    assert_eq!(produce_stamped(&kafka(&broker), "anew", 3, 2).await, (0, 3));
    let (status, body) = api.call("DELETE", "/api/streams/anew", None).await;
    assert_eq!(status, 204, "{body}");
    let (status, body) = api.call("PUT", "/api/streams/anew", Some(json!({}))).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        produce_stamped(&kafka(&broker), "anew", 3, 2).await,
        (0, 0),
        "stored at the new topic's first offset"
    );
    let (_, body) = api
        .call("GET", "/api/streams/anew/messages?from=first&max=100", None)
        .await;
    assert_eq!(body["messages"].as_array().map(Vec::len), Some(2), "{body}");
}

/// With `[kafka] max_producer_ids = 1`, a second producer's batch makes weir forget
/// the first: the first's next batch is taken as a new producer's, whatever its
/// sequence (a gap that a remembered producer is refused, as the test above shows).
#[tokio::test]
async fn a_producer_forgotten_past_the_cap_starts_again_at_any_sequence() {
    let (broker, _dir) = crate::kafka::start_configured("max_producer_ids = 1").await;
    let api = Api::new(&broker);
    let (status, body) = api.call("PUT", "/api/streams/cap", Some(json!({}))).await;
    assert_eq!(status, 201, "{body}");
    let addr = kafka(&broker);
    assert_eq!(produce_as(&addr, "cap", 42, 0, 3).await, (0, 0));
    assert_eq!(
        produce_as(&addr, "cap", 42, 9, 1).await.0,
        45,
        "a gap while 42 is held: OUT_OF_ORDER_SEQUENCE_NUMBER"
    );
    assert_eq!(produce_as(&addr, "cap", 43, 0, 1).await, (0, 3));
    assert_eq!(
        produce_as(&addr, "cap", 42, 9, 1).await,
        (0, 4),
        "42 was forgotten to make room for 43"
    );
    assert_eq!(
        produce_as(&addr, "cap", 42, 9, 1).await,
        (0, 4),
        "and is held again: its retry is found"
    );
}
