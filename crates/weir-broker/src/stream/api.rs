//! The broker's stream API, with broker-wide names (front ends call it through
//! [`crate::Vhost`]): declare, delete, list, append, read.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use weir_log::{Header, LogStore, MessageLog, NewRecord};

use super::read::{
    MAX_READ_BYTES, check_read, read_partition, read_partition_stored, start_offset,
};
use super::{
    PartitionInfo, Placed, ReadFrom, StoredRead, StreamInfo, StreamOptions, StreamRead,
    StreamRecordIn, StreamRef, partition_for,
};
use crate::api::{Declared, validate_name};
use crate::broker::{Broker, closing};
use crate::error::{BrokerError, Kind, Limit, Result};

fn not_found(name: &str) -> BrokerError {
    BrokerError::NotFound {
        kind: Kind::Stream,
        name: name.to_owned(),
    }
}

impl<S: LogStore> Broker<S> {
    pub(super) fn stream(&self, name: &str) -> Result<Arc<StreamRef<S::Log>>> {
        if self.inner.closing.load(Ordering::Acquire) {
            return Err(closing());
        }
        crate::locks::read(&self.inner.streams)
            .get(name)
            .cloned()
            .ok_or_else(|| not_found(name))
    }

    /// Declares a stream: creates it, or confirms an identical one exists.
    ///
    /// # Errors
    /// `InvalidName`, `InvalidArgument`, `Conflict` (other options),
    /// `PreconditionFailed` (a queue has the name), `LimitExceeded`, storage.
    pub async fn declare_stream(&self, name: &str, options: StreamOptions) -> Result<Declared> {
        validate_name(name)?;
        options.validate()?;
        let _admin = self.inner.admin.lock().await;
        if let Some(declared) = self.declare_partition_queue(name, &options)? {
            return Ok(declared);
        }
        if let Ok(existing) = self.stream(name) {
            if existing.options == options {
                self.ensure_partition_routing(name, options.partitions)?;
                return Ok(Declared::Existed);
            }
            // More partitions, nothing else changed: the stream grows.
            let grows = StreamOptions {
                partitions: existing.options.partitions,
                ..options.clone()
            } == existing.options
                && options.partitions > existing.options.partitions;
            if grows {
                self.check_partition_names(name, existing.options.partitions, options.partitions)?;
                let grown = self.grow_stream(name, &existing, &options).await?;
                crate::locks::write(&self.inner.streams).insert(name.to_owned(), Arc::new(grown));
                existing.appended.notify_waiters();
                self.ensure_partition_routing(name, options.partitions)?;
                tracing::info!(
                    stream = name,
                    partitions = options.partitions,
                    "grew stream"
                );
                return Ok(Declared::Existed);
            }
            return Err(BrokerError::Conflict {
                kind: Kind::Stream,
                name: name.to_owned(),
                difference: format!(
                    "it is {} but {} was asked",
                    serde_json::to_string(&existing.options).unwrap_or_default(),
                    serde_json::to_string(&options).unwrap_or_default()
                ),
            });
        }
        if self.queue_exists(name) {
            return Err(BrokerError::PreconditionFailed {
                reason: format!("'{name}' is a queue; a queue and a stream cannot share a name"),
            });
        }
        let limit = self.inner.config.limits.max_queues;
        if self.queue_and_stream_count() + 1 > limit {
            return Err(BrokerError::LimitExceeded {
                what: Limit::Queues,
                limit,
            });
        }
        self.check_partition_names(name, 0, options.partitions)?;
        let stream = self.make_stream(name, &options).await?;
        crate::locks::write(&self.inner.streams).insert(name.to_owned(), Arc::new(stream));
        self.ensure_partition_routing(name, options.partitions)?;
        tracing::info!(
            stream = name,
            partitions = options.partitions,
            "declared stream"
        );
        Ok(Declared::Created)
    }

    /// Changes a stream's retention (`max_age_ms`, `max_bytes`) and segment size
    /// (`segment_bytes`, for segments sealed from now on), as RabbitMQ's policies
    /// and Kafka's topic configs change them: kept across restarts and applied to
    /// every partition at once. `options` is the stream's with those changed; its
    /// partitions (which grow by a declare) and durability must be the stream's.
    ///
    /// # Errors
    /// `NotFound`, `InvalidArgument`, storage.
    pub async fn alter_stream(&self, name: &str, options: StreamOptions) -> Result<()> {
        options.validate()?;
        let _admin = self.inner.admin.lock().await;
        let existing = self.stream(name)?;
        if options.partitions != existing.options.partitions {
            return Err(BrokerError::invalid(
                "partitions",
                format!(
                    "the stream has {}; partitions grow by declaring the stream with more",
                    existing.options.partitions
                ),
            ));
        }
        if options.durable != existing.options.durable {
            return Err(BrokerError::invalid(
                "durable",
                "is set when the stream is made",
            ));
        }
        if options == existing.options {
            return Ok(());
        }
        let (altered, outcome) = self.reconfigure_stream(name, &existing, &options).await?;
        crate::locks::write(&self.inner.streams).insert(name.to_owned(), Arc::new(altered));
        tracing::info!(
            stream = name,
            max_age_ms = options.max_age_ms,
            max_bytes = options.max_bytes,
            segment_bytes = options.segment_bytes,
            "altered stream"
        );
        outcome
    }

