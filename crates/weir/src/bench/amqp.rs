//! `weir bench amqp`: an AMQP 0-9-1 load generator, so the same workload runs
//! against weir and against any other AMQP broker (`RabbitMQ`'s `PerfTest` plays
//! this part for `RabbitMQ`). It drives the wire with its own lean client
//! ([`crate::amqp_wire`]) so that it, not the broker, is the cheap side.
//!
//! Producers publish to a durable queue through the default exchange (persistent,
//! with publisher confirms, at most `--window` unconfirmed each, written many per
//! system call); consumers consume with a prefetch and ack what they have read with
//! one `basic.ack multiple` per read. Every body starts with its sequence number
//! and send time, so the run is verified (each message received once: count, sum
//! of sequence numbers, duplicates) and end-to-end latency is measured (HDR
//! histogram). With `--pid`, the broker's CPU time and peak RSS come from /proc.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::BytesMut;
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinSet;

use super::measure::{
    CompareArgs, add, exit_code, finish_comparison, histogram, peak_rss_bytes, percentiles,
    process_cpu_seconds, progress_bar, redact,
};
use super::tally::Tally;
use crate::amqp_wire::{self, Client, PublishTemplate};
use crate::client::table::{Align, table};

/// Sequence number and send time at the head of every body.
const HEADER_LEN: usize = 16;
/// Consumers stop when nothing arrives for this long after the producers finished.
const DRAIN_IDLE: Duration = Duration::from_secs(10);

/// Arguments of `weir bench amqp`.
#[derive(clap::Args, Debug)]
#[allow(
    clippy::struct_excessive_bools,
    reason = "independent command-line switches"
)]
pub struct AmqpArgs {
    /// The broker's AMQP URL.
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    url: String,
    /// The durable queue to use (declared, and purged before the run).
    #[arg(long, default_value = "weir-bench-amqp")]
    queue: String,
    /// Spread the load over this many queues (`<queue>-0`, `<queue>-1`, ...):
    /// producer and consumer `i` use queue `i mod N`.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
    queues: u32,
    /// Publishing connections (0: only consume `--count` messages already in the
    /// queue, published by an earlier run with `--consumers 0`: a backlog drain).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(0..=1000))]
    producers: u32,
    /// Consuming connections (0: only publish).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(0..=1000))]
    consumers: u32,
    /// Body size in bytes (at least 16: sequence number and send time).
    #[arg(long, default_value_t = 1024, value_name = "BYTES")]
    size: usize,
    /// Publish this many messages [default: 100000].
    #[arg(long, conflicts_with = "duration")]
    count: Option<u64>,
    /// Publish for this many seconds instead.
    #[arg(long, value_name = "SECS")]
    duration: Option<u64>,
    /// Publisher confirms.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    confirms: bool,
    /// Most unconfirmed messages per producer.
    #[arg(long, default_value_t = 1000)]
    window: usize,
    /// Persistent messages (delivery mode 2).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    persistent: bool,
    /// Consumer prefetch (basic.qos).
    #[arg(long, default_value_t = 1000)]
    prefetch: u16,
    /// Use a stream (`x-queue-type=stream`, deleted and declared anew, read from
    /// its first record) instead of a queue, on both brokers of a `--compare`.
    #[arg(long)]
    stream: bool,
    /// Publish at this many messages per second in all (0: as fast as possible).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// The broker's process id: report its CPU time and peak memory.
    #[arg(long)]
    pid: Option<u32>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// PEM file of the CA certificates that `amqps://` URLs (`--url`, `--compare`)
    /// trust.
    #[arg(long, value_name = "FILE")]
    tls_ca: Option<std::path::PathBuf>,
    #[command(flatten)]
    compare: CompareArgs,
}

/// What the tasks share.
struct Shared {
    start: Instant,
    published: AtomicU64,
    confirmed: AtomicU64,
    nacked: AtomicU64,
    /// What the consumers received, for the run's verification: one tally for a
    /// queue's consumers, which share its messages; one per reader of a stream,
    /// each of which reads every record.
    tallies: Vec<Tally>,
    producing: AtomicU64,
    /// No producers: the consumers take `count` messages already queued.
    draining: bool,
    last_publish_us: AtomicU64,
    last_receive_us: AtomicU64,
}

impl Shared {
    /// The tally of consumer `i`.
    fn tally(&self, i: u32) -> &Tally {
        let last = self.tallies.len() - 1;
        &self.tallies[(i as usize).min(last)]
    }

