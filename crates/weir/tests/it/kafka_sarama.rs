//! Sarama, the Go client (Debian's golang-github-shopify-sarama-dev 1.22,
//! unmodified), against the Kafka front end: its cluster admin, its idempotent
//! producer with zstd batches, a consumer group that commits, its offset
//! manager, and a client pinned at Kafka 1.0's protocol versions.
//! `./scripts/test` installs Go and Sarama; tests/kafka/sarama/main.go is built
//! once per run (GOPATH mode, with Debian's Go sources).

use std::path::PathBuf;
use std::sync::OnceLock;

use weir_testkit::Broker;

use crate::kafka::{assert_no_lag, run_client, start};

/// tests/kafka/sarama built (once for all tests): the program's path.
fn built() -> &'static PathBuf {
    static PROGRAM: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    let (_, program) = PROGRAM.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let program = dir.path().join("sarama-test");
        let source = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/kafka/sarama");
        let out = std::process::Command::new("go")
            .arg("build")
            .arg("-o")
            .arg(&program)
            .arg(".")
            .current_dir(&source)
            .env("GO111MODULE", "off")
            .env("GOPATH", "/usr/share/gocode")
            .output()
            .expect("go runs: ./scripts/test installs golang-go");
        assert!(
            out.status.success(),
            "go build: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        (dir, program)
    });
    program
}

async fn sarama(broker: &Broker, name: &str) -> String {
    let mut command = tokio::process::Command::new(built());
    command.arg(name);
    run_client(broker, command, name).await
}

#[tokio::test]
async fn sarama_round_trips_through_its_idempotent_producer_and_a_group() {
    let broker = start().await;
    let out = sarama(&broker, "round_trip").await;
    assert!(
        out.contains("ok: partition 2 committed at its end"),
        "{out}"
    );
    assert_no_lag(&broker, "go", "gog", 3).await;
}

#[tokio::test]
async fn sarama_at_kafka_1_0s_versions_produces_and_consumes() {
    let broker = start().await;
    let out = sarama(&broker, "old_versions").await;
    assert!(out.contains("ok: read back in order"), "{out}");
}
