//! Messages published to several queues live once in the shared log (decision 0004):
//! acks, trims, refusals, ordering and counters across crashes, against the real
//! binary.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use weir_testkit::Broker;

use crate::{Api, receipt};

async fn setup_fanout(api: &Api, exchange: &str, queues: &[(&str, Value)]) {
    let (s, body) = api
        .call(
            "PUT",
            &format!("/api/exchanges/{exchange}"),
            Some(json!({"type": "fanout"})),
        )
        .await;
    assert!(s == 201 || s == 200, "exchange: {body}");
    for (q, options) in queues {
        api.create(q, options.clone()).await;
        let (s, body) = api
            .call(
                "POST",
                "/api/bindings",
                Some(json!({"source": exchange, "destination": q})),
            )
            .await;
        assert!(s == 201 || s == 200, "bind: {body}");
    }
}

async fn publish(api: &Api, exchange: &str, message: Value) -> (u16, Value) {
    api.call(
        "POST",
        &format!("/api/exchanges/{exchange}/publish?queues=true"),
        Some(message),
    )
    .await
}

/// Everything `queue` holds, received and acked, by id; each body starts with its
/// id.
async fn drain(api: &Api, queue: &str) -> Vec<String> {
    let mut ids = Vec::new();
    loop {
        let got = api.receive(queue, "max=500").await;
        if got.is_empty() {
            return ids;
        }
        for m in &got {
            let id = m["id"].as_str().unwrap();
            let body = m["body"].as_str().unwrap();
            assert!(body.starts_with(id), "{queue}: {id} came with body {body}");
            ids.push(id.to_owned());
        }
        let receipts: Vec<&str> = got.iter().map(receipt).collect();
        assert_eq!(api.ack(queue, &receipts).await.0, 200);
    }
}

/// Ids, per queue.
type IdSets = Arc<Mutex<HashMap<&'static str, HashSet<String>>>>;

/// Publishes batches of 20 to exchange `load` until stopped or refused; answered
/// ids go to `answered`.
fn spawn_publisher(
    api: Arc<Api>,
    p: usize,
    answered: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    let padding = "x".repeat(100);
    tokio::spawn(async move {
        let mut n = 0;
        while !stop.load(Ordering::Relaxed) {
            let ids: Vec<String> = (0..20).map(|i| format!("p{p}-{n}-{i}")).collect();
            n += 1;
            let messages: Vec<Value> = ids
                .iter()
                .map(|id| json!({"id": id, "body": format!("{id} {padding}")}))
                .collect();
            let Ok(resp) = api
                .client
                .post(format!("{}/api/exchanges/load/publish", api.base))
                .json(&json!({"messages": messages}))
                .send()
                .await
            else {
                break;
            };
            if resp.status().as_u16() != 201 {
                break;
            }
            answered.lock().unwrap().extend(ids);
        }
    })
}

/// Receives from `q` and acks most at once; one in ten stays leased until it comes
/// back (acks out of order, redeliveries, batches held across trims). Ids of acks
/// sent go to `tried`, of acks answered 200 to `acked`.
fn spawn_consumer(
    api: Arc<Api>,
    q: &'static str,
    acked: IdSets,
    tried: IdSets,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    let ids = |ms: &[&Value]| -> Vec<String> {
        ms.iter()
            .map(|m| m["id"].as_str().unwrap().to_owned())
            .collect()
    };
    tokio::spawn(async move {
        while !stop.load(Ordering::Relaxed) {
            let url = format!(
                "{}/api/queues/{q}/receive?max=50&visibility_timeout_ms=300",
                api.base
            );
            let Ok(resp) = api.client.post(url).send().await else {
                break;
            };
            let Ok(body) = resp.json::<Value>().await else {
                break;
            };
            let Some(got) = body["messages"].as_array() else {
                break;
            };
            let take: Vec<&Value> = got
                .iter()
                .filter(|m| {
                    !m["id"].as_str().unwrap().ends_with('0')
                        || m["delivery_count"].as_u64() >= Some(2)
                })
                .collect();
            if take.is_empty() {
                continue;
            }
            let receipts: Vec<&str> = take.iter().map(|m| receipt(m)).collect();
            tried
                .lock()
                .unwrap()
                .entry(q)
                .or_default()
                .extend(ids(&take));
            let Ok(resp) = api
                .client
                .post(format!("{}/api/queues/{q}/ack", api.base))
                .json(&json!({"receipts": receipts}))
                .send()
                .await
            else {
                break;
            };
            if resp.status().as_u16() == 200 {
                let body: Value = resp.json().await.unwrap_or(Value::Null);
                if body["acked"].as_u64() == Some(take.len() as u64) {
                    acked
                        .lock()
                        .unwrap()
                        .entry(q)
                        .or_default()
                        .extend(ids(&take));
                }
            }
        }
    })
}

