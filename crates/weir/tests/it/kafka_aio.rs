//! aiokafka, the asyncio Kafka client (its own protocol code, from `PyPI`,
//! unmodified), against the Kafka front end: its admin client, its idempotent
//! producer in each codec, a group that commits, and a member that commits what
//! it read while the group prepares a rebalance, so the member that joined reads
//! nothing twice. `./scripts/test` installs it in the venv
//! (tests/kafka/aio.py).

use std::path::PathBuf;

use weir_testkit::Broker;

use crate::kafka::{run_client, start};
use crate::pika::python;

async fn aio(broker: &Broker, name: &str) -> String {
    let mut command = tokio::process::Command::new(python());
    command
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/kafka/aio.py"))
        .arg(name);
    run_client(broker, command, name).await
}

#[tokio::test]
async fn aiokafka_produces_in_each_codec_and_reads_in_a_group() {
    let broker = start().await;
    let out = aio(&broker, "produce_and_read").await;
    assert!(out.contains("ok: and its offsets"), "{out}");
}

#[tokio::test]
async fn aiokafka_commits_while_a_rebalance_is_prepared_and_nothing_is_read_twice() {
    let broker = start().await;
    let out = aio(&broker, "commit_on_rebalance").await;
    assert!(out.contains("ok: the group committed the 400"), "{out}");
}

#[tokio::test]
async fn aiokafka_transactional_producer_is_refused() {
    let broker = start().await;
    let out = aio(&broker, "transactions_refused").await;
    assert!(
        out.contains("ok: a transactional producer is refused"),
        "{out}"
    );
}

#[tokio::test]
async fn aiokafka_legacy_alter_configs_replaces_the_topics_set() {
    let broker = start().await;
    let out = aio(&broker, "alter_configs_replaces_the_set").await;
    assert!(
        out.contains("ok: AlterConfigs answered without error"),
        "{out}"
    );
    let (status, body) = crate::Api::new(&broker)
        .call("GET", "/api/streams/aio-alt", None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["max_bytes"], 8192, "{body}");
    assert!(
        body["max_age_ms"].is_null(),
        "left out: back to no limit: {body}"
    );
}
