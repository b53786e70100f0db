//! Dead-lettering as RabbitMQ 3.x does it: the dead-letter exchange and routing
//! key, the `x-death` history (one entry per queue and reason, counts merged, the
//! latest first), `x-first-death-*`, the reasons rejected, expired, maxlen and
//! `delivery_limit`, `reject-publish-dlx`, and cycles dropped. The pika scenarios
//! (`tests/pika/dead_letters.py`) pass unchanged against RabbitMQ 3.10; the lapin
//! test adds a kill -9 and the HTTP view of the same history.

use std::time::Duration;

use lapin::options::{
    BasicGetOptions, BasicNackOptions, BasicPublishOptions, BasicRejectOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, ExchangeKind};
use serde_json::{Value, json};
use weir_testkit::Broker;

use crate::Api;
use crate::amqp::connect;

async fn scenario(name: &str) {
    let broker = Broker::start().await.unwrap();
    let out = crate::pika::run(&broker, "dead_letters.py", &[name]).await;
    assert!(out.contains("OK"), "{out}");
}

#[tokio::test]
async fn dead_letters_go_through_the_dead_letter_exchange_and_merge_x_death_per_queue_and_reason() {
    scenario("retry_loop").await;
}

#[tokio::test]
async fn x_death_is_regrouped_at_each_death_as_rabbitmq_3_10_does() {
    scenario("chain").await;
}

#[tokio::test]
async fn dead_letter_cycles_without_a_rejection_are_dropped() {
    scenario("cycles").await;
}

#[tokio::test]
async fn max_length_dead_letters_the_head_and_reject_publish_dlx_the_refused_message() {
    scenario("maxlen").await;
}

#[tokio::test]
async fn a_per_message_ttl_becomes_original_expiration() {
    scenario("original_expiration").await;
}

#[tokio::test]
async fn the_delivery_limit_dead_letters_with_reason_delivery_limit() {
    scenario("delivery_limit").await;
}

fn table(items: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in items {
        t.insert((*k).into(), v.clone());
    }
    t
}

fn long(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

/// The message's x-death as (queue, reason, count, exchange, routing keys).
fn x_death(headers: &FieldTable) -> Vec<(String, String, i64, String, Vec<String>)> {
    let text = |v: Option<&AMQPValue>| match v {
        Some(AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        other => panic!("not a long string: {other:?}"),
    };
    let Some(AMQPValue::FieldArray(deaths)) = headers.inner().get("x-death") else {
        panic!("no x-death array: {headers:?}");
    };
    deaths
        .as_slice()
        .iter()
        .map(|d| {
            let AMQPValue::FieldTable(d) = d else {
                panic!("not a table: {d:?}")
            };
            let d = d.inner();
            let Some(AMQPValue::LongLongInt(count)) = d.get("count") else {
                panic!("count is not a long: {d:?}")
            };
            let Some(AMQPValue::FieldArray(keys)) = d.get("routing-keys") else {
                panic!("routing-keys is not an array: {d:?}")
            };
            assert!(
                matches!(d.get("time"), Some(AMQPValue::Timestamp(_))),
                "{d:?}"
            );
            (
                text(d.get("queue")),
                text(d.get("reason")),
                *count,
                text(d.get("exchange")),
                keys.as_slice().iter().map(|k| text(Some(k))).collect(),
            )
        })
        .collect()
}

fn header<'a>(headers: &'a FieldTable, name: &str) -> &'a AMQPValue {
    headers
        .inner()
        .get(name)
        .unwrap_or_else(|| panic!("no {name}: {headers:?}"))
}

