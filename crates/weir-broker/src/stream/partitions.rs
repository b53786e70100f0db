//! A partitioned stream as RabbitMQ's super streams look over AMQP: stream `s` of
//! P > 1 partitions is also a direct exchange `s` whose routing key `"N"` goes to
//! `s-N`, a stream queue that is partition N. So the habits of super-stream users
//! work unchanged: publish to exchange `s` with the partition's key, declare
//! (passively) and consume `s-N` with `x-stream-offset`, and offsets, tracking and
//! filters apply to that partition.
//!
//! `s-N` is not a stream of its own: it names partition N of `s` wherever a queue
//! name is taken (routing, `queue.declare`, `basic.consume`, reads, tracking), and
//! no queue or stream may take the name while `s` has that partition. The exchange
//! and its bindings are ordinary routing state (in `meta/routing.json`), made when
//! the stream is declared or grown and removed with it (the exchange only if no
//! other binding is left on it).

use std::collections::HashMap;
use std::sync::Arc;

use weir_log::LogStore;

use super::{StreamOptions, StreamRef};
use crate::api::Declared;
use crate::broker::Broker;
use crate::error::{BrokerError, Kind, Result};
use crate::routing::{Binding, DestinationType, ExchangeOptions, ExchangeType};

/// The queue name of partition `n` of stream `stream`.
pub(crate) fn partition_queue(stream: &str, n: u32) -> String {
    format!("{stream}-{n}")
}

/// `s-N` as `(s, N)`, N written without leading zeros.
fn split_partition_queue(name: &str) -> Option<(&str, u32)> {
    let (stream, digits) = name.rsplit_once('-')?;
    let n: u32 = digits.parse().ok()?;
    (!stream.is_empty() && n.to_string() == digits).then_some((stream, n))
}

/// The stream `name` stands for in `streams` and which partition: the stream
/// itself (`None`, all of them), or partition N for `s-N` of a stream of more
/// than N partitions (and more than one).
pub(crate) fn target_in<'a, L>(
    streams: &'a HashMap<String, Arc<StreamRef<L>>>,
    name: &str,
) -> Option<(&'a Arc<StreamRef<L>>, Option<u32>)> {
    if let Some(s) = streams.get(name) {
        return Some((s, None));
    }
    let (stream, n) = split_partition_queue(name)?;
    let s = streams.get(stream)?;
    let partitions = s.partitions.len();
    (partitions > 1 && (n as usize) < partitions).then_some((s, Some(n)))
}

impl<S: LogStore> Broker<S> {
    /// Whether `name` is a stream or a partition's queue name (`s-N`).
    pub(crate) fn stream_exists(&self, name: &str) -> bool {
        target_in(&crate::locks::read(&self.inner.streams), name).is_some()
    }

    /// The stream and partition that `name` and `partition` read: partition
    /// `partition` of stream `name`, or, for a partition's queue name `s-N`
    /// (where `partition` must be 0, its only one), partition N of `s`.
    ///
    /// # Errors
    /// `NotFound`, `InvalidArgument` (no such partition).
    pub(super) fn stream_part(
        &self,
        name: &str,
        partition: u32,
    ) -> Result<(Arc<StreamRef<S::Log>>, u32)> {
        let found = {
            let streams = crate::locks::read(&self.inner.streams);
            target_in(&streams, name).map(|(s, n)| (s.clone(), n))
        };
        let (stream, resolved, partitions) = match found {
            Some((s, Some(n))) => (s, n, 1),
            Some((s, None)) => {
                let partitions = s.partitions.len();
                (s, partition, partitions)
            }
            None => {
                return Err(self
                    .stream(name)
                    .err()
                    .unwrap_or_else(|| closing_race(name)));
            }
        };
        if partition as usize >= partitions {
            return Err(BrokerError::invalid(
                "partition",
                format!("stream '{name}' has partitions 0..{partitions}"),
            ));
        }
        Ok((stream, resolved))
    }

    /// A declare of `s-N` as a stream of its own: it exists (as partition N of `s`)
    /// when the options ask one partition with `s`'s other options; `None` when
    /// `name` is no partition's queue name.
    ///
    /// # Errors
    /// `Conflict` (other options).
    pub(super) fn declare_partition_queue(
        &self,
        name: &str,
        options: &StreamOptions,
    ) -> Result<Option<Declared>> {
        let parent = {
            let streams = crate::locks::read(&self.inner.streams);
            match target_in(&streams, name) {
                Some((s, Some(_))) => s.options.clone(),
                _ => return Ok(None),
            }
        };
        let as_partition = StreamOptions {
            partitions: 1,
            ..parent
        };
        if *options == as_partition {
            return Ok(Some(Declared::Existed));
        }
        Err(BrokerError::Conflict {
            kind: Kind::Stream,
            name: name.to_owned(),
            difference: format!(
                "it is a partition of a stream with {} but {} was asked",
                serde_json::to_string(&as_partition).unwrap_or_default(),
                serde_json::to_string(options).unwrap_or_default()
            ),
        })
    }