    /// Messages received, by all consumers.
    fn received(&self) -> u64 {
        self.tallies.iter().map(Tally::received).sum()
    }

    fn now_us(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX)
    }
}

impl AmqpArgs {
    /// The queue of producer or consumer `i`.
    fn queue_name(&self, i: u32) -> String {
        if self.queues == 1 {
            self.queue.clone()
        } else {
            format!("{}-{}", self.queue, i % self.queues)
        }
    }
}

/// The AMQP side of `weir bench stream --amqp`: the stream workload of `weir bench
/// amqp --stream` with the stream command's names for it.
pub(super) struct StreamRun {
    pub(super) url: String,
    pub(super) stream: String,
    pub(super) producers: u32,
    pub(super) readers: u32,
    pub(super) size: usize,
    pub(super) count: u64,
    /// Publish at this many records a second in all (0: as fast as possible).
    pub(super) rate: u64,
    /// Publish for this many seconds instead of `count` records.
    pub(super) duration: Option<u64>,
    pub(super) pid: Option<u32>,
    pub(super) json: bool,
    pub(super) compare: CompareArgs,
}

impl StreamRun {
    /// The arguments of `weir bench amqp --stream` this run stands for.
    fn into_args(self) -> AmqpArgs {
        AmqpArgs {
            url: self.url,
            queue: self.stream,
            queues: 1,
            producers: self.producers,
            consumers: self.readers,
            size: self.size,
            count: self.duration.is_none().then_some(self.count),
            duration: self.duration,
            confirms: true,
            window: 1000,
            persistent: true,
            prefetch: 1000,
            stream: true,
            rate: self.rate,
            pid: self.pid,
            json: self.json,
            tls_ca: None,
            compare: self.compare,
        }
    }
}

/// Runs [`StreamRun`]: durable appends with confirms (a window of 1,000 per
/// producer), readers consuming from the first record, verified.
pub(super) async fn run_stream(run: StreamRun) -> anyhow::Result<ExitCode> {
    Box::pin(self::run(run.into_args())).await
}

/// One round of [`StreamRun`] against its broker: the report (for `weir bench
/// kafka`, which sets weir's AMQP stream path beside its Kafka one). With no
/// producers, the readers take `count` records already in the stream.
pub(super) async fn measure_stream(run: StreamRun) -> anyhow::Result<Value> {
    let args = run.into_args();
    Box::pin(measure(&args, &args.url, args.pid)).await
}

/// Runs `weir bench amqp`.
pub async fn run(args: AmqpArgs) -> anyhow::Result<ExitCode> {
    if let Some(ca) = &args.tls_ca {
        amqp_wire::trust(ca)?;
    }
    anyhow::ensure!(
        args.size >= HEADER_LEN,
        "--size must be at least {HEADER_LEN}"
    );
    anyhow::ensure!(args.window >= 1, "--window must be at least 1");
    anyhow::ensure!(
        args.producers > 0
            || (args.consumers > 0 && args.duration.is_none() && args.compare.url.is_none()),
        "--producers 0 (a drain) needs consumers and a --count, and no --duration or --compare"
    );
    anyhow::ensure!(
        (args.producers == 0 || args.producers >= args.queues)
            && (args.consumers == 0 || args.consumers >= args.queues),
        "--queues must not exceed --producers, nor --consumers unless it is 0 (every queue needs its producer and consumer)"
    );
    anyhow::ensure!(
        args.rate == 0 || args.rate >= u64::from(args.producers),
        "--rate must be at least one message per second per producer"
    );
    let Some(other) = args.compare.url.clone() else {
        let report = measure(&args, &args.url, args.pid).await?;
        if args.json {
            println!("{report}");
        } else {
            print_table(&report);
        }
        return Ok(exit_code(report["verified"].as_bool().unwrap_or(false)));
    };
    let mut rounds = Vec::new();
    for round in 1..=args.compare.rounds {
        eprintln!(
            "weir bench amqp: round {round} of {}: A",
            args.compare.rounds
        );
        let a = measure(&args, &args.url, args.pid).await?;
        eprintln!(
            "weir bench amqp: round {round} of {}: B",
            args.compare.rounds
        );
        let b = measure(&args, &other, args.compare.pid).await?;
        rounds.push((a, b));
    }
    Ok(finish_comparison(
        args.json, &args.url, &other, &rounds, &COMPARED,
    ))
}

