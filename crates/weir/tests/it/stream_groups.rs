//! Consumer groups over HTTP (issue 21): two members get disjoint partitions and
//! the survivor takes all when the other times out; a non-owner's commit is 409
//! `not_owner`; commits survive kill -9 and a new member resumes there; lag is
//! shown; a reset is refused while a member is live, with a dry run.

use serde_json::{Value, json};
use weir_testkit::Broker;

use crate::streams::call;

const GROUP: &str = "/api/streams/orders/groups/billing";

async fn poll(broker: &Broker, member: &str) -> Value {
    let (s, v) = call(
        broker,
        "POST",
        &format!("{GROUP}/poll"),
        Some(json!({"member": member, "max": 100})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    v
}

fn partitions(polled: &Value) -> Vec<u64> {
    polled["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_u64().unwrap())
        .collect()
}

async fn setup(broker: &Broker, session_timeout_ms: u64) {
    let (s, _) = call(
        broker,
        "PUT",
        "/api/streams/orders",
        Some(json!({"partitions": 4})),
    )
    .await;
    assert_eq!(s, 201);
    let config = json!({"start": "first", "session_timeout_ms": session_timeout_ms});
    let (s, v) = call(broker, "PUT", GROUP, Some(config)).await;
    assert_eq!(s, 201, "{v}");
    let batch: Vec<Value> = (0..40)
        .map(|i| json!({"key": format!("customer-{}", i % 8), "body": format!("order {i}")}))
        .collect();
    let (s, _) = call(
        broker,
        "POST",
        "/api/streams/orders/messages",
        Some(json!({"messages": batch})),
    )
    .await;
    assert_eq!(s, 201);
}

#[tokio::test]
async fn two_members_split_the_partitions_and_the_survivor_takes_all_after_a_timeout() {
    let broker = Broker::start().await.expect("broker starts");
    setup(&broker, 500).await;
    let a = poll(&broker, "a").await;
    assert_eq!(partitions(&a), [0, 1, 2, 3]);
    assert_eq!(a["messages"].as_array().unwrap().len(), 40);
    poll(&broker, "b").await;
    let a = poll(&broker, "a").await;
    let b = poll(&broker, "b").await;
    let (pa, pb) = (partitions(&a), partitions(&b));
    assert_eq!((pa.len(), pb.len()), (2, 2));
    assert!(
        pa.iter().all(|p| !pb.contains(p)),
        "disjoint: {pa:?} {pb:?}"
    );
    // b's commit for a partition of a's is refused.
    let (s, v) = call(
        &broker,
        "POST",
        &format!("{GROUP}/commit"),
        Some(json!({"member": "b", "offsets": {pa[0].to_string(): 0}})),
    )
    .await;
    assert_eq!((s, v["error"].as_str()), (409, Some("not_owner")), "{v}");
    // b stops polling: after its session timeout a owns everything again.
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let a = poll(&broker, "a").await;
    assert_eq!(partitions(&a), [0, 1, 2, 3]);
    let (_, group) = call(&broker, "GET", GROUP, None).await;
    assert_eq!(group["members"].as_object().unwrap().len(), 1, "{group}");
    // The reset waits until no member is live.
    let (s, v) = call(
        &broker,
        "POST",
        &format!("{GROUP}/reset"),
        Some(json!({"to": "first"})),
    )
    .await;
    assert_eq!((s, v["error"].as_str()), (409, Some("precondition_failed")));
    let (s, _) = call(
        &broker,
        "POST",
        &format!("{GROUP}/leave"),
        Some(json!({"member": "a"})),
    )
    .await;
    assert_eq!(s, 204);
    let (s, v) = call(
        &broker,
        "POST",
        &format!("{GROUP}/reset"),
        Some(json!({"to": "last", "dry_run": true})),
    )
    .await;
    assert_eq!((s, v["dry_run"].as_bool()), (200, Some(true)), "{v}");
    let (_, group) = call(&broker, "GET", GROUP, None).await;
    assert!(
        group["partitions"][0]["committed"].is_null(),
        "a dry run sets nothing"
    );
}

#[tokio::test]
async fn commits_survive_kill_9_and_a_new_member_resumes_from_them_with_lag_shown() {
    let mut broker = Broker::start().await.expect("broker starts");
    setup(&broker, 30_000).await;
    let first = poll(&broker, "a").await;
    // Commit half of each partition's records.
    let mut offsets = serde_json::Map::new();
    let mut ends = std::collections::BTreeMap::new();
    for m in first["messages"].as_array().unwrap() {
        let partition = m["partition"].as_u64().unwrap();
        let next = m["offset"].as_u64().unwrap() + 1;
        ends.insert(partition, next);
    }
    for (p, end) in &ends {
        offsets.insert(p.to_string(), json!(end / 2));
    }
    let (s, v) = call(
        &broker,
        "POST",
        &format!("{GROUP}/commit"),
        Some(json!({"member": "a", "offsets": offsets})),
    )
    .await;
    assert_eq!(s, 204, "{v}");
    broker.kill9().await.expect("kill -9");
    broker.restart().await.expect("restart");
    let (_, group) = call(&broker, "GET", GROUP, None).await;
    let mut lag = 0;
    for p in group["partitions"].as_array().unwrap() {
        let partition = p["partition"].as_u64().unwrap();
        // (A partition no key hashed to has no record and no commit.)
        let end = ends.get(&partition).copied().unwrap_or(0);
        let committed = ends.contains_key(&partition).then_some(end / 2);
        assert_eq!(p["committed"].as_u64(), committed, "{group}");
        assert_eq!(p["end"].as_u64(), Some(end));
        lag += p["lag"].as_u64().unwrap();
    }
    let resumed = poll(&broker, "c").await;
    let got = resumed["messages"].as_array().unwrap();
    assert_eq!(
        got.len() as u64,
        lag,
        "the uncommitted records, and only those"
    );
    for m in got {
        let p = m["partition"].as_u64().unwrap();
        assert!(m["offset"].as_u64().unwrap() >= ends[&p] / 2);
    }
}
