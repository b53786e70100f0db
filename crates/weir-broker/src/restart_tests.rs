//! What a restart brings back, over real files (the gated file system of
//! `broker_tests`): a queue actor that panics is restarted from its log, and failed
//! after `MAX_PANICS` until the next start (issue 17; `supervisor`); any name maps to
//! a safe directory and comes back; a start deletes exclusive queues and keeps
//! auto-delete ones, and the flags that say so.

use std::collections::BTreeSet;

use crate::api::{QueueOptions, ReceiveRequest};
use crate::broker_tests::{
    bounded, drain, fan_out_to, gated_broker, message, receive_all, reopen, until_stats,
};

/// The actor of a queue that panics is restarted from its log: a caller whose
/// answer the dead actor held (a long poll) gets an error at once, a command queued
/// behind the panic is served by the new actor, every durable message is there
/// again (a shared one once), leases end as at a restart, and another queue never
/// notices.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_whose_actor_panics_is_restarted_from_its_log() {
    use crate::{PublishMessage, PublishOptions};
    let dir = tempfile::tempdir().expect("tempdir");
    let (broker, _gate) = gated_broker(dir.path()).await;
    for name in ["q", "other"] {
        broker
            .declare(name, QueueOptions::default())
            .await
            .expect("declare");
    }
    fan_out_to(&broker, &["q", "other"]).await;
    broker
        .send("q", vec![message("a"), message("b"), message("c")])
        .await
        .expect("send");
    broker
        .publish(
            "fan",
            vec![PublishMessage {
                routing_key: String::new(),
                mandatory: false,
                message: message("s"),
            }],
            PublishOptions::default(),
        )
        .await
        .expect("publish");
    let leased = broker.receive("q", receive_all(10)).await.expect("receive");
    assert_eq!(leased.len(), 4);
    let poll = {
        let broker = broker.clone();
        tokio::spawn(async move {
            broker
                .receive(
                    "q",
                    ReceiveRequest {
                        max: 1,
                        wait_ms: 20_000,
                        visibility_timeout_ms: None,
                    },
                )
                .await
        })
    };
    until_stats(&broker, "q", |s| s.consumers == 1).await;

    broker.panic_queue("q").await.expect("panic");
    let queued = {
        let broker = broker.clone();
        tokio::spawn(async move { broker.send("q", vec![message("d")]).await })
    };
    let polled = bounded("the long poll the dead actor held", poll)
        .await
        .expect("task");
    let error = polled.expect_err("an error, not an answer from a dead actor");
    assert_eq!(error.code(), "unavailable", "{error}");
    bounded("the send queued behind the panic", queued)
        .await
        .expect("task")
        .expect("served by the restarted actor");

    // Another queue never noticed.
    broker
        .send("other", vec![message("x")])
        .await
        .expect("send");
    let others: BTreeSet<String> = drain(&broker, "other").await;
    assert_eq!(others, BTreeSet::from(["s".to_owned(), "x".to_owned()]));

    // The old leases ended with the actor; their receipts are stale.
    let report = broker
        .ack("q", vec![leased[0].receipt.clone().expect("receipt")])
        .await
        .expect("ack");
    assert_eq!(report.failed[0].1.code(), "stale_receipt", "{report:?}");
    let ids = drain(&broker, "q").await;
    assert_eq!(
        ids,
        ["a", "b", "c", "d", "s"]
            .into_iter()
            .map(str::to_owned)
            .collect::<BTreeSet<_>>(),
        "everything durable, the shared message once"
    );
    broker.shutdown().await;

    let broker = reopen(dir.path(), broker).await;
    assert!(
        drain(&broker, "q").await.is_empty(),
        "the acks were durable"
    );
    broker.shutdown().await;
}

