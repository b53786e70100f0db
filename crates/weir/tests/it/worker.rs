//! `weir worker` running real commands (`sh -c …`, the sqlite example) against a
//! real broker. Commands leave files in a temporary directory (`$OUT`) to show what
//! they saw; the broker's stats show what was acked, retried and dead-lettered.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use weir_testkit::Broker;

use crate::Api;
use crate::cli::{WEIR, eventually, messages, read, weir};

/// A running `weir worker`; killed when dropped.
struct Worker {
    child: tokio::process::Child,
    /// Its stderr (one line per message), for assertions and failure messages.
    log: PathBuf,
}

impl Worker {
    /// Starts `weir worker --server … ARGS` with `OUT` set to `out` (commands inherit
    /// it).
    fn start(broker: &Broker, out: &Path, args: &[&str]) -> Worker {
        let log = out.join("worker.log");
        let stderr = std::fs::File::create(&log).expect("worker log");
        let child = tokio::process::Command::new(WEIR)
            .arg("worker")
            .args(["--server", &broker.http_url()])
            .args(args)
            .env("OUT", out)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .expect("weir worker starts");
        Worker { child, log }
    }

    fn log(&self) -> String {
        format!("---- worker log ----\n{}", read(&self.log))
    }

    /// Sends SIGTERM (through kill(1): tests may not use `unsafe` either).
    fn terminate(&self) {
        let pid = self.child.id().expect("worker running");
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("kill -TERM");
        assert!(status.success());
    }

    /// Waits for the worker to exit and returns its code.
    async fn exit_code(&mut self) -> Option<i32> {
        let waited = tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await;
        let Ok(status) = waited else {
            panic!("the worker did not exit within 30 s\n{}", self.log());
        };
        status.expect("wait for the worker").code()
    }

    /// SIGTERM, and the exit code.
    async fn stop(&mut self) -> Option<i32> {
        self.terminate();
        self.exit_code().await
    }
}

/// Whether process `pid` runs (a zombie left for a reaper that may never come, as
/// in some containers, does not count).
fn running(pid: &str) -> bool {
    let status = read(&Path::new("/proc").join(pid).join("status"));
    status
        .lines()
        .find_map(|l| l.strip_prefix("State:"))
        .is_some_and(|state| !state.trim_start().starts_with('Z'))
}

async fn start() -> (Broker, Api, tempfile::TempDir) {
    let broker = Broker::start().await.expect("broker starts");
    let api = Api::new(&broker);
    let out = tempfile::tempdir().expect("temporary directory");
    (broker, api, out)
}

/// Polls the queue's stats until `check` holds.
async fn wait_stats(
    api: &Api,
    worker: &Worker,
    queue: &str,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    eventually(
        what,
        || worker.log(),
        || async {
            let stats = api.stats(queue).await;
            check(&stats).then_some(stats)
        },
    )
    .await
}

#[tokio::test]
async fn worker_acks_when_the_command_exits_zero_and_passes_body_and_environment() {
    let (b, api, out) = start().await;
    weir(&b, &["queue", "create", "jobs"], b"").await.ok();
    for (id, body) in [("m-1", "first body"), ("m-2", "second body")] {
        weir(
            &b,
            &["send", "jobs", body, "--id", id, "--header", "trace-id=t-7"],
            b"",
        )
        .await
        .ok();
    }
    let script = r#"cat > "$OUT/$WEIR_MESSAGE_ID.body"
printf '%s|%s|%s|%s' "$WEIR_QUEUE" "$WEIR_DELIVERY_COUNT" "$WEIR_HEADER_TRACE_ID" "${WEIR_RECEIPT:+receipt}" > "$OUT/$WEIR_MESSAGE_ID.env""#;
    let mut worker = Worker::start(
        &b,
        out.path(),
        &[
            "--queue",
            "jobs",
            "--concurrency",
            "2",
            "--",
            "sh",
            "-c",
            script,
        ],
    );

    wait_stats(&api, &worker, "jobs", "both messages acked", |s| {
        s["acked_total"] == 2 && s["ready"] == 0 && s["leased"] == 0
    })
    .await;
    for (id, body) in [("m-1", "first body"), ("m-2", "second body")] {
        assert_eq!(read(&out.path().join(format!("{id}.body"))), body);
        assert_eq!(
            read(&out.path().join(format!("{id}.env"))),
            "jobs|1|t-7|receipt"
        );
    }
    assert_eq!(worker.stop().await, Some(0), "{}", worker.log());
    let log = read(&worker.log);
    assert!(
        log.contains("id=m-1 delivery=1 exit=0 outcome=acked"),
        "{log}"
    );
}

