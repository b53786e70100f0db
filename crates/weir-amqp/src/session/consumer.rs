//! The consumer task: one per `basic.consume`, polling its queue for as many
//! messages as its prefetch credit and its connection's byte credit allow, and
//! handing them to its session as [`Event::Deliveries`] (the session gives them
//! their delivery tags and writes them).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_util::sync::CancellationToken;
use weir_broker::stream::ReadFrom;
use weir_broker::{BrokerError, Delivery, NackOptions, ReceiveRequest, Vhost};

use super::event::Event;
use super::outflow::Credit;

/// One long poll of a consumer.
const CONSUMER_WAIT_MS: u64 = 20_000;
/// A consumer's guess of a delivery's size before it has seen any (bytes on the
/// wire), which sizes its first request.
const FIRST_SIZE_GUESS: usize = 4096;
/// Most bytes (one message at least) a consumer takes in one long poll, which holds
/// no credit: an idle consumer must not hold its connection's credit from the
/// others, so what a long poll brings is charged once it arrives.
const LONG_POLL_BYTES: usize = 64 * 1024;
/// Bytes of framing a delivery costs besides its body and stored properties:
/// frame headers and ends, `basic.deliver`'s fields, the content header.
pub(super) const DELIVERY_FRAMING: usize = 96;
/// Most messages one consumer poll takes.
const CONSUMER_BATCH: u32 = 256;

/// When a consumer may poll: its channel's flow is on and, on a
/// single-active-consumer queue, it is the active one (`None`: no such turn, as
/// on a stream).
pub(super) struct Gates {
    pub(super) flow: watch::Receiver<bool>,
    pub(super) active: Option<watch::Receiver<bool>>,
}

/// Why [`Gates::open`] returned.
enum Gate {
    Open,
    /// The consumer was stopped.
    Stopped,
    /// It is no longer in the registry: its queue was deleted.
    Gone,
}

impl Gates {
    /// Waits until both are open.
    async fn open(&mut self, stop: &CancellationToken) -> Gate {
        let Gates { flow, active } = self;
        loop {
            if stop.is_cancelled() {
                return Gate::Stopped;
            }
            let turn = active.as_mut().is_none_or(|a| *a.borrow_and_update());
            if *flow.borrow_and_update() && turn {
                return Gate::Open;
            }
            let turn_changed = async {
                match active.as_mut() {
                    Some(a) => a.changed().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = stop.cancelled() => return Gate::Stopped,
                changed = flow.changed() => if changed.is_err() { return Gate::Stopped },
                changed = turn_changed => if changed.is_err() { return Gate::Gone },
            }
        }
    }
}

/// What a consumer task needs.
pub(super) struct ConsumerTask {
    pub(super) broker: Vhost,
    pub(super) queue: String,
    pub(super) channel: u16,
    /// The channel's generation (events of an older channel with the same number are
    /// dropped).
    pub(super) generation: u64,
    pub(super) consumer: String,
    /// Its own prefetch credit, and its channel's (`global` qos).
    pub(super) credit: Option<Arc<Semaphore>>,
    pub(super) shared: Option<Arc<Semaphore>>,
    /// Its connection's byte credit.
    pub(super) bytes: Arc<Credit>,
    pub(super) stop: CancellationToken,
    pub(super) gates: Gates,
    pub(super) events: mpsc::UnboundedSender<Event>,
    /// The broker lease of what it receives ([`crate::config::AmqpConfig::lease_ms`]).
    pub(super) lease_ms: u64,
    /// A queue's consumer, or a stream's and where it reads next.
    pub(super) source: Source,
}

/// What a consumer takes messages from.
pub(super) enum Source {
    /// A queue: leases.
    Queue,
    /// A stream (its partition 0): reads from here on; nothing is leased. With a
    /// filter, only the records it takes are delivered.
    /// With `tracked`, each delivery's receipt names its consumer tag and the
    /// offsets it settles ([`tracking_receipt`]) so that acks move the tracked
    /// offset; `covered` is the first offset read that no delivery settled yet
    /// (records the filter skipped are settled by the next delivery's ack).
    Stream {
        from: ReadFrom,
        filter: Option<StreamFilter>,
        tracked: Option<String>,
        covered: Option<u64>,
        rewind: Rewind,
    },
}

/// Where a stream consumer's task reads next instead of on (`u64::MAX`: on), set
/// by the session when deliveries the task read could not be written.
#[derive(Clone, Debug)]
pub(super) struct Rewind(Arc<std::sync::atomic::AtomicU64>);

impl Default for Rewind {
    fn default() -> Self {
        Rewind(Arc::new(std::sync::atomic::AtomicU64::new(u64::MAX)))
    }
}

impl Rewind {
    /// `messages` (a stream consumer's, in offset order) were not written: read
    /// them again, from the first offset they settle.
    pub(super) fn undelivered(&self, messages: &[Delivery]) {
        let first = messages.first().and_then(|d| {
            d.receipt
                .as_deref()
                .and_then(parse_tracking)
                .map(|(_, from, _)| from)
                .or_else(|| d.id.parse().ok())
        });
        if let Some(first) = first {
            self.0.fetch_min(first, std::sync::atomic::Ordering::AcqRel);
        }
    }