/// Waits until each of `dirs` holds at most `max` segment files (60 s at most).
async fn wait_for_segments_at_most(dirs: &[std::path::PathBuf], max: usize) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let counts: Vec<usize> = dirs.iter().map(|d| crate::segment_files(d)).collect();
        if counts.iter().all(|n| *n <= max) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "segments stay: {counts:?} in {dirs:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Publishers and acking consumers at once, with 16 KiB segments so the queue logs
/// (which hold only state records here) are trimmed and checkpointed under load; then
/// kill -9. Every answered publish is in every queue unless that queue acked it;
/// nothing acked comes back; nothing is doubled. A second crash with nothing running
/// changes nothing, and once everything is acked the space comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acked_fanned_out_messages_stay_acked_across_trims_and_crashes() {
    let (mut broker, _dir) = crate::broker_with_segment_bytes(16 << 10).await;
    let api = Arc::new(Api::new(&broker));
    let queues = ["fa", "fb", "fc"];
    let with_options: Vec<(&str, Value)> = queues.iter().map(|q| (*q, json!({}))).collect();
    setup_fanout(&api, "load", &with_options).await;
    let answered = Arc::new(Mutex::new(Vec::<String>::new()));
    // Acks answered 200, and acks sent (an ack in flight at the crash may be durable
    // without its answer).
    let (acked, tried): (IdSets, IdSets) = (Arc::default(), Arc::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks: Vec<_> = (0..2)
        .map(|p| spawn_publisher(api.clone(), p, answered.clone(), stop.clone()))
        .collect();
    for q in queues {
        tasks.push(spawn_consumer(
            api.clone(),
            q,
            acked.clone(),
            tried.clone(),
            stop.clone(),
        ));
    }
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    while answered.lock().unwrap().len() < 40_000 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    broker.kill9().await.unwrap();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let answered = answered.lock().unwrap().clone();
    let acked = acked.lock().unwrap().clone();
    let tried = tried.lock().unwrap().clone();
    assert!(answered.len() >= 1_000, "the load ran: {}", answered.len());
    assert!(
        acked.values().map(HashSet::len).sum::<usize>() >= 500,
        "consumers acked under load"
    );
    broker.restart().await.unwrap();
    // A second crash with nothing in flight: replay of a replayed broker.
    broker.kill9().await.unwrap();
    broker.restart().await.unwrap();
    let api = Api::new(&broker);
    for q in queues {
        let got = drain(&api, q).await;
        let unique: HashSet<&String> = got.iter().collect();
        assert_eq!(unique.len(), got.len(), "{q}: a message came back twice");
        let acked = acked.get(q).cloned().unwrap_or_default();
        let tried = tried.get(q).cloned().unwrap_or_default();
        for id in &got {
            assert!(!acked.contains(id), "{q}: acked {id} came back");
        }
        for id in &answered {
            assert!(
                tried.contains(id) || unique.contains(id),
                "{q}: answered {id} was lost"
            );
        }
    }
    // Everything is acked: the queue logs and the shared log shrink to their last
    // segments.
    let data = broker.data_dir();
    let dirs: Vec<_> = queues
        .iter()
        .map(|q| crate::queue_dir(&data, q).join("log"))
        .chain([data.join("bodies")])
        .collect();
    wait_for_segments_at_most(&dirs, 2).await;
}

