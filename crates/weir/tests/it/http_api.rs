//! The REST API, one behaviour per test, against the real binary.

use serde_json::{Value, json};
use weir_testkit::Broker;

use crate::{Api, bodies, receipt};

async fn start() -> (Broker, Api) {
    let broker = Broker::start().await.expect("broker starts");
    let api = Api::new(&broker);
    (broker, api)
}

#[tokio::test]
async fn declare_is_created_then_identical_then_conflicting() {
    let (_b, api) = start().await;
    let (s, body) = api
        .call(
            "PUT",
            "/api/queues/jobs",
            Some(json!({"max_deliveries": 3})),
        )
        .await;
    assert_eq!(s, 201, "{body}");
    assert_eq!(body["options"]["max_deliveries"], 3);
    let (s, _) = api
        .call(
            "PUT",
            "/api/queues/jobs",
            Some(json!({"max_deliveries": 3})),
        )
        .await;
    assert_eq!(s, 200);
    let (s, body) = api
        .call(
            "PUT",
            "/api/queues/jobs",
            Some(json!({"max_deliveries": 4})),
        )
        .await;
    assert_eq!(s, 409);
    assert_eq!(body["error"], "queue_exists_with_different_options");
    assert!(
        body["reason"].as_str().unwrap().contains("max_deliveries"),
        "{body}"
    );
    let (s, body) = api.call("GET", "/api/queues", None).await;
    assert_eq!(s, 200);
    assert_eq!(body["queues"][0]["name"], "jobs");
    let (s, _) = api.call("DELETE", "/api/queues/jobs", None).await;
    assert_eq!(s, 204);
    let (s, body) = api.call("GET", "/api/queues/jobs", None).await;
    assert_eq!((s, body["error"].as_str()), (404, Some("queue_not_found")));
    // An empty body declares a default queue.
    let (s, _) = api.raw("PUT", "/api/queues/plain", "").await;
    assert_eq!(s, 201);
}

#[tokio::test]
async fn send_receive_ack_round_trip_with_text_binary_headers_and_ids() {
    let (_b, api) = start().await;
    api.create("q", json!({})).await;
    let sent = api
        .send(
            "q",
            json!({"messages": [
                {"body": "hello", "headers": {"trace": "t1"}, "id": "m-1"},
                {"body_base64": "AP8A/w=="}
            ]}),
        )
        .await;
    assert_eq!(sent["sent"], 2);
    assert_eq!(sent["messages"][0]["id"], "m-1");
    let generated = sent["messages"][1]["id"].as_str().unwrap();
    assert!(!generated.is_empty());
    let got = api.receive("q", "max=10").await;
    assert_eq!(got.len(), 2);
    assert_eq!(got[0]["body"], "hello");
    assert_eq!(got[0]["headers"]["trace"], "t1");
    assert_eq!(got[0]["id"], "m-1");
    assert_eq!(got[0]["delivery_count"], 1);
    assert_eq!(got[1]["body_base64"], "AP8A/w==");
    assert_eq!(got[1]["id"], generated);
    let stats = api.stats("q").await;
    assert_eq!(
        (stats["ready"].as_u64(), stats["leased"].as_u64()),
        (Some(0), Some(2))
    );
    let (s, body) = api.ack("q", &[receipt(&got[0]), receipt(&got[1])]).await;
    assert_eq!((s, body["acked"].as_u64()), (200, Some(2)));
    let stats = api.stats("q").await;
    assert_eq!(stats["acked_total"], 2);
    assert_eq!(stats["leased"], 0);
    // Acked twice: the receipt is stale now.
    let (s, body) = api.ack("q", &[receipt(&got[0])]).await;
    assert_eq!((s, body["error"].as_str()), (409, Some("stale_receipt")));
    assert!(api.receive("q", "max=10").await.is_empty());
}

#[tokio::test]
async fn an_expired_lease_makes_the_message_ready_again_with_its_delivery_counted() {
    let (_b, api) = start().await;
    api.create("q", json!({"visibility_timeout_ms": 200})).await;
    api.send_text("q", "work").await;
    let first = api.receive("q", "max=1").await;
    assert_eq!(first[0]["delivery_count"], 1);
    let again = api.receive("q", "max=1&wait_ms=10000").await;
    assert_eq!(bodies(&again), ["work"]);
    assert_eq!(again[0]["delivery_count"], 2);
    // The first receipt is stale: the lease moved on.
    let (s, _) = api.ack("q", &[receipt(&first[0])]).await;
    assert_eq!(s, 409);
    let (s, _) = api.ack("q", &[receipt(&again[0])]).await;
    assert_eq!(s, 200);
    assert_eq!(api.stats("q").await["redelivered_total"], 1);
}

