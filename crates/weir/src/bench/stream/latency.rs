//! The HTTP stream path's end-to-end latency, for `weir bench kafka --http`: a
//! stream made anew, one reader per partition long-polling from its first record,
//! and one record every 1/rate s, each in a `POST` of its own (up to 64 in flight,
//! as librdkafka sends with `linger.ms` 0). Each body starts with its sequence
//! number and the time it was due in hex, so each record is verified (read once)
//! and timed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::super::measure::{add, histogram, micros, percentiles};
use super::super::tally::Tally;
use super::{JSON, Records, StreamArgs, Target, target};

/// Hex digits of the sequence number and of the send time at the head of a body.
const FIELD: usize = 16;
/// Most POSTs in flight at once: more would each open a connection of their own
/// (a burst of thousands after a slow sync overflows the listen backlog, and a
/// dropped SYN is retried a second later), which no client sends on purpose.
const MAX_IN_FLIGHT: usize = 64;

/// Runs the phase on `name` at `rate` records a second for `secs`: the latency
/// percentiles, and whether each record arrived once.
pub(in crate::bench) async fn measure_http_latency(
    args: &StreamArgs,
    name: &str,
    (rate, secs): (u64, u64),
) -> anyhow::Result<(Value, bool)> {
    let target = target(args, name);
    target.send(reqwest::Method::DELETE, "", None).await?;
    let options = json!({"partitions": args.partitions}).to_string();
    target.send(reqwest::Method::PUT, "", Some(options)).await?;
    let count = rate.saturating_mul(secs);
    let epoch = Instant::now();
    let tally = Arc::new(Tally::new(count.max(1)));
    let done = Arc::new(AtomicBool::new(false));
    let mut readers = JoinSet::new();
    for p in 0..args.partitions {
        let (target, tally, done) = (target.clone(), tally.clone(), done.clone());
        readers.spawn(read_partition(target, p, epoch, tally, done));
    }
    let padding = "x".repeat(args.size.saturating_sub(2 * FIELD + 1));
    let mut sends = JoinSet::new();
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let started = Instant::now();
    for seq in 0..count {
        let due = seq
            .saturating_mul(1_000_000)
            .checked_div(rate)
            .map_or(started, |us| started + Duration::from_micros(us));
        tokio::time::sleep_until(due.into()).await;
        // Stamped when due, not when sent: a wait for room counts in the latency.
        let sent = micros(due - epoch);
        let body = json!({ "body": format!("{seq:016x} {sent:016x}{padding}") }).to_string();
        let room = in_flight.clone().acquire_owned().await?;
        let target = target.clone();
        sends.spawn(async move {
            let body = Some((JSON, bytes::Bytes::from(body)));
            let sent = target
                .send_bytes(reqwest::Method::POST, "/messages", body, false)
                .await;
            drop(room);
            sent
        });
        while let Some(sent) = sends.try_join_next() {
            sent??;
        }
    }
    while let Some(sent) = sends.join_next().await {
        sent??;
    }
    // Every record is appended and synced: the readers stop at their next empty read.
    done.store(true, Ordering::Relaxed);
    let mut latency = histogram();
    while let Some(read) = readers.join_next().await {
        add(&mut latency, &read??);
    }
    if !args.keep {
        target.send(reqwest::Method::DELETE, "", None).await?;
    }
    Ok((percentiles(&latency), tally.holds_exactly(count)))
}

/// Long-polls one partition from its first record until a read after `done`
/// comes back empty: each record's latency.
async fn read_partition(
    target: Target,
    partition: u32,
    epoch: Instant,
    tally: Arc<Tally>,
    done: Arc<AtomicBool>,
) -> anyhow::Result<Histogram<u64>> {
    let mut latency = histogram();
    let mut from = 0u64;
    loop {
        let finishing = done.load(Ordering::Relaxed);
        let wait_ms = if finishing { 200 } else { 1000 };
        let path =
            format!("/messages?partition={partition}&from={from}&max=1000&wait_ms={wait_ms}");
        let text = target.send_text(reqwest::Method::GET, &path, None).await?;
        let now = micros(epoch.elapsed());
        let read: Records<'_> = serde_json::from_str(&text)?;
        if read.messages.is_empty() && finishing {
            return Ok(latency);
        }
        for m in &read.messages {
            let body = m.body.as_deref().unwrap_or_default();
            let field = |at: usize| {
                body.get(at..at + FIELD)
                    .and_then(|hex| u64::from_str_radix(hex, 16).ok())
            };
            match (field(0), field(FIELD + 1)) {
                (Some(seq), Some(sent)) => {
                    tally.see(seq);
                    let _ = latency.record(now.saturating_sub(sent).max(1));
                }
                _ => tally.see_unnumbered(),
            }
            from = from.max(m.offset + 1);
        }
        from = from.max(read.next);
    }
}
