//! The binary read format over HTTP (`Accept: application/vnd.weir.batches`,
//! docs/http-api.md "Binary reads"): a read and a group poll answer the stored
//! batches, which decode to exactly the records the JSON answer shows (keys,
//! headers, binary bodies), from the offset asked for; a poll's sections say what
//! to commit, and its `min` waits for that many unread records; errors stay JSON;
//! `weir bench stream` reads in both formats.

use bytes::Bytes;
use serde_json::{Value, json};
use weir_log::{Offset, Record, decode_stored};
use weir_testkit::Broker;

use crate::streams::call;

const BINARY: &str = "application/vnd.weir.batches";

/// One partition's section of a binary answer.
#[derive(Debug)]
struct Section {
    partition: u32,
    from: u64,
    next: u64,
    records: Vec<Record>,
}

/// Sends with `Accept: BINARY`: (status, content type, headers, body).
async fn binary(
    broker: &Broker,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, String, reqwest::header::HeaderMap, Bytes) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = broker
        .client()
        .request(method, format!("{}{path}", broker.http_url()))
        .header(reqwest::header::ACCEPT, BINARY);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let answer = request.send().await.expect("request");
    let status = answer.status().as_u16();
    let headers = answer.headers().clone();
    let kind = headers
        .get(reqwest::header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, kind, headers, answer.bytes().await.unwrap())
}

fn sections(mut bytes: Bytes) -> Vec<Section> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        assert!(bytes.len() >= 24, "a section header cut short");
        let head = bytes.split_to(24);
        let partition = u32::from_le_bytes(head[0..4].try_into().unwrap());
        let from = u64::from_le_bytes(head[4..12].try_into().unwrap());
        let next = u64::from_le_bytes(head[12..20].try_into().unwrap());
        let len = u32::from_le_bytes(head[20..24].try_into().unwrap()) as usize;
        let batches = bytes.split_to(len);
        let records = decode_stored(&batches, Offset(from)).expect("batches decode");
        out.push(Section {
            partition,
            from,
            next,
            records,
        });
    }
    out
}

/// A JSON record and a decoded one are the same record.
fn assert_same(json: &Value, record: &Record) {
    assert_eq!(json["offset"], record.offset.0);
    assert_eq!(json["timestamp_ms"], record.timestamp_ms);
    let key = record.key.as_ref().map(|k| std::str::from_utf8(k).unwrap());
    assert_eq!(json["key"].as_str(), key);
    match json["body"].as_str() {
        Some(text) => assert_eq!(text.as_bytes(), &record.body[..]),
        None => assert_eq!(json["body_base64"], "AP+A", "{json}"),
    }
    for (name, value) in json["headers"].as_object().unwrap() {
        let found = record.headers.iter().find(|h| h.name == name.as_bytes());
        assert_eq!(
            found.map(|h| &h.value[..]),
            Some(value.as_str().unwrap().as_bytes())
        );
    }
}

async fn append(broker: &Broker, messages: Vec<Value>) {
    let (s, v) = call(
        broker,
        "POST",
        "/api/streams/events/messages",
        Some(json!({"messages": messages})),
    )
    .await;
    assert_eq!(s, 201, "{v}");
}

#[tokio::test]
async fn a_binary_read_decodes_to_the_records_the_json_read_shows() {
    let broker = Broker::start().await.expect("broker starts");
    let (s, _) = call(&broker, "PUT", "/api/streams/events", None).await;
    assert_eq!(s, 201);
    append(
        &broker,
        (0..3)
            .map(|i| json!({"key": "k", "body": format!("a{i}")}))
            .collect(),
    )
    .await;
    append(
        &broker,
        vec![
            json!({"headers": {"trace": "t-1"}, "body": "b0"}),
            json!({"body_base64": "AP+A"}),
        ],
    )
    .await;
    // From inside the first batch: its records before offset 1 are skipped.
    let (s, kind, _, body) = binary(
        &broker,
        "GET",
        "/api/streams/events/messages?from=1&max=100",
        None,
    )
    .await;
    assert_eq!((s, kind.as_str()), (200, BINARY));
    let got = sections(body);
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].partition, got[0].from, got[0].next), (0, 1, 5));
    let (_, json) = call(
        &broker,
        "GET",
        "/api/streams/events/messages?from=1&max=100",
        None,
    )
    .await;
    let messages = json["messages"].as_array().unwrap();
    assert_eq!(got[0].records.len(), messages.len());
    assert_eq!(messages.len(), 4);
    for (j, r) in messages.iter().zip(&got[0].records) {
        assert_same(j, r);
    }
    // At the end: one empty section whose `next` says where to go on.
    let (s, _, _, body) = binary(
        &broker,
        "GET",
        "/api/streams/events/messages?from=next",
        None,
    )
    .await;
    assert_eq!(s, 200);
    let end = sections(body);
    assert_eq!((end.len(), end[0].next, end[0].records.len()), (1, 5, 0));
    // Errors stay JSON.
    let (s, kind, _, body) = binary(&broker, "GET", "/api/streams/nope/messages", None).await;
    assert_eq!(s, 404);
    assert!(kind.starts_with("application/json"), "{kind}");
    let error: Value = serde_json::from_slice(&body).unwrap();
    assert!(
        error["error"].is_string() || error["reason"].is_string(),
        "{error}"
    );
}

