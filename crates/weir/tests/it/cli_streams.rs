//! `weir stream` and `weir group` as the real binary against a real broker
//! (issue 21): create, alter, trim, send (an argument, or stdin lines with a key), ls, show,
//! read, tail following new records live, and a group's ls, show and reset.

use std::process::Stdio;
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use weir_testkit::Broker;

use crate::cli::{WEIR, weir};

#[tokio::test]
async fn streams_are_created_sent_to_read_and_tailed_from_the_cli() {
    let broker = Broker::start().await.expect("broker starts");
    let made = weir(
        &broker,
        &["stream", "create", "audit", "--partitions", "2"],
        b"",
    )
    .await
    .ok();
    assert!(
        made.stdout.contains("created stream audit"),
        "{}",
        made.stdout
    );
    weir(
        &broker,
        &["stream", "send", "audit", "hello", "--key", "k1"],
        b"",
    )
    .await
    .ok();
    let lines = weir(
        &broker,
        &["stream", "send", "audit", "--key", "k1"],
        b"one\ntwo\n",
    )
    .await
    .ok();
    assert!(
        lines.stdout.contains("appended 2 records"),
        "{}",
        lines.stdout
    );
    let listed = weir(&broker, &["stream", "ls", "--json"], b"")
        .await
        .ok()
        .json();
    assert_eq!(listed["streams"][0]["name"], "audit");
    let shown = weir(&broker, &["stream", "show", "audit"], b"").await.ok();
    assert!(shown.stdout.contains("PARTITION"), "{}", shown.stdout);
    // k1's records are in one partition, in order.
    let p = weir_partition_of_k1(&broker).await;
    let read = weir(
        &broker,
        &["stream", "read", "audit", "--partition", &p.to_string()],
        b"",
    )
    .await
    .ok();
    let order: Vec<usize> = ["hello", "one", "two"]
        .iter()
        .map(|b| read.stdout.find(b).expect("each record is read"))
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{}", read.stdout);

    // tail prints what is appended after it started.
    let mut tail = tokio::process::Command::new(WEIR)
        .args(["stream", "tail", "audit", "--partition", &p.to_string()])
        .env("WEIR_SERVER", broker.http_url())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("tail starts");
    let mut out = BufReader::new(tail.stdout.take().expect("stdout")).lines();
    tokio::time::sleep(Duration::from_millis(300)).await;
    weir(
        &broker,
        &["stream", "send", "audit", "live!", "--key", "k1"],
        b"",
    )
    .await
    .ok();
    let line = tokio::time::timeout(Duration::from_secs(20), out.next_line())
        .await
        .expect("tail prints the new record")
        .expect("read")
        .expect("a line");
    assert!(line.contains("live!"), "{line}");
    assert!(!line.contains("hello"), "tail starts at the end: {line}");
    tail.kill().await.ok();

    weir(&broker, &["stream", "rm", "audit"], b"").await.ok();
    let gone = weir(&broker, &["stream", "show", "audit"], b"").await;
    assert!(gone.stderr.contains("stream_not_found"), "{}", gone.stderr);
}

/// The partition of key `k1` in `audit`, as the broker placed it.
async fn weir_partition_of_k1(broker: &Broker) -> u64 {
    let placed = weir(
        broker,
        &["stream", "send", "audit", "probe", "--key", "k1", "--json"],
        b"",
    )
    .await
    .ok()
    .json();
    placed["messages"][0]["partition"]
        .as_u64()
        .expect("partition")
}