    /// The offset to read from again, if deliveries were not written.
    fn take(&self) -> Option<u64> {
        let at = self.0.swap(u64::MAX, std::sync::atomic::Ordering::AcqRel);
        (at != u64::MAX).then_some(at)
    }
}

/// The receipt of a delivery to a consumer with server-side offset tracking:
/// `NUL "track" NUL tag NUL from NUL offset` (no broker receipt starts with NUL),
/// where its ack settles offsets `from..=offset` (the records before it that the
/// consumer's filter skipped, and itself).
pub(super) fn tracking_receipt(tag: &str, from: u64, offset: u64) -> String {
    format!("\0track\0{tag}\0{from}\0{offset}")
}

/// The consumer tag and settled offsets (`from`, `offset`) of a
/// [`tracking_receipt`].
pub(super) fn parse_tracking(receipt: &str) -> Option<(&str, u64, u64)> {
    let rest = receipt.strip_prefix("\0track\0")?;
    let (rest, offset) = rest.rsplit_once('\0')?;
    let (tag, from) = rest.rsplit_once('\0')?;
    Some((tag, from.parse().ok()?, offset.parse().ok()?))
}

/// RabbitMQ's stream filtering (3.13): a consumer's `x-stream-filter` values and
/// `x-stream-match-unfiltered`, against each record's `x-stream-filter-value`
/// header. weir filters exactly (RabbitMQ's Bloom filter may let others through).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct StreamFilter {
    pub(super) values: Vec<String>,
    pub(super) match_unfiltered: bool,
}

impl StreamFilter {
    fn takes(&self, r: &weir_broker::stream::StreamRecord) -> bool {
        match r.headers.get("x-stream-filter-value") {
            Some(v) => self.values.iter().any(|f| f.as_bytes() == &v[..]),
            None => self.match_unfiltered,
        }
    }
}

/// One poll of `queue`: a lease of its messages, or a stream's next records.
async fn fetch(
    broker: &Vhost,
    queue: &str,
    source: &mut Source,
    request: ReceiveRequest,
) -> Result<Vec<Delivery>, BrokerError> {
    match source {
        Source::Queue => broker.receive(queue, request).await,
        Source::Stream {
            from,
            filter,
            tracked,
            covered,
            rewind,
        } => {
            if let Some(at) = rewind.take() {
                *from = ReadFrom::Offset(at);
                *covered = None;
            }
            let read = broker
                .read_stream(queue, 0, *from, request.max, request.wait_ms)
                .await?;
            *from = ReadFrom::Offset(read.next);
            let mut out = Vec::with_capacity(read.records.len());
            for r in &read.records {
                let start = *covered.get_or_insert(r.offset);
                if filter.as_ref().is_some_and(|f| !f.takes(r)) {
                    continue;
                }
                let mut d = crate::message::stream_delivery(r, queue);
                if let Some(tag) = tracked {
                    d.receipt = Some(tracking_receipt(tag, start, r.offset));
                }
                *covered = Some(r.offset + 1);
                out.push(d);
            }
            Ok(out)
        }
    }
}