#[tokio::test]
async fn extend_keeps_the_lease_and_a_per_receive_timeout_overrides_the_default() {
    let (_b, api) = start().await;
    api.create("q", json!({"visibility_timeout_ms": 60000}))
        .await;
    api.send_text("q", "long job").await;
    let got = api.receive("q", "max=1&visibility_timeout_ms=1500").await;
    let (s, body) = api
        .call(
            "POST",
            "/api/queues/q/extend",
            Some(json!({"receipts": [receipt(&got[0])], "visibility_timeout_ms": 60000})),
        )
        .await;
    assert_eq!((s, body["extended"].as_u64()), (200, Some(1)));
    // Without the extension the message would be back after 1.5 s.
    assert!(api.receive("q", "max=1&wait_ms=3000").await.is_empty());
    let (s, _) = api.ack("q", &[receipt(&got[0])]).await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn nack_requeues_at_once_or_after_a_delay() {
    let (_b, api) = start().await;
    api.create("q", json!({})).await;
    api.send_text("q", "a").await;
    let got = api.receive("q", "max=1").await;
    let (s, body) = api
        .call(
            "POST",
            "/api/queues/q/nack",
            Some(json!({"receipt": receipt(&got[0])})),
        )
        .await;
    assert_eq!((s, body["nacked"].as_u64()), (200, Some(1)));
    let again = api.receive("q", "max=1").await;
    assert_eq!(again[0]["delivery_count"], 2);
    let (s, _) = api
        .call(
            "POST",
            "/api/queues/q/nack",
            Some(json!({"receipts": [receipt(&again[0])], "delay_ms": 2000})),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(api.stats("q").await["delayed"], 1);
    assert!(api.receive("q", "max=1").await.is_empty());
    let third = api.receive("q", "max=1&wait_ms=10000").await;
    assert_eq!(third[0]["delivery_count"], 3);
}

#[tokio::test]
async fn nack_without_requeue_dead_letters_with_reason_time_and_source() {
    let (_b, api) = start().await;
    api.create("orders", json!({"dead_letter_queue": "orders-dlq"}))
        .await;
    api.send(
        "orders",
        json!({"body": "bad order", "headers": {"k": "v"}, "id": "o-1"}),
    )
    .await;
    let got = api.receive("orders", "max=1").await;
    let (s, _) = api
        .call(
            "POST",
            "/api/queues/orders/nack",
            Some(json!({"receipts": [receipt(&got[0])], "requeue": false})),
        )
        .await;
    assert_eq!(s, 200);
    let (s, body) = api
        .call("GET", "/api/queues/orders/dead-letters?max=10", None)
        .await;
    assert_eq!(s, 200, "{body}");
    let dead = &body["messages"][0];
    assert_eq!(dead["body"], "bad order");
    assert_eq!(dead["headers"]["k"], "v");
    assert_eq!(dead["id"], "o-1");
    assert_eq!(dead["dead_letter"]["reason"], "rejected");
    assert_eq!(dead["dead_letter"]["source_queue"], "orders");
    assert_eq!(dead["dead_letter"]["delivery_count"], 1);
    assert!(dead["dead_letter"]["time_ms"].as_i64().unwrap() > 0);
    assert!(
        dead.get("receipt").is_none(),
        "a peek leases nothing: {dead}"
    );
    // Peeking leased nothing: the DLQ still holds it as ready.
    let dlq = api.stats("orders-dlq").await;
    assert_eq!(
        (dlq["ready"].as_u64(), dlq["leased"].as_u64()),
        (Some(1), Some(0))
    );
    assert_eq!(api.stats("orders").await["dead_lettered_total"], 1);
}

#[tokio::test]
async fn max_deliveries_then_dead_letter_then_redrive_back_to_the_source() {
    let (_b, api) = start().await;
    api.create(
        "jobs",
        json!({"max_deliveries": 2, "dead_letter_queue": "jobs-dlq"}),
    )
    .await;
    api.send_text("jobs", "flaky").await;
    for attempt in 1..=2 {
        let got = api.receive("jobs", "max=1&wait_ms=5000").await;
        assert_eq!(got[0]["delivery_count"], attempt);
        let (s, _) = api
            .call(
                "POST",
                "/api/queues/jobs/nack",
                Some(json!({"receipt": receipt(&got[0])})),
            )
            .await;
        assert_eq!(s, 200);
    }
    let dlq = api.stats("jobs-dlq").await;
    assert_eq!(dlq["ready"], 1);
    let body = json!({"messages": api.wait_dead_letters("jobs").await});
    assert_eq!(
        body["messages"][0]["dead_letter"]["reason"],
        "max_deliveries"
    );
    assert_eq!(body["messages"][0]["dead_letter"]["delivery_count"], 2);
    let (s, body) = api
        .call(
            "POST",
            "/api/queues/jobs/dead-letters/redrive",
            Some(json!({})),
        )
        .await;
    assert_eq!((s, body["redriven"].as_u64()), (200, Some(1)), "{body}");
    assert_eq!(api.stats("jobs-dlq").await["ready"], 0);
    let back = api.receive("jobs", "max=1").await;
    assert_eq!(bodies(&back), ["flaky"]);
    assert_eq!(
        back[0]["delivery_count"], 1,
        "a redriven message starts over"
    );
    assert!(back[0]["dead_letter"].is_null());
}

#[tokio::test]
async fn exponential_backoff_delays_redeliveries() {
    let (_b, api) = start().await;
    api.create(
        "q",
        json!({"retry_delay_ms": 1500, "retry_backoff": "exponential", "retry_delay_max_ms": 5000}),
    )
    .await;
    api.send_text("q", "x").await;
    let got = api.receive("q", "max=1").await;
    api.call(
        "POST",
        "/api/queues/q/nack",
        Some(json!({"receipt": receipt(&got[0])})),
    )
    .await;
    // Backing off: not ready at once.
    let stats = api.stats("q").await;
    assert_eq!(
        (stats["delayed"].as_u64(), stats["ready"].as_u64()),
        (Some(1), Some(0))
    );
    let again = api.receive("q", "max=1&wait_ms=10000").await;
    assert_eq!(again[0]["delivery_count"], 2);
}

#[tokio::test]
async fn delayed_messages_wait_their_turn() {
    let (_b, api) = start().await;
    api.create("q", json!({})).await;
    api.send("q", json!({"body": "later", "delay_ms": 2000}))
        .await;
    api.send_text("q", "now").await;
    let stats = api.stats("q").await;
    assert_eq!(
        (stats["delayed"].as_u64(), stats["ready"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(bodies(&api.receive("q", "max=10").await), ["now"]);
    assert_eq!(
        bodies(&api.receive("q", "max=10&wait_ms=10000").await),
        ["later"]
    );
}

#[tokio::test]
async fn higher_priority_first_and_fifo_within_a_priority() {
    let (_b, api) = start().await;
    api.create("q", json!({"max_priority": 5})).await;
    api.send(
        "q",
        json!({"messages": [
            {"body": "p1", "priority": 1}, {"body": "p5a", "priority": 5},
            {"body": "p3", "priority": 3}, {"body": "p5b", "priority": 5},
            {"body": "p9", "priority": 9}, {"body": "p0"}
        ]}),
    )
    .await;
    let got = api.receive("q", "max=10").await;
    // 9 is above max_priority and counts as 5, after the earlier 5s.
    assert_eq!(bodies(&got), ["p5a", "p5b", "p9", "p3", "p1", "p0"]);
}

#[tokio::test]
async fn expired_messages_are_dead_lettered_or_dropped_and_counted() {
    let (_b, api) = start().await;
    api.create(
        "ttl",
        json!({"message_ttl_ms": 100, "dead_letter_queue": "ttl-dlq"}),
    )
    .await;
    api.send_text("ttl", "short-lived").await;
    api.wait_stats("ttl-dlq", "the expired message", |s| s["ready"] == 1)
        .await;
    let body = json!({"messages": api.wait_dead_letters("ttl").await});
    assert_eq!(body["messages"][0]["dead_letter"]["reason"], "expired");
    assert_eq!(api.stats("ttl").await["expired_total"], 1);

    api.create("drop", json!({})).await;
    api.send("drop", json!({"body": "x", "ttl_ms": 50})).await;
    api.wait_stats("drop", "expiry", |s| {
        s["expired_total"] == 1 && s["ready"] == 0
    })
    .await;
}

#[tokio::test]
async fn reject_publish_refuses_the_whole_send_when_full() {
    let (_b, api) = start().await;
    api.create("q", json!({"max_length": 3, "overflow": "reject-publish"}))
        .await;
    api.send("q", json!({"messages": [{"body": "1"}, {"body": "2"}]}))
        .await;
    let (s, body) = api
        .call(
            "POST",
            "/api/queues/q/messages",
            Some(json!({"messages": [{"body": "3"}, {"body": "4"}]})),
        )
        .await;
    assert_eq!(
        (s, body["error"].as_str()),
        (429, Some("queue_full")),
        "{body}"
    );
    assert_eq!(
        api.stats("q").await["ready"],
        2,
        "nothing of the refused send was enqueued"
    );
    api.send_text("q", "3").await;
    assert_eq!(bodies(&api.receive("q", "max=10").await), ["1", "2", "3"]);
}

#[tokio::test]
async fn drop_head_and_dead_letter_overflow_remove_the_oldest() {
    let (_b, api) = start().await;
    api.create("dh", json!({"max_length": 2})).await;
    for t in ["a", "b", "c"] {
        api.send_text("dh", t).await;
    }
    assert_eq!(bodies(&api.receive("dh", "max=10").await), ["b", "c"]);
    assert_eq!(api.stats("dh").await["dropped_total"], 1);

    api.create(
        "dl",
        json!({"max_length_bytes": 4, "overflow": "dead-letter", "dead_letter_queue": "dl-dlq"}),
    )
    .await;
    api.send_text("dl", "aaa").await;
    api.send_text("dl", "bbb").await;
    api.wait_stats("dl-dlq", "the overflowed head", |s| s["ready"] == 1)
        .await;
    let body = json!({"messages": api.wait_dead_letters("dl").await});
    assert_eq!(body["messages"][0]["body"], "aaa");
    assert_eq!(body["messages"][0]["dead_letter"]["reason"], "overflow");
}

#[tokio::test]
async fn a_repeated_id_within_the_dedup_window_is_accepted_but_not_enqueued() {
    let (_b, api) = start().await;
    api.create("q", json!({"dedup_window_ms": 600_000})).await;
    let first = api
        .send("q", json!({"body": "pay", "id": "payment-42"}))
        .await;
    assert_eq!(first["messages"][0]["duplicate"], false);
    let second = api.send("q", json!({"messages": [{"body": "pay", "id": "payment-42"}, {"body": "other", "id": "payment-43"}]})).await;
    assert_eq!(second["messages"][0]["duplicate"], true);
    assert_eq!(second["messages"][1]["duplicate"], false);
    assert_eq!(
        (second["sent"].as_u64(), second["duplicates"].as_u64()),
        (Some(1), Some(1))
    );
    let stats = api.stats("q").await;
    assert_eq!(
        (stats["ready"].as_u64(), stats["duplicates_total"].as_u64()),
        (Some(2), Some(1))
    );
}

#[tokio::test]
async fn one_message_per_group_in_flight_and_fifo_within_a_group() {
    let (_b, api) = start().await;
    api.create("q", json!({})).await;
    api.send(
        "q",
        json!({"messages": [
            {"body": "a1", "group": "a"}, {"body": "a2", "group": "a"},
            {"body": "b1", "group": "b"}, {"body": "a3", "group": "a"}, {"body": "free"}
        ]}),
    )
    .await;
    let got = api.receive("q", "max=10").await;
    assert_eq!(bodies(&got), ["a1", "b1", "free"]);
    assert!(
        api.receive("q", "max=10").await.is_empty(),
        "a2 waits for a1"
    );
    let (s, _) = api.ack("q", &[receipt(&got[0])]).await;
    assert_eq!(s, 200);
    let next = api.receive("q", "max=10").await;
    assert_eq!(bodies(&next), ["a2"]);
    // A failed a2 goes back first in its group.
    api.call(
        "POST",
        "/api/queues/q/nack",
        Some(json!({"receipt": receipt(&next[0])})),
    )
    .await;
    assert_eq!(bodies(&api.receive("q", "max=10").await), ["a2"]);
}

#[tokio::test]
async fn purge_removes_ready_and_delayed_but_not_leased() {
    let (_b, api) = start().await;
    api.create("q", json!({})).await;
    api.send(
        "q",
        json!({"messages": [{"body": "1"}, {"body": "2"}, {"body": "3", "delay_ms": 60000}]}),
    )
    .await;
    let leased = api.receive("q", "max=1").await;
    let (s, body) = api.call("POST", "/api/queues/q/purge", None).await;
    assert_eq!((s, body["purged"].as_u64()), (200, Some(2)));
    let stats = api.stats("q").await;
    assert_eq!(
        (
            stats["ready"].as_u64(),
            stats["delayed"].as_u64(),
            stats["leased"].as_u64()
        ),
        (Some(0), Some(0), Some(1))
    );
    let (s, _) = api.ack("q", &[receipt(&leased[0])]).await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn a_long_poll_returns_as_soon_as_a_message_arrives() {
    let (_b, api) = start().await;
    api.create("q", json!({})).await;
    let waiting = {
        let api = Api {
            client: weir_testkit::http_client(),
            base: api.base.clone(),
        };
        tokio::spawn(async move { api.receive("q", "max=5&wait_ms=30000").await })
    };
    api.wait_stats("q", "a waiting consumer", |s| s["consumers"] == 1)
        .await;
    api.send_text("q", "ping").await;
    let got = waiting.await.unwrap();
    assert_eq!(bodies(&got), ["ping"]);
    // A receiver that hangs up stops counting, and gets nothing leased to it.
    let abandoned = {
        let api = Api {
            client: weir_testkit::http_client(),
            base: api.base.clone(),
        };
        tokio::spawn(async move { api.receive("q", "max=5&wait_ms=30000").await })
    };
    api.wait_stats("q", "a waiting consumer", |s| s["consumers"] == 1)
        .await;
    abandoned.abort();
    api.wait_stats("q", "the hung-up consumer gone", |s| s["consumers"] == 0)
        .await;
    api.send_text("q", "pong").await;
    assert_eq!(api.stats("q").await["ready"], 1);
}

#[tokio::test]
#[allow(clippy::too_many_lines)] // one table of bad requests
async fn bad_requests_get_json_errors_and_disturb_no_one() {
    let broker = Broker::start_with(&[]).await.unwrap();
    let api = Api::new(&broker);
    api.create("q", json!({})).await;
    api.create("other", json!({})).await;
    api.send_text("q", "keep me").await;
    let cases: Vec<(&str, &str, Option<&str>, u16, &str)> = vec![
        (
            "POST",
            "/api/queues/q/messages",
            Some("{not json"),
            400,
            "invalid_json",
        ),
        (
            "POST",
            "/api/queues/q/messages",
            Some(r#"{"body": "x", "colour": 1}"#),
            400,
            "invalid_json",
        ),
        (
            "POST",
            "/api/queues/q/messages",
            Some(r#"{"body": 5}"#),
            400,
            "invalid_json",
        ),
        (
            "POST",
            "/api/queues/q/messages",
            Some(r#"{"body": "x", "priority": 300}"#),
            400,
            "invalid_json",
        ),
        (
            "POST",
            "/api/queues/q/messages",
            Some(r#"{"headers": {}}"#),
            400,
            "invalid_argument",
        ),
        (
            "POST",
            "/api/queues/q/messages",
            Some(r#"{"body": "x", "body_base64": "eA=="}"#),
            400,
            "invalid_argument",
        ),
        (
            "POST",
            "/api/queues/q/messages",
            Some(r#"{"body_base64": "***"}"#),
            400,
            "invalid_argument",
        ),
        (
            "POST",
            "/api/queues/q/messages",
            Some(r#"{"messages": []}"#),
            400,
            "invalid_argument",
        ),
        (
            "POST",
            "/api/queues/q/messages",
            Some(r#"{"body": "x", "delay_ms": -1}"#),
            400,
            "invalid_json",
        ),
        (
            "POST",
            "/api/queues/nope/messages",
            Some(r#"{"body": "x"}"#),
            404,
            "queue_not_found",
        ),
        (
            "PUT",
            // 256 bytes: over AMQP's short string.
            concat!(
                "/api/queues/",
                "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
                "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
                "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
                "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
            ),
            Some("{}"),
            400,
            "invalid_name",
        ),
        (
            "PUT",
            "/api/queues/amq.mine",
            Some("{}"),
            403,
            "access_refused",
        ),
        (
            "PUT",
            "/api/queues/q2",
            Some(r#"{"visibility_timeout_ms": 0}"#),
            400,
            "invalid_argument",
        ),
        (
            "PUT",
            "/api/queues/q2",
            Some(r#"{"overflow": "explode"}"#),
            400,
            "invalid_json",
        ),
        (
            "PUT",
            "/api/queues/q2",
            Some(r#"{"dead_letter_queue": "q2"}"#),
            400,
            "invalid_argument",
        ),
        (
            "POST",
            "/api/queues/q/receive?max=0",
            None,
            400,
            "invalid_argument",
        ),
        (
            "POST",
            "/api/queues/q/receive?max=lots",
            None,
            400,
            "invalid_argument",
        ),
        (
            "POST",
            "/api/queues/q/receive?colour=red",
            None,
            400,
            "invalid_argument",
        ),
        (
            "POST",
            "/api/queues/q/receive?wait_ms=99999999",
            None,
            400,
            "invalid_argument",
        ),
        (
            "POST",
            "/api/queues/q/ack",
            Some(r#"{"receipts": ["garbage"]}"#),
            400,
            "malformed_receipt",
        ),
        (
            "POST",
            "/api/queues/q/ack",
            Some(r#"{"receipts": ["0-1"]}"#),
            409,
            "stale_receipt",
        ),
        (
            "POST",
            "/api/queues/q/ack",
            Some("{}"),
            400,
            "invalid_argument",
        ),
        (
            "POST",
            "/api/queues/q/ack",
            Some(r#"{"receipts": "0-1"}"#),
            400,
            "invalid_json",
        ),
        (
            "POST",
            "/api/queues/q/extend",
            Some(r#"{"receipts": ["0-1"]}"#),
            400,
            "invalid_argument",
        ),
        (
            "GET",
            "/api/queues/q/dead-letters",
            None,
            400,
            "invalid_argument",
        ),
        ("GET", "/api/nowhere", None, 404, "not_found"),
        (
            "PATCH",
            "/api/queues/q",
            Some("{}"),
            405,
            "method_not_allowed",
        ),
    ];
    for (method, path, body, status, code) in cases {
        let (s, v) = match body {
            Some(b) => api.raw(method, path, b.to_owned()).await,
            None => api.call(method, path, None).await,
        };
        assert_eq!(
            (s, v["error"].as_str()),
            (status, Some(code)),
            "{method} {path} {body:?} → {v}"
        );
        assert!(
            v["reason"].as_str().is_some_and(|r| !r.is_empty()),
            "{method} {path}: {v}"
        );
    }
    // GET and HEAD never run a receive (it would lease messages nobody sees): a
    // receive is POST /receive, and the old GET says so.
    let (s, _) = api
        .call("HEAD", "/api/queues/q/messages?max=10", None)
        .await;
    assert_eq!(s, 405);
    let (s, v) = api.call("GET", "/api/queues/q/messages?max=10", None).await;
    assert_eq!((s, v["error"].as_str()), (405, Some("method_not_allowed")));
    assert!(v["reason"].as_str().unwrap().contains("/receive"), "{v}");
    let (s, _) = api.call("GET", "/api/queues/q/receive", None).await;
    assert_eq!(s, 405);
    assert_eq!(api.stats("q").await["leased"], 0);
    // A receipt from another queue is not a lease there.
    api.send_text("other", "o").await;
    let foreign = api.receive("other", "max=1").await;
    let (s, v) = api.ack("q", &[receipt(&foreign[0])]).await;
    assert_eq!((s, v["error"].as_str()), (409, Some("stale_receipt")));
    // Nothing was disturbed: the foreign lease still acks at home, q still has its message.
    assert_eq!(api.ack("other", &[receipt(&foreign[0])]).await.0, 200);
    assert_eq!(bodies(&api.receive("q", "max=10").await), ["keep me"]);
    let (s, _) = api.call("GET", "/healthz", None).await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn healthz_and_the_openapi_document_are_served() {
    let (_b, api) = start().await;
    let (s, v) = api.call("GET", "/healthz", None).await;
    assert_eq!((s, v["status"].as_str()), (200, Some("ok")));
    let (s, v) = api.call("GET", "/api/openapi.json", None).await;
    assert_eq!(s, 200);
    assert!(
        v["paths"].get("/api/queues/{name}/messages").is_some(),
        "{v}"
    );
    let _: &Value = &v;
}