/// The metrics a comparison sets side by side: name and JSON pointer into a
/// report. The ratio is A / B for each, whichever way is better.
const COMPARED: [(&str, &str); 6] = [
    ("publish msg/s", "/publish_msgs_per_sec"),
    ("consume msg/s", "/consume_msgs_per_sec"),
    ("latency p50 ms", "/latency_ms/p50"),
    ("latency p99 ms", "/latency_ms/p99"),
    ("broker CPU µs/msg", "/broker_cpu_us_per_message"),
    ("client CPU µs/msg", "/client_cpu_us_per_message"),
];

/// One run of the workload against the broker at `url`: its report.
async fn measure(args: &AmqpArgs, url: &str, pid: Option<u32>) -> anyhow::Result<Value> {
    // A drain takes the queues as an earlier run left them.
    if args.producers > 0 {
        for i in 0..args.queues {
            prepare_queue(url, &args.queue_name(i), args.stream).await?;
        }
    }
    let count = match args.duration {
        Some(_) => u64::MAX,
        None => args.count.unwrap_or(100_000),
    };
    let deadline = args
        .duration
        .map(|s| Instant::now() + Duration::from_secs(s));
    let capacity = if count == u64::MAX { 64 << 20 } else { count };
    // A queue's consumers share its messages; each reader of a stream reads them all.
    let tallies = if args.stream {
        args.consumers.max(1)
    } else {
        1
    };
    let shared = Arc::new(Shared {
        start: Instant::now(),
        published: AtomicU64::new(0),
        confirmed: AtomicU64::new(0),
        nacked: AtomicU64::new(0),
        tallies: (0..tallies).map(|_| Tally::new(capacity)).collect(),
        producing: AtomicU64::new(u64::from(args.producers)),
        draining: args.producers == 0,
        last_publish_us: AtomicU64::new(0),
        last_receive_us: AtomicU64::new(0),
    });
    let progress = progress_bar(args.json, (count != u64::MAX).then_some(count));
    let ticker = tokio::spawn(tick(shared.clone(), progress.clone(), args.consumers > 0));
    let broker_before = pid.map(process_cpu_seconds).transpose()?;
    let client_before = process_cpu_seconds(std::process::id())?;
    let mut consumers = JoinSet::new();
    let mut subscribed = Vec::new();
    for i in 0..args.consumers {
        let (ready, is_ready) = oneshot::channel();
        subscribed.push(is_ready);
        consumers.spawn(consume(
            ConsumeArgs {
                i,
                url: url.to_owned(),
                queue: args.queue_name(i),
                prefetch: args.prefetch,
                stream: args.stream,
                count,
            },
            shared.clone(),
            ready,
        ));
    }
    // Publishing starts once every consumer is subscribed, or the first messages'
    // latency would include the consumers' connection set-up. (A consumer that
    // failed drops its sender; its error comes out of the join below.)
    for is_ready in subscribed {
        let _ = is_ready.await;
    }
    let mut producers = JoinSet::new();
    for i in 0..args.producers {
        let per_producer_rate = args.rate / u64::from(args.producers);
        producers.spawn(produce(
            ProduceArgs {
                url: url.to_owned(),
                queue: args.queue_name(i),
                size: args.size,
                confirms: args.confirms,
                window: args.window,
                persistent: args.persistent,
                rate: per_producer_rate,
                count,
                deadline,
                first: u64::from(i),
                step: u64::from(args.producers),
            },
            shared.clone(),
        ));
    }
    while let Some(done) = producers.join_next().await {
        done.context("a producer panicked")??;
    }
    let mut latency = histogram();
    while let Some(done) = consumers.join_next().await {
        add(&mut latency, &done.context("a consumer panicked")??);
    }
    let broker = match (pid, broker_before) {
        (Some(pid), Some(before)) => {
            Some((process_cpu_seconds(pid)? - before, peak_rss_bytes(pid)?))
        }
        _ => None,
    };
    let client_cpu = process_cpu_seconds(std::process::id())? - client_before;
    ticker.abort();
    progress.finish_and_clear();
    Ok(report(args, url, &shared, &latency, broker, client_cpu))
}