/// A queue whose actor panics again and again (a message that makes it panic each
/// time, say) is not restarted forever: after `MAX_PANICS` it is failed. Every
/// request to it gets `unavailable` with a reason that says so, other queues work,
/// it can be deleted, and the next start recovers it from its log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_that_keeps_panicking_is_failed_until_the_next_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (broker, _gate) = gated_broker(dir.path()).await;
    for name in ["q", "doomed", "other"] {
        broker
            .declare(name, QueueOptions::default())
            .await
            .expect("declare");
        broker.send(name, vec![message("a")]).await.expect("send");
    }
    for name in ["q", "doomed"] {
        for _ in 0..crate::supervisor::MAX_PANICS {
            broker.panic_queue(name).await.expect("panic");
            // Queued behind the panic: answered by the next actor, or the failed queue.
            broker.info(name).await.expect("info");
        }
    }
    let error = broker
        .send("q", vec![message("b")])
        .await
        .expect_err("a failed queue");
    assert_eq!(error.code(), "unavailable", "{error}");
    let text = error.to_string();
    assert!(
        text.contains("failed") && text.contains("panicked") && text.contains("restarts"),
        "the reason says what happened and what brings it back: {text}"
    );
    let error = broker
        .receive("q", receive_all(1))
        .await
        .expect_err("a failed queue");
    assert_eq!(error.code(), "unavailable", "{error}");
    assert_eq!(
        drain(&broker, "other").await,
        BTreeSet::from(["a".to_owned()])
    );
    bounded("deleting a failed queue", broker.delete("doomed"))
        .await
        .expect("delete");
    bounded("the shutdown", broker.shutdown()).await;

    let broker = reopen(dir.path(), broker).await;
    assert_eq!(
        drain(&broker, "q").await,
        BTreeSet::from(["a".to_owned()]),
        "recovered from its log"
    );
    assert_eq!(
        broker.info("doomed").await.unwrap_err().code(),
        "queue_not_found"
    );
    broker.shutdown().await;
}

/// Queue names are any UTF-8 up to 255 bytes and never paths: names that would
/// escape, differ only in case or in Unicode normalisation are separate queues in
/// `queues/@<id>` directories, and come back with their messages. A data directory
/// from before (a queue in `queues/<name>`, no `name` file) opens where it is, and
/// an `@<id>` directory whose declaration never finished is removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_name_is_a_queue_and_the_data_directory_maps_names_safely() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (broker, _gate) = gated_broker(dir.path()).await;
    let long = "ü".repeat(127);
    let names = [
        "celery@host.celery.pidbox",
        "../../escaped",
        "a/b",
        "/",
        ".",
        "..",
        "Q",
        "q",
        "caf\u{e9}",
        "cafe\u{301}",
        "with space\tand tab",
        long.as_str(),
    ];
    for name in names {
        broker
            .declare(name, QueueOptions::default())
            .await
            .unwrap_or_else(|e| panic!("declare {name:?}: {e}"));
        broker
            .send(name, vec![message(name)])
            .await
            .unwrap_or_else(|e| panic!("send to {name:?}: {e}"));
    }
    let too_long = "x".repeat(256);
    let refused = broker
        .declare(&too_long, QueueOptions::default())
        .await
        .expect_err("256 bytes is over a short string");
    assert_eq!(refused.code(), "invalid_name");
    assert_eq!(
        broker
            .declare("", QueueOptions::default())
            .await
            .unwrap_err()
            .code(),
        "invalid_name"
    );
    // The legacy layout: the queue `old` moved to `queues/old` without its name.
    broker
        .declare("old", QueueOptions::default())
        .await
        .expect("declare old");
    broker
        .send("old", vec![message("old")])
        .await
        .expect("send");
    broker.shutdown().await;
    let queues = dir.path().join("queues");
    let old_dir = std::fs::read_dir(&queues)
        .expect("queues")
        .map(|e| e.expect("entry").path())
        .find(|d| std::fs::read(d.join("name")).is_ok_and(|n| n == b"old"))
        .expect("old's directory");
    std::fs::remove_file(old_dir.join("name")).expect("remove name");
    std::fs::rename(&old_dir, queues.join("old")).expect("to the legacy layout");
    // An unfinished declaration.
    std::fs::create_dir(queues.join("@4000")).expect("leftover");
    std::fs::write(queues.join("@4000").join("name"), "half").expect("leftover name");
    for entry in std::fs::read_dir(&queues).expect("queues") {
        let file = entry
            .expect("entry")
            .file_name()
            .to_string_lossy()
            .into_owned();
        assert!(
            file.starts_with('@') || file == "old",
            "a name became a path: {file:?}"
        );
    }
    assert!(!dir.path().join("escaped").exists());

    let broker = reopen(dir.path(), broker).await;
    let mut listed: Vec<String> = broker.list().await.into_iter().map(|q| q.name).collect();
    listed.sort();
    let mut expected: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    expected.push("old".to_owned());
    expected.sort();
    assert_eq!(listed, expected);
    for name in names.iter().copied().chain(["old"]) {
        assert_eq!(
            drain(&broker, name).await,
            BTreeSet::from([name.to_owned()]),
            "queue {name:?} after a restart"
        );
    }
    assert!(!queues.join("@4000").exists(), "the leftover is removed");
    // The legacy queue is deleted like any other.
    broker.delete("old").await.expect("delete old");
    assert!(!queues.join("old").exists());
    broker.shutdown().await;
}

