//! The whole broker (`Broker`, queue actors, the shared-log dispatcher) over logs
//! in memory ([`MemStore`]) with tokio's time paused: deadlines of minutes pass in
//! no real time, and the order of events is the runtime's, not the disk's. These
//! test the broker's behaviour over time (leases, TTLs, delays, expiry,
//! restarts); `broker_tests` covers what only real files show (held and failed
//! syncs, a full disk).

use std::time::Duration;

use weir_log::MemStore;

use crate::api::{NackOptions, QueueOptions, ReceiveRequest, SendMessage};
use crate::broker::Broker;
use crate::broker_tests::fan_out_to;
use crate::config::BrokerConfig;

async fn open(dir: &std::path::Path, store: &MemStore) -> Broker<MemStore> {
    let mut config = BrokerConfig::new(dir);
    // The alarms look at the real disk and memory, which these tests do not use.
    config.limits.disk_free_min_bytes = 0;
    Broker::open_with_store(config, store.clone())
        .await
        .expect("open")
        .0
}

fn text(body: &str) -> SendMessage {
    SendMessage {
        body: body.as_bytes().to_vec().into(),
        ..SendMessage::default()
    }
}

fn receive(max: u32, visibility_timeout_ms: Option<u64>) -> ReceiveRequest {
    ReceiveRequest {
        max,
        wait_ms: 0,
        visibility_timeout_ms,
    }
}

