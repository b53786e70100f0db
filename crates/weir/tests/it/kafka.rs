//! Kafka clients against the Kafka front end (issue 23): kcat (librdkafka, from
//! Debian), confluent-kafka (librdkafka from `PyPI`), kafka-python (a second
//! implementation) and KafkaJS (a third, from npm), all unmodified, installed by
//! `./scripts/test` (tests/kafka/clients.py, tests/kafka/kafkajs.js). Records
//! cross protocols: what Kafka produces is read over HTTP, and the other way
//! round. Hostile frames close their connection only.

use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use weir_testkit::Broker;

use crate::Api;
use crate::pika::python;

pub(crate) async fn start() -> Broker {
    Broker::start_with(&["--kafka-listen", "127.0.0.1:0"])
        .await
        .unwrap()
}

/// A broker with the Kafka listener and `kafka_toml` as its `[kafka]` section;
/// the directory of its configuration file, to keep.
pub(crate) async fn start_configured(kafka_toml: &str) -> (Broker, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("weir.toml");
    std::fs::write(&config, format!("[kafka]\n{kafka_toml}\n")).unwrap();
    let broker = Broker::start_with(&[
        "--config",
        config.to_str().unwrap(),
        "--kafka-listen",
        "127.0.0.1:0",
    ])
    .await
    .unwrap();
    (broker, dir)
}

/// A size-prefixed request frame: `key` at `version` with `correlation_id`, no
/// client id, and `body` (encoded with kafka-protocol).
pub(crate) fn request_frame<B: kafka_protocol_client::protocol::Encodable>(
    key: kafka_protocol_client::messages::ApiKey,
    version: i16,
    correlation_id: i32,
    body: &B,
) -> Vec<u8> {
    use kafka_protocol_client::messages::RequestHeader;
    use kafka_protocol_client::protocol::Encodable as _;
    let mut header = RequestHeader::default();
    header.request_api_key = key as i16;
    header.request_api_version = version;
    header.correlation_id = correlation_id;
    let mut frame = bytes::BytesMut::from(&[0u8; 4][..]);
    header
        .encode(&mut frame, key.request_header_version(version))
        .unwrap();
    body.encode(&mut frame, version).unwrap();
    let size = u32::try_from(frame.len() - 4).unwrap();
    frame[..4].copy_from_slice(&size.to_be_bytes());
    frame.to_vec()
}

/// The group's offsets are weir's: the HTTP API shows `group` of `stream` with
/// `partitions` partitions and no lag in any. Its partitions, for more checks.
pub(crate) async fn assert_no_lag(
    broker: &Broker,
    stream: &str,
    group: &str,
    partitions: usize,
) -> Vec<serde_json::Value> {
    let path = format!("/api/streams/{stream}/groups/{group}");
    let (status, body) = Api::new(broker).call("GET", &path, None).await;
    assert_eq!(status, 200, "{body}");
    let parts = body["partitions"].as_array().unwrap().clone();
    assert_eq!(parts.len(), partitions, "{body}");
    assert!(parts.iter().all(|p| p["lag"] == 0), "{body}");
    parts
}