/// Takes up to `want` permits (at least one, waiting for it); `None` once stopped.
async fn take_credit(sem: &Semaphore, want: u32, stop: &CancellationToken) -> Option<u32> {
    let first = tokio::select! {
        () = stop.cancelled() => return None,
        permit = sem.acquire() => permit,
    };
    first.ok()?.forget();
    let mut n = 1;
    while n < want {
        match sem.try_acquire() {
            Ok(p) => {
                p.forget();
                n += 1;
            }
            Err(_) => break,
        }
    }
    Some(n)
}

/// Takes as many messages' worth (up to [`CONSUMER_BATCH`]) of each prefetch
/// credit as is free, waiting for one of each; both limits apply, so each gives
/// back what the other does not allow. `None` once stopped.
async fn take_prefetch(sems: &[Arc<Semaphore>], stop: &CancellationToken) -> Option<u32> {
    let mut taken = [0u32; 2];
    let mut want = CONSUMER_BATCH;
    for (sem, taken) in sems.iter().zip(&mut taken) {
        let n = take_credit(sem, want, stop).await?;
        *taken = n;
        want = want.min(n);
    }
    for (sem, n) in sems.iter().zip(&taken) {
        sem.add_permits((n - want) as usize);
    }
    Some(want)
}

/// Waits for room on the connection (one message of `size` bytes), then sizes a
/// consumer's next poll for at most `want` messages: `(max, wait_ms, held)`, where
/// `held` is the credit it holds. After a poll that found the queue empty
/// (`drained`) it is a long poll that holds none. `None` once stopped.
async fn next_poll(
    credit: &Credit,
    size: usize,
    drained: bool,
    want: u32,
    stop: &CancellationToken,
) -> Option<(u32, u64, usize)> {
    let most = if drained {
        size
    } else {
        size.saturating_mul(want as usize)
    };
    let held = tokio::select! {
        () = stop.cancelled() => return None,
        held = credit.acquire(size, most) => held,
    };
    let (max, wait_ms, held) = if drained {
        credit.release(held);
        (LONG_POLL_BYTES / size, CONSUMER_WAIT_MS, 0)
    } else {
        (held / size, 0, held)
    };
    let max = u32::try_from(max).unwrap_or(u32::MAX).clamp(1, want);
    Some((max, wait_ms, held))
}

