//! `weir bench kafka`: the Kafka front end under the load a Kafka user sends,
//! because the load comes from librdkafka itself (the C client behind
//! confluent-kafka, kcat and most non-Java clients), with its defaults: batches
//! as its producer forms them (`linger.ms` 5, up to 10,000 records or 1 MB), its
//! consumer's fetch sizes and prefetch queue. One exception: the consumer's
//! `fetch.queue.backoff.ms` is 10 ms, not 1 s (`clients.rs` says why; `-X` sets it
//! back).
//!
//! Three phases on one topic each run: one producer sends `--count` records as
//! fast as librdkafka takes them (acks=all by default: answered after the sync);
//! one consumer reads them all from the first record; then a producer paced at
//! `--rate` (with `linger.ms` 0: a latency test must not wait to fill batches)
//! while a consumer reads live, for the end-to-end latency (after a sync(2), so
//! that the writeback of the earlier phases does not land in it). With `--amqp` and
//! `--http`, the same three phases run over weir's AMQP stream path (`weir bench
//! amqp --stream`'s client) and its HTTP one (`weir bench stream`'s), and one
//! table sets them side by side. With `--java-jars`, the Java client's consumer
//! reads the first phase's records again (`java.rs`).

mod clients;
mod java;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use anyhow::Context as _;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use serde_json::{Value, json};

use super::amqp::{StreamRun, measure_stream};
use super::measure::{CompareArgs, exit_code, percentiles, process_cpu_seconds, round, show};
use super::stream::{StreamArgs, measure_http, measure_http_latency};
use crate::client::ServerArgs;
use crate::client::table::{Align, table};
use clients::{HEADER_LEN, Phase};

