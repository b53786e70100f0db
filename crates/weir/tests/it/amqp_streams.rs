//! Streams over AMQP, the RabbitMQ way (issue 21), with pika and lapin: declared
//! with `x-queue-type=stream`, appended to through the default exchange and a
//! bound exchange with confirms, consumed from an `x-stream-offset` with the offset
//! in each delivery, RabbitMQ's refusals, and one object across protocols (HTTP
//! appends read over AMQP and the other way round).

use futures_lite::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use serde_json::{Value, json};
use weir_testkit::Broker;

use crate::streams::call as http;

/// Consumes stream `queue` on `ch` under `tag` from its first record, with
/// `args` besides `x-stream-offset` (the channel's prefetch is the caller's).
pub(crate) async fn consume_from_first(
    ch: &Channel,
    queue: &str,
    tag: &str,
    mut args: FieldTable,
) -> lapin::Consumer {
    args.insert(
        "x-stream-offset".into(),
        AMQPValue::LongString("first".into()),
    );
    ch.basic_consume(
        queue.into(),
        tag.into(),
        BasicConsumeOptions::default(),
        args,
    )
    .await
    .expect("consume")
}

/// The next delivery of `consumer`, within 10 s.
pub(crate) async fn next_delivery(consumer: &mut lapin::Consumer) -> Delivery {
    tokio::time::timeout(std::time::Duration::from_secs(10), consumer.next())
        .await
        .expect("a delivery in time")
        .expect("a delivery")
        .expect("no error")
}

#[tokio::test]
async fn pika_declares_publishes_to_and_consumes_a_stream_as_from_rabbitmq() {
    let broker = Broker::start().await.expect("broker starts");
    let week = json!({"max_age_ms": 604_800_000});
    let (s, _) = http(&broker, "PUT", "/api/streams/events", Some(week)).await;
    assert_eq!(s, 201);
    let (s, _) = http(
        &broker,
        "POST",
        "/api/streams/events/messages",
        Some(json!({"body": "from http", "headers": {"source": "http"}})),
    )
    .await;
    assert_eq!(s, 201);
    let out = crate::pika::run(&broker, "patterns.py", &["streams"]).await;
    assert!(out.contains("OK"), "{out}");
    // What pika published is read over HTTP, with its string headers.
    let (_, read) = http(
        &broker,
        "GET",
        "/api/streams/events/messages?from=1&max=1",
        None,
    )
    .await;
    let record = &read["messages"][0];
    assert_eq!(record["body"], "m0");
    assert!(
        record["headers"].get("x-weir-properties").is_none(),
        "{record}"
    );
}

#[tokio::test]
async fn lapin_reads_a_stream_from_an_offset_with_confirmed_appends() {
    let broker = Broker::start().await.expect("broker starts");
    let conn = Connection::connect(&broker.amqp_url(), ConnectionProperties::default())
        .await
        .expect("connect");
    let ch = conn.create_channel().await.expect("channel");
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString(LongString::from("stream")),
    );
    args.insert("x-max-length-bytes".into(), AMQPValue::LongLongInt(1 << 30));
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    ch.queue_declare("log".into(), durable, args.clone())
        .await
        .expect("declare a stream");
    ch.queue_declare("log".into(), durable, args)
        .await
        .expect("again, identical");
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirms");
    for i in 0..20 {
        let confirm = ch
            .basic_publish(
                "".into(),
                "log".into(),
                BasicPublishOptions::default(),
                format!("r{i}").as_bytes(),
                BasicProperties::default(),
            )
            .await
            .expect("publish")
            .await
            .expect("confirm");
        assert!(confirm.is_ack());
    }
    ch.basic_qos(10, BasicQosOptions::default())
        .await
        .expect("qos");
    let mut consume_args = FieldTable::default();
    consume_args.insert("x-stream-offset".into(), AMQPValue::LongLongInt(15));
    let mut consumer = ch
        .basic_consume(
            "log".into(),
            "reader".into(),
            BasicConsumeOptions::default(),
            consume_args,
        )
        .await
        .expect("consume");
    for expected in 15..20 {
        let delivery = tokio::time::timeout(std::time::Duration::from_secs(10), consumer.next())
            .await
            .expect("a delivery in time")
            .expect("a delivery")
            .expect("no error");
        assert_eq!(delivery.data, format!("r{expected}").as_bytes());
        let headers = delivery.properties.headers().clone().expect("headers");
        let offset = headers.inner().get("x-stream-offset").cloned();
        assert_eq!(offset, Some(AMQPValue::LongLongInt(expected)));
        delivery.ack(BasicAckOptions::default()).await.expect("ack");
    }
    // Acks changed nothing: the records are all still there for HTTP readers.
    let (_, shown) = http(&broker, "GET", "/api/streams/log", None).await;
    assert_eq!(shown["partition_stats"][0]["next_offset"], 20);
    assert_eq!(shown["max_bytes"], 1 << 30);
}

