//! Logins, permissions and browser guards over HTTP (issue 20): every endpoint but
//! `/healthz` needs HTTP Basic credentials of a broker user, each endpoint checks
//! the permission its AMQP counterpart needs, only administrators manage users,
//! `guest` is refused from anything but loopback over both protocols, exclusive
//! queues stay exclusive, and cross-site or rebinding requests are refused.

use std::net::{IpAddr, Ipv4Addr};

use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use serde_json::{Value, json};
use weir_testkit::Broker;

use crate::hostile_input::{Raw, long, method, short};

/// A request as `user` (no credentials when `None`); (status, JSON, headers).
async fn call(
    broker: &Broker,
    login: Option<(&str, &str)>,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value, reqwest::header::HeaderMap) {
    let client = reqwest::Client::new();
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = client.request(method, format!("{}{path}", broker.http_url()));
    if let Some((user, password)) = login {
        request = request.basic_auth(user, Some(password));
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let answer = request.send().await.expect("request");
    let status = answer.status().as_u16();
    let headers = answer.headers().clone();
    let text = answer.text().await.unwrap();
    let value = serde_json::from_str(&text).unwrap_or(Value::Null);
    (status, value, headers)
}

const GUEST: Option<(&str, &str)> = Some(("guest", "guest"));

#[tokio::test]
async fn every_endpoint_but_healthz_needs_a_login() {
    let broker = Broker::start().await.expect("broker starts");
    let (s, _, _) = call(&broker, None, "GET", "/healthz", None).await;
    assert_eq!(s, 200, "/healthz is open to probes");
    for (verb, path) in [
        ("GET", "/api/queues"),
        ("PUT", "/api/queues/q"),
        ("POST", "/api/queues/q/messages"),
        ("GET", "/api/openapi.json"),
        ("GET", "/api/users"),
        ("GET", "/api/nowhere"),
    ] {
        let (s, v, headers) = call(&broker, None, verb, path, Some(json!({}))).await;
        assert_eq!(
            (s, v["error"].as_str()),
            (401, Some("unauthorized")),
            "{verb} {path}"
        );
        let challenge = headers["www-authenticate"].to_str().unwrap();
        assert!(challenge.starts_with("Basic realm="), "{challenge}");
    }
    let (s, v, headers) = call(
        &broker,
        Some(("guest", "wrong")),
        "GET",
        "/api/queues",
        None,
    )
    .await;
    assert_eq!((s, v["error"].as_str()), (401, Some("unauthorized")));
    assert!(headers.contains_key("www-authenticate"));
    let (s, _, _) = call(
        &broker,
        Some(("nobody", "guest")),
        "GET",
        "/api/queues",
        None,
    )
    .await;
    assert_eq!(s, 401);
    let (s, v, _) = call(&broker, GUEST, "GET", "/api/whoami", None).await;
    assert_eq!(
        (s, &v),
        (200, &json!({"name": "guest", "tags": ["administrator"]}))
    );
    // Nothing was created by the refused requests.
    let (_, v, _) = call(&broker, GUEST, "GET", "/api/queues", None).await;
    assert_eq!(v["queues"], json!([]));
}

const APP: Option<(&str, &str)> = Some(("app", "s3cret"));

/// User `app`: configure `app.*`, write to the default exchange and `app.*`, read
/// `app.in` only.
async fn add_app_user(broker: &Broker) {
    let (s, _, _) = call(
        broker,
        GUEST,
        "PUT",
        "/api/users/app",
        Some(json!({"password": "s3cret"})),
    )
    .await;
    assert_eq!(s, 201);
    let patterns = json!({"configure": "^app\\.", "write": "^(amq\\.default|app\\..*)$", "read": "^app\\.in$"});
    let (s, v, _) = call(
        broker,
        GUEST,
        "PUT",
        "/api/permissions/%2F/app",
        Some(patterns),
    )
    .await;
    assert_eq!(s, 200, "{v}");
}

fn refused(s: u16, v: &Value, what: &str) {
    assert_eq!(
        (s, v["error"].as_str()),
        (403, Some("access_refused")),
        "{what}: {v}"
    );
    assert!(
        v["reason"]
            .as_str()
            .unwrap()
            .contains("refused for user 'app'"),
        "{v}"
    );
}

/// Configure and write permissions are checked per endpoint, with 403
/// `access_refused` for the rest; users and permissions made over HTTP survive
/// `kill -9`.
#[tokio::test]
async fn configure_and_write_permissions_are_checked_and_survive_kill_9() {
    let mut broker = Broker::start().await.expect("broker starts");
    add_app_user(&broker).await;
    broker.kill9().await.expect("kill -9");
    broker.restart().await.expect("restart");
    let (s, _, _) = call(&broker, APP, "PUT", "/api/queues/app.in", Some(json!({}))).await;
    assert_eq!(s, 201);
    let (s, v, _) = call(&broker, APP, "PUT", "/api/queues/other", Some(json!({}))).await;
    refused(s, &v, "declare outside app.*");
    let (s, _, _) = call(&broker, GUEST, "PUT", "/api/queues/other", Some(json!({}))).await;
    assert_eq!(s, 201);
    let (s, v, _) = call(&broker, APP, "DELETE", "/api/queues/other", None).await;
    refused(s, &v, "delete outside app.*");
    let (s, v, _) = call(
        &broker,
        APP,
        "PUT",
        "/api/queues/app.dl",
        Some(json!({"dead_letter_exchange": "logs"})),
    )
    .await;
    refused(s, &v, "a dead-letter exchange it may not write to");
    // The same options through a subscription's queue, and a dead-letter queue
    // outside what app may configure (found in review).
    let (s, v, _) = call(
        &broker,
        APP,
        "PUT",
        "/api/topics/app.t/subscriptions/s",
        Some(json!({"queue": {"dead_letter_exchange": "logs"}})),
    )
    .await;
    refused(s, &v, "a subscription queue's dead-letter exchange");
    let (s, v, _) = call(
        &broker,
        APP,
        "PUT",
        "/api/queues/app.q",
        Some(json!({"dead_letter_queue": "payments"})),
    )
    .await;
    refused(s, &v, "a dead-letter queue it may not configure");
    let (s, _, _) = call(&broker, GUEST, "GET", "/api/queues/payments", None).await;
    assert_eq!(s, 404, "not squatted");
    // write: a send goes through the default exchange.
    let (s, _, _) = call(
        &broker,
        APP,
        "POST",
        "/api/queues/app.in/messages",
        Some(json!({"body": "hi"})),
    )
    .await;
    assert_eq!(s, 201);
    let (s, _, _) = call(
        &broker,
        APP,
        "PUT",
        "/api/exchanges/app.x",
        Some(json!({"type": "fanout"})),
    )
    .await;
    assert_eq!(s, 201);
    let (s, _, _) = call(
        &broker,
        GUEST,
        "PUT",
        "/api/exchanges/logs",
        Some(json!({"type": "fanout"})),
    )
    .await;
    assert_eq!(s, 201);
    let (s, v, _) = call(
        &broker,
        APP,
        "POST",
        "/api/exchanges/logs/publish",
        Some(json!({"body": "x"})),
    )
    .await;
    refused(s, &v, "publish to logs");
    // bind: write on the queue, read on the exchange (app may not read app.x).
    let binding = json!({"source": "app.x", "destination": "app.in", "destination_type": "queue"});
    let (s, v, _) = call(&broker, APP, "POST", "/api/bindings", Some(binding)).await;
    refused(s, &v, "bind without read on the exchange");
    let (_, v, _) = call(&broker, GUEST, "GET", "/api/bindings?source=app.x", None).await;
    assert_eq!(v["bindings"], json!([]), "the refused bind made nothing");
}

/// Read permissions, viewing, and management (administrators only).
#[tokio::test]
async fn read_permissions_viewing_and_management_are_checked() {
    let broker = Broker::start().await.expect("broker starts");
    add_app_user(&broker).await;
    let (s, _, _) = call(&broker, GUEST, "PUT", "/api/queues/app.in", Some(json!({}))).await;
    assert_eq!(s, 201);
    let (s, _, _) = call(
        &broker,
        APP,
        "POST",
        "/api/queues/app.in/messages",
        Some(json!({"body": "hi"})),
    )
    .await;
    assert_eq!(s, 201);
    let (s, v, _) = call(
        &broker,
        APP,
        "POST",
        "/api/queues/app.in/receive",
        Some(json!({"max": 5})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["messages"][0]["body"], "hi");
    let (s, _, _) = call(&broker, GUEST, "PUT", "/api/queues/other", Some(json!({}))).await;
    assert_eq!(s, 201);
    let (s, _, _) = call(
        &broker,
        GUEST,
        "POST",
        "/api/queues/other/messages",
        Some(json!({"body": "theirs"})),
    )
    .await;
    assert_eq!(s, 201);
    for (verb, path) in [
        ("POST", "/api/queues/other/receive"),
        ("POST", "/api/queues/other/purge"),
        ("GET", "/api/queues/other/dead-letters"),
    ] {
        let (s, v, _) = call(&broker, APP, verb, path, None).await;
        refused(s, &v, path);
    }
    let (_, v, _) = call(&broker, GUEST, "GET", "/api/queues/other", None).await;
    assert_eq!(
        v["stats"]["ready"], 1,
        "the refused receive and purge took nothing: {v}"
    );
    // Viewing needs some permission on `/`: app has some.
    let (s, _, _) = call(&broker, APP, "GET", "/api/queues", None).await;
    assert_eq!(s, 200);
    for (verb, path) in [
        ("GET", "/api/users"),
        ("PUT", "/api/users/mallory"),
        ("GET", "/api/permissions"),
        ("PUT", "/api/vhosts/v2"),
    ] {
        let (s, v, _) = call(&broker, APP, verb, path, Some(json!({"password": "x"}))).await;
        assert_eq!(
            (s, v["error"].as_str()),
            (403, Some("access_refused")),
            "{verb} {path}"
        );
    }
    let (_, v, _) = call(&broker, GUEST, "GET", "/api/users", None).await;
    assert_eq!(v["users"].as_array().unwrap().len(), 2, "no mallory: {v}");
    // Without permissions on `/` (and no monitoring tag), nothing can be seen; with
    // the monitoring tag, everything can.
    let (s, _, _) = call(&broker, GUEST, "DELETE", "/api/permissions/%2F/app", None).await;
    assert_eq!(s, 204);
    let (s, v, _) = call(&broker, APP, "GET", "/api/queues", None).await;
    refused(s, &v, "list without permissions");
    let (s, _, _) = call(
        &broker,
        GUEST,
        "PUT",
        "/api/users/app",
        Some(json!({"tags": "monitoring"})),
    )
    .await;
    assert_eq!(s, 200);
    let (s, _, _) = call(&broker, APP, "GET", "/api/queues", None).await;
    assert_eq!(s, 200);
}

/// `guest` is loopback-only: from 127.0.0.2 (another host, for the broker) it is
/// refused over HTTP and AMQP with the same answer as a wrong password, while a
/// user made for remote use logs in from there.
#[tokio::test]
async fn guest_is_refused_from_a_non_loopback_address_on_both_protocols() {
    let broker = Broker::start().await.expect("broker starts");
    let (s, _, _) = call(
        &broker,
        GUEST,
        "PUT",
        "/api/users/remote",
        Some(json!({"password": "r3mote"})),
    )
    .await;
    assert_eq!(s, 201);
    let (s, _, _) = call(
        &broker,
        GUEST,
        "PUT",
        "/api/permissions/%2F/remote",
        Some(json!({"configure": ".*", "write": ".*", "read": ".*"})),
    )
    .await;
    assert_eq!(s, 200);
    let elsewhere = reqwest::Client::builder()
        .local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)))
        .build()
        .unwrap();
    let url = format!("{}/api/queues", broker.http_url());
    let answer = elsewhere
        .get(&url)
        .basic_auth("guest", Some("guest"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 401);
    let answer = elsewhere
        .get(&url)
        .basic_auth("remote", Some("r3mote"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 200);

    for (user, password, refused) in [("guest", "guest", true), ("remote", "r3mote", false)] {
        let mut raw = Raw::connect_from(&broker, Ipv4Addr::new(127, 0, 0, 2)).await;
        let mut start_ok = long(&[]);
        start_ok.extend_from_slice(&short("PLAIN"));
        start_ok.extend_from_slice(&long(format!("\0{user}\0{password}").as_bytes()));
        start_ok.extend_from_slice(&short("en_US"));
        raw.send(1, 0, &method(10, 11, &start_ok)).await;
        if refused {
            let (ch, code, _, _) = raw.close().await;
            assert_eq!((ch, code), (0, 403), "guest from 127.0.0.2 over AMQP");
        } else {
            let (kind, _, tune) = raw.read().await.expect("connection.tune");
            assert_eq!(
                (kind, &tune[..4]),
                (1, &[0, 10, 0, 30][..]),
                "{user} is let in"
            );
        }
    }
    // From loopback, guest still works.
    let (s, _, _) = call(&broker, GUEST, "GET", "/api/queues", None).await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn cross_site_and_rebinding_requests_are_refused_and_curl_is_not() {
    let broker = Broker::start().await.expect("broker starts");
    let client = weir_testkit::http_client();
    let url = |path: &str| format!("{}{path}", broker.http_url());
    let origin = broker.http_url();
    let host = origin.trim_start_matches("http://").to_owned();
    // A form posted from another site, with the operator's cached credentials.
    let answer = client
        .post(url("/api/queues/q/purge"))
        .header("origin", "http://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 403);
    let v: Value = answer.json().await.unwrap();
    assert_eq!(v["error"], "cross_site_request");
    let answer = client
        .put(url("/api/queues/q"))
        .header("sec-fetch-site", "cross-site")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 403);
    // The same page on the broker's own origin may.
    let answer = client
        .put(url("/api/queues/q"))
        .header("origin", origin.as_str())
        .header("sec-fetch-site", "same-origin")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 201);
    // DNS rebinding: a name the attacker owns, resolved to the broker.
    let answer = client
        .get(url("/api/queues"))
        .header("host", "evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 403);
    let v: Value = answer.json().await.unwrap();
    assert_eq!(v["error"], "host_not_allowed");
    // localhost with the port, as a browser on http://localhost:PORT sends it.
    let port = host.rsplit(':').next().unwrap();
    let answer = client
        .get(url("/api/queues"))
        .header("host", format!("localhost:{port}"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 200);
    // curl -d: no Origin, no Sec-Fetch-Site.
    let answer = client
        .post(url("/api/queues/q/messages"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(r#"{"body": "from curl"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 201);
    // A GET from another site changes nothing and is answered (the browser keeps
    // the answer from the page: no CORS headers).
    let answer = client
        .get(url("/api/queues/q"))
        .header("origin", "http://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 200);
    assert!(!answer.headers().contains_key("access-control-allow-origin"));
    let v: Value = answer.json().await.unwrap();
    assert_eq!(v["stats"]["ready"], 1, "the refused purge did nothing: {v}");
}

/// An exclusive queue belongs to its AMQP connection: over HTTP it can be seen and
/// sent to, but not received from, purged or deleted.
#[tokio::test]
async fn exclusive_queues_are_exclusive_over_http_too() {
    let broker = Broker::start().await.expect("broker starts");
    let conn =
        lapin::Connection::connect(&broker.amqp_url(), lapin::ConnectionProperties::default())
            .await
            .unwrap();
    let channel = conn.create_channel().await.unwrap();
    channel
        .queue_declare(
            "mine".into(),
            QueueDeclareOptions {
                exclusive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let (s, _, _) = call(&broker, GUEST, "GET", "/api/queues/mine", None).await;
    assert_eq!(s, 200);
    let (s, _, _) = call(
        &broker,
        GUEST,
        "POST",
        "/api/queues/mine/messages",
        Some(json!({"body": "b"})),
    )
    .await;
    assert_eq!(s, 201);
    for (verb, path) in [
        ("POST", "/api/queues/mine/receive"),
        ("POST", "/api/queues/mine/purge"),
        ("DELETE", "/api/queues/mine"),
    ] {
        let (s, v, _) = call(&broker, GUEST, verb, path, None).await;
        assert_eq!(
            (s, v["error"].as_str()),
            (403, Some("resource_locked")),
            "{verb} {path}: {v}"
        );
    }
    let (_, v, _) = call(&broker, GUEST, "GET", "/api/queues/mine", None).await;
    assert_eq!(v["stats"]["ready"], 1, "{v}");
    let _ = conn.close(200, "bye".into()).await;
}