#[tokio::test]
async fn groups_are_listed_shown_and_reset_from_the_cli() {
    let broker = Broker::start().await.expect("broker starts");
    weir(&broker, &["stream", "create", "s"], b"").await.ok();
    weir(&broker, &["stream", "send", "s"], b"a\nb\nc\n")
        .await
        .ok();
    let client = broker.client();
    let url = |path: &str| format!("{}/api/streams/s/groups/g{path}", broker.http_url());
    let made = client.put(url("")).json(&json!({})).send().await.unwrap();
    assert_eq!(made.status(), 201);
    let commit = client
        .post(url("/poll"))
        .json(&json!({"member": "m"}))
        .send()
        .await
        .unwrap();
    assert_eq!(commit.status(), 200);
    client
        .post(url("/commit"))
        .json(&json!({"member": "m", "offsets": {"0": 1}}))
        .send()
        .await
        .unwrap();
    let ls = weir(&broker, &["group", "ls", "s"], b"").await.ok();
    assert!(
        ls.stdout.contains('g') && ls.stdout.contains("LAG"),
        "{}",
        ls.stdout
    );
    let shown = weir(&broker, &["group", "show", "s", "g", "--json"], b"")
        .await
        .ok()
        .json();
    assert_eq!(shown["partitions"][0]["committed"], 1);
    assert_eq!(shown["partitions"][0]["lag"], 2);
    let live = weir(&broker, &["group", "reset", "s", "g", "--to", "first"], b"").await;
    assert_eq!(live.code, Some(1), "refused while m is live");
    assert!(
        live.stderr.contains("precondition_failed"),
        "{}",
        live.stderr
    );
    client
        .post(url("/leave"))
        .json(&json!({"member": "m"}))
        .send()
        .await
        .unwrap();
    let dry = weir(
        &broker,
        &["group", "reset", "s", "g", "--to", "first", "--dry-run"],
        b"",
    )
    .await
    .ok();
    assert!(
        dry.stdout.contains("would set g offsets to 0:0"),
        "{}",
        dry.stdout
    );
    weir(&broker, &["group", "reset", "s", "g", "--to", "last"], b"")
        .await
        .ok();
    let shown = weir(&broker, &["group", "show", "s", "g", "--json"], b"")
        .await
        .ok()
        .json();
    assert_eq!(shown["partitions"][0]["committed"], 2);
}

#[tokio::test]
async fn a_streams_retention_is_altered_from_the_cli() {
    let broker = Broker::start().await.expect("broker starts");
    weir(
        &broker,
        &["stream", "create", "audit", "--max-bytes", "1000000"],
        b"",
    )
    .await
    .ok();
    let altered = weir(
        &broker,
        &[
            "stream",
            "alter",
            "audit",
            "--max-age-ms",
            "3600000",
            "--max-bytes",
            "none",
        ],
        b"",
    )
    .await
    .ok();
    assert!(
        altered
            .stdout
            .contains("altered stream audit: max_age_ms 3600000, max_bytes none"),
        "{}",
        altered.stdout
    );
    let bad = weir(
        &broker,
        &["stream", "alter", "audit", "--max-bytes", "lots"],
        b"",
    )
    .await;
    assert!(bad.stderr.contains("a number, or none"), "{}", bad.stderr);
}

#[tokio::test]
async fn a_partition_is_trimmed_from_the_cli() {
    let broker = Broker::start().await.expect("broker starts");
    weir(&broker, &["stream", "create", "t"], b"").await.ok();
    weir(&broker, &["stream", "send", "t"], b"a\nb\nc\nd\n")
        .await
        .ok();
    let trimmed = weir(&broker, &["stream", "trim", "t", "--before", "2"], b"")
        .await
        .ok();
    assert!(
        trimmed
            .stdout
            .contains("trimmed partition 0 of stream t: it starts at offset 2"),
        "{}",
        trimmed.stdout
    );
    let read = weir(&broker, &["stream", "read", "t", "--json"], b"")
        .await
        .ok()
        .json();
    assert_eq!(read["messages"][0]["offset"], 2, "{read}");
    let all = weir(
        &broker,
        &["stream", "trim", "t", "--before", "end", "--json"],
        b"",
    )
    .await
    .ok()
    .json();
    assert_eq!(all["first_offset"], 4, "{all}");
    let past = weir(&broker, &["stream", "trim", "t", "--before", "9"], b"").await;
    assert!(past.stderr.contains("past the end"), "{}", past.stderr);
}