/// Declares work (dead letters to retry.x with key "retry") and work.retry (a
/// 100 ms TTL, dead letters back to work.x with key "task").
async fn retry_topology(ch: &Channel) {
    for x in ["work.x", "retry.x"] {
        ch.exchange_declare(
            x.into(),
            ExchangeKind::Direct,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    }
    let queues = [
        (
            "work",
            "work.x",
            "task",
            table(&[
                ("x-dead-letter-exchange", long("retry.x")),
                ("x-dead-letter-routing-key", long("retry")),
            ]),
        ),
        (
            "work.retry",
            "retry.x",
            "retry",
            table(&[
                ("x-message-ttl", AMQPValue::LongInt(100)),
                ("x-dead-letter-exchange", long("work.x")),
                ("x-dead-letter-routing-key", long("task")),
            ]),
        ),
    ];
    for (q, x, key, args) in queues {
        ch.queue_declare(q.into(), QueueDeclareOptions::durable(), args)
            .await
            .unwrap();
        ch.queue_bind(
            q.into(),
            x.into(),
            key.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    }
}

/// Polls basic.get until a message comes (30 s at most).
async fn get(ch: &Channel, queue: &str) -> lapin::message::BasicGetMessage {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(m) = ch
            .basic_get(queue.into(), BasicGetOptions::default())
            .await
            .unwrap()
        {
            return m;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "nothing came to {queue}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn expected_after_one_round() -> Vec<(String, String, i64, String, Vec<String>)> {
    vec![
        (
            "work.retry".into(),
            "expired".into(),
            1,
            "retry.x".into(),
            vec!["retry".into()],
        ),
        (
            "work".into(),
            "rejected".into(),
            1,
            "work.x".into(),
            vec!["task".into()],
        ),
    ]
}

/// What the lapin test checks over HTTP: the message in `work` (leased, checked,
/// given back) carries the history of one round.
async fn http_shows_the_history(api: &Api) {
    let got = api.receive("work", "max=1").await;
    let dead = &got[0]["dead_letter"];
    assert_eq!(dead["reason"], "expired", "{dead}");
    assert_eq!(dead["source_queue"], "work.retry");
    assert_eq!(dead["exchange"], "work.x");
    assert_eq!(dead["routing_keys"], json!(["task"]));
    assert_eq!(
        dead["first_death"],
        json!({"queue": "work", "reason": "rejected", "exchange": "work.x"})
    );
    let deaths: Vec<Value> = dead["deaths"]
        .as_array()
        .expect("deaths")
        .iter()
        .map(|d| {
            assert!(d["time_ms"].as_i64().unwrap() > 0, "{d}");
            json!([
                d["queue"],
                d["reason"],
                d["count"],
                d["exchange"],
                d["routing_keys"]
            ])
        })
        .collect();
    assert_eq!(
        deaths,
        [
            json!(["work.retry", "expired", 1, "retry.x", ["retry"]]),
            json!(["work", "rejected", 1, "work.x", ["task"]]),
        ]
    );
    let (s, _) = api
        .call(
            "POST",
            "/api/queues/work/nack",
            Some(json!({"receipt": crate::receipt(&got[0])})),
        )
        .await;
    assert_eq!(s, 200);
}

/// The death history is stored with the message: a kill -9 keeps it, and the
/// HTTP API shows the same facts.
#[tokio::test]
async fn the_death_history_survives_kill_9_and_shows_over_http() {
    let mut broker = Broker::start().await.unwrap();
    let conn = connect(&broker).await;
    let ch = conn.create_channel().await.unwrap();
    retry_topology(&ch).await;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let confirm = ch
        .basic_publish(
            "work.x".into(),
            "task".into(),
            BasicPublishOptions::default(),
            b"job",
            BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(confirm.is_ack());
    let m = get(&ch, "work").await;
    m.delivery
        .reject(BasicRejectOptions { requeue: false })
        .await
        .unwrap();
    let m = get(&ch, "work").await;
    let headers = m.delivery.properties.headers().clone().unwrap_or_default();
    assert_eq!(x_death(&headers), expected_after_one_round());
    assert_eq!(
        (
            m.delivery.exchange.as_str(),
            m.delivery.routing_key.as_str()
        ),
        ("work.x", "task")
    );
    // Back to the queue, then a kill -9.
    m.delivery
        .nack(BasicNackOptions {
            requeue: true,
            ..BasicNackOptions::default()
        })
        .await
        .unwrap();
    drop(conn);
    let api = Api::new(&broker);
    api.wait_stats("work", "the message ready again", |s| s["ready"] == 1)
        .await;
    // The settles of the copies that moved between the queues (the expiry in
    // work.retry above all) are written unsynced and synced at the latest 100 ms
    // later (docs/architecture.md); a kill inside that window may bring a copy
    // back, which is allowed (at-least-once dead-lettering) but not what this test
    // is about. Past the window, with a margin for a loaded machine.
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    broker.kill9().await.unwrap();
    broker.restart().await.unwrap();

    http_shows_the_history(&Api::new(&broker)).await;

    // AMQP shows the same, and a second round merges the counts.
    let conn = connect(&broker).await;
    let ch = conn.create_channel().await.unwrap();
    let m = get(&ch, "work").await;
    let headers = m.delivery.properties.headers().clone().unwrap_or_default();
    assert_eq!(x_death(&headers), expected_after_one_round());
    assert_eq!(*header(&headers, "x-first-death-queue"), long("work"));
    assert_eq!(*header(&headers, "x-first-death-reason"), long("rejected"));
    assert_eq!(*header(&headers, "x-first-death-exchange"), long("work.x"));
    m.delivery
        .reject(BasicRejectOptions { requeue: false })
        .await
        .unwrap();
    let m = get(&ch, "work").await;
    let headers = m.delivery.properties.headers().clone().unwrap_or_default();
    let counts: Vec<(String, i64)> = x_death(&headers)
        .into_iter()
        .map(|(q, _, c, _, _)| (q, c))
        .collect();
    assert_eq!(counts, [("work.retry".into(), 2), ("work".into(), 2)]);
    assert_eq!(*header(&headers, "x-first-death-queue"), long("work"));
}

/// weir's own `dead_letter_queue` (an HTTP option) keeps the same history, as if
/// the default exchange were the dead-letter exchange and the queue's name its
/// key: the dead-letter view and AMQP show the same facts.
#[tokio::test]
async fn a_dead_letter_queue_shows_the_same_history_in_the_dead_letter_view_and_over_amqp() {
    let broker = Broker::start().await.unwrap();
    let api = Api::new(&broker);
    api.create("orders", json!({"dead_letter_queue": "orders.dlq"}))
        .await;
    api.send_text("orders", "o-1").await;
    let m = api.receive("orders", "max=1").await;
    let (s, _) = api
        .call(
            "POST",
            "/api/queues/orders/nack",
            Some(json!({"receipt": crate::receipt(&m[0]), "requeue": false})),
        )
        .await;
    assert_eq!(s, 200);
    api.wait_stats("orders.dlq", "the dead letter", |s| s["ready"] == 1)
        .await;
    let messages = api.wait_dead_letters("orders").await;
    let dead = &messages[0]["dead_letter"];
    assert_eq!(
        (&dead["exchange"], &dead["routing_keys"]),
        (&json!(""), &json!(["orders.dlq"])),
        "{dead}"
    );
    assert_eq!(
        dead["first_death"],
        json!({"queue": "orders", "reason": "rejected", "exchange": ""})
    );
    let death = &dead["deaths"][0];
    assert_eq!(dead["deaths"].as_array().map(Vec::len), Some(1), "{dead}");
    assert_eq!(
        json!([
            death["queue"],
            death["reason"],
            death["count"],
            death["exchange"],
            death["routing_keys"]
        ]),
        json!(["orders", "rejected", 1, "", ["orders"]])
    );

    let conn = connect(&broker).await;
    let ch = conn.create_channel().await.unwrap();
    let m = get(&ch, "orders.dlq").await;
    assert_eq!(
        (
            m.delivery.exchange.as_str(),
            m.delivery.routing_key.as_str()
        ),
        ("", "orders.dlq")
    );
    let headers = m.delivery.properties.headers().clone().unwrap_or_default();
    assert_eq!(
        x_death(&headers),
        [(
            "orders".to_owned(),
            "rejected".to_owned(),
            1,
            String::new(),
            vec!["orders".to_owned()]
        )]
    );
    assert_eq!(*header(&headers, "x-first-death-queue"), long("orders"));
}
