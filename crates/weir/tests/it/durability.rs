//! Restarts and crashes of the real binary: what was answered 2xx (or confirmed over
//! AMQP) survives, acked messages never come back, settings and stats stay.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_lite::StreamExt;
use lapin::BasicProperties;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions,
};
use lapin::types::FieldTable;
use serde_json::json;
use weir_testkit::Broker;

use crate::amqp::{connect, declare};
use crate::{Api, bodies, receipt};

#[tokio::test]
async fn a_restart_keeps_ready_delayed_settings_and_stats_and_requeues_leases() {
    let mut broker = Broker::start().await.unwrap();
    let api = Api::new(&broker);
    api.create(
        "q",
        json!({"max_deliveries": 5, "max_priority": 3, "dead_letter_queue": "q-dlq"}),
    )
    .await;
    for i in 0..10 {
        api.send("q", json!({"body": format!("m{i}"), "priority": i % 2}))
            .await;
    }
    api.send("q", json!({"body": "delayed", "delay_ms": 2000}))
        .await;
    let got = api.receive("q", "max=3").await;
    let (s, _) = api.ack("q", &[receipt(&got[0]), receipt(&got[1])]).await;
    assert_eq!(s, 200);
    let acked: Vec<String> = bodies(&got[..2]);
    let leased = got[2]["body"].as_str().unwrap().to_owned();
    let before = api.stats("q").await;

    broker.kill9().await.unwrap();
    broker.restart().await.unwrap();
    let api = Api::new(&broker);

    let (_, info) = api.call("GET", "/api/queues/q", None).await;
    assert_eq!(info["options"]["max_deliveries"], 5);
    assert_eq!(info["options"]["dead_letter_queue"], "q-dlq");
    let after = &info["stats"];
    assert_eq!(
        after["ready"], 8,
        "7 never received + the one that was leased: {after}"
    );
    assert_eq!(after["delayed"], 1);
    assert_eq!(after["leased"], 0);
    assert_eq!(after["sent_total"], before["sent_total"]);
    assert_eq!(after["acked_total"], before["acked_total"]);
    let all = api.receive("q", "max=100").await;
    let seen = bodies(&all);
    for a in &acked {
        assert!(!seen.contains(a), "acked {a} came back: {seen:?}");
    }
    let again = all
        .iter()
        .find(|m| m["body"] == leased.as_str())
        .expect("the leased message is ready again");
    assert_eq!(
        again["delivery_count"], 2,
        "the delivery before the crash counts"
    );
    assert_eq!(
        bodies(&api.receive("q", "max=10&wait_ms=20000").await),
        ["delayed"]
    );
    assert!(api.call("GET", "/api/queues/q-dlq", None).await.0 == 200);
}

/// What the load saw answered.
#[derive(Default)]
struct Ledger {
    sent: HashSet<String>,
    /// Acks answered 200: these must never come back.
    acked: HashSet<String>,
    /// Acks sent, answered or not: the crash may have cut the answer of one that
    /// took effect, so these may be gone without being lost.
    ack_attempted: HashSet<String>,
}

async fn run_load(
    api: Arc<Api>,
    ledger: Arc<Mutex<Ledger>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    worker: usize,
) {
    use std::sync::atomic::Ordering;
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        // Producers and consumers interleave in each task.
        let ids: Vec<String> = (0..20).map(|i| format!("w{worker}-{n}-{i}")).collect();
        n += 1;
        let batch: Vec<_> = ids.iter().map(|id| json!({"id": id, "body": id})).collect();
        let Ok(resp) = api
            .client
            .post(format!("{}/api/queues/load/messages", api.base))
            .json(&json!({"messages": batch}))
            .send()
            .await
        else {
            break;
        };
        if resp.status().as_u16() == 201 {
            ledger.lock().unwrap().sent.extend(ids);
        }
        let Ok(resp) = api
            .client
            .post(format!("{}/api/queues/load/receive?max=15", api.base))
            .send()
            .await
        else {
            break;
        };
        let Ok(body) = resp.json::<serde_json::Value>().await else {
            break;
        };
        let Some(messages) = body["messages"].as_array() else {
            break;
        };
        let receipts: Vec<&str> = messages.iter().map(receipt).collect();
        if receipts.is_empty() {
            continue;
        }
        ledger.lock().unwrap().ack_attempted.extend(
            messages
                .iter()
                .map(|m| m["id"].as_str().unwrap().to_owned()),
        );
        let Ok(resp) = api
            .client
            .post(format!("{}/api/queues/load/ack", api.base))
            .json(&json!({"receipts": receipts}))
            .send()
            .await
        else {
            break;
        };
        if resp.status().as_u16() == 200 {
            let mut l = ledger.lock().unwrap();
            for m in messages {
                l.acked.insert(m["id"].as_str().unwrap().to_owned());
            }
        }
    }
}