#[tokio::test(start_paused = true)]
async fn a_lease_that_runs_out_is_delivered_again_after_its_visibility_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = open(dir.path(), &MemStore::default()).await;
    broker
        .declare("q", QueueOptions::default())
        .await
        .expect("declare");
    broker.send("q", vec![text("job")]).await.expect("send");
    let first = broker
        .receive("q", receive(1, Some(30_000)))
        .await
        .expect("receive");
    assert_eq!((first.len(), first[0].delivery_count), (1, 1));
    tokio::time::sleep(Duration::from_secs(29)).await;
    assert!(
        broker
            .receive("q", receive(1, None))
            .await
            .expect("receive")
            .is_empty(),
        "still leased before its timeout"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let again = broker
        .receive("q", receive(1, None))
        .await
        .expect("receive");
    assert_eq!(again.len(), 1, "back once the lease ran out");
    assert_eq!(
        (&again[0].body[..], again[0].delivery_count),
        (&b"job"[..], 2)
    );
    let stale = broker
        .ack("q", vec![first[0].receipt.clone().expect("receipt")])
        .await
        .expect("ack");
    assert_eq!(
        (stale.settled, stale.failed.len()),
        (0, 1),
        "the first lease's receipt is stale"
    );
    broker.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn an_expired_message_is_dead_lettered_with_its_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = open(dir.path(), &MemStore::default()).await;
    let options = QueueOptions {
        message_ttl_ms: Some(60_000),
        dead_letter_queue: Some("q-dlq".into()),
        ..QueueOptions::default()
    };
    broker.declare("q", options).await.expect("declare");
    broker.send("q", vec![text("stale")]).await.expect("send");
    tokio::time::sleep(Duration::from_secs(59)).await;
    assert_eq!(broker.info("q").await.expect("info").stats.ready, 1);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let dead = broker
        .receive(
            "q-dlq",
            ReceiveRequest {
                max: 1,
                wait_ms: 5_000,
                visibility_timeout_ms: None,
            },
        )
        .await
        .expect("receive");
    assert_eq!(dead.len(), 1);
    let info = dead[0].dead_letter.as_ref().expect("dead-letter info");
    assert_eq!(info.reason, crate::api::DeadLetterReason::Expired);
    assert_eq!(broker.info("q").await.expect("info").stats.expired_total, 1);
    broker.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn exponential_retry_delays_double_up_to_their_cap() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = open(dir.path(), &MemStore::default()).await;
    let options = QueueOptions {
        retry_delay_ms: 10_000,
        retry_backoff: crate::api::Backoff::Exponential,
        retry_delay_max_ms: 25_000,
        ..QueueOptions::default()
    };
    broker.declare("q", options).await.expect("declare");
    broker.send("q", vec![text("flaky")]).await.expect("send");
    // Delays after the 1st, 2nd and 3rd failed delivery: 10 s, 20 s, 25 s (capped).
    for expected in [10u64, 20, 25] {
        let got = broker
            .receive("q", receive(1, None))
            .await
            .expect("receive");
        assert_eq!(got.len(), 1, "due again after {expected} s");
        broker
            .nack(
                "q",
                vec![got[0].receipt.clone().expect("receipt")],
                NackOptions {
                    requeue: true,
                    delay_ms: None,
                },
            )
            .await
            .expect("nack");
        tokio::time::sleep(Duration::from_millis(expected * 1000 - 500)).await;
        assert!(
            broker
                .receive("q", receive(1, None))
                .await
                .expect("receive")
                .is_empty(),
            "not due before {expected} s"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(
        broker
            .receive("q", receive(1, None))
            .await
            .expect("receive")[0]
            .delivery_count,
        4
    );
    broker.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn an_unused_queue_expires_and_a_used_one_does_not() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = open(dir.path(), &MemStore::default()).await;
    let options = QueueOptions {
        expires_ms: Some(10_000),
        ..QueueOptions::default()
    };
    broker
        .declare("idle", options.clone())
        .await
        .expect("declare");
    broker.declare("busy", options).await.expect("declare");
    let _held = broker.hold("busy").expect("hold");
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert!(
        broker.info("idle").await.is_err(),
        "the unused queue is gone"
    );
    assert!(broker.info("busy").await.is_ok(), "a held queue stays");
    broker.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_restart_on_the_same_store_keeps_unacked_messages_and_forgets_acked_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = MemStore::default();
    let broker = open(dir.path(), &store).await;
    broker
        .declare("q", QueueOptions::default())
        .await
        .expect("declare");
    broker
        .declare("fan-a", QueueOptions::default())
        .await
        .expect("declare");
    broker
        .declare("fan-b", QueueOptions::default())
        .await
        .expect("declare");
    fan_out_to(&broker, &["fan-a", "fan-b"]).await;
    broker
        .send("q", vec![text("a"), text("b"), text("c")])
        .await
        .expect("send");
    let got = broker
        .receive("q", receive(2, None))
        .await
        .expect("receive");
    broker
        .ack("q", vec![got[0].receipt.clone().expect("receipt")])
        .await
        .expect("ack");
    // One message for two queues goes through the shared log (decision 0004).
    let published = broker
        .publish(
            "fan",
            vec![crate::PublishMessage {
                routing_key: String::new(),
                mandatory: false,
                message: text("both"),
            }],
            crate::PublishOptions::default(),
        )
        .await
        .expect("publish");
    assert_eq!(published[0].routed, 2);
    broker.shutdown().await;
    drop(broker);

    let broker = open(dir.path(), &store).await;
    let left = broker
        .receive("q", receive(10, None))
        .await
        .expect("receive");
    let bodies: Vec<&[u8]> = left.iter().map(|d| &d.body[..]).collect();
    assert_eq!(
        bodies,
        [&b"b"[..], &b"c"[..]],
        "the leased one is back, the acked one gone"
    );
    for queue in ["fan-a", "fan-b"] {
        let got = broker
            .receive(queue, receive(10, None))
            .await
            .expect("receive");
        assert_eq!(got.len(), 1, "{queue} kept its copy");
        assert_eq!(&got[0].body[..], b"both");
    }
    broker.shutdown().await;
}

// ---------------------------------------------------------------------------
// Shared messages (decision 0004) through the real dispatcher, actors and replay.

/// Publishes `ids` through the fanout exchange `fan` (bound to `q` and `other`):
/// each message is stored once, in the shared log.
async fn publish(broker: &Broker<MemStore>, ids: &[&str]) {
    let messages = ids
        .iter()
        .map(|id| crate::PublishMessage {
            routing_key: String::new(),
            mandatory: false,
            message: SendMessage {
                id: Some((*id).to_owned()),
                body: id.as_bytes().to_vec().into(),
                ..SendMessage::default()
            },
        })
        .collect();
    broker
        .publish("fan", messages, crate::PublishOptions::default())
        .await
        .expect("publish");
}

/// A broker with queues `q` (with `options`) and `other` behind fanout `fan`.
async fn shared_setup(
    dir: &std::path::Path,
    store: &MemStore,
    options: QueueOptions,
) -> Broker<MemStore> {
    let broker = open(dir, store).await;
    broker.declare("q", options).await.expect("declare");
    broker
        .declare("other", QueueOptions::default())
        .await
        .expect("declare");
    fan_out_to(&broker, &["q", "other"]).await;
    broker
}

async fn restart(
    broker: Broker<MemStore>,
    dir: &std::path::Path,
    store: &MemStore,
) -> Broker<MemStore> {
    broker.shutdown().await;
    drop(broker);
    open(dir, store).await
}

/// Leases everything ready in `q`; its deliveries.
async fn lease_all(broker: &Broker<MemStore>) -> Vec<crate::api::Delivery> {
    broker
        .receive("q", receive(100, Some(600_000)))
        .await
        .expect("receive")
}

async fn ack(broker: &Broker<MemStore>, got: &[&crate::api::Delivery]) {
    let receipts = got.iter().filter_map(|d| d.receipt.clone()).collect();
    let report = broker.ack("q", receipts).await.expect("ack");
    assert_eq!(report.settled as usize, got.len());
}

fn ids(got: &[crate::api::Delivery]) -> Vec<&str> {
    got.iter().map(|d| d.id.as_str()).collect()
}

/// Acks out of order across publishes, housekeeping in between: a restart brings
/// back exactly what is not acked, in order, counts every message once, and the
/// queue's log is trimmed once a fully acked batch is behind one still held.
#[tokio::test(start_paused = true)]
async fn out_of_order_acks_of_shared_messages_and_trims_bring_back_exactly_the_unacked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = MemStore::default();
    let mut broker = shared_setup(dir.path(), &store, QueueOptions::default()).await;
    publish(&broker, &["a1", "a2", "a3"]).await;
    publish(&broker, &["b1", "b2"]).await;
    let got = lease_all(&broker).await;
    assert_eq!(ids(&got), ["a1", "a2", "a3", "b1", "b2"]);
    ack(&broker, &[&got[1], &got[3], &got[4]]).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    broker = restart(broker, dir.path(), &store).await;
    let got = lease_all(&broker).await;
    assert_eq!(ids(&got), ["a1", "a3"], "the unacked, in order");
    assert_eq!(
        got.iter().map(|d| d.delivery_count).collect::<Vec<_>>(),
        [2, 2]
    );
    let stats = broker.info("q").await.expect("info").stats;
    assert_eq!((stats.sent_total, stats.acked_total), (5, 3), "{stats:?}");
    ack(&broker, &got.iter().collect::<Vec<_>>()).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    broker = restart(broker, dir.path(), &store).await;
    assert!(
        lease_all(&broker).await.is_empty(),
        "nothing acked comes back"
    );
    let stats = broker.info("q").await.expect("info").stats;
    assert_eq!(
        (stats.sent_total, stats.acked_total, stats.redelivered_total),
        (5, 5, 2),
        "{stats:?}"
    );
    // A batch fully acked ahead of one still held: only the held one comes back.
    publish(&broker, &["d1", "d2"]).await;
    let d = lease_all(&broker).await;
    publish(&broker, &["e1"]).await;
    ack(&broker, &d.iter().collect::<Vec<_>>()).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    broker = restart(broker, dir.path(), &store).await;
    assert_eq!(ids(&lease_all(&broker).await), ["e1"]);
    let stats = broker.info("q").await.expect("info").stats;
    assert_eq!((stats.sent_total, stats.acked_total), (8, 7), "{stats:?}");
    // The other queue was never touched: it holds every message.
    assert_eq!(broker.info("other").await.expect("info").stats.ready, 8);
    broker.shutdown().await;
}

/// A shared message the queue declines as a duplicate stays out after restarts and
/// housekeeping, while the other queue takes it.
#[tokio::test(start_paused = true)]
async fn declined_shared_duplicates_stay_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = MemStore::default();
    let options = QueueOptions {
        dedup_window_ms: Some(600_000),
        ..QueueOptions::default()
    };
    let mut broker = shared_setup(dir.path(), &store, options).await;
    publish(&broker, &["x"]).await;
    publish(&broker, &["x", "y"]).await;
    broker = restart(broker, dir.path(), &store).await;
    let stats = broker.info("q").await.expect("info").stats;
    assert_eq!(
        (stats.ready, stats.sent_total, stats.duplicates_total),
        (2, 2, 1),
        "{stats:?}"
    );
    assert_eq!(broker.info("other").await.expect("info").stats.ready, 3);
    let got = lease_all(&broker).await;
    assert_eq!(ids(&got), ["x", "y"]);
    ack(&broker, &got.iter().collect::<Vec<_>>()).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    broker = restart(broker, dir.path(), &store).await;
    publish(&broker, &["x"]).await;
    assert!(
        lease_all(&broker).await.is_empty(),
        "still inside the window"
    );
    broker = restart(broker, dir.path(), &store).await;
    assert!(lease_all(&broker).await.is_empty());
    assert_eq!(
        broker.info("q").await.expect("info").stats.duplicates_total,
        2
    );
    broker.shutdown().await;
}

