//! Streams under `kill -9` (issue 21): concurrent appends and consumer-group
//! commits, the broker killed mid-load, three rounds. No answered append is lost
//! (each is read back at the offset it was answered with, with its body), no
//! committed offset goes backwards, and a member after the restart starts exactly
//! at the committed offsets (redelivery only within the uncommitted window).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use weir_testkit::Broker;

const GROUP: &str = "/api/streams/crash/groups/g";

async fn call(url: &str, method: &str, path: &str, body: Option<Value>) -> Option<(u16, Value)> {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = weir_testkit::http_client()
        .request(method, format!("{url}{path}"))
        .timeout(Duration::from_secs(10));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let answer = request.send().await.ok()?;
    let status = answer.status().as_u16();
    Some((status, answer.json().await.unwrap_or(Value::Null)))
}

/// Appends batches until a request fails (the broker died); records what was
/// answered: (partition, offset) -> body.
async fn appender(url: String, name: String, answered: Arc<Mutex<BTreeMap<(u64, u64), String>>>) {
    for i in 0.. {
        let bodies: Vec<String> = (0..10).map(|j| format!("{name}-{i}-{j}")).collect();
        let batch: Vec<Value> = bodies
            .iter()
            .enumerate()
            .map(|(j, b)| json!({"key": format!("{name}-{j}"), "body": b}))
            .collect();
        let Some((201, placed)) = call(
            &url,
            "POST",
            "/api/streams/crash/messages",
            Some(json!({"messages": batch})),
        )
        .await
        else {
            return;
        };
        let mut answered = answered.lock().unwrap();
        for (p, body) in placed["messages"].as_array().unwrap().iter().zip(bodies) {
            let at = (
                p["partition"].as_u64().unwrap(),
                p["offset"].as_u64().unwrap(),
            );
            answered.insert(at, body);
        }
    }
}

/// Polls and commits what it read until a request fails; records each answered
/// commit per partition.
async fn committer(url: String, commits: Arc<Mutex<BTreeMap<u64, u64>>>) {
    loop {
        let Some((200, polled)) = call(
            &url,
            "POST",
            &format!("{GROUP}/poll"),
            Some(json!({"member": "m", "max": 50})),
        )
        .await
        else {
            return;
        };
        let mut next: BTreeMap<u64, u64> = BTreeMap::new();
        for m in polled["messages"].as_array().unwrap() {
            next.insert(
                m["partition"].as_u64().unwrap(),
                m["offset"].as_u64().unwrap() + 1,
            );
        }
        if next.is_empty() {
            continue;
        }
        let offsets: serde_json::Map<String, Value> = next
            .iter()
            .map(|(p, o)| (p.to_string(), json!(o)))
            .collect();
        let Some((204, _)) = call(
            &url,
            "POST",
            &format!("{GROUP}/commit"),
            Some(json!({"member": "m", "offsets": offsets})),
        )
        .await
        else {
            return;
        };
        commits.lock().unwrap().extend(next);
    }
}

/// Every record of partition `p`, by offset.
async fn read_all(url: &str, p: u64) -> BTreeMap<u64, String> {
    let mut out = BTreeMap::new();
    let mut from = 0;
    loop {
        let path = format!("/api/streams/crash/messages?partition={p}&from={from}&max=10000");
        let (status, read) = call(url, "GET", &path, None).await.expect("read");
        assert_eq!(status, 200, "{read}");
        let records = read["messages"].as_array().unwrap();
        if records.is_empty() {
            return out;
        }
        for r in records {
            out.insert(
                r["offset"].as_u64().unwrap(),
                r["body"].as_str().unwrap().to_owned(),
            );
        }
        from = read["next"].as_u64().unwrap();
    }
}

#[tokio::test]
async fn kill_9_under_appends_and_commits_loses_no_answered_append_or_commit() {
    let mut broker = Broker::start().await.expect("broker starts");
    let mut url = broker.http_url();
    let made = call(
        &url,
        "PUT",
        "/api/streams/crash",
        Some(json!({"partitions": 2})),
    )
    .await;
    assert_eq!(made.map(|m| m.0), Some(201));
    let group = json!({"session_timeout_ms": 100});
    assert_eq!(
        call(&url, "PUT", GROUP, Some(group)).await.map(|m| m.0),
        Some(201)
    );
    let answered = Arc::new(Mutex::new(BTreeMap::new()));
    let commits = Arc::new(Mutex::new(BTreeMap::new()));
    for round in 0..3 {
        let mut tasks = Vec::new();
        for a in 0..3 {
            let name = format!("r{round}a{a}");
            tasks.push(tokio::spawn(appender(url.clone(), name, answered.clone())));
        }
        tasks.push(tokio::spawn(committer(url.clone(), commits.clone())));
        tokio::time::sleep(Duration::from_millis(400)).await;
        broker.kill9().await.expect("kill -9");
        for t in tasks {
            t.await.expect("task");
        }
        broker.restart().await.expect("restart");
        url = broker.http_url();
        let answered = answered.lock().unwrap().clone();
        assert!(!answered.is_empty(), "round {round}: appends were answered");
        for p in 0..2 {
            let stored = read_all(&url, p).await;
            for ((partition, offset), body) in answered.range((p, 0)..(p + 1, 0)) {
                assert_eq!(
                    stored.get(offset),
                    Some(body),
                    "round {round}: the answered append at {partition}/{offset} is there"
                );
            }
        }
        let (_, described) = call(&url, "GET", GROUP, None).await.expect("group");
        let commits = commits.lock().unwrap().clone();
        for (p, floor) in &commits {
            let committed = described["partitions"][usize::try_from(*p).unwrap()]["committed"]
                .as_u64()
                .unwrap_or(0);
            assert!(
                committed >= *floor,
                "round {round}: partition {p} committed {committed}, answered {floor}"
            );
        }
        // The member of before the crash is gone; a new one starts at the commits.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (_, polled) = call(
            &url,
            "POST",
            &format!("{GROUP}/poll"),
            Some(json!({"member": format!("check{round}"), "max": 10000})),
        )
        .await
        .expect("poll");
        let mut first: BTreeMap<u64, u64> = BTreeMap::new();
        for m in polled["messages"].as_array().unwrap() {
            first
                .entry(m["partition"].as_u64().unwrap())
                .or_insert(m["offset"].as_u64().unwrap());
        }
        for (p, offset) in first {
            let committed = described["partitions"][usize::try_from(p).unwrap()]["committed"]
                .as_u64()
                .unwrap_or(0);
            assert_eq!(
                offset, committed,
                "round {round}: partition {p} resumes at its commit"
            );
        }
        let leave = json!({"member": format!("check{round}")});
        call(&url, "POST", &format!("{GROUP}/leave"), Some(leave)).await;
    }
}