/// A queue that gets messages from a direct send, from a publish to it alone and from
/// a publish to several queues delivers them in the order they arrived, before and
/// after a crash.
#[tokio::test]
async fn messages_arriving_by_every_path_keep_their_order_across_a_crash() {
    let mut broker = Broker::start().await.unwrap();
    let api = Api::new(&broker);
    let (s, _) = api
        .call("PUT", "/api/exchanges/t", Some(json!({"type": "topic"})))
        .await;
    assert_eq!(s, 201);
    api.create("mixed", json!({})).await;
    api.create("other", json!({})).await;
    for (q, key) in [("mixed", "x.*"), ("other", "x.both")] {
        let (s, _) = api
            .call(
                "POST",
                "/api/bindings",
                Some(json!({"source": "t", "destination": q, "routing_key": key})),
            )
            .await;
        assert_eq!(s, 201);
    }
    let mut expected = Vec::new();
    for round in 0..2 {
        for i in 0..30 {
            let body = format!("r{round}-{i}");
            match i % 3 {
                0 => {
                    api.send("mixed", json!({"body": body})).await;
                }
                1 => {
                    let (s, out) =
                        publish(&api, "t", json!({"routing_key": "x.one", "body": body})).await;
                    assert_eq!((s, out["routed"].as_u64()), (201, Some(1)), "{out}");
                }
                _ => {
                    let (s, out) =
                        publish(&api, "t", json!({"routing_key": "x.both", "body": body})).await;
                    assert_eq!((s, out["routed"].as_u64()), (201, Some(2)), "{out}");
                }
            }
            expected.push(body);
        }
        if round == 0 {
            // Before the crash: the first half, in order (leased, not acked).
            let got = api
                .receive("mixed", "max=100&visibility_timeout_ms=600000")
                .await;
            assert_eq!(crate::bodies(&got), expected, "order before the crash");
        }
    }
    broker.kill9().await.unwrap();
    broker.restart().await.unwrap();
    let api = Api::new(&broker);
    let got = api.receive("mixed", "max=100").await;
    assert_eq!(crate::bodies(&got), expected, "order after the crash");
}

/// A queue refuses a shared message (a duplicate id inside its window; full with
/// `reject-publish`) while the other queues take it; after a crash the refusals stand
/// and the counters are what they were.
#[tokio::test]
async fn refusals_of_a_fanned_out_message_stand_after_a_crash() {
    let mut broker = Broker::start().await.unwrap();
    let api = Api::new(&broker);
    setup_fanout(
        &api,
        "ev",
        &[
            ("dedup", json!({"dedup_window_ms": 600_000})),
            ("plain", json!({})),
            (
                "small",
                json!({"max_length": 1, "overflow": "reject-publish"}),
            ),
        ],
    )
    .await;
    let (s, out) = publish(&api, "ev", json!({"id": "a", "body": "first"})).await;
    assert_eq!(s, 201, "{out}");
    assert_eq!(out["messages"][0]["routed"], 3);
    // The same id again: the dedup queue declines it; `small` is full and refuses
    // (the answer is that error) but the others hold their copies.
    let (s, out) = publish(&api, "ev", json!({"id": "a", "body": "second"})).await;
    assert_eq!(s, 429, "{out}");
    assert_eq!(out["error"], "queue_full");
    let before: Vec<Value> = {
        let mut v = Vec::new();
        for q in ["dedup", "plain", "small"] {
            v.push(api.stats(q).await);
        }
        v
    };
    assert_eq!(before[0]["ready"], 1);
    assert_eq!(before[0]["duplicates_total"], 1);
    assert_eq!(before[1]["ready"], 2);
    assert_eq!(before[2]["ready"], 1);
    broker.kill9().await.unwrap();
    broker.restart().await.unwrap();
    let api = Api::new(&broker);
    for (q, stats) in ["dedup", "plain", "small"].iter().zip(&before) {
        let after = api.stats(q).await;
        for field in ["ready", "sent_total", "duplicates_total"] {
            assert_eq!(after[field], stats[field], "{q}.{field} after the crash");
        }
    }
    assert_eq!(
        crate::bodies(&api.receive("dedup", "max=10").await),
        ["first"]
    );
    assert_eq!(
        crate::bodies(&api.receive("small", "max=10").await),
        ["first"]
    );
    assert_eq!(
        crate::bodies(&api.receive("plain", "max=10").await),
        ["first", "second"]
    );
    // Still inside the window after the restart (and `small` has room again: its
    // message is leased).
    let (s, out) = publish(&api, "ev", json!({"id": "a", "body": "third"})).await;
    assert_eq!(s, 201, "{out}");
    assert_eq!(out["messages"][0]["duplicate_in"], json!(["dedup"]));
    assert_eq!(out["messages"][0]["queues"], json!(["plain", "small"]));
    assert_eq!(api.stats("dedup").await["duplicates_total"], 2);
}