#[tokio::test]
async fn stream_filtering_delivers_the_records_asked_for() {
    let broker = Broker::start().await.expect("broker starts");
    for (body, filter) in [
        ("eu-1", Some("eu")),
        ("us-1", Some("us")),
        ("none", None),
        ("eu-2", Some("eu")),
    ] {
        let mut record = json!({"body": body});
        if let Some(f) = filter {
            record["headers"] = json!({"x-stream-filter-value": f});
        }
        if body == "eu-1" {
            let (s, _) = http(&broker, "PUT", "/api/streams/regions", Some(json!({}))).await;
            assert_eq!(s, 201);
        }
        let (s, _) = http(
            &broker,
            "POST",
            "/api/streams/regions/messages",
            Some(record),
        )
        .await;
        assert_eq!(s, 201);
    }
    let conn = Connection::connect(&broker.amqp_url(), ConnectionProperties::default())
        .await
        .expect("connect");
    let ch = conn.create_channel().await.expect("channel");
    ch.basic_qos(10, BasicQosOptions::default())
        .await
        .expect("qos");
    for (tag, unfiltered, expected) in [
        ("eu", false, vec!["eu-1", "eu-2"]),
        ("eu+none", true, vec!["eu-1", "none", "eu-2"]),
    ] {
        let mut args = FieldTable::default();
        args.insert("x-stream-filter".into(), AMQPValue::LongString("eu".into()));
        args.insert(
            "x-stream-match-unfiltered".into(),
            AMQPValue::Boolean(unfiltered),
        );
        let mut consumer = consume_from_first(&ch, "regions", tag, args).await;
        let mut got = Vec::new();
        while got.len() < expected.len() {
            let d = next_delivery(&mut consumer).await;
            got.push(String::from_utf8(d.data.clone()).unwrap());
            d.ack(BasicAckOptions::default()).await.expect("ack");
        }
        assert_eq!(got, expected, "{tag}");
    }
}