async fn drain(api: &Api) -> Vec<String> {
    let mut ids = Vec::new();
    loop {
        let got = api.receive("load", "max=500").await;
        if got.is_empty() {
            return ids;
        }
        let receipts: Vec<&str> = got.iter().map(receipt).collect();
        assert_eq!(api.ack("load", &receipts).await.0, 200);
        ids.extend(got.iter().map(|m| m["id"].as_str().unwrap().to_owned()));
    }
}

async fn crash_round(graceful: bool) {
    let mut broker = Broker::start().await.unwrap();
    let api = Arc::new(Api::new(&broker));
    api.create("load", json!({"visibility_timeout_ms": 600_000}))
        .await;
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let tasks: Vec<_> = (0..6)
        .map(|w| tokio::spawn(run_load(api.clone(), ledger.clone(), stop.clone(), w)))
        .collect();
    // Let the load run until a few thousand sends were answered.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while ledger.lock().unwrap().sent.len() < 3000 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if graceful {
        assert!(broker.terminate().await.unwrap(), "clean exit on SIGTERM");
    } else {
        broker.kill9().await.unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    broker.restart().await.unwrap();
    let api = Api::new(&broker);
    let drained = drain(&api).await;
    let ledger = ledger.lock().unwrap();
    assert!(
        ledger.sent.len() >= 100,
        "the load ran: {} sends",
        ledger.sent.len()
    );
    let drained_set: HashSet<&String> = drained.iter().collect();
    assert_eq!(
        drained_set.len(),
        drained.len(),
        "no message is delivered twice after the restart"
    );
    for id in &ledger.acked {
        assert!(!drained_set.contains(id), "acked message {id} came back");
    }
    let mut lost = 0;
    for id in &ledger.sent {
        if !ledger.ack_attempted.contains(id) && !drained_set.contains(id) {
            lost += 1;
        }
    }
    assert_eq!(
        lost,
        0,
        "answered sends lost (of {} sent, {} acked)",
        ledger.sent.len(),
        ledger.acked.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_concurrent_send_receive_ack_loses_nothing_and_resurrects_nothing() {
    for _ in 0..2 {
        crash_round(false).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_shuts_down_cleanly_with_nothing_lost_or_doubled() {
    crash_round(true).await;
}

fn segment_files(broker: &Broker, queue: &str) -> usize {
    crate::segment_files(&crate::queue_dir(&broker.data_dir(), queue).join("log"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settled_space_is_reclaimed_and_a_long_delayed_message_does_not_pin_old_segments() {
    let (mut broker, _dir) = crate::broker_with_small_segments().await;
    let api = Api::new(&broker);
    api.create("q", json!({})).await;
    api.send(
        "q",
        json!({"body": "see you in an hour", "delay_ms": 3_600_000, "id": "late"}),
    )
    .await;
    let body = "x".repeat(100);
    for _ in 0..60 {
        let batch: Vec<_> = (0..1000).map(|_| json!({"body": body})).collect();
        api.send("q", json!({"messages": batch})).await;
    }
    assert!(
        segment_files(&broker, "q") >= 5,
        "the backlog spans several segments"
    );
    loop {
        let got = api.receive("q", "max=1000").await;
        if got.is_empty() {
            break;
        }
        let receipts: Vec<&str> = got.iter().map(receipt).collect();
        assert_eq!(api.ack("q", &receipts).await.0, 200);
    }
    // Housekeeping moves the delayed message to the head and trims what is behind it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while segment_files(&broker, "q") > 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "old segments stay pinned: {} files",
            segment_files(&broker, "q")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stats = api.stats("q").await;
    assert_eq!(
        (stats["delayed"].as_u64(), stats["ready"].as_u64()),
        (Some(1), Some(0)),
        "{stats}"
    );
    broker.kill9().await.unwrap();
    broker.restart().await.unwrap();
    let api = Api::new(&broker);
    let stats = api.stats("q").await;
    assert_eq!(
        (stats["delayed"].as_u64(), stats["ready"].as_u64()),
        (Some(1), Some(0)),
        "the moved message survives a crash once: {stats}"
    );
    assert_eq!(stats["acked_total"], 60_000);
    assert_eq!(stats["sent_total"], 60_001);
}

#[tokio::test]
async fn ctrl_c_stops_cleanly_and_keeps_what_was_answered() {
    let mut broker = Broker::start().await.unwrap();
    let api = Api::new(&broker);
    api.create("q", json!({})).await;
    api.send_text("q", "kept").await;
    let leased = api.receive("q", "max=1").await;
    assert_eq!(leased.len(), 1);
    assert!(broker.interrupt().await.unwrap(), "clean exit on SIGINT");
    assert!(broker.log().contains("stopped"), "{}", broker.log());
    broker.restart().await.unwrap();
    let api = Api::new(&broker);
    let again = api.receive("q", "max=10").await;
    assert_eq!(bodies(&again), ["kept"]);
    assert_eq!(again[0]["delivery_count"], 2);
}

#[tokio::test]
async fn counters_survive_a_clean_stop_and_expiries_into_the_dlq_survive_a_crash() {
    let mut broker = Broker::start().await.unwrap();
    let api = Api::new(&broker);
    api.create("d", json!({"dedup_window_ms": 600_000})).await;
    api.send("d", json!({"body": "x", "id": "same"})).await;
    api.send("d", json!({"body": "x", "id": "same"})).await;
    api.create(
        "t",
        json!({"message_ttl_ms": 50, "dead_letter_queue": "t-dlq"}),
    )
    .await;
    api.send_text("t", "expires").await;
    api.wait_stats("t-dlq", "the expired message", |s| s["ready"] == 1)
        .await;
    assert!(broker.terminate().await.unwrap());
    broker.restart().await.unwrap();
    let api = Api::new(&broker);
    let d = api.stats("d").await;
    assert_eq!(
        (d["duplicates_total"].as_u64(), d["sent_total"].as_u64()),
        (Some(1), Some(1)),
        "{d}"
    );
    // The id is still remembered after the restart.
    let again = api.send("d", json!({"body": "x", "id": "same"})).await;
    assert_eq!(again["messages"][0]["duplicate"], true);
    api.send_text("t", "expires too").await;
    api.wait_stats("t-dlq", "the second expired message", |s| s["ready"] == 2)
        .await;
    broker.kill9().await.unwrap();
    broker.restart().await.unwrap();
    let api = Api::new(&broker);
    let t = api.stats("t").await;
    assert_eq!(
        (
            t["expired_total"].as_u64(),
            t["dead_lettered_total"].as_u64()
        ),
        (Some(2), Some(2)),
        "{t}"
    );
}

/// Trimming runs while sends land: with consumers acking everything at once the
/// queue is often empty, which is when a trim could race a send whose record is in
/// the log but not yet in the queue's state (the actor guards that with
/// `sends_in_flight`; the window is microseconds wide, so this load test shows the
/// whole path loses nothing rather than reliably hitting that window).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_message_is_lost_while_trimming_runs_under_concurrent_load() {
    let broker = Broker::start_with(&["--fsync", "never"]).await.unwrap();
    let api = Arc::new(Api::new(&broker));
    api.create("t", json!({})).await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sent = Arc::new(Mutex::new(HashSet::new()));
    let got = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for p in 0..3 {
        let (api, stop, sent) = (api.clone(), stop.clone(), sent.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let ids: Vec<String> = (0..5).map(|i| format!("{p}-{n}-{i}")).collect();
                n += 1;
                let batch: Vec<_> = ids.iter().map(|id| json!({"id": id, "body": id})).collect();
                api.send("t", json!({"messages": batch})).await;
                sent.lock().unwrap().extend(ids);
            }
        }));
    }
    for _ in 0..2 {
        let (api, stop, got) = (api.clone(), stop.clone(), got.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let ms = api.receive("t", "max=50&wait_ms=100").await;
                if ms.is_empty() {
                    continue;
                }
                let receipts: Vec<&str> = ms.iter().map(receipt).collect();
                assert_eq!(api.ack("t", &receipts).await.0, 200);
                got.lock()
                    .unwrap()
                    .extend(ms.iter().map(|m| m["id"].as_str().unwrap().to_owned()));
            }
        }));
    }
    // Long enough for several housekeeping rounds (every 500 ms).
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let mut received: Vec<String> = got.lock().unwrap().clone();
    received.extend(drain_queue(&api, "t").await);
    let unique: HashSet<&String> = received.iter().collect();
    assert_eq!(
        unique.len(),
        received.len(),
        "a message was delivered twice"
    );
    let sent = sent.lock().unwrap();
    let missing = sent.iter().filter(|id| !unique.contains(id)).count();
    assert_eq!(
        missing,
        0,
        "of {} sent, {missing} never arrived",
        sent.len()
    );
}

