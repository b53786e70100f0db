//! `weir bench` against the real binary (`amqp`, `http`, `connections`, `kafka`): each run
//! must verify what it moved (every message received once) and report it as JSON.
//! They live here, not beside the protocol tests, because they test the load
//! generator, whatever protocol it drives.

use weir_testkit::Broker;

use crate::Api;

/// `weir bench amqp` runs its workload against the broker and verifies it: every
/// message received once.
#[tokio::test]
async fn bench_amqp_verifies_its_run() {
    let broker = Broker::start().await.unwrap();
    let report = bench_json(&[
        "amqp",
        "--url",
        &broker.amqp_url(),
        "--count",
        "2000",
        "--size",
        "64",
        "--window",
        "100",
    ])
    .await;
    assert_eq!(report["verified"], true, "{report}");
    assert_eq!(report["received"], 2000);
    assert_eq!(report["duplicates"], 0);
    assert!(report["latency_ms"]["p50"].as_f64().is_some(), "{report}");
    // --compare: the same workload against two brokers, alternating, with ratios.
    let other = Broker::start().await.unwrap();
    let c = bench_json(&[
        "amqp",
        "--url",
        &broker.amqp_url(),
        "--compare",
        &other.amqp_url(),
        "--rounds",
        "2",
        "--count",
        "1000",
        "--size",
        "64",
    ])
    .await;
    let rounds = c["rounds"].as_array().expect("rounds");
    assert_eq!(rounds.len(), 2, "{c}");
    for r in rounds {
        assert_eq!(r["a"]["verified"], true, "{c}");
        assert_eq!(r["b"]["verified"], true, "{c}");
        assert_eq!(r["b"]["received"], 1000, "{c}");
    }
    assert!(
        c["ratio_a_over_b"]["publish msg/s"].as_f64().unwrap() > 0.0,
        "{c}"
    );
}

