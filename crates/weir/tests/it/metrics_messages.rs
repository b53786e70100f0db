//! The broker-wide message counters on `/metrics` (`weir_global_messages_*`,
//! RabbitMQ's `rabbitmq_global_messages_*`): after publishes over AMQP with
//! confirms (one unroutable and returned, one unroutable and dropped) and HTTP, a
//! `basic.get` with no-ack, a consumer that acks one delivery and rejects another
//! (dead-lettered), an HTTP receive, and a redrive, each counter shows what was
//! done, and deleting the queues takes nothing off them.

use futures_lite::StreamExt as _;
use lapin::BasicProperties;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicPublishOptions, BasicQosOptions,
    BasicRejectOptions, ConfirmSelectOptions,
};
use lapin::types::FieldTable;
use serde_json::json;
use weir_testkit::Broker;

use crate::amqp::connect;
use crate::streams::call;

async fn global(broker: &Broker) -> String {
    let answer = broker
        .client()
        .get(format!("{}/metrics", broker.http_url()))
        .send()
        .await
        .expect("scrape");
    assert_eq!(answer.status(), 200);
    answer.text().await.unwrap()
}

fn counter(text: &str, name: &str) -> u64 {
    let series = format!("weir_global_messages_{name}_total ");
    text.lines()
        .find_map(|l| l.strip_prefix(series.as_str()))
        .unwrap_or_else(|| panic!("{series} in\n{text}"))
        .parse()
        .unwrap()
}

async fn publish(channel: &lapin::Channel, key: &str, mandatory: bool) {
    let confirm = channel
        .basic_publish(
            "".into(),
            key.into(),
            BasicPublishOptions {
                mandatory,
                ..BasicPublishOptions::default()
            },
            b"job",
            BasicProperties::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(confirm.is_ack(), "{key}: {confirm:?}");
}

/// Over AMQP with confirms: three messages to `jobs`, one unroutable returned, one
/// unroutable dropped; a `basic.get` with no-ack; a consumer acks one and rejects
/// the other.
async fn amqp_steps(broker: &Broker) -> lapin::Connection {
    let connection = connect(broker).await;
    let channel = connection.create_channel().await.unwrap();
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    for _ in 0..3 {
        publish(&channel, "jobs", false).await;
    }
    publish(&channel, "nowhere", true).await;
    publish(&channel, "nowhere", false).await;

    let got = channel
        .basic_get("jobs".into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap();
    assert!(got.is_some(), "basic.get found a message");
    channel
        .basic_qos(2, BasicQosOptions::default())
        .await
        .unwrap();
    let mut consumer = channel
        .basic_consume(
            "jobs".into(),
            "c".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let first = consumer.next().await.unwrap().unwrap();
    first.ack(BasicAckOptions::default()).await.unwrap();
    let second = consumer.next().await.unwrap().unwrap();
    second
        .reject(BasicRejectOptions { requeue: false })
        .await
        .unwrap();
    channel.close(200, "done".into()).await.unwrap();
    connection
}

/// Over HTTP: a message sent, received and acked; the rejected one redriven.
async fn http_steps(broker: &Broker) {
    // A fourth message, sent and received over HTTP, acked there.
    let (s, v) = call(
        broker,
        "POST",
        "/api/queues/jobs/messages",
        Some(json!({"body": "job"})),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = call(
        broker,
        "POST",
        "/api/queues/jobs/receive",
        Some(json!({"max": 1, "wait_ms": 5000})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let receipt = v["messages"][0]["receipt"].as_str().unwrap().to_owned();
    let (s, v) = call(
        broker,
        "POST",
        "/api/queues/jobs/ack",
        Some(json!({"receipts": [receipt]})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    // The rejected message reaches the dead-letter queue before the redrive.
    let mut dead = json!(null);
    for _ in 0..100 {
        let (_, v) = call(broker, "GET", "/api/queues/jobs/dead-letters", None).await;
        if v["messages"].as_array().is_some_and(|m| !m.is_empty()) {
            dead = v;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(dead["messages"].as_array().map(Vec::len), Some(1), "{dead}");
    let (s, v) = call(
        broker,
        "POST",
        "/api/queues/jobs/dead-letters/redrive",
        Some(json!({})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
}

#[tokio::test]
async fn message_counters_count_every_step_and_survive_queue_deletion() {
    let broker = Broker::start().await.expect("broker starts");
    let options = json!({"dead_letter_queue": "jobs.dlq"});
    let (s, v) = call(&broker, "PUT", "/api/queues/jobs", Some(options)).await;
    assert_eq!(s, 201, "{v}");
    let connection = amqp_steps(&broker).await;
    http_steps(&broker).await;
    let expected = [
        ("received", 6),
        ("routed", 4),
        ("unroutable_returned", 1),
        ("unroutable_dropped", 1),
        ("confirmed", 6),
        ("delivered_get_auto_ack", 1),
        ("delivered_consume_manual_ack", 2),
        ("delivered_get_manual_ack", 1),
        ("delivered_consume_auto_ack", 0),
        ("delivered", 4),
        ("redelivered", 0),
        ("acknowledged", 2),
        ("dead_lettered_rejected", 1),
        ("dead_lettered_expired", 0),
        ("redriven", 1),
    ];
    let text = global(&broker).await;
    for (name, value) in expected {
        assert_eq!(counter(&text, name), value, "{name} in\n{text}");
    }
    for queue in ["jobs", "jobs.dlq"] {
        let (s, v) = call(&broker, "DELETE", &format!("/api/queues/{queue}"), None).await;
        assert_eq!(s, 204, "{v}");
    }
    let text = global(&broker).await;
    for (name, value) in expected {
        assert_eq!(
            counter(&text, name),
            value,
            "{name} after deletion in\n{text}"
        );
    }
    connection.close(200, "bye".into()).await.unwrap();
}