/// Consumes `n` deliveries with offset tracking under consumer tag `tag` (and
/// `x-stream-filter` `filter`), acking each; answers their offsets.
async fn consume_tracked(broker: &Broker, tag: &str, filter: Option<&str>, n: usize) -> Vec<i64> {
    let conn = Connection::connect(&broker.amqp_url(), ConnectionProperties::default())
        .await
        .expect("connect");
    let ch = conn.create_channel().await.expect("channel");
    ch.basic_qos(5, BasicQosOptions::default())
        .await
        .expect("qos");
    let mut args = FieldTable::default();
    args.insert(
        "x-stream-automatic-offset-tracking".into(),
        AMQPValue::Boolean(true),
    );
    if let Some(filter) = filter {
        args.insert(
            "x-stream-filter".into(),
            AMQPValue::LongString(filter.into()),
        );
    }
    let mut consumer = consume_from_first(&ch, "tracked", tag, args).await;
    let mut offsets = Vec::new();
    while offsets.len() < n {
        let d = next_delivery(&mut consumer).await;
        let headers = d.properties.headers().clone().expect("headers");
        match headers.inner().get("x-stream-offset") {
            Some(AMQPValue::LongLongInt(o)) => offsets.push(*o),
            other => panic!("no offset: {other:?}"),
        }
        d.ack(BasicAckOptions::default()).await.expect("ack");
    }
    let _ = conn.close(200, "bye".into()).await;
    // The tracked offset is stored after the acks (off the connection's path):
    // wait until it shows, as the next consumer would see it.
    let want = offsets.last().map_or(0, |o| o + 1);
    let path = format!("/api/streams/tracked/groups/amqp-offset-tracking%2F{tag}");
    for _ in 0..200 {
        let (_, group) = http(broker, "GET", &path, None).await;
        if group["partitions"][0]["committed"].as_i64() == Some(want) {
            return offsets;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the tracked offset of {tag} never reached {want}");
}

#[tokio::test]
async fn a_tracking_consumer_resumes_after_its_acks_also_after_kill_9() {
    let mut broker = Broker::start().await.expect("broker starts");
    let (s, _) = http(&broker, "PUT", "/api/streams/tracked", Some(json!({}))).await;
    assert_eq!(s, 201);
    let batch: Vec<Value> = (0..10).map(|i| json!({"body": format!("t{i}")})).collect();
    let (s, _) = http(
        &broker,
        "POST",
        "/api/streams/tracked/messages",
        Some(json!({"messages": batch})),
    )
    .await;
    assert_eq!(s, 201);
    assert_eq!(
        consume_tracked(&broker, "billing", None, 4).await,
        [0, 1, 2, 3]
    );
    assert_eq!(
        consume_tracked(&broker, "billing", None, 2).await,
        [4, 5],
        "resumes after the acks"
    );
    assert_eq!(
        consume_tracked(&broker, "other", None, 1).await,
        [0],
        "each tag has its own"
    );
    broker.kill9().await.expect("kill -9");
    broker.restart().await.expect("restart");
    assert_eq!(
        consume_tracked(&broker, "billing", None, 1).await,
        [6],
        "kept across kill -9"
    );
    let (_, groups) = http(&broker, "GET", "/api/streams/tracked/groups", None).await;
    let names: Vec<&str> = groups["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"amqp-offset-tracking/billing"), "{names:?}");
}

#[tokio::test]
async fn a_tracking_consumer_with_a_filter_moves_past_the_records_it_skips() {
    let broker = Broker::start().await.expect("broker starts");
    let (s, _) = http(&broker, "PUT", "/api/streams/tracked", Some(json!({}))).await;
    assert_eq!(s, 201);
    let batch: Vec<Value> = (0..10)
        .map(|i| {
            let f = if i % 2 == 0 { "even" } else { "odd" };
            json!({"body": format!("t{i}"), "headers": {"x-stream-filter-value": f}})
        })
        .collect();
    let (s, _) = http(
        &broker,
        "POST",
        "/api/streams/tracked/messages",
        Some(json!({"messages": batch})),
    )
    .await;
    assert_eq!(s, 201);
    // The acks of 0, 2 and 4 settle 0..=4: the tracked offset is 5 (checked inside).
    let even = consume_tracked(&broker, "evens", Some("even"), 3).await;
    assert_eq!(even, [0, 2, 4]);
    let next = consume_tracked(&broker, "evens", Some("even"), 1).await;
    assert_eq!(next, [6], "resumes after the acks");
}

#[tokio::test]
async fn records_read_while_flow_is_off_are_delivered_once_it_is_on() {
    let broker = Broker::start().await.expect("broker starts");
    let (s, _) = http(&broker, "PUT", "/api/streams/paused", Some(json!({}))).await;
    assert_eq!(s, 201);
    let conn = Connection::connect(&broker.amqp_url(), ConnectionProperties::default())
        .await
        .expect("connect");
    let ch = conn.create_channel().await.expect("channel");
    ch.basic_qos(5, BasicQosOptions::default())
        .await
        .expect("qos");
    let mut consumer = consume_from_first(&ch, "paused", "p", FieldTable::default()).await;
    let append = |bodies: &[&str]| {
        let messages: Vec<Value> = bodies.iter().map(|b| json!({"body": b})).collect();
        http(
            &broker,
            "POST",
            "/api/streams/paused/messages",
            Some(json!({"messages": messages})),
        )
    };
    // Once r0 is here the consumer has gone back to waiting for the next record:
    // what that read finds while flow is off must not be lost to it.
    assert_eq!(append(&["r0"]).await.0, 201);
    assert_eq!(next_delivery(&mut consumer).await.data, b"r0");
    let active = ch
        .channel_flow(lapin::options::ChannelFlowOptions { active: false })
        .await
        .expect("flow off");
    assert!(!active);
    assert_eq!(append(&["r1", "r2"]).await.0, 201);
    let early = tokio::time::timeout(std::time::Duration::from_millis(700), consumer.next()).await;
    // Ok(None) would be the consumer cancelled, which flow must not do either.
    assert!(
        early.is_err(),
        "a delivery came while flow was off: {early:?}"
    );
    assert!(
        ch.channel_flow(lapin::options::ChannelFlowOptions { active: true })
            .await
            .expect("flow on")
    );
    for expected in ["r1", "r2"] {
        let d = next_delivery(&mut consumer).await;
        assert_eq!(d.data, expected.as_bytes(), "in order, none skipped");
        d.ack(BasicAckOptions::default()).await.expect("ack");
    }
}
