//! AMQP 0-9-1 with lapin against the real binary: the work-queue, routing and
//! confirm patterns, properties round trips, HTTP interop and errors. Its
//! `connect` and `declare` serve the other modules that speak AMQP; `weir bench`
//! runs are in `bench`, and kill -9 under AMQP load in `durability`.

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
pub(crate) async fn publish_confirmed(
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
        AMQPValue::LongString("delayed".into()),
    );
    let err = ok
        .queue_declare("odd".into(), QueueDeclareOptions::durable(), args)
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
