//! The load: producer and consumer tasks over [`Shared`] counters, driven to the
//! end of the run (a count or a deadline), the first failure, or Ctrl-C, with the
//! progress bar refreshed meanwhile. Each task keeps its own latency histograms;
//! [`drive`] merges them.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use hdrhistogram::Histogram;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::args::HttpArgs;
use super::bodies::{filler, numbers, render_batch};
use crate::bench::measure::{add, histogram, micros};
use crate::bench::tally::Tally;
use crate::client::api::{Api, Messages, Settle};

/// Consumers' long poll: short, so they notice the end of the run quickly.
const RECEIVE_WAIT_MS: u64 = 1_000;

/// In count mode, consumers give up when nothing arrives for this long after the
/// producers finished (messages lost, or taken by someone else).
const DRAIN_IDLE: Duration = Duration::from_secs(10);

/// When the run ends.
#[derive(Clone, Copy, Debug)]
pub(super) enum Limit {
    /// After this many messages are sent and (with consumers) acked.
    Count(u64),
    /// When this much time has passed, for producers and consumers alike.
    Until(Instant),
}

/// State the producer and consumer tasks share.
pub(super) struct Shared {
    pub(super) api: Api,
    pub(super) queue: String,
    pub(super) size: usize,
    pub(super) batch: u32,
    pub(super) limit: Limit,
    /// When the run started; body stamps count from here.
    pub(super) start: Instant,
    /// Count mode: messages no producer has claimed yet.
    pub(super) unclaimed: AtomicU64,
    pub(super) sent: AtomicU64,
    pub(super) acked: AtomicU64,
    /// The next sequence number to send.
    pub(super) next_seq: AtomicU64,
    /// What the consumers received, for the run's verification.
    pub(super) tally: Tally,
    /// Producers still running.
    pub(super) producing: AtomicU64,
    /// Microseconds after `start` of the last send and of the last ack.
    pub(super) last_send_us: AtomicU64,
    pub(super) last_ack_us: AtomicU64,
    /// Cancelled by Ctrl-C or by the first task that fails.
    pub(super) stop: CancellationToken,
    /// Set by Ctrl-C: the report covers a partial run.
    pub(super) interrupted: AtomicBool,
}

impl Shared {
    pub(super) fn now_us(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX)
    }
}

/// Latencies of a run, merged over its tasks.
pub(super) struct Latencies {
    pub(super) send: Histogram<u64>,
    pub(super) round_trip: Histogram<u64>,
    pub(super) end_to_end: Histogram<u64>,
}

/// Runs the producers and consumers to the end (or the first failure, or Ctrl-C)
/// while refreshing the progress bar.
pub(super) async fn drive(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_never_exceed_the_pool() {
        let pool = AtomicU64::new(250);
        assert_eq!(claim(&pool, 100), 100);
        assert_eq!(claim(&pool, 100), 100);
        assert_eq!(claim(&pool, 100), 50);
        assert_eq!(claim(&pool, 100), 0);
    }
}