/// Arguments of `weir bench kafka`.
#[derive(clap::Args, Debug)]
#[allow(
    clippy::struct_excessive_bools,
    reason = "independent command-line switches"
)]
pub struct KafkaArgs {
    /// The broker's Kafka listener (librdkafka's `bootstrap.servers`).
    #[arg(long, default_value = "127.0.0.1:9092", value_name = "HOST:PORT")]
    bootstrap: String,
    /// The topic (deleted and created anew; default `bench-kafka-<pid>`). The
    /// latency phase uses `<topic>-latency`; `--amqp` and `--http` use
    /// `<topic>-amqp` and `<topic>-http`.
    #[arg(long)]
    topic: Option<String>,
    /// Its partitions.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..=1000))]
    partitions: i32,
    /// Records the producer sends, which the consumer then reads (1 GiB of
    /// 100-byte records: 10,737,419).
    #[arg(long, default_value_t = 1_000_000)]
    count: u64,
    /// Record value size in bytes (at least 16: sequence number and send time).
    #[arg(long, default_value_t = 100, value_name = "BYTES")]
    size: usize,
    /// The producers' `acks`.
    #[arg(long, default_value = "all", value_parser = ["0", "1", "all"])]
    acks: String,
    /// The producers' `compression.type`.
    #[arg(long, default_value = "none", value_parser = ["none", "gzip", "snappy", "lz4", "zstd"])]
    compression: String,
    /// The producers' `enable.idempotence` (librdkafka's default is off, the Java
    /// client's on).
    #[arg(long)]
    idempotence: bool,
    /// The latency phase's rate, records a second in all (0: no latency phase).
    #[arg(long, default_value_t = 10_000)]
    rate: u64,
    /// How long the latency phase sends, in seconds.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    latency_secs: u64,
    /// The latency phase producer's `linger.ms` (the throughput phase keeps
    /// librdkafka's 5 ms, which would add up to 5 ms to each record's latency).
    #[arg(long, default_value_t = 0, value_name = "MS")]
    latency_linger_ms: u64,
    /// A librdkafka setting for every client, as kcat's `-X` (repeat it):
    /// `-X security.protocol=SASL_PLAINTEXT -X sasl.mechanism=PLAIN
    /// -X sasl.username=NAME -X sasl.password=SECRET`, `-X linger.ms=20`.
    #[arg(short = 'X', value_name = "KEY=VALUE")]
    config: Vec<String>,
    /// Run the same phases over weir's AMQP stream path too: the broker's AMQP
    /// URL.
    #[arg(long, value_name = "URL")]
    amqp: Option<String>,
    /// Run them over weir's HTTP stream path too, at `--server`.
    #[arg(long)]
    http: bool,
    #[command(flatten)]
    server: ServerArgs,
    /// The broker's process id: its CPU time per record produced and read.
    #[arg(long)]
    pid: Option<u32>,
    /// Read the records a second time with the Java client's consumer (Apache
    /// kafka-clients): the directory of its jars (`./scripts/test` puts them in
    /// ~/.cache/weir-kafka-java/4.3.0/jars). Needs `javac` and `java`; connects
    /// without TLS or SASL.
    #[arg(long, value_name = "DIR")]
    java_jars: Option<PathBuf>,
    /// Leave the topics in place at the end.
    #[arg(long)]
    keep: bool,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

/// Runs the benchmark.
pub async fn run(args: KafkaArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        args.size >= HEADER_LEN,
        "--size must be at least {HEADER_LEN}"
    );
    let topic = args
        .topic
        .clone()
        .unwrap_or_else(|| format!("bench-kafka-{}", std::process::id()));
    let mut common = vec![("bootstrap.servers".to_owned(), args.bootstrap.clone())];
    for setting in &args.config {
        let (key, value) = setting
            .split_once('=')
            .with_context(|| format!("-X {setting}: not KEY=VALUE"))?;
        common.push((key.to_owned(), value.to_owned()));
    }
    let producer = [
        ("acks", args.acks.as_str()),
        ("compression.type", args.compression.as_str()),
        (
            "enable.idempotence",
            if args.idempotence { "true" } else { "false" },
        ),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .to_vec();
    let phase = Phase {
        common,
        producer,
        topic: topic.clone(),
        partitions: args.partitions,
        size: args.size,
        epoch: Instant::now(),
    };
    let latency_topic = format!("{topic}-latency");
    let topics = [topic.as_str(), latency_topic.as_str()];
    let admin = Admin::new(&phase)?;
    admin.recreate(&topics, args.partitions).await?;
    let mut report = json!({ "kafka": kafka_phases(&args, &phase, &latency_topic).await? });
    if let Some(jars) = &args.java_jars {
        let expected = report["kafka"]["delivered"].as_u64().unwrap_or(0);
        report["java"] = java_phase(&args, jars, &topic, expected).await?;
    }
    if !args.keep {
        admin.delete(&topics).await?;
    }
    if let Some(url) = &args.amqp {
        report["amqp"] = amqp_phases(&args, url, &format!("{topic}-amqp")).await?;
    }
    if args.http {
        report["http"] = http_phases(&args, &format!("{topic}-http")).await?;
    }
    let verified = ["kafka", "java", "amqp", "http"]
        .iter()
        .filter(|path| !report[**path].is_null())
        .all(|path| report[*path]["verified"] == json!(true));
    if args.json {
        println!("{report}");
    } else {
        print_table(&report);
    }
    Ok(exit_code(verified))
}

/// The Kafka phases: produce, consume from the first record, latency at a rate.
#[allow(clippy::cast_precision_loss)] // counts and seconds of a benchmark fit an f64
async fn kafka_phases(
    args: &KafkaArgs,
    phase: &Phase,
    latency_topic: &str,
) -> anyhow::Result<Value> {
    let count = args.count;
    let before = cpu(args.pid)?;
    let produced = blocking({
        let phase = phase.clone();
        move || phase.produce(count, 0, &[], None)
    })
    .await?;
    let between = cpu(args.pid)?;
    let read = blocking({
        let (phase, delivered) = (phase.clone(), produced.delivered);
        move || phase.read(delivered, &AtomicBool::new(true), || {})
    })
    .await?;
    let after = cpu(args.pid)?;
    let mb = |records: u64, s: f64| per_second((records * args.size as u64) as f64 / 1e6, s, 1);
    let received = read.tally.received();
    let us_per =
        |cpu: Option<f64>, records: u64| cpu.map(|s| round(s * 1e6 / records.max(1) as f64, 2));
    let mut out = json!({
        "records": count,
        "size": args.size,
        "acks": args.acks,
        "compression": args.compression,
        "idempotence": args.idempotence,
        "delivered": produced.delivered,
        "failed": produced.failed,
        "first_error": produced.first_error,
        "produce_records_per_sec": per_second(produced.delivered as f64, produced.seconds, 0),
        "produce_mb_per_sec": mb(produced.delivered, produced.seconds),
        "consumed": received,
        "consume_records_per_sec": per_second(received as f64, read.seconds, 0),
        "consume_mb_per_sec": per_second(read.bytes as f64 / 1e6, read.seconds, 1),
        "broker_cpu_us_per_record": us_per(between.0.zip(before.0).map(|(b, a)| b - a), produced.delivered),
        "broker_cpu_us_per_record_read": us_per(after.0.zip(between.0).map(|(b, a)| b - a), received),
        "client_cpu_us_per_record": us_per(Some(between.1 - before.1), produced.delivered),
        "client_cpu_us_per_record_read": us_per(Some(after.1 - between.1), received),
    });
    let mut verified =
        produced.failed == 0 && produced.delivered == count && read.tally.holds_exactly(count);
    if args.rate > 0 {
        settle().await?;
        let paced = Phase {
            topic: latency_topic.to_owned(),
            ..phase.clone()
        };
        let (latency, ok) =
            kafka_latency(paced, args.rate, args.latency_secs, args.latency_linger_ms).await?;
        out["latency_rate"] = json!(args.rate);
        out["latency_ms"] = latency;
        verified &= ok;
    }
    out["verified"] = json!(verified);
    Ok(out)
}

/// The latency phase: a consumer reading live while a producer sends at `rate`
/// for `secs`: the latency percentiles, and whether each record arrived once.
async fn kafka_latency(
    phase: Phase,
    rate: u64,
    secs: u64,
    linger_ms: u64,
) -> anyhow::Result<(Value, bool)> {
    let count = rate * secs;
    let done = Arc::new(AtomicBool::new(false));
    let (ready, is_ready) = std::sync::mpsc::channel();
    let reader = tokio::task::spawn_blocking({
        let (phase, done) = (phase.clone(), done.clone());
        move || {
            phase.read(count, &done, move || {
                let _ = ready.send(());
            })
        }
    });
    let produced = blocking(move || {
        let linger = linger_ms.to_string();
        phase.produce(count, rate, &[("linger.ms", &linger)], Some(is_ready))
    })
    .await;
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let read = reader.await.context("the reader panicked")??;
    let produced = produced?;
    let ok = produced.failed == 0 && read.tally.holds_exactly(count);
    Ok((percentiles(&read.latency), ok))
}

/// The Java client's consumer over the records the Kafka phase produced, from the
/// first record (`java.rs`).
#[allow(clippy::cast_precision_loss)] // counts and seconds of a benchmark fit an f64
async fn java_phase(
    args: &KafkaArgs,
    jars: &Path,
    topic: &str,
    expected: u64,
) -> anyhow::Result<Value> {
    let before = cpu(args.pid)?;
    let read = blocking({
        let (jars, bootstrap, topic) = (jars.to_owned(), args.bootstrap.clone(), topic.to_owned());
        move || java::read(&jars, &bootstrap, &topic, expected)
    })
    .await?;
    let after = cpu(args.pid)?;
    let us_per = |seconds: f64| round(seconds * 1e6 / read.records.max(1) as f64, 2);
    Ok(json!({
        "consumed": read.records,
        "consume_records_per_sec": per_second(read.records as f64, read.seconds, 0),
        "consume_mb_per_sec": per_second(read.bytes as f64 / 1e6, read.seconds, 1),
        "broker_cpu_us_per_record_read": after.0.zip(before.0).map(|(a, b)| us_per(a - b)),
        "client_cpu_us_per_record_read": us_per(read.cpu_seconds),
        "verified": read.holds_exactly(expected),
    }))
}

/// The same phases over weir's AMQP stream path: publish with confirms, read from
/// the first record, then publish at `--rate` with a reader live.
#[allow(clippy::cast_precision_loss)] // record sizes fit an f64
async fn amqp_phases(args: &KafkaArgs, url: &str, stream: &str) -> anyhow::Result<Value> {
    let run = |producers, readers, rate, duration| StreamRun {
        url: url.to_owned(),
        stream: stream.to_owned(),
        producers,
        readers,
        size: args.size,
        count: args.count,
        rate,
        duration,
        pid: args.pid,
        json: args.json,
        compare: CompareArgs {
            url: None,
            pid: None,
            rounds: 1,
        },
    };
    let produced = measure_stream(run(1, 0, 0, None)).await?;
    let read = measure_stream(run(0, 1, 0, None)).await?;
    let records_per_sec = |r: &Value, key: &str| r[key].as_f64().unwrap_or(0.0);
    let mb = |records_per_sec: f64| round(records_per_sec * args.size as f64 / 1e6, 1);
    let publish = records_per_sec(&produced, "publish_msgs_per_sec");
    let consume = records_per_sec(&read, "consume_msgs_per_sec");
    let mut out = json!({
        "produce_records_per_sec": publish,
        "produce_mb_per_sec": mb(publish),
        "consume_records_per_sec": consume,
        "consume_mb_per_sec": mb(consume),
        "broker_cpu_us_per_record": produced["broker_cpu_us_per_message"],
        "broker_cpu_us_per_record_read": read["broker_cpu_us_per_message"],
        "client_cpu_us_per_record": produced["client_cpu_us_per_message"],
        "client_cpu_us_per_record_read": read["client_cpu_us_per_message"],
    });
    let mut verified = produced["verified"] == json!(true) && read["verified"] == json!(true);
    if args.rate > 0 {
        settle().await?;
        let paced = measure_stream(run(1, 1, args.rate, Some(args.latency_secs))).await?;
        out["latency_rate"] = json!(args.rate);
        out["latency_ms"] = paced["latency_ms"].clone();
        verified &= paced["verified"] == json!(true);
    }
    if !args.keep {
        let mut client = crate::amqp_wire::Client::connect(url).await?;
        client.delete_queue(stream).await?;
        client.close().await;
    }
    out["verified"] = json!(verified);
    Ok(out)
}

/// The same phases over weir's HTTP stream path (`weir bench stream`: JSON
/// batches of 1,000 records from one appender, then the replay; then one record
/// per request at `--rate` with long-polling readers).
async fn http_phases(args: &KafkaArgs, stream: &str) -> anyhow::Result<Value> {
    let partitions = u32::try_from(args.partitions).unwrap_or(1);
    let http = StreamArgs::http_path(
        args.server.clone(),
        stream.to_owned(),
        (partitions, args.count, args.size),
        (args.keep, args.pid),
    );
    let r = measure_http(&http, stream).await?;
    let mut out = json!({
        "produce_records_per_sec": r["append_records_per_sec"],
        "produce_mb_per_sec": r["append_mb_per_sec"],
        "consume_records_per_sec": r["replay_records_per_sec"],
        "consume_mb_per_sec": r["replay_mb_per_sec"],
        "broker_cpu_us_per_record": r["broker_cpu_us_per_record"],
    });
    // `measure_http` fails unless the replay read back every record.
    let mut verified = true;
    if args.rate > 0 {
        settle().await?;
        let (latency, ok) =
            measure_http_latency(&http, stream, (args.rate, args.latency_secs)).await?;
        out["latency_rate"] = json!(args.rate);
        out["latency_ms"] = latency;
        verified &= ok;
    }
    out["verified"] = json!(verified);
    Ok(out)
}

/// Writes out every dirty page of the machine (sync(2)) before a latency phase,
/// so that the writeback of the megabytes an earlier phase appended does not land
/// in the middle of it and slow its syncs.
async fn settle() -> anyhow::Result<()> {
    blocking(|| {
        rustix::fs::sync();
        Ok(())
    })
    .await
}

/// CPU seconds so far: the broker's (with its pid) and this process's.
fn cpu(pid: Option<u32>) -> anyhow::Result<(Option<f64>, f64)> {
    Ok((
        pid.map(process_cpu_seconds).transpose()?,
        process_cpu_seconds(std::process::id())?,
    ))
}

/// `f` on a thread of its own (librdkafka's calls block).
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .context("a benchmark thread panicked")?
}

