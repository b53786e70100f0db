//! `weir bench stream`: a stream over the HTTP API. Appenders send batches of
//! records (durable appends) while, optionally, consumer groups read and commit;
//! then one reader replays the whole stream from its first record. Reports append
//! records/s and MB/s, the replay's MB/s, and the broker's CPU per record.
//!
//! With `--amqp URL` the same command runs the stream over AMQP instead, side by
//! side with RabbitMQ's stream queues with `--compare` (the workload of `weir bench
//! amqp --stream`, docs/benchmarks.md "Streams").

mod latency;

pub(super) use latency::measure_http_latency;

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use anyhow::Context as _;
use serde_json::{Value, json};
use tokio::task::JoinSet;

use super::measure::{CompareArgs, process_cpu_seconds, round};
use crate::client::ServerArgs;

/// Arguments of `weir bench stream`.
#[derive(clap::Args, Debug)]
pub struct StreamArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// The stream (deleted and created anew; default `bench-stream-<pid>`).
    #[arg(long)]
    stream: Option<String>,
    /// Its partitions.
    #[arg(long, default_value_t = 1)]
    partitions: u32,
    /// Concurrent appenders.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1000))]
    producers: u32,
    /// Records per append request.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=10000))]
    batch: u32,
    /// Record body size in bytes.
    #[arg(long, default_value_t = 100, value_name = "BYTES")]
    size: usize,
    /// Records to append in all.
    #[arg(long, default_value_t = 1_000_000)]
    count: u64,
    /// Consumer groups reading (each with one member, committing) while the
    /// appenders run.
    #[arg(long, default_value_t = 0)]
    groups: u32,
    /// How often each group commits what it read, in ms; 0: after every poll.
    /// (Kafka's consumers commit every 5,000 ms by default.)
    #[arg(long, default_value_t = 0)]
    commit_interval_ms: u64,
    /// Each group's polls wait (up to 200 ms) for at least this many unread records
    /// (the poll's `min`; Kafka's `fetch.min.bytes`, in records). 1: any.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10000))]
    min_records: u32,
    /// Skip the replay from the first record.
    #[arg(long)]
    no_replay: bool,
    /// How groups and the replay read: `json` (one object per record) or `batches`
    /// (the binary format, `Accept: application/vnd.weir.batches`, decoded here
    /// record by record).
    #[arg(long, value_enum, default_value_t = ReadFormat::Json)]
    read_format: ReadFormat,
    /// How the appenders send records: `json` (`{"messages": [...]}`) or
    /// `batches` (the binary format, `Content-Type: application/vnd.weir.batches`:
    /// one batch per request, encoded once here, each request to the next
    /// partition in turn).
    #[arg(long, value_enum, default_value_t = ReadFormat::Json)]
    append_format: ReadFormat,
    /// Run over AMQP instead, RabbitMQ's way (`weir bench amqp --stream`): the
    /// broker's AMQP URL. The stream is declared with `x-queue-type=stream` (on
    /// both brokers with `--compare`, which may be RabbitMQ), `--producers` publish
    /// `--size`-byte records with confirms, `--readers` consume it from its first
    /// record, and the run is verified. Consumer groups are HTTP's.
    #[arg(long, value_name = "URL", conflicts_with_all = ["groups", "read_format", "append_format"])]
    amqp: Option<String>,
    /// With `--amqp`: readers consuming the stream from its first record, each
    /// reading every record (the run is verified per reader: each record once).
    #[arg(long, default_value_t = 1, requires = "amqp", value_parser = clap::value_parser!(u32).range(0..=64))]
    readers: u32,
    #[command(flatten)]
    compare: CompareArgs,
    /// The broker's process id: report its CPU time per record.
    #[arg(long)]
    pid: Option<u32>,
    /// Only read: the groups read the existing stream (`--stream`, made by another
    /// run with `--keep`) for this many ms, and nothing is appended, made or
    /// deleted. With a second, appending run, the readers can run in a process of
    /// their own (for example under `nice`, to stand for readers on other machines).
    #[arg(long, value_name = "MS", requires = "stream")]
    read_only_ms: Option<u64>,
    /// Leave the stream in place at the end.
    #[arg(long)]
    keep: bool,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

