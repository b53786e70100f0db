//! Exchanges, bindings, publish and topic subscriptions over HTTP, against the real
//! binary.

use serde_json::{Value, json};
use weir_testkit::Broker;

use crate::{Api, bodies};

async fn start() -> (Broker, Api) {
    let broker = Broker::start().await.expect("broker starts");
    let api = Api::new(&broker);
    (broker, api)
}

async fn exchange(api: &Api, name: &str, options: Value) {
    let (s, body) = api
        .call("PUT", &format!("/api/exchanges/{name}"), Some(options))
        .await;
    assert!(s == 201 || s == 200, "declare {name}: {s} {body}");
}

async fn bind(api: &Api, binding: Value) {
    let (s, body) = api.call("POST", "/api/bindings", Some(binding)).await;
    assert!(s == 201 || s == 200, "bind: {s} {body}");
}

/// Publishes and answers with the queues each message reached (`?queues=true`).
async fn publish(api: &Api, exchange: &str, message: Value) -> Value {
    let (s, body) = api
        .call(
            "POST",
            &format!("/api/exchanges/{exchange}/publish?queues=true"),
            Some(message),
        )
        .await;
    assert_eq!(s, 201, "publish: {body}");
    body
}

async fn ready(api: &Api, queue: &str) -> u64 {
    api.stats(queue).await["ready"].as_u64().unwrap()
}

#[tokio::test]
async fn direct_topic_fanout_and_headers_exchanges_route_as_rabbitmq() {
    let (_b, api) = start().await;
    for q in ["q1", "q2", "q3"] {
        api.create(q, json!({})).await;
    }
    exchange(&api, "d", json!({"type": "direct"})).await;
    exchange(&api, "t", json!({"type": "topic"})).await;
    exchange(&api, "f", json!({"type": "fanout"})).await;
    exchange(&api, "h", json!({"type": "headers"})).await;
    bind(
        &api,
        json!({"source": "d", "destination": "q1", "routing_key": "red"}),
    )
    .await;
    bind(
        &api,
        json!({"source": "d", "destination": "q2", "routing_key": "red"}),
    )
    .await;
    bind(
        &api,
        json!({"source": "t", "destination": "q1", "routing_key": "*.orange.*"}),
    )
    .await;
    bind(
        &api,
        json!({"source": "t", "destination": "q2", "routing_key": "lazy.#"}),
    )
    .await;
    bind(&api, json!({"source": "f", "destination": "q3"})).await;
    bind(&api, json!({"source": "h", "destination": "q3", "arguments": {"x-match": "any", "format": "pdf", "type": "report"}})).await;

    let out = publish(&api, "d", json!({"routing_key": "red", "body": "d1"})).await;
    assert_eq!(out["messages"][0]["queues"], json!(["q1", "q2"]));
    let out = publish(
        &api,
        "t",
        json!({"messages": [
            {"routing_key": "quick.orange.rabbit", "body": "t1"},
            {"routing_key": "lazy.orange.elephant", "body": "t2"},
            {"routing_key": "lazy", "body": "t3"},
            {"routing_key": "quick.brown.fox", "body": "t4"}
        ]}),
    )
    .await;
    assert_eq!(out["messages"][0]["queues"], json!(["q1"]));
    assert_eq!(out["messages"][1]["queues"], json!(["q1", "q2"]));
    assert_eq!(out["messages"][2]["queues"], json!(["q2"]));
    assert_eq!(out["messages"][3]["unroutable"], true);
    assert_eq!(
        (out["routed"].as_u64(), out["unroutable"].as_u64()),
        (Some(4), Some(1))
    );
    publish(&api, "f", json!({"routing_key": "ignored", "body": "f1"})).await;
    let out = publish(
        &api,
        "h",
        json!({"messages": [
            {"body": "h1", "headers": {"format": "pdf"}},
            {"body": "h2", "headers": {"format": "zip"}}
        ]}),
    )
    .await;
    assert_eq!(
        (
            out["messages"][0]["routed"].as_u64(),
            out["messages"][1]["routed"].as_u64()
        ),
        (Some(1), Some(0))
    );
    // The default exchange routes to the queue named by the key.
    let out = publish(
        &api,
        "amq.default",
        json!({"routing_key": "q3", "body": "direct to q3"}),
    )
    .await;
    assert_eq!(out["messages"][0]["queues"], json!(["q3"]));

    assert_eq!(
        bodies(&api.receive("q1", "max=10").await),
        ["d1", "t1", "t2"]
    );
    assert_eq!(
        bodies(&api.receive("q2", "max=10").await),
        ["d1", "t2", "t3"]
    );
    assert_eq!(
        bodies(&api.receive("q3", "max=10").await),
        ["f1", "h1", "direct to q3"]
    );
}