async fn drain_queue(api: &Api, queue: &str) -> Vec<String> {
    let mut ids = Vec::new();
    loop {
        let got = api.receive(queue, "max=500").await;
        if got.is_empty() {
            return ids;
        }
        let receipts: Vec<&str> = got.iter().map(receipt).collect();
        assert_eq!(api.ack(queue, &receipts).await.0, 200);
        ids.extend(got.iter().map(|m| m["id"].as_str().unwrap().to_owned()));
    }
}

/// kill -9 under AMQP load (a confirming producer and an acking consumer): after the
/// restart every confirmed message is either back in the queue or was delivered
/// before the crash, and nothing comes back that was never published.
#[tokio::test]
#[allow(clippy::too_many_lines)] // one scenario, start to end
async fn kill_9_under_amqp_load_keeps_every_confirmed_message() {
    use std::collections::{BTreeSet, VecDeque};
    use std::sync::{Arc, Mutex};

    let mut broker = Broker::start().await.unwrap();
    let setup = connect(&broker).await;
    declare(&setup.create_channel().await.unwrap(), "crash").await;
    let confirmed = Arc::new(Mutex::new(BTreeSet::new()));
    let published = Arc::new(Mutex::new(BTreeSet::new()));
    let delivered = Arc::new(Mutex::new(BTreeSet::new()));
    let producer = {
        let (conn, confirmed, published) =
            (connect(&broker).await, confirmed.clone(), published.clone());
        tokio::spawn(async move {
            let ch = conn.create_channel().await.unwrap();
            ch.confirm_select(ConfirmSelectOptions::default())
                .await
                .unwrap();
            let mut window = VecDeque::new();
            for seq in 0u64.. {
                let Ok(confirm) = ch
                    .basic_publish(
                        "".into(),
                        "crash".into(),
                        BasicPublishOptions::default(),
                        seq.to_string().as_bytes(),
                        BasicProperties::default().with_delivery_mode(2),
                    )
                    .await
                else {
                    return;
                };
                published.lock().unwrap().insert(seq);
                window.push_back((seq, confirm));
                while window.len() > 200 {
                    let (seq, confirm) = window.pop_front().unwrap();
                    match confirm.await {
                        Ok(c) if c.is_ack() => {
                            confirmed.lock().unwrap().insert(seq);
                        }
                        _ => return,
                    }
                }
            }
        })
    };
    let consumer = {
        let (conn, delivered) = (connect(&broker).await, delivered.clone());
        tokio::spawn(async move {
            let ch = conn.create_channel().await.unwrap();
            ch.basic_qos(100, BasicQosOptions::default()).await.unwrap();
            let mut consumer = ch
                .basic_consume(
                    "crash".into(),
                    "c".into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
                .unwrap();
            while let Some(Ok(d)) = consumer.next().await {
                let seq: u64 = std::str::from_utf8(&d.data).unwrap().parse().unwrap();
                delivered.lock().unwrap().insert(seq);
                if d.ack(BasicAckOptions::default()).await.is_err() {
                    return;
                }
            }
        })
    };
    // Let the load run until a few thousand are confirmed, then pull the plug.
    for _ in 0..600 {
        if confirmed.lock().unwrap().len() >= 3_000 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    broker.kill9().await.unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(10), producer).await;
    let _ = tokio::time::timeout(Duration::from_secs(10), consumer).await;
    let confirmed = confirmed.lock().unwrap().clone();
    let published = published.lock().unwrap().clone();
    let delivered = delivered.lock().unwrap().clone();
    assert!(
        confirmed.len() >= 1_000,
        "the load ran: {}",
        confirmed.len()
    );
    broker.restart().await.unwrap();
    let conn = connect(&broker).await;
    let ch = conn.create_channel().await.unwrap();
    let mut after = BTreeSet::new();
    while let Some(m) = ch
        .basic_get(
            "crash".into(),
            lapin::options::BasicGetOptions { no_ack: true },
        )
        .await
        .unwrap()
    {
        let seq: u64 = std::str::from_utf8(&m.delivery.data)
            .unwrap()
            .parse()
            .unwrap();
        after.insert(seq);
    }
    let lost: Vec<u64> = confirmed
        .iter()
        .filter(|s| !after.contains(s) && !delivered.contains(s))
        .copied()
        .collect();
    assert!(lost.is_empty(), "confirmed and lost: {lost:?}");
    let invented: Vec<u64> = after.difference(&published).copied().collect();
    assert!(invented.is_empty(), "never published: {invented:?}");
}