/// Refreshes the bar five times a second: it follows the consumers, or the
/// confirms when nothing consumes.
async fn tick(shared: Arc<Shared>, bar: indicatif::ProgressBar, consuming: bool) {
    let mut every = tokio::time::interval(Duration::from_millis(200));
    loop {
        every.tick().await;
        let published = shared.published.load(Ordering::Relaxed);
        let confirmed = shared.confirmed.load(Ordering::Relaxed);
        let received = shared.received();
        bar.set_position(if consuming { received } else { confirmed });
        bar.set_message(format!(
            "published {published}, confirmed {confirmed}, received {received}"
        ));
    }
}

/// Declares the durable queue and empties it.
async fn prepare_queue(url: &str, queue: &str, stream: bool) -> anyhow::Result<()> {
    let mut setup = Client::connect(url).await?;
    setup.prepare_queue(queue, stream).await?;
    setup.close().await;
    Ok(())
}

struct ProduceArgs {
    url: String,
    queue: String,
    size: usize,
    confirms: bool,
    window: usize,
    persistent: bool,
    rate: u64,
    count: u64,
    deadline: Option<Instant>,
    /// The producer's sequence numbers: `first`, `first + step`, ... below `count`.
    /// Each producer has its share of the count (as `PerfTest`'s per-producer count),
    /// so with `--queues` every queue gets its part however the producers' starts
    /// fall, and the numbers stay unique for the verification.
    first: u64,
    step: u64,
}

/// Confirms received so far, by delivery tag: everything below `base` is settled,
/// `settled[i]` says whether `base + i` is.
#[derive(Default)]
struct Confirms {
    base: u64,
    settled: std::collections::VecDeque<bool>,
    count: u64,
}

impl Confirms {
    /// Settles `tag` (and every tag before it with `multiple`); returns how many
    /// were newly settled.
    fn settle(&mut self, tag: u64, multiple: bool) -> u64 {
        let before = self.count;
        let first = if multiple { self.base } else { tag };
        for t in first.max(self.base)..=tag {
            let i = (t - self.base) as usize;
            if self.settled.len() <= i {
                self.settled.resize(i + 1, false);
            }
            if !self.settled[i] {
                self.settled[i] = true;
                self.count += 1;
            }
        }
        while self.settled.front() == Some(&true) {
            self.settled.pop_front();
            self.base += 1;
        }
        self.count - before
    }
}

async fn produce(args: ProduceArgs, shared: Arc<Shared>) -> anyhow::Result<()> {
    let mut client = Client::connect(&args.url).await?;
    if args.confirms {
        client.confirm_select().await?;
    }
    let template = PublishTemplate::new(&args.queue, args.size, args.persistent, client.frame_max);
    let Client {
        mut reader,
        mut writer,
        ..
    } = client;
    // The reader counts confirms (tags start at 1) and publishes the count.
    let (settled_tx, mut settled_rx) = tokio::sync::watch::channel(0u64);
    let reader_shared = shared.clone();
    let confirms_task = tokio::spawn(async move {
        let mut confirms = Confirms {
            base: 1,
            ..Confirms::default()
        };
        loop {
            let mut frame = Some(reader.frame().await?);
            while let Some(f) = frame {
                if f.kind == amqp_wire::FRAME_METHOD {
                    match amqp_wire::confirm(&f.payload)? {
                        Some(amqp_wire::Confirm::Ack { tag, multiple }) => {
                            let n = confirms.settle(tag, multiple);
                            reader_shared.confirmed.fetch_add(n, Ordering::Relaxed);
                        }
                        Some(amqp_wire::Confirm::Nack { tag, multiple }) => {
                            let n = confirms.settle(tag, multiple);
                            reader_shared.nacked.fetch_add(n, Ordering::Relaxed);
                        }
                        None => {}
                    }
                }
                frame = reader.buffered()?;
            }
            settled_tx.send_replace(confirms.count);
        }
        #[allow(unreachable_code)]
        anyhow::Ok(())
    });
    let mut body = vec![b'x'; args.size];
    let mut out = BytesMut::with_capacity(256 * (args.size + 64));
    let interval = (args.rate > 0).then(|| Duration::from_nanos(1_000_000_000 / args.rate));
    let mut next_send = Instant::now();
    let (mut sent, mut next_seq) = (0u64, args.first);
    'run: loop {
        if args.deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        let mut budget = 256u64;
        if args.confirms {
            let window = args.window as u64;
            let settled = *settled_rx
                .wait_for(|settled| sent - settled < window)
                .await
                .context("the broker connection ended")?;
            budget = budget.min(window - (sent - settled));
        }
        if let Some(every) = interval {
            next_send += every;
            tokio::time::sleep_until(next_send.into()).await;
            budget = 1;
        }
        let mut n = 0;
        while n < budget {
            let seq = next_seq;
            next_seq += args.step;
            if seq >= args.count || seq >= shared.tally(0).capacity() {
                if n == 0 {
                    break 'run;
                }
                break;
            }
            body[..8].copy_from_slice(&seq.to_be_bytes());
            body[8..16].copy_from_slice(&shared.now_us().to_be_bytes());
            template.write(&body, &mut out);
            n += 1;
        }
        writer.write_all(&out).await.context("publishing")?;
        out.clear();
        sent += n;
        shared.published.fetch_add(n, Ordering::Relaxed);
        if n < budget {
            break;
        }
    }
    if args.confirms {
        settled_rx
            .wait_for(|settled| *settled >= sent)
            .await
            .context("the broker connection ended before every confirm")?;
    }
    confirms_task.abort();
    shared
        .last_publish_us
        .fetch_max(shared.now_us(), Ordering::Relaxed);
    shared.producing.fetch_sub(1, Ordering::Relaxed);
    Ok(())
}