#[tokio::test]
async fn exchange_to_exchange_bindings_deliver_once_and_loops_are_refused() {
    let (_b, api) = start().await;
    api.create("q", json!({})).await;
    for x in ["a", "b", "c"] {
        exchange(&api, x, json!({"type": "fanout"})).await;
    }
    bind(
        &api,
        json!({"source": "a", "destination": "b", "destination_type": "exchange"}),
    )
    .await;
    bind(
        &api,
        json!({"source": "b", "destination": "c", "destination_type": "exchange"}),
    )
    .await;
    bind(
        &api,
        json!({"source": "a", "destination": "c", "destination_type": "exchange"}),
    )
    .await;
    bind(&api, json!({"source": "c", "destination": "q"})).await;
    let (s, body) = api
        .call(
            "POST",
            "/api/bindings",
            Some(json!({"source": "c", "destination": "a", "destination_type": "exchange"})),
        )
        .await;
    assert_eq!(
        (s, body["error"].as_str()),
        (409, Some("binding_loop")),
        "{body}"
    );
    let out = publish(&api, "a", json!({"body": "once"})).await;
    assert_eq!(out["messages"][0]["queues"], json!(["q"]));
    assert_eq!(
        ready(&api, "q").await,
        1,
        "reached through two paths, enqueued once"
    );
    let (_, listed) = api.call("GET", "/api/bindings?source=a", None).await;
    assert_eq!(listed["bindings"].as_array().unwrap().len(), 2);
    let (_, listed) = api.call("GET", "/api/bindings?destination=c", None).await;
    assert_eq!(listed["bindings"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn unroutable_messages_go_to_the_alternate_exchange_or_are_reported_when_mandatory() {
    let (_b, api) = start().await;
    api.create("orders", json!({})).await;
    api.create("unrouted", json!({})).await;
    exchange(&api, "ae", json!({"type": "fanout"})).await;
    exchange(
        &api,
        "main",
        json!({"type": "direct", "alternate_exchange": "ae"}),
    )
    .await;
    exchange(&api, "plain", json!({"type": "direct"})).await;
    bind(
        &api,
        json!({"source": "main", "destination": "orders", "routing_key": "order"}),
    )
    .await;
    bind(&api, json!({"source": "ae", "destination": "unrouted"})).await;
    let out = publish(
        &api,
        "main",
        json!({"routing_key": "invoice", "body": "lost?"}),
    )
    .await;
    assert_eq!(out["messages"][0]["queues"], json!(["unrouted"]));
    let out = publish(
        &api,
        "plain",
        json!({"routing_key": "nowhere", "body": "x", "mandatory": true}),
    )
    .await;
    assert_eq!(out["messages"][0]["unroutable"], true);
    assert_eq!(out["returned"], 1);
    let out = publish(
        &api,
        "plain",
        json!({"routing_key": "nowhere", "body": "x"}),
    )
    .await;
    assert_eq!(
        (out["unroutable"].as_u64(), out["returned"].as_u64()),
        (Some(1), Some(0))
    );
}

#[tokio::test]
async fn each_subscriber_gets_its_own_copy_with_its_own_acks_and_dead_letters() {
    let (_b, api) = start().await;
    let (s, sub) = api
        .call("PUT", "/api/topics/user.events/subscriptions/email", Some(json!({"pattern": "user.*", "queue": {"max_deliveries": 1, "dead_letter_queue": "email-dlq"}})))
        .await;
    assert_eq!(s, 201, "{sub}");
    let email_queue = sub["queue"].as_str().unwrap().to_owned();
    let (s, _) = api.call("PUT", "/api/topics/user.events/subscriptions/email", Some(json!({"pattern": "user.*", "queue": {"max_deliveries": 1, "dead_letter_queue": "email-dlq"}}))).await;
    assert_eq!(s, 200, "an identical subscription exists");
    let (_, sms) = api
        .call("PUT", "/api/topics/user.events/subscriptions/sms", None)
        .await;
    let sms_queue = sms["queue"].as_str().unwrap().to_owned();
    let (s, out) = api
        .call(
            "POST",
            "/api/topics/user.events/publish",
            Some(json!({"routing_key": "user.created", "body": "{\"user_id\": 123}"})),
        )
        .await;
    assert_eq!(s, 201);
    assert_eq!(out["messages"][0]["routed"], 2);
    assert_eq!(out["messages"][0]["duplicates"], 0);
    // Without ?queues=true the answer counts the queues and does not name them.
    assert!(out["messages"][0].get("queues").is_none(), "{out}");
    assert!(out["messages"][0].get("duplicate_in").is_none(), "{out}");
    // Independent consumption: email fails (dead-lettered), sms acks.
    let e = api.receive(&email_queue, "max=1").await;
    let (s, _) = api
        .call(
            "POST",
            &format!("/api/queues/{email_queue}/nack"),
            Some(json!({"receipt": crate::receipt(&e[0])})),
        )
        .await;
    assert_eq!(s, 200);
    let m = api.receive(&sms_queue, "max=1").await;
    assert_eq!(bodies(&m), ["{\"user_id\": 123}"]);
    assert_eq!(api.ack(&sms_queue, &[crate::receipt(&m[0])]).await.0, 200);
    api.wait_stats("email-dlq", "the email dead letter", |s| s["ready"] == 1)
        .await;
    let (_, listed) = api
        .call("GET", "/api/topics/user.events/subscriptions", None)
        .await;
    let names: Vec<&str> = listed["subscriptions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["email", "sms"]);
    // A new subscriber needs no publisher change; removing one deletes its queue.
    let (s, _) = api
        .call("DELETE", "/api/topics/user.events/subscriptions/sms", None)
        .await;
    assert_eq!(s, 204);
    let (s, _) = api
        .call("GET", &format!("/api/queues/{sms_queue}"), None)
        .await;
    assert_eq!(s, 404);
    let (_, out) = api
        .call(
            "POST",
            "/api/topics/user.events/publish?queues=true",
            Some(json!({"routing_key": "user.deleted", "body": "bye"})),
        )
        .await;
    assert_eq!(out["messages"][0]["queues"], json!([email_queue]));
}

#[tokio::test]
async fn exchanges_and_bindings_survive_a_restart_and_deleting_a_queue_unbinds_it() {
    let mut broker = Broker::start().await.unwrap();
    let api = Api::new(&broker);
    api.create("kept", json!({})).await;
    api.create("gone", json!({})).await;
    exchange(&api, "durable", json!({"type": "topic"})).await;
    exchange(
        &api,
        "transient",
        json!({"type": "fanout", "durable": false}),
    )
    .await;
    bind(
        &api,
        json!({"source": "durable", "destination": "kept", "routing_key": "a.#"}),
    )
    .await;
    bind(
        &api,
        json!({"source": "durable", "destination": "gone", "routing_key": "#"}),
    )
    .await;
    bind(&api, json!({"source": "transient", "destination": "kept"})).await;
    api.call("PUT", "/api/topics/news/subscriptions/reader", None)
        .await;
    let (s, _) = api.call("DELETE", "/api/queues/gone", None).await;
    assert_eq!(s, 204);
    broker.kill9().await.unwrap();
    broker.restart().await.unwrap();
    let api = Api::new(&broker);
    let (_, list) = api.call("GET", "/api/exchanges", None).await;
    let names: Vec<&str> = list["exchanges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    // RabbitMQ's built-in exchanges are always there, first in name order.
    assert_eq!(
        names,
        [
            "amq.direct",
            "amq.fanout",
            "amq.headers",
            "amq.match",
            "amq.topic",
            "durable",
            "news"
        ],
        "the transient exchange is gone"
    );
    let (_, b) = api.call("GET", "/api/bindings?source=durable", None).await;
    assert_eq!(
        b["bindings"],
        json!([{"source": "durable", "destination": "kept", "destination_type": "queue", "routing_key": "a.#", "arguments": {}}])
    );
    let out = publish(
        &api,
        "durable",
        json!({"routing_key": "a.b", "body": "after restart"}),
    )
    .await;
    assert_eq!(out["messages"][0]["queues"], json!(["kept"]));
    let (_, subs) = api
        .call("GET", "/api/topics/news/subscriptions", None)
        .await;
    assert_eq!(subs["subscriptions"][0]["name"], "reader");
}

#[tokio::test]
async fn exchange_deletion_guards_and_auto_delete() {
    let (_b, api) = start().await;
    api.create("q", json!({})).await;
    exchange(&api, "x", json!({"type": "fanout"})).await;
    exchange(&api, "auto", json!({"type": "fanout", "auto_delete": true})).await;
    bind(&api, json!({"source": "x", "destination": "q"})).await;
    bind(&api, json!({"source": "auto", "destination": "q"})).await;
    let (s, body) = api
        .call("DELETE", "/api/exchanges/x?if_unused=true", None)
        .await;
    assert_eq!(
        (s, body["error"].as_str()),
        (409, Some("precondition_failed"))
    );
    let (s, _) = api
        .call(
            "DELETE",
            "/api/bindings",
            Some(json!({"source": "auto", "destination": "q"})),
        )
        .await;
    assert_eq!(s, 204);
    let (s, _) = api.call("GET", "/api/exchanges/auto", None).await;
    assert_eq!(s, 404, "auto-delete: gone with its last binding");
    let (s, _) = api.call("DELETE", "/api/exchanges/x", None).await;
    assert_eq!(s, 204);
    let (_, b) = api.call("GET", "/api/bindings?destination=q", None).await;
    assert_eq!(b["bindings"], json!([]));
}

#[tokio::test]
#[allow(clippy::too_many_lines)] // one table of bad requests
async fn bad_routing_requests_get_clear_json_errors() {
    let (_b, api) = start().await;
    api.create("q", json!({})).await;
    exchange(&api, "x", json!({"type": "direct"})).await;
    exchange(&api, "h", json!({"type": "headers"})).await;
    let long = "a".repeat(256);
    let cases: Vec<(&str, String, Value, u16, &str)> = vec![
        (
            "PUT",
            "/api/exchanges/y".into(),
            json!({"type": "roundrobin"}),
            400,
            "invalid_json",
        ),
        (
            "PUT",
            "/api/exchanges/y".into(),
            json!({}),
            400,
            "invalid_json",
        ),
        (
            "PUT",
            "/api/exchanges/x".into(),
            json!({"type": "fanout"}),
            409,
            "exchange_exists_with_different_options",
        ),
        (
            "PUT",
            "/api/exchanges/amq.default".into(),
            json!({"type": "direct"}),
            403,
            "access_refused",
        ),
        (
            "PUT",
            format!("/api/exchanges/{}", "x".repeat(256)),
            json!({"type": "direct"}),
            400,
            "invalid_name",
        ),
        (
            "POST",
            "/api/bindings".into(),
            json!({"source": "x", "destination": "missing"}),
            404,
            "queue_not_found",
        ),
        (
            "POST",
            "/api/bindings".into(),
            json!({"source": "nope", "destination": "q"}),
            404,
            "exchange_not_found",
        ),
        (
            "POST",
            "/api/bindings".into(),
            json!({"source": "x", "destination": "nope", "destination_type": "exchange"}),
            404,
            "exchange_not_found",
        ),
        (
            "POST",
            "/api/bindings".into(),
            json!({"source": "x", "destination": "q", "routing_key": long}),
            400,
            "invalid_argument",
        ),
        (
            "POST",
            "/api/bindings".into(),
            json!({"source": "h", "destination": "q", "arguments": {"x-match": "most"}}),
            400,
            "invalid_argument",
        ),
        (
            "POST",
            "/api/bindings".into(),
            json!({"source": "x", "destination": "q", "colour": 1}),
            400,
            "invalid_json",
        ),
        (
            "DELETE",
            "/api/bindings".into(),
            json!({"source": "x", "destination": "q", "routing_key": "none"}),
            404,
            "binding_not_found",
        ),
        (
            "POST",
            "/api/exchanges/nope/publish".into(),
            json!({"body": "x"}),
            404,
            "exchange_not_found",
        ),
        (
            "POST",
            "/api/exchanges/x/publish".into(),
            json!({"routing_key": 5, "body": "x"}),
            400,
            "invalid_json",
        ),
        (
            "POST",
            "/api/exchanges/x/publish".into(),
            json!({"routing_key": "k"}),
            400,
            "invalid_argument",
        ),
        (
            "DELETE",
            "/api/exchanges/amq.default".into(),
            json!(null),
            403,
            "access_refused",
        ),
        (
            "PUT",
            "/api/topics/x/subscriptions/s".into(),
            json!({}),
            409,
            "precondition_failed",
        ),
        (
            "DELETE",
            "/api/topics/t/subscriptions/none".into(),
            json!(null),
            404,
            "subscription_not_found",
        ),
        (
            "POST",
            "/api/topics/x/publish".into(),
            json!({"body": "x"}),
            409,
            "precondition_failed",
        ),
        (
            "POST",
            "/api/topics/nothing/publish".into(),
            json!({"body": "x"}),
            404,
            "exchange_not_found",
        ),
    ];
    for (method, path, body, status, code) in cases {
        let body = (!body.is_null()).then_some(body);
        let (s, v) = api.call(method, &path, body.clone()).await;
        assert_eq!(
            (s, v["error"].as_str()),
            (status, Some(code)),
            "{method} {path} {body:?} → {v}"
        );
    }
    // Nothing was disturbed.
    bind(
        &api,
        json!({"source": "x", "destination": "q", "routing_key": "k"}),
    )
    .await;
    let out = publish(&api, "x", json!({"routing_key": "k", "body": "fine"})).await;
    assert_eq!(out["messages"][0]["routed"], 1);
}

fn body_segments(broker: &Broker) -> usize {
    crate::segment_files(&broker.data_dir().join("bodies"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fanned_out_body_is_stored_once_survives_a_crash_and_its_space_comes_back() {
    let (mut broker, _dir) = crate::broker_with_small_segments().await;
    let api = Api::new(&broker);
    exchange(&api, "photos", json!({"type": "fanout"})).await;
    let queues = ["thumbs", "notify", "analytics"];
    for q in queues {
        api.create(q, json!({})).await;
        bind(&api, json!({"source": "photos", "destination": q})).await;
    }
    let body = "p".repeat(10_000);
    for batch in 0..40 {
        let messages: Vec<Value> = (0..10)
            .map(|i| json!({"body": format!("{batch}-{i}-{body}"), "headers": {"n": format!("{batch}-{i}")}}))
            .collect();
        let out = publish(&api, "photos", json!({"messages": messages})).await;
        assert_eq!(out["routed"], 30);
    }
    // 400 bodies of 10 KB: about 4 MB once in the body log, references in the queues.
    for q in queues {
        let disk = api.stats(q).await["disk_bytes"].as_u64().unwrap();
        assert!(
            disk < 400 * 100,
            "{q} holds {disk} bytes: bodies were copied into it"
        );
    }
    assert!(
        body_segments(&broker) >= 3,
        "the bodies are in the body log"
    );
    broker.kill9().await.unwrap();
    broker.restart().await.unwrap();
    let api = Api::new(&broker);
    for q in queues {
        let mut seen = 0;
        loop {
            let got = api.receive(q, "max=100").await;
            if got.is_empty() {
                break;
            }
            for m in &got {
                let n = m["headers"]["n"].as_str().unwrap();
                assert_eq!(
                    m["body"].as_str().unwrap(),
                    format!("{n}-{body}"),
                    "{q}: body and headers of the same message"
                );
            }
            let receipts: Vec<&str> = got.iter().map(crate::receipt).collect();
            assert_eq!(api.ack(q, &receipts).await.0, 200);
            seen += got.len();
        }
        assert_eq!(seen, 400, "{q} got every message once");
    }
    // Nothing references the bodies any more: their segments go.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    while body_segments(&broker) > 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "body segments stay: {}",
            body_segments(&broker)
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// A queue whose dead letters go through an exchange (RabbitMQ's
/// x-dead-letter-exchange): with its own routing key when none is set, and the
/// dead-letter facts kept.
#[tokio::test]
async fn dead_letters_can_go_through_an_exchange() {
    let broker = Broker::start().await.unwrap();
    let api = Api::new(&broker);
    exchange(&api, "dlx", json!({"type": "direct"})).await;
    api.create("failed.orders", json!({})).await;
    bind(
        &api,
        json!({"source": "dlx", "destination": "failed.orders", "routing_key": "orders.new"}),
    )
    .await;
    api.create("orders", json!({"dead_letter_exchange": "dlx"}))
        .await;
    exchange(&api, "shop", json!({"type": "direct"})).await;
    bind(
        &api,
        json!({"source": "shop", "destination": "orders", "routing_key": "orders.new"}),
    )
    .await;
    let out = publish(
        &api,
        "shop",
        json!({"routing_key": "orders.new", "body": "o-1"}),
    )
    .await;
    assert_eq!(out["messages"][0]["queues"], json!(["orders"]));
    let m = api.receive("orders", "max=1").await;
    let (s, _) = api
        .call(
            "POST",
            "/api/queues/orders/nack",
            Some(json!({"receipt": crate::receipt(&m[0]), "requeue": false})),
        )
        .await;
    assert_eq!(s, 200);
    api.wait_stats("failed.orders", "the dead letter", |s| s["ready"] == 1)
        .await;
    let dead = api.receive("failed.orders", "max=1").await;
    assert_eq!(dead[0]["body"], "o-1");
    assert_eq!(dead[0]["dead_letter"]["reason"], "rejected");
    assert_eq!(dead[0]["dead_letter"]["source_queue"], "orders");
    // Both at once is refused.
    let (s, body) = api
        .call(
            "PUT",
            "/api/queues/both",
            Some(json!({"dead_letter_exchange": "dlx", "dead_letter_queue": "x"})),
        )
        .await;
    assert_eq!(s, 400, "{body}");
    assert_eq!(body["error"], "invalid_argument");
}

/// Exchanges and bindings are capped (`[limits] max_exchanges`, `max_bindings`):
/// over the cap a declaration is refused with 400 `limit_exceeded` and nothing of it
/// is kept; deleting makes room again.
#[tokio::test]
async fn exchanges_and_bindings_are_capped() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("weir.toml");
    // The default and amq.* exchanges are not counted.
    std::fs::write(&config, "[limits]\nmax_exchanges = 2\nmax_bindings = 2\n").unwrap();
    let broker = Broker::start_with(&["--config", config.to_str().unwrap()])
        .await
        .expect("broker starts");
    let api = Api::new(&broker);
    for i in 0..2 {
        exchange(&api, &format!("x{i}"), json!({"type": "fanout"})).await;
    }
    let (s, body) = api
        .call(
            "PUT",
            "/api/exchanges/one-too-many",
            Some(json!({"type": "fanout"})),
        )
        .await;
    assert_eq!(
        (s, body["error"].as_str()),
        (400, Some("limit_exceeded")),
        "{body}"
    );
    // Re-declaring an existing one is still fine at the cap.
    exchange(&api, "x0", json!({"type": "fanout"})).await;

    for q in ["q1", "q2", "q3"] {
        let (s, _) = api
            .call("PUT", &format!("/api/queues/{q}"), Some(json!({})))
            .await;
        assert!(s == 201 || s == 200);
    }
    bind(&api, json!({"source": "x0", "destination": "q1"})).await;
    bind(&api, json!({"source": "x0", "destination": "q2"})).await;
    let (s, body) = api
        .call(
            "POST",
            "/api/bindings",
            Some(json!({"source": "x0", "destination": "q3"})),
        )
        .await;
    assert_eq!(
        (s, body["error"].as_str()),
        (400, Some("limit_exceeded")),
        "{body}"
    );
    let listed = api.call("GET", "/api/bindings?source=x0", None).await.1;
    assert_eq!(
        listed["bindings"].as_array().map(Vec::len),
        Some(2),
        "{listed}"
    );

    // Deleting an exchange (and its two bindings) makes room for both.
    let (s, _) = api.call("DELETE", "/api/exchanges/x0", None).await;
    assert!(s == 204 || s == 200, "{s}");
    exchange(&api, "one-more", json!({"type": "fanout"})).await;
    bind(&api, json!({"source": "one-more", "destination": "q3"})).await;
}
