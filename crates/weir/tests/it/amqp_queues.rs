//! AMQP queue features that span connections, with lapin against the real binary:
//! exclusive queues and consumers, single active consumer, auto-delete, `x-expires`,
//! and `channel.flow`.

use std::time::Duration;

use futures_lite::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicPublishOptions,
    ChannelFlowOptions, ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use weir_testkit::Broker;

async fn connect(broker: &Broker) -> Connection {
    Connection::connect(&broker.amqp_url(), ConnectionProperties::default())
        .await
        .expect("AMQP connection")
}

async fn declare_with(
    channel: &Channel,
    queue: &str,
    options: QueueDeclareOptions,
    args: FieldTable,
) {
    channel
        .queue_declare(queue.into(), options, args)
        .await
        .expect("queue.declare");
}

/// A passive declare on a fresh channel: `Ok` if the queue is there, else the error
/// text.
async fn exists(conn: &Connection, queue: &str) -> Result<(), String> {
    let ch = conn.create_channel().await.unwrap();
    let declared = ch
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .map(|_| ())
        .map_err(|e| e.to_string());
    if declared.is_ok() {
        let _ = ch.close(200, "done".into()).await;
    }
    declared
}

/// Waits (up to 20 s) until the queue is gone.
async fn wait_gone(conn: &Connection, queue: &str) {
    for _ in 0..100 {
        match exists(conn, queue).await {
            Err(e) if e.contains("NOT_FOUND") => return,
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    panic!("queue {queue} is still there");
}

async fn publish(channel: &Channel, queue: &str, body: &[u8]) {
    let confirm = channel
        .basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions::default(),
            body,
            BasicProperties::default(),
        )
        .await
        .expect("basic.publish")
        .await
        .expect("confirm");
    assert!(confirm.is_ack());
}

async fn consume(
    channel: &Channel,
    queue: &str,
    tag: &str,
    exclusive: bool,
) -> lapin::Result<lapin::Consumer> {
    channel
        .basic_consume(
            queue.into(),
            tag.into(),
            BasicConsumeOptions {
                exclusive,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await
}

fn args(pairs: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in pairs {
        t.insert((*k).into(), v.clone());
    }
    t
}

#[tokio::test]
async fn an_exclusive_queue_is_locked_to_its_connection_and_goes_with_it() {
    let broker = Broker::start().await.unwrap();
    let owner = connect(&broker).await;
    let other = connect(&broker).await;
    let ch = owner.create_channel().await.unwrap();
    declare_with(
        &ch,
        "mine",
        QueueDeclareOptions {
            exclusive: true,
            ..QueueDeclareOptions::default()
        },
        FieldTable::default(),
    )
    .await;
    // The owner uses it freely.
    assert!(exists(&owner, "mine").await.is_ok());
    let _c1 = consume(&ch, "mine", "c1", false).await.unwrap();
    // Anyone else is refused with 405.
    let e = exists(&other, "mine").await.unwrap_err();
    assert!(e.contains("RESOURCE_LOCKED"), "{e}");
    let och = other.create_channel().await.unwrap();
    let e = consume(&och, "mine", "c2", false).await.unwrap_err();
    assert!(e.to_string().contains("RESOURCE_LOCKED"), "{e}");
    // The queue goes with its connection.
    owner.close(200, "bye".into()).await.unwrap();
    wait_gone(&other, "mine").await;
}

#[tokio::test]
async fn an_exclusive_consumer_is_alone_on_its_queue() {
    let broker = Broker::start().await.unwrap();
    let a = connect(&broker).await;
    let b = connect(&broker).await;
    let ach = a.create_channel().await.unwrap();
    declare_with(
        &ach,
        "solo",
        QueueDeclareOptions::durable(),
        FieldTable::default(),
    )
    .await;
    // lapin cancels a consumer when its stream is dropped: keep them.
    let _first = consume(&ach, "solo", "first", true).await.unwrap();
    let bch = b.create_channel().await.unwrap();
    let e = consume(&bch, "solo", "second", false).await.unwrap_err();
    assert!(e.to_string().contains("ACCESS_REFUSED"), "{e}");
    // Once it cancels, others may consume.
    ach.basic_cancel("first".into(), BasicCancelOptions::default())
        .await
        .unwrap();
    let bch = b.create_channel().await.unwrap();
    let _second = consume(&bch, "solo", "second", false).await.unwrap();
}

#[tokio::test]
async fn single_active_consumer_hands_over_in_order() {
    let broker = Broker::start().await.unwrap();
    let first = connect(&broker).await;
    let second = connect(&broker).await;
    let setup = first.create_channel().await.unwrap();
    declare_with(
        &setup,
        "sac",
        QueueDeclareOptions::durable(),
        args(&[("x-single-active-consumer", AMQPValue::Boolean(true))]),
    )
    .await;
    let ch1 = first.create_channel().await.unwrap();
    let mut c1 = consume(&ch1, "sac", "one", false).await.unwrap();
    let ch2 = second.create_channel().await.unwrap();
    let mut c2 = consume(&ch2, "sac", "two", false).await.unwrap();
    setup
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    for i in 0..4u8 {
        publish(&setup, "sac", &[b'0' + i]).await;
    }
    // All four go to the active consumer; it acks two and holds two.
    let mut got = Vec::new();
    for _ in 0..4 {
        let d = tokio::time::timeout(Duration::from_secs(30), c1.next())
            .await
            .expect("the active consumer gets the messages")
            .unwrap()
            .unwrap();
        got.push(d);
    }
    for d in &got[..2] {
        d.ack(BasicAckOptions::default()).await.unwrap();
    }
    // The waiting consumer got nothing meanwhile.
    assert!(
        tokio::time::timeout(Duration::from_millis(500), c2.next())
            .await
            .is_err(),
        "the waiting consumer got a message"
    );
    // The active one goes: the next takes over, with the unacked two.
    ch1.close(200, "bye".into()).await.unwrap();
    let mut bodies = Vec::new();
    for _ in 0..2 {
        let d = tokio::time::timeout(Duration::from_secs(30), c2.next())
            .await
            .expect("the next consumer takes over")
            .unwrap()
            .unwrap();
        assert!(d.redelivered);
        bodies.push(d.data.clone());
        d.ack(BasicAckOptions::default()).await.unwrap();
    }
    bodies.sort();
    assert_eq!(bodies, vec![b"2".to_vec(), b"3".to_vec()]);
    drop(c1);
}

#[tokio::test]
async fn an_auto_delete_queue_goes_when_its_last_consumer_anywhere_does() {
    let broker = Broker::start().await.unwrap();
    let declarer = connect(&broker).await;
    let reader = connect(&broker).await;
    let ch = declarer.create_channel().await.unwrap();
    declare_with(
        &ch,
        "brief",
        QueueDeclareOptions {
            auto_delete: true,
            ..QueueDeclareOptions::default()
        },
        FieldTable::default(),
    )
    .await;
    let rch = reader.create_channel().await.unwrap();
    // lapin cancels a consumer when its stream is dropped: keep them.
    let _r1 = consume(&rch, "brief", "r1", false).await.unwrap();
    let rch2 = reader.create_channel().await.unwrap();
    let _r2 = consume(&rch2, "brief", "r2", false).await.unwrap();
    rch.basic_cancel("r1".into(), BasicCancelOptions::default())
        .await
        .unwrap();
    assert!(
        exists(&declarer, "brief").await.is_ok(),
        "one consumer is left"
    );
    rch2.close(200, "bye".into()).await.unwrap();
    wait_gone(&declarer, "brief").await;
}

#[tokio::test]
async fn x_expires_deletes_an_unused_queue_but_not_a_consumed_one() {
    let broker = Broker::start().await.unwrap();
    let conn = connect(&broker).await;
    let ch = conn.create_channel().await.unwrap();
    let expires = args(&[("x-expires", AMQPValue::LongInt(1_000))]);
    declare_with(&ch, "idle", QueueDeclareOptions::default(), expires.clone()).await;
    declare_with(&ch, "busy", QueueDeclareOptions::default(), expires).await;
    let consumer_channel = conn.create_channel().await.unwrap();
    let _consumer = consume(&consumer_channel, "busy", "keeps-it", false)
        .await
        .unwrap();
    wait_gone(&conn, "idle").await;
    // Well past its expiry, the consumed queue is still there.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert!(exists(&conn, "busy").await.is_ok());
    // Its consumer goes: it expires in turn.
    consumer_channel.close(200, "bye".into()).await.unwrap();
    wait_gone(&conn, "busy").await;
}

#[tokio::test]
async fn channel_flow_pauses_and_resumes_deliveries() {
    let broker = Broker::start().await.unwrap();
    let conn = connect(&broker).await;
    let ch = conn.create_channel().await.unwrap();
    declare_with(
        &ch,
        "flowing",
        QueueDeclareOptions::durable(),
        FieldTable::default(),
    )
    .await;
    // Prefetch 1: the consumer's poll is already waiting when flow goes off, so the
    // message it gets is requeued, and its credit must come back with it.
    ch.basic_qos(1, lapin::options::BasicQosOptions::default())
        .await
        .unwrap();
    let mut consumer = consume(&ch, "flowing", "f", false).await.unwrap();
    let active = ch
        .channel_flow(ChannelFlowOptions { active: false })
        .await
        .unwrap();
    assert!(!active);
    let producer = conn.create_channel().await.unwrap();
    producer
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    publish(&producer, "flowing", b"held").await;
    assert!(
        tokio::time::timeout(Duration::from_millis(700), consumer.next())
            .await
            .is_err(),
        "a delivery came while flow was off"
    );
    assert!(
        ch.channel_flow(ChannelFlowOptions { active: true })
            .await
            .unwrap()
    );
    let d = tokio::time::timeout(Duration::from_secs(30), consumer.next())
        .await
        .expect("the delivery comes once flow is on")
        .unwrap()
        .unwrap();
    assert_eq!(d.data, b"held");
}

/// An exclusive queue never outlives its broker run, however it ended: after kill -9
/// (its connection still open) and after a clean stop, the restarted broker has
/// neither it nor its bindings, while an ordinary queue declared beside it stays.
/// A durable auto-delete queue stays across a restart, as in RabbitMQ, and goes when
/// a consumer comes and goes after it.
#[tokio::test]
async fn exclusive_queues_are_gone_after_a_restart_even_after_kill_9() {
    let mut broker = Broker::start().await.unwrap();
    {
        let conn = connect(&broker).await;
        let ch = conn.create_channel().await.unwrap();
        let exclusive = QueueDeclareOptions {
            durable: true,
            exclusive: true,
            ..QueueDeclareOptions::default()
        };
        declare_with(&ch, "owned", exclusive, FieldTable::default()).await;
        declare_with(
            &ch,
            "kept",
            QueueDeclareOptions::durable(),
            FieldTable::default(),
        )
        .await;
        let auto_delete = QueueDeclareOptions {
            durable: true,
            auto_delete: true,
            ..QueueDeclareOptions::default()
        };
        declare_with(&ch, "brief", auto_delete, FieldTable::default()).await;
        // durable = false: RabbitMQ deletes transient queues when it boots.
        declare_with(
            &ch,
            "passing",
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await;
        ch.queue_bind(
            "owned".into(),
            "amq.fanout".into(),
            "".into(),
            lapin::options::QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        publish(&ch, "owned", b"gone with it").await;
        broker.kill9().await.unwrap();
    }
    broker.restart().await.unwrap();
    let conn = connect(&broker).await;
    let e = exists(&conn, "owned").await.unwrap_err();
    assert!(e.contains("NOT_FOUND"), "{e}");
    assert!(exists(&conn, "kept").await.is_ok());
    assert!(exists(&conn, "brief").await.is_ok(), "auto-delete survives");
    let e = exists(&conn, "passing").await.unwrap_err();
    assert!(e.contains("NOT_FOUND"), "a transient queue is gone: {e}");
    let (status, bindings) = crate::Api::new(&broker)
        .call("GET", "/api/bindings", None)
        .await;
    assert_eq!(status, 200);
    assert!(
        !bindings.to_string().contains("owned"),
        "the exclusive queue's binding is gone: {bindings}"
    );
    // The name is free for anyone, exclusively again; this time the broker stops
    // cleanly while the owner is connected.
    let ch = conn.create_channel().await.unwrap();
    let exclusive = QueueDeclareOptions {
        exclusive: true,
        ..QueueDeclareOptions::default()
    };
    declare_with(&ch, "owned", exclusive, FieldTable::default()).await;
    // The auto-delete queue is armed again by a consumer that comes and goes.
    let _c = consume(&ch, "brief", "c", false).await.unwrap();
    ch.basic_cancel("c".into(), BasicCancelOptions::default())
        .await
        .unwrap();
    wait_gone(&conn, "brief").await;
    assert!(broker.terminate().await.unwrap());
    drop(conn);
    broker.restart().await.unwrap();
    let conn = connect(&broker).await;
    let e = exists(&conn, "owned").await.unwrap_err();
    assert!(e.contains("NOT_FOUND"), "{e}");
    assert!(exists(&conn, "kept").await.is_ok());
}

/// Declaring an existing queue with other flags answers as RabbitMQ's
/// `assert_equivalence`: another connection's exclusive queue or a different
/// exclusive flag is 405, a different auto-delete flag 406.
#[tokio::test]
async fn redeclaring_with_other_flags_is_refused_as_rabbitmq_does() {
    let broker = Broker::start().await.unwrap();
    let conn = connect(&broker).await;
    let ch = conn.create_channel().await.unwrap();
    declare_with(
        &ch,
        "plain",
        QueueDeclareOptions::durable(),
        FieldTable::default(),
    )
    .await;
    let declare = |options: QueueDeclareOptions| {
        let conn = &conn;
        async move {
            let ch = conn.create_channel().await.unwrap();
            ch.queue_declare("plain".into(), options, FieldTable::default())
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
    };
    let e = declare(QueueDeclareOptions {
        durable: true,
        auto_delete: true,
        ..QueueDeclareOptions::default()
    })
    .await
    .unwrap_err();
    assert!(e.contains("PRECONDITION_FAILED"), "{e}");
    let e = declare(QueueDeclareOptions {
        durable: true,
        exclusive: true,
        ..QueueDeclareOptions::default()
    })
    .await
    .unwrap_err();
    assert!(e.contains("RESOURCE_LOCKED"), "{e}");
    // A different durable flag: RabbitMQ's "inequivalent arg 'durable'".
    let e = declare(QueueDeclareOptions::default()).await.unwrap_err();
    assert!(e.contains("PRECONDITION_FAILED"), "{e}");
    assert!(declare(QueueDeclareOptions::durable()).await.is_ok());
    // The other way round: an auto-delete queue declared without the flag is 406,
    // and the owner of an exclusive queue declaring it without `exclusive` 405.
    let brief = QueueDeclareOptions {
        auto_delete: true,
        ..QueueDeclareOptions::default()
    };
    declare_with(&ch, "brief", brief, FieldTable::default()).await;
    let owned = QueueDeclareOptions {
        exclusive: true,
        ..QueueDeclareOptions::default()
    };
    declare_with(&ch, "owned", owned, FieldTable::default()).await;
    let again = |name: &'static str| {
        let conn = &conn;
        async move {
            let ch = conn.create_channel().await.unwrap();
            ch.queue_declare(
                name.into(),
                QueueDeclareOptions::default(),
                FieldTable::default(),
            )
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
        }
    };
    let e = again("brief").await.unwrap_err();
    assert!(
        e.contains("PRECONDITION_FAILED") && e.contains("auto_delete"),
        "{e}"
    );
    let e = again("owned").await.unwrap_err();
    assert!(e.contains("RESOURCE_LOCKED"), "{e}");
    // Over HTTP nobody would own an exclusive queue.
    let api = crate::Api::new(&broker);
    let (status, body) = api
        .call(
            "PUT",
            "/api/queues/by-http",
            Some(serde_json::json!({"exclusive": true})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
}

/// Auto-delete exchanges go exactly when RabbitMQ's do: when the last binding of
/// which they are the source goes (an unbind, or its queue's deletion), never
/// while one is left and never if they had none. Then, as RabbitMQ 3.x answers: an
/// unbind from the vanished exchange and an `exchange.delete` of it are fine.
#[tokio::test]
async fn auto_delete_exchanges_go_with_their_last_binding_and_later_cleanup_is_fine() {
    use lapin::ExchangeKind;
    use lapin::options::{
        ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeleteOptions,
    };
    let broker = Broker::start().await.unwrap();
    let conn = connect(&broker).await;
    let ch = conn.create_channel().await.unwrap();
    let auto_delete = ExchangeDeclareOptions {
        auto_delete: true,
        ..ExchangeDeclareOptions::default()
    };
    let exchange_exists = |name: &'static str| {
        let conn = &conn;
        async move {
            let ch = conn.create_channel().await.unwrap();
            ch.exchange_declare(
                name.into(),
                ExchangeKind::Direct,
                ExchangeDeclareOptions {
                    passive: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .is_ok()
        }
    };
    for name in ["ad.x", "ad.never"] {
        ch.exchange_declare(
            name.into(),
            ExchangeKind::Direct,
            auto_delete,
            FieldTable::default(),
        )
        .await
        .unwrap();
    }
    declare_with(
        &ch,
        "ad.q",
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await;
    for key in ["k1", "k2"] {
        ch.queue_bind(
            "ad.q".into(),
            "ad.x".into(),
            key.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    }
    let unbind = |key: &'static str| {
        ch.queue_unbind(
            "ad.q".into(),
            "ad.x".into(),
            key.into(),
            FieldTable::default(),
        )
    };
    unbind("k1").await.unwrap();
    assert!(exchange_exists("ad.x").await, "one binding is left");
    unbind("k2").await.unwrap();
    assert!(!exchange_exists("ad.x").await, "gone with its last binding");
    assert!(exchange_exists("ad.never").await, "never bound: stays");
    // The client's own cleanup after the fact: unbind again, then delete.
    unbind("k2").await.unwrap();
    ch.exchange_delete("ad.x".into(), ExchangeDeleteOptions::default())
        .await
        .unwrap();
    // Deleting the queue removes its bindings, and the exchange goes with them.
    ch.exchange_declare(
        "ad.y".into(),
        ExchangeKind::Direct,
        auto_delete,
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.queue_bind(
        "ad.q".into(),
        "ad.y".into(),
        "k".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.queue_delete("ad.q".into(), QueueDeleteOptions::default())
        .await
        .unwrap();
    assert!(!exchange_exists("ad.y").await);
    ch.exchange_delete("ad.y".into(), ExchangeDeleteOptions::default())
        .await
        .unwrap();
}

/// Arguments as RabbitMQ 3.10 takes them: unknown ones ignored, those of another
/// queue type refused with 406, known consume arguments type-checked.
#[tokio::test]
async fn queue_and_consume_arguments_are_refused_or_ignored_as_rabbitmq_does() {
    let broker = Broker::start().await.unwrap();
    let conn = connect(&broker).await;
    let declare = |name: &'static str, args: FieldTable| {
        let conn = &conn;
        async move {
            let ch = conn.create_channel().await.unwrap();
            ch.queue_declare(name.into(), QueueDeclareOptions::durable(), args)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
    };
    let quorum = || ("x-queue-type", AMQPValue::LongString("quorum".into()));
    declare("unknown", args(&[("x-foo-bar", AMQPValue::LongInt(1))]))
        .await
        .unwrap();
    let e = declare(
        "aged",
        args(&[("x-max-age", AMQPValue::LongString("1D".into()))]),
    )
    .await
    .unwrap_err();
    assert!(
        e.contains("PRECONDITION_FAILED") && e.contains("rabbit_classic_queue"),
        "{e}"
    );
    let in_memory = || ("x-max-in-memory-length", AMQPValue::LongInt(5));
    let e = declare("classic-mem", args(&[in_memory()]))
        .await
        .unwrap_err();
    assert!(e.contains("PRECONDITION_FAILED"), "{e}");
    declare("quorum-mem", args(&[in_memory(), quorum()]))
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let with = |k: &str, v: AMQPValue| {
        let ch = ch.clone();
        let table = args(&[(k, v)]);
        async move {
            ch.basic_consume(
                "unknown".into(),
                "".into(),
                BasicConsumeOptions::default(),
                table,
            )
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
        }
    };
    with("x-priority", AMQPValue::LongInt(5)).await.unwrap();
    with("x-whatever", AMQPValue::LongInt(5)).await.unwrap();
    let e = with("x-priority", AMQPValue::LongString("high".into()))
        .await
        .unwrap_err();
    assert!(e.contains("PRECONDITION_FAILED"), "{e}");
}

/// A channel's publish and its next `basic.get` are ordered, as in RabbitMQ: the
/// get right after the publish (no confirm awaited) finds the message, every time.
#[tokio::test]
async fn a_get_right_after_a_publish_on_the_same_channel_finds_it() {
    let broker = Broker::start().await.unwrap();
    let conn = connect(&broker).await;
    let ch = conn.create_channel().await.unwrap();
    declare_with(
        &ch,
        "ordered",
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await;
    for i in 0..200u32 {
        let body = i.to_be_bytes();
        let _confirm = ch
            .basic_publish(
                "".into(),
                "ordered".into(),
                BasicPublishOptions::default(),
                &body,
                BasicProperties::default(),
            )
            .await
            .unwrap();
        let got = ch
            .basic_get(
                "ordered".into(),
                lapin::options::BasicGetOptions { no_ack: true },
            )
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("get {i} came back empty"));
        assert_eq!(got.delivery.data, body);
    }
}