#[tokio::test]
async fn worker_retries_a_failing_command_until_the_broker_dead_letters_it() {
    let (b, api, out) = start().await;
    let create = [
        "queue",
        "create",
        "flaky",
        "--max-deliveries",
        "3",
        "--dead-letter-queue",
        "flaky-dlq",
    ];
    weir(&b, &create, b"").await.ok();
    weir(&b, &["send", "flaky", "always fails"], b"").await.ok();
    let script = r#"echo "$WEIR_DELIVERY_COUNT" >> "$OUT/attempts"; exit 3"#;
    let mut worker = Worker::start(
        &b,
        out.path(),
        &["--queue", "flaky", "--", "sh", "-c", script],
    );

    let dead = eventually(
        "the message in the dead-letter queue",
        || worker.log(),
        || async {
            let got = messages(
                &weir(&b, &["dlq", "peek", "flaky", "--json"], b"")
                    .await
                    .ok(),
            );
            (!got.is_empty()).then_some(got)
        },
    )
    .await;
    assert_eq!(dead[0]["body"], "always fails");
    assert_eq!(dead[0]["dead_letter"]["reason"], "max_deliveries");
    assert_eq!(dead[0]["dead_letter"]["delivery_count"], 3);
    assert_eq!(read(&out.path().join("attempts")), "1\n2\n3\n");
    let stats = api.stats("flaky").await;
    assert_eq!(
        (
            stats["dead_lettered_total"].as_u64(),
            stats["acked_total"].as_u64()
        ),
        (Some(1), Some(0))
    );
    assert_eq!(worker.stop().await, Some(0), "{}", worker.log());
    assert!(
        read(&worker.log).contains("exit=3 outcome=nacked"),
        "{}",
        worker.log()
    );
}

#[tokio::test]
async fn worker_kills_and_nacks_a_command_that_runs_past_its_timeout() {
    let (b, api, out) = start().await;
    let create = [
        "queue",
        "create",
        "slow",
        "--max-deliveries",
        "1",
        "--dead-letter-queue",
        "slow-dlq",
    ];
    weir(&b, &create, b"").await.ok();
    weir(&b, &["send", "slow", "takes forever"], b"").await.ok();
    // A grandchild: killing only `sh` would leave the sleep running.
    let script = r#"sleep 600 & echo $! > "$OUT/sleep.pid"; wait"#;
    let mut worker = Worker::start(
        &b,
        out.path(),
        &[
            "--queue",
            "slow",
            "--timeout",
            "1",
            "--",
            "sh",
            "-c",
            script,
        ],
    );

    // max_deliveries 1: the nack after the timeout dead-letters it.
    wait_stats(
        &api,
        &worker,
        "slow",
        "the timed-out message dead-lettered",
        |s| s["dead_lettered_total"] == 1,
    )
    .await;
    assert!(
        read(&worker.log).contains("timeout=1s outcome=nacked"),
        "{}",
        worker.log()
    );
    let pid = read(&out.path().join("sleep.pid"));
    assert!(
        !running(pid.trim()),
        "the command's child {pid} survived the timeout"
    );
    assert_eq!(worker.stop().await, Some(0), "{}", worker.log());
}

