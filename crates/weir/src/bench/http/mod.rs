//! `weir bench http` drives the REST API the way applications do: producers send
//! batches, consumers receive batches and ack them. It reports throughput and
//! latency percentiles (hdrhistogram, microsecond resolution) of send requests, of
//! receive→ack round trips, and end to end (send request to receipt, read from a
//! timestamp at the start of each body).
//!
//! This file runs one measurement (or `--compare`'s rounds) and verifies it;
//! `args` holds the arguments, `bodies` what is sent, `load` the producer and
//! consumer tasks, and `report` what is printed.

mod args;
mod bodies;
mod load;
mod report;

pub use args::HttpArgs;

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use self::bodies::NUMBERED_LEN;
use self::load::{Latencies, Limit, Shared, drive};
use self::report::{Cpu, Report};
use super::measure::{exit_code, finish_comparison, progress_bar, seconds};
use super::tally::Tally;

/// Messages sent when neither `--count` nor `--duration` is given.
const DEFAULT_COUNT: u64 = 100_000;

/// Sequence numbers a run without a count can tell apart (one bit each).
const DURATION_CAPACITY: u64 = 64 << 20;

/// The metrics `--compare` sets side by side (JSON pointers into a report).
const COMPARED: [(&str, &str); 6] = [
    ("send msg/s", "/send/msgs_per_sec"),
    ("receive+ack msg/s", "/receive_ack/msgs_per_sec"),
    ("send p99 ms", "/send/latency_ms/p99"),
    ("receive+ack p99 ms", "/receive_ack/latency_ms/p99"),
    ("broker CPU µs/msg", "/broker_cpu_us_per_message"),
    ("client CPU µs/msg", "/client_cpu_us_per_message"),
];

/// Runs `weir bench http`.
pub(crate) async fn run(args: HttpArgs) -> anyhow::Result<ExitCode> {
    let Some(other) = args.compare.url.clone() else {
        let (json, human) = measure(&args, &args.server.server, args.pid).await?;
        if args.json {
            println!("{json}");
        } else {
            print!("{human}");
        }
        return Ok(exit_code(json["verified"] != json!(false)));
    };
    let mut rounds = Vec::new();
    for round in 1..=args.compare.rounds {
        eprintln!(
            "weir bench http: round {round} of {}: A",
            args.compare.rounds
        );
        let (a, _) = measure(&args, &args.server.server, args.pid).await?;
        eprintln!(
            "weir bench http: round {round} of {}: B",
            args.compare.rounds
        );
        let (b, _) = measure(&args, &other, args.compare.pid).await?;
        rounds.push((a, b));
    }
    Ok(finish_comparison(
        args.json,
        &args.server.server,
        &other,
        &rounds,
        &COMPARED,
    ))
}

/// One run against the broker at `server`: its report as JSON and as text.
async fn measure(
    args: &HttpArgs,
    server: &str,
    pid: Option<u32>,
) -> anyhow::Result<(Value, String)> {
    let api = args.server.api_at(server)?;
    let queue = args
        .queue
        .clone()
        .unwrap_or_else(|| format!("bench-{}", std::process::id()));
    let declared = api
        .declare(&queue, &json!({}))
        .await
        .with_context(|| format!("creating queue {queue}"))?;
    let created = declared.status == reqwest::StatusCode::CREATED;
    let held = declared
        .body
        .pointer("/stats/ready")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    if held > 0 {
        eprintln!(
            "weir bench: queue {queue} already holds {held} ready messages; consumers will \
             receive and count them too"
        );
    }

    let start = Instant::now();
    let limit = match args.duration {
        Some(secs) => Limit::Until(start + Duration::from_secs(secs)),
        None => Limit::Count(args.count.unwrap_or(DEFAULT_COUNT)),
    };
    let shared = Arc::new(Shared {
        api: api.clone(),
        queue: queue.clone(),
        size: args.size,
        batch: args.batch,
        limit,
        start,
        unclaimed: AtomicU64::new(match limit {
            Limit::Count(n) => n,
            Limit::Until(_) => 0,
        }),
        sent: AtomicU64::new(0),
        acked: AtomicU64::new(0),
        next_seq: AtomicU64::new(0),
        tally: Tally::new(match limit {
            Limit::Count(n) => n,
            Limit::Until(_) => DURATION_CAPACITY,
        }),
        producing: AtomicU64::new(u64::from(args.producers)),
        last_send_us: AtomicU64::new(0),
        last_ack_us: AtomicU64::new(0),
        stop: CancellationToken::new(),
        interrupted: AtomicBool::new(false),
    });

    let progress = progress_bar(
        args.json,
        match limit {
            Limit::Count(n) => Some(n),
            Limit::Until(_) => None,
        },
    );
    let start = Cpu::start(pid)?;
    let outcome = drive(&shared, args, &progress).await;
    progress.finish_and_clear();
    let cpu = Cpu::since(pid, start)?;

    if created && !args.keep {
        if let Err(e) = api.delete(&queue).await {
            eprintln!("weir bench: could not delete queue {queue}: {e}");
        }
    } else if !created && !args.keep {
        eprintln!("weir bench: queue {queue} existed before the run, so it is kept");
    }
    let Latencies {
        send: send_latency,
        round_trip: ack_latency,
        end_to_end,
    } = outcome?;

    let report = Report {
        args,
        queue: &queue,
        verified: verification(args, &shared),
        received: shared.tally.received(),
        duplicates: shared.tally.duplicates(),
        sent: shared.sent.load(Ordering::Relaxed),
        acked: shared.acked.load(Ordering::Relaxed),
        send_seconds: seconds(shared.last_send_us.load(Ordering::Relaxed)),
        receive_seconds: seconds(shared.last_ack_us.load(Ordering::Relaxed)),
        send_latency,
        ack_latency,
        end_to_end,
        interrupted: shared.interrupted.load(Ordering::Relaxed),
        cpu,
    };
    Ok((report.json(), report.human()))
}

/// Whether each message sent was received and acked exactly once; `None` when the
/// run cannot tell (no consumers, or bodies too short to carry a sequence number).
fn verification(args: &HttpArgs, shared: &Shared) -> Option<bool> {
    if args.consumers == 0 || args.size < NUMBERED_LEN {
        return None;
    }
    Some(
        shared
            .tally
            .holds_exactly(shared.sent.load(Ordering::Relaxed)),
    )
}