/// Own messages and shared ones come back in the order they arrived.
#[tokio::test(start_paused = true)]
async fn a_restart_keeps_own_and_shared_messages_in_arrival_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = MemStore::default();
    let mut broker = shared_setup(dir.path(), &store, QueueOptions::default()).await;
    let own = |id: &str| SendMessage {
        id: Some(id.to_owned()),
        body: id.as_bytes().to_vec().into(),
        ..SendMessage::default()
    };
    broker.send("q", vec![own("own-1")]).await.expect("send");
    publish(&broker, &["sh-1", "sh-2"]).await;
    broker
        .send("q", vec![own("own-2"), own("own-3")])
        .await
        .expect("send");
    publish(&broker, &["sh-3"]).await;
    broker.send("q", vec![own("own-4")]).await.expect("send");
    let expected = ["own-1", "sh-1", "sh-2", "own-2", "own-3", "sh-3", "own-4"];
    assert_eq!(
        ids(&broker.peek("q", None, 100).await.expect("peek")),
        expected
    );
    broker = restart(broker, dir.path(), &store).await;
    assert_eq!(ids(&lease_all(&broker).await), expected);
    broker.shutdown().await;
}

/// Ids survive any sequence of trims and restarts inside their window: each trim
/// rewrites the ids only the trimmed part remembers (a review found them lost once
/// their message was acked and trimmed away).
#[tokio::test(start_paused = true)]
async fn dedup_ids_survive_trims_and_restarts_inside_the_window() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = MemStore::default();
    let mut broker = open(dir.path(), &store).await;
    let options = QueueOptions {
        dedup_window_ms: Some(600_000),
        ..QueueOptions::default()
    };
    broker.declare("q", options).await.expect("declare");
    let with_id = |id: &str| SendMessage {
        id: Some(id.to_owned()),
        ..text(id)
    };
    let duplicates = |outcomes: Vec<crate::api::SendOutcome>| {
        outcomes.iter().map(|o| o.duplicate).collect::<Vec<_>>()
    };
    let disk = |broker: &Broker<MemStore>| {
        let broker = broker.clone();
        async move { broker.info("q").await.expect("info").stats.disk_bytes }
    };
    // A body far larger than a checkpoint, so the trim shows in the log's size.
    let big = SendMessage {
        body: vec![b'x'; 100_000].into(),
        ..with_id("a")
    };
    broker.send("q", vec![big]).await.expect("send");
    ack(
        &broker,
        &lease_all(&broker).await.iter().collect::<Vec<_>>(),
    )
    .await;
    let before = disk(&broker).await;
    // A dedup queue trims at most every window/8 (75 s here).
    tokio::time::sleep(Duration::from_secs(80)).await;
    let after = disk(&broker).await;
    assert!(
        after < before - 90_000,
        "\"a\" now lives in the checkpoint only ({before} -> {after} bytes)"
    );
    broker.send("q", vec![with_id("b")]).await.expect("send");
    broker = restart(broker, dir.path(), &store).await;
    let again = broker.send("q", vec![with_id("a")]).await.expect("send");
    assert_eq!(duplicates(again), [true]);
    // b was held, so nothing more was trimmed; settle b, trim again, restart.
    ack(
        &broker,
        &lease_all(&broker).await.iter().collect::<Vec<_>>(),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(80)).await;
    broker = restart(broker, dir.path(), &store).await;
    let again = broker
        .send("q", vec![with_id("a"), with_id("b")])
        .await
        .expect("send");
    assert_eq!(
        duplicates(again),
        [true, true],
        "both ids are inside their 10 min window"
    );
    let stats = broker.info("q").await.expect("info").stats;
    assert_eq!(
        (stats.sent_total, stats.acked_total, stats.duplicates_total),
        (2, 2, 3),
        "{stats:?}"
    );
    broker.shutdown().await;
}

