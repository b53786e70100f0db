//! The three Kafka phases of `weir bench kafka`, each on librdkafka's own threads
//! plus one of ours (librdkafka's calls block): a producer sending as fast as
//! librdkafka takes records, a consumer reading the topic from its first record,
//! and a producer paced at a fixed rate with a consumer reading live, for the
//! end-to-end latency.
//!
//! Every record's value starts with its sequence number and its send time (µs
//! since the run's epoch, one clock: producer and consumer are this process), so
//! each phase is verified (each record read once, [`Tally`]) and the latency is
//! measured per record.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use hdrhistogram::Histogram;
use rdkafka::ClientConfig;
use rdkafka::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message as _;
use rdkafka::producer::ThreadedProducer;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer as _, ProducerContext};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use super::super::measure::{histogram, micros};
use super::super::tally::Tally;

/// The consumer setting the bench lowers (see `Phase::consumer`).
const FETCH_QUEUE_BACKOFF: &str = "fetch.queue.backoff.ms";

/// Sequence number and send time at the head of every value.
pub(super) const HEADER_LEN: usize = 16;
/// A reader gives up when nothing arrives for this long (records lost, or the
/// broker gone): the phase then fails its verification instead of hanging.
const IDLE: Duration = Duration::from_secs(10);

/// What a phase is given: where, which topic, and the clients' settings.
#[derive(Clone)]
pub(super) struct Phase {
    /// Settings of every client (bootstrap servers, `-X` properties).
    pub(super) common: Vec<(String, String)>,
    /// Settings of the producers only (acks, compression, idempotence).
    pub(super) producer: Vec<(String, String)>,
    pub(super) topic: String,
    pub(super) partitions: i32,
    pub(super) size: usize,
    pub(super) epoch: Instant,
}

/// What the producer's delivery reports said.
#[derive(Default)]
struct Deliveries {
    ok: AtomicU64,
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

/// The producer's context: counts the delivery reports librdkafka's thread hands it.
struct Counting(Arc<Deliveries>);

impl ClientContext for Counting {}

impl ProducerContext for Counting {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, (): ()) {
        match result {
            Ok(_) => {
                self.0.ok.fetch_add(1, Ordering::Relaxed);
            }
            Err((e, _)) => {
                self.0.failed.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut first) = self.0.first_error.lock() {
                    first.get_or_insert_with(|| e.to_string());
                }
            }
        }
    }
}

/// What a producer phase reports.
pub(super) struct Produced {
    pub(super) delivered: u64,
    pub(super) failed: u64,
    pub(super) first_error: Option<String>,
    pub(super) seconds: f64,
}

/// What a reader reports.
pub(super) struct Read {
    pub(super) tally: Tally,
    pub(super) bytes: u64,
    pub(super) seconds: f64,
    pub(super) latency: Histogram<u64>,
}

impl Phase {
    /// The settings of every client, then `extra`.
    pub(super) fn config(&self, extra: &[(String, String)]) -> ClientConfig {
        let mut config = ClientConfig::new();
        for (key, value) in self.common.iter().chain(extra) {
            config.set(key, value);
        }
        config
    }