    /// Queues and streams together (they share `[limits] max_queues`).
    pub(crate) fn queue_and_stream_count(&self) -> u64 {
        let queues = crate::locks::read(&self.inner.queues).len();
        let streams = crate::locks::read(&self.inner.streams).len();
        (queues + streams) as u64
    }

    /// Deletes a stream and every record in it.
    ///
    /// # Errors
    /// `NotFound`, storage.
    pub async fn delete_stream(&self, name: &str) -> Result<()> {
        let _admin = self.inner.admin.lock().await;
        let partitions = match self.stream(name) {
            Ok(s) => s.options.partitions,
            Err(e) => return Err(self.partition_queue_refusal(name).unwrap_or(e)),
        };
        // Its bindings go first (and durably); then the stream.
        self.change_routing(|r| {
            r.remove_destination(crate::routing::DestinationType::Queue, name);
            Ok(())
        })?;
        self.remove_partition_routing(name, partitions)?;
        let stream = crate::locks::write(&self.inner.streams)
            .remove(name)
            .ok_or_else(|| not_found(name))?;
        for log in &stream.partitions {
            if let Err(e) = log.close().await {
                tracing::warn!(stream = name, error = %e, "closing a deleted stream's log failed");
            }
        }
        stream.groups.close().await;
        stream.appended.notify_waiters();
        self.remove_stream_files(&stream.dir)?;
        tracing::info!(stream = name, "deleted stream");
        Ok(())
    }

    /// One stream's options and partitions.
    ///
    /// # Errors
    /// `NotFound`.
    pub fn stream_info(&self, name: &str) -> Result<StreamInfo> {
        let stream = self.stream(name)?;
        Ok(info_of(name, &stream))
    }

    /// Every stream of every vhost, by broker-wide name ([`crate::names`]).
    pub fn all_streams(&self) -> Vec<StreamInfo> {
        self.streams_where(|_| true)
    }

