//! AMQP 0-9-1 with lapin against the real binary: the work-queue, routing and
//! confirm patterns, properties round trips, HTTP interop and errors.

use std::time::Duration;

use futures_lite::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicNackOptions, BasicPublishOptions,
    BasicQosOptions, BasicRejectOptions, ConfirmSelectOptions, ExchangeDeclareOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use serde_json::json;
use weir_testkit::Broker;

use crate::Api;

pub(crate) async fn connect(broker: &Broker) -> Connection {
    Connection::connect(&broker.amqp_url(), ConnectionProperties::default())
        .await
        .expect("AMQP connection")
}

pub(crate) async fn declare(channel: &Channel, queue: &str) {
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions::durable(),
            FieldTable::default(),
        )
        .await
        .expect("queue.declare");
}

/// Publishes with confirms; panics on a nack.
async fn publish_confirmed(
    channel: &Channel,
    exchange: &str,
    key: &str,
    body: &[u8],
    props: BasicProperties,
) {
    let confirm = channel
        .basic_publish(
            exchange.into(),
            key.into(),
            BasicPublishOptions::default(),
            body,
            props,
        )
        .await
        .expect("basic.publish")
        .await
        .expect("confirm");
    assert!(
        confirm.is_ack(),
        "publish to {exchange}/{key} was not acked"
    );
}

async fn next_delivery(consumer: &mut lapin::Consumer) -> lapin::message::Delivery {
    tokio::time::timeout(Duration::from_secs(30), consumer.next())
        .await
        .expect("a delivery within 30 s")
        .expect("consumer open")
        .expect("delivery")
}

