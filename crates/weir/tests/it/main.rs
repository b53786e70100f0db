//! Integration tests: the real `weir` binary on loopback, driven over HTTP with
//! reqwest (and the CLI). One test binary (house style §2.1); each module is a
//! topic. No timing assertions: waits poll for a condition with a deadline.

#![allow(missing_docs)] // test helpers

mod access;
mod access_http;
mod amqp;
mod amqp_methods;
mod amqp_queues;
mod amqp_streams;
mod bench;
mod celery;
mod cli;
mod cli_access;
mod cli_routing;
mod cli_streams;
mod connections;
mod dashboard;
mod dead_letters;
mod definitions;
mod durability;
mod edge_cases;
mod fan_out;
mod hostile_input;
mod http_api;
mod http_limits;
mod kafka;
mod kafka_aio;
mod kafka_fetch_wait;
mod kafka_group_frames;
mod kafka_java;
mod kafka_produce_frames;
mod kafka_sarama;
mod large_messages;
mod limits_files;
mod metrics;
mod metrics_messages;
mod names;
mod pika;
mod routing;
mod slow_consumer;
mod stream_binary;
mod stream_binary_append;
mod stream_crash;
mod stream_groups;
mod streams;
mod super_streams;
mod tls;
mod vhosts;
mod worker;

use std::time::Duration;

use serde_json::{Value, json};
use weir_testkit::Broker;

/// A thin JSON client for the REST API.
pub struct Api {
    client: reqwest::Client,
    base: String,
}

impl Api {
    pub fn new(broker: &Broker) -> Api {
        Api {
            client: weir_testkit::http_client(),
            base: broker.http_url(),
        }
    }

    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let url = format!("{}{path}", self.base);
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self.client.request(method, url);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, value)
    }

    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        body: impl Into<reqwest::Body>,
    ) -> (u16, Value) {
        let url = format!("{}{path}", self.base);
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let resp = self
            .client
            .request(method, url)
            .body(body)
            .send()
            .await
            .expect("request");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub async fn create(&self, queue: &str, options: Value) -> Value {
        let (status, body) = self
            .call("PUT", &format!("/api/queues/{queue}"), Some(options))
            .await;
        assert!(
            status == 201 || status == 200,
            "create {queue}: {status} {body}"
        );
        body
    }

    pub async fn send(&self, queue: &str, message: Value) -> Value {
        let (status, body) = self
            .call(
                "POST",
                &format!("/api/queues/{queue}/messages"),
                Some(message),
            )
            .await;
        assert_eq!(status, 201, "send: {body}");
        body
    }

    pub async fn send_text(&self, queue: &str, text: &str) -> String {
        let body = self.send(queue, json!({"body": text})).await;
        body["messages"][0]["id"].as_str().expect("id").to_owned()
    }

    pub async fn receive(&self, queue: &str, query: &str) -> Vec<Value> {
        let (status, body) = self
            .call(
                "POST",
                &format!("/api/queues/{queue}/receive?{query}"),
                None,
            )
            .await;
        assert_eq!(status, 200, "receive: {body}");
        body["messages"].as_array().expect("messages").clone()
    }

    pub async fn ack(&self, queue: &str, receipts: &[&str]) -> (u16, Value) {
        self.call(
            "POST",
            &format!("/api/queues/{queue}/ack"),
            Some(json!({"receipts": receipts})),
        )
        .await
    }

    pub async fn stats(&self, queue: &str) -> Value {
        let (status, body) = self
            .call("GET", &format!("/api/queues/{queue}"), None)
            .await;
        assert_eq!(status, 200, "stats: {body}");
        body["stats"].clone()
    }

    /// Polls `GET /api/queues/{queue}/dead-letters` until it shows a message (60 s
    /// at most): the dead-letter queue counts a message from its admission, a
    /// moment before it is written and can be peeked at.
    pub async fn wait_dead_letters(&self, queue: &str) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let (status, body) = self
                .call("GET", &format!("/api/queues/{queue}/dead-letters"), None)
                .await;
            assert_eq!(status, 200, "dead letters: {body}");
            let messages = body["messages"].as_array().expect("messages");
            if !messages.is_empty() {
                return messages.clone();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for a dead letter of {queue}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Polls `GET /api/queues/{queue}` until `check(stats)` holds (60 s at most).
    pub async fn wait_stats(
        &self,
        queue: &str,
        what: &str,
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let stats = self.stats(queue).await;
            if check(&stats) {
                return stats;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what} on {queue}: {stats}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The receipt of a received message.
pub fn receipt(m: &Value) -> &str {
    m["receipt"].as_str().expect("receipt")
}

/// The text bodies of received messages.
pub fn bodies(ms: &[Value]) -> Vec<String> {
    ms.iter()
        .map(|m| m["body"].as_str().expect("text body").to_owned())
        .collect()
}

/// The directory of queue `name` under `data_dir` (`queues/@<id>`, whose `name`
/// file holds the name).
pub fn queue_dir(data_dir: &std::path::Path, name: &str) -> std::path::PathBuf {
    std::fs::read_dir(data_dir.join("queues"))
        .expect("queues directory")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|dir| std::fs::read(dir.join("name")).is_ok_and(|n| n == name.as_bytes()))
        .unwrap_or_else(|| panic!("no directory holds queue '{name}'"))
}

/// How many segment files a log directory holds.
pub fn segment_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .expect("log directory")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".log"))
        })
        .count()
}

/// A broker whose logs roll every MiB, so tests see segments come and go.
pub async fn broker_with_small_segments() -> (Broker, tempfile::TempDir) {
    broker_with_segment_bytes(1 << 20).await
}

/// A broker whose logs roll every `bytes`.
pub async fn broker_with_segment_bytes(bytes: u64) -> (Broker, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let config = dir.path().join("weir.toml");
    std::fs::write(&config, format!("[log]\nsegment_bytes = {bytes}\n")).expect("config file");
    let broker = Broker::start_with(&["--config", config.to_str().expect("UTF-8 path")])
        .await
        .expect("broker starts");
    (broker, dir)
}