    /// Why `s-N` cannot be deleted on its own, if it is a partition's queue name.
    pub(super) fn partition_queue_refusal(&self, name: &str) -> Option<BrokerError> {
        let streams = crate::locks::read(&self.inner.streams);
        let (_, n) = target_in(&streams, name)?;
        let (stream, _) = split_partition_queue(name)?;
        Some(BrokerError::PreconditionFailed {
            reason: format!(
                "'{name}' is partition {} of stream '{stream}'; delete the stream itself",
                n?
            ),
        })
    }

    /// Refuses a new stream `name` of `partitions` (> 1) partitions, or a stream
    /// growing to them from `from`, while a queue or stream holds one of the
    /// partitions' queue names or exchange `name` is not direct.
    pub(super) fn check_partition_names(
        &self,
        name: &str,
        from: u32,
        partitions: u32,
    ) -> Result<()> {
        if partitions <= 1 {
            return Ok(());
        }
        let longest = partition_queue(name, partitions - 1);
        crate::api::validate_name(&longest).map_err(|_| {
            BrokerError::invalid(
                "partitions",
                format!("partition queue name '{longest}' would be too long"),
            )
        })?;
        let first = if from > 1 { from } else { 0 };
        for n in first..partitions {
            let queue = partition_queue(name, n);
            let streams = crate::locks::read(&self.inner.streams);
            if self.queue_exists(&queue) || streams.contains_key(&queue) {
                return Err(BrokerError::PreconditionFailed {
                    reason: format!(
                        "'{queue}' exists; it would name partition {n} of stream '{name}'"
                    ),
                });
            }
        }
        let kind = self.router().options(name).map(|o| o.kind);
        if kind.is_some_and(|k| k != ExchangeType::Direct) {
            return Err(BrokerError::PreconditionFailed {
                reason: format!(
                    "exchange '{name}' exists and is not direct; a stream of {partitions} \
                     partitions routes through a direct exchange of its name"
                ),
            });
        }
        Ok(())
    }

    /// Makes exchange `name` and its bindings `"N"` → `name-N` for each of the
    /// `partitions` (> 1), writing the routing file only if one was missing. Call
    /// with the declaration lock held.
    pub(super) fn ensure_partition_routing(&self, name: &str, partitions: u32) -> Result<()> {
        if partitions <= 1 {
            return Ok(());
        }
        let bindings: Vec<Binding> = (0..partitions)
            .map(|n| Binding {
                source: name.to_owned(),
                destination: partition_queue(name, n),
                destination_type: DestinationType::Queue,
                routing_key: n.to_string(),
                arguments: std::collections::BTreeMap::new(),
            })
            .collect();
        let missing = {
            let router = self.router();
            router.options(name).is_none()
                || bindings.iter().any(|b| {
                    !router
                        .bindings(Some(name), Some(&b.destination))
                        .contains(b)
                })
        };
        if !missing {
            return Ok(());
        }
        self.change_routing(|r| {
            if r.options(name).is_none() {
                r.declare(name, ExchangeOptions::of(ExchangeType::Direct))?;
            }
            for b in bindings {
                r.bind(b)?;
            }
            Ok(())
        })
    }

    /// Removes the bindings to stream `name`'s partitions' queue names, then its
    /// exchange if no binding is left on it. Call with the declaration lock held.
    pub(super) fn remove_partition_routing(&self, name: &str, partitions: u32) -> Result<()> {
        if partitions <= 1 {
            return Ok(());
        }
        self.change_routing(|r| {
            for n in 0..partitions {
                r.remove_destination(DestinationType::Queue, &partition_queue(name, n));
            }
            let unused = r
                .options(name)
                .is_some_and(|o| o.kind == ExchangeType::Direct)
                && r.bindings(Some(name), None).is_empty();
            if unused {
                r.delete(name, true)?;
            }
            Ok(())
        })
    }
}

/// A stream that went between two looks (a delete racing a read).
fn closing_race(name: &str) -> BrokerError {
    BrokerError::NotFound {
        kind: Kind::Stream,
        name: name.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_queue_names_split_back() {
        assert_eq!(split_partition_queue("orders-2"), Some(("orders", 2)));
        assert_eq!(split_partition_queue("a-b-10"), Some(("a-b", 10)));
        assert_eq!(split_partition_queue("orders-02"), None);
        assert_eq!(split_partition_queue("orders-"), None);
        assert_eq!(split_partition_queue("-1"), None);
        assert_eq!(split_partition_queue("orders"), None);
        assert_eq!(partition_queue("orders", 7), "orders-7");
    }
}