/// A dead-letter queue's messages picked by their peeked positions: one redriven
/// to its source queue, one removed (counted as purged), the rest left; positions
/// gone since the peek are skipped, and a restart keeps what was done.
#[tokio::test(start_paused = true)]
async fn dead_letters_are_redriven_or_removed_by_position() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = MemStore::default();
    let mut broker = open(dir.path(), &store).await;
    let options = QueueOptions {
        dead_letter_queue: Some("q-dlq".into()),
        ..QueueOptions::default()
    };
    broker.declare("q", options).await.expect("declare");
    let bodies = ["a", "b", "c"].map(text).to_vec();
    broker.send("q", bodies).await.expect("send");
    let got = broker
        .receive("q", receive(3, None))
        .await
        .expect("receive");
    let receipts = got.iter().filter_map(|d| d.receipt.clone()).collect();
    let options = NackOptions {
        requeue: false,
        delay_ms: None,
    };
    broker.nack("q", receipts, options).await.expect("nack");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let peeked = broker.peek("q-dlq", None, 10).await.expect("peek");
    assert_eq!(peeked.len(), 3);
    let at = |i: usize| peeked[i].position.expect("a peek has positions");
    assert_eq!(
        broker
            .redrive_at("q-dlq", vec![at(0)])
            .await
            .expect("redrive"),
        1
    );
    assert_eq!(
        broker
            .remove_at("q-dlq", vec![at(1)])
            .await
            .expect("remove"),
        1
    );
    // Gone since the peek: nothing to do.
    assert_eq!(
        broker
            .remove_at("q-dlq", vec![at(0), at(1)])
            .await
            .expect("remove"),
        0
    );
    assert!(broker.redrive_at("q-dlq", Vec::new()).await.is_err());
    let q = broker.info("q").await.expect("info").stats;
    let dlq = broker.info("q-dlq").await.expect("info").stats;
    assert_eq!((q.ready, dlq.ready, dlq.purged_total), (1, 1, 1));
    let back = broker.peek("q", None, 10).await.expect("peek");
    assert_eq!(back[0].body, peeked[0].body);
    broker = restart(broker, dir.path(), &store).await;
    let left = broker.peek("q-dlq", None, 10).await.expect("peek");
    assert_eq!(ids(&left), [peeked[2].id.as_str()]);
    assert_eq!(broker.info("q").await.expect("info").stats.ready, 1);
    broker.shutdown().await;
}

/// A lease extended again and again shows in the queue's stats (the dashboard's
/// "stuck" list), and goes with the lease.
#[tokio::test(start_paused = true)]
async fn the_most_extended_lease_shows_in_the_stats_until_settled() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = open(dir.path(), &MemStore::default()).await;
    broker
        .declare("q", QueueOptions::default())
        .await
        .expect("declare");
    broker
        .send("q", vec![text("slow"), text("quick")])
        .await
        .expect("send");
    let got = broker
        .receive("q", receive(2, None))
        .await
        .expect("receive");
    let slow = got[0].receipt.clone().expect("a receipt");
    for _ in 0..3 {
        let report = broker
            .extend("q", vec![slow.clone()], 60_000)
            .await
            .expect("extend");
        assert_eq!(report.settled, 1);
    }
    let stats = broker.info("q").await.expect("info").stats;
    assert_eq!((stats.leased, stats.max_lease_extensions), (2, 3));
    broker.ack("q", vec![slow]).await.expect("ack");
    let stats = broker.info("q").await.expect("info").stats;
    assert_eq!((stats.leased, stats.max_lease_extensions), (1, 0));
    broker.shutdown().await;
}
