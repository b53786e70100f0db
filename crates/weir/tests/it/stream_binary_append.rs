//! Binary appends over HTTP (`Content-Type: application/vnd.weir.batches`,
//! docs/http-api.md "Binary appends"): batches the appender encoded are stored as
//! the records they hold, with the broker's offsets and timestamps, and read back
//! over JSON; what breaks the model (a bad batch, a missing partition, a keyed record
//! in another partition than its key's, too many records) is refused with nothing
//! appended; `weir bench stream --append-format batches` appends this way.

use serde_json::{Value, json};
use weir_broker::stream::partition_for;
use weir_log::{IncomingBatch, NewRecord};
use weir_testkit::Broker;

use crate::streams::call;

const BINARY: &str = "application/vnd.weir.batches";

/// One section: partition, length, the batches.
fn section(partition: u32, batches: &[Vec<u8>]) -> Vec<u8> {
    let bytes: Vec<u8> = batches.concat();
    let mut out = partition.to_le_bytes().to_vec();
    out.extend_from_slice(&u32::try_from(bytes.len()).unwrap().to_le_bytes());
    out.extend(bytes);
    out
}

async fn send(broker: &Broker, stream: &str, body: Vec<u8>) -> (u16, Value) {
    let answer = broker
        .client()
        .post(format!(
            "{}/api/streams/{stream}/messages",
            broker.http_url()
        ))
        .header(reqwest::header::CONTENT_TYPE, BINARY)
        .body(body)
        .send()
        .await
        .expect("request");
    let status = answer.status().as_u16();
    let text = answer.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// A key that `partition_for` sends to `partition` of `partitions`.
fn key_for(partition: u32, partitions: u32) -> String {
    (0..10_000)
        .map(|i| format!("key-{i}"))
        .find(|k| partition_for(k.as_bytes(), partitions) == partition)
        .unwrap()
}

fn batch(records: &[NewRecord]) -> Vec<u8> {
    IncomingBatch::encode(records).unwrap()
}

async fn next_offsets(broker: &Broker, stream: &str) -> Vec<u64> {
    let (s, v) = call(broker, "GET", &format!("/api/streams/{stream}"), None).await;
    assert_eq!(s, 200, "{v}");
    v["partition_stats"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["next_offset"].as_u64().unwrap())
        .collect()
}

#[tokio::test]
async fn binary_batches_are_stored_as_their_records_with_the_brokers_offsets_and_time() {
    let broker = Broker::start().await.expect("broker starts");
    let (s, v) = call(
        &broker,
        "PUT",
        "/api/streams/events",
        Some(json!({"partitions": 3})),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let key = key_for(1, 3);
    let keyed = NewRecord::new("k0")
        .with_key(key.clone())
        .with_header("trace", "t-1")
        .with_timestamp(5);
    let body = [
        section(1, &[batch(&[keyed, NewRecord::new("u0")])]),
        section(
            0,
            &[batch(&[NewRecord::new("a")]), batch(&[NewRecord::new("b")])],
        ),
    ]
    .concat();
    let (s, v) = send(&broker, "events", body).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(
        v,
        json!({"batches": [
            {"partition": 1, "offset": 0, "count": 2},
            {"partition": 0, "offset": 0, "count": 1},
            {"partition": 0, "offset": 1, "count": 1},
        ]})
    );
    let (s, read) = call(
        &broker,
        "GET",
        "/api/streams/events/messages?partition=1&from=first",
        None,
    )
    .await;
    assert_eq!(s, 200, "{read}");
    let messages = read["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2, "{read}");
    assert_eq!(messages[0]["key"], key.as_str());
    assert_eq!(messages[0]["headers"], json!({"trace": "t-1"}));
    assert_eq!(messages[0]["body"], "k0");
    assert_eq!(messages[1]["body"], "u0");
    assert_eq!(messages[1].get("key"), None, "{read}");
    for m in messages {
        let stamped = m["timestamp_ms"].as_i64().unwrap();
        assert!(
            stamped >= before,
            "the broker's clock, not the appender's: {m}"
        );
    }
    // A JSON append after them continues the offsets.
    let (s, v) = call(
        &broker,
        "POST",
        "/api/streams/events/messages",
        Some(json!({"key": key, "body": "k1"})),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["messages"][0], json!({"partition": 1, "offset": 2}));
}

#[tokio::test]
async fn binary_appends_that_break_the_model_are_refused_and_append_nothing() {
    let broker = Broker::start().await.expect("broker starts");
    let (s, _) = call(
        &broker,
        "PUT",
        "/api/streams/events",
        Some(json!({"partitions": 2})),
    )
    .await;
    assert_eq!(s, 201);
    let good = batch(&[NewRecord::new("ok")]);
    let wrong_key = batch(&[NewRecord::new("x").with_key(key_for(1, 2))]);
    let mut damaged = good.clone();
    *damaged.last_mut().unwrap() ^= 1;
    let mut cut = section(0, std::slice::from_ref(&good));
    cut.pop();
    let many: Vec<NewRecord> = (0..1001).map(|_| NewRecord::new("m")).collect();
    let cases = [
        (section(0, &[damaged]), 400, "invalid_batches", "checksum"),
        (cut, 400, "invalid_batches", "section 0"),
        (vec![1, 2, 3], 400, "invalid_batches", "header"),
        (Vec::new(), 400, "invalid_argument", "at least one record"),
        (
            section(2, std::slice::from_ref(&good)),
            400,
            "invalid_argument",
            "partition 2",
        ),
        (
            [
                section(0, std::slice::from_ref(&good)),
                section(0, &[wrong_key]),
            ]
            .concat(),
            400,
            "invalid_argument",
            "goes to partition 1",
        ),
        (section(0, &[batch(&many)]), 400, "limit_exceeded", ""),
        (
            section(
                0,
                &[batch(&[
                    NewRecord::new("x").with_header("x-weir-properties", "v")
                ])],
            ),
            400,
            "invalid_argument",
            "reserved for the broker",
        ),
    ];
    for (i, (body, status, code, reason)) in cases.into_iter().enumerate() {
        let (s, v) = send(&broker, "events", body).await;
        assert_eq!(
            (s, v["error"].as_str()),
            (status, Some(code)),
            "case {i}: {v}"
        );
        assert!(
            v["reason"].as_str().unwrap().contains(reason),
            "case {i}: {v}"
        );
    }
    assert_eq!(
        next_offsets(&broker, "events").await,
        [0, 0],
        "nothing appended"
    );
    let (s, v) = send(&broker, "missing", section(0, &[good])).await;
    assert_eq!(
        (s, v["error"].as_str()),
        (404, Some("stream_not_found")),
        "{v}"
    );
}

/// `weir bench stream --append-format batches` appends every record, readable.
#[tokio::test]
async fn bench_stream_appends_binary_batches() {
    let broker = Broker::start().await.expect("broker starts");
    let url = broker.http_url();
    let report = crate::bench::bench_json(&[
        "stream",
        "--server",
        &url,
        "--count",
        "3000",
        "--batch",
        "500",
        "--partitions",
        "2",
        "--append-format",
        "batches",
    ])
    .await;
    assert_eq!(report["records"], 3000, "{report}");
    assert!(
        report["replay_records_per_sec"].as_f64().unwrap() > 0.0,
        "the replay read every record back: {report}"
    );
}
