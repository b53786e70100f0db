//! `weir worker`: runs a command once per message of a queue. The body goes to the
//! command's stdin and the message's fields to its environment; exit 0 acks, any
//! failure (non-zero exit, a command that cannot start, a timeout) nacks with
//! requeue so the queue's retry backoff, `max_deliveries` and dead-letter queue
//! decide what happens next.
//!
//! Shape: one loop long-polls for as many messages as there are free slots
//! (`--concurrency`), and each message runs in its own task that holds a slot, keeps
//! the lease alive while the command runs, then settles it. A first SIGTERM/SIGINT
//! stops the loop and lets running commands finish; a second kills them (their
//! messages are nacked). Broker outages are waited out with backoff.

use std::process::{ExitCode, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::io::AsyncWriteExt as _;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::client::ServerArgs;
use crate::client::api::{Api, ApiError, Delivery, Messages, QueueInfo, Reply, Settle};

/// How long each receive waits for a first message: long enough that an idle worker
/// costs a request every 20 s, short enough to stay below proxies' idle timeouts.
const LONG_POLL_MS: u64 = 20_000;

/// First and longest pause after a transient error (broker restarting, 503).
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// An ack or nack that fails transiently is retried for at least this long (the
/// broker may be restarting); after that the lease runs out and the message comes
/// back by itself.
const SETTLE_PATIENCE: Duration = Duration::from_secs(30);

/// Arguments of `weir worker`.
#[derive(clap::Args, Debug)]
#[command(after_help = "\
The command gets the body on stdin and these environment variables:
  WEIR_QUEUE, WEIR_MESSAGE_ID, WEIR_DELIVERY_COUNT (1 on the first try), WEIR_PRIORITY,
  WEIR_GROUP (if the message has one), WEIR_RECEIPT, and WEIR_HEADER_<NAME> per header
  (NAME uppercased, characters other than letters and digits replaced by '_').
Exit 0 acks the message. Any other exit, a command that cannot start, or one that runs
past --timeout (it is killed) nacks it for a retry under the queue's backoff; after
max_deliveries the broker dead-letters it.
SIGTERM or SIGINT: stop receiving, let running commands finish, then exit 0. A second
signal kills the running commands (their messages are retried).

Example: weir worker --queue emails --concurrency 4 -- ./send-email.sh")]
pub struct WorkerArgs {
    /// The queue to consume.
    #[arg(long, short = 'q')]
    queue: String,
    /// How many messages are processed at once.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
    concurrency: u32,
    /// Seconds a command may run before it is killed and its message retried.
    #[arg(long, default_value_t = 300, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    timeout: u64,
    /// Lease asked for on receive and renewed every third of it while the command
    /// runs; the queue's visibility timeout when absent.
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..))]
    visibility_timeout_ms: Option<u64>,
    #[command(flatten)]
    server: ServerArgs,
    /// The command to run and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "CMD")]
    command: Vec<String>,
}

/// What every message task needs.
struct Context {
    api: Api,
    queue: String,
    /// Program and arguments; never empty (clap requires it).
    command: Vec<String>,
    timeout: Duration,
    /// Lease length asked for on receive and on each extension.
    lease: Duration,
    /// Cancelled by a second signal: kill running commands now.
    abort: CancellationToken,
}

/// How a command ended.
enum RunResult {
    Exited(ExitStatus),
    SpawnFailed(std::io::Error),
    TimedOut,
    /// Killed by a second signal.
    Aborted,
}

impl RunResult {
    fn succeeded(&self) -> bool {
        matches!(self, RunResult::Exited(status) if status.success())
    }

    /// For the log line.
    fn describe(&self, timeout: Duration) -> String {
        use std::os::unix::process::ExitStatusExt as _;
        match self {
            RunResult::Exited(status) => match (status.code(), status.signal()) {
                (Some(code), _) => format!("exit={code}"),
                (None, Some(signal)) => format!("signal={signal}"),
                (None, None) => format!("status={status}"),
            },
            RunResult::SpawnFailed(e) => format!("spawn-failed=\"{e}\""),
            RunResult::TimedOut => format!("timeout={}s", timeout.as_secs()),
            RunResult::Aborted => "killed-on-shutdown".to_owned(),
        }
    }
}

