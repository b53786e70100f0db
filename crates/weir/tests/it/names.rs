//! Queue and exchange names as RabbitMQ takes them: any UTF-8 short string, over
//! AMQP and over HTTP (URL-encoded in paths), kept through a kill -9.

use futures_lite::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions,
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, ExchangeKind};
use serde_json::{Value, json};
use weir_testkit::Broker;

use crate::Api;

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn encoded(name: &str) -> String {
    name.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

const NAMES: [&str; 8] = [
    "celery@host.celery.pidbox",
    "a/b?c#d",
    "../../etc",
    "Q",
    "q",
    "caf\u{e9}",
    "cafe\u{301}",
    "with space ✓",
];

/// Creates each of `names` over HTTP with one message whose body is its name, and
/// checks the refusals (over 255 bytes, `amq.`).
async fn create_over_http(api: &Api, names: &[&str]) {
    for name in names {
        let (status, body) = api
            .call(
                "PUT",
                &format!("/api/queues/{}", encoded(name)),
                Some(json!({})),
            )
            .await;
        assert_eq!(status, 201, "PUT {name:?}: {body}");
        let (status, body) = api
            .call(
                "POST",
                &format!("/api/queues/{}/messages", encoded(name)),
                Some(json!({"body": name})),
            )
            .await;
        assert_eq!(status, 201, "send to {name:?}: {body}");
    }
    let (status, body) = api
        .call(
            "PUT",
            &format!("/api/queues/{}", "x".repeat(256)),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "invalid_name", "{body}");
    let (status, body) = api
        .call("PUT", "/api/queues/amq.mine", Some(json!({})))
        .await;
    assert_eq!(status, 403, "amq. names are the broker's: {body}");
}

const EXCHANGE: &str = "celery.pidbox/ünï ✓";
const QUEUE: &str = "worker@höst.celery.pidbox";

/// Over AMQP: an exchange and a queue with such names, a binding, a confirmed
/// publish; and the queue declared over HTTP read over AMQP.
async fn route_over_amqp(broker: &Broker) {
    let connection = crate::amqp::connect(broker).await;
    let channel = connection.create_channel().await.expect("channel");
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirms");
    channel
        .exchange_declare(
            EXCHANGE.into(),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("exchange.declare");
    channel
        .queue_declare(
            QUEUE.into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("queue.declare");
    channel
        .queue_bind(
            QUEUE.into(),
            EXCHANGE.into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("queue.bind");
    let confirm = channel
        .basic_publish(
            EXCHANGE.into(),
            "".into(),
            BasicPublishOptions::default(),
            b"ping",
            BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .expect("publish")
        .await
        .expect("confirm");
    assert!(confirm.is_ack());
    let got = channel
        .basic_get(
            "celery@host.celery.pidbox".into(),
            BasicGetOptions { no_ack: false },
        )
        .await
        .expect("basic.get")
        .expect("the message sent over HTTP");
    assert_eq!(got.delivery.data, b"celery@host.celery.pidbox");
    got.delivery
        .nack(lapin::options::BasicNackOptions {
            requeue: true,
            ..Default::default()
        })
        .await
        .expect("requeue");
    connection.close(200, "bye".into()).await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_short_string_name_works_over_amqp_and_http_and_survives_kill_9() {
    let mut broker = Broker::start().await.expect("broker");
    let long = "ñ".repeat(127) + "x";
    let names: Vec<&str> = NAMES.iter().copied().chain([long.as_str()]).collect();
    create_over_http(&Api::new(&broker), &names).await;
    route_over_amqp(&broker).await;

    broker.kill9().await.expect("kill -9");
    broker.restart().await.expect("restart");
    let api = Api::new(&broker);
    let (_, listed) = api.call("GET", "/api/queues", None).await;
    let listed: Vec<&str> = listed["queues"]
        .as_array()
        .expect("queues")
        .iter()
        .filter_map(|q| q["name"].as_str())
        .collect();
    for name in names.iter().chain([&QUEUE]) {
        assert!(listed.contains(name), "{name:?} is gone: {listed:?}");
    }
    for name in &names {
        let (status, body) = api
            .call(
                "POST",
                &format!("/api/queues/{}/receive?max=10", encoded(name)),
                None,
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let bodies: Vec<&str> = body["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .filter_map(|m| m["body"].as_str())
            .collect();
        assert_eq!(bodies, vec![*name], "queue {name:?} after kill -9");
    }
    let connection = crate::amqp::connect(&broker).await;
    let channel = connection.create_channel().await.expect("channel");
    let mut consumer = channel
        .basic_consume(
            QUEUE.into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume");
    let delivery = tokio::time::timeout(std::time::Duration::from_secs(10), consumer.next())
        .await
        .expect("a delivery")
        .expect("stream")
        .expect("delivery");
    assert_eq!(delivery.data, b"ping");
    assert_eq!(delivery.exchange.as_str(), EXCHANGE);
    let (status, body): (u16, Value) = api
        .call(
            "GET",
            &format!("/api/exchanges/{}", encoded(EXCHANGE)),
            None,
        )
        .await;
    assert_eq!(status, 200, "the exchange is kept: {body}");
}