/// `amount / seconds`, rounded; 0 when nothing was timed.
fn per_second(amount: f64, seconds: f64, decimals: i32) -> f64 {
    if seconds > 0.0 {
        round(amount / seconds, decimals)
    } else {
        0.0
    }
}

/// librdkafka's admin client: topics deleted and made anew.
struct Admin(AdminClient<DefaultClientContext>);

impl Admin {
    fn new(phase: &Phase) -> anyhow::Result<Admin> {
        let config = phase.config(&[]);
        Ok(Admin(config.create().context("a librdkafka admin client")?))
    }

    /// Deletes `topics` (those there are) and creates them with `partitions`.
    async fn recreate(&self, topics: &[&str], partitions: i32) -> anyhow::Result<()> {
        self.delete(topics).await?;
        let new: Vec<NewTopic<'_>> = topics
            .iter()
            .map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(1)))
            .collect();
        for result in self
            .0
            .create_topics(&new, &AdminOptions::new())
            .await
            .context("CreateTopics")?
        {
            result.map_err(|(topic, code)| anyhow::anyhow!("creating {topic}: {code}"))?;
        }
        Ok(())
    }

    /// Deletes `topics`; one that does not exist is no error.
    async fn delete(&self, topics: &[&str]) -> anyhow::Result<()> {
        for result in self
            .0
            .delete_topics(topics, &AdminOptions::new())
            .await
            .context("DeleteTopics")?
        {
            match result {
                Ok(_) | Err((_, rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition)) => {}
                Err((topic, code)) => anyhow::bail!("deleting {topic}: {code}"),
            }
        }
        Ok(())
    }
}