/// Runs the worker until a signal (exit 0) or an error the broker will not get over
/// by itself, such as a queue that does not exist (an error, exit 1).
pub async fn run(args: WorkerArgs) -> anyhow::Result<ExitCode> {
    let api = args.server.api()?;
    let stop = CancellationToken::new();
    let abort = CancellationToken::new();
    watch_signals(stop.clone(), abort.clone())?;

    let lease_ms = if let Some(ms) = args.visibility_timeout_ms {
        ms
    } else {
        let Some(info) = with_retry(&stop, "reading the queue's settings", || async {
            api.info(&args.queue).await?.parse::<QueueInfo>()
        })
        .await?
        else {
            // Stopped by a signal before the broker answered.
            return Ok(ExitCode::SUCCESS);
        };
        info.visibility_timeout_ms()
            .context("the broker did not report the queue's visibility_timeout_ms")?
    };
    let context = Arc::new(Context {
        api,
        queue: args.queue,
        command: args.command,
        timeout: Duration::from_secs(args.timeout),
        lease: Duration::from_millis(lease_ms),
        abort,
    });
    eprintln!(
        "weir worker: consuming {} (concurrency {}, lease {lease_ms} ms, timeout {} s): {}",
        context.queue,
        args.concurrency,
        args.timeout,
        context.command.join(" "),
    );

    let slots = Arc::new(Semaphore::new(args.concurrency as usize));
    let tasks = TaskTracker::new();
    let result = receive_loop(&context, &slots, &tasks, &stop).await;

    tasks.close();
    if !tasks.is_empty() {
        eprintln!(
            "weir worker: waiting for {} running command(s) to finish",
            tasks.len()
        );
    }
    tasks.wait().await;
    result?;
    eprintln!("weir worker: stopped");
    Ok(ExitCode::SUCCESS)
}

/// Receives while there are free slots, until `stop`; returns an error only for a
/// refusal that retrying cannot fix.
async fn receive_loop(
    context: &Arc<Context>,
    slots: &Arc<Semaphore>,
    tasks: &TaskTracker,
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    let mut backoff = Backoff::default();
    loop {
        // Wait for one free slot, then take every other free one: the receive asks
        // for exactly as many messages as can start now.
        let first = tokio::select! {
            biased;
            () = stop.cancelled() => return Ok(()),
            permit = slots.clone().acquire_owned() => {
                permit.expect("invariant: the semaphore is never closed")
            }
        };
        let mut permits = vec![first];
        while let Ok(permit) = slots.clone().try_acquire_owned() {
            permits.push(permit);
        }
        let max = u32::try_from(permits.len()).unwrap_or(u32::MAX);
        let lease_ms = u64::try_from(context.lease.as_millis()).unwrap_or(u64::MAX);

        // A stop abandons the long poll. Messages the broker leased to it in that
        // instant are not lost: a receiver that hangs up has them made ready again
        // (docs/http-api.md, "Long polling"), or at worst their lease runs out.
        let received = tokio::select! {
            biased;
            () = stop.cancelled() => return Ok(()),
            reply = context.api.receive(&context.queue, max, LONG_POLL_MS, Some(lease_ms)) => {
                reply.and_then(Reply::parse::<Messages>)
            }
        };
        match received {
            Ok(received) => {
                backoff.reset();
                for message in received.messages {
                    // The broker never returns more than `max`; if it did, the extra
                    // message still runs rather than being held without a slot.
                    let permit = permits.pop();
                    let context = Arc::clone(context);
                    tasks.spawn(process(context, message, permit));
                }
            }
            Err(e) if e.is_transient() => {
                let pause = backoff.next();
                eprintln!(
                    "weir worker: receive failed: {e}; retrying in {:.1}s",
                    pause.as_secs_f64()
                );
                drop(permits);
                tokio::select! {
                    () = stop.cancelled() => return Ok(()),
                    () = tokio::time::sleep(pause) => {}
                }
            }
            Err(e) => {
                return Err(e).with_context(|| format!("receiving from {}", context.queue));
            }
        }
    }
}

/// Runs the command for one message, then settles it and logs one line.
async fn process(context: Arc<Context>, message: Delivery, permit: Option<OwnedSemaphorePermit>) {
    let started = Instant::now();
    let Some(receipt) = message.receipt.clone() else {
        eprintln!(
            "weir worker: id={} came without a receipt; skipped",
            message.id
        );
        return;
    };
    let result = run_command(&context, &message, &receipt).await;
    let how = if result.succeeded() {
        Settle::Ack
    } else {
        // No delay of our own: the queue's retry backoff applies.
        Settle::Nack {
            requeue: true,
            delay_ms: None,
        }
    };
    let outcome = match settle(&context, how, &receipt).await {
        Ok(()) if result.succeeded() => "acked".to_owned(),
        Ok(()) => "nacked".to_owned(),
        Err(e) => {
            let verb = if result.succeeded() { "ack" } else { "nack" };
            format!("{verb}-failed reason=\"{e}\"")
        }
    };
    eprintln!(
        "weir worker: id={} delivery={} {} outcome={outcome} duration={:.3}s",
        message.id,
        message.delivery_count,
        result.describe(context.timeout),
        started.elapsed().as_secs_f64(),
    );
    // The slot frees only now, after the settle, so `--concurrency` bounds the
    // messages held, not just the commands running.
    drop(permit);
}

