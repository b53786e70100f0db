//! `weir bench connections`: opens many idle AMQP connections that keep up
//! heartbeats, and reports what they cost the broker in memory (its `VmRSS` from
//! /proc, given its PID) and whether every one stayed open.
//!
//! Each connection logs in, opens a channel, then only sends a heartbeat every half
//! interval and reads the broker's. A connection the broker closed (a missed
//! heartbeat, a limit) counts as dropped.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::json;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use super::measure::status_bytes;
use crate::amqp_wire::{Client, HEARTBEAT};
use crate::client::table::{Align, table};

/// Arguments of `weir bench connections`.
#[derive(clap::Args, Debug)]
pub struct ConnectionsArgs {
    /// The broker's AMQP URL.
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    url: String,
    /// Connections to open.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    count: u32,
    /// Heartbeat interval asked for, seconds.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u16).range(1..))]
    heartbeat: u16,
    /// How long to hold them open once all are, seconds (several heartbeats).
    #[arg(long, default_value_t = 20)]
    hold: u64,
    /// The broker's process id: report its memory per connection.
    #[arg(long)]
    pid: Option<u32>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// PEM file of the CA certificates that an `amqps://` URL trusts.
    #[arg(long, value_name = "FILE")]
    tls_ca: Option<std::path::PathBuf>,
}

/// Connections opened at once while setting up.
const OPENING_AT_ONCE: usize = 200;

/// Runs `weir bench connections`.
#[allow(clippy::cast_precision_loss)] // byte counts of a benchmark fit an f64
pub async fn run(args: ConnectionsArgs) -> anyhow::Result<ExitCode> {
    if let Some(ca) = &args.tls_ca {
        crate::amqp_wire::trust(ca)?;
    }
    let rss = |pid: Option<u32>| pid.map(|p| status_bytes(p, "VmRSS:")).transpose();
    let before = rss(args.pid)?;
    let opened = Arc::new(AtomicU64::new(0));
    let dropped = Arc::new(AtomicU64::new(0));
    let (stop_tx, stop) = watch::channel(false);
    let opening = Arc::new(Semaphore::new(OPENING_AT_ONCE));
    let mut tasks = JoinSet::new();
    let started = Instant::now();
    for _ in 0..args.count {
        let permit = opening.clone().acquire_owned().await?;
        let (url, opened, dropped, mut stop) = (
            args.url.clone(),
            opened.clone(),
            dropped.clone(),
            stop.clone(),
        );
        let heartbeat = args.heartbeat;
        tasks.spawn(async move {
            let client = Client::connect_with(&url, heartbeat).await;
            drop(permit);
            let client = client?;
            opened.fetch_add(1, Ordering::Relaxed);
            if !hold(client, heartbeat, &mut stop).await {
                dropped.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(())
        });
    }
    // Every connection is open (or failed) once all permits are back.
    let _all = opening.acquire_many(OPENING_AT_ONCE as u32).await?;
    let open_s = started.elapsed().as_secs_f64();
    let after_open = rss(args.pid)?;
    tokio::time::sleep(Duration::from_secs(args.hold)).await;
    let after_hold = rss(args.pid)?;
    let _ = stop_tx.send(true);
    let mut failed = 0u64;
    let mut first_error = None;
    while let Some(done) = tasks.join_next().await {
        if let Err(e) = done.context("a connection task panicked")? {
            failed += 1;
            first_error.get_or_insert(e);
        }
    }
    let opened = opened.load(Ordering::Relaxed);
    let dropped = dropped.load(Ordering::Relaxed);
    let per_connection = match (before, after_hold) {
        (Some(b), Some(a)) if opened > 0 => Some(a.saturating_sub(b) as f64 / opened as f64),
        _ => None,
    };
    let ok = opened == u64::from(args.count) && dropped == 0;
    let report = json!({
        "url": args.url,
        "connections": args.count,
        "opened": opened,
        "failed_to_open": failed,
        "dropped_while_held": dropped,
        "heartbeat_s": args.heartbeat,
        "hold_s": args.hold,
        "open_seconds": (open_s * 100.0).round() / 100.0,
        "broker_rss_bytes": {"before": before, "all_open": after_open, "after_hold": after_hold},
        "broker_bytes_per_connection": per_connection.map(f64::round),
        "first_error": first_error.map(|e| format!("{e:#}")),
        "all_held": ok,
    });
    if args.json {
        println!("{report}");
    } else {
        print_table(&report);
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Keeps one connection alive with heartbeats until `stop`; false if the broker
/// closed it first.
async fn hold(mut client: Client, heartbeat: u16, stop: &mut watch::Receiver<bool>) -> bool {
    let mut ticks = tokio::time::interval(Duration::from_millis(u64::from(heartbeat) * 500));
    loop {
        tokio::select! {
            _ = stop.changed() => return true,
            _ = ticks.tick() => {
                if client.writer.write_all(HEARTBEAT).await.is_err() {
                    return false;
                }
            }
            frame = client.reader.frame() => {
                if frame.is_err() {
                    return false;
                }
            }
        }
    }
}

#[allow(clippy::cast_precision_loss)] // byte counts of a benchmark fit an f64
fn print_table(report: &serde_json::Value) {
    let mb = |v: &serde_json::Value| {
        v.as_u64()
            .map_or("-".to_owned(), |b| format!("{:.1}", b as f64 / 1e6))
    };
    let rss = &report["broker_rss_bytes"];
    let rows = vec![
        vec![
            "connections opened / asked".to_owned(),
            format!("{} / {}", report["opened"], report["connections"]),
        ],
        vec![
            "opening took s".to_owned(),
            report["open_seconds"].to_string(),
        ],
        vec![
            format!(
                "dropped during {} s of heartbeats every {} s",
                report["hold_s"], report["heartbeat_s"]
            ),
            report["dropped_while_held"].to_string(),
        ],
        vec![
            "broker RSS MB before / all open / after hold".to_owned(),
            format!(
                "{} / {} / {}",
                mb(&rss["before"]),
                mb(&rss["all_open"]),
                mb(&rss["after_hold"])
            ),
        ],
        vec![
            "broker KB per connection".to_owned(),
            report["broker_bytes_per_connection"]
                .as_f64()
                .map_or("-".to_owned(), |b| format!("{:.1}", b / 1024.0)),
        ],
    ];
    print!(
        "{}",
        table(&[("measure", Align::Left), ("value", Align::Right)], &rows)
    );
    if let Some(e) = report["first_error"].as_str() {
        println!("first error: {e}");
    }
}