/// Runs `weir bench ARGS --json` and returns its report; fails the test unless it
/// succeeded.
pub(crate) async fn bench_json(args: &[&str]) -> serde_json::Value {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_weir"))
        .arg("bench")
        .args(args)
        .arg("--json")
        .output()
        .await
        .expect("weir bench runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{args:?}: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).expect("one JSON object")
}

/// `--queues` spreads the load over several queues; `--consumers 0` leaves a
/// backlog that `--producers 0` then drains, verified against the filling run.
#[tokio::test]
async fn bench_amqp_spreads_over_queues_and_drains_a_backlog() {
    let broker = Broker::start().await.unwrap();
    let url = broker.amqp_url();
    let spread = bench_json(&[
        "amqp",
        "--url",
        &url,
        "--producers",
        "2",
        "--consumers",
        "2",
        "--queues",
        "2",
        "--count",
        "2000",
        "--size",
        "64",
    ])
    .await;
    assert_eq!(spread["verified"], true, "{spread}");
    assert_eq!(spread["queues"], 2, "{spread}");
    let api = Api::new(&broker);
    for q in ["weir-bench-amqp-0", "weir-bench-amqp-1"] {
        let stats = api.stats(q).await;
        assert!(
            stats["acked_total"].as_u64() > Some(0),
            "{q} took part: {stats}"
        );
    }
    let fill = bench_json(&[
        "amqp",
        "--url",
        &url,
        "--consumers",
        "0",
        "--count",
        "3000",
        "--size",
        "64",
        "--queue",
        "backlog",
    ])
    .await;
    assert_eq!(fill["verified"], true, "{fill}");
    assert_eq!(api.stats("backlog").await["ready"], 3000);
    let drain = bench_json(&[
        "amqp",
        "--url",
        &url,
        "--producers",
        "0",
        "--count",
        "3000",
        "--queue",
        "backlog",
    ])
    .await;
    assert_eq!(drain["verified"], true, "{drain}");
    assert_eq!(drain["received"], 3000, "{drain}");
    assert_eq!(api.stats("backlog").await["ready"], 0);
}

/// `weir bench http` sends and receives everything over HTTP and, given the broker's
/// pid, reports its CPU per message and peak memory.
#[tokio::test]
async fn bench_http_moves_everything_and_reports_the_brokers_cpu() {
    let broker = Broker::start().await.unwrap();
    let pid = broker.pid().expect("the broker runs").to_string();
    let report = bench_json(&[
        "http",
        "--server",
        &broker.http_url(),
        "--count",
        "2000",
        "--batch",
        "100",
        "--producers",
        "2",
        "--consumers",
        "2",
        "--size",
        "256",
        "--pid",
        &pid,
    ])
    .await;
    assert_eq!(report["send"]["messages"], 2000, "{report}");
    assert_eq!(report["receive_ack"]["messages"], 2000, "{report}");
    assert_eq!(report["verified"], true, "{report}");
    assert_eq!(report["received"], 2000, "{report}");
    assert_eq!(report["duplicates"], 0, "{report}");
    assert!(
        report["broker_cpu_us_per_message"].as_f64() > Some(0.0),
        "{report}"
    );
    assert!(
        report["broker_peak_rss_bytes"].as_u64() > Some(0),
        "{report}"
    );
    assert!(
        report["client_cpu_us_per_message"].as_f64().is_some(),
        "{report}"
    );
}

/// `weir bench http --rate` paces the sends and still moves and verifies everything.
#[tokio::test]
async fn bench_http_at_a_fixed_rate_moves_everything() {
    let broker = Broker::start().await.unwrap();
    let report = bench_json(&[
        "http",
        "--server",
        &broker.http_url(),
        "--rate",
        "2000",
        "--count",
        "600",
        "--batch",
        "20",
        "--producers",
        "3",
        "--size",
        "64",
    ])
    .await;
    assert_eq!(report["verified"], true, "{report}");
    assert_eq!(report["send"]["messages"], 600, "{report}");
    assert_eq!(report["receive_ack"]["messages"], 600, "{report}");
}

/// `weir bench http --compare` runs the workload against a second broker too and
/// sets them side by side with ratios.
#[tokio::test]
async fn bench_http_compares_two_brokers() {
    let a = Broker::start().await.unwrap();
    let b = Broker::start().await.unwrap();
    let report = bench_json(&[
        "http",
        "--server",
        &a.http_url(),
        "--compare",
        &b.http_url(),
        "--rounds",
        "1",
        "--count",
        "500",
        "--batch",
        "50",
        "--size",
        "64",
    ])
    .await;
    let round = &report["rounds"][0];
    for side in ["a", "b"] {
        assert_eq!(round[side]["verified"], true, "{report}");
        assert_eq!(round[side]["receive_ack"]["messages"], 500, "{report}");
    }
    assert!(
        report["ratio_a_over_b"]["send msg/s"].as_f64() > Some(0.0),
        "{report}"
    );
}

/// A `weir bench http` run that receives messages it did not send (a queue left
/// holding an earlier run's) says it is not verified, and exits non-zero.
#[tokio::test]
async fn bench_http_says_when_a_run_is_not_verified() {
    let broker = Broker::start().await.unwrap();
    let server = broker.http_url();
    let common = ["--server", &server, "--queue", "held", "--batch", "50"];
    let fill = bench_json(
        &[
            &["http"][..],
            &common,
            &["--count", "100", "--consumers", "0", "--keep"],
        ]
        .concat(),
    )
    .await;
    assert_eq!(fill["send"]["messages"], 100, "{fill}");
    assert_eq!(fill["verified"], serde_json::Value::Null, "{fill}");

    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["bench", "http"])
        .args(common)
        .args(["--count", "200", "--json"])
        .output()
        .await
        .expect("weir bench runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "exits non-zero: {stdout}");
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    assert_eq!(report["verified"], false, "{report}");
    assert_eq!(report["received"], 300, "{report}");
    assert_eq!(
        report["duplicates"], 100,
        "sequence numbers 0..100 came twice: {report}"
    );
}

/// `weir bench connections` holds idle connections with heartbeats and reports the
/// broker's memory per connection.
#[tokio::test]
async fn bench_connections_holds_idle_connections_with_heartbeats() {
    let broker = Broker::start().await.unwrap();
    let pid = broker.pid().expect("the broker runs").to_string();
    let report = bench_json(&[
        "connections",
        "--url",
        &broker.amqp_url(),
        "--count",
        "50",
        "--heartbeat",
        "1",
        "--hold",
        "3",
        "--pid",
        &pid,
    ])
    .await;
    assert_eq!(report["opened"], 50, "{report}");
    assert_eq!(report["dropped_while_held"], 0, "{report}");
    assert_eq!(report["all_held"], true, "{report}");
    assert!(
        report["broker_bytes_per_connection"].as_f64().is_some(),
        "{report}"
    );
}

/// `weir bench kafka` produces with librdkafka, reads everything back from the
/// first record, measures the latency at a fixed rate, and runs the same phases
/// over weir's AMQP and HTTP stream paths, and the Java client's consumer reads
/// the records again: each verified (every record once).
#[tokio::test]
async fn bench_kafka_verifies_its_three_phases_and_the_other_paths() {
    let broker = Broker::start_with(&["--kafka-listen", "127.0.0.1:0"])
        .await
        .unwrap();
    let pid = broker.pid().expect("the broker's pid").to_string();
    let jars = std::env::var("WEIR_JAVA_JARS").expect(
        "WEIR_JAVA_JARS is not set: run ./scripts/test, which installs the Java Kafka client",
    );
    let report = bench_json(&[
        "kafka",
        "--bootstrap",
        broker.kafka_addr().expect("the Kafka listener"),
        "--count",
        "3000",
        "--size",
        "64",
        "--rate",
        "400",
        "--latency-secs",
        "1",
        "--pid",
        &pid,
        "--amqp",
        &broker.amqp_url(),
        "--http",
        "--server",
        &broker.http_url(),
        "--java-jars",
        &jars,
    ])
    .await;
    let kafka = &report["kafka"];
    assert_eq!(kafka["verified"], true, "{report}");
    assert_eq!(kafka["delivered"], 3000, "{report}");
    assert_eq!(kafka["consumed"], 3000, "{report}");
    assert_eq!(kafka["latency_ms"]["count"], 400, "{report}");
    assert!(
        kafka["produce_records_per_sec"].as_f64().unwrap() > 0.0,
        "{report}"
    );
    // (A run this short may take less than one of the kernel's CPU ticks.)
    assert!(
        kafka["broker_cpu_us_per_record"].as_f64().is_some(),
        "{report}"
    );
    assert_eq!(report["java"]["consumed"], 3000, "{report}");
    for path in ["java", "amqp", "http"] {
        assert_eq!(report[path]["verified"], true, "{path}: {report}");
        assert!(
            report[path]["consume_mb_per_sec"].as_f64().unwrap() > 0.0,
            "{report}"
        );
    }
    assert_eq!(report["http"]["latency_ms"]["count"], 400, "{report}");
    // Over AMQP the paced phase runs for a second rather than to a count.
    assert!(
        report["amqp"]["latency_ms"]["count"].as_u64().unwrap() > 0,
        "{report}"
    );
    // The topics and streams of the run are gone again.
    let api = Api::new(&broker);
    let (_, streams) = api.call("GET", "/api/streams", None).await;
    assert_eq!(
        streams["streams"].as_array().map(Vec::len),
        Some(0),
        "{streams}"
    );
}
