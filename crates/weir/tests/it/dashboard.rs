//! The dashboard in a real headless Chromium (`tests/browser/dashboard.py`,
//! selenium with Debian's chromium and chromium-driver, which `./scripts/test`
//! installs): a login through the form; the Overview's live figures and stuck list
//! (a queue declared and filled over AMQP shows its depth); the Queues table
//! (filter, sort) and a queue page (peek, a test message, purge with its
//! confirmation; its AMQP consumer linked to its connection); Dead letters (reason,
//! source, body; redrive one, delete the selected, redrive all); Exchanges
//! (unroutable count, bindings, the routing test); Streams (browse, filters, live
//! tail) and a group (lag, reset with a dry run); Admin (a user, its permissions,
//! a vhost added and deleted); the Connections page closing a pika connection,
//! whose client receives 320 with the reason; logging out; a wrong password. With
//! `WEIR_SCREENSHOTS` set the script saves a screenshot per page there (the
//! committed ones are in docs/screenshots/).

use std::process::Stdio;
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use weir_testkit::Broker;

use crate::amqp::{connect, declare, publish_confirmed};
use crate::pika::{port, python, script};
use crate::streams::call;

/// Runs the browser script's `scenarios`; panics with its output unless it
/// prints OK.
async fn browse(broker: &Broker, scenarios: &[&str]) {
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/browser/dashboard.py");
    let out = tokio::time::timeout(
        Duration::from_secs(180),
        tokio::process::Command::new(python())
            .arg(path)
            .args(scenarios)
            .env("WEIR_HTTP_URL", broker.http_url())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("{scenarios:?} timed out"))
    .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}");
    assert!(
        out.status.success() && stdout.contains("OK"),
        "{scenarios:?}:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Queue `orders` declared over AMQP (lapin) with three messages published with
/// confirms, and queue `other` declared over HTTP.
async fn queue_with_orders(broker: &Broker) {
    let connection = connect(broker).await;
    let channel = connection.create_channel().await.unwrap();
    channel
        .confirm_select(lapin::options::ConfirmSelectOptions::default())
        .await
        .unwrap();
    declare(&channel, "orders").await;
    for body in ["order-1", "order-2", "order-3"] {
        publish_confirmed(
            &channel,
            "",
            "orders",
            body.as_bytes(),
            lapin::BasicProperties::default(),
        )
        .await;
    }
    connection.close(200, "done".into()).await.unwrap();
    let (s, v) = call(broker, "PUT", "/api/queues/other", None).await;
    assert_eq!(s, 201, "{v}");
}

/// Queue `slow` whose one message is leased, and its lease extended three times
/// (a worker stuck on it).
async fn a_lease_extended_three_times(broker: &Broker) {
    let (s, v) = call(broker, "PUT", "/api/queues/slow", None).await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = call(
        broker,
        "POST",
        "/api/queues/slow/messages",
        Some(json!({"body": "big job"})),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let (s, got) = call(broker, "POST", "/api/queues/slow/receive", None).await;
    assert_eq!(s, 200, "{got}");
    let receipt = got["messages"][0]["receipt"].clone();
    for _ in 0..3 {
        let extend = json!({"receipts": [receipt], "visibility_timeout_ms": 600_000});
        let (s, v) = call(broker, "POST", "/api/queues/slow/extend", Some(extend)).await;
        assert_eq!(s, 200, "{v}");
    }
}

/// Topic exchange `events` bound to `orders` with `order.*`, and one message
/// published through it that no queue took.
async fn routing_to_orders(broker: &Broker) {
    let (s, v) = call(
        broker,
        "PUT",
        "/api/exchanges/events",
        Some(json!({"type": "topic"})),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let binding = json!({"source": "events", "destination": "orders", "routing_key": "order.*"});
    let (s, v) = call(broker, "POST", "/api/bindings", Some(binding)).await;
    assert_eq!(s, 201, "{v}");
    let lost = json!({"routing_key": "user.created", "body": "nobody"});
    let (s, v) = call(broker, "POST", "/api/exchanges/events/publish", Some(lost)).await;
    assert_eq!((s, &v["unroutable"]), (201, &json!(1)), "{v}");
}

/// Stream `events` with three records (keys, headers), and group `g` that
/// committed the first one and has no live member.
async fn stream_with_a_group(broker: &Broker) {
    let (s, v) = call(broker, "PUT", "/api/streams/events", None).await;
    assert_eq!(s, 201, "{v}");
    let records = json!({"messages": [
        {"key": "user-1", "headers": {"type": "signup"}, "body": "first"},
        {"key": "user-2", "headers": {"type": "login"}, "body": "second"},
        {"key": "user-3", "headers": {"type": "signup"}, "body": "third"},
    ]});
    let (s, v) = call(
        broker,
        "POST",
        "/api/streams/events/messages",
        Some(records),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let group = json!({"start": "first"});
    let (s, v) = call(broker, "PUT", "/api/streams/events/groups/g", Some(group)).await;
    assert_eq!(s, 201, "{v}");
    let poll = json!({"member": "m", "max": 1});
    let (s, v) = call(
        broker,
        "POST",
        "/api/streams/events/groups/g/poll",
        Some(poll),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let commit = json!({"member": "m", "offsets": {"0": 1}});
    let (s, v) = call(
        broker,
        "POST",
        "/api/streams/events/groups/g/commit",
        Some(commit),
    )
    .await;
    assert_eq!(s, 204, "{v}");
    let leave = json!({"member": "m"});
    let (s, v) = call(
        broker,
        "POST",
        "/api/streams/events/groups/g/leave",
        Some(leave),
    )
    .await;
    assert_eq!(s, 204, "{v}");
}

/// Queue `jobs` whose three poison messages a worker rejected into `jobs.dlq`.
async fn poison_in_jobs(broker: &Broker) {
    let options = json!({"dead_letter_queue": "jobs.dlq"});
    let (s, v) = call(broker, "PUT", "/api/queues/jobs", Some(options)).await;
    assert_eq!(s, 201, "{v}");
    let poison =
        json!({"messages": [{"body": "poison-1"}, {"body": "poison-2"}, {"body": "poison-3"}]});
    let (s, v) = call(broker, "POST", "/api/queues/jobs/messages", Some(poison)).await;
    assert_eq!(s, 201, "{v}");
    let (s, got) = call(
        broker,
        "POST",
        "/api/queues/jobs/receive",
        Some(json!({"max": 3})),
    )
    .await;
    assert_eq!(s, 200, "{got}");
    let receipts: Vec<&str> = got["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["receipt"].as_str().unwrap())
        .collect();
    let nack = json!({"receipts": receipts, "requeue": false});
    let (s, v) = call(broker, "POST", "/api/queues/jobs/nack", Some(nack)).await;
    assert_eq!(s, 200, "{v}");
    for _ in 0..100 {
        let (_, dlq) = call(broker, "GET", "/api/queues/jobs.dlq", None).await;
        if dlq["stats"]["ready"] == 3 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the poison messages did not reach jobs.dlq");
}

#[tokio::test]
async fn the_dashboard_pages_work_in_a_real_browser() {
    let broker = Broker::start().await.expect("broker starts");
    queue_with_orders(&broker).await;
    poison_in_jobs(&broker).await;
    routing_to_orders(&broker).await;
    stream_with_a_group(&broker).await;
    a_lease_extended_three_times(&broker).await;
    browse(
        &broker,
        &[
            "overview",
            "queues",
            "dead_letters",
            "exchanges",
            "streams",
            "admin",
        ],
    )
    .await;
    let (_, jobs) = call(&broker, "GET", "/api/queues/jobs", None).await;
    assert_eq!(
        jobs["stats"]["ready"], 2,
        "two redriven, one deleted: {jobs}"
    );
    let (_, dlq) = call(&broker, "GET", "/api/queues/jobs.dlq", None).await;
    assert_eq!(dlq["stats"]["purged_total"], 1, "{dlq}");
    let (_, orders) = call(&broker, "GET", "/api/queues/orders", None).await;
    assert_eq!(
        orders["stats"]["ready"], 0,
        "purged from the page: {orders}"
    );
    assert_eq!(orders["stats"]["purged_total"], 4, "{orders}");

    let mut pika = tokio::process::Command::new(python())
        .arg(script("closed_by_operator.py"))
        .env("WEIR_AMQP_PORT", port(&broker))
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python runs");
    let mut lines = BufReader::new(pika.stdout.take().unwrap()).lines();
    let ready = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .expect("pika connects")
        .unwrap();
    assert_eq!(ready.as_deref(), Some("READY"));
    browse(&broker, &["connections"]).await;
    let closed = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("pika sees the close")
        .unwrap();
    assert_eq!(
        closed.as_deref(),
        Some("CLOSED 320 CONNECTION_FORCED - maintenance window")
    );
    browse(&broker, &["log_out", "wrong_password"]).await;
}

/// `curl -u guest:guest` with `args`; its output.
async fn curl(broker: &Broker, method: &str, path: &str, body: &str) -> String {
    let out = tokio::process::Command::new("curl")
        .args(["-s", "-f", "-u", "guest:guest", "-X", method])
        .arg(format!("{}{path}", broker.http_url()))
        .args(["-H", "Content-Type: application/json", "-d", body])
        .output()
        .await
        .expect("curl runs");
    assert!(out.status.success(), "curl {method} {path}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The seed tutorial's flow (README "Quick start"): curl creates a queue with a
/// dead-letter queue and sends two messages, `weir worker` runs the `SQLite` example,
/// which saves one and refuses the poison pill until it is dead-lettered; the
/// pill is then redriven from the dashboard, back to its queue.
#[tokio::test]
async fn the_seed_tutorial_ends_with_a_redrive_from_the_dashboard() {
    let broker = Broker::start().await.expect("broker starts");
    let options =
        r#"{"max_deliveries": 2, "dead_letter_queue": "messages-dlq", "retry_delay_ms": 100}"#;
    curl(&broker, "PUT", "/api/queues/messages", options).await;
    for body in [
        r#"{"body": "{\"content\": \"Hello from weir!\"}"}"#,
        r#"{"body": "{\"content\": \"a poison pill\"}"}"#,
    ] {
        let sent = curl(&broker, "POST", "/api/queues/messages/messages", body).await;
        assert!(sent.contains("\"sent\":1"), "{sent}");
    }
    let dir = tempfile::tempdir().unwrap();
    let example = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/sqlite-worker/save_message.py");
    let mut worker = tokio::process::Command::new(weir_testkit::weir_binary())
        .args([
            "worker",
            "--server",
            &broker.http_url(),
            "--queue",
            "messages",
            "--",
        ])
        .arg("python3")
        .arg(example)
        .env("MESSAGES_DB", dir.path().join("messages.db"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the worker starts");
    let mut stats = json!(null);
    for _ in 0..300 {
        stats = call(&broker, "GET", "/api/queues/messages", None).await.1["stats"].clone();
        if stats["acked_total"] == 1 && stats["dead_lettered_total"] == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        (&stats["acked_total"], &stats["dead_lettered_total"]),
        (&json!(1), &json!(1)),
        "{stats}"
    );
    let _ = worker.start_kill();
    let _ = worker.wait().await;
    browse(&broker, &["seed_redrive"]).await;
    let (_, messages) = call(&broker, "GET", "/api/queues/messages", None).await;
    assert_eq!(
        messages["stats"]["ready"], 1,
        "the pill is back: {messages}"
    );
}

#[tokio::test]
async fn dashboard_pages_send_a_browser_without_a_login_to_the_login_form() {
    let broker = Broker::start().await.expect("broker starts");
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let answer = client
        .get(format!("{}/ui/queues?q=a", broker.http_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 303);
    assert_eq!(
        answer.headers()["location"],
        "/login?next=/ui/queues%3Fq%3Da"
    );
    // The API still answers 401 with a challenge, and the assets need no login.
    let answer = client
        .get(format!("{}/api/queues", broker.http_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 401);
    let answer = client
        .get(format!("{}/ui/assets/weir.css", broker.http_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    // HTTP Basic works for the pages too (curl, scripts).
    let answer = client
        .get(format!("{}/ui/queues", broker.http_url()))
        .basic_auth("guest", Some("guest"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert!(
        answer
            .text()
            .await
            .unwrap()
            .contains("<table id=\"queues\">")
    );
}