#[tokio::test]
async fn a_binary_group_poll_says_what_to_commit_and_the_lag_goes_to_zero() {
    let broker = Broker::start().await.expect("broker starts");
    let (s, _) = call(
        &broker,
        "PUT",
        "/api/streams/events",
        Some(json!({"partitions": 3})),
    )
    .await;
    assert_eq!(s, 201);
    let group = "/api/streams/events/groups/g";
    let (s, _) = call(&broker, "PUT", group, Some(json!({"start": "first"}))).await;
    assert_eq!(s, 201);
    append(
        &broker,
        (0..30)
            .map(|i| json!({"key": format!("k{i}"), "body": format!("r{i}")}))
            .collect(),
    )
    .await;
    let poll = json!({"member": "m", "max": 1000});
    let (s, kind, headers, body) = binary(
        &broker,
        "POST",
        &format!("{group}/poll"),
        Some(poll.clone()),
    )
    .await;
    assert_eq!((s, kind.as_str()), (200, BINARY));
    assert_eq!(headers["weir-partitions"], "0,1,2");
    assert!(
        headers["weir-generation"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .is_ok()
    );
    let got = sections(body);
    let mut bodies: Vec<String> = got
        .iter()
        .flat_map(|s| s.records.iter())
        .map(|r| String::from_utf8(r.body.to_vec()).unwrap())
        .collect();
    bodies.sort();
    let mut expected: Vec<String> = (0..30).map(|i| format!("r{i}")).collect();
    expected.sort();
    assert_eq!(bodies, expected, "every record once");
    let offsets: serde_json::Map<String, Value> = got
        .iter()
        .map(|s| (s.partition.to_string(), json!(s.next)))
        .collect();
    let (s, v) = call(
        &broker,
        "POST",
        &format!("{group}/commit"),
        Some(json!({"member": "m", "offsets": offsets})),
    )
    .await;
    assert_eq!(s, 204, "{v}");
    let (_, shown) = call(&broker, "GET", group, None).await;
    for p in shown["partitions"].as_array().unwrap() {
        assert_eq!(p["lag"], 0, "{shown}");
    }
    // Nothing more to read: the poll's position moved past what it answered.
    let (s, _, _, body) = binary(&broker, "POST", &format!("{group}/poll"), Some(poll)).await;
    assert_eq!(s, 200);
    assert!(body.is_empty(), "no sections when nothing is new");
}

#[tokio::test]
async fn a_polls_min_waits_for_that_many_unread_records_and_may_not_pass_max() {
    let broker = Broker::start().await.expect("broker starts");
    let (s, _) = call(&broker, "PUT", "/api/streams/events", None).await;
    assert_eq!(s, 201);
    let group = "/api/streams/events/groups/g";
    let (s, _) = call(&broker, "PUT", group, Some(json!({"start": "first"}))).await;
    assert_eq!(s, 201);
    // A min over max is refused; a min waits for that many records, up to wait_ms.
    let (s, v) = call(
        &broker,
        "POST",
        &format!("{group}/poll"),
        Some(json!({"member": "m", "max": 10, "min": 11})),
    )
    .await;
    assert_eq!(
        (s, v["error"].as_str()),
        (400, Some("invalid_argument")),
        "{v}"
    );
    append(&broker, vec![json!({"key": "k1", "body": "late"})]).await;
    let waiting = {
        let (url, client) = (broker.http_url(), broker.client());
        let path = format!("{url}{group}/poll");
        tokio::spawn(async move {
            let waited = json!({"member": "m", "max": 10, "min": 2, "wait_ms": 20_000});
            let answer = client
                .post(path)
                .header(reqwest::header::ACCEPT, BINARY)
                .json(&waited)
                .send()
                .await
                .expect("poll");
            answer.bytes().await.expect("body")
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        !waiting.is_finished(),
        "one unread record is fewer than the min"
    );
    append(&broker, vec![json!({"key": "k1", "body": "later"})]).await;
    let got = sections(waiting.await.expect("task"));
    let bodies: Vec<&[u8]> = got
        .iter()
        .flat_map(|s| s.records.iter())
        .map(|r| &r.body[..])
        .collect();
    assert_eq!(bodies, [&b"late"[..], b"later"]);
}

/// `weir bench stream` reads in either format: its replay (which checks it read
/// back every appended record, in every partition) passes with both.
#[tokio::test]
async fn bench_stream_replays_everything_in_both_read_formats() {
    let broker = Broker::start().await.expect("broker starts");
    for format in ["json", "batches"] {
        let report = crate::bench::bench_json(&[
            "stream",
            "--server",
            &broker.http_url(),
            "--partitions",
            "2",
            "--count",
            "6000",
            "--batch",
            "500",
            "--groups",
            "2",
            "--commit-interval-ms",
            "50",
            "--min-records",
            "100",
            "--read-format",
            format,
        ])
        .await;
        assert_eq!(report["records"], 6000, "{format}: {report}");
        assert!(
            report["replay_records_per_sec"].as_f64() > Some(0.0),
            "{format}: {report}"
        );
    }
}

/// `weir bench stream --amqp` runs the stream over AMQP (RabbitMQ's stream queues'
/// way), against two brokers with `--compare`, each run verified (each of the
/// readers got every record once); over HTTP `--compare` is refused.
#[tokio::test]
async fn bench_stream_over_amqp_compares_two_brokers() {
    let (a, b) = (
        Broker::start().await.unwrap(),
        Broker::start().await.unwrap(),
    );
    let report = crate::bench::bench_json(&[
        "stream",
        "--amqp",
        &a.amqp_url(),
        "--compare",
        &b.amqp_url(),
        "--rounds",
        "1",
        "--count",
        "2000",
        "--size",
        "64",
        "--producers",
        "2",
        "--readers",
        "3",
    ])
    .await;
    let rounds = report["rounds"].as_array().expect("rounds");
    assert_eq!(rounds.len(), 1, "{report}");
    for side in ["a", "b"] {
        assert_eq!(rounds[0][side]["verified"], true, "{report}");
        assert_eq!(rounds[0][side]["received"], 6000, "three readers: {report}");
    }
    let refused = tokio::process::Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["bench", "stream", "--server", &a.http_url(), "--compare"])
        .arg(b.amqp_url())
        .output()
        .await
        .expect("weir bench runs");
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("--compare needs --amqp"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}

/// `--keep` leaves the stream for a later `--read-only-ms` run, whose groups (in a
/// process of their own) read all of it and append nothing.
#[tokio::test]
async fn bench_stream_readers_can_run_in_a_process_of_their_own() {
    let broker = Broker::start().await.expect("broker starts");
    let url = broker.http_url();
    let common = ["stream", "--server", &url, "--stream", "kept"];
    let appended = crate::bench::bench_json(
        &[
            &common[..],
            &["--count", "3000", "--batch", "500", "--keep"],
        ]
        .concat(),
    )
    .await;
    assert_eq!(appended["records"], 3000, "{appended}");
    let read = crate::bench::bench_json(
        &[
            &common[..],
            &[
                "--read-only-ms",
                "1000",
                "--groups",
                "3",
                "--read-format",
                "batches",
            ],
        ]
        .concat(),
    )
    .await;
    assert_eq!(
        read["read_by_groups"], 9000,
        "three groups read it all: {read}"
    );
    let (s, v) = call(&broker, "GET", "/api/streams/kept", None).await;
    assert_eq!(s, 200, "kept: {v}");
    assert_eq!(v["partition_stats"][0]["next_offset"], 3000, "{v}");
}
