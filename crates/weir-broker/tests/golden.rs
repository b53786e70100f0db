//! The broker's golden data directory: a data directory written by the build that
//! introduced the current broker record versions (message record version 2 with
//! the death history, state records, the shared log's kind 4, `queues/@<id>`
//! directories, `meta/routing.json`, `meta/queue-ids.json`), committed under
//! `tests/fixtures/v2-data/`. Every later build must open a copy of it and find
//! exactly what it held (docs/on-disk-format.md, "Broker record versions").
//! Regenerate only when a record version changes, with
//! `cargo test -p weir-broker --test golden -- --ignored write_v2_fixture`, and keep
//! the old directory beside the new one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use weir_broker::{
    Binding, Broker, BrokerConfig, DeadLetterReason, Delivery, DestinationType, ExchangeOptions,
    ExchangeType, NackOptions, PublishMessage, PublishOptions, QueueOptions, ReceiveRequest,
    SendMessage,
};

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v2-data")
}

fn message(id: &str, body: &str) -> SendMessage {
    SendMessage {
        id: Some(id.to_owned()),
        body: body.as_bytes().to_vec().into(),
        ..SendMessage::default()
    }
}

fn receive(max: u32) -> ReceiveRequest {
    ReceiveRequest {
        max,
        wait_ms: 0,
        visibility_timeout_ms: Some(600_000),
    }
}

fn receipts(got: &[Delivery]) -> Vec<String> {
    got.iter().filter_map(|d| d.receipt.clone()).collect()
}

fn bind(source: &str, queue: &str) -> Binding {
    Binding {
        source: source.into(),
        destination: queue.into(),
        destination_type: DestinationType::Queue,
        routing_key: String::new(),
        arguments: BTreeMap::new(),
    }
}

#[tokio::test]
#[ignore = "writes the committed fixture; run only when a broker record version changes"]
async fn write_v2_fixture() {
    let dir = fixture_dir();
    let _ = std::fs::remove_dir_all(&dir);
    let mut config = BrokerConfig::new(&dir);
    // Small segments, so the churn queue rolls and trims (totals and dedup records).
    config.log.segment_bytes = 4096;
    config.limits.disk_free_min_bytes = 0;
    let (broker, _) = Broker::open(config).await.expect("open");
    write_jobs(&broker).await;
    write_fan(&broker).await;
    write_churn(&broker, &dir).await;
    broker.shutdown().await;
}

/// jobs: priorities, headers, a group, leases, an ack, a requeue, a dead letter.
async fn write_jobs(broker: &Broker) {
    let jobs = QueueOptions {
        max_priority: 9,
        dead_letter_queue: Some("jobs.dlq".into()),
        ..QueueOptions::default()
    };
    broker.declare("jobs", jobs).await.expect("declare");
    let mut sends = Vec::new();
    for i in 0..6 {
        let mut m = message(&format!("job-{i}"), &format!("job body {i}"));
        m.priority = Some(if i == 4 { 7 } else { 0 });
        m.headers.insert("x-n".into(), i.to_string());
        if i >= 4 {
            m.group = Some("g".into());
        }
        sends.push(m);
    }
    broker.send("jobs", sends).await.expect("send");
    let got = broker.receive("jobs", receive(3)).await.expect("receive");
    // job-4 (priority 7), job-0, job-1.
    broker
        .ack("jobs", receipts(&got[..1]))
        .await
        .expect("ack job-4");
    broker
        .nack(
            "jobs",
            receipts(&got[1..2]),
            NackOptions {
                requeue: true,
                delay_ms: None,
            },
        )
        .await
        .expect("requeue job-0");
    broker
        .nack(
            "jobs",
            receipts(&got[2..3]),
            NackOptions {
                requeue: false,
                delay_ms: None,
            },
        )
        .await
        .expect("dead-letter job-1");
}

/// fan: each publish stored once for three queues; `once` declines the repeat of
/// fan-1 (a `declined` record), the others take it.
async fn write_fan(broker: &Broker) {
    broker
        .declare_exchange("fan", ExchangeOptions::of(ExchangeType::Fanout))
        .await
        .expect("exchange");
    let once = QueueOptions {
        dedup_window_ms: Some(2_592_000_000),
        ..QueueOptions::default()
    };
    broker
        .declare("fan-a", QueueOptions::default())
        .await
        .expect("declare");
    broker
        .declare("fan-b", QueueOptions::default())
        .await
        .expect("declare");
    broker.declare("once", once).await.expect("declare");
    for q in ["fan-a", "fan-b", "once"] {
        broker.bind(bind("fan", q)).await.expect("bind");
    }
    for i in [0, 1, 2, 1] {
        broker
            .publish(
                "fan",
                vec![PublishMessage {
                    routing_key: String::new(),
                    mandatory: false,
                    message: message(&format!("fan-{i}"), &format!("fanned {i}")),
                }],
                PublishOptions::default(),
            )
            .await
            .expect("publish");
    }
    let got = broker.receive("fan-b", receive(1)).await.expect("receive");
    broker
        .ack("fan-b", receipts(&got))
        .await
        .expect("ack fan-0");
}