/// A consumer: takes from its queue as many messages as its prefetch and its
/// connection's byte credit allow, and hands them to the session.
///
/// Each round it first waits for room on the connection (one message's worth of
/// credit): this is where it stops while its client does not read, and its
/// messages stay in the queue. While the queue has messages it polls without
/// waiting, holding the credit of what it asks for (a guessed size per message).
/// Once the queue ran dry it long-polls holding no credit, for at most
/// [`LONG_POLL_BYTES`] (one message at least), and charges what arrives: idle
/// consumers hold none of the credit their connection's busy ones need.
pub(super) async fn consume_loop(mut t: ConsumerTask) {
    let sems: Vec<Arc<Semaphore>> = [t.credit.clone(), t.shared.clone()]
        .into_iter()
        .flatten()
        .collect();
    // What one delivery takes on the wire, as far as this consumer can tell: the
    // largest of its last batch, or less and less of the earlier guess.
    let mut size = FIRST_SIZE_GUESS;
    // The last poll found the queue empty.
    let mut drained = false;
    loop {
        match t.gates.open(&t.stop).await {
            Gate::Open => {}
            Gate::Stopped => return,
            Gate::Gone => {
                // Its queue was deleted while it waited its turn.
                let _ = t.events.send(Event::ConsumerGone {
                    channel: t.channel,
                    generation: t.generation,
                    consumer: t.consumer.clone(),
                });
                return;
            }
        }
        let Some(want) = take_prefetch(&sems, &t.stop).await else {
            return;
        };
        let Some((max, wait_ms, held)) = next_poll(&t.bytes, size, drained, want, &t.stop).await
        else {
            return;
        };
        for sem in &sems {
            sem.add_permits((want - max) as usize);
        }
        let request = ReceiveRequest {
            max,
            wait_ms,
            visibility_timeout_ms: Some(t.lease_ms),
        };
        let (queue, consumer) = (&t.queue, &t.consumer);
        tracing::trace!(%queue, %consumer, max, wait_ms, held, "consumer polls");
        let got = tokio::select! {
            () = t.stop.cancelled() => {
                // A cancelled consumer's connection may go on: its credit goes back.
                t.bytes.release(held);
                return;
            }
            got = fetch(&t.broker, queue, &mut t.source, request) => got,
        };
        match got {
            Ok(messages) => {
                tracing::trace!(%queue, %consumer, got = messages.len(), "consumer poll answered");
                let unused = max as usize - messages.len();
                for sem in &sems {
                    sem.add_permits(unused);
                }
                drained = messages.len() < max as usize;
                let sizes = messages.iter().map(|d| wire_size(d) + consumer.len());
                let bytes: usize = sizes.clone().sum();
                if let Some(largest) = sizes.max() {
                    size = largest.max(size - size / 4).max(1);
                }
                t.bytes.settle(held, bytes);
                if messages.is_empty() {
                    continue;
                }
                if let Err(mpsc::error::SendError(Event::Deliveries { messages, .. })) =
                    t.events.send(Event::Deliveries {
                        channel: t.channel,
                        generation: t.generation,
                        consumer: consumer.clone(),
                        queue: queue.clone(),
                        messages,
                        bytes,
                    })
                {
                    // The session is gone: these go back now, not after the lease.
                    requeue(&t.broker, queue, &messages).await;
                    return;
                }
            }
            Err(BrokerError::NotFound { .. }) => {
                let _ = t.events.send(Event::ConsumerGone {
                    channel: t.channel,
                    generation: t.generation,
                    consumer: t.consumer.clone(),
                });
                return;
            }
            Err(e) => {
                tracing::debug!(%queue, error = %e, "an AMQP consumer's poll failed; retrying");
                t.bytes.release(held);
                for sem in &sems {
                    sem.add_permits(max as usize);
                }
                tokio::select! {
                    () = t.stop.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
            }
        }
    }
}

/// About what a delivery takes on the wire (its consumer tag aside): body, stored
/// properties (exchange and routing key included), headers of a message sent over
/// HTTP, and framing.
pub(super) fn wire_size(d: &Delivery) -> usize {
    let headers: usize = d.headers.iter().map(|(k, v)| k.len() + v.len() + 8).sum();
    d.body.len() + d.properties.as_ref().map_or(0, Bytes::len) + headers + DELIVERY_FRAMING
}

/// Puts deliveries back in their queue at once (their consumer cannot take them).
pub(super) async fn requeue(broker: &Vhost, queue: &str, messages: &[Delivery]) {
    let receipts: Vec<String> = messages.iter().filter_map(|d| d.receipt.clone()).collect();
    if receipts.is_empty() {
        return;
    }
    let options = NackOptions {
        requeue: true,
        delay_ms: Some(0),
    };
    if let Err(e) = broker.nack(queue, receipts, options).await {
        tracing::debug!(%queue, error = %e, "requeueing undelivered AMQP messages failed");
    }
}
