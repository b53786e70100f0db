//! Streams over HTTP (issue 21): declare (201, 200 if identical, 409 if not), list,
//! show, append one record or a batch, read from first/last/next/an offset/a time,
//! long polls, keyed records in one partition in order, streams per vhost, and
//! every answered append still there after kill -9.

use serde_json::{Value, json};
use weir_testkit::Broker;

/// A request as guest: (status, JSON body). Shared by the stream tests.
pub(crate) async fn call(
    broker: &Broker,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = broker
        .client()
        .request(method, format!("{}{path}", broker.http_url()));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let answer = request.send().await.expect("request");
    let status = answer.status().as_u16();
    let text = answer.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn bodies(read: &Value) -> Vec<&str> {
    read["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["body"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn streams_are_declared_appended_to_and_read_from_any_point() {
    let broker = Broker::start().await.expect("broker starts");
    let (s, v) = call(
        &broker,
        "PUT",
        "/api/streams/events",
        Some(json!({"partitions": 2})),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["partition_stats"].as_array().unwrap().len(), 2);
    let (s, _) = call(
        &broker,
        "PUT",
        "/api/streams/events",
        Some(json!({"partitions": 2})),
    )
    .await;
    assert_eq!(s, 200, "identical");
    let (s, v) = call(
        &broker,
        "PUT",
        "/api/streams/events",
        Some(json!({"partitions": 1})),
    )
    .await;
    assert_eq!(
        (s, v["error"].as_str()),
        (409, Some("stream_exists_with_different_options"))
    );
    // Keyed records: one partition, in order.
    let batch: Vec<Value> = (0..5)
        .map(|i| json!({"key": "order-42", "headers": {"n": i.to_string()}, "body": format!("e{i}")}))
        .collect();
    let (s, placed) = call(
        &broker,
        "POST",
        "/api/streams/events/messages",
        Some(json!({"messages": batch})),
    )
    .await;
    assert_eq!(s, 201, "{placed}");
    let placed = placed["messages"].as_array().unwrap();
    let partition = placed[0]["partition"].as_u64().unwrap();
    assert!(
        placed
            .iter()
            .all(|p| p["partition"].as_u64() == Some(partition))
    );
    let offsets: Vec<u64> = placed
        .iter()
        .map(|p| p["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, [0, 1, 2, 3, 4]);
    let read_path = |from: &str, max: u32| {
        format!("/api/streams/events/messages?partition={partition}&from={from}&max={max}")
    };
    let (s, read) = call(&broker, "GET", &read_path("first", 10), None).await;
    assert_eq!(s, 200, "{read}");
    assert_eq!(bodies(&read), ["e0", "e1", "e2", "e3", "e4"]);
    assert_eq!(read["next"], 5);
    assert_eq!(read["messages"][2]["key"], "order-42");
    assert_eq!(read["messages"][2]["headers"]["n"], "2");
    assert!(read["messages"][0]["timestamp_ms"].as_i64().unwrap() > 0);
    // Reading changed nothing; any point can be read again.
    let (_, again) = call(&broker, "GET", &read_path("3", 1), None).await;
    assert_eq!(
        (bodies(&again), again["next"].as_u64()),
        (vec!["e3"], Some(4))
    );
    let (_, last) = call(&broker, "GET", &read_path("last", 10), None).await;
    assert_eq!(bodies(&last), ["e4"]);
    let (_, by_time) = call(&broker, "GET", &read_path("time:0", 1), None).await;
    assert_eq!(bodies(&by_time), ["e0"]);
    let (_, next) = call(&broker, "GET", &read_path("next", 10), None).await;
    assert_eq!((bodies(&next).len(), next["next"].as_u64()), (0, Some(5)));
    let (s, v) = call(&broker, "GET", &read_path("99", 1), None).await;
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_argument")));
    let (s, v) = call(&broker, "GET", &read_path("sideways", 1), None).await;
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_argument")));
    long_poll_gets_a_late_record(&broker, partition).await;
    // Listed and shown; a stream and a queue cannot share a name.
    let (_, list) = call(&broker, "GET", "/api/streams", None).await;
    assert_eq!(list["streams"][0]["name"], "events");
    let (_, shown) = call(&broker, "GET", "/api/streams/events", None).await;
    let stats = &shown["partition_stats"][usize::try_from(partition).unwrap()];
    assert_eq!(stats["next_offset"], 6);
    let (s, _) = call(&broker, "PUT", "/api/queues/events", Some(json!({}))).await;
    assert_eq!(s, 409, "a queue cannot take a stream's name");
    let (s, _) = call(&broker, "DELETE", "/api/streams/events", None).await;
    assert_eq!(s, 204);
    let (s, v) = call(&broker, "GET", "/api/streams/events", None).await;
    assert_eq!((s, v["error"].as_str()), (404, Some("stream_not_found")));
}

/// A long poll on `partition` of `events` answers as soon as a record comes.
async fn long_poll_gets_a_late_record(broker: &Broker, partition: u64) {
    // A long poll answers as soon as a record comes.
    let waiting = {
        let url = format!(
            "{}/api/streams/events/messages?partition={partition}&from=next&wait_ms=20000",
            broker.http_url()
        );
        let client = broker.client();
        tokio::spawn(async move { client.get(url).send().await.unwrap().json::<Value>().await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let (s, _) = call(
        broker,
        "POST",
        "/api/streams/events/messages",
        Some(json!({"key": "order-42", "body": "late"})),
    )
    .await;
    assert_eq!(s, 201);
    let late = waiting.await.unwrap().unwrap();
    assert_eq!(bodies(&late), ["late"]);
}

#[tokio::test]
async fn answered_appends_survive_kill_9_and_streams_live_in_their_vhost() {
    let mut broker = Broker::start().await.expect("broker starts");
    let (s, _) = call(&broker, "PUT", "/api/vhosts/team", None).await;
    assert_eq!(s, 201);
    let all = json!({"configure": ".*", "write": ".*", "read": ".*"});
    call(&broker, "PUT", "/api/permissions/team/guest", Some(all)).await;
    for path in ["/api/streams/log", "/api/vhosts/team/streams/log"] {
        let (s, v) = call(&broker, "PUT", path, Some(json!({}))).await;
        assert_eq!(s, 201, "{path}: {v}");
    }
    let (s, _) = call(
        &broker,
        "POST",
        "/api/vhosts/team/streams/log/messages",
        Some(json!({"body": "team's"})),
    )
    .await;
    assert_eq!(s, 201);
    for i in 0..50 {
        let (s, _) = call(
            &broker,
            "POST",
            "/api/streams/log/messages",
            Some(json!({"body": format!("r{i}")})),
        )
        .await;
        assert_eq!(s, 201);
    }
    broker.kill9().await.expect("kill -9");
    broker.restart().await.expect("restart");
    let (_, read) = call(&broker, "GET", "/api/streams/log/messages?max=100", None).await;
    let expected: Vec<String> = (0..50).map(|i| format!("r{i}")).collect();
    assert_eq!(bodies(&read), expected);
    let (_, team) = call(
        &broker,
        "GET",
        "/api/vhosts/team/streams/log/messages",
        None,
    )
    .await;
    assert_eq!(bodies(&team), ["team's"]);
    let (_, listed) = call(&broker, "GET", "/api/vhosts/team/streams", None).await;
    assert_eq!(listed["streams"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn patch_changes_a_streams_retention_at_once_and_across_a_restart() {
    let mut broker = Broker::start().await.expect("broker starts");
    let (status, _) = call(
        &broker,
        "PUT",
        "/api/streams/ret",
        Some(json!({"segment_bytes": 1024})),
    )
    .await;
    assert_eq!(status, 201);
    // 20 appends: a segment (1 KiB here) holds whole batches.
    for n in 0..20 {
        let batch: Vec<Value> = (0..10)
            .map(|i| json!({"body": format!("{:0>100}", n * 10 + i)}))
            .collect();
        let (status, body) = call(
            &broker,
            "POST",
            "/api/streams/ret/messages",
            Some(json!({"messages": batch})),
        )
        .await;
        assert_eq!(status, 201, "{body}");
    }
    let first = |s: &Value| s["partition_stats"][0]["first_offset"].as_u64().unwrap();
    let (_, shown) = call(&broker, "GET", "/api/streams/ret", None).await;
    assert_eq!(first(&shown), 0, "{shown}");
    // Wrong fields and values are 400s, and change nothing.
    for bad in [
        json!({"partitions": 2}),
        json!({"max_bytes": "a lot"}),
        json!({"segment_bytes": 10}),
    ] {
        let (status, body) = call(&broker, "PATCH", "/api/streams/ret", Some(bad)).await;
        assert_eq!(status, 400, "{body}");
        assert!(body["error"].is_string(), "{body}");
    }
    let (status, body) = call(
        &broker,
        "PATCH",
        "/api/streams/nope",
        Some(json!({"max_bytes": 4096})),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    // A size limit applies at once; the segment size stays as it was.
    let (status, altered) = call(
        &broker,
        "PATCH",
        "/api/streams/ret",
        Some(json!({"max_bytes": 4096, "max_age_ms": 86_400_000})),
    )
    .await;
    assert_eq!(status, 200, "{altered}");
    assert!(first(&altered) > 0, "{altered}");
    assert_eq!(altered["max_bytes"], 4096, "{altered}");
    assert_eq!(altered["segment_bytes"], 1024, "{altered}");
    // null clears one; the others stay.
    let (status, cleared) = call(
        &broker,
        "PATCH",
        "/api/streams/ret",
        Some(json!({"max_bytes": null})),
    )
    .await;
    assert_eq!(status, 200, "{cleared}");
    assert!(cleared["max_bytes"].is_null(), "{cleared}");
    assert_eq!(cleared["max_age_ms"], 86_400_000, "{cleared}");
    broker.restart().await.expect("restart");
    let (_, shown) = call(&broker, "GET", "/api/streams/ret", None).await;
    assert!(shown["max_bytes"].is_null(), "{shown}");
    assert_eq!(
        shown["max_age_ms"], 86_400_000,
        "kept across a restart: {shown}"
    );
}
