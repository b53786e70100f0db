//! `weir bench http` drives the REST API the way applications do: producers send
//! batches, consumers receive batches and ack them. It reports throughput and
//! latency percentiles (hdrhistogram, microsecond resolution) of send requests, of
//! receive→ack round trips, and end to end (send request to receipt, read from a
//! timestamp at the start of each body).

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::measure::{
    CompareArgs, add, compare, exit_code, histogram, micros, percentiles, print_comparison,
    progress_bar, round, seconds,
};
use super::tally::Tally;
use crate::client::ServerArgs;
use crate::client::api::{Api, Messages, Settle};
use crate::client::table::{Align, table};

/// Messages sent when neither `--count` nor `--duration` is given.
const DEFAULT_COUNT: u64 = 100_000;

/// Consumers' long poll: short, so they notice the end of the run quickly.
const RECEIVE_WAIT_MS: u64 = 1_000;

/// In count mode, consumers give up when nothing arrives for this long after the
/// producers finished (messages lost, or taken by someone else).
const DRAIN_IDLE: Duration = Duration::from_secs(10);

/// Width of the sequence number that starts each body, then of the send time after
/// it (microseconds since the run started): zero-padded decimal, so the body stays
/// ASCII and travels as a JSON string. Bodies shorter than both carry neither.
const SEQ_LEN: usize = 20;
const STAMP_LEN: usize = 16;
const NUMBERED_LEN: usize = SEQ_LEN + STAMP_LEN;

/// Sequence numbers a run without a count can tell apart (one bit each).
const DURATION_CAPACITY: u64 = 64 << 20;

/// Arguments of `weir bench http`.
#[derive(clap::Args, Debug)]
pub struct HttpArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// The queue to use; created if missing (default `bench-<pid>`).
    #[arg(long)]
    queue: Option<String>,
    /// Concurrent senders.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1000))]
    producers: u32,
    /// Concurrent receivers (0: only send).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(0..=1000))]
    consumers: u32,
    /// Body size in bytes.
    #[arg(long, default_value_t = 1024, value_name = "BYTES")]
    size: usize,
    /// Messages per send request, and most messages per receive.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1000))]
    batch: u32,
    /// Send this many messages, and receive them all [default: 100000].
    #[arg(long, conflicts_with = "duration")]
    count: Option<u64>,
    /// Send and receive for this many seconds instead of a count.
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    duration: Option<u64>,
    /// Send this many messages per second in all, in batches spread evenly over
    /// time and producers (0: as fast as the broker takes them).
    #[arg(long, default_value_t = 0, value_name = "MSGS")]
    rate: u64,
    /// Keep the queue afterwards (by default a queue this run created is deleted).
    #[arg(long)]
    keep: bool,
    /// The broker's process id: report its CPU time per message and peak memory.
    #[arg(long)]
    pid: Option<u32>,
    /// Print one JSON object instead of a progress bar and a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    compare: CompareArgs,
}

/// The metrics `--compare` sets side by side (JSON pointers into a report).
const COMPARED: [(&str, &str); 6] = [
    ("send msg/s", "/send/msgs_per_sec"),
    ("receive+ack msg/s", "/receive_ack/msgs_per_sec"),
    ("send p99 ms", "/send/latency_ms/p99"),
    ("receive+ack p99 ms", "/receive_ack/latency_ms/p99"),
    ("broker CPU µs/msg", "/broker_cpu_us_per_message"),
    ("client CPU µs/msg", "/client_cpu_us_per_message"),
];

/// When the run ends.
#[derive(Clone, Copy, Debug)]
enum Limit {
    /// After this many messages are sent and (with consumers) acked.
    Count(u64),
    /// When this much time has passed, for producers and consumers alike.
    Until(Instant),
}