/// How the benchmark's readers ask for records, or its appenders send them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum ReadFormat {
    Json,
    Batches,
}

/// The HTTP side of the run: a client with the login and the stream's base URL.
#[derive(Clone)]
struct Target {
    http: reqwest::Client,
    base: String,
    user: String,
    password: String,
    format: ReadFormat,
}

/// A record as read, with only what the benchmark looks at (parsing every field
/// into a `serde_json::Value` would make the load generator the bottleneck).
#[derive(serde::Deserialize)]
struct Rec<'a> {
    partition: u64,
    offset: u64,
    #[serde(borrow, default)]
    body: Option<std::borrow::Cow<'a, str>>,
}

#[derive(serde::Deserialize)]
struct Records<'a> {
    #[serde(borrow)]
    messages: Vec<Rec<'a>>,
    #[serde(default)]
    next: u64,
}

impl Target {
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<String>,
    ) -> anyhow::Result<Value> {
        let text = self.send_text(method, path, body).await?;
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn send_text(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<String>,
    ) -> anyhow::Result<String> {
        let body = body.map(|b| (JSON, bytes::Bytes::from(b)));
        let bytes = self.send_bytes(method, path, body, false).await?;
        String::from_utf8(bytes.to_vec()).context("an answer that is not UTF-8")
    }

    /// Sends a request with a body of the content type given; with `stored`, asks
    /// for the binary read format.
    async fn send_bytes(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<(&'static str, bytes::Bytes)>,
        stored: bool,
    ) -> anyhow::Result<bytes::Bytes> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .basic_auth(&self.user, Some(&self.password));
        if stored {
            request = request.header(reqwest::header::ACCEPT, STORED_FORMAT);
        }
        if let Some((content_type, body)) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, content_type)
                .body(body);
        }
        let answer = request.send().await.context("request")?;
        let status = answer.status();
        let bytes = answer.bytes().await.context("answer")?;
        anyhow::ensure!(
            status.is_success() || status.as_u16() == 404,
            "{status}: {}",
            String::from_utf8_lossy(&bytes)
        );
        Ok(bytes)
    }

    /// Reads records in the run's format: per record (partition, offset, body
    /// length), and per partition where to go on.
    async fn read_records(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<String>,
    ) -> anyhow::Result<Vec<Section>> {
        let stored = self.format == ReadFormat::Batches;
        let body = body.map(|b| (JSON, bytes::Bytes::from(b)));
        let bytes = self.send_bytes(method, path, body, stored).await?;
        if stored {
            return parse_stored(&bytes);
        }
        let read: Records<'_> = serde_json::from_slice(&bytes).context("a JSON answer")?;
        let mut sections: Vec<Section> = Vec::new();
        for m in &read.messages {
            let body = m.body.as_ref().map_or(0, |b| b.len()) as u64;
            match sections.last_mut() {
                Some(s) if s.partition == m.partition => {
                    s.records += 1;
                    s.body_bytes += body;
                    s.next = m.offset + 1;
                }
                _ => sections.push(Section {
                    partition: m.partition,
                    records: 1,
                    body_bytes: body,
                    next: m.offset + 1,
                }),
            }
        }
        if sections.is_empty() {
            sections.push(Section {
                partition: u64::MAX,
                records: 0,
                body_bytes: 0,
                next: read.next,
            });
        }
        Ok(sections)
    }
}

/// The binary read format's media type (docs/http-api.md "Binary reads").
const STORED_FORMAT: &str = "application/vnd.weir.batches";
/// JSON's media type.
const JSON: &str = "application/json";

/// What a read answered for one partition.
struct Section {
    partition: u64,
    records: u64,
    body_bytes: u64,
    /// Where to read on (what a group commits).
    next: u64,
}

