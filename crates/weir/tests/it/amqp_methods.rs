//! The AMQP methods the scenario tests do not reach, one by one with lapin against
//! the real binary: exchange and queue management (passive, internal, bind and
//! unbind between exchanges, if-unused, if-empty, purge), transactions, recover,
//! no-ack consumers, broker-initiated cancel and global qos.

use std::time::Duration;

use futures_lite::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicPublishOptions, BasicQosOptions,
    BasicRecoverOptions, ConfirmSelectOptions, ExchangeBindOptions, ExchangeDeclareOptions,
    ExchangeDeleteOptions, ExchangeUnbindOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions, QueuePurgeOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use weir_testkit::Broker;

use crate::Api;

async fn connect(broker: &Broker) -> Connection {
    Connection::connect(&broker.amqp_url(), ConnectionProperties::default())
        .await
        .expect("AMQP connection")
}

async fn queue(ch: &Channel, name: &str) {
    ch.queue_declare(
        name.into(),
        QueueDeclareOptions::durable(),
        FieldTable::default(),
    )
    .await
    .expect("queue.declare");
}

async fn exchange(ch: &Channel, name: &str, kind: ExchangeKind, internal: bool) {
    ch.exchange_declare(
        name.into(),
        kind,
        ExchangeDeclareOptions {
            durable: true,
            internal,
            ..ExchangeDeclareOptions::default()
        },
        FieldTable::default(),
    )
    .await
    .expect("exchange.declare");
}

/// Publishes without confirms (the next synchronous method on the channel waits
/// for it).
async fn publish(ch: &Channel, exchange: &str, key: &str, body: &[u8]) {
    ch.basic_publish(
        exchange.into(),
        key.into(),
        BasicPublishOptions::default(),
        body,
        BasicProperties::default(),
    )
    .await
    .expect("basic.publish");
}

async fn count(ch: &Channel, name: &str) -> u32 {
    ch.queue_declare(
        name.into(),
        QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        },
        FieldTable::default(),
    )
    .await
    .expect("passive queue.declare")
    .message_count()
}

/// A `queue.delete` that must be refused, on a channel of its own (the refusal
/// closes it): the error's text.
async fn refused_delete(conn: &Connection, queue: &str, options: QueueDeleteOptions) -> String {
    conn.create_channel()
        .await
        .unwrap()
        .queue_delete(queue.into(), options)
        .await
        .expect_err("the delete is refused")
        .to_string()
}

