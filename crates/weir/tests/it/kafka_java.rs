//! The Java Kafka client (Apache kafka-clients 4.3.0, unmodified) against the
//! Kafka front end: its admin client, its default producer (idempotent, acks=all)
//! with every codec, a group read with its offsets, a group of two with the
//! client's default assignors, a SCRAM-SHA-256 login held to its permissions,
//! and the admin client's deleteRecords, describeCluster and
//! deleteConsumerGroupOffsets. `./scripts/test` installs the jars and a JDK;
//! tests/kafka/JavaClients.java is compiled once per run.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde_json::json;
use weir_testkit::Broker;

use crate::Api;
use crate::kafka::{assert_no_lag, run_client, start, user_who_writes};

/// The jars ./scripts/test installs (`WEIR_JAVA_JARS`).
fn jars() -> PathBuf {
    PathBuf::from(std::env::var("WEIR_JAVA_JARS").expect(
        "WEIR_JAVA_JARS is not set: run ./scripts/test, which installs the Java Kafka client",
    ))
}

/// The class path: the client's jars, then the compiled scenarios.
fn class_path(jars: &Path, classes: &Path) -> String {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(jars)
        .expect("the jars' directory")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jar"))
        .collect();
    entries.sort();
    entries.push(classes.to_owned());
    std::env::join_paths(entries)
        .unwrap()
        .into_string()
        .unwrap()
}

/// tests/kafka/JavaClients.java compiled (once for all tests); the class path to
/// run it with.
fn compiled() -> &'static str {
    static CLASS_PATH: OnceLock<(tempfile::TempDir, String)> = OnceLock::new();
    let (_, path) = CLASS_PATH.get_or_init(|| {
        let classes = tempfile::tempdir().unwrap();
        let source =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/kafka/JavaClients.java");
        let path = class_path(&jars(), classes.path());
        let out = std::process::Command::new("javac")
            .args(["-nowarn", "-cp", &path, "-d"])
            .arg(classes.path())
            .arg(&source)
            .output()
            .expect("javac runs: ./scripts/test installs a JDK");
        assert!(
            out.status.success(),
            "javac: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        (classes, path)
    });
    path
}

/// Runs a scenario of tests/kafka/JavaClients.java; its stdout, or a panic with its
/// output and the broker's log.
async fn java(broker: &Broker, name: &str, env: &[(&str, &str)]) -> String {
    let mut command = tokio::process::Command::new("java");
    command
        .args(["-cp", compiled(), "JavaClients", name])
        .envs(env.iter().copied());
    run_client(broker, command, name).await
}

/// The partition of each key weir picks for an HTTP append, from the `partitions
/// {key-0=1, ...}` line the Java scenario prints with the client's own choice.
async fn agree_on_partitions(api: &Api, printed: &str) {
    let line = printed
        .lines()
        .find_map(|l| l.strip_prefix("partitions {"))
        .expect("the scenario prints the partitions it chose");
    let chosen: Vec<(&str, u64)> = line
        .trim_end_matches('}')
        .split(", ")
        .map(|pair| {
            let (key, partition) = pair.split_once('=').unwrap();
            (key, partition.parse().unwrap())
        })
        .collect();
    assert_eq!(chosen.len(), 7, "{line}");
    for (key, partition) in chosen {
        let (status, body) = api
            .call(
                "POST",
                "/api/streams/jv/messages",
                Some(json!({"key": key, "body": "from HTTP"})),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(
            body["messages"][0]["partition"], partition,
            "weir and the Java client put {key} in one partition: {body}"
        );
    }
}

#[tokio::test]
async fn the_java_client_round_trips_every_codec_through_a_group_and_its_admin_client() {
    let broker = start().await;
    let out = java(&broker, "round_trip", &[]).await;
    assert!(
        out.contains("ok: OffsetFetch for the group: its offsets add up to 500"),
        "{out}"
    );
    assert_no_lag(&broker, "jv", "jg", 3).await;
    agree_on_partitions(&Api::new(&broker), &out).await;
}

#[tokio::test]
async fn the_java_clients_group_of_two_rebalances_when_one_leaves() {
    let broker = start().await;
    let out = java(&broker, "group_of_two", &[]).await;
    assert!(out.contains("ok: and nothing twice"), "{out}");
}

#[tokio::test]
async fn a_java_static_leader_that_restarts_takes_its_partitions_back_without_a_rebalance() {
    let broker = start().await;
    let out = java(&broker, "static_members", &[]).await;
    assert!(
        out.contains("ok: the group's members are i-a and i-b"),
        "{out}"
    );
}

#[tokio::test]
async fn the_java_admin_client_trims_describes_the_cluster_and_deletes_group_offsets() {
    let broker = start().await;
    let out = java(&broker, "admin_records", &[]).await;
    assert!(out.contains("ok: partition 1's stays at 30"), "{out}");
    let (status, body) = Api::new(&broker)
        .call("GET", "/api/streams/jadm", None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["partition_stats"][0]["first_offset"], 20,
        "HTTP sees the trim: {body}"
    );
}

#[tokio::test]
async fn the_java_client_logs_in_with_scram_and_is_held_to_its_permissions() {
    let broker = start().await;
    user_who_writes(&Api::new(&broker), "bob", "builder", "^java\\.ok$").await;
    let env = [
        ("WEIR_KAFKA_USER", "bob"),
        ("WEIR_KAFKA_PASSWORD", "builder"),
    ];
    let out = java(&broker, "scram", &env).await;
    assert!(
        out.contains("ok: a write to java.denied is refused"),
        "{out}"
    );
}
