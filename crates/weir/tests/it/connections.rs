//! The open connections over HTTP (`/api/connections`): a pika consumer is
//! listed with its user, vhost, client product and version, connection name,
//! channel, consumer and prefetch; a user without `administrator` or
//! `monitoring` sees only its own connections and cannot close another's; an
//! administrator closes it with a reason and pika receives `connection.close` 320
//! with that text (`tests/pika/closed_by_operator.py`).

use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use weir_testkit::Broker;

use crate::pika::{port, python, script};
use crate::streams::call;

async fn as_user(broker: &Broker, method: &str, path: &str) -> (u16, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let answer = reqwest::Client::new()
        .request(method, format!("{}{path}", broker.http_url()))
        .basic_auth("bob", Some("b0b-secret"))
        .send()
        .await
        .expect("request");
    let status = answer.status().as_u16();
    (status, answer.json().await.unwrap_or(Value::Null))
}

/// The listed connection whose client named it `orders-worker`, once it has a
/// consumer (the script prints READY before the broker has read every frame).
async fn listed(broker: &Broker) -> Value {
    for _ in 0..100 {
        let (s, list) = call(broker, "GET", "/api/connections", None).await;
        assert_eq!(s, 200, "{list}");
        if let Some(c) = list
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["client"]["connection_name"] == "orders-worker" && c["consumers"] == 1)
        {
            return c.clone();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the pika connection was not listed with its consumer");
}

#[tokio::test]
async fn a_pika_connection_is_listed_and_closed_with_a_reason() {
    let broker = Broker::start().await.expect("broker starts");
    let bob = json!({"password": "b0b-secret", "tags": []});
    let (s, v) = call(&broker, "PUT", "/api/users/bob", Some(bob)).await;
    assert!(s == 201 || s == 204, "{s} {v}");
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

    let c = listed(&broker).await;
    assert_eq!(c["protocol"], "amqp");
    assert_eq!(c["user"], "guest");
    assert_eq!(c["vhost"], "/");
    assert_eq!(c["client"]["product"], "Pika Python Client Library", "{c}");
    assert!(
        c["client"]["version"]
            .as_str()
            .is_some_and(|v| !v.is_empty()),
        "{c}"
    );
    assert_eq!(
        (c["channels"].as_u64(), c["prefetch"].as_u64()),
        (Some(1), Some(7)),
        "{c}"
    );
    assert!(c["peer"].as_str().unwrap().starts_with("127.0.0.1:"), "{c}");
    let id = c["id"].as_u64().unwrap();
    let (s, one) = call(&broker, "GET", &format!("/api/connections/{id}"), None).await;
    assert_eq!((s, &one["id"]), (200, &c["id"]));

    // Bob sees none of guest's connections and cannot close them.
    let (s, list) = as_user(&broker, "GET", "/api/connections").await;
    assert_eq!((s, list), (200, json!([])));
    let (s, v) = as_user(&broker, "DELETE", &format!("/api/connections/{id}")).await;
    assert_eq!(s, 404, "{v}");
    let (s, v) = call(&broker, "DELETE", "/api/connections/nope", None).await;
    assert_eq!(
        (s, v["error"].as_str()),
        (404, Some("connection_not_found"))
    );

    let answer = broker
        .client()
        .delete(format!("{}/api/connections/{id}", broker.http_url()))
        .header("X-Reason", "maintenance window")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 204);
    let closed = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("pika sees the close")
        .unwrap();
    assert_eq!(
        closed.as_deref(),
        Some("CLOSED 320 CONNECTION_FORCED - maintenance window")
    );
    assert!(pika.wait().await.unwrap().success());
    for _ in 0..100 {
        let (_, list) = call(&broker, "GET", "/api/connections", None).await;
        if list.as_array().unwrap().is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the closed connection is still listed");
}
