//! Vhosts over the whole broker (actors, logs in memory): names in two vhosts do
//! not collide, routing and dead-lettering stay inside a vhost, a view sees only its
//! own, deletion removes what a vhost holds, and a restart keeps each where it was.

use std::collections::BTreeMap;

use weir_log::MemStore;

use crate::api::{NackOptions, QueueOptions, ReceiveRequest, SendMessage};
use crate::broker::Broker;
use crate::config::BrokerConfig;
use crate::error::BrokerError;
use crate::exchanges::{PublishMessage, PublishOptions};
use crate::routing::{Binding, DestinationType, ExchangeOptions, ExchangeType};

async fn open(dir: &std::path::Path, store: &MemStore) -> Broker<MemStore> {
    let mut config = BrokerConfig::new(dir);
    config.limits.disk_free_min_bytes = 0;
    Broker::open_with_store(config, store.clone())
        .await
        .expect("open")
        .0
}

fn text(body: &str) -> SendMessage {
    SendMessage {
        body: body.as_bytes().to_vec().into(),
        ..SendMessage::default()
    }
}

fn publish(key: &str, body: &str) -> Vec<PublishMessage> {
    vec![PublishMessage {
        routing_key: key.into(),
        mandatory: false,
        message: text(body),
    }]
}

const RECEIVE: ReceiveRequest = ReceiveRequest {
    max: 10,
    wait_ms: 0,
    visibility_timeout_ms: None,
};

fn bodies(got: &[crate::api::Delivery]) -> Vec<String> {
    got.iter()
        .map(|d| String::from_utf8_lossy(&d.body).into_owned())
        .collect()
}

#[tokio::test]
async fn the_same_names_in_two_vhosts_are_two_queues_and_routing_stays_inside_each() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = open(dir.path(), &MemStore::default()).await;
    broker.access().add_vhost("staging").expect("vhost");
    let root = broker.vhost("/").expect("/");
    let staging = broker.vhost("staging").expect("staging");
    for v in [&root, &staging] {
        v.declare("orders", QueueOptions::default())
            .await
            .expect("declare");
        v.declare_exchange("events", ExchangeOptions::of(ExchangeType::Topic))
            .await
            .expect("exchange");
        v.bind(Binding {
            source: "events".into(),
            destination: "orders".into(),
            destination_type: DestinationType::Queue,
            routing_key: "order.*".into(),
            arguments: BTreeMap::new(),
        })
        .await
        .expect("bind");
    }
    let routed = staging
        .publish(
            "events",
            publish("order.new", "via exchange"),
            PublishOptions { queue_names: true },
        )
        .await
        .expect("publish");
    assert_eq!(routed[0].queues, vec!["orders".to_owned()]);
    staging
        .publish(
            "",
            publish("orders", "via default"),
            PublishOptions::default(),
        )
        .await
        .expect("default exchange");
    staging
        .publish(
            "amq.direct",
            publish("orders", "nowhere"),
            PublishOptions::default(),
        )
        .await
        .expect("an unused built-in exchange routes nowhere");
    let got = staging.receive("orders", RECEIVE).await.expect("receive");
    assert_eq!(bodies(&got), ["via exchange", "via default"]);
    assert!(root.receive("orders", RECEIVE).await.expect("/").is_empty());
    // Each view lists its own, with the client's names.
    let names = |qs: Vec<crate::api::QueueInfo>| qs.into_iter().map(|q| q.name).collect::<Vec<_>>();
    assert_eq!(names(staging.list().await), ["orders"]);
    assert_eq!(names(root.list().await), ["orders"]);
    assert_eq!(broker.list().await.len(), 2);
    assert!(staging.exchanges().iter().any(|e| e.name == "amq.topic"));
    assert_eq!(staging.bindings(None, None)[0].source, "events");
    // Errors name things as the client does.
    let missing = staging.info("nope").await.expect_err("missing");
    assert_eq!(missing.to_string(), "queue 'nope' does not exist");
    // No name from one vhost reaches into another.
    let escape = root.info("\0staging\0orders").await.expect_err("escape");
    assert!(
        matches!(escape, BrokerError::InvalidName { .. }),
        "{escape}"
    );
    assert!(matches!(
        broker.vhost("nowhere"),
        Err(BrokerError::NotFound { .. })
    ));
}

#[tokio::test]
async fn dead_letters_go_to_the_dead_letter_queue_of_their_own_vhost() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = open(dir.path(), &MemStore::default()).await;
    broker.access().add_vhost("v").expect("vhost");
    let v = broker.vhost("v").expect("v");
    let options = QueueOptions {
        dead_letter_exchange: Some(String::new()),
        dead_letter_routing_key: Some("failed".into()),
        ..QueueOptions::default()
    };
    v.declare("failed", QueueOptions::default())
        .await
        .expect("dlq");
    v.declare("work", options.clone()).await.expect("work");
    assert_eq!(v.options("work").expect("options"), options);
    v.send("work", vec![text("job")]).await.expect("send");
    let got = v.receive("work", RECEIVE).await.expect("receive");
    let receipts = got.iter().filter_map(|d| d.receipt.clone()).collect();
    let nack = NackOptions {
        requeue: false,
        delay_ms: None,
    };
    v.nack("work", receipts, nack).await.expect("nack");
    let dead = v.receive("failed", RECEIVE).await.expect("dead letters");
    assert_eq!(bodies(&dead), ["job"]);
    let info = dead[0].dead_letter.as_ref().expect("death");
    assert_eq!(info.source_queue, "work");
    assert_eq!(info.first_death.queue, "work");
}

#[tokio::test]
async fn deleting_a_vhost_deletes_what_it_holds_and_a_restart_keeps_the_others() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = MemStore::default();
    {
        let broker = open(dir.path(), &store).await;
        broker.access().add_vhost("a").expect("a");
        broker.access().add_vhost("b").expect("b");
        for name in ["a", "b"] {
            let v = broker.vhost(name).expect("view");
            v.declare("q", QueueOptions::default()).await.expect("q");
            v.declare_exchange("x", ExchangeOptions::of(ExchangeType::Fanout))
                .await
                .expect("x");
            v.bind(Binding {
                source: "amq.fanout".into(),
                destination: "q".into(),
                destination_type: DestinationType::Queue,
                routing_key: String::new(),
                arguments: BTreeMap::new(),
            })
            .await
            .expect("bind a built-in");
            v.send("q", vec![text(name)]).await.expect("send");
        }
        broker.delete_vhost("a").await.expect("delete a");
        assert!(broker.vhost("a").is_err());
        assert!(broker.list().await.iter().all(|q| !q.name.contains('a')));
        assert!(
            broker
                .exchanges()
                .iter()
                .all(|e| !e.name.starts_with("\0a\0"))
        );
        assert!(matches!(
            broker.delete_vhost("/").await,
            Err(BrokerError::PreconditionFailed { .. })
        ));
        broker.shutdown().await;
    }
    let broker = open(dir.path(), &store).await;
    let b = broker.vhost("b").expect("b");
    let got = b.receive("q", RECEIVE).await.expect("b's queue");
    assert_eq!(bodies(&got), ["b"]);
    assert_eq!(b.bindings(Some("amq.fanout"), None).len(), 1);
    assert!(b.exchange("x").is_ok());
    assert_eq!(broker.list().await.len(), 1);
}
