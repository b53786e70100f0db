//! Edge cases found in review, against the real binary: dead-lettering when the dead-letter
//! queue refuses, is missing, or is being stopped.

use std::time::Duration;

use serde_json::json;
use weir_testkit::Broker;

use crate::{Api, receipt};

/// Queue `q` whose message expires into dead-letter queue `dlq`, which is full with
/// `reject-publish` and so refuses it; returns once the expiry happened.
async fn expire_into_a_full_dead_letter_queue(api: &Api) {
    api.create(
        "dlq",
        json!({"max_length": 1, "overflow": "reject-publish"}),
    )
    .await;
    api.send_text("dlq", "filler").await;
    api.create(
        "q",
        json!({"dead_letter_queue": "dlq", "message_ttl_ms": 50}),
    )
    .await;
    api.send_text("q", "m").await;
    api.wait_stats("q", "the expiry", |s| {
        s["expired_total"].as_u64() >= Some(1)
    })
    .await;
}

/// A dead-letter queue that refuses copies (here: full, `reject-publish`): the
/// expired message waits and tries again later; it is counted as expired once, and
/// the queue does not spin on it.
#[tokio::test]
async fn a_refusing_dead_letter_queue_does_not_inflate_expired_total() {
    let broker = Broker::start().await.unwrap();
    let api = Api::new(&broker);
    expire_into_a_full_dead_letter_queue(&api).await;
    // Whatever happens next, one message expired.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stats = api.stats("q").await;
    assert_eq!(
        stats["expired_total"], 1,
        "one message, one expiry: {stats}"
    );
}

/// A queue's `message_ttl_ms` applies to every message in it, dead letters included
/// (`RabbitMQ`'s retry-after-delay pattern relies on it).
#[tokio::test]
async fn a_dead_letter_queue_applies_its_message_ttl_to_dead_letters() {
    let broker = Broker::start().await.unwrap();
    let api = Api::new(&broker);
    api.create("dlq", json!({"message_ttl_ms": 100})).await;
    api.create("q", json!({"dead_letter_queue": "dlq"})).await;
    api.send_text("q", "m").await;
    let got = api.receive("q", "max=1").await;
    let (s, v) = api
        .call(
            "POST",
            "/api/queues/q/nack",
            Some(json!({"receipt": receipt(&got[0]), "requeue": false})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    api.wait_stats("dlq", "the dead letter", |s| s["sent_total"] == 1)
        .await;
    api.wait_stats("dlq", "its expiry (TTL 100 ms)", |s| {
        s["expired_total"] == 1 && s["ready"] == 0
    })
    .await;
}

/// Deleting a queue while one of its dead letters is on its way to a missing
/// dead-letter queue (whose re-creation may declare a queue) does not hang: the
/// delete does not hold the declaration lock while the queue stops. Here the
/// re-creation fails (queue limit), so a dead letter is always in flight.
#[tokio::test]
async fn deleting_a_queue_while_it_recreates_its_dead_letter_queue_does_not_hang() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("weir.toml");
    std::fs::write(&config, "[limits]\nmax_queues = 2\n").unwrap();
    let broker = Broker::start_with(&["--config", config.to_str().unwrap()])
        .await
        .unwrap();
    let api = Api::new(&broker);
    api.create(
        "q",
        json!({"dead_letter_queue": "dlq", "message_ttl_ms": 50}),
    )
    .await;
    let (s, v) = api.call("DELETE", "/api/queues/dlq", None).await;
    assert_eq!(s, 204, "{v}");
    api.create("other", json!({})).await;
    api.send_text("q", "m").await;
    api.wait_stats("q", "the expiry", |s| {
        s["expired_total"].as_u64() >= Some(1)
    })
    .await;
    let deleted = tokio::time::timeout(
        Duration::from_secs(20),
        api.call("DELETE", "/api/queues/q", None),
    )
    .await;
    let Ok((s, v)) = deleted else {
        panic!("DELETE /api/queues/q hung for 20 s (admin lock held while the queue waits for it)");
    };
    assert_eq!(s, 204, "{v}");
    api.create("after", json!({})).await;
}

/// A dead letter in flight while the broker shuts down must not re-declare its
/// dead-letter queue with default options (nothing is declared once shutdown
/// starts).
#[tokio::test]
async fn a_shutdown_keeps_the_dead_letter_queue_settings() {
    let mut broker = Broker::start().await.unwrap();
    let api = Api::new(&broker);
    expire_into_a_full_dead_letter_queue(&api).await;
    assert!(broker.terminate().await.unwrap(), "clean exit");
    broker.restart().await.unwrap();
    let api = Api::new(&broker);
    let (s, info) = api.call("GET", "/api/queues/dlq", None).await;
    assert_eq!(s, 200, "{info}");
    assert_eq!(
        (&info["options"]["max_length"], &info["options"]["overflow"]),
        (&json!(1), &json!("reject-publish")),
        "the DLQ's settings after a SIGTERM: {info}\nbroker log:\n{}",
        broker.log()
    );
}

/// Concurrent sends of one id to a dedup queue: one is enqueued, every other is
/// answered as a duplicate, and none is answered before the original is durable
/// (they wait for it inside the queue).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sends_of_one_id_enqueue_it_once() {
    let broker = Broker::start().await.unwrap();
    let api = std::sync::Arc::new(Api::new(&broker));
    api.create("d", json!({"dedup_window_ms": 600_000})).await;
    let sends: Vec<_> = (0..20)
        .map(|i| {
            let api = api.clone();
            tokio::spawn(async move {
                api.send("d", json!({"id": "same", "body": format!("copy {i}")}))
                    .await["messages"][0]["duplicate"]
                    .as_bool()
                    .unwrap()
            })
        })
        .collect();
    let mut duplicates = 0;
    for s in sends {
        duplicates += usize::from(s.await.unwrap());
    }
    assert_eq!(duplicates, 19);
    let stats = api.stats("d").await;
    assert_eq!(
        (stats["ready"].as_u64(), stats["duplicates_total"].as_u64()),
        (Some(1), Some(19))
    );
}