/// Consumer `i` of `queue`.
struct ConsumeArgs {
    i: u32,
    url: String,
    queue: String,
    prefetch: u16,
    stream: bool,
    count: u64,
}

async fn consume(
    args: ConsumeArgs,
    shared: Arc<Shared>,
    ready: oneshot::Sender<()>,
) -> anyhow::Result<Histogram<u64>> {
    let ConsumeArgs {
        i,
        url,
        queue,
        prefetch,
        stream,
        count,
    } = args;
    let mut client = Client::connect(&url).await?;
    client.consume(&queue, prefetch, stream).await?;
    let _ = ready.send(());
    let mut latency = histogram();
    let mut acks = BytesMut::with_capacity(64);
    // The message being read: its tag, size, bytes so far and head.
    let mut tag = 0u64;
    let mut acked = 0u64;
    let mut size = 0u64;
    let mut got = 0u64;
    let mut head = [0u8; HEADER_LEN];
    loop {
        let expected = if shared.draining {
            count
        } else if shared.producing.load(Ordering::Relaxed) == 0 {
            shared
                .confirmed
                .load(Ordering::Relaxed)
                .max(shared.published.load(Ordering::Relaxed))
        } else {
            count
        };
        if shared.tally(i).received() >= expected.min(count) {
            break;
        }
        // Short waits, so a consumer that gets nothing more (the others took the
        // rest) sees the run end; it gives up after DRAIN_IDLE of silence once
        // the producers are done.
        let Ok(first) =
            tokio::time::timeout(Duration::from_millis(200), client.reader.frame()).await
        else {
            if shared.producing.load(Ordering::Relaxed) == 0 {
                let last = shared
                    .last_receive_us
                    .load(Ordering::Relaxed)
                    .max(shared.last_publish_us.load(Ordering::Relaxed));
                let idle = shared.now_us().saturating_sub(last);
                if idle > DRAIN_IDLE.as_micros() as u64 {
                    break;
                }
            }
            continue;
        };
        let mut frame = Some(first.context("consuming")?);
        while let Some(f) = frame {
            match f.kind {
                amqp_wire::FRAME_METHOD => {
                    if let Some(t) = amqp_wire::delivery_tag(&f.payload)? {
                        tag = t;
                        got = 0;
                    }
                }
                amqp_wire::FRAME_HEADER => size = amqp_wire::body_size(&f.payload)?,
                amqp_wire::FRAME_BODY => {
                    let at = got as usize;
                    if at < HEADER_LEN {
                        let n = (HEADER_LEN - at).min(f.payload.len());
                        head[at..at + n].copy_from_slice(&f.payload[..n]);
                    }
                    got += f.payload.len() as u64;
                    if got == size {
                        if size >= HEADER_LEN as u64 {
                            let seq = u64::from_be_bytes(head[..8].try_into().expect("8 bytes"));
                            let sent = u64::from_be_bytes(head[8..].try_into().expect("8 bytes"));
                            // A drained message was sent by another run, on its clock.
                            if !shared.draining {
                                latency
                                    .saturating_record(shared.now_us().saturating_sub(sent).max(1));
                            }
                            shared.tally(i).see(seq);
                        } else {
                            shared.tally(i).see_unnumbered();
                        }
                    }
                }
                _ => {}
            }
            frame = client.reader.buffered()?;
        }
        // One ack for everything read so far.
        if got == size && tag > acked {
            amqp_wire::ack_multiple(tag, &mut acks);
            client.writer.write_all(&acks).await.context("acking")?;
            acks.clear();
            acked = tag;
        }
        shared
            .last_receive_us
            .fetch_max(shared.now_us(), Ordering::Relaxed);
    }
    client.close().await;
    Ok(latency)
}