/// Parses a binary answer: sections of `u32 partition, u64 from, u64 next, u32
/// length` and that many bytes of stored batches, each record walked in place.
fn parse_stored(bytes: &bytes::Bytes) -> anyhow::Result<Vec<Section>> {
    let mut sections = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        anyhow::ensure!(bytes.len() - at >= 24, "a section header cut short");
        let field = |from: usize, len: usize| &bytes[at + from..at + from + len];
        let partition = u32::from_le_bytes(field(0, 4).try_into()?);
        let from = u64::from_le_bytes(field(4, 8).try_into()?);
        let next = u64::from_le_bytes(field(12, 8).try_into()?);
        let len = u32::from_le_bytes(field(20, 4).try_into()?) as usize;
        anyhow::ensure!(bytes.len() - at - 24 >= len, "a section cut short");
        let batches = &bytes[at + 24..at + 24 + len];
        let (mut records, mut body_bytes) = (0u64, 0u64);
        weir_log::visit_stored(batches, weir_log::Offset(from), |r| {
            records += 1;
            body_bytes += r.body.len() as u64;
        })
        .map_err(|e| anyhow::anyhow!("stored batches: {e}"))?;
        sections.push(Section {
            partition: u64::from(partition),
            records,
            body_bytes,
            next,
        });
        at += 24 + len;
    }
    Ok(sections)
}

/// Runs the benchmark.
pub async fn run(args: StreamArgs) -> anyhow::Result<ExitCode> {
    let name = args
        .stream
        .clone()
        .unwrap_or_else(|| format!("bench-stream-{}", std::process::id()));
    if let Some(url) = args.amqp {
        return super::amqp::run_stream(super::amqp::StreamRun {
            url,
            stream: name,
            producers: args.producers,
            readers: args.readers,
            size: args.size,
            count: args.count,
            rate: 0,
            duration: None,
            pid: args.pid,
            json: args.json,
            compare: args.compare,
        })
        .await;
    }
    anyhow::ensure!(
        args.compare.url.is_none(),
        "--compare needs --amqp: over HTTP, run the same command against each broker"
    );
    run_http(args, name).await
}

/// The HTTP run: appenders, groups, the replay.
async fn run_http(args: StreamArgs, name: String) -> anyhow::Result<ExitCode> {
    if let Some(ms) = args.read_only_ms {
        let target = target(&args, &name);
        return read_only(&args, &target, ms).await;
    }
    let report = measure_http(&args, &name).await?;
    print_report(&report, args.json);
    Ok(ExitCode::SUCCESS)
}

impl StreamArgs {
    /// The HTTP stream workload `weir bench kafka` sets beside its Kafka one: one
    /// appender sending JSON batches of 1,000 `size`-byte records to a stream of
    /// `partitions`, no groups, then the replay.
    pub(super) fn http_path(
        server: ServerArgs,
        stream: String,
        (partitions, count, size): (u32, u64, usize),
        (keep, pid): (bool, Option<u32>),
    ) -> StreamArgs {
        StreamArgs {
            server,
            stream: Some(stream),
            partitions,
            producers: 1,
            batch: 1000,
            size,
            count,
            groups: 0,
            commit_interval_ms: 0,
            min_records: 1,
            no_replay: false,
            read_format: ReadFormat::Json,
            append_format: ReadFormat::Json,
            amqp: None,
            readers: 0,
            compare: CompareArgs {
                url: None,
                pid: None,
                rounds: 1,
            },
            pid,
            read_only_ms: None,
            keep,
            json: true,
        }
    }
}

/// The client and the stream's URL the HTTP run uses.
fn target(args: &StreamArgs, name: &str) -> Target {
    let vhost = args.server.vhost.as_deref().unwrap_or("/");
    let scope = if vhost == "/" {
        String::new()
    } else {
        format!("/vhosts/{}", urlencode(vhost))
    };
    Target {
        http: reqwest::Client::new(),
        base: format!(
            "{}/api{scope}/streams/{}",
            args.server.server.trim_end_matches('/'),
            urlencode(name)
        ),
        user: args.server.user.clone(),
        password: args.server.password.clone(),
        format: args.read_format,
    }
}