/// A user `name` with `password` who may configure and read anything in `/` and
/// write only what `write` matches.
pub(crate) async fn user_who_writes(api: &Api, name: &str, password: &str, write: &str) {
    let (status, body) = api
        .call(
            "PUT",
            &format!("/api/users/{name}"),
            Some(json!({ "password": password })),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let patterns = json!({"configure": ".*", "write": write, "read": ".*"});
    let (status, body) = api
        .call(
            "PUT",
            &format!("/api/permissions/%2F/{name}"),
            Some(patterns),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

pub(crate) fn kafka(broker: &Broker) -> String {
    broker
        .kafka_addr()
        .expect("the Kafka listener is on")
        .to_owned()
}

fn script() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/kafka/clients.py")
}

/// Runs a scenario of tests/kafka/clients.py; panics with its output unless it passes.
async fn scenario(broker: &Broker, name: &str) -> String {
    let mut command = tokio::process::Command::new(python());
    command.arg(script()).arg(name);
    run_client(broker, command, name).await
}

/// Runs a scenario of tests/kafka/kafkajs.js with the kafkajs package
/// ./scripts/test installs; panics with its output unless it passes.
async fn kafkajs(broker: &Broker, name: &str) -> String {
    let modules = std::env::var("WEIR_NODE_PATH")
        .expect("WEIR_NODE_PATH is not set: run ./scripts/test, which installs kafkajs");
    let mut command = tokio::process::Command::new("node");
    command
        .arg(script().with_file_name("kafkajs.js"))
        .arg(name)
        .env("NODE_PATH", modules);
    run_client(broker, command, name).await
}

/// Runs a client's scenario against the broker's Kafka listener (`WEIR_KAFKA`);
/// its stdout, or a panic with its output and the broker's log.
pub(crate) async fn run_client(
    broker: &Broker,
    mut command: tokio::process::Command,
    name: &str,
) -> String {
    let out = tokio::time::timeout(
        Duration::from_secs(180),
        command
            .env("WEIR_KAFKA", kafka(broker))
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("{name} timed out"))
    .expect("the client runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{name} failed:\n{stdout}\n{}\nbroker log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        broker.log()
    );
    stdout
}

/// Runs kcat with `args`, `input` on its stdin; its stdout.
async fn kcat(broker: &Broker, args: &[&str], input: &str) -> String {
    let out = kcat_output(broker, args, input).await;
    assert!(
        out.status.success(),
        "kcat {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs kcat against the broker's Kafka listener with `input` on its stdin.
async fn kcat_output(broker: &Broker, args: &[&str], input: &str) -> std::process::Output {
    let mut child = tokio::process::Command::new("kcat")
        .arg("-b")
        .arg(kafka(broker))
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("kcat runs (./scripts/test installs it)");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(input.as_bytes()).await.unwrap();
    drop(stdin);
    tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("kcat finishes")
        .unwrap()
}

/// Header names starting with `x-weir-` are the broker's: a Kafka producer's
/// record with one is refused (no reader would see the header, and AMQP readers
/// would take `x-weir-properties` for the record's AMQP properties), as an HTTP
/// append's is, and nothing is stored.
#[tokio::test]
async fn records_with_the_brokers_reserved_header_names_are_refused() {
    let broker = start().await;
    let out = kcat_output(
        &broker,
        &["-P", "-t", "spoof", "-H", "x-weir-properties=v"],
        "spoofed\n",
    )
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Delivery failed"), "{stderr}");
    let api = Api::new(&broker);
    let (status, body) = api.call("GET", "/api/streams/spoof", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["partition_stats"][0]["next_offset"], 0, "{body}");
    let (status, body) = api
        .call(
            "POST",
            "/api/streams/spoof/messages",
            Some(json!({"headers": {"x-weir-properties": "v"}, "body": "x"})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["reason"].as_str().unwrap().contains("reserved"),
        "{body}"
    );
}

#[tokio::test]
async fn kcat_produces_and_consumes_with_keys_and_headers_and_http_reads_them() {
    let broker = start().await;
    kcat(
        &broker,
        &["-P", "-t", "events", "-K", ":", "-H", "trace=abc"],
        "user-1:signed up\nuser-2:paid\n",
    )
    .await;
    let consumed = kcat(
        &broker,
        &[
            "-C",
            "-t",
            "events",
            "-o",
            "beginning",
            "-e",
            "-f",
            "%p|%o|%k|%s|%h\n",
        ],
        "",
    )
    .await;
    assert_eq!(
        consumed,
        "0|0|user-1|signed up|trace=abc\n0|1|user-2|paid|trace=abc\n"
    );
    let api = Api::new(&broker);
    let (status, body) = api
        .call(
            "GET",
            "/api/streams/events/messages?from=first&max=10",
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let messages = body["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[0]["key"], "user-1");
    assert_eq!(messages[0]["body"], "signed up");
    assert_eq!(messages[1]["headers"]["trace"], "abc");
    let listed = kcat(&broker, &["-L", "-t", "events"], "").await;
    assert!(
        listed.contains("topic \"events\" with 1 partitions"),
        "{listed}"
    );
}

#[tokio::test]
async fn records_appended_over_http_are_consumed_over_kafka() {
    let broker = start().await;
    let api = Api::new(&broker);
    let (status, body) = api
        .call("PUT", "/api/streams/from-http", Some(json!({})))
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = api
        .call(
            "POST",
            "/api/streams/from-http/messages",
            Some(json!({"messages": [
                {"body": "one"},
                {"key": "k", "headers": {"h": "v"}, "body": "two"},
                {"body": "three"}
            ]})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let out = scenario(&broker, "kcat_interop").await;
    assert!(out.contains("ok: and headers"), "{out}");
}

#[tokio::test]
async fn confluent_kafka_round_trips_keys_headers_and_log_append_times() {
    let broker = start().await;
    let out = scenario(&broker, "roundtrip").await;
    assert!(out.contains("ok: headers round trip"), "{out}");
}

#[tokio::test]
async fn every_compression_codec_is_stored_compressed_and_read_back() {
    let broker = start().await;
    let out = scenario(&broker, "compression").await;
    let api = Api::new(&broker);
    for codec in ["gzip", "snappy", "lz4", "zstd"] {
        assert!(out.contains(&format!("ok: {codec}: 500")), "{out}");
        let values: Vec<String> = (0..500)
            .map(|i| format!("{codec}-{i}-").repeat(20))
            .collect();
        let raw: usize = values.iter().map(String::len).sum();
        // Stored as the producer compressed them: the partition holds far fewer
        // bytes than the values alone.
        let (status, body) = api
            .call("GET", &format!("/api/streams/c-{codec}"), None)
            .await;
        assert_eq!(status, 200, "{body}");
        let stored = body["partition_stats"][0]["bytes"].as_u64().unwrap();
        assert!(
            stored * 4 < raw as u64,
            "{codec}: {stored} bytes stored for {raw}"
        );
        // And read over HTTP as records, inflated.
        let (status, body) = api
            .call(
                "GET",
                &format!("/api/streams/c-{codec}/messages?from=first&max=1000"),
                None,
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let bodies: Vec<&str> = body["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["body"].as_str().unwrap())
            .collect();
        assert_eq!(bodies, values, "{codec}: read over HTTP");
    }
}

#[tokio::test]
async fn the_admin_client_creates_describes_grows_and_deletes_topics() {
    let broker = start().await;
    let out = scenario(&broker, "admin").await;
    assert!(out.contains("ok: adm is deleted"), "{out}");
    // The topic was a stream: created with the retention asked for, then gone.
    let (status, _) = Api::new(&broker)
        .call("GET", "/api/streams/adm", None)
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn delete_groups_refuses_a_group_with_members_then_drops_its_offsets() {
    let broker = start().await;
    let out = scenario(&broker, "delete_groups").await;
    assert!(out.contains("ok: an unknown group"), "{out}");
    let (status, body) = Api::new(&broker)
        .call("GET", "/api/streams/dg/groups/dg-g", None)
        .await;
    assert_eq!(status, 404, "{body}");
}

#[tokio::test]
async fn a_static_member_that_restarts_takes_its_partitions_back_without_a_rebalance() {
    let broker = start().await;
    let out = scenario(&broker, "static_members").await;
    assert!(
        out.contains("ok: DescribeGroups shows the instance ids"),
        "{out}"
    );
}

#[tokio::test]
async fn the_admin_clients_alter_a_topics_retention_at_once() {
    let broker = start().await;
    let out = scenario(&broker, "alter_configs").await;
    assert!(out.contains("ok: and the configs it carried over"), "{out}");
    let (status, body) = Api::new(&broker)
        .call("GET", "/api/streams/alt", None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["max_bytes"], 8192,
        "the stream's own retention: {body}"
    );
    assert_eq!(body["max_age_ms"], 86_400_000, "{body}");
    assert_eq!(body["segment_bytes"], 1024, "{body}");
}

#[tokio::test]
async fn idempotent_producers_forgotten_past_the_cap_come_back_as_new_ones() {
    let (broker, _dir) = start_configured("max_producer_ids = 2").await;
    let out = scenario(&broker, "forgotten_producers").await;
    assert!(
        out.contains("ok: producer 2's 150 records are stored in its order"),
        "{out}"
    );
}

#[tokio::test]
async fn delete_records_trims_a_partition_for_every_protocol() {
    let broker = start().await;
    let out = scenario(&broker, "delete_records").await;
    assert!(out.contains("ok: DescribeCluster"), "{out}");
    let (status, body) = Api::new(&broker)
        .call("GET", "/api/streams/trim/messages?from=first", None)
        .await;
    assert_eq!(status, 200, "{body}");
    let offsets: Vec<_> = body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["offset"].clone())
        .collect();
    assert_eq!(
        offsets,
        [json!(100)],
        "HTTP reads from the trim too: {body}"
    );
    let (status, body) = Api::new(&broker)
        .call("DELETE", "/api/streams/trim/messages?before=101", None)
        .await;
    assert_eq!(
        (status, &body["first_offset"]),
        (200, &json!(101)),
        "{body}"
    );
    let (status, body) = Api::new(&broker)
        .call("DELETE", "/api/streams/trim/messages?before=500", None)
        .await;
    assert_eq!(status, 400, "past the end over HTTP: {body}");
}

#[tokio::test]
async fn offset_delete_drops_one_partitions_offset_of_an_empty_group() {
    let broker = start().await;
    let out = scenario(&broker, "offset_delete").await;
    assert!(out.contains("ok: an unknown group"), "{out}");
    let (status, body) = Api::new(&broker)
        .call("GET", "/api/streams/od/groups/od-g", None)
        .await;
    assert_eq!(status, 200, "{body}");
    let committed: Vec<_> = body["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["committed"].clone())
        .collect();
    assert!(
        committed[0].is_null(),
        "HTTP sees partition 0's offset gone: {body}"
    );
    assert!(committed[1].as_u64().is_some_and(|c| c > 0), "{body}");
}

#[tokio::test]
async fn describe_log_dirs_shows_each_partitions_bytes() {
    let broker = start().await;
    let out = scenario(&broker, "log_dirs").await;
    assert!(out.contains("ok: partition 0 of ld holds"), "{out}");
}

#[tokio::test]
async fn keyed_records_keep_their_order_per_partition() {
    let broker = start().await;
    let out = scenario(&broker, "keyed").await;
    assert!(out.contains("ok: each key in one partition"), "{out}");
}

#[tokio::test]
async fn list_offsets_answers_earliest_latest_and_by_time() {
    let broker = start().await;
    let out = scenario(&broker, "offsets").await;
    assert!(
        out.contains("ok: the offset for a time between them is 1"),
        "{out}"
    );
}

/// Sends `frame` (a size prefix is added) and says whether the broker closed the
/// connection without answering.
async fn closed_without_answer(addr: &str, frame: &[u8]) -> bool {
    let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut bytes = u32::try_from(frame.len()).unwrap().to_be_bytes().to_vec();
    bytes.extend_from_slice(frame);
    socket.write_all(&bytes).await.unwrap();
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(Duration::from_secs(10), socket.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

#[tokio::test]
async fn hostile_frames_close_their_connection_only() {
    let broker = start().await;
    let addr = kafka(&broker);
    // Metadata v0 claiming 2^31-1 topics in a few bytes: refused before any
    // allocation for them (vendor/README.md).
    let mut huge_array = vec![0, 3, 0, 0, 0, 0, 0, 1, 0xff, 0xff];
    huge_array.extend_from_slice(&i32::MAX.to_be_bytes());
    assert!(closed_without_answer(&addr, &huge_array).await);
    // The same with a flexible version's compact array (Metadata v9, varint count).
    let flexible = vec![
        0, 3, 0, 9, 0, 0, 0, 2, 0xff, 0xff, 0, 0xff, 0xff, 0xff, 0xff, 0x0f,
    ];
    assert!(closed_without_answer(&addr, &flexible).await);
    // An unknown API key, and a version weir does not serve.
    assert!(closed_without_answer(&addr, &[0x7f, 0x00, 0, 0, 0, 0, 0, 3, 0xff, 0xff]).await);
    assert!(closed_without_answer(&addr, &[0, 1, 0, 1, 0, 0, 0, 4, 0xff, 0xff]).await);
    // A size prefix over the limit: closed before the body is read.
    let mut socket = tokio::net::TcpStream::connect(&addr).await.unwrap();
    socket.write_all(&i32::MAX.to_be_bytes()).await.unwrap();
    let mut buf = [0u8; 8];
    let read = tokio::time::timeout(Duration::from_secs(10), socket.read(&mut buf)).await;
    assert!(matches!(read, Ok(Ok(0) | Err(_))), "{read:?}");
    // Everyone else is served.
    kcat(&broker, &["-P", "-t", "after"], "still here\n").await;
    let consumed = kcat(&broker, &["-C", "-t", "after", "-o", "beginning", "-e"], "").await;
    assert_eq!(consumed, "still here\n");
}

/// Opens a connection and sends ApiVersions v0: the connection, if answered.
async fn answered_connection(addr: &str) -> Option<tokio::net::TcpStream> {
    let mut socket = tokio::net::TcpStream::connect(addr).await.ok()?;
    let frame = [0u8, 0, 0, 10, 0, 18, 0, 0, 0, 0, 0, 1, 0xff, 0xff];
    socket.write_all(&frame).await.ok()?;
    let read = tokio::time::timeout(Duration::from_secs(10), socket.read_i32()).await;
    let size = usize::try_from(read.ok()?.ok()?).ok()?;
    let mut body = vec![0u8; size];
    socket.read_exact(&mut body).await.ok()?;
    Some(socket)
}

#[tokio::test]
async fn connections_per_peer_address_are_capped() {
    let (broker, _dir) = start_configured("max_connections_per_peer = 2").await;
    let addr = kafka(&broker);
    let first = answered_connection(&addr)
        .await
        .expect("a first connection");
    let _second = answered_connection(&addr)
        .await
        .expect("a second connection");
    // The third from 127.0.0.1 is closed at accept, unanswered.
    assert!(
        answered_connection(&addr).await.is_none(),
        "a third was served"
    );
    // One closes, and its place is free again.
    drop(first);
    let mut again = None;
    for _ in 0..100 {
        again = answered_connection(&addr).await;
        if again.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(again.is_some(), "a connection once one closed");
}

#[tokio::test]
async fn api_versions_at_an_unserved_version_answers_unsupported_with_the_list() {
    let broker = start().await;
    let mut socket = tokio::net::TcpStream::connect(kafka(&broker))
        .await
        .unwrap();
    // ApiVersions v99, correlation id 7, no client id.
    let frame = [0u8, 18, 0, 99, 0, 0, 0, 7, 0xff, 0xff];
    let mut bytes = u32::try_from(frame.len()).unwrap().to_be_bytes().to_vec();
    bytes.extend_from_slice(&frame);
    socket.write_all(&bytes).await.unwrap();
    let size = socket.read_i32().await.unwrap();
    let mut body = vec![0u8; usize::try_from(size).unwrap()];
    socket.read_exact(&mut body).await.unwrap();
    assert_eq!(&body[..4], &7i32.to_be_bytes(), "correlation id");
    assert_eq!(&body[4..6], &35i16.to_be_bytes(), "UNSUPPORTED_VERSION");
    let count = i32::from_be_bytes(body[6..10].try_into().unwrap());
    assert!(count >= 10, "the served APIs are listed: {count}");
}

/// DescribeCluster v1 asking for controller endpoints is answered as a Kafka
/// broker answers it: `MISMATCHED_ENDPOINT_TYPE` (the client library tests ask
/// for brokers, which `delete_records_trims_a_partition_for_every_protocol` checks).
#[tokio::test]
async fn describe_cluster_for_controllers_is_a_mismatched_endpoint_type() {
    use bytes::Buf as _;
    use kafka_protocol_client::messages::{
        ApiKey, DescribeClusterRequest, DescribeClusterResponse,
    };
    use kafka_protocol_client::protocol::Decodable as _;
    let broker = start().await;
    let mut socket = tokio::net::TcpStream::connect(kafka(&broker))
        .await
        .unwrap();
    for (endpoint_type, want) in [(2i8, 114i16), (9, 115), (1, 0)] {
        let mut request = DescribeClusterRequest::default();
        request.endpoint_type = endpoint_type;
        let frame = request_frame(ApiKey::DescribeCluster, 1, 3, &request);
        socket.write_all(&frame).await.unwrap();
        let size = socket.read_i32().await.unwrap();
        let mut body = vec![0u8; usize::try_from(size).unwrap()];
        socket.read_exact(&mut body).await.unwrap();
        let mut body = bytes::Bytes::from(body);
        assert_eq!(body.get_i32(), 3, "correlation id");
        body.advance(1); // the response header's tagged fields
        let response = DescribeClusterResponse::decode(&mut body, 1).unwrap();
        assert_eq!(response.error_code, want, "endpoint type {endpoint_type}");
        assert_eq!(response.brokers.len(), usize::from(want == 0));
    }
}

#[tokio::test]
async fn a_group_of_two_shares_partitions_and_one_takes_all_when_the_other_leaves() {
    let broker = start().await;
    let out = scenario(&broker, "group_two").await;
    assert!(out.contains("ok: and nothing twice"), "{out}");
    for p in assert_no_lag(&broker, "grp", "g1", 4).await {
        assert_eq!(p["committed"], p["end"], "{p}");
    }
}

#[tokio::test]
async fn committed_offsets_survive_kill_9_and_the_group_resumes_there() {
    let mut broker = start().await;
    scenario(&broker, "commit_first").await;
    broker.kill9().await.unwrap();
    broker.restart().await.unwrap();
    let (status, body) = Api::new(&broker)
        .call("GET", "/api/streams/resume/groups/g2", None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.to_string().contains("30"),
        "a lag of 30 records shows over HTTP: {body}"
    );
    let out = scenario(&broker, "commit_then").await;
    assert!(out.contains("ok: resumed at 20"), "{out}");
}

/// KafkaJS, a third implementation: the admin client, the idempotent producer
/// with gzip batches, keys and headers, a group consumer from the first record,
/// committed offsets, ListGroups and DescribeGroups, DeleteTopics.
#[tokio::test]
async fn kafkajs_round_trips_through_a_group_and_its_admin_client() {
    let broker = start().await;
    let out = kafkajs(&broker, "round_trip").await;
    assert!(out.contains("committed 300"), "{out}");
}

/// KafkaJS's group of two (its round-robin assignor) shares four partitions, and
/// the one left takes all of them when the other leaves.
#[tokio::test]
async fn kafkajs_group_of_two_rebalances_when_one_leaves() {
    let broker = start().await;
    let out = kafkajs(&broker, "group_of_two").await;
    assert!(out.contains("then 100 by one"), "{out}");
}

#[tokio::test]
async fn kafka_python_reads_in_a_group_and_commits() {
    let broker = start().await;
    let out = scenario(&broker, "kafka_python_group").await;
    assert!(out.contains("ok: its commit is 30"), "{out}");
}

/// A loopback port free now (the broker binds it next).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn the_idempotent_producer_retries_through_kill_9_without_duplicates() {
    use tokio::io::AsyncBufReadExt as _;
    let listen = format!("127.0.0.1:{}", free_port());
    let mut broker = Broker::start_with(&["--kafka-listen", &listen])
        .await
        .unwrap();
    let mut child = tokio::process::Command::new(python())
        .arg(script())
        .arg("idempotent_through_restart")
        .env("WEIR_KAFKA", &listen)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    // Kill the broker mid-way, while batches are in flight.
    while let Some(line) = lines.next_line().await.unwrap() {
        seen.push(line.clone());
        if line == "progress 1000" {
            break;
        }
    }
    broker.kill9().await.unwrap();
    broker.restart().await.unwrap();
    let rest = tokio::time::timeout(Duration::from_secs(240), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            seen.push(line);
        }
        child.wait().await.unwrap()
    })
    .await
    .expect("the producer finishes");
    let out = seen.join("\n");
    assert!(rest.success(), "{out}\nbroker log:\n{}", broker.log());
    assert!(
        out.contains("ok: no record stored twice (0 duplicates)"),
        "{out}"
    );
    assert!(out.contains("ok: all 3000 stored"), "{out}");
    eprintln!(
        "retries answered from the stored batches: {}",
        broker
            .log()
            .matches("a retried batch was stored before")
            .count()
    );
}

#[tokio::test]
async fn sasl_plain_logs_in_as_a_user_held_to_its_permissions() {
    let broker = start().await;
    user_who_writes(&Api::new(&broker), "alice", "wonderland", "^sasl\\.ok$").await;
    let out = scenario(&broker, "sasl").await;
    assert!(out.contains("ok: a wrong password is refused"), "{out}");
    assert!(
        broker.log().contains("Kafka SASL login refused"),
        "the refusal is logged"
    );
}

#[tokio::test]
async fn kafka_over_tls_with_the_broker_certificate() {
    let pki = weir_testkit::tls::Pki::new().unwrap();
    let mut args = vec!["--kafka-tls-listen".to_owned(), "127.0.0.1:0".to_owned()];
    args.extend(pki.server_args());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let broker = Broker::start_with(&args).await.unwrap();
    let addr = broker
        .kafka_tls_addr()
        .expect("the TLS listener is on")
        .to_owned();
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new(python())
            .arg(script())
            .arg("tls")
            .env("WEIR_KAFKA", &addr)
            .env("WEIR_KAFKA_CA", pki.path("ca.pem"))
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("in time")
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        broker.log()
    );
    assert!(stdout.contains("ok: read back over TLS"), "{stdout}");
}