#[allow(clippy::cast_precision_loss)] // counts and seconds of a benchmark fit an f64
fn report(
    args: &AmqpArgs,
    url: &str,
    shared: &Shared,
    latency: &Histogram<u64>,
    broker: Option<(f64, u64)>,
    client_cpu: f64,
) -> Value {
    let published = shared.published.load(Ordering::Relaxed);
    let confirmed = shared.confirmed.load(Ordering::Relaxed);
    let nacked = shared.nacked.load(Ordering::Relaxed);
    let received = shared.received();
    let duplicates: u64 = shared.tallies.iter().map(Tally::duplicates).sum();
    // A drain expects the sequence numbers 0..count of the run that filled the queue.
    let sent = if shared.draining {
        args.count.unwrap_or(0)
    } else {
        published
    };
    let verified = if args.consumers == 0 {
        nacked == 0 && (!args.confirms || confirmed == published)
    } else {
        shared.tallies.iter().all(|t| t.holds_exactly(sent)) && nacked == 0
    };
    let publish_s = shared.last_publish_us.load(Ordering::Relaxed) as f64 / 1e6;
    let receive_s = shared.last_receive_us.load(Ordering::Relaxed) as f64 / 1e6;
    let rate = |n: u64, s: f64| if s > 0.0 { (n as f64 / s).round() } else { 0.0 };
    let per_message_us = |cpu: f64| {
        let messages = published.max(received);
        if messages == 0 {
            0.0
        } else {
            (cpu * 1e6 / messages as f64 * 10.0).round() / 10.0
        }
    };
    json!({
        "url": redact(url),
        "producers": args.producers,
        "queues": args.queues,
        "consumers": args.consumers,
        "size": args.size,
        "confirms": args.confirms,
        "persistent": args.persistent,
        "prefetch": args.prefetch,
        "rate": args.rate,
        "published": published,
        "confirmed": confirmed,
        "nacked": nacked,
        "received": received,
        "duplicates": duplicates,
        "verified": verified,
        "publish_msgs_per_sec": rate(published, publish_s),
        "consume_msgs_per_sec": rate(received, receive_s),
        "latency_ms": percentiles(latency),
        "broker_cpu_seconds": broker.map(|(cpu, _)| (cpu * 100.0).round() / 100.0),
        "broker_cpu_us_per_message": broker.map(|(cpu, _)| per_message_us(cpu)),
        "broker_peak_rss_bytes": broker.map(|(_, rss)| rss),
        "client_cpu_us_per_message": per_message_us(client_cpu),
    })
}

fn print_table(r: &Value) {
    let show = |v: &Value| match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let lat = &r["latency_ms"];
    let rows = vec![
        vec!["broker".to_owned(), show(&r["url"])],
        vec![
            "published / confirmed / received".to_owned(),
            format!(
                "{} / {} / {}",
                r["published"], r["confirmed"], r["received"]
            ),
        ],
        vec![
            "verified (each once, in full)".to_owned(),
            show(&r["verified"]),
        ],
        vec!["publish msg/s".to_owned(), show(&r["publish_msgs_per_sec"])],
        vec!["consume msg/s".to_owned(), show(&r["consume_msgs_per_sec"])],
        vec![
            "latency p50 / p99 / p99.9 / max ms".to_owned(),
            format!(
                "{} / {} / {} / {}",
                show(&lat["p50"]),
                show(&lat["p99"]),
                show(&lat["p99_9"]),
                show(&lat["max"])
            ),
        ],
        vec![
            "broker CPU s (µs per message)".to_owned(),
            format!(
                "{} ({})",
                show(&r["broker_cpu_seconds"]),
                show(&r["broker_cpu_us_per_message"])
            ),
        ],
        vec![
            "broker peak RSS bytes".to_owned(),
            show(&r["broker_peak_rss_bytes"]),
        ],
        vec![
            "client CPU µs per message".to_owned(),
            show(&r["client_cpu_us_per_message"]),
        ],
    ];
    print!(
        "{}",
        table(&[("measure", Align::Left), ("value", Align::Right)], &rows)
    );
}