/// Spawns the command with the message on stdin and in its environment, and waits
/// for it while renewing the lease.
async fn run_command(context: &Context, message: &Delivery, receipt: &str) -> RunResult {
    let body = match message.body_bytes() {
        Ok(body) => body,
        Err(e) => {
            return RunResult::SpawnFailed(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("the broker sent a body that is not base64: {e}"),
            ));
        }
    };
    let mut command = tokio::process::Command::new(&context.command[0]);
    command
        .args(&context.command[1..])
        .envs(message_env(&context.queue, message, receipt))
        .stdin(Stdio::piped())
        .kill_on_drop(true)
        // Its own process group: a Ctrl-C in the terminal reaches only the worker,
        // which lets the command finish, and a timeout can kill the command's whole
        // tree (a shell script's children too).
        .process_group(0);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => return RunResult::SpawnFailed(e),
    };
    if let Some(mut stdin) = child.stdin.take() {
        // Written by its own task: a command that does not read stdin must not block
        // us once the pipe buffer is full. A command that exits without reading
        // gives a broken pipe, which is its business.
        tokio::spawn(async move {
            let _ = stdin.write_all(&body).await;
        });
    }

    let deadline = tokio::time::sleep(context.timeout);
    tokio::pin!(deadline);
    let every = (context.lease / 3).max(Duration::from_millis(100));
    let mut renew = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut lease_lost = false;
    loop {
        tokio::select! {
            status = child.wait() => {
                return match status {
                    Ok(status) => RunResult::Exited(status),
                    Err(e) => RunResult::SpawnFailed(e),
                };
            }
            () = &mut deadline => {
                kill_tree(&mut child).await;
                return RunResult::TimedOut;
            }
            () = context.abort.cancelled() => {
                kill_tree(&mut child).await;
                return RunResult::Aborted;
            }
            _ = renew.tick(), if !lease_lost => {
                lease_lost = extend(context, message, receipt).await;
            }
        }
    }
}

/// Renews the lease; returns true when it is gone for good (another consumer may get
/// the message), so renewing stops. A transient failure is retried at the next tick.
async fn extend(context: &Context, message: &Delivery, receipt: &str) -> bool {
    let how = Settle::Extend {
        visibility_timeout_ms: u64::try_from(context.lease.as_millis()).unwrap_or(u64::MAX),
    };
    match context
        .api
        .settle(&context.queue, how, &[receipt.to_owned()])
        .await
    {
        Ok(_) => false,
        Err(e) => {
            let gone = !e.is_transient();
            let what = if gone {
                "lease lost, the message may be delivered again"
            } else {
                "will retry"
            };
            eprintln!(
                "weir worker: id={} extending the lease failed: {e} ({what})",
                message.id
            );
            gone
        }
    }
}

/// Kills the command and everything it started (its process group), then reaps it.
async fn kill_tree(child: &mut tokio::process::Child) {
    if let Some(pid) = child.id() {
        // `unsafe` is forbidden, so no libc::kill: kill(1) signals the group. The
        // child is not reaped yet, so its pid (= its group id) cannot have been
        // reused.
        let _ = tokio::process::Command::new("kill")
            .args(["-KILL", "--", &format!("-{pid}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await;
    }
    // The direct child at least, should kill(1) be missing; then reap it.
    let _ = child.kill().await;
}

/// The environment a command sees.
fn message_env(queue: &str, message: &Delivery, receipt: &str) -> Vec<(String, String)> {
    let mut env = vec![
        ("WEIR_QUEUE".to_owned(), queue.to_owned()),
        ("WEIR_MESSAGE_ID".to_owned(), message.id.clone()),
        (
            "WEIR_DELIVERY_COUNT".to_owned(),
            message.delivery_count.to_string(),
        ),
        ("WEIR_PRIORITY".to_owned(), message.priority.to_string()),
        ("WEIR_RECEIPT".to_owned(), receipt.to_owned()),
    ];
    if let Some(group) = &message.group {
        env.push(("WEIR_GROUP".to_owned(), group.clone()));
    }
    for (name, value) in &message.headers {
        let key: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_uppercase()
                } else {
                    '_'
                }
            })
            .collect();
        env.push((format!("WEIR_HEADER_{key}"), value.clone()));
    }
    // A NUL cannot be in the environment: spawning would fail and the message would
    // retry until dead-lettered for a header the command may not even read.
    env.retain(|(_, value)| !value.contains('\0'));
    env
}

