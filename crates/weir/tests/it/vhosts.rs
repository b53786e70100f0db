//! Vhosts hold their own queues, exchanges and bindings (issue 20): the same names in
//! two vhosts are two things over AMQP and HTTP, `connection.open` picks the vhost,
//! `/api/vhosts/{vhost}/...` reaches any vhost, permissions are per vhost, and
//! deleting a vhost deletes what it holds and closes its connections with 320.

use futures_lite::StreamExt;
use lapin::options::{
    BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use serde_json::{Value, json};
use weir_testkit::Broker;

use crate::cli::weir;

fn url(broker: &Broker, user: &str, vhost: &str) -> String {
    format!("amqp://{user}:{user}@{}/{vhost}", broker.amqp_addr())
}

async fn connect(url: &str) -> Result<Connection, lapin::Error> {
    Connection::connect(url, ConnectionProperties::default()).await
}

/// An HTTP call as guest; (status, JSON).
async fn call(broker: &Broker, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    call_as(broker, ("guest", "guest"), method, path, body).await
}

async fn call_as(
    broker: &Broker,
    (user, password): (&str, &str),
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = reqwest::Client::new()
        .request(method, format!("{}{path}", broker.http_url()))
        .basic_auth(user, Some(password));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let answer = request.send().await.expect("request");
    let status = answer.status().as_u16();
    let text = answer.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// A vhost `name` where guest has every permission.
async fn vhost_for_guest(broker: &Broker, name: &str) {
    let (s, _) = call(broker, "PUT", &format!("/api/vhosts/{name}"), None).await;
    assert_eq!(s, 201);
    let all = json!({"configure": ".*", "write": ".*", "read": ".*"});
    let (s, _) = call(
        broker,
        "PUT",
        &format!("/api/permissions/{name}/guest"),
        Some(all),
    )
    .await;
    assert!((200..300).contains(&s), "{s}");
}

async fn publish_confirmed(conn: &Connection, queue: &str, body: &str) {
    let ch = conn.create_channel().await.expect("channel");
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirms");
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    ch.queue_declare(queue.into(), durable, FieldTable::default())
        .await
        .expect("declare");
    let confirm = ch
        .basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions::default(),
            body.as_bytes(),
            BasicProperties::default(),
        )
        .await
        .expect("publish")
        .await
        .expect("confirm");
    assert!(confirm.is_ack());
}

async fn receive(broker: &Broker, path: &str) -> Vec<String> {
    let (s, v) = call(broker, "POST", path, Some(json!({"max": 10}))).await;
    assert_eq!(s, 200, "{v}");
    v["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["body"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn the_same_queue_name_in_two_vhosts_is_two_queues_over_amqp_and_http() {
    let broker = Broker::start().await.expect("broker starts");
    vhost_for_guest(&broker, "staging").await;
    let root = connect(&url(&broker, "guest", "%2f")).await.expect("/");
    let staging = connect(&url(&broker, "guest", "staging"))
        .await
        .expect("staging");
    publish_confirmed(&root, "orders", "to root").await;
    publish_confirmed(&staging, "orders", "to staging").await;

    // HTTP reaches each: the short paths are `/`, and `%2F` names it too.
    assert_eq!(
        receive(&broker, "/api/vhosts/staging/queues/orders/receive").await,
        ["to staging"]
    );
    let (s, v) = call(&broker, "GET", "/api/vhosts/%2F/queues/orders", None).await;
    assert_eq!((s, v["stats"]["ready"].as_u64()), (200, Some(1)), "{v}");
    assert_eq!(
        receive(&broker, "/api/queues/orders/receive").await,
        ["to root"]
    );
    // Each vhost lists its own queues; sending over HTTP lands in the vhost's.
    let (_, listed) = call(&broker, "GET", "/api/vhosts/staging/queues", None).await;
    let names: Vec<&str> = listed["queues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["orders"]);
    let (s, _) = call(
        &broker,
        "POST",
        "/api/vhosts/staging/queues/orders/messages",
        Some(json!({"body": "over http"})),
    )
    .await;
    assert_eq!(s, 201);
    let ch = staging.create_channel().await.expect("channel");
    let got = ch
        .basic_get("orders".into(), BasicGetOptions { no_ack: true })
        .await
        .expect("get")
        .expect("a message in staging's queue");
    assert_eq!(got.delivery.data, b"over http");
    let ch = root.create_channel().await.expect("channel");
    let none = ch
        .basic_get("orders".into(), BasicGetOptions { no_ack: true })
        .await
        .expect("get");
    assert!(none.is_none(), "/'s queue got nothing");
    // A vhost that does not exist is 404.
    let (s, v) = call(&broker, "GET", "/api/vhosts/nowhere/queues", None).await;
    assert_eq!((s, v["error"].as_str()), (404, Some("vhost_not_found")));
}

#[tokio::test]
async fn exclusive_queues_of_the_same_name_in_two_vhosts_do_not_lock_each_other() {
    let broker = Broker::start().await.expect("broker starts");
    vhost_for_guest(&broker, "v").await;
    let a = connect(&url(&broker, "guest", "%2f")).await.expect("/");
    let b = connect(&url(&broker, "guest", "v")).await.expect("v");
    let exclusive = QueueDeclareOptions {
        exclusive: true,
        ..QueueDeclareOptions::default()
    };
    for conn in [&a, &b] {
        let ch = conn.create_channel().await.expect("channel");
        ch.queue_declare("mine".into(), exclusive, FieldTable::default())
            .await
            .expect("each vhost has its own exclusive queue 'mine'");
    }
    // In the same vhost another connection is locked out, naming the vhost.
    let c = connect(&url(&broker, "guest", "v")).await.expect("v again");
    let ch = c.create_channel().await.expect("channel");
    let err = ch
        .queue_declare("mine".into(), exclusive, FieldTable::default())
        .await
        .expect_err("locked");
    assert!(
        err.to_string().contains("in vhost 'v'"),
        "the refusal names the vhost: {err}"
    );
}

#[tokio::test]
async fn permissions_apply_per_vhost_on_both_protocols() {
    let broker = Broker::start().await.expect("broker starts");
    weir(&broker, &["user", "add", "app", "app"], b"")
        .await
        .ok();
    weir(&broker, &["vhost", "add", "apps"], b"").await.ok();
    weir(
        &broker,
        &[
            "permissions",
            "set",
            "--vhost",
            "apps",
            "app",
            ".*",
            ".*",
            ".*",
        ],
        b"",
    )
    .await
    .ok();
    // Allowed in `apps`, refused in `/` (no permissions there) on both protocols.
    let conn = connect(&url(&broker, "app", "apps")).await.expect("apps");
    publish_confirmed(&conn, "jobs", "one").await;
    let err = connect(&url(&broker, "app", "%2f"))
        .await
        .expect_err("no permissions in /");
    assert!(err.to_string().contains("NOT_ALLOWED"), "{err}");
    let app = ("app", "app");
    let (s, v) = call_as(&broker, app, "GET", "/api/vhosts/apps/queues/jobs", None).await;
    assert_eq!((s, v["stats"]["ready"].as_u64()), (200, Some(1)), "{v}");
    let (s, v) = call_as(&broker, app, "PUT", "/api/queues/jobs", Some(json!({}))).await;
    assert_eq!(
        (s, v["error"].as_str()),
        (403, Some("access_refused")),
        "{v}"
    );
    // The CLI reaches the vhost with --vhost (or WEIR_VHOST).
    let sent = weir(
        &broker,
        &[
            "send",
            "jobs",
            "two",
            "--user",
            "app",
            "--password",
            "app",
            "--vhost",
            "apps",
        ],
        b"",
    )
    .await;
    sent.ok();
    let (_, v) = call(&broker, "GET", "/api/vhosts/apps/queues/jobs", None).await;
    assert_eq!(v["stats"]["ready"].as_u64(), Some(2), "{v}");
}

#[tokio::test]
async fn deleting_a_vhost_deletes_its_queues_and_closes_its_connections_with_320() {
    let mut broker = Broker::start().await.expect("broker starts");
    vhost_for_guest(&broker, "doomed").await;
    vhost_for_guest(&broker, "kept").await;
    let doomed = connect(&url(&broker, "guest", "doomed"))
        .await
        .expect("doomed");
    let kept = connect(&url(&broker, "guest", "kept")).await.expect("kept");
    publish_confirmed(&doomed, "q", "lost").await;
    publish_confirmed(&kept, "q", "stays").await;
    let mut events = doomed.events_listener();
    let (s, _) = call(&broker, "DELETE", "/api/vhosts/doomed", None).await;
    assert_eq!(s, 204);
    // The connection in it is closed by the broker with 320 CONNECTION_FORCED.
    let reason = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            match events.next().await {
                Some(lapin::Event::Error(e)) => return e.to_string(),
                Some(_) => {}
                None => return "events ended without an error".to_owned(),
            }
        }
    })
    .await
    .expect("the connection in the deleted vhost is closed");
    assert!(
        reason.contains("CONNECTION_FORCED") && reason.contains("vhost 'doomed' is deleted"),
        "{reason}"
    );
    assert!(!doomed.status().connected());
    assert!(kept.status().connected(), "other vhosts are untouched");
    // Made again, it is empty; the other vhost's queue is there after a kill -9.
    vhost_for_guest(&broker, "doomed").await;
    let (s, _) = call(&broker, "GET", "/api/vhosts/doomed/queues/q", None).await;
    assert_eq!(s, 404);
    broker.kill9().await.expect("kill -9");
    broker.restart().await.expect("restart");
    assert_eq!(
        receive(&broker, "/api/vhosts/kept/queues/q/receive").await,
        ["stays"]
    );
    let (s, _) = call(&broker, "DELETE", "/api/vhosts/%2F", None).await;
    assert_eq!(s, 409, "/ stays");
}