    /// The streams whose names `keep` takes, by name.
    pub(crate) fn streams_where(&self, keep: impl Fn(&str) -> bool) -> Vec<StreamInfo> {
        let streams: Vec<(String, Arc<StreamRef<S::Log>>)> =
            crate::locks::read(&self.inner.streams)
                .iter()
                .filter(|(n, _)| keep(n))
                .map(|(n, s)| (n.clone(), s.clone()))
                .collect();
        let mut out: Vec<StreamInfo> = streams.iter().map(|(n, s)| info_of(n, s)).collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Appends records; answers where each went once they are durable (or written,
    /// for a stream that is not durable). Records with the same key go to the same
    /// partition in the order given.
    ///
    /// # Errors
    /// `NotFound`, `InvalidArgument` (no record), `LimitExceeded` (too many), storage
    /// (a record too large, a full disk): then no record of that partition's part is
    /// kept, while other partitions' parts may be.
    pub async fn append(&self, name: &str, records: Vec<StreamRecordIn>) -> Result<Vec<Placed>> {
        let stream = self.stream(name)?;
        check_append(&records, self.inner.config.limits.max_batch_messages)?;
        self.inner.traffic.published(records.len() as u64, 0, 0);
        let max_bytes = self.inner.config.limits.max_message_bytes;
        let partitions = u32::try_from(stream.partitions.len()).unwrap_or(u32::MAX);
        // Per partition: the positions of its records and the records.
        let mut parts: Vec<(Vec<usize>, Vec<NewRecord>)> =
            vec![(Vec::new(), Vec::new()); partitions as usize];
        for (i, r) in records.into_iter().enumerate() {
            if r.body.len() as u64 > max_bytes {
                return Err(BrokerError::invalid(
                    "messages",
                    format!(
                        "record {i} is {} bytes, over the limit of {max_bytes}",
                        r.body.len()
                    ),
                ));
            }
            let partition = if let Some(key) = &r.key {
                partition_for(key, partitions)
            } else {
                let n = stream.round_robin.fetch_add(1, Ordering::Relaxed);
                u32::try_from(n % u64::from(partitions)).unwrap_or(0)
            };
            let part = &mut parts[partition as usize];
            part.0.push(i);
            part.1.push(NewRecord {
                timestamp_ms: None,
                key: r.key,
                headers: r
                    .headers
                    .into_iter()
                    .map(|(k, v)| Header::new(k, v))
                    .collect(),
                body: r.body,
            });
        }
        let total: usize = parts.iter().map(|p| p.0.len()).sum();
        let mut placed = vec![
            Placed {
                partition: 0,
                offset: 0
            };
            total
        ];
        let mut appends = tokio::task::JoinSet::new();
        for (p, (positions, batch)) in parts.into_iter().enumerate() {
            if batch.is_empty() {
                continue;
            }
            let log = stream.partitions[p].clone();
            let durable = stream.options.durable;
            appends.spawn(async move {
                let appended = if durable {
                    log.append_batch(&batch).await
                } else {
                    log.append_batch_unsynced(&batch).await
                };
                (p, positions, appended)
            });
        }
        let mut failed = None;
        while let Some(joined) = appends.join_next().await {
            let (p, positions, appended) =
                joined.map_err(|e| BrokerError::internal(format!("a stream append: {e}")))?;
            match appended {
                Ok(appended) => {
                    for (position, offset) in positions.into_iter().zip(appended.offsets()) {
                        placed[position] = Placed {
                            partition: u32::try_from(p).unwrap_or(0),
                            offset: offset.0,
                        };
                    }
                }
                Err(e) => failed = Some(BrokerError::storage(name.to_owned(), e)),
            }
        }
        stream.appended.notify_waiters();
        match failed {
            Some(e) => Err(e),
            None => Ok(placed),
        }
    }

    /// Reads up to `max` records of `partition` from `from`, waiting up to `wait_ms`
    /// for the first. Reading changes nothing.
    ///
    /// # Errors
    /// `NotFound`, `InvalidArgument` (partition, max, wait, an offset past the end),
    /// storage.
    pub async fn read_stream(
        &self,
        name: &str,
        partition: u32,
        from: ReadFrom,
        max: u32,
        wait_ms: u64,
    ) -> Result<StreamRead> {
        let (stream, partition, start) =
            self.read_start(name, partition, from, max, wait_ms).await?;
        let log = &stream.partitions[partition as usize];
        read_partition(log, partition, start, max, MAX_READ_BYTES, wait_ms).await
    }

    /// As [`Broker::read_stream`], answering whole batches as stored
    /// ([`StoredRead`]): no record is parsed or encoded again on the way out.
    ///
    /// # Errors
    /// As [`Broker::read_stream`].
    pub async fn read_stream_stored(
        &self,
        name: &str,
        partition: u32,
        from: ReadFrom,
        max: u32,
        wait_ms: u64,
    ) -> Result<StoredRead> {
        let (stream, partition, start) =
            self.read_start(name, partition, from, max, wait_ms).await?;
        let log = &stream.partitions[partition as usize];
        read_partition_stored(log, partition, start, max, MAX_READ_BYTES, wait_ms).await
    }

    /// What a read of `name`'s `partition` needs first: the stream, the partition
    /// (of the stream itself for a `<stream>-N` name), checked bounds, and the
    /// offset `from` names.
    async fn read_start(
        &self,
        name: &str,
        partition: u32,
        from: ReadFrom,
        max: u32,
        wait_ms: u64,
    ) -> Result<(Arc<StreamRef<S::Log>>, u32, u64)> {
        let (stream, partition) = self.stream_part(name, partition)?;
        check_read(max, wait_ms, self.inner.config.limits.max_wait_ms)?;
        let start = start_offset(&stream.partitions[partition as usize], from).await?;
        Ok((stream, partition, start))
    }
}

/// Headers whose names start with this are the broker's and its front ends' own
/// (an AMQP publish's properties; in batches stored before Kafka's were kept as
/// they come, a Kafka producer's sequence numbers): readers over HTTP, AMQP and
/// Kafka do not see them, and appends that carry one are refused. The log's
/// constant: it marks an appender's batch with one as it checks it.
pub use weir_log::RESERVED_HEADER_PREFIX;

/// The refusals of [`Broker::append`] that come before any record is placed: no
/// record, more than `limit`, a header name of the broker's.
fn check_append(records: &[StreamRecordIn], limit: u64) -> Result<()> {
    if records.is_empty() {
        return Err(BrokerError::invalid(
            "messages",
            "an append needs at least one record",
        ));
    }
    if records.len() as u64 > limit {
        return Err(BrokerError::LimitExceeded {
            what: Limit::MessagesPerSend,
            limit,
        });
    }
    if records.iter().any(|r| {
        r.headers
            .iter()
            .any(|(k, _)| k.starts_with(RESERVED_HEADER_PREFIX))
    }) {
        return Err(reserved_header());
    }
    Ok(())
}

/// The refusal of a record an appender sent with a header name of the broker's
/// (readers would not see it, and AMQP readers would take `PROPERTIES_HEADER` for
/// the record's AMQP properties).
pub(crate) fn reserved_header() -> BrokerError {
    BrokerError::invalid(
        "headers",
        format!("header names starting with {RESERVED_HEADER_PREFIX} are reserved for the broker"),
    )
}

/// The header that carries a front end's description of a published message
/// (AMQP's properties, `SendMessage::properties`) in a stream record; HTTP readers
/// do not see it.
pub const PROPERTIES_HEADER: &str = "x-weir-properties";

impl<S: LogStore> Broker<S> {
    /// Takes the streams out of `per_queue` (and their copies out of `copies`) and
    /// appends each its part now.
    pub(crate) fn publish_to_streams(
        &self,
        messages: &[crate::exchanges::PublishMessage],
        per_queue: &mut std::collections::BTreeMap<String, Vec<usize>>,
        copies: &mut [usize],
    ) -> Vec<crate::exchanges::PendingSend> {
        // One look at the streams per publish (none, most often), not one per queue.
        // (destination name, stream, partition)
        type Target<L> = (String, Arc<StreamRef<L>>, Option<u32>);
        let targets: Vec<Target<S::Log>> = {
            let streams = crate::locks::read(&self.inner.streams);
            if streams.is_empty() {
                return Vec::new();
            }
            per_queue
                .keys()
                .filter_map(|n| {
                    super::partitions::target_in(&streams, n)
                        .map(|(s, p)| (n.clone(), s.clone(), p))
                })
                .collect()
        };
        let mut out = Vec::with_capacity(targets.len());
        for (name, stream, partition) in targets {
            let positions = per_queue.remove(&name).unwrap_or_default();
            for i in &positions {
                copies[*i] -= 1;
            }
            let answer = Ok(append_published(
                &name, &stream, partition, messages, &positions,
            ));
            out.push((name, positions, answer));
        }
        out
    }
}

/// Appends published messages (those at `positions`) to `partition` of `stream`
/// (named `name` by the publisher), queued now so publishes keep their order; the
/// answer comes once durable, in the shape of a queue's answer to a send. Without
/// a partition, a stream of several takes the batch on the next one in turn (a
/// published message has no key).
fn append_published<L: MessageLog + Clone>(
    name: &str,
    stream: &Arc<StreamRef<L>>,
    partition: Option<u32>,
    messages: &[crate::exchanges::PublishMessage],
    positions: &[usize],
) -> tokio::sync::oneshot::Receiver<Result<Vec<crate::api::SendOutcome>>> {
    let stream = stream.clone();
    let partition = partition.map_or_else(
        || {
            let n = stream.round_robin.fetch_add(1, Ordering::Relaxed);
            (n % stream.partitions.len() as u64) as usize
        },
        |p| p as usize,
    );
    let records: Vec<NewRecord> = positions
        .iter()
        .map(|i| {
            let m = &messages[*i].message;
            let mut headers: Vec<Header> = m
                .headers
                .iter()
                .map(|(k, v)| Header::new(k.clone(), v.clone()))
                .collect();
            if let Some(properties) = &m.properties {
                headers.push(Header::new(PROPERTIES_HEADER, properties.clone()));
            }
            NewRecord {
                timestamp_ms: None,
                key: None,
                headers,
                body: m.body.clone(),
            }
        })
        .collect();
    let ids: Vec<String> = positions
        .iter()
        .map(|i| messages[*i].message.id.clone().unwrap_or_default())
        .collect();
    let log = stream.partitions[partition].clone();
    // Queued now (not at the first poll), so publishes keep their order.
    let appended: std::pin::Pin<
        Box<dyn std::future::Future<Output = weir_log::Result<weir_log::Appended>> + Send>,
    > = if stream.options.durable {
        Box::pin(log.submit_batch(&records))
    } else {
        Box::pin(log.append_batch_unsynced(&records))
    };
    let (reply, answer) = tokio::sync::oneshot::channel();
    let queue = name.to_owned();
    tokio::spawn(async move {
        let result = appended
            .await
            .map(|_| {
                ids.into_iter()
                    .map(|id| crate::api::SendOutcome {
                        id,
                        duplicate: false,
                    })
                    .collect()
            })
            .map_err(|e| BrokerError::storage(queue, e));
        stream.appended.notify_waiters();
        let _ = reply.send(result);
    });
    answer
}

fn info_of<L: MessageLog>(name: &str, stream: &StreamRef<L>) -> StreamInfo {
    StreamInfo {
        name: name.to_owned(),
        options: stream.options.clone(),
        partition_stats: stream
            .partitions
            .iter()
            .enumerate()
            .map(|(p, log)| {
                let stats = log.stats();
                PartitionInfo {
                    partition: u32::try_from(p).unwrap_or(0),
                    first_offset: stats.first_offset.0,
                    next_offset: stats.next_offset.0,
                    bytes: stats.size_bytes,
                    segments: stats.segments,
                }
            })
            .collect(),
    }
}