/// Seed 001's work queue over lapin: confirms, prefetch 1, acks, and every
/// property back as published.
#[tokio::test]
async fn work_queue_with_confirms_prefetch_and_acks() {
    let broker = Broker::start().await.unwrap();
    let conn = connect(&broker).await;
    let producer = conn.create_channel().await.unwrap();
    declare(&producer, "task_queue").await;
    producer
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let mut headers = FieldTable::default();
    headers.insert("attempt".into(), AMQPValue::LongInt(1));
    headers.insert("source".into(), AMQPValue::LongString("unit-test".into()));
    let props = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_delivery_mode(2)
        .with_correlation_id("corr-1".into())
        .with_reply_to("replies".into())
        .with_message_id("task-1".into())
        .with_headers(headers);
    for i in 0..20 {
        publish_confirmed(
            &producer,
            "",
            "task_queue",
            format!("task {i}").as_bytes(),
            props.clone(),
        )
        .await;
    }
    let consumer_channel = conn.create_channel().await.unwrap();
    consumer_channel
        .basic_qos(1, BasicQosOptions::default())
        .await
        .unwrap();
    let mut consumer = consumer_channel
        .basic_consume(
            "task_queue".into(),
            "worker".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    for i in 0..20 {
        let d = next_delivery(&mut consumer).await;
        assert_eq!(d.data, format!("task {i}").as_bytes(), "FIFO");
        assert!(!d.redelivered);
        assert_eq!(d.routing_key.as_str(), "task_queue");
        assert_eq!(d.properties, props, "properties round-trip");
        d.ack(BasicAckOptions::default()).await.unwrap();
    }
    let api = Api::new(&broker);
    api.wait_stats("task_queue", "all acked", |s| s["acked_total"] == 20)
        .await;
}

/// A channel's publishes reach their queue in the order they were sent, also when
/// they come one at a time without confirms and the channel hands each to the queue
/// before the previous one is durable (they were taken in out of order once).
#[tokio::test]
async fn publishes_without_confirms_keep_their_order_in_the_queue() {
    let broker = Broker::start().await.unwrap();
    let conn = connect(&broker).await;
    let ch = conn.create_channel().await.unwrap();
    declare(&ch, "ordered").await;
    for i in 0..500 {
        let _confirm = ch
            .basic_publish(
                "".into(),
                "ordered".into(),
                BasicPublishOptions::default(),
                format!("{i}").as_bytes(),
                BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .expect("basic.publish");
        if i % 7 == 0 {
            // Let the broker read this one on its own.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    let api = Api::new(&broker);
    api.wait_stats("ordered", "all 500 in", |s| s["ready"] == 500)
        .await;
    let mut consumer = ch
        .basic_consume(
            "ordered".into(),
            "reader".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    for i in 0..500 {
        let d = next_delivery(&mut consumer).await;
        assert_eq!(
            String::from_utf8_lossy(&d.data),
            i.to_string(),
            "message {i} in publish order"
        );
    }
}

/// Get, get-empty, reject with requeue (redelivered), nack without requeue (gone),
/// and a channel closed with a message unacked (requeued, redelivered).
#[tokio::test]
async fn get_reject_nack_and_requeue_on_close() {
    let broker = Broker::start().await.unwrap();
    let conn = connect(&broker).await;
    let ch = conn.create_channel().await.unwrap();
    declare(&ch, "jobs").await;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    assert!(
        ch.basic_get("jobs".into(), BasicGetOptions::default())
            .await
            .unwrap()
            .is_none()
    );
    for body in ["a", "b"] {
        publish_confirmed(&ch, "", "jobs", body.as_bytes(), BasicProperties::default()).await;
    }
    let a = ch
        .basic_get("jobs".into(), BasicGetOptions::default())
        .await
        .unwrap()
        .expect("a");
    assert_eq!(a.delivery.data, b"a");
    assert_eq!(a.message_count, 1);
    a.delivery
        .reject(BasicRejectOptions { requeue: true })
        .await
        .unwrap();
    let a = ch
        .basic_get("jobs".into(), BasicGetOptions::default())
        .await
        .unwrap()
        .expect("a again");
    assert_eq!(a.delivery.data, b"a");
    assert!(a.delivery.redelivered, "a requeued message is redelivered");
    a.delivery
        .nack(BasicNackOptions {
            requeue: false,
            multiple: false,
        })
        .await
        .unwrap();
    // b: taken and left unacked; closing the channel puts it back.
    let other = conn.create_channel().await.unwrap();
    let b = other
        .basic_get("jobs".into(), BasicGetOptions::default())
        .await
        .unwrap()
        .expect("b");
    assert_eq!(b.delivery.data, b"b");
    other.close(200, "bye".into()).await.unwrap();
    let b = ch
        .basic_get("jobs".into(), BasicGetOptions::default())
        .await
        .unwrap()
        .expect("b again");
    assert_eq!(b.delivery.data, b"b");
    assert!(b.delivery.redelivered);
    b.delivery.ack(BasicAckOptions::default()).await.unwrap();
    assert!(
        ch.basic_get("jobs".into(), BasicGetOptions::default())
            .await
            .unwrap()
            .is_none()
    );
}

/// Fanout and topic exchanges over AMQP; a mandatory publish that routes nowhere
/// comes back with basic.return.
#[tokio::test]
async fn exchanges_route_and_unroutable_mandatory_publishes_are_returned() {
    let broker = Broker::start().await.unwrap();
    let conn = connect(&broker).await;
    let ch = conn.create_channel().await.unwrap();
    ch.exchange_declare(
        "logs".into(),
        ExchangeKind::Fanout,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.exchange_declare(
        "topics".into(),
        ExchangeKind::Topic,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    for (q, exchange, key) in [
        ("l1", "logs", ""),
        ("l2", "logs", ""),
        ("errors", "topics", "*.error"),
        ("all", "topics", "#"),
    ] {
        declare(&ch, q).await;
        ch.queue_bind(
            q.into(),
            exchange.into(),
            key.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    }
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    publish_confirmed(&ch, "logs", "", b"to everyone", BasicProperties::default()).await;
    publish_confirmed(
        &ch,
        "topics",
        "disk.error",
        b"disk",
        BasicProperties::default(),
    )
    .await;
    publish_confirmed(
        &ch,
        "topics",
        "disk.info",
        b"info",
        BasicProperties::default(),
    )
    .await;
    let api = Api::new(&broker);
    for (q, n) in [("l1", 1), ("l2", 1), ("errors", 1), ("all", 2)] {
        api.wait_stats(q, "routed messages", |s| s["ready"] == n)
            .await;
    }
    ch.exchange_declare(
        "nowhere".into(),
        ExchangeKind::Direct,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let confirm = ch
        .basic_publish(
            "nowhere".into(),
            "no.binding".into(),
            BasicPublishOptions {
                mandatory: true,
                ..BasicPublishOptions::default()
            },
            b"lost",
            BasicProperties::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    // lapin reports the returned message with the confirm.
    let returned = confirm.take_message().expect("basic.return");
    assert_eq!(returned.data, b"lost");
    assert_eq!(returned.reply_code, 312);
}

/// A message sent over HTTP is consumed over AMQP and the other way round, with
/// headers.
#[tokio::test]
async fn http_and_amqp_share_one_broker() {
    let broker = Broker::start().await.unwrap();
    let api = Api::new(&broker);
    api.create("bridge", json!({})).await;
    api.send(
        "bridge",
        json!({"body": "from http", "headers": {"k": "v"}, "id": "h-1"}),
    )
    .await;
    let conn = connect(&broker).await;
    let ch = conn.create_channel().await.unwrap();
    let got = ch
        .basic_get("bridge".into(), BasicGetOptions::default())
        .await
        .unwrap()
        .expect("message");
    assert_eq!(got.delivery.data, b"from http");
    let headers = got.delivery.properties.headers().clone().expect("headers");
    assert_eq!(
        headers.inner().get("k"),
        Some(&AMQPValue::LongString("v".into()))
    );
    assert_eq!(
        got.delivery
            .properties
            .message_id()
            .as_ref()
            .map(ShortString::as_str),
        Some("h-1")
    );
    got.delivery.ack(BasicAckOptions::default()).await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let mut headers = FieldTable::default();
    headers.insert("k".into(), AMQPValue::LongString("from amqp".into()));
    publish_confirmed(
        &ch,
        "",
        "bridge",
        b"to http",
        BasicProperties::default().with_headers(headers),
    )
    .await;
    let m = api.receive("bridge", "max=1").await;
    assert_eq!(m[0]["body"], "to http");
    assert_eq!(m[0]["headers"]["k"], "from amqp");
}

/// Errors close the channel (or the connection) with the spec's codes, and only it.
#[tokio::test]
async fn errors_close_the_channel_with_the_right_code() {
    let broker = Broker::start().await.unwrap();
    let conn = connect(&broker).await;
    let ch = conn.create_channel().await.unwrap();
    let err = ch
        .queue_declare(
            "missing".into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .expect_err("passive declare of a missing queue");
    assert!(err.to_string().contains("NOT_FOUND"), "{err}");
    // Another channel on the same connection is unaffected.
    let ok = conn.create_channel().await.unwrap();
    declare(&ok, "fine").await;
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("stream".into()),
    );
    let err = ok
        .queue_declare("streamy".into(), QueueDeclareOptions::durable(), args)
        .await
        .expect_err("unsupported queue type");
    assert!(err.to_string().contains("PRECONDITION_FAILED"), "{err}");
    let third = conn.create_channel().await.unwrap();
    third
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let published = third
        .basic_publish(
            "no-such-exchange".into(),
            "k".into(),
            BasicPublishOptions::default(),
            b"x",
            BasicProperties::default(),
        )
        .await;
    let failed = match published {
        Err(_) => true,
        Ok(confirm) => confirm.await.is_err(),
    };
    assert!(
        failed,
        "publishing to a missing exchange closes the channel"
    );
    // The connection lives on.
    let last = conn.create_channel().await.unwrap();
    declare(&last, "still-ok").await;
}

/// `weir bench amqp` runs its workload against the broker and verifies it: every
/// message received once.
#[tokio::test]
async fn bench_amqp_verifies_its_run() {
    let broker = Broker::start().await.unwrap();
    let report = bench_json(&[
        "amqp",
        "--url",
        &broker.amqp_url(),
        "--count",
        "2000",
        "--size",
        "64",
        "--window",
        "100",
    ])
    .await;
    assert_eq!(report["verified"], true, "{report}");
    assert_eq!(report["received"], 2000);
    assert_eq!(report["duplicates"], 0);
    assert!(report["latency_ms"]["p50"].as_f64().is_some(), "{report}");
    // --compare: the same workload against two brokers, alternating, with ratios.
    let other = Broker::start().await.unwrap();
    let c = bench_json(&[
        "amqp",
        "--url",
        &broker.amqp_url(),
        "--compare",
        &other.amqp_url(),
        "--rounds",
        "2",
        "--count",
        "1000",
        "--size",
        "64",
    ])
    .await;
    let rounds = c["rounds"].as_array().expect("rounds");
    assert_eq!(rounds.len(), 2, "{c}");
    for r in rounds {
        assert_eq!(r["a"]["verified"], true, "{c}");
        assert_eq!(r["b"]["verified"], true, "{c}");
        assert_eq!(r["b"]["received"], 1000, "{c}");
    }
    assert!(
        c["ratio_a_over_b"]["publish msg/s"].as_f64().unwrap() > 0.0,
        "{c}"
    );
}

/// Runs `weir bench ARGS --json` and returns its report; fails the test unless it
/// succeeded.
async fn bench_json(args: &[&str]) -> serde_json::Value {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_weir"))
        .arg("bench")
        .args(args)
        .arg("--json")
        .output()
        .await
        .expect("weir bench runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{args:?}: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).expect("one JSON object")
}

/// `--queues` spreads the load over several queues; `--consumers 0` leaves a
/// backlog that `--producers 0` then drains, verified against the filling run.
#[tokio::test]
async fn bench_amqp_spreads_over_queues_and_drains_a_backlog() {
    let broker = Broker::start().await.unwrap();
    let url = broker.amqp_url();
    let spread = bench_json(&[
        "amqp",
        "--url",
        &url,
        "--producers",
        "2",
        "--consumers",
        "2",
        "--queues",
        "2",
        "--count",
        "2000",
        "--size",
        "64",
    ])
    .await;
    assert_eq!(spread["verified"], true, "{spread}");
    assert_eq!(spread["queues"], 2, "{spread}");
    let api = Api::new(&broker);
    for q in ["weir-bench-amqp-0", "weir-bench-amqp-1"] {
        let stats = api.stats(q).await;
        assert!(
            stats["acked_total"].as_u64() > Some(0),
            "{q} took part: {stats}"
        );
    }
    let fill = bench_json(&[
        "amqp",
        "--url",
        &url,
        "--consumers",
        "0",
        "--count",
        "3000",
        "--size",
        "64",
        "--queue",
        "backlog",
    ])
    .await;
    assert_eq!(fill["verified"], true, "{fill}");
    assert_eq!(api.stats("backlog").await["ready"], 3000);
    let drain = bench_json(&[
        "amqp",
        "--url",
        &url,
        "--producers",
        "0",
        "--count",
        "3000",
        "--queue",
        "backlog",
    ])
    .await;
    assert_eq!(drain["verified"], true, "{drain}");
    assert_eq!(drain["received"], 3000, "{drain}");
    assert_eq!(api.stats("backlog").await["ready"], 0);
}

/// `weir bench http` sends and receives everything over HTTP and, given the broker's
/// pid, reports its CPU per message and peak memory.
#[tokio::test]
async fn bench_http_moves_everything_and_reports_the_brokers_cpu() {
    let broker = Broker::start().await.unwrap();
    let pid = broker.pid().expect("the broker runs").to_string();
    let report = bench_json(&[
        "http",
        "--server",
        &broker.http_url(),
        "--count",
        "2000",
        "--batch",
        "100",
        "--producers",
        "2",
        "--consumers",
        "2",
        "--size",
        "256",
        "--pid",
        &pid,
    ])
    .await;
    assert_eq!(report["send"]["messages"], 2000, "{report}");
    assert_eq!(report["receive_ack"]["messages"], 2000, "{report}");
    assert_eq!(report["verified"], true, "{report}");
    assert_eq!(report["received"], 2000, "{report}");
    assert_eq!(report["duplicates"], 0, "{report}");
    assert!(
        report["broker_cpu_us_per_message"].as_f64() > Some(0.0),
        "{report}"
    );
    assert!(
        report["broker_peak_rss_bytes"].as_u64() > Some(0),
        "{report}"
    );
    assert!(
        report["client_cpu_us_per_message"].as_f64().is_some(),
        "{report}"
    );
}

/// `weir bench http --rate` paces the sends and still moves and verifies everything.
#[tokio::test]
async fn bench_http_at_a_fixed_rate_moves_everything() {
    let broker = Broker::start().await.unwrap();
    let report = bench_json(&[
        "http",
        "--server",
        &broker.http_url(),
        "--rate",
        "2000",
        "--count",
        "600",
        "--batch",
        "20",
        "--producers",
        "3",
        "--size",
        "64",
    ])
    .await;
    assert_eq!(report["verified"], true, "{report}");
    assert_eq!(report["send"]["messages"], 600, "{report}");
    assert_eq!(report["receive_ack"]["messages"], 600, "{report}");
}

/// `weir bench http --compare` runs the workload against a second broker too and
/// sets them side by side with ratios.
#[tokio::test]
async fn bench_http_compares_two_brokers() {
    let a = Broker::start().await.unwrap();
    let b = Broker::start().await.unwrap();
    let report = bench_json(&[
        "http",
        "--server",
        &a.http_url(),
        "--compare",
        &b.http_url(),
        "--rounds",
        "1",
        "--count",
        "500",
        "--batch",
        "50",
        "--size",
        "64",
    ])
    .await;
    let round = &report["rounds"][0];
    for side in ["a", "b"] {
        assert_eq!(round[side]["verified"], true, "{report}");
        assert_eq!(round[side]["receive_ack"]["messages"], 500, "{report}");
    }
    assert!(
        report["ratio_a_over_b"]["send msg/s"].as_f64() > Some(0.0),
        "{report}"
    );
}

/// A `weir bench http` run that receives messages it did not send (a queue left
/// holding an earlier run's) says it is not verified, and exits non-zero.
#[tokio::test]
async fn bench_http_says_when_a_run_is_not_verified() {
    let broker = Broker::start().await.unwrap();
    let server = broker.http_url();
    let common = ["--server", &server, "--queue", "held", "--batch", "50"];
    let fill = bench_json(
        &[
            &["http"][..],
            &common,
            &["--count", "100", "--consumers", "0", "--keep"],
        ]
        .concat(),
    )
    .await;
    assert_eq!(fill["send"]["messages"], 100, "{fill}");
    assert_eq!(fill["verified"], serde_json::Value::Null, "{fill}");

    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["bench", "http"])
        .args(common)
        .args(["--count", "200", "--json"])
        .output()
        .await
        .expect("weir bench runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "exits non-zero: {stdout}");
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    assert_eq!(report["verified"], false, "{report}");
    assert_eq!(report["received"], 300, "{report}");
    assert_eq!(
        report["duplicates"], 100,
        "sequence numbers 0..100 came twice: {report}"
    );
}

/// `weir bench connections` holds idle connections with heartbeats and reports the
/// broker's memory per connection.
#[tokio::test]
async fn bench_connections_holds_idle_connections_with_heartbeats() {
    let broker = Broker::start().await.unwrap();
    let pid = broker.pid().expect("the broker runs").to_string();
    let report = bench_json(&[
        "connections",
        "--url",
        &broker.amqp_url(),
        "--count",
        "50",
        "--heartbeat",
        "1",
        "--hold",
        "3",
        "--pid",
        &pid,
    ])
    .await;
    assert_eq!(report["opened"], 50, "{report}");
    assert_eq!(report["dropped_while_held"], 0, "{report}");
    assert_eq!(report["all_held"], true, "{report}");
    assert!(
        report["broker_bytes_per_connection"].as_f64().is_some(),
        "{report}"
    );
}

/// RabbitMQ's built-in exchanges exist, re-declare as they are, and route.
#[tokio::test]
async fn built_in_amq_exchanges_exist_and_route() {
    let broker = Broker::start().await.unwrap();
    let conn = connect(&broker).await;
    let ch = conn.create_channel().await.unwrap();
    // RabbitMQ's built-in exchanges exist, re-declare as they are, and route.
    ch.exchange_declare(
        "amq.topic".into(),
        ExchangeKind::Topic,
        ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        },
        FieldTable::default(),
    )
    .await
    .expect("amq.topic is built in");
    declare(&ch, "via-amq").await;
    ch.queue_bind(
        "via-amq".into(),
        "amq.topic".into(),
        "a.*".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    publish_confirmed(
        &ch,
        "amq.topic",
        "a.b",
        b"built in",
        BasicProperties::default(),
    )
    .await;
    let api = Api::new(&broker);
    api.wait_stats("via-amq", "routed through amq.topic", |s| s["ready"] == 1)
        .await;
    let err = ch
        .exchange_delete(
            "amq.direct".into(),
            lapin::options::ExchangeDeleteOptions::default(),
        )
        .await
        .expect_err("built-in exchanges cannot be deleted");
    assert!(err.to_string().contains("ACCESS_REFUSED"), "{err}");
}

/// Publishes without confirms, then the connection closed at once: everything the
/// broker received before the close is enqueued (as RabbitMQ does).
#[tokio::test]
async fn publishes_just_before_a_close_are_kept() {
    let broker = Broker::start().await.unwrap();
    let api = Api::new(&broker);
    for round in 0..5 {
        let queue = format!("last-words-{round}");
        let conn = connect(&broker).await;
        let ch = conn.create_channel().await.unwrap();
        declare(&ch, &queue).await;
        for i in 0..50 {
            ch.basic_publish(
                "".into(),
                queue.as_str().into(),
                BasicPublishOptions::default(),
                format!("m{i}").as_bytes(),
                BasicProperties::default(),
            )
            .await
            .unwrap();
        }
        conn.close(200, "bye".into()).await.unwrap();
        api.wait_stats(&queue, "every publish before the close", |s| {
            s["ready"] == 50
        })
        .await;
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

/// A burst of publishes larger than one broker call takes (`max_batch_messages`,
/// 1000) is kept whole, with and without confirms. (The channel's worker gathers
/// what is pipelined; it once handed the broker more than its limit, which refused
/// the lot: silently without confirms.)
#[tokio::test]
async fn a_burst_larger_than_one_broker_batch_is_kept_whole() {
    let broker = Broker::start().await.unwrap();
    let conn = connect(&broker).await;
    let ch = conn.create_channel().await.unwrap();
    declare(&ch, "burst").await;
    for i in 0..5_000u32 {
        ch.basic_publish(
            "".into(),
            "burst".into(),
            BasicPublishOptions::default(),
            &i.to_be_bytes(),
            BasicProperties::default(),
        )
        .await
        .unwrap();
    }
    // A passive declare runs after the channel's publishes.
    let q = ch
        .queue_declare(
            "burst".into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    assert_eq!(q.message_count(), 5_000);
    let confirming = conn.create_channel().await.unwrap();
    confirming
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let mut confirms = Vec::new();
    for i in 0..5_000u32 {
        confirms.push(
            confirming
                .basic_publish(
                    "".into(),
                    "burst".into(),
                    BasicPublishOptions::default(),
                    &i.to_be_bytes(),
                    BasicProperties::default(),
                )
                .await
                .unwrap(),
        );
    }
    for c in confirms {
        assert!(c.await.unwrap().is_ack());
    }
    let api = Api::new(&broker);
    api.wait_stats("burst", "all 10,000", |s| s["ready"] == 10_000)
        .await;
}