#[tokio::test]
async fn definitions_carry_each_thing_in_its_vhost() {
    let source = Broker::start().await.expect("broker starts");
    vhost_for_guest(&source, "staging").await;
    let (s, _) = call(
        &source,
        "PUT",
        "/api/vhosts/staging/queues/orders",
        Some(json!({"dead_letter_queue": "orders.dlq"})),
    )
    .await;
    assert_eq!(s, 201);
    let (s, _) = call(
        &source,
        "PUT",
        "/api/vhosts/staging/exchanges/events",
        Some(json!({"type": "topic"})),
    )
    .await;
    assert_eq!(s, 201);
    let bind = json!({"source": "events", "destination": "orders", "routing_key": "order.#"});
    let (s, v) = call(&source, "POST", "/api/vhosts/staging/bindings", Some(bind)).await;
    assert_eq!(s, 201, "{v}");
    let (_, defs) = call(&source, "GET", "/api/definitions", None).await;
    let orders = defs["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["name"] == "orders")
        .expect("exported");
    assert_eq!(orders["vhost"], "staging");
    assert_eq!(orders["options"]["dead_letter_queue"], "orders.dlq");
    assert_eq!(defs["bindings"][0]["vhost"], "staging");

    let target = Broker::start().await.expect("broker starts");
    let (s, v) = call(&target, "POST", "/api/definitions", Some(defs)).await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = call(&target, "GET", "/api/vhosts/staging/queues/orders", None).await;
    assert_eq!(
        (s, v["options"]["dead_letter_queue"].as_str()),
        (200, Some("orders.dlq"))
    );
    let (s, _) = call(&target, "GET", "/api/queues/orders", None).await;
    assert_eq!(s, 404, "not in /");
    let (_, v) = call(&target, "GET", "/api/vhosts/staging/bindings", None).await;
    assert_eq!(v["bindings"][0]["source"], "events", "{v}");
}

#[tokio::test]
async fn deleting_a_user_closes_its_connections_with_320() {
    let broker = Broker::start().await.expect("broker starts");
    weir(&broker, &["user", "add", "temp", "temp"], b"")
        .await
        .ok();
    weir(
        &broker,
        &["permissions", "set", "temp", ".*", ".*", ".*"],
        b"",
    )
    .await
    .ok();
    let conn = connect(&url(&broker, "temp", "%2f")).await.expect("temp");
    let mut events = conn.events_listener();
    weir(&broker, &["user", "rm", "temp"], b"").await.ok();
    let reason = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            match events.next().await {
                Some(lapin::Event::Error(e)) => return e.to_string(),
                Some(_) => {}
                None => return "events ended without an error".to_owned(),
            }
        }
    })
    .await
    .expect("the deleted user's connection is closed");
    assert!(
        reason.contains("CONNECTION_FORCED") && reason.contains("user 'temp' is deleted"),
        "{reason}"
    );
}

#[tokio::test]
async fn pika_keeps_each_vhost_apart() {
    let broker = Broker::start().await.expect("broker starts");
    vhost_for_guest(&broker, "staging").await;
    let out = crate::pika::run(&broker, "patterns.py", &["vhosts"]).await;
    assert!(out.contains("OK"), "{out}");
}