#[tokio::test]
#[allow(clippy::too_many_lines)] // one scenario, start to end
async fn every_exchange_and_queue_method() {
    let broker = Broker::start().await.unwrap();
    let conn = connect(&broker).await;
    let ch = conn.create_channel().await.unwrap();
    exchange(&ch, "front", ExchangeKind::Fanout, false).await;
    exchange(&ch, "inside", ExchangeKind::Direct, true).await;
    queue(&ch, "orders").await;
    // Passive declare: there, and not.
    ch.exchange_declare(
        "front".into(),
        ExchangeKind::Fanout,
        ExchangeDeclareOptions {
            passive: true,
            ..ExchangeDeclareOptions::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    let e = conn
        .create_channel()
        .await
        .unwrap()
        .exchange_declare(
            "nowhere".into(),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions {
                passive: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("NOT_FOUND"), "{e}");
    // front -> inside (exchange to exchange) -> orders.
    ch.exchange_bind(
        "inside".into(),
        "front".into(),
        "".into(),
        ExchangeBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.queue_bind(
        "orders".into(),
        "inside".into(),
        "".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    publish(&ch, "front", "", b"via an internal exchange").await;
    assert_eq!(count(&ch, "orders").await, 1);
    // Nobody publishes to an internal exchange directly.
    let bad = conn.create_channel().await.unwrap();
    bad.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let refused = match bad
        .basic_publish(
            "inside".into(),
            "".into(),
            BasicPublishOptions::default(),
            b"x",
            BasicProperties::default(),
        )
        .await
    {
        Err(e) => Some(e),
        Ok(confirm) => confirm.await.err(),
    };
    let refused = refused.expect("a publish to an internal exchange is refused");
    assert!(refused.to_string().contains("ACCESS_REFUSED"), "{refused}");
    // A bound exchange is in use; unbound, it may go.
    let e = conn
        .create_channel()
        .await
        .unwrap()
        .exchange_delete(
            "front".into(),
            ExchangeDeleteOptions {
                if_unused: true,
                ..ExchangeDeleteOptions::default()
            },
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("PRECONDITION_FAILED"), "{e}");
    ch.exchange_unbind(
        "inside".into(),
        "front".into(),
        "".into(),
        ExchangeUnbindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    publish(&ch, "front", "", b"routes nowhere now").await;
    assert_eq!(count(&ch, "orders").await, 1);
    ch.exchange_delete(
        "front".into(),
        ExchangeDeleteOptions {
            if_unused: true,
            ..ExchangeDeleteOptions::default()
        },
    )
    .await
    .unwrap();
    ch.queue_unbind(
        "orders".into(),
        "inside".into(),
        "".into(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    // Delete if-empty refuses a queue with messages; purge empties it.
    let e = refused_delete(
        &conn,
        "orders",
        QueueDeleteOptions {
            if_empty: true,
            ..QueueDeleteOptions::default()
        },
    )
    .await;
    assert!(e.contains("PRECONDITION_FAILED"), "{e}");
    publish(&ch, "", "orders", b"second").await;
    assert_eq!(
        ch.queue_purge("orders".into(), QueuePurgeOptions::default())
            .await
            .unwrap(),
        2
    );
    // Delete if-unused refuses a queue with a consumer.
    let reader = conn.create_channel().await.unwrap();
    let _consumer = reader
        .basic_consume(
            "orders".into(),
            "r".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let e = refused_delete(
        &conn,
        "orders",
        QueueDeleteOptions {
            if_unused: true,
            ..QueueDeleteOptions::default()
        },
    )
    .await;
    assert!(e.contains("PRECONDITION_FAILED"), "{e}");
    assert_eq!(
        ch.queue_delete("orders".into(), QueueDeleteOptions::default())
            .await
            .unwrap(),
        0
    );
}

#[tokio::test]
async fn transactions_commit_and_roll_back_publishes_and_acks() {
    let broker = Broker::start().await.unwrap();
    let api = Api::new(&broker);
    let conn = connect(&broker).await;
    let ch = conn.create_channel().await.unwrap();
    queue(&ch, "tx").await;
    ch.tx_select().await.unwrap();
    publish(&ch, "", "tx", b"rolled back").await;
    ch.tx_rollback().await.unwrap();
    assert_eq!(count(&ch, "tx").await, 0);
    publish(&ch, "", "tx", b"one").await;
    publish(&ch, "", "tx", b"two").await;
    assert_eq!(count(&ch, "tx").await, 0, "nothing before the commit");
    ch.tx_commit().await.unwrap();
    assert_eq!(count(&ch, "tx").await, 2);
    // An ack in a transaction takes effect at the commit.
    let got = ch
        .basic_get("tx".into(), BasicGetOptions { no_ack: false })
        .await
        .unwrap()
        .expect("a message");
    got.delivery.ack(BasicAckOptions::default()).await.unwrap();
    ch.tx_commit().await.unwrap();
    api.wait_stats("tx", "the ack committed", |s| s["acked_total"] == 1)
        .await;
}

#[tokio::test]
async fn recover_no_ack_and_broker_initiated_cancel() {
    let broker = Broker::start().await.unwrap();
    let api = Api::new(&broker);
    let conn = connect(&broker).await;
    let ch = conn.create_channel().await.unwrap();
    queue(&ch, "work").await;
    for body in [b"a", b"b"] {
        publish(&ch, "", "work", body).await;
    }
    let consumer_ch = conn.create_channel().await.unwrap();
    let mut consumer = consumer_ch
        .basic_consume(
            "work".into(),
            "w".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    for _ in 0..2 {
        let d = tokio::time::timeout(Duration::from_secs(30), consumer.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(!d.redelivered);
    }
    // Recover: both come again, redelivered.
    consumer_ch
        .basic_recover(BasicRecoverOptions { requeue: true })
        .await
        .unwrap();
    for _ in 0..2 {
        let d = tokio::time::timeout(Duration::from_secs(30), consumer.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(d.redelivered);
        d.ack(BasicAckOptions::default()).await.unwrap();
    }
    // Deleting the queue cancels its consumer from the broker's side.
    ch.queue_delete("work".into(), QueueDeleteOptions::default())
        .await
        .unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(30), consumer.next())
        .await
        .expect("the consumer is told");
    assert!(ended.is_none(), "the consumer stream ends: {ended:?}");
    // A no-ack consumer settles on delivery.
    queue(&ch, "fire").await;
    for body in [b"1", b"2", b"3"] {
        publish(&ch, "", "fire", body).await;
    }
    let mut auto = consumer_ch
        .basic_consume(
            "fire".into(),
            "auto".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    for _ in 0..3 {
        tokio::time::timeout(Duration::from_secs(30), auto.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
    api.wait_stats("fire", "all three settled without acks", |s| {
        s["acked_total"] == 3 && s["leased"] == 0
    })
    .await;
}

#[tokio::test]
async fn global_qos_is_shared_by_the_channels_consumers() {
    let broker = Broker::start().await.unwrap();
    let api = Api::new(&broker);
    let conn = connect(&broker).await;
    let ch = conn.create_channel().await.unwrap();
    queue(&ch, "g1").await;
    queue(&ch, "g2").await;
    for i in 0..5u8 {
        publish(&ch, "", "g1", &[i]).await;
        publish(&ch, "", "g2", &[i]).await;
    }
    let consumer_ch = conn.create_channel().await.unwrap();
    consumer_ch
        .basic_qos(3, BasicQosOptions { global: true })
        .await
        .unwrap();
    let mut c1 = consumer_ch
        .basic_consume(
            "g1".into(),
            "c1".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut c2 = consumer_ch
        .basic_consume(
            "g2".into(),
            "c2".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    // Three unacked in all, across both consumers, and no more.
    let mut held = Vec::new();
    while held.len() < 3 {
        tokio::select! {
            Some(Ok(d)) = c1.next() => held.push(d),
            Some(Ok(d)) = c2.next() => held.push(d),
            () = tokio::time::sleep(Duration::from_secs(30)) => panic!("deliveries stopped at {}", held.len()),
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let leased = api.stats("g1").await["leased"].as_u64().unwrap()
        + api.stats("g2").await["leased"].as_u64().unwrap();
    assert_eq!(leased, 3, "the channel's prefetch of 3 is shared");
    // An ack frees one unit of credit: one more comes.
    held.remove(0)
        .ack(BasicAckOptions::default())
        .await
        .unwrap();
    tokio::select! {
        Some(Ok(_)) = c1.next() => {}
        Some(Ok(_)) = c2.next() => {}
        () = tokio::time::sleep(Duration::from_secs(30)) => panic!("no delivery after the ack"),
    }
}

/// The refusals the compatibility table lists, each with its code, and the close
/// every open connection gets when the broker shuts down.
#[tokio::test]
async fn refusals_carry_their_codes_and_shutdown_closes_connections() {
    let mut broker = Broker::start().await.unwrap();
    let conn = connect(&broker).await;
    let declare = |name: &'static str, args: FieldTable| {
        let conn = &conn;
        async move {
            conn.create_channel()
                .await
                .unwrap()
                .queue_declare(name.into(), QueueDeclareOptions::durable(), args)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
    };
    // Channel errors: the connection lives on.
    let e = declare("amq.mine", FieldTable::default())
        .await
        .unwrap_err();
    assert!(e.contains("ACCESS_REFUSED"), "{e}");
    declare("has space and ünïcode", FieldTable::default())
        .await
        .expect("any UTF-8 short string is a queue name, as in RabbitMQ");
    let mut tuning = FieldTable::default();
    tuning.insert(
        "x-queue-mode".into(),
        lapin::types::AMQPValue::LongString("lazy".into()),
    );
    declare("lazy", tuning)
        .await
        .expect("RabbitMQ's storage tuning is accepted");
    // Connection errors, each on a connection of its own.
    let delayed = connect(&broker).await;
    let e = delayed
        .create_channel()
        .await
        .unwrap()
        .exchange_declare(
            "later".into(),
            ExchangeKind::Custom("x-delayed-message".into()),
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("COMMAND_INVALID"), "{e}");
    let immediate = connect(&broker).await;
    let ch = immediate.create_channel().await.unwrap();
    let _ = ch
        .basic_publish(
            "".into(),
            "lazy".into(),
            BasicPublishOptions {
                immediate: true,
                ..BasicPublishOptions::default()
            },
            b"now",
            BasicProperties::default(),
        )
        .await;
    let e = ch
        .queue_declare(
            "lazy".into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("NOT_IMPLEMENTED"), "{e}");
    let secret = connect(&broker).await;
    let e = secret
        .update_secret("new".into(), "rotation".into())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("NOT_IMPLEMENTED"), "{e}");
    // The first connection is still fine; a shutdown closes it (with 320, which
    // lapin does not show: it reports the connection in error).
    declare("still-fine", FieldTable::default()).await.unwrap();
    assert!(conn.status().connected());
    assert!(broker.terminate().await.unwrap(), "a clean stop");
    assert!(!conn.status().connected());
    assert!(conn.create_channel().await.is_err());
}