/// Acks or nacks, retrying transient failures for a while.
async fn settle(context: &Context, how: Settle, receipt: &str) -> Result<(), ApiError> {
    let give_up = Instant::now() + SETTLE_PATIENCE.max(context.lease);
    let mut backoff = Backoff::default();
    let receipts = [receipt.to_owned()];
    loop {
        match context.api.settle(&context.queue, how, &receipts).await {
            Ok(_) => return Ok(()),
            Err(e) if e.is_transient() && Instant::now() < give_up => {
                tokio::time::sleep(backoff.next()).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Calls `f` until it succeeds, a non-transient error, or `stop` (then `None`).
async fn with_retry<T, F, Fut>(
    stop: &CancellationToken,
    what: &str,
    mut f: F,
) -> anyhow::Result<Option<T>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ApiError>>,
{
    let mut backoff = Backoff::default();
    loop {
        let result = tokio::select! {
            () = stop.cancelled() => return Ok(None),
            result = f() => result,
        };
        match result {
            Ok(value) => return Ok(Some(value)),
            Err(e) if e.is_transient() => {
                let pause = backoff.next();
                eprintln!(
                    "weir worker: {what} failed: {e}; retrying in {:.1}s",
                    pause.as_secs_f64()
                );
                tokio::select! {
                    () = stop.cancelled() => return Ok(None),
                    () = tokio::time::sleep(pause) => {}
                }
            }
            Err(e) => return Err(e).context(what.to_owned()),
        }
    }
}

/// Installs the handlers: the first SIGTERM/SIGINT cancels `stop`, the second
/// `abort`.
fn watch_signals(stop: CancellationToken, abort: CancellationToken) -> anyhow::Result<()> {
    let mut terminate = signal(SignalKind::terminate()).context("installing a SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("installing a SIGINT handler")?;
    tokio::spawn(async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
        eprintln!(
            "weir worker: stopping: no new messages; running commands may finish (signal again to kill them)"
        );
        stop.cancel();
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
        eprintln!("weir worker: killing running commands; their messages will be retried");
        abort.cancel();
    });
    Ok(())
}

/// Exponential pauses between retries: 100 ms doubling up to 5 s.
#[derive(Default)]
struct Backoff {
    next: Option<Duration>,
}

impl Backoff {
    fn next(&mut self) -> Duration {
        let pause = self.next.unwrap_or(BACKOFF_FIRST);
        self.next = Some((pause * 2).min(BACKOFF_MAX));
        pause
    }

    fn reset(&mut self) {
        self.next = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_become_sanitised_environment_names() {
        let message: Delivery = serde_json::from_value(serde_json::json!({
            "id": "m1", "body": "x", "priority": 3, "group": "g", "delivery_count": 2,
            "headers": {"content-type": "text/plain", "trace.id": "t", "bad": "a\u{0}b"},
        }))
        .unwrap();
        let env = message_env("q", &message, "r");
        let get = |k: &str| {
            env.iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("WEIR_QUEUE"), Some("q"));
        assert_eq!(get("WEIR_MESSAGE_ID"), Some("m1"));
        assert_eq!(get("WEIR_DELIVERY_COUNT"), Some("2"));
        assert_eq!(get("WEIR_PRIORITY"), Some("3"));
        assert_eq!(get("WEIR_GROUP"), Some("g"));
        assert_eq!(get("WEIR_RECEIPT"), Some("r"));
        assert_eq!(get("WEIR_HEADER_CONTENT_TYPE"), Some("text/plain"));
        assert_eq!(get("WEIR_HEADER_TRACE_ID"), Some("t"));
        assert_eq!(get("WEIR_HEADER_BAD"), None);
    }

    #[test]
    fn backoff_doubles_to_a_cap_and_resets() {
        let mut b = Backoff::default();
        assert_eq!(b.next(), Duration::from_millis(100));
        assert_eq!(b.next(), Duration::from_millis(200));
        for _ in 0..10 {
            b.next();
        }
        assert_eq!(b.next(), BACKOFF_MAX);
        b.reset();
        assert_eq!(b.next(), BACKOFF_FIRST);
    }
}