/// State the producer and consumer tasks share.
struct Shared {
    api: Api,
    queue: String,
    size: usize,
    batch: u32,
    limit: Limit,
    /// When the run started; body stamps count from here.
    start: Instant,
    /// Count mode: messages no producer has claimed yet.
    unclaimed: AtomicU64,
    sent: AtomicU64,
    acked: AtomicU64,
    /// The next sequence number to send.
    next_seq: AtomicU64,
    /// What the consumers received, for the run's verification.
    tally: Tally,
    /// Producers still running.
    producing: AtomicU64,
    /// Microseconds after `start` of the last send and of the last ack.
    last_send_us: AtomicU64,
    last_ack_us: AtomicU64,
    /// Cancelled by Ctrl-C or by the first task that fails.
    stop: CancellationToken,
    /// Set by Ctrl-C: the report covers a partial run.
    interrupted: AtomicBool,
}

impl Shared {
    fn now_us(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX)
    }
}

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
    let comparison = compare(&args.server.server, &other, &rounds, &COMPARED);
    if args.json {
        println!("{comparison}");
    } else {
        print_comparison(&comparison, &COMPARED);
    }
    let verified = rounds
        .iter()
        .all(|(a, b)| a["verified"] != json!(false) && b["verified"] != json!(false));
    Ok(exit_code(verified))
}

