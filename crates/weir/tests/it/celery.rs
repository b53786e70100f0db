//! The framework check of issue 18: a real Celery worker (prefork pool, its default
//! `celery@HOST` names, AMQP through kombu and py-amqp, results through `rpc://`)
//! against the real binary, including a broker restart on the same port and data
//! directory (`tests/celery/scenario.py` says each step). The script starts weir
//! itself, because the restart must keep the port the worker reconnects to.
//! `./scripts/test` installs Celery into the Python venv it creates and sets
//! `WEIR_PYTHON`.

use std::path::PathBuf;
use std::time::Duration;

#[tokio::test]
async fn a_celery_worker_runs_retries_answers_control_and_survives_a_restart() {
    let python = std::env::var("WEIR_PYTHON").expect(
        "WEIR_PYTHON is not set: run ./scripts/test, which creates a Python venv with celery",
    );
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/celery/scenario.py");
    // The script keeps its own deadline (200 s) and kills the worker and weir when it
    // ends; this one is for a script that hangs regardless (its children die with it).
    let out = tokio::time::timeout(
        Duration::from_secs(240),
        tokio::process::Command::new(python)
            .arg(script)
            .env("WEIR_BIN", weir_testkit::weir_binary())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the Celery scenario did not end within 240 s")
    .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.lines().any(|l| l == "OK"),
        "the Celery scenario failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}