/// The side-by-side table: one column per path run, and Kafka's ratio to each.
fn print_table(report: &Value) {
    let paths: Vec<&str> = ["kafka", "java", "amqp", "http"]
        .into_iter()
        .filter(|p| !report[*p].is_null())
        .collect();
    let figures = [
        ("produce records/s", "/produce_records_per_sec", true),
        ("produce MB/s", "/produce_mb_per_sec", true),
        ("consume records/s", "/consume_records_per_sec", true),
        ("consume MB/s", "/consume_mb_per_sec", true),
        ("latency p50 ms", "/latency_ms/p50", false),
        ("latency p99 ms", "/latency_ms/p99", false),
        ("latency p99.9 ms", "/latency_ms/p99_9", false),
        (
            "broker CPU µs/record produced",
            "/broker_cpu_us_per_record",
            false,
        ),
        (
            "broker CPU µs/record read",
            "/broker_cpu_us_per_record_read",
            false,
        ),
        (
            "client CPU µs/record produced",
            "/client_cpu_us_per_record",
            false,
        ),
        (
            "client CPU µs/record read",
            "/client_cpu_us_per_record_read",
            false,
        ),
        ("verified", "/verified", false),
    ];
    let mut columns = vec![("measure".to_owned(), Align::Left)];
    columns.extend(paths.iter().map(|p| ((*p).to_owned(), Align::Right)));
    columns.extend(
        paths
            .iter()
            .skip(1)
            .map(|p| (format!("kafka/{p}"), Align::Right)),
    );
    let rows: Vec<Vec<String>> = figures
        .iter()
        .map(|(name, pointer, ratio)| {
            let value = |p: &str| report[p].pointer(pointer).cloned().unwrap_or(Value::Null);
            let mut row = vec![(*name).to_owned()];
            row.extend(paths.iter().map(|p| match value(p).as_f64() {
                // Whole figures (records a second) without a trailing `.0`.
                Some(v) if v.fract() == 0.0 && v.abs() < 1e15 => format!("{v:.0}"),
                _ => show(&value(p)),
            }));
            row.extend(paths.iter().skip(1).map(|p| {
                match (value("kafka").as_f64(), value(p).as_f64()) {
                    (Some(k), Some(o)) if *ratio && o > 0.0 => format!("{:.2}", k / o),
                    _ => "-".to_owned(),
                }
            }));
            row
        })
        .collect();
    let columns: Vec<(&str, Align)> = columns.iter().map(|(n, a)| (n.as_str(), *a)).collect();
    print!("{}", table(&columns, &rows));
    if !report["java"].is_null() {
        println!("java: the same records read by the Java client's consumer (kafka-clients)");
    }
    if let Some(rate) = report["kafka"]["latency_rate"].as_u64() {
        println!("latency: {rate} records/s; the ratios are kafka / other, higher is better");
    }
}