/// One run against the broker at `server`: its report as JSON and as text.
async fn measure(
    args: &HttpArgs,
    server: &str,
    pid: Option<u32>,
) -> anyhow::Result<(Value, String)> {
    let api = Api::new(server)?;
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

/// Latencies of a run, merged over its tasks.
struct Latencies {
    send: Histogram<u64>,
    round_trip: Histogram<u64>,
    end_to_end: Histogram<u64>,
}

/// Runs the producers and consumers to the end (or the first failure, or Ctrl-C)
/// while refreshing the progress bar.
async fn drive(
    shared: &Arc<Shared>,
    args: &HttpArgs,
    progress: &indicatif::ProgressBar,
) -> anyhow::Result<Latencies> {
    // A failing task stops the others at once rather than when it is joined.
    let mut producers = JoinSet::new();
    // At a fixed rate each producer sends one batch per `every`.
    let every = (args.rate > 0).then(|| {
        Duration::from_nanos(
            u64::from(args.batch) * u64::from(args.producers) * 1_000_000_000 / args.rate,
        )
    });
    for index in 0..args.producers {
        let task = Arc::clone(shared);
        let start = every.map_or(Duration::ZERO, |e| e * index / args.producers);
        producers.spawn(async move {
            let result = produce(Arc::clone(&task), index, start, every).await;
            if result.is_err() {
                task.stop.cancel();
            }
            result
        });
    }
    let mut consumers = JoinSet::new();
    for _ in 0..args.consumers {
        let task = Arc::clone(shared);
        consumers.spawn(async move {
            let result = consume(Arc::clone(&task)).await;
            if result.is_err() {
                task.stop.cancel();
            }
            result
        });
    }
    let ticker = tokio::spawn(tick(
        Arc::clone(shared),
        progress.clone(),
        args.consumers > 0,
    ));
    let watcher = {
        let shared = Arc::clone(shared);
        tokio::spawn(async move {
            tokio::select! {
                r = tokio::signal::ctrl_c() => {
                    shared.interrupted.store(r.is_ok(), Ordering::Relaxed);
                    shared.stop.cancel();
                }
                () = shared.stop.cancelled() => {}
            }
        })
    };

    let mut failure: Option<anyhow::Error> = None;
    let mut latencies = Latencies {
        send: histogram(),
        round_trip: histogram(),
        end_to_end: histogram(),
    };
    while let Some(joined) = producers.join_next().await {
        match joined.context("a producer task panicked").and_then(|r| r) {
            Ok(h) => add(&mut latencies.send, &h),
            Err(e) => {
                shared.stop.cancel();
                failure.get_or_insert(e);
            }
        }
    }
    while let Some(joined) = consumers.join_next().await {
        match joined.context("a consumer task panicked").and_then(|r| r) {
            Ok((round_trip, e2e)) => {
                add(&mut latencies.round_trip, &round_trip);
                add(&mut latencies.end_to_end, &e2e);
            }
            Err(e) => {
                shared.stop.cancel();
                failure.get_or_insert(e);
            }
        }
    }
    // Ends the ticker and the Ctrl-C watcher too.
    shared.stop.cancel();
    let _ = ticker.await;
    let _ = watcher.await;
    match failure {
        Some(e) => Err(e),
        None => Ok(latencies),
    }
}

/// One producer: claims batches and sends them until the count or time is used up.
/// Sends batches until the count or the deadline; at a fixed rate, one per `every`,
/// the first after `start` (producers are staggered so batches go out evenly).
async fn produce(
    shared: Arc<Shared>,
    index: u32,
    start: Duration,
    every: Option<Duration>,
) -> anyhow::Result<Histogram<u64>> {
    let mut latency = histogram();
    let mut next_batch = Instant::now() + start;
    let filler = filler(
        shared.size,
        u64::from(index) ^ u64::from(std::process::id()),
    );
    loop {
        if shared.stop.is_cancelled() {
            break;
        }
        let n = match shared.limit {
            Limit::Count(_) => claim(&shared.unclaimed, u64::from(shared.batch)),
            Limit::Until(end) if Instant::now() < end => u64::from(shared.batch),
            Limit::Until(_) => 0,
        };
        let first = shared.next_seq.fetch_add(n, Ordering::Relaxed);
        if n == 0 || first + n > shared.tally.capacity() {
            break;
        }
        if let Some(every) = every {
            tokio::time::sleep_until(next_batch.into()).await;
            next_batch += every;
        }
        let body = render_batch(&filler, first..first + n, shared.now_us());
        let started = Instant::now();
        let reply = tokio::select! {
            () = shared.stop.cancelled() => break,
            reply = shared.api.send_rendered(&shared.queue, body) => reply,
        };
        reply.with_context(|| format!("sending to {}", shared.queue))?;
        latency.saturating_record(micros(started.elapsed()));
        shared.sent.fetch_add(n, Ordering::Relaxed);
        shared
            .last_send_us
            .fetch_max(shared.now_us(), Ordering::Relaxed);
    }
    shared.producing.fetch_sub(1, Ordering::Relaxed);
    Ok(latency)
}

/// One consumer: receives batches and acks them until everything sent is acked (count
/// mode) or time is up. Returns the receive→ack round trips and end-to-end latencies.
async fn consume(shared: Arc<Shared>) -> anyhow::Result<(Histogram<u64>, Histogram<u64>)> {
    let mut round_trip = histogram();
    let mut end_to_end = histogram();
    let mut idle_since: Option<Instant> = None;
    loop {
        // Producers stop at the count or the deadline; consumers then drain what
        // was sent, so every run can be verified.
        let producers_done = shared.producing.load(Ordering::Relaxed) == 0;
        let done = producers_done
            && (shared.acked.load(Ordering::Relaxed) >= shared.sent.load(Ordering::Relaxed)
                || idle_since.is_some_and(|t| t.elapsed() > DRAIN_IDLE));
        if done || shared.stop.is_cancelled() {
            break;
        }
        let started = Instant::now();
        let reply = tokio::select! {
            () = shared.stop.cancelled() => break,
            reply = shared.api.receive_messages(&shared.queue, shared.batch, RECEIVE_WAIT_MS, None) => reply,
        };
        let received: Messages =
            reply.with_context(|| format!("receiving from {}", shared.queue))?;
        if received.messages.is_empty() {
            if shared.producing.load(Ordering::Relaxed) == 0 {
                idle_since.get_or_insert_with(Instant::now);
            }
            continue;
        }
        idle_since = None;
        let now_us = shared.now_us();
        for message in &received.messages {
            match message.body.as_deref().and_then(numbers) {
                Some((seq, sent_us)) => {
                    shared.tally.see(seq);
                    end_to_end.saturating_record(now_us.saturating_sub(sent_us).max(1));
                }
                None => shared.tally.see_unnumbered(),
            }
        }
        let receipts: Vec<String> = received
            .messages
            .iter()
            .filter_map(|m| m.receipt.clone())
            .collect();
        shared
            .api
            .settle(&shared.queue, Settle::Ack, &receipts)
            .await
            .with_context(|| format!("acking on {}", shared.queue))?;
        round_trip.saturating_record(micros(started.elapsed()));
        shared
            .acked
            .fetch_add(receipts.len() as u64, Ordering::Relaxed);
        shared
            .last_ack_us
            .fetch_max(shared.now_us(), Ordering::Relaxed);
    }
    Ok((round_trip, end_to_end))
}

/// Takes up to `want` from `pool`; 0 when it is empty.
fn claim(pool: &AtomicU64, want: u64) -> u64 {
    let mut taken = 0;
    let _ = pool.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
        taken = left.min(want);
        Some(left - taken)
    });
    taken
}