/// An exclusive queue never outlives the broker run that declared it: the next
/// start deletes it with its bindings (and an auto-delete exchange left without
/// any goes with them), while an auto-delete queue keeps its flag.
#[tokio::test]
async fn a_start_deletes_exclusive_queues_and_keeps_auto_delete_ones() {
    use crate::routing::{Binding, DestinationType, ExchangeOptions, ExchangeType};
    let dir = tempfile::tempdir().expect("tempdir");
    let (broker, _gate) = gated_broker(dir.path()).await;
    let exclusive = QueueOptions {
        exclusive: true,
        ..QueueOptions::default()
    };
    let auto_delete = QueueOptions {
        auto_delete: true,
        ..QueueOptions::default()
    };
    broker.declare("owned", exclusive).await.expect("declare");
    broker.declare("brief", auto_delete).await.expect("declare");
    broker
        .declare("kept", QueueOptions::default())
        .await
        .expect("declare");
    broker
        .send("owned", vec![message("owned")])
        .await
        .expect("send");
    let fanout = ExchangeOptions {
        kind: ExchangeType::Fanout,
        durable: true,
        auto_delete: true,
        alternate_exchange: None,
        internal: false,
    };
    broker
        .declare_exchange("fan", fanout)
        .await
        .expect("declare exchange");
    broker
        .bind(Binding {
            source: "fan".into(),
            destination: "owned".into(),
            destination_type: DestinationType::Queue,
            routing_key: String::new(),
            arguments: std::collections::BTreeMap::new(),
        })
        .await
        .expect("bind");
    broker.shutdown().await;
    let broker = reopen(dir.path(), broker).await;
    assert_eq!(
        broker.info("owned").await.unwrap_err().code(),
        "queue_not_found"
    );
    assert!(broker.bindings(None, Some("owned")).is_empty());
    assert!(
        broker.exchange("fan").is_err(),
        "gone with its last binding"
    );
    assert!(
        broker
            .info("brief")
            .await
            .expect("kept")
            .options
            .auto_delete
    );
    assert!(broker.info("kept").await.is_ok());
    // The name is free again.
    broker
        .declare("owned", QueueOptions::default())
        .await
        .expect("declare again");
}

/// A flag asked off differs from one that is on, although a false flag is left out
/// of `queue.json`.
#[test]
fn flags_left_out_when_false_still_differ() {
    let on = QueueOptions {
        auto_delete: true,
        ..QueueOptions::default()
    };
    let off = QueueOptions::default();
    assert_eq!(
        off.difference(&on).as_deref(),
        Some("auto_delete is true but false was asked")
    );
    assert_eq!(
        on.difference(&off).as_deref(),
        Some("auto_delete is false but true was asked")
    );
    assert_eq!(off.difference(&QueueOptions::default()), None);
    let json = serde_json::to_string(&off).expect("serializes");
    assert!(
        !json.contains("exclusive") && !json.contains("auto_delete"),
        "{json}"
    );
}
