//! Prometheus metrics (docs/metrics.md): after traffic over AMQP and HTTP,
//! `/metrics` shows the aggregated figures (connections, channels and consumers by
//! protocol, queue totals, fsync and commit group histograms, resources) and
//! `/metrics/per-object` a series per queue, stream partition and group; filters
//! pick families and objects; `promtool check metrics` finds no problem in either;
//! a real Prometheus server scrapes the broker and answers a query with the figure.

use std::time::Duration;

use lapin::options::{BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use serde_json::{Value, json};
use weir_testkit::Broker;

use crate::amqp::{connect, declare};
use crate::streams::call;

async fn scrape(broker: &Broker, path: &str) -> (u16, String, String) {
    let answer = broker
        .client()
        .get(format!("{}{path}", broker.http_url()))
        .send()
        .await
        .expect("scrape");
    let status = answer.status().as_u16();
    let kind = answer
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, kind, answer.text().await.unwrap())
}

/// The value of the sample written exactly `series` (name and labels).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.parse().unwrap())
}

/// promtool, which `scripts/test` installs with Debian's `prometheus` package.
fn promtool() -> String {
    std::env::var("WEIR_PROMTOOL").unwrap_or_else(|_| "promtool".to_owned())
}

async fn promtool_check(text: &str) {
    use tokio::io::AsyncWriteExt as _;
    let mut child = tokio::process::Command::new(promtool())
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool runs: install Debian's prometheus package (./scripts/test does)");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(text.as_bytes()).await.unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A queue with three ready messages, a stream of two records with a group that
/// committed one, and an AMQP connection with a channel consuming another queue
/// (kept open while the caller holds what this returns: lapin cancels a dropped
/// consumer and closes a dropped channel).
async fn traffic(broker: &Broker) -> (lapin::Connection, lapin::Channel, lapin::Consumer) {
    let (s, v) = call(broker, "PUT", "/api/queues/q", None).await;
    assert_eq!(s, 201, "{v}");
    let messages = json!({"messages": [{"body": "a"}, {"body": "b"}, {"body": "c"}]});
    let (s, v) = call(broker, "POST", "/api/queues/q/messages", Some(messages)).await;
    assert_eq!(s, 201, "{v}");
    let (s, _) = call(broker, "PUT", "/api/streams/events", None).await;
    assert_eq!(s, 201);
    let records = json!({"messages": [{"body": "r0"}, {"body": "r1"}]});
    let (s, _) = call(
        broker,
        "POST",
        "/api/streams/events/messages",
        Some(records),
    )
    .await;
    assert_eq!(s, 201);
    let (s, _) = call(
        broker,
        "PUT",
        "/api/streams/events/groups/g",
        Some(json!({"start": "first"})),
    )
    .await;
    assert!(s == 201 || s == 200);
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
    let connection = connect(broker).await;
    let channel = connection.create_channel().await.unwrap();
    declare(&channel, "work").await;
    channel
        .basic_qos(10, BasicQosOptions::default())
        .await
        .unwrap();
    let consumer = channel
        .basic_consume(
            "work".into(),
            "c1".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    (connection, channel, consumer)
}

#[tokio::test]
async fn metrics_show_connections_queues_streams_and_the_log() {
    let broker = Broker::start().await.expect("broker starts");
    let _amqp = traffic(&broker).await;
    let (s, _) = call(&broker, "GET", "/api/nowhere", None).await;
    assert_eq!(s, 404);
    let (s, kind, text) = scrape(&broker, "/metrics").await;
    assert_eq!(s, 200, "{text}");
    assert!(kind.starts_with("text/plain; version=0.0.4"), "{kind}");
    for (series, expected) in [
        ("weir_connections{protocol=\"amqp\"}", 1.0),
        ("weir_channels{protocol=\"amqp\"}", 1.0),
        ("weir_consumers{protocol=\"amqp\"}", 1.0),
        ("weir_queues", 2.0),
        ("weir_streams", 1.0),
        ("weir_queue_messages_ready", 3.0),
        ("weir_queue_messages_published_total", 3.0),
        ("weir_alarms_free_disk_space_watermark", 0.0),
        ("weir_build_info{version=\"0.1.0\"}", 1.0),
        (
            "weir_http_requests_total{method=\"PUT\",route=\"/api/queues/{name}\",code=\"201\"}",
            1.0,
        ),
        (
            "weir_http_requests_total{method=\"GET\",route=\"unmatched\",code=\"404\"}",
            1.0,
        ),
    ] {
        assert_eq!(value(&text, series), Some(expected), "{series} in\n{text}");
    }
    assert!(value(&text, "weir_connections_opened_total{protocol=\"http\"}").unwrap() >= 1.0);
    assert!(
        value(&text, "weir_log_data_sync_seconds_count").unwrap() >= 1.0,
        "{text}"
    );
    assert!(value(&text, "weir_log_commit_group_appends_bucket{le=\"+Inf\"}").unwrap() >= 1.0);
    assert!(value(&text, "weir_disk_space_available_bytes").unwrap() > 0.0);
    assert!(
        !text.contains("queue=\""),
        "aggregated: no series per queue"
    );
    promtool_check(&text).await;

    let (s, _, per) = scrape(&broker, "/metrics/per-object").await;
    assert_eq!(s, 200, "{per}");
    for (series, expected) in [
        ("weir_queue_messages_ready{vhost=\"/\",queue=\"q\"}", 3.0),
        ("weir_queue_messages_ready{vhost=\"/\",queue=\"work\"}", 0.0),
        (
            "weir_stream_records{vhost=\"/\",stream=\"events\",partition=\"0\"}",
            2.0,
        ),
        (
            "weir_stream_end_offset{vhost=\"/\",stream=\"events\",partition=\"0\"}",
            2.0,
        ),
        (
            "weir_stream_group_lag_records{vhost=\"/\",stream=\"events\",group=\"g\",partition=\"0\"}",
            1.0,
        ),
    ] {
        assert_eq!(value(&per, series), Some(expected), "{series} in\n{per}");
    }
    promtool_check(&per).await;

    let (s, _, only) = scrape(
        &broker,
        "/metrics/per-object?family=weir_queue_messages_ready&queue=q",
    )
    .await;
    assert_eq!(s, 200, "{only}");
    let samples: Vec<&str> = only.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(
        samples,
        ["weir_queue_messages_ready{vhost=\"/\",queue=\"q\"} 3"]
    );
    let (s, _, bad) = scrape(&broker, "/metrics/per-object?queue=(").await;
    assert_eq!(s, 400, "{bad}");
    let v: Value = serde_json::from_str(&bad).unwrap();
    assert_eq!(v["error"], "invalid_argument");
}

#[tokio::test]
async fn closing_a_connection_moves_it_from_open_to_closed() {
    let broker = Broker::start().await.expect("broker starts");
    let connection = connect(&broker).await;
    let channel = connection.create_channel().await.unwrap();
    channel.close(200, "bye".into()).await.unwrap();
    connection.close(200, "bye".into()).await.unwrap();
    // The session ends a moment after close-ok.
    let mut text = String::new();
    for _ in 0..100 {
        text = scrape(&broker, "/metrics").await.2;
        if value(&text, "weir_connections{protocol=\"amqp\"}") == Some(0.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for (series, expected) in [
        ("weir_connections{protocol=\"amqp\"}", 0.0),
        ("weir_connections_closed_total{protocol=\"amqp\"}", 1.0),
        ("weir_channels_opened_total{protocol=\"amqp\"}", 1.0),
        ("weir_channels_closed_total{protocol=\"amqp\"}", 1.0),
    ] {
        assert_eq!(value(&text, series), Some(expected), "{series} in\n{text}");
    }
}

/// A real Prometheus server (Debian's package, which `scripts/test` installs)
/// scrapes `/metrics/per-object` with a login and answers a query with the figure.
#[tokio::test]
async fn a_prometheus_server_scrapes_the_broker() {
    let broker = Broker::start().await.expect("broker starts");
    let _amqp = traffic(&broker).await;
    let dir = tempfile::tempdir().unwrap();
    let target = broker.http_url().trim_start_matches("http://").to_owned();
    let config = format!(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: weir\n    \
         metrics_path: /metrics/per-object\n    basic_auth:\n      username: guest\n      \
         password: guest\n    static_configs:\n      - targets: ['{target}']\n"
    );
    std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let prometheus = std::env::var("WEIR_PROMETHEUS").unwrap_or_else(|_| "prometheus".to_owned());
    let mut server = tokio::process::Command::new(prometheus)
        .arg(format!(
            "--config.file={}",
            dir.path().join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("prometheus runs: install Debian's prometheus package (./scripts/test does)");
    let query = format!(
        "http://127.0.0.1:{port}/api/v1/query?query=weir_queue_messages_ready%7Bqueue%3D%22q%22%7D"
    );
    let http = reqwest::Client::new();
    let mut last = Value::Null;
    for _ in 0..300 {
        if let Ok(answer) = http.get(&query).send().await
            && let Ok(v) = answer.json::<Value>().await
        {
            if v["data"]["result"][0]["value"][1] == "3" {
                last = v;
                break;
            }
            last = v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.kill().await.ok();
    let result = &last["data"]["result"][0];
    assert_eq!(result["value"][1], "3", "{last}");
    assert_eq!(result["metric"]["vhost"], "/", "{last}");
    assert_eq!(result["metric"]["job"], "weir", "{last}");
}

/// The metrics cover every vhost: a user without the `administrator` or
/// `monitoring` tag is refused, one tagged `monitoring` needs no permissions.
#[tokio::test]
async fn metrics_need_the_monitoring_or_administrator_tag() {
    let broker = Broker::start().await.expect("broker starts");
    let (s, _) = call(
        &broker,
        "PUT",
        "/api/users/app",
        Some(json!({"password": "s3cret"})),
    )
    .await;
    assert_eq!(s, 201);
    let as_app = |path: &'static str| {
        broker
            .client()
            .get(format!("{}{path}", broker.http_url()))
            .basic_auth("app", Some("s3cret"))
            .send()
    };
    for path in ["/metrics", "/metrics/per-object"] {
        let answer = as_app(path).await.unwrap();
        assert_eq!(answer.status().as_u16(), 403, "{path}");
        let v: Value = answer.json().await.unwrap();
        assert_eq!(v["error"], "access_refused", "{v}");
    }
    let tags = json!({"tags": "monitoring"});
    let (s, v) = call(&broker, "PUT", "/api/users/app", Some(tags)).await;
    assert_eq!(s, 200, "{v}");
    for path in ["/metrics", "/metrics/per-object"] {
        let answer = as_app(path).await.unwrap();
        assert_eq!(answer.status().as_u16(), 200, "{path}");
    }
}
