//! Definitions export and import (issue 20): `weir definitions export` on one
//! broker and `import` on a fresh one rebuild its users (with their hashes), vhosts,
//! permissions, queues (all their options), exchanges and bindings; a RabbitMQ 3.10
//! export imports too, with what weir has no counterpart for reported.

use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use serde_json::{Value, json};
use weir_testkit::Broker;

use crate::Api;
use crate::cli::weir;

async fn info(api: &Api, queue: &str) -> Value {
    let (status, body) = api.call("GET", &format!("/api/queues/{queue}"), None).await;
    assert_eq!(status, 200, "{body}");
    body
}

/// A broker with a user, a vhost, permissions, two queues (one with weir's own
/// options), an exchange, a binding and an exclusive queue (held by the
/// connection returned).
async fn populated_source() -> (Broker, lapin::Connection, Value) {
    let source = Broker::start().await.expect("broker starts");
    weir(
        &source,
        &["user", "add", "app", "s3cret", "--tags", "monitoring"],
        b"",
    )
    .await
    .ok();
    weir(&source, &["vhost", "add", "staging"], b"").await.ok();
    weir(
        &source,
        &[
            "permissions",
            "set",
            "--vhost",
            "staging",
            "app",
            "",
            "^app",
            ".*",
        ],
        b"",
    )
    .await
    .ok();
    let api = Api::new(&source);
    let jobs = json!({"max_deliveries": 3, "dead_letter_queue": "jobs-dlq", "message_ttl_ms": 60000, "max_priority": 5});
    api.create("jobs", jobs.clone()).await;
    let (s, _) = api
        .call(
            "PUT",
            "/api/exchanges/events",
            Some(json!({"type": "topic"})),
        )
        .await;
    assert_eq!(s, 201);
    let binding = json!({"source": "events", "destination": "jobs", "routing_key": "job.#"});
    assert_eq!(
        api.call("POST", "/api/bindings", Some(binding)).await.0,
        201
    );
    // An exclusive queue is its connection's, not part of the definitions.
    let conn =
        lapin::Connection::connect(&source.amqp_url(), lapin::ConnectionProperties::default())
            .await
            .unwrap();
    let channel = conn.create_channel().await.unwrap();
    let exclusive = QueueDeclareOptions {
        exclusive: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare("mine".into(), exclusive, FieldTable::default())
        .await
        .unwrap();
    (source, conn, jobs)
}

#[tokio::test]
async fn an_export_rebuilds_a_fresh_broker() {
    let (source, conn, jobs) = populated_source().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("defs.json");
    weir(
        &source,
        &["definitions", "export", file.to_str().unwrap()],
        b"",
    )
    .await
    .ok();
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(!text.contains("s3cret"), "hashes, never passwords");
    let defs: Value = serde_json::from_str(&text).unwrap();
    let names = |key: &str| -> Vec<String> {
        defs[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(names("users"), ["app", "guest"]);
    assert_eq!(names("queues"), ["jobs", "jobs-dlq"], "no exclusive queue");
    assert_eq!(names("exchanges"), ["events"], "no built-in exchange");
    let jobs_def = &defs["queues"][0];
    assert_eq!(
        jobs_def["arguments"]["x-delivery-limit"], 2,
        "RabbitMQ's view too"
    );
    assert_eq!(jobs_def["arguments"]["x-message-ttl"], 60000);

    let target = Broker::start().await.expect("broker starts");
    let imported = weir(
        &target,
        &["definitions", "import", file.to_str().unwrap(), "--json"],
        b"",
    )
    .await
    .ok()
    .json();
    // jobs-dlq is made with jobs (its dead-letter queue), then found identical.
    assert_eq!(
        (
            imported["queues_created"].as_u64(),
            imported["existed"].as_u64()
        ),
        (Some(1), Some(1)),
        "{imported}"
    );
    assert_eq!(imported["exchanges_created"], 1, "{imported}");
    assert_eq!(imported["bindings_created"], 1, "{imported}");
    assert_eq!(imported["not_imported"], json!([]));
    let target_api = Api::new(&target);
    let info = info(&target_api, "jobs").await;
    for (key, value) in jobs.as_object().unwrap() {
        assert_eq!(&info["options"][key], value, "{key}: {info}");
    }
    // The binding routes, the user logs in with its password, its permissions hold.
    let (s, v) = target_api
        .call(
            "POST",
            "/api/exchanges/events/publish",
            Some(json!({"routing_key": "job.new", "body": "x"})),
        )
        .await;
    assert_eq!((s, &v["routed"]), (201, &json!(1)), "{v}");
    let perms = weir(
        &target,
        &["permissions", "ls", "--vhost", "staging", "--json"],
        b"",
    );
    let perms = perms.await.ok().json();
    assert_eq!(perms["permissions"][0]["write"], "^app", "{perms}");
    let users = reqwest::Client::new()
        .get(format!("{}/api/whoami", target.http_url()))
        .basic_auth("app", Some("s3cret"))
        .send()
        .await
        .unwrap();
    assert_eq!(users.status().as_u16(), 200);
    // Importing again changes nothing and says so.
    let again = weir(
        &target,
        &["definitions", "import", file.to_str().unwrap(), "--json"],
        b"",
    )
    .await
    .ok()
    .json();
    assert_eq!(
        (again["queues_created"].as_u64(), again["existed"].as_u64()),
        (Some(0), Some(4)),
        "{again}"
    );
    let _ = conn.close(200, "bye".into()).await;
}

/// A RabbitMQ 3.10 export (its shape, its SHA-256 password hash, `x-` arguments,
/// policies) imports; what weir has no counterpart for is reported, not dropped.
#[tokio::test]
async fn a_rabbitmq_export_imports_and_reports_what_weir_does_not_have() {
    let broker = Broker::start().await.expect("broker starts");
    let rabbit = json!({
        "rabbit_version": "3.10.8",
        "rabbitmq_version": "3.10.8",
        "product_name": "RabbitMQ",
        "product_version": "3.10.8",
        "users": [{"name": "migrated", "password_hash": "kI3GCpQLeS8y/l5dz2UIcNOYMjgxPF39y3Wy4k4pBH2q5WEO",
                   "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": "management", "limits": {}}],
        "vhosts": [{"name": "/", "limits": [], "metadata": {"description": "", "tags": []}}],
        "permissions": [{"user": "migrated", "vhost": "/", "configure": "^orders", "write": ".*", "read": ".*"}],
        "topic_permissions": [],
        "parameters": [],
        "global_parameters": [{"name": "internal_cluster_id", "value": "rabbitmq-cluster-id-x"}],
        "policies": [{"vhost": "/", "name": "ttl", "pattern": ".*", "apply-to": "queues", "definition": {"message-ttl": 1000}, "priority": 0}],
        "queues": [{"name": "orders", "vhost": "/", "durable": true, "auto_delete": false,
                    "arguments": {"x-queue-type": "quorum", "x-delivery-limit": 4, "x-dead-letter-exchange": "orders.dlx", "x-max-length": 1000, "x-overflow": "reject-publish"}}],
        "exchanges": [{"name": "orders.dlx", "vhost": "/", "type": "fanout", "durable": true, "auto_delete": false, "internal": false, "arguments": {}}],
        "bindings": [{"source": "orders.dlx", "vhost": "/", "destination": "orders", "destination_type": "queue", "routing_key": "", "arguments": {}}]
    });
    let (s, report) = Api::new(&broker)
        .call("POST", "/api/definitions", Some(rabbit))
        .await;
    assert_eq!(s, 200, "{report}");
    assert_eq!(
        report["not_imported"],
        json!(["global_parameters", "policies"]),
        "{report}"
    );
    let info = info(&Api::new(&broker), "orders").await;
    assert_eq!(
        info["options"]["max_deliveries"], 5,
        "x-delivery-limit counts redeliveries: {info}"
    );
    assert_eq!(info["options"]["max_length"], 1000);
    assert_eq!(info["options"]["overflow"], "reject-publish");
    assert_eq!(info["options"]["dead_letter_exchange"], "orders.dlx");
    // RabbitMQ's hash works (and is upgraded to argon2id at this login).
    let answer = reqwest::Client::new()
        .get(format!("{}/api/whoami", broker.http_url()))
        .basic_auth("migrated", Some("rabbit-pw"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 200);
    let stored = std::fs::read_to_string(broker.data_dir().join("access.json")).unwrap();
    assert!(
        stored.contains("$argon2id$") && !stored.contains("kI3GCpQLeS8y"),
        "{stored}"
    );
    // A document out of shape changes nothing.
    let (s, v) = Api::new(&broker)
        .call(
            "POST",
            "/api/definitions",
            Some(json!({"queues": [{"name": "q2", "arguments": {"x-max-length": -1}}]})),
        )
        .await;
    assert_eq!(
        (s, v["error"].as_str()),
        (400, Some("invalid_argument")),
        "{v}"
    );
    assert_eq!(
        Api::new(&broker)
            .call("GET", "/api/queues/q2", None)
            .await
            .0,
        404
    );
}
