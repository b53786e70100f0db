//! Appends of batches the appender encoded itself ([`IncomingBatch`], the log's
//! stored format): the HTTP API's binary appends, the Kafka front end's Produce later.
//!
//! Why: parsing a JSON append into records and encoding them again was most of an
//! append's cost, and it is work on the one path a lone producer waits on
//! (docs/benchmarks.md "Streams"). Here the broker checks what the model needs and
//! hands each batch to its partition's log, which checks and stamps it.
//!
//! The appender names each batch's partition, as a Kafka producer does. What the
//! broker holds it to: the partition exists; a keyed record is in the partition
//! its key maps to (`murmur2(key) mod P`, [`super::partition_for`]), so per-key order
//! holds whoever appends; the request's records are within `max_batch_messages` and
//! every body within `max_message_bytes`, as for a JSON append.

use serde::Serialize;
use weir_log::{IncomingBatch, LogStore, MessageLog};

use super::api::reserved_header;
use super::partition_for;
use crate::broker::Broker;
use crate::error::{BrokerError, Limit, Result};

/// Batches for one partition, in the order they are to be appended.
#[derive(Debug)]
pub struct PartitionBatches {
    /// The partition.
    pub partition: u32,
    /// Its batches.
    pub batches: Vec<IncomingBatch>,
}

/// Where an appended batch went: its records have the offsets `offset..offset +
/// count` of `partition`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct PlacedBatch {
    /// Its partition.
    pub partition: u32,
    /// Its first record's offset.
    pub offset: u64,
    /// Its records.
    pub count: u32,
}

impl<S: LogStore> Broker<S> {
    /// Appends batches the appender encoded, each kept or lost whole; answers where
    /// each went, in the order given, once all are durable (or written, for a stream
    /// that is not durable).
    ///
    /// # Errors
    /// `NotFound`; `InvalidArgument` (no record, a partition the stream lacks, a
    /// keyed record in another partition than its key's, a body over
    /// `max_message_bytes`), `LimitExceeded` (more records than
    /// `max_batch_messages`): nothing is appended. Storage (a record or batch over
    /// the log's limits, a full disk): that batch is not kept, others may be.
    pub async fn append_batches(
        &self,
        name: &str,
        parts: Vec<PartitionBatches>,
    ) -> Result<Vec<PlacedBatch>> {
        self.append_batches_keyed(name, parts, Keys::Murmur2).await
    }

    /// As [`Broker::append_batches`] for a Kafka producer: its own partitioner
    /// places keyed records (librdkafka's default hashes keys with CRC32, not
    /// murmur2), so a keyed record is kept in the partition it names; and its
    /// limit is the request's size in bytes (the front end's), not
    /// `max_batch_messages` (a librdkafka batch holds up to 10,000 records).
    ///
    /// # Errors
    /// As [`Broker::append_batches`], less the key check and the record count.
    pub async fn append_placed_batches(
        &self,
        name: &str,
        parts: Vec<PartitionBatches>,
    ) -> Result<Vec<PlacedBatch>> {
        self.append_batches_keyed(name, parts, Keys::AsPlaced).await
    }

    async fn append_batches_keyed(
        &self,
        name: &str,
        parts: Vec<PartitionBatches>,
        keys: Keys,
    ) -> Result<Vec<PlacedBatch>> {
        let stream = self.stream(name)?;
        let partitions = u32::try_from(stream.partitions.len()).unwrap_or(u32::MAX);
        self.check_batches(&parts, partitions, keys)?;
        let mut pending = Vec::new();
        let mut records = 0u64;
        for part in parts {
            let log = &stream.partitions[part.partition as usize];
            for batch in part.batches {
                let count = batch.count();
                records += u64::from(count);
                let appended = log.append_incoming(batch, stream.options.durable);
                pending.push((part.partition, count, appended));
            }
        }
        self.inner.traffic.published(records, 0, 0);
        // Every append is queued: awaiting them in turn waits for them together.
        let mut placed = Vec::with_capacity(pending.len());
        let mut failed = None;
        for (partition, count, appended) in pending {
            match appended.await {
                Ok(appended) => placed.push(PlacedBatch {
                    partition,
                    offset: appended.first.0,
                    count,
                }),
                Err(e) => failed = Some(BrokerError::storage(name.to_owned(), e)),
            }
        }
        stream.appended.notify_waiters();
        match failed {
            Some(e) => Err(e),
            None => Ok(placed),
        }
    }

    /// The refusals that leave everything as it was: see [`Broker::append_batches`].
    fn check_batches(&self, parts: &[PartitionBatches], partitions: u32, keys: Keys) -> Result<()> {
        let limits = &self.inner.config.limits;
        let total: u64 = parts
            .iter()
            .flat_map(|p| &p.batches)
            .map(|b| u64::from(b.count()))
            .sum();
        if total == 0 {
            return Err(BrokerError::invalid(
                "messages",
                "an append needs at least one record",
            ));
        }
        if total > limits.max_batch_messages && keys == Keys::Murmur2 {
            return Err(BrokerError::LimitExceeded {
                what: Limit::MessagesPerSend,
                limit: limits.max_batch_messages,
            });
        }
        for part in parts {
            if part.partition >= partitions {
                return Err(BrokerError::invalid(
                    "partition",
                    format!(
                        "partition {} does not exist: the stream has {partitions}",
                        part.partition
                    ),
                ));
            }
            for batch in &part.batches {
                if batch.has_reserved_header() {
                    return Err(reserved_header());
                }
                if batch.max_body_len() as u64 > limits.max_message_bytes {
                    return Err(BrokerError::invalid(
                        "messages",
                        format!(
                            "a record's body is {} bytes, over the limit of {}",
                            batch.max_body_len(),
                            limits.max_message_bytes
                        ),
                    ));
                }
                if partitions > 1 && keys == Keys::Murmur2 {
                    check_keys(batch, part.partition, partitions)?;
                }
            }
        }
        Ok(())
    }
}

/// Which appender's rules hold.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Keys {
    /// weir's: a keyed record in the partition `murmur2(key) mod P` maps it to, at
    /// most `max_batch_messages` records.
    Murmur2,
    /// A Kafka producer's: records where it put them, as many as its request holds.
    AsPlaced,
}

/// Refuses a keyed record of `batch` that belongs in another partition.
fn check_keys(batch: &IncomingBatch, partition: u32, partitions: u32) -> Result<()> {
    for (i, wanted) in batch
        .map_keys(|key| key.map(|k| partition_for(k, partitions)))
        .into_iter()
        .enumerate()
    {
        let Some(wanted) = wanted else { continue };
        if wanted != partition {
            return Err(BrokerError::invalid(
                "partition",
                format!(
                    "record {i} of a batch for partition {partition} has a key that \
                     goes to partition {wanted} (murmur2 of the key mod {partitions})"
                ),
            ));
        }
    }
    Ok(())
}
