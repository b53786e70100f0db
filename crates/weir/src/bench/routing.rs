//! `weir bench publish`: publishing through an exchange, for the cost of fan-out
//! and of routing among many bindings.
//!
//! It declares an exchange and `--queues` queues, binds them (fanout: every queue;
//! topic: `--bindings` patterns `k.<i>.*` spread over the queues, and each message
//! gets a key that matches exactly one of them), publishes `--count` messages of
//! `--size` bytes in batches from `--producers` tasks, and reports messages per
//! second, batch latency percentiles and the disk bytes the queues' logs and the
//! shared log grew by per message published.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::bail;
use serde_json::{Value, json};

use super::measure::{add, histogram, micros, percentiles};
use crate::client::ServerArgs;
use crate::client::api::Api;

/// Exchange types the benchmark can drive.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Every message to every queue.
    Fanout,
    /// Each message to the one queue whose pattern matches its key.
    Topic,
}

/// Arguments of `weir bench publish`.
#[derive(clap::Args, Debug)]
pub struct PublishArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Exchange type.
    #[arg(long, value_enum, default_value_t = Kind::Fanout)]
    kind: Kind,
    /// Queues bound to the exchange.
    #[arg(long, default_value_t = 10)]
    queues: u32,
    /// Topic only: how many bindings (patterns `k.<i>.*`), spread over the queues.
    #[arg(long, default_value_t = 10)]
    bindings: u32,
    /// Messages to publish.
    #[arg(long, default_value_t = 100_000)]
    count: u64,
    /// Messages per publish request.
    #[arg(long, default_value_t = 100)]
    batch: u64,
    /// Body size, bytes.
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Concurrent publishers.
    #[arg(long, default_value_t = 4)]
    producers: u32,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    /// Keep the exchange and queues afterwards.
    #[arg(long)]
    keep: bool,
}

/// Disk bytes of the queues' logs and of the shared log.
async fn disk_bytes(api: &Api, queues: &[String]) -> anyhow::Result<u64> {
    let mut total = api.broker().await?.body["body_log_bytes"]
        .as_u64()
        .unwrap_or(0);
    for q in queues {
        total += api.info(q).await?.body["stats"]["disk_bytes"]
            .as_u64()
            .unwrap_or(0);
    }
    Ok(total)
}

/// Runs the benchmark.
#[allow(clippy::too_many_lines, clippy::cast_precision_loss)] // one linear script; rates are approximate
pub async fn run(args: PublishArgs) -> anyhow::Result<ExitCode> {
    if args.queues == 0 || args.batch == 0 || args.producers == 0 {
        bail!("--queues, --batch and --producers must be at least 1");
    }
    let api = args.server.api()?;
    let prefix = format!("bench-pub-{}", std::process::id());
    let exchange = prefix.clone();
    let queues: Vec<String> = (0..args.queues).map(|i| format!("{prefix}-q{i}")).collect();
    let kind = match args.kind {
        Kind::Fanout => "fanout",
        Kind::Topic => "topic",
    };
    api.declare_exchange(&exchange, &json!({"type": kind}))
        .await?;
    for q in &queues {
        api.declare(q, &json!({})).await?;
    }
    let bindings: Vec<Value> = match args.kind {
        Kind::Fanout => queues
            .iter()
            .map(|q| json!({"source": exchange, "destination": q}))
            .collect(),
        Kind::Topic => (0..args.bindings)
            .map(|i| json!({"source": exchange, "destination": queues[(i % args.queues) as usize], "routing_key": format!("k.{i}.*")}))
            .collect(),
    };
    for chunk in bindings.chunks(5_000) {
        api.binding(true, &json!({"bindings": chunk})).await?;
    }
    let before = disk_bytes(&api, &queues).await?;
    let body = "x".repeat(args.size);
    let next = Arc::new(AtomicU64::new(0));
    let routed = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..args.producers {
        let (api, exchange, body, next, routed) = (
            api.clone(),
            exchange.clone(),
            body.clone(),
            next.clone(),
            routed.clone(),
        );
        let (count, batch, bindings, topic) = (
            args.count,
            args.batch,
            args.bindings.max(1),
            args.kind == Kind::Topic,
        );
        tasks.spawn(async move {
            let mut latency = histogram();
            loop {
                let first = next.fetch_add(batch, Ordering::Relaxed);
                if first >= count {
                    return Ok::<_, anyhow::Error>(latency);
                }
                let n = batch.min(count - first);
                let messages: Vec<Value> = (first..first + n)
                    .map(|i| {
                        let key = if topic {
                            format!("k.{}.x", i % u64::from(bindings))
                        } else {
                            String::new()
                        };
                        json!({"routing_key": key, "body": body})
                    })
                    .collect();
                let t = Instant::now();
                let answer = api
                    .publish(&exchange, &json!({"messages": messages}), false)
                    .await?
                    .body;
                latency.saturating_record(micros(t.elapsed()));
                routed.fetch_add(answer["routed"].as_u64().unwrap_or(0), Ordering::Relaxed);
            }
        });
    }
    let mut latency = histogram();
    while let Some(joined) = tasks.join_next().await {
        add(&mut latency, &joined??);
    }
    let seconds = started.elapsed().as_secs_f64();
    let after = disk_bytes(&api, &queues).await?;
    let (rate, per_message, copies) = (
        args.count as f64 / seconds,
        (after - before) as f64 / args.count as f64,
        routed.load(Ordering::Relaxed) as f64 / args.count as f64,
    );
    let ms = |q: f64| latency.value_at_quantile(q) as f64 / 1000.0;
    let result = json!({
        "kind": kind, "queues": args.queues, "bindings": if args.kind == Kind::Topic { args.bindings } else { args.queues },
        "count": args.count, "batch": args.batch, "size": args.size, "producers": args.producers,
        "seconds": seconds, "msgs_per_sec": rate, "copies_per_message": copies,
        "disk_bytes_per_message": per_message,
        "latency_ms": percentiles(&latency),
    });
    if args.json {
        println!("{result}");
    } else {
        println!(
            "weir bench publish: {kind} exchange, {} queue(s), {} binding(s), {} x {} B in batches of {}, {} producer(s)",
            args.queues, result["bindings"], args.count, args.size, args.batch, args.producers
        );
        println!(
            "{rate:.0} msg/s ({:.1} MB/s of bodies), {copies:.2} queue copies per message, {per_message:.0} disk bytes per message, batch latency p50 {:.2} ms p99 {:.2} ms",
            rate * args.size as f64 / 1e6,
            ms(0.5),
            ms(0.99)
        );
    }
    if !args.keep {
        for q in &queues {
            api.delete(q).await?;
        }
        api.delete_exchange(&exchange, false).await?;
    }
    Ok(ExitCode::SUCCESS)
}