/// churn: ids remembered, most acked, the log trimmed behind them (a window of
/// 40 s: a dedup queue trims at most every window / 8, at least 5 s).
async fn write_churn(broker: &Broker, dir: &Path) {
    let churn = QueueOptions {
        dedup_window_ms: Some(40_000),
        ..QueueOptions::default()
    };
    broker.declare("churn", churn).await.expect("declare");
    for i in 0..120 {
        broker
            .send(
                "churn",
                vec![message(
                    &format!("c-{i}"),
                    &format!("churn {i:03} {}", "x".repeat(40)),
                )],
            )
            .await
            .expect("send");
    }
    let mut acked = 0;
    while acked < 110 {
        let got = broker
            .receive("churn", receive(110 - acked))
            .await
            .expect("receive");
        acked += got.len() as u32;
        broker.ack("churn", receipts(&got)).await.expect("ack");
    }
    // Housekeeping writes the checkpoint and trims (5 s after the queue started).
    tokio::time::sleep(Duration::from_secs(7)).await;
    let first = std::fs::read_dir(dir.join("queues/@6/log"))
        .expect("churn's log")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| Path::new(n).extension().is_some_and(|e| e == "log"))
        .min()
        .expect("a segment");
    assert_ne!(first, "00000000000000000000.log", "churn's log was trimmed");
}

/// Opens a copy of the fixture, as every build must.
async fn open_copy() -> (tempfile::TempDir, Broker) {
    let tmp = tempfile::tempdir().expect("tempdir");
    copy_dir(&fixture_dir(), tmp.path());
    let mut config = BrokerConfig::new(tmp.path());
    config.limits.disk_free_min_bytes = 0;
    let (broker, report) = Broker::open(config).await.expect("the fixture opens");
    assert_eq!(report.queues, 6, "{report:?}");
    (tmp, broker)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read fixture") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

fn bodies(got: &[Delivery]) -> Vec<String> {
    got.iter()
        .map(|d| String::from_utf8_lossy(&d.body).into_owned())
        .collect()
}

#[tokio::test]
async fn this_build_reads_the_v2_fixture_exactly() {
    let (_tmp, broker) = open_copy().await;
    let names: Vec<String> = broker.list().await.into_iter().map(|q| q.name).collect();
    assert_eq!(
        names,
        ["churn", "fan-a", "fan-b", "jobs", "jobs.dlq", "once"],
        "queue names from queues/@<id>/name"
    );

    // jobs: the acked one is gone, the leased and requeued ones are back with
    // their deliveries counted, priorities and headers kept.
    let stats = broker.info("jobs").await.expect("info").stats;
    assert_eq!(
        (
            stats.ready,
            stats.sent_total,
            stats.acked_total,
            stats.dead_lettered_total
        ),
        (4, 6, 1, 1),
        "{stats:?}"
    );
    let got = broker.receive("jobs", receive(10)).await.expect("receive");
    assert_eq!(
        bodies(&got),
        ["job body 0", "job body 2", "job body 3", "job body 5"],
        "FIFO within priority 0; job-5 waits for nothing (its group's head was acked)"
    );
    assert_eq!(
        got.iter().map(|d| d.delivery_count).collect::<Vec<_>>(),
        [2, 1, 1, 1],
        "job-0 was delivered once before"
    );
    assert_eq!(got[0].id, "job-0");
    assert_eq!(got[0].headers.get("x-n").map(String::as_str), Some("0"));
    assert_eq!(got[3].group.as_deref(), Some("g"));

    // jobs.dlq: the dead letter with its history (message record kind 2 facts).
    let dead = broker
        .receive("jobs.dlq", receive(10))
        .await
        .expect("receive");
    assert_eq!(bodies(&dead), ["job body 1"]);
    let info = dead[0].dead_letter.as_ref().expect("dead-letter facts");
    assert_eq!(
        (info.reason, info.source_queue.as_str(), info.delivery_count),
        (DeadLetterReason::Rejected, "jobs", 1)
    );
    assert_eq!(
        (info.exchange.as_str(), info.routing_keys.as_slice()),
        ("", &["jobs.dlq".to_owned()][..])
    );
    assert_eq!(info.deaths.len(), 1);
    assert_eq!(
        (
            info.deaths[0].queue.as_str(),
            info.deaths[0].reason,
            info.deaths[0].count
        ),
        ("jobs", DeadLetterReason::Rejected, 1)
    );
    assert_eq!(info.first_death.queue, "jobs");

    // The shared log (kind 4): each fanned message once per queue, the ack and the
    // refusal (a `declined` record) kept.
    let a = broker.receive("fan-a", receive(10)).await.expect("receive");
    assert_eq!(bodies(&a), ["fanned 0", "fanned 1", "fanned 2", "fanned 1"]);
    let b = broker.receive("fan-b", receive(10)).await.expect("receive");
    assert_eq!(
        bodies(&b),
        ["fanned 1", "fanned 2", "fanned 1"],
        "fan-0 was acked"
    );
    let once = broker.receive("once", receive(10)).await.expect("receive");
    assert_eq!(
        bodies(&once),
        ["fanned 0", "fanned 1", "fanned 2"],
        "the repeat was declined"
    );

    // churn: trimmed behind a totals checkpoint; the lifetime counters and the
    // remembered ids survive it.
    let stats = broker.info("churn").await.expect("info").stats;
    assert_eq!(
        (stats.ready, stats.sent_total, stats.acked_total),
        (10, 120, 110),
        "{stats:?}"
    );
    // (Its `dedup` records are decoded at replay; its ids left their 40 s window
    // long ago, so they are not asserted.)
    let left = broker.receive("churn", receive(20)).await.expect("receive");
    assert_eq!(left.len(), 10);
    assert_eq!(left[0].id, "c-110");

    // meta/routing.json.
    let bindings = broker.bindings(Some("fan"), None);
    assert_eq!(
        bindings
            .iter()
            .map(|b| b.destination.as_str())
            .collect::<Vec<_>>(),
        ["fan-a", "fan-b", "once"]
    );
    broker.shutdown().await;
}
