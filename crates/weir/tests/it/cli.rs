//! The client commands (`weir queue`, `send`, `recv`, `ack`, `nack`, `dlq`) run as
//! the real binary against a real broker. Also the helpers the `worker` tests share.

use std::future::Future;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::AsyncWriteExt as _;
use weir_testkit::Broker;

use crate::Api;

/// The binary under test.
pub const WEIR: &str = env!("CARGO_BIN_EXE_weir");

/// How long a poll waits for a condition before the test fails. Generous: the
/// machine may be busy compiling.
const DEADLINE: Duration = Duration::from_secs(30);

/// What a finished `weir` command did.
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Panics unless the command exited 0.
    #[track_caller]
    pub fn ok(self) -> Run {
        assert_eq!(self.code, Some(0), "weir failed: {}", self.stderr);
        self
    }

    /// Stdout as JSON.
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.stdout))
    }
}

/// Runs `weir ARGS` against `broker` (through `WEIR_SERVER`) with `stdin`.
pub async fn weir(broker: &Broker, args: &[&str], stdin: &[u8]) -> Run {
    weir_at(&broker.http_url(), args, stdin).await
}

/// Runs `weir ARGS` against the broker at `server`.
pub async fn weir_at(server: &str, args: &[&str], stdin: &[u8]) -> Run {
    let mut child = tokio::process::Command::new(WEIR)
        .args(args)
        .env("WEIR_SERVER", server)
        .env_remove("WEIR_USER")
        .env_remove("WEIR_PASSWORD")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("weir starts");
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(stdin).await.expect("write stdin");
    drop(input);
    let output = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("weir {args:?} did not finish within 60 s"))
        .expect("weir output");
    Run {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Polls `check` every 50 ms until it gives a value; fails the test after 30 s with
/// `what` and whatever `context` says then (a worker's log, say).
pub async fn eventually<T, F, Fut>(what: &str, context: impl Fn() -> String, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}\n{}",
            context()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The messages of a `--json` receive or peek.
pub fn messages(run: &Run) -> Vec<Value> {
    run.json()["messages"].as_array().expect("messages").clone()
}

/// A file's text, or "" when it does not exist yet.
pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

async fn start() -> (Broker, Api) {
    let broker = Broker::start().await.expect("broker starts");
    let api = Api::new(&broker);
    (broker, api)
}

#[tokio::test]
async fn queue_create_list_show_purge_and_delete_round_trip() {
    let (b, api) = start().await;
    let create = [
        "queue",
        "create",
        "jobs",
        "--max-deliveries",
        "3",
        "--dead-letter-queue",
        "jobs-dlq",
        "--retry-backoff",
        "exponential",
        "--overflow",
        "reject-publish",
        "--max-length",
        "100",
    ];
    let run = weir(&b, &create, b"").await.ok();
    assert!(run.stdout.contains("created queue jobs"), "{}", run.stdout);
    // The same declaration again is fine; a different one is refused with the reason.
    let run = weir(&b, &create, b"").await.ok();
    assert!(run.stdout.contains("exists"), "{}", run.stdout);
    let run = weir(
        &b,
        &["queue", "create", "jobs", "--max-deliveries", "4"],
        b"",
    )
    .await;
    assert_eq!(run.code, Some(1));
    assert!(
        run.stderr.contains("queue_exists_with_different_options"),
        "{}",
        run.stderr
    );

    let run = weir(&b, &["queue", "list"], b"").await.ok();
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert!(lines[0].starts_with("NAME"), "{}", run.stdout);
    assert!(
        lines.iter().any(|l| l.starts_with("jobs ")),
        "{}",
        run.stdout
    );
    assert!(
        lines.iter().any(|l| l.starts_with("jobs-dlq ")),
        "{}",
        run.stdout
    );
    let list = weir(&b, &["queue", "list", "--json"], b"")
        .await
        .ok()
        .json();
    let names: Vec<&str> = list["queues"]
        .as_array()
        .expect("queues")
        .iter()
        .map(|q| q["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["jobs", "jobs-dlq"]);

    let info = weir(&b, &["queue", "show", "jobs", "--json"], b"")
        .await
        .ok()
        .json();
    assert_eq!(info["options"]["max_deliveries"], 3);
    assert_eq!(info["options"]["dead_letter_queue"], "jobs-dlq");
    assert_eq!(info["options"]["retry_backoff"], "exponential");
    assert_eq!(info["options"]["overflow"], "reject-publish");
    assert_eq!(info["options"]["max_length"], 100);
    let run = weir(&b, &["queue", "show", "jobs"], b"").await.ok();
    assert!(
        run.stdout
            .lines()
            .any(|l| l.split_whitespace().eq(["max_deliveries", "3"])),
        "{}",
        run.stdout
    );

    weir(&b, &["send", "jobs", "one"], b"").await.ok();
    weir(&b, &["send", "jobs", "two"], b"").await.ok();
    assert_eq!(api.stats("jobs").await["ready"], 2);
    let run = weir(&b, &["queue", "purge", "jobs"], b"").await.ok();
    assert_eq!(run.stdout.trim(), "purged 2 messages from jobs");
    let run = weir(&b, &["queue", "purge", "jobs", "--json"], b"")
        .await
        .ok();
    assert_eq!(run.json()["purged"], 0);

    let run = weir(&b, &["queue", "delete", "jobs"], b"").await.ok();
    assert_eq!(run.stdout.trim(), "deleted queue jobs");
    let run = weir(&b, &["queue", "show", "jobs"], b"").await;
    assert_eq!(run.code, Some(1));
    assert!(run.stderr.contains("queue_not_found"), "{}", run.stderr);
}

#[tokio::test]
async fn send_from_stdin_is_one_batch_and_recv_json_ack_gets_every_line() {
    let (b, api) = start().await;
    weir(&b, &["queue", "create", "lines"], b"").await.ok();
    let run = weir(&b, &["send", "lines"], b"one\ntwo\n\nthree\r\n")
        .await
        .ok();
    assert_eq!(run.stdout.trim(), "sent 3 messages to lines");
    // `-` is stdin too; --json prints the broker's answer per batch.
    let run = weir(&b, &["send", "lines", "-", "--json"], b"four")
        .await
        .ok();
    assert_eq!(run.json()["sent"], 1);

    let run = weir(
        &b,
        &["recv", "lines", "--max", "10", "--json", "--ack"],
        b"",
    )
    .await
    .ok();
    let got = messages(&run);
    let bodies: Vec<&str> = got
        .iter()
        .map(|m| m["body"].as_str().expect("text"))
        .collect();
    assert_eq!(bodies, ["one", "two", "three", "four"]);
    assert!(got.iter().all(|m| m["delivery_count"] == 1));
    let stats = api.stats("lines").await;
    assert_eq!(
        (stats["acked_total"].as_u64(), stats["ready"].as_u64()),
        (Some(4), Some(0))
    );
    assert_eq!(stats["leased"], 0);
    let run = weir(&b, &["recv", "lines", "--json"], b"").await.ok();
    assert!(messages(&run).is_empty());
    let run = weir(&b, &["recv", "lines"], b"").await.ok();
    assert_eq!(run.stdout.trim(), "no messages");
}

#[tokio::test]
async fn send_options_and_binary_bodies_round_trip_through_recv() {
    let (b, _api) = start().await;
    weir(&b, &["queue", "create", "opts", "--max-priority", "5"], b"")
        .await
        .ok();
    let run = weir(
        &b,
        &[
            "send",
            "opts",
            "hello",
            "--id",
            "m-1",
            "--header",
            "trace=t1",
            "--header",
            "kind=a=b",
            "--priority",
            "3",
            "--group",
            "g1",
        ],
        b"",
    )
    .await
    .ok();
    assert_eq!(run.stdout.trim(), "m-1");
    let run = weir(&b, &["send", "opts", "--id", "x"], b"").await;
    assert_eq!(
        run.code,
        Some(2),
        "--id with stdin is a usage error: {}",
        run.stderr
    );
    weir(&b, &["send", "opts"], b"\xff\x00binary\n").await.ok();

    let run = weir(&b, &["recv", "opts", "--max", "10", "--json"], b"")
        .await
        .ok();
    let got = messages(&run);
    assert_eq!(got.len(), 2, "{got:?}");
    let first = &got[0];
    assert_eq!(first["id"], "m-1");
    assert_eq!(first["body"], "hello");
    assert_eq!(first["headers"]["trace"], "t1");
    assert_eq!(first["headers"]["kind"], "a=b");
    assert_eq!(first["priority"], 3);
    assert_eq!(first["group"], "g1");
    assert!(got[1].get("body").is_none(), "{got:?}");
    assert_eq!(got[1]["body_base64"], "/wBiaW5hcnk=");

    // The leases are ours: ack them with the receipts `recv` printed.
    let receipts: Vec<&str> = got
        .iter()
        .map(|m| m["receipt"].as_str().expect("receipt"))
        .collect();
    let mut args = vec!["ack", "opts"];
    args.extend(&receipts);
    assert_eq!(
        weir(&b, &args, b"").await.ok().stdout.trim(),
        "acked 2 messages"
    );

    // Tables show binary bodies as base64.
    weir(&b, &["send", "opts"], b"\xfe\n").await.ok();
    let run = weir(&b, &["recv", "opts", "--ack"], b"").await.ok();
    assert!(run.stdout.contains("base64:/g=="), "{}", run.stdout);
}

#[tokio::test]
async fn errors_print_the_brokers_reason_and_exit_non_zero() {
    let (b, _api) = start().await;
    for args in [
        &["send", "nowhere", "hi"][..],
        &["recv", "nowhere"],
        &["queue", "show", "nowhere"],
        &["dlq", "peek", "nowhere"],
    ] {
        let run = weir(&b, args, b"").await;
        assert_eq!(run.code, Some(1), "{args:?}: {}", run.stderr);
        assert!(
            run.stderr.contains("does not exist"),
            "{args:?}: {}",
            run.stderr
        );
        assert!(
            run.stderr.contains("queue_not_found"),
            "{args:?}: {}",
            run.stderr
        );
        assert!(run.stdout.is_empty(), "{args:?}: {}", run.stdout);
    }
    let too_long = "x".repeat(256);
    let run = weir(&b, &["queue", "create", &too_long], b"").await;
    assert_eq!(run.code, Some(1));
    assert!(run.stderr.contains("invalid_name"), "{}", run.stderr);
    // Usage errors are clap's: exit 2.
    let run = weir(&b, &["recv"], b"").await;
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    // Nothing listening: a clear message, exit 1.
    let run = weir_at("http://127.0.0.1:1", &["queue", "list"], b"").await;
    assert_eq!(run.code, Some(1));
    assert!(
        run.stderr.contains("cannot reach the broker"),
        "{}",
        run.stderr
    );
}

#[tokio::test]
async fn rejected_messages_show_in_dlq_peek_and_redrive_back() {
    let (b, api) = start().await;
    weir(
        &b,
        &[
            "queue",
            "create",
            "orders",
            "--dead-letter-queue",
            "orders-dlq",
        ],
        b"",
    )
    .await
    .ok();
    weir(&b, &["send", "orders", "broken order"], b"")
        .await
        .ok();
    let got = messages(&weir(&b, &["recv", "orders", "--json"], b"").await.ok());
    let receipt = got[0]["receipt"].as_str().expect("receipt");
    let run = weir(&b, &["nack", "orders", receipt, "--reject"], b"")
        .await
        .ok();
    assert_eq!(run.stdout.trim(), "nacked 1 message");

    let peeked = eventually("the rejected message in the DLQ", String::new, || async {
        let got = messages(
            &weir(&b, &["dlq", "peek", "orders", "--json"], b"")
                .await
                .ok(),
        );
        (!got.is_empty()).then_some(got)
    })
    .await;
    assert_eq!(peeked[0]["body"], "broken order");
    assert_eq!(peeked[0]["dead_letter"]["reason"], "rejected");
    assert_eq!(peeked[0]["dead_letter"]["source_queue"], "orders");
    let run = weir(&b, &["dlq", "peek", "orders"], b"").await.ok();
    assert!(
        run.stdout.contains("rejected") && run.stdout.contains("broken order"),
        "{}",
        run.stdout
    );

    let run = weir(&b, &["dlq", "redrive", "orders"], b"").await.ok();
    assert_eq!(run.stdout.trim(), "redrove 1 message to orders");
    api.wait_stats("orders", "the redriven message", |s| s["ready"] == 1)
        .await;
    let got = messages(
        &weir(&b, &["recv", "orders", "--json", "--ack"], b"")
            .await
            .ok(),
    );
    assert_eq!(got[0]["body"], "broken order");
    let run = weir(&b, &["dlq", "peek", "orders"], b"").await.ok();
    assert_eq!(run.stdout.trim(), "no dead letters from orders");
}

#[test]
fn weir_config_shows_defaults_file_env_and_flags_in_precedence_order() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("weir.toml");
    std::fs::write(
        &file,
        "http_listen = \"127.0.0.1:1111\"\nfsync = \"never\"\n[limits]\nmax_queues = 3\n",
    )
    .unwrap();
    let out = std::process::Command::new(WEIR)
        .args([
            "config",
            "--config",
            file.to_str().unwrap(),
            "--fsync",
            "interval:20",
        ])
        .env("WEIR_LIMITS_MAX_QUEUES", "9")
        .env("WEIR_AMQP_LISTEN", "127.0.0.1:2222")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("http_listen = \"127.0.0.1:1111\""),
        "file: {text}"
    );
    assert!(
        text.contains("amqp_listen = \"127.0.0.1:2222\""),
        "env: {text}"
    );
    assert!(
        text.contains("fsync = \"interval:20\""),
        "flag over file: {text}"
    );
    assert!(text.contains("max_queues = 9"), "env over file: {text}");
    assert!(
        text.contains("data_dir = \"./weir-data\""),
        "default: {text}"
    );
    let bad = std::process::Command::new(WEIR)
        .args(["config"])
        .env("WEIR_FSYNC", "sometimes")
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("fsync"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}
