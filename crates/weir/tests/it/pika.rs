//! The real Python client, pika, against the real binary: seed 001's producer and
//! consumer unmodified but for the address, and the usual patterns
//! (tests/pika/patterns.py). `./scripts/test` installs Python with pika and sets
//! `WEIR_PYTHON`.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use weir_testkit::Broker;

use crate::Api;

pub(crate) fn python() -> String {
    std::env::var("WEIR_PYTHON")
        .expect("WEIR_PYTHON is not set: run ./scripts/test, which creates a Python venv with pika")
}

pub(crate) fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/pika")
        .join(name)
}

pub(crate) fn port(broker: &Broker) -> String {
    broker
        .amqp_addr()
        .rsplit(':')
        .next()
        .expect("host:port")
        .to_owned()
}

/// Runs `script` with `args`; panics with its output unless it exits 0.
pub(crate) async fn run(broker: &Broker, name: &str, args: &[&str]) -> String {
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new(python())
            .arg(script(name))
            .args(args)
            .env("WEIR_AMQP_PORT", port(broker))
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("{name} {args:?} timed out"))
    .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{name} {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

async fn scenario(name: &str) {
    let broker = Broker::start().await.unwrap();
    let out = run(&broker, "patterns.py", &[name]).await;
    assert!(out.contains("OK"), "{out}");
}

#[tokio::test]
async fn seed_001_producer_and_consumer_run_unmodified() {
    let broker = Broker::start().await.unwrap();
    let out = run(&broker, "seed001_producer.py", &[]).await;
    assert!(
        out.contains("Sent order: order_123") && out.contains("Sent order: order_124"),
        "{out}"
    );
    let mut consumer = tokio::process::Command::new(python())
        .arg(script("seed001_consumer.py"))
        .env("WEIR_AMQP_PORT", port(&broker))
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python runs");
    let mut lines = BufReader::new(consumer.stdout.take().expect("stdout")).lines();
    let mut seen = Vec::new();
    let done = tokio::time::timeout(Duration::from_secs(60), async {
        while let Ok(Some(line)) = lines.next_line().await {
            seen.push(line.clone());
            if line == "Completed order: order_124" {
                return;
            }
        }
    })
    .await;
    assert!(
        done.is_ok(),
        "the consumer did not finish both orders: {seen:?}"
    );
    assert_eq!(
        seen,
        [
            "Waiting for orders...",
            "Processing order: order_123",
            "Completed order: order_123",
            "Processing order: order_124",
            "Completed order: order_124"
        ]
    );
    let api = Api::new(&broker);
    api.wait_stats("order_queue", "both orders acked", |s| {
        s["acked_total"] == 2
    })
    .await;
    let _ = consumer.kill().await;
}

#[tokio::test]
async fn work_queue_with_prefetch_1_dispatches_fairly() {
    scenario("work_queue_fair_dispatch").await;
}

#[tokio::test]
async fn fanout_publish_subscribe() {
    scenario("fanout").await;
}

#[tokio::test]
async fn direct_routing() {
    scenario("direct").await;
}

#[tokio::test]
async fn topic_routing() {
    scenario("topic").await;
}

#[tokio::test]
async fn headers_routing() {
    scenario("headers").await;
}

#[tokio::test]
async fn rpc_with_reply_to_and_correlation_id() {
    scenario("rpc").await;
}

#[tokio::test]
async fn rpc_with_direct_reply_to() {
    scenario("rpc_direct_reply_to").await;
}

#[tokio::test]
async fn publisher_confirms() {
    scenario("confirms").await;
}

#[tokio::test]
async fn dead_lettering_with_ttl_and_reject() {
    scenario("dead_letters").await;
}

#[tokio::test]
async fn priorities() {
    scenario("priorities").await;
}

#[tokio::test]
async fn persistent_messages_survive_a_restart() {
    let mut broker = Broker::start().await.unwrap();
    run(&broker, "patterns.py", &["durable_publish"]).await;
    broker.kill9().await.unwrap();
    broker.restart().await.unwrap();
    run(&broker, "patterns.py", &["durable_consume"]).await;
}

#[tokio::test]
async fn a_disk_alarm_blocks_publishers_with_connection_blocked() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("weir.toml");
    // More free space than any disk has: the alarm is raised from the start.
    std::fs::write(
        &config,
        "[limits]\ndisk_free_min_bytes = 9000000000000000000\n",
    )
    .unwrap();
    let broker = Broker::start_with(&["--config", config.to_str().unwrap()])
        .await
        .unwrap();
    let out = run(&broker, "patterns.py", &["blocked"]).await;
    assert!(out.contains("OK"), "{out}");
    assert!(broker.log().contains("low on disk"), "{}", broker.log());
}
