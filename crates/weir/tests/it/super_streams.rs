//! A partitioned stream over AMQP, RabbitMQ's super-stream convention (issue 21):
//! stream `orders` of P partitions is a direct exchange `orders` whose key "N"
//! routes to the stream queue `orders-N`, partition N, with pika and lapin; the
//! exchange and its bindings survive kill -9, follow the stream's growth and go
//! with it.

use lapin::options::{BasicAckOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use serde_json::json;
use weir_testkit::Broker;

use crate::amqp_streams::{consume_from_first, next_delivery};
use crate::streams::call as http;

/// Publishes `body` to exchange `orders` with routing key `key`, confirmed.
async fn publish(ch: &Channel, key: &str, body: &str) {
    let confirm = ch
        .basic_publish(
            "orders".into(),
            key.into(),
            BasicPublishOptions::default(),
            body.as_bytes(),
            BasicProperties::default(),
        )
        .await
        .expect("publish")
        .await
        .expect("confirm");
    assert!(confirm.is_ack(), "{key}: {confirm:?}");
}

/// The bodies of partition `p` of `orders`, over HTTP.
async fn bodies(broker: &Broker, p: u32) -> Vec<String> {
    let path = format!("/api/streams/orders/messages?partition={p}&from=first&max=100");
    let (s, read) = http(broker, "GET", &path, None).await;
    assert_eq!(s, 200, "{read}");
    read["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["body"].as_str().expect("a text body").to_owned())
        .collect()
}

async fn channel(broker: &Broker) -> (Connection, Channel) {
    let conn = Connection::connect(&broker.amqp_url(), ConnectionProperties::default())
        .await
        .expect("connect");
    let ch = conn.create_channel().await.expect("channel");
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirms");
    (conn, ch)
}

#[tokio::test]
async fn a_partitioned_stream_is_a_super_stream_over_amqp() {
    let mut broker = Broker::start().await.expect("broker starts");
    let (s, _) = http(
        &broker,
        "PUT",
        "/api/streams/orders",
        Some(json!({"partitions": 3})),
    )
    .await;
    assert_eq!(s, 201);
    let out = crate::pika::run(&broker, "patterns.py", &["super_streams"]).await;
    assert!(out.contains("OK"), "{out}");
    // What pika published to key N is in partition N, for HTTP readers too.
    assert_eq!(bodies(&broker, 2).await, ["p2-0", "p2-1", "p2-2"]);
    assert_eq!(bodies(&broker, 0).await, ["p0-0"]);

    // The exchange and its bindings are durable routing state.
    broker.kill9().await.expect("kill -9");
    broker.restart().await.expect("restart");
    let (_conn, ch) = channel(&broker).await;
    publish(&ch, "1", "after restart").await;
    assert_eq!(bodies(&broker, 1).await, ["p1-0", "p1-1", "after restart"]);

    // Growing the stream adds the new partition's binding and queue name.
    let (s, _) = http(
        &broker,
        "PUT",
        "/api/streams/orders",
        Some(json!({"partitions": 4})),
    )
    .await;
    assert_eq!(s, 200);
    publish(&ch, "3", "in the new partition").await;
    assert_eq!(bodies(&broker, 3).await, ["in the new partition"]);
    ch.basic_qos(5, BasicQosOptions::default())
        .await
        .expect("qos");
    let mut consumer = consume_from_first(&ch, "orders-3", "reader", FieldTable::default()).await;
    let d = next_delivery(&mut consumer).await;
    assert_eq!(d.data, b"in the new partition");
    d.ack(BasicAckOptions::default()).await.expect("ack");

    // Deleting the stream takes its exchange and partition names with it.
    let (s, _) = http(&broker, "DELETE", "/api/streams/orders", None).await;
    assert_eq!(s, 204);
    let (s, body) = http(&broker, "GET", "/api/exchanges/orders", None).await;
    assert_eq!(s, 404, "{body}");
    let (s, body) = http(&broker, "PUT", "/api/queues/orders-1", Some(json!({}))).await;
    assert_eq!(s, 201, "the name is free again: {body}");
}