    fn producer(
        &self,
        extra: &[(&str, &str)],
    ) -> anyhow::Result<(ThreadedProducer<Counting>, Arc<Deliveries>)> {
        let mut settings = self.producer.clone();
        settings.extend(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        let deliveries = Arc::new(Deliveries::default());
        let producer = self
            .config(&settings)
            .create_with_context(Counting(deliveries.clone()))
            .context("a librdkafka producer")?;
        Ok((producer, deliveries))
    }

    fn consumer(&self) -> anyhow::Result<BaseConsumer> {
        let group = format!("weir-bench-{}", std::process::id());
        let mut settings = vec![
            ("group.id", group.as_str()),
            ("enable.auto.commit", "false"),
            ("enable.partition.eof", "false"),
        ];
        // librdkafka stops fetching a partition whose prefetch queue passed
        // `queued.min.messages` (100,000) and looks again only after
        // `fetch.queue.backoff.ms`, 1 s by default: a broker that serves faster
        // than the application reads makes the reader idle for most of each second,
        // and the figure would measure that timer, not the broker. Its documented
        // remedy; `-X fetch.queue.backoff.ms=1000` measures the default.
        if !self.common.iter().any(|(k, _)| k == FETCH_QUEUE_BACKOFF) {
            settings.push((FETCH_QUEUE_BACKOFF, "10"));
        }
        let settings: Vec<(String, String)> = settings
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let consumer: BaseConsumer = self
            .config(&settings)
            .create()
            .context("a librdkafka consumer")?;
        let mut from_first = TopicPartitionList::new();
        for p in 0..self.partitions {
            from_first.add_partition_offset(&self.topic, p, Offset::Beginning)?;
        }
        consumer
            .assign(&from_first)
            .context("assigning the partitions")?;
        Ok(consumer)
    }

    /// The value of record `seq`: its number, the time now, then padding.
    fn value(&self, buf: &mut [u8], seq: u64) {
        buf[..8].copy_from_slice(&seq.to_le_bytes());
        buf[8..16].copy_from_slice(&micros(self.epoch.elapsed()).to_le_bytes());
    }

    /// Sends `count` records, at `rate` a second (0: as fast as librdkafka takes
    /// them), and waits for every delivery report. `extra`: settings of this phase.
    /// With `reading`, a warm-up record (no value) goes first, and the records only
    /// once the reader said it got it: then no record's latency includes the
    /// consumer's start (its offsets looked up, its first fetch).
    pub(super) fn produce(
        &self,
        count: u64,
        rate: u64,
        extra: &[(&str, &str)],
        reading: Option<std::sync::mpsc::Receiver<()>>,
    ) -> anyhow::Result<Produced> {
        let (producer, deliveries) = self.producer(extra)?;
        // The connection and the topic's metadata first, so that neither the rate
        // nor the first records' latency includes them.
        producer
            .client()
            .fetch_metadata(Some(&self.topic), Duration::from_secs(10))
            .context("the topic's metadata")?;
        if let Some(reading) = reading {
            producer
                .send(BaseRecord::<[u8], [u8]>::to(&self.topic))
                .map_err(|(e, _)| e)
                .context("producing the warm-up record")?;
            producer
                .flush(Duration::from_secs(30))
                .context("the warm-up record")?;
            reading
                .recv_timeout(IDLE)
                .context("the reader did not get the warm-up record")?;
            deliveries.ok.store(0, Ordering::Relaxed);
        }
        let mut buf = vec![0u8; self.size];
        let started = Instant::now();
        for seq in 0..count {
            if let Some(us) = seq.saturating_mul(1_000_000).checked_div(rate) {
                let due = started + Duration::from_micros(us);
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
            }
            self.value(&mut buf, seq);
            loop {
                match producer.send(BaseRecord::<[u8], [u8]>::to(&self.topic).payload(&buf)) {
                    Ok(()) => break,
                    // librdkafka's queue is full: its thread is sending; wait a little.
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                        std::thread::sleep(Duration::from_micros(200));
                    }
                    Err((e, _)) => return Err(e).context("producing"),
                }
            }
        }
        producer
            .flush(Duration::from_secs(120))
            .context("waiting for the delivery reports")?;
        let seconds = started.elapsed().as_secs_f64();
        let first_error = deliveries.first_error.lock().ok().and_then(|e| e.clone());
        Ok(Produced {
            delivered: deliveries.ok.load(Ordering::Relaxed),
            failed: deliveries.failed.load(Ordering::Relaxed),
            first_error,
            seconds,
        })
    }

    /// Reads every partition from its first record until `expected` records
    /// arrived, or none for [`IDLE`] once `done` says the producers finished.
    /// `ready` is called at the warm-up record (one without a value), which is
    /// not counted: records of the phase are never empty.
    pub(super) fn read(
        &self,
        expected: u64,
        done: &AtomicBool,
        ready: impl FnOnce(),
    ) -> anyhow::Result<Read> {
        let consumer = self.consumer()?;
        let mut ready = Some(ready);
        let tally = Tally::new(expected.max(1));
        let mut latency = histogram();
        let (mut bytes, mut first, mut last) = (0u64, None, Instant::now());
        loop {
            let done = done.load(Ordering::Relaxed);
            if done && (tally.received() >= expected || last.elapsed() > IDLE) {
                break;
            }
            let Some(message) = consumer.poll(Duration::from_millis(100)) else {
                continue;
            };
            let message = message.context("consuming")?;
            // (weir keeps a null value as an empty one.)
            if message.payload().is_none_or(<[u8]>::is_empty) {
                if let Some(ready) = ready.take() {
                    ready();
                }
                continue;
            }
            let now = Instant::now();
            first.get_or_insert(now);
            last = now;
            let value = message.payload().unwrap_or_default();
            bytes += value.len() as u64;
            if value.len() < HEADER_LEN {
                tally.see_unnumbered();
                continue;
            }
            let field =
                |at: usize| u64::from_le_bytes(value[at..at + 8].try_into().unwrap_or_default());
            tally.see(field(0));
            let sent = field(8);
            let _ = latency.record(micros(now - self.epoch).saturating_sub(sent).max(1));
        }
        let seconds = first.map_or(0.0, |f| (last - f).as_secs_f64());
        Ok(Read {
            tally,
            bytes,
            seconds,
            latency,
        })
    }
}
