//! File descriptors (issues 17 and 19): the broker raises its soft open-file limit to
//! the hard one and gives the queues' logs what is left once connections and its own
//! files are reserved, as a limit on the files they keep open at once. Idle queues
//! hold no file open (weir-log's file cache closes idle files and opens them again on
//! use), so queues are not bounded by descriptors: many more queues than the limit
//! could hold open are accepted, all of them work, the process stays under the limit,
//! both listeners keep answering, and after `kill -9` every queue comes back.
//!
//! The broker runs under `prlimit --nofile=256:400`: 400 files, less 64 kept for the
//! broker itself and 200 (half the limit, the cap) for connections, leaves 136 for
//! logs (docs/configuration.md). 200 queues would need 400 held open without the cache.

use lapin::options::{
    BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use serde_json::json;
use weir_testkit::Broker;

use crate::Api;

const QUEUES: usize = 200;
/// Descriptors the process may hold with no connection open: the logs' 136 and the
/// 64 reserved for its own files (the limit is soft for files being written, a few).
const MOST_FDS: usize = 136 + 64;

/// Descriptors the process has open now.
fn open_fds(broker: &Broker) -> usize {
    let pid = broker.pid().expect("the broker runs");
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

#[tokio::test]
async fn queues_beyond_what_the_file_limit_holds_open_all_work_and_survive_a_kill9() {
    let mut broker = Broker::start_wrapped(&["prlimit", "--nofile=256:400", "--"], &[])
        .await
        .expect("broker starts");
    let api = Api::new(&broker);
    for i in 0..QUEUES {
        let name = format!("q{i}");
        api.create(&name, json!({})).await;
        api.send_text(&name, &name).await;
    }
    let fds = open_fds(&broker);
    assert!(
        fds <= MOST_FDS,
        "{fds} descriptors open with {QUEUES} queues (prlimit 400)"
    );

    // Both listeners still answer, and AMQP declares and uses queues too.
    let (status, _) = api.call("GET", "/healthz", None).await;
    assert_eq!(status, 200);
    let connection = Connection::connect(&broker.amqp_url(), ConnectionProperties::default())
        .await
        .expect("an AMQP connection is accepted");
    let channel = connection.create_channel().await.expect("channel");
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirm mode");
    channel
        .queue_declare(
            "over-amqp".into(),
            QueueDeclareOptions::durable(),
            FieldTable::default(),
        )
        .await
        .expect("a queue declared over AMQP");
    channel
        .basic_publish(
            "".into(),
            "over-amqp".into(),
            BasicPublishOptions::default(),
            b"amqp",
            BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .expect("publish")
        .await
        .expect("the publish is confirmed");
    let got = channel
        .basic_get("q7".into(), BasicGetOptions { no_ack: true })
        .await
        .expect("basic.get")
        .expect("q7 holds its message");
    assert_eq!(got.delivery.data, b"q7");
    let _ = connection.close(200, "bye".into()).await;

    broker.kill9().await.expect("kill -9");
    broker
        .restart()
        .await
        .expect("the broker restarts under the same limit");
    let api = Api::new(&broker);
    for i in (0..QUEUES).filter(|&i| i != 7) {
        let name = format!("q{i}");
        let got = api.receive(&name, "max=10").await;
        assert_eq!(got.len(), 1, "{name}");
        assert_eq!(got[0]["body"], name.as_str());
    }
    assert_eq!(api.stats("over-amqp").await["ready"], 1);
    let fds = open_fds(&broker);
    assert!(fds <= MOST_FDS, "{fds} descriptors open after the restart");
}