/// `size` bytes of letters and digits from a small xorshift generator: cheap, and
/// not a run of one byte that compression or dedup at some layer would flatter.
fn filler(size: usize, seed: u64) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut state = seed | 1;
    (0..size)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            char::from(ALPHABET[(state % ALPHABET.len() as u64) as usize])
        })
        .collect()
}

/// `{"messages":[{"body":"..."},...]}` for the sequence numbers `seqs`, written
/// directly: bodies are letters and digits, so nothing needs escaping, and no
/// `serde_json::Value` is built per message.
fn render_batch(filler: &str, seqs: std::ops::Range<u64>, now_us: u64) -> String {
    let per_message = filler.len() + 12;
    let count = usize::try_from(seqs.end - seqs.start).unwrap_or(0);
    let mut out = String::with_capacity(16 + per_message * count);
    out.push_str(r#"{"messages":["#);
    for seq in seqs.clone() {
        if seq != seqs.start {
            out.push(',');
        }
        out.push_str(r#"{"body":""#);
        push_numbered(&mut out, filler, seq, now_us);
        out.push_str(r#""}"#);
    }
    out.push_str("]}");
    out
}

/// The body: the sequence number in the first `SEQ_LEN` bytes, the send time in the
/// next `STAMP_LEN`, then filler, `size` bytes in all.
#[cfg(test)]
fn numbered(filler: &str, seq: u64, now_us: u64) -> String {
    let mut body = String::new();
    push_numbered(&mut body, filler, seq, now_us);
    body
}

fn push_numbered(out: &mut String, filler: &str, seq: u64, now_us: u64) {
    use std::fmt::Write as _;
    if filler.len() < NUMBERED_LEN {
        out.push_str(filler);
        return;
    }
    let stamp = now_us % 10u64.pow(STAMP_LEN as u32);
    let _ = write!(out, "{seq:0SEQ_LEN$}{stamp:0STAMP_LEN$}");
    out.push_str(&filler[NUMBERED_LEN..]);
}

/// The sequence number and send time of a numbered body.
fn numbers(body: &str) -> Option<(u64, u64)> {
    let prefix = body.get(..NUMBERED_LEN)?;
    if !prefix.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((
        prefix[..SEQ_LEN].parse().ok()?,
        prefix[SEQ_LEN..].parse().ok()?,
    ))
}

/// Refreshes the progress bar until the run stops.
async fn tick(shared: Arc<Shared>, bar: indicatif::ProgressBar, consuming: bool) {
    let mut every = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            () = shared.stop.cancelled() => return,
            _ = every.tick() => {}
        }
        let sent = shared.sent.load(Ordering::Relaxed);
        let acked = shared.acked.load(Ordering::Relaxed);
        // The bar follows the slower side: acks when consuming, else sends.
        bar.set_position(if consuming { acked } else { sent });
        bar.set_message(format!("sent {sent}, acked {acked}"));
        bar.tick();
    }
}

/// CPU seconds of the run: the broker's (with its peak RSS, given `--pid`) and the
/// load generator's own.
struct Cpu {
    broker: Option<(f64, u64)>,
    client: f64,
}

impl Cpu {
    /// The CPU seconds used so far by the broker (given its pid) and by this process.
    fn start(pid: Option<u32>) -> anyhow::Result<(Option<f64>, f64)> {
        use super::measure::process_cpu_seconds;
        Ok((
            pid.map(process_cpu_seconds).transpose()?,
            process_cpu_seconds(std::process::id())?,
        ))
    }

    /// What was used since `start`.
    fn since(pid: Option<u32>, (broker, client): (Option<f64>, f64)) -> anyhow::Result<Cpu> {
        use super::measure::{process_cpu_seconds, status_bytes};
        Ok(Cpu {
            broker: match (pid, broker) {
                (Some(pid), Some(before)) => Some((
                    process_cpu_seconds(pid)? - before,
                    status_bytes(pid, "VmHWM:")?,
                )),
                _ => None,
            },
            client: process_cpu_seconds(std::process::id())? - client,
        })
    }
}

/// The results.
struct Report<'a> {
    args: &'a HttpArgs,
    queue: &'a str,
    /// See [`verification`].
    verified: Option<bool>,
    /// Messages the consumers received, and how many of them twice (or not of
    /// this run).
    received: u64,
    duplicates: u64,
    sent: u64,
    acked: u64,
    /// From the start to the last send's answer.
    send_seconds: f64,
    /// From the start to the last ack's answer.
    receive_seconds: f64,
    send_latency: Histogram<u64>,
    ack_latency: Histogram<u64>,
    end_to_end: Histogram<u64>,
    interrupted: bool,
    cpu: Cpu,
}