#[tokio::test]
async fn sigterm_lets_the_running_message_finish_and_be_acked_then_exits_zero() {
    let (b, api, out) = start().await;
    weir(&b, &["queue", "create", "drain"], b"").await.ok();
    weir(&b, &["send", "drain"], b"first\nsecond\n").await.ok();
    // Runs until the test creates $OUT/go.
    let script = r#"touch "$OUT/started"; while [ ! -e "$OUT/go" ]; do sleep 0.05; done"#;
    let mut worker = Worker::start(
        &b,
        out.path(),
        &["--queue", "drain", "--", "sh", "-c", script],
    );

    let started = out.path().join("started");
    eventually(
        "the command to start",
        || worker.log(),
        || async { started.exists().then_some(()) },
    )
    .await;
    worker.terminate();
    std::fs::write(out.path().join("go"), "").expect("go");
    assert_eq!(worker.exit_code().await, Some(0), "{}", worker.log());

    // The running message was acked; the other was never taken.
    let stats = api.stats("drain").await;
    assert_eq!(stats["acked_total"], 1, "{stats}\n{}", worker.log());
    assert_eq!(
        (stats["ready"].as_u64(), stats["leased"].as_u64()),
        (Some(1), Some(0)),
        "{stats}"
    );
}

#[tokio::test]
async fn worker_for_an_unknown_queue_exits_non_zero_with_the_reason() {
    let (b, _api, out) = start().await;
    let mut worker = Worker::start(&b, out.path(), &["--queue", "nowhere", "--", "true"]);
    assert_eq!(worker.exit_code().await, Some(1));
    assert!(
        read(&worker.log).contains("queue_not_found"),
        "{}",
        worker.log()
    );
}

#[tokio::test]
async fn sqlite_example_stores_each_message_once_and_dead_letters_the_poison_pill() {
    let python = std::process::Command::new("python3")
        .arg("--version")
        .output();
    if !python.is_ok_and(|o| o.status.success()) {
        eprintln!("skipped: no python3");
        return;
    }
    let (b, api, out) = start().await;
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/sqlite-worker/save_message.py");
    let db = out.path().join("messages.db");
    let create = [
        "queue",
        "create",
        "messages",
        "--max-deliveries",
        "2",
        "--dead-letter-queue",
        "messages-dlq",
    ];
    weir(&b, &create, b"").await.ok();
    weir(
        &b,
        &[
            "send",
            "messages",
            r#"{"content": "Hello"}"#,
            "--id",
            "hello",
        ],
        b"",
    )
    .await
    .ok();
    weir(
        &b,
        &["send", "messages", "plain text", "--id", "plain"],
        b"",
    )
    .await
    .ok();
    weir(
        &b,
        &[
            "send",
            "messages",
            r#"{"content": "a poison pill"}"#,
            "--id",
            "pill",
        ],
        b"",
    )
    .await
    .ok();

    let mut worker = tokio::process::Command::new(WEIR)
        .args([
            "worker",
            "--server",
            &b.http_url(),
            "--queue",
            "messages",
            "--concurrency",
            "2",
            "--",
        ])
        .arg("python3")
        .arg(&script)
        .env("MESSAGES_DB", &db)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(out.path().join("worker.log")).expect("log"))
        .kill_on_drop(true)
        .spawn()
        .expect("worker starts");
    let log = || read(&out.path().join("worker.log"));
    eventually("two rows saved and the pill dead-lettered", log, || async {
        let s = api.stats("messages").await;
        (s["acked_total"] == 2 && s["dead_lettered_total"] == 1).then_some(())
    })
    .await;
    let _ = worker.start_kill();

    let rows = std::process::Command::new("python3")
        .arg("-c")
        .arg("import sqlite3, sys; [print('|'.join(map(str, r))) for r in sqlite3.connect(sys.argv[1]).execute('SELECT id, content, delivery_count FROM messages ORDER BY id')]")
        .arg(&db)
        .output()
        .expect("python3 reads the database");
    assert_eq!(
        String::from_utf8_lossy(&rows.stdout),
        "hello|Hello|1\nplain|plain text|1\n",
        "{}",
        log()
    );
    let dead = messages(
        &weir(&b, &["dlq", "peek", "messages", "--json"], b"")
            .await
            .ok(),
    );
    assert_eq!(dead[0]["id"], "pill");
}