/// The appenders (and groups), then the replay: the report.
#[allow(clippy::cast_precision_loss)] // counts and seconds of a benchmark fit an f64
pub(super) async fn measure_http(args: &StreamArgs, name: &str) -> anyhow::Result<Value> {
    let target = target(args, name);
    target.send(reqwest::Method::DELETE, "", None).await?;
    let options = json!({"partitions": args.partitions}).to_string();
    target.send(reqwest::Method::PUT, "", Some(options)).await?;
    let appends = append_bodies(args)?;
    let requests = args.count.div_ceil(u64::from(args.batch));
    let next = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let read_by_groups = Arc::new(AtomicU64::new(0));
    let mut readers = spawn_groups(args, &target, &stop, &read_by_groups);
    let cpu_before = args.pid.map(process_cpu_seconds).transpose()?;
    let started = Instant::now();
    let mut appenders = JoinSet::new();
    for _ in 0..args.producers {
        let (target, next, appends) = (target.clone(), next.clone(), appends.clone());
        appenders.spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= requests {
                    break;
                }
                // The answer (where the records went) is checked for success only:
                // parsing it would load the generator, not the broker.
                let body = appends[(n % appends.len() as u64) as usize].clone();
                target
                    .send_bytes(reqwest::Method::POST, "/messages", Some(body), false)
                    .await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = appenders.join_next().await {
        done??;
    }
    let append_s = started.elapsed().as_secs_f64();
    let cpu_after = args.pid.map(process_cpu_seconds).transpose()?;
    stop.store(true, Ordering::Relaxed);
    while let Some(done) = readers.join_next().await {
        done??;
    }
    let appended = requests * u64::from(args.batch);
    let mut report = json!({
        "records": appended,
        "append_records_per_sec": round(appended as f64 / append_s, 0),
        "append_mb_per_sec": round((appended * args.size as u64) as f64 / append_s / 1e6, 1),
        "read_by_groups": read_by_groups.load(Ordering::Relaxed),
    });
    if let (Some(before), Some(after)) = (cpu_before, cpu_after) {
        report["broker_cpu_us_per_record"] =
            json!(round((after - before) * 1e6 / appended as f64, 2));
    }
    if !args.no_replay {
        let (records, bytes, seconds) = replay(&target, args.partitions).await?;
        anyhow::ensure!(
            records == appended,
            "replayed {records} of {appended} records"
        );
        report["replay_mb_per_sec"] = json!(round(bytes as f64 / seconds / 1e6, 1));
        report["replay_records_per_sec"] = json!(round(records as f64 / seconds, 0));
    }
    if !args.keep {
        target.send(reqwest::Method::DELETE, "", None).await?;
    }
    Ok(report)
}

/// The bodies the appenders send in turn: one JSON body, or one binary body per
/// partition (unkeyed records, which the appender may place anywhere).
fn append_bodies(args: &StreamArgs) -> anyhow::Result<Arc<Vec<(&'static str, bytes::Bytes)>>> {
    let body = "x".repeat(args.size);
    if args.append_format == ReadFormat::Json {
        let records: Vec<Value> = (0..args.batch).map(|_| json!({"body": body})).collect();
        let batch = json!({ "messages": records }).to_string();
        return Ok(Arc::new(vec![(JSON, bytes::Bytes::from(batch))]));
    }
    let records: Vec<weir_log::NewRecord> = (0..args.batch)
        .map(|_| weir_log::NewRecord::new(body.clone()))
        .collect();
    let batch = weir_log::IncomingBatch::encode(&records)?;
    let len = u32::try_from(batch.len()).context("a batch over 4 GiB")?;
    let bodies = (0..args.partitions)
        .map(|p| {
            let mut section = Vec::with_capacity(8 + batch.len());
            section.extend_from_slice(&p.to_le_bytes());
            section.extend_from_slice(&len.to_le_bytes());
            section.extend_from_slice(&batch);
            (STORED_FORMAT, bytes::Bytes::from(section))
        })
        .collect();
    Ok(Arc::new(bodies))
}

/// The `--groups` readers, each its own group of one member.
fn spawn_groups(
    args: &StreamArgs,
    target: &Target,
    stop: &Arc<AtomicBool>,
    read: &Arc<AtomicU64>,
) -> JoinSet<anyhow::Result<()>> {
    let mut readers = JoinSet::new();
    for g in 0..args.groups {
        let (target, stop, read) = (target.clone(), stop.clone(), read.clone());
        let every = std::time::Duration::from_millis(args.commit_interval_ms);
        let min = args.min_records;
        readers.spawn(async move { group_reader(target, g, (min, every), stop, read).await });
    }
    readers
}

/// `--read-only-ms`: the groups read the existing stream for `ms`.
#[allow(clippy::cast_precision_loss)] // counts and seconds of a benchmark fit an f64
async fn read_only(args: &StreamArgs, target: &Target, ms: u64) -> anyhow::Result<ExitCode> {
    let stop = Arc::new(AtomicBool::new(false));
    let read = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut readers = spawn_groups(args, target, &stop, &read);
    tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    stop.store(true, Ordering::Relaxed);
    while let Some(done) = readers.join_next().await {
        done??;
    }
    let records = read.load(Ordering::Relaxed);
    let report = json!({
        "read_by_groups": records,
        "read_records_per_sec": round(records as f64 / started.elapsed().as_secs_f64(), 0),
    });
    print_report(&report, args.json);
    Ok(ExitCode::SUCCESS)
}

/// `report` as one JSON object, or a line per figure.
fn print_report(report: &Value, json: bool) {
    if json {
        println!("{report}");
    } else {
        for (key, value) in report.as_object().into_iter().flatten() {
            println!("{key:<28} {value}");
        }
    }
}

/// One group with one member: polls (and commits what it read) until stopped.
async fn group_reader(
    target: Target,
    g: u32,
    (min, commit_every): (u32, std::time::Duration),
    stop: Arc<AtomicBool>,
    read: Arc<AtomicU64>,
) -> anyhow::Result<()> {
    let group = format!("/groups/bench-{g}");
    target
        .send(
            reqwest::Method::PUT,
            &group,
            Some(json!({"start": "first"}).to_string()),
        )
        .await?;
    let mut offsets = serde_json::Map::new();
    let mut committed = Instant::now();
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        if !stopping {
            let max = min.max(1000);
            let poll = json!({"member": "m", "max": max, "min": min, "wait_ms": 200}).to_string();
            let polled = target
                .read_records(reqwest::Method::POST, &format!("{group}/poll"), Some(poll))
                .await?;
            for s in polled.iter().filter(|s| s.records > 0) {
                offsets.insert(s.partition.to_string(), json!(s.next));
                read.fetch_add(s.records, Ordering::Relaxed);
            }
        }
        if !offsets.is_empty() && (stopping || committed.elapsed() >= commit_every) {
            let commit = json!({"member": "m", "offsets": offsets}).to_string();
            target
                .send(
                    reqwest::Method::POST,
                    &format!("{group}/commit"),
                    Some(commit),
                )
                .await?;
            offsets.clear();
            committed = Instant::now();
        }
        if stopping {
            return Ok(());
        }
    }
}

/// Reads every partition from its first record: (records, body bytes, seconds).
async fn replay(target: &Target, partitions: u32) -> anyhow::Result<(u64, u64, f64)> {
    let started = Instant::now();
    let (mut records, mut bytes) = (0u64, 0u64);
    for p in 0..partitions {
        let mut from = 0u64;
        loop {
            let path = format!("/messages?partition={p}&from={from}&max=10000");
            let read = target
                .read_records(reqwest::Method::GET, &path, None)
                .await?;
            let got: u64 = read.iter().map(|s| s.records).sum();
            if got == 0 {
                break;
            }
            records += got;
            bytes += read.iter().map(|s| s.body_bytes).sum::<u64>();
            from = read.last().map_or(from, |s| s.next);
        }
    }
    Ok((records, bytes, started.elapsed().as_secs_f64()))
}

/// `text` as one path segment.
fn urlencode(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}