impl Report<'_> {
    fn verdict(&self) -> String {
        match self.verified {
            Some(true) => "yes".to_owned(),
            Some(false) => format!(
                "NO: {} sent, {} received, {} twice or not of this run",
                self.sent, self.received, self.duplicates
            ),
            None if self.args.consumers == 0 => "not checked (no consumers)".to_owned(),
            None => {
                format!("not checked (bodies under {NUMBERED_LEN} bytes carry no sequence number)")
            }
        }
    }

    /// CPU µs per message handled (each sent message, and each acked one, counts
    /// once).
    #[allow(clippy::cast_precision_loss)] // counts of a benchmark fit an f64
    fn per_message_us(&self, cpu_s: f64) -> f64 {
        let messages = self.sent + self.acked;
        if messages == 0 {
            0.0
        } else {
            round(cpu_s * 1e6 / messages as f64, 2)
        }
    }

    /// Messages and megabytes (10^6 bytes) per second.
    #[allow(clippy::cast_precision_loss)] // rates are shown with a few digits
    fn rates(&self, messages: u64, secs: f64) -> (f64, f64) {
        if secs <= 0.0 {
            return (0.0, 0.0);
        }
        let per_sec = messages as f64 / secs;
        (per_sec, per_sec * self.args.size as f64 / 1e6)
    }

    fn json(&self) -> Value {
        let phase = |messages: u64, secs: f64, latency: &Histogram<u64>| {
            let (per_sec, mb) = self.rates(messages, secs);
            json!({
                "messages": messages,
                "seconds": round(secs, 3),
                "msgs_per_sec": round(per_sec, 1),
                "mb_per_sec": round(mb, 3),
                "latency_ms": percentiles(latency),
            })
        };
        json!({
            "queue": self.queue,
            "producers": self.args.producers,
            "consumers": self.args.consumers,
            "size": self.args.size,
            "batch": self.args.batch,
            "interrupted": self.interrupted,
            "verified": self.verified,
            "received": self.received,
            "duplicates": self.duplicates,
            "send": phase(self.sent, self.send_seconds, &self.send_latency),
            "receive_ack": phase(self.acked, self.receive_seconds, &self.ack_latency),
            "end_to_end_latency_ms": percentiles(&self.end_to_end),
            "broker_cpu_seconds": self.cpu.broker.map(|(s, _)| round(s, 2)),
            "broker_cpu_us_per_message": self.cpu.broker.map(|(s, _)| self.per_message_us(s)),
            "broker_peak_rss_bytes": self.cpu.broker.map(|(_, rss)| rss),
            "client_cpu_us_per_message": self.per_message_us(self.cpu.client),
        })
    }

    #[allow(clippy::cast_precision_loss)] // megabytes are shown with one decimal
    fn human(&self) -> String {
        use std::fmt::Write as _;
        let ms = |us: u64| format!("{:.2}", seconds(us) * 1e3);
        let latency_cells = |h: &Histogram<u64>| -> Vec<String> {
            if h.is_empty() {
                return vec!["-".into(); 5];
            }
            vec![
                ms(h.value_at_quantile(0.50)),
                ms(h.value_at_quantile(0.90)),
                ms(h.value_at_quantile(0.99)),
                ms(h.value_at_quantile(0.999)),
                ms(h.max()),
            ]
        };
        let row = |name: &str, messages: u64, secs: f64, h: &Histogram<u64>| {
            let (per_sec, mb) = self.rates(messages, secs);
            let mut cells = vec![
                name.to_owned(),
                messages.to_string(),
                format!("{secs:.2}"),
                format!("{per_sec:.0}"),
                format!("{mb:.2}"),
            ];
            cells.extend(latency_cells(h));
            cells
        };
        let mut rows = vec![row(
            "send",
            self.sent,
            self.send_seconds,
            &self.send_latency,
        )];
        if self.args.consumers > 0 {
            rows.push(row(
                "receive+ack",
                self.acked,
                self.receive_seconds,
                &self.ack_latency,
            ));
            let mut e2e = vec![
                "end-to-end".to_owned(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
            ];
            e2e.extend(latency_cells(&self.end_to_end));
            rows.push(e2e);
        }
        let columns = [
            ("", Align::Left),
            ("MESSAGES", Align::Right),
            ("SECONDS", Align::Right),
            ("MSG/S", Align::Right),
            ("MB/S", Align::Right),
            ("P50 MS", Align::Right),
            ("P90 MS", Align::Right),
            ("P99 MS", Align::Right),
            ("P99.9 MS", Align::Right),
            ("MAX MS", Align::Right),
        ];
        let a = self.args;
        let mut out = format!(
            "weir bench http: queue {}, {} producers, {} consumers, {} B bodies, batches of {}{}\n",
            self.queue,
            a.producers,
            a.consumers,
            a.size,
            a.batch,
            if self.interrupted {
                " (interrupted)"
            } else {
                ""
            },
        );
        out.push_str(&table(&columns, &rows));
        let _ = writeln!(out, "verified (each once, in full): {}", self.verdict());
        if let Some((cpu_s, rss)) = self.cpu.broker {
            let _ = writeln!(
                out,
                "broker: {cpu_s:.2} CPU-s ({:.2} µs per message sent or acked), peak RSS {:.1} MB",
                self.per_message_us(cpu_s),
                rss as f64 / 1e6
            );
        }
        let _ = writeln!(
            out,
            "load generator: {:.2} CPU-µs per message sent or acked",
            self.per_message_us(self.cpu.client)
        );
        out.push_str(
            "latency: send = one batch request; receive+ack = receive request to ack answer; \
             end-to-end = send request to receipt\n",
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_have_the_size_asked_and_carry_their_number_and_send_time() {
        let filler = filler(100, 7);
        assert_eq!(filler.len(), 100);
        assert!(filler.bytes().all(|b| b.is_ascii_alphanumeric()));
        let body = numbered(&filler, 42, 123_456);
        assert_eq!(body.len(), 100);
        assert_eq!(numbers(&body), Some((42, 123_456)));
        let body = numbered(&filler, u64::MAX, u64::MAX);
        assert_eq!(body.len(), 100);
        assert_eq!(numbers(&body).map(|(seq, _)| seq), Some(u64::MAX));
        assert_eq!(numbered("short", 1, 5), "short");
        assert_eq!(numbers("short"), None);
        assert_eq!(numbers(&filler), None, "filler is not a number");
    }

    #[test]
    fn a_rendered_batch_is_the_json_of_its_numbered_bodies() {
        let filler = filler(64, 3);
        let rendered = render_batch(&filler, 7..10, 99);
        let parsed: Value = serde_json::from_str(&rendered).expect("valid JSON");
        let bodies: Vec<&str> = parsed["messages"]
            .as_array()
            .expect("an array")
            .iter()
            .map(|m| m["body"].as_str().expect("a text body"))
            .collect();
        let expected: Vec<String> = (7..10).map(|seq| numbered(&filler, seq, 99)).collect();
        assert_eq!(bodies, expected);
    }

    #[test]
    fn claims_never_exceed_the_pool() {
        let pool = AtomicU64::new(250);
        assert_eq!(claim(&pool, 100), 100);
        assert_eq!(claim(&pool, 100), 100);
        assert_eq!(claim(&pool, 100), 50);
        assert_eq!(claim(&pool, 100), 0);
    }
}
