//! File descriptors (issue 17): the broker raises its soft open-file limit to the hard
//! one, refuses a queue once the budget that limit leaves for queue logs is spent
//! (400 `limit_exceeded` over HTTP, 406 over AMQP; never a 500 and never a queue
//! half made), keeps both listeners answering, and after `kill -9` restarts with
//! every queue it accepted.
//!
//! The broker runs under `prlimit --nofile=256:400`, so the limit is reached after
//! a few dozen queues: 400 files, less 64 kept for the broker itself and 200 (half
//! the limit, the cap) for connections, leaves 136 for logs, two per queue and two
//! for the shared log (docs/configuration.md).

use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use serde_json::json;
use weir_testkit::Broker;

use crate::Api;

#[tokio::test]
async fn queues_are_refused_at_the_file_budget_and_every_accepted_one_survives_a_kill9() {
    let mut broker = Broker::start_wrapped(&["prlimit", "--nofile=256:400", "--"], &[])
        .await
        .expect("broker starts");
    let api = Api::new(&broker);
    let mut accepted: Vec<String> = Vec::new();
    let (status, refusal) = loop {
        let name = format!("q{}", accepted.len());
        let (status, body) = api
            .call("PUT", &format!("/api/queues/{name}"), Some(json!({})))
            .await;
        if status != 201 {
            break (status, body);
        }
        api.send_text(&name, &name).await;
        accepted.push(name);
        assert!(accepted.len() < 1_000, "no limit was reached");
    };
    assert_eq!(status, 400, "refused with a 4xx: {refusal}");
    assert_eq!(refusal["error"], "limit_exceeded", "{refusal}");
    // Under the soft limit of 256 the budget would have been 256 - 64 - 128 = 64
    // files, 31 queues: more were accepted, so the limit was raised to 400.
    assert!(
        accepted.len() > 31,
        "only {} queues: was the limit raised?",
        accepted.len()
    );
    let refused = format!("q{}", accepted.len());
    let (status, _) = api
        .call("GET", &format!("/api/queues/{refused}"), None)
        .await;
    assert_eq!(status, 404, "nothing of the refused queue is left");

    // Both listeners still answer, and AMQP refuses the same way.
    let (status, _) = api.call("GET", "/healthz", None).await;
    assert_eq!(status, 200);
    let connection = Connection::connect(&broker.amqp_url(), ConnectionProperties::default())
        .await
        .expect("an AMQP connection is accepted");
    let channel = connection.create_channel().await.expect("channel");
    let err = channel
        .queue_declare(
            "over-amqp".into(),
            QueueDeclareOptions::durable(),
            FieldTable::default(),
        )
        .await
        .expect_err("no room for another queue");
    assert!(err.to_string().contains("PRECONDITION_FAILED"), "{err}");
    let _ = connection.close(200, "bye".into()).await;

    broker.kill9().await.expect("kill -9");
    broker
        .restart()
        .await
        .expect("the broker restarts under the same limit");
    let api = Api::new(&broker);
    for name in &accepted {
        let stats = api.stats(name).await;
        assert_eq!(stats["ready"], 1, "{name}: {stats}");
        let got = api.receive(name, "max=10").await;
        assert_eq!(got.len(), 1, "{name}");
        assert_eq!(got[0]["body"], name.as_str());
    }
    let (status, _) = api
        .call("GET", &format!("/api/queues/{refused}"), None)
        .await;
    assert_eq!(status, 404);
    // The budget is the same after the restart: still full, until a queue goes.
    let (status, body) = api
        .call("PUT", &format!("/api/queues/{refused}"), Some(json!({})))
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = api.call("DELETE", "/api/queues/q0", None).await;
    assert_eq!(status, 204);
    api.create(&refused, json!({})).await;
}
