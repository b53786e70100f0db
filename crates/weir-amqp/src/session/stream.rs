//! Streams over AMQP, the way RabbitMQ's stream queues work (issue 21): declared
//! with `x-queue-type=stream` (durable, not exclusive, not auto-delete), published
//! to through the default exchange or any exchange bound to them, consumed with
//! `basic.consume` and an `x-stream-offset` argument, each delivery carrying its
//! offset in an `x-stream-offset` header. Acks only return prefetch credit.
//! RabbitMQ's refusals: no prefetch (406), `no-ack` (540), a global prefetch
//! (406), `basic.get` and `queue.purge` (540), a bad offset (406).

use std::sync::Arc;

use amq_protocol::protocol::{AMQPClass, basic, queue};
use amq_protocol::types::{AMQPValue, FieldTable, ShortString};
use tokio::sync::Semaphore;
use weir_broker::BrokerError;
use weir_broker::Declared;
use weir_broker::access::Operation;
use weir_broker::metrics::{Held, Protocol};
use weir_broker::stream::{ReadFrom, StreamOptions, interval_ms};

use super::consumer::{ConsumerTask, Gates, Rewind, Source, StreamFilter, consume_loop};
use super::{Consumer, Session};
use crate::codes::{Exception, NOT_IMPLEMENTED, PRECONDITION_FAILED};

/// The stream options a `queue.declare` asks for, if it declares a stream
/// (`x-queue-type=stream`).
pub(super) fn stream_declare(
    name: &str,
    d: &queue::Declare,
) -> Option<Result<StreamOptions, Exception>> {
    let kind = d.arguments.inner().get("x-queue-type")?;
    if text(kind).as_deref() != Some("stream") {
        return None;
    }
    Some(stream_options(name, d))
}

fn text(v: &AMQPValue) -> Option<String> {
    match v {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

fn integer(v: &AMQPValue) -> Option<i64> {
    match v {
        AMQPValue::ShortShortInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortShortUInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortUInt(n) => Some(i64::from(*n)),
        AMQPValue::LongInt(n) => Some(i64::from(*n)),
        AMQPValue::LongUInt(n) => Some(i64::from(*n)),
        AMQPValue::LongLongInt(n) => Some(*n),
        _ => None,
    }
}

fn precondition(text: String) -> Exception {
    Exception::channel(PRECONDITION_FAILED, text)
}

fn stream_options(name: &str, d: &queue::Declare) -> Result<StreamOptions, Exception> {
    for (flag, set) in [
        ("durable", !d.durable),
        ("exclusive", d.exclusive),
        ("auto_delete", d.auto_delete),
    ] {
        if set {
            return Err(precondition(format!(
                "invalid property '{flag}' for queue '{name}': a stream is durable, not \
                 exclusive and not auto-delete"
            )));
        }
    }
    let args = d.arguments.inner();
    let bad = |arg: &str| precondition(format!("invalid arg '{arg}' for queue '{name}'"));
    let max_bytes = match args.get("x-max-length-bytes") {
        None => None,
        Some(v) => Some(
            integer(v)
                .and_then(|n| u64::try_from(n).ok())
                .filter(|n| *n > 0)
                .ok_or_else(|| bad("x-max-length-bytes"))?,
        ),
    };
    let max_age_ms = match args.get("x-max-age") {
        None => None,
        Some(v) => Some(
            text(v)
                .and_then(|t| interval_ms(&t))
                .filter(|ms| *ms > 0)
                .ok_or_else(|| bad("x-max-age"))?,
        ),
    };
    let segment_bytes = match args.get("x-stream-max-segment-size-bytes") {
        None => None,
        Some(v) => Some(
            integer(v)
                .and_then(|n| u64::try_from(n).ok())
                .filter(|n| *n >= 1 << 10)
                .ok_or_else(|| bad("x-stream-max-segment-size-bytes"))?
                // RabbitMQ takes up to 3 GB; weir's segments are at most 1 GiB.
                .min(1 << 30),
        ),
    };
    Ok(StreamOptions {
        partitions: 1,
        max_age_ms,
        max_bytes,
        segment_bytes,
        durable: true,
    })
}

/// Where a stream consumer starts: its `x-stream-offset` argument (`next` when
/// absent).
fn start_of(arguments: &FieldTable) -> Result<ReadFrom, Exception> {
    let Some(v) = arguments.inner().get("x-stream-offset") else {
        return Ok(ReadFrom::Next);
    };
    let bad = || precondition(format!("invalid x-stream-offset {v:?}"));
    if let AMQPValue::Timestamp(seconds) = v {
        return Ok(ReadFrom::Time(
            i64::try_from(*seconds)
                .unwrap_or(i64::MAX)
                .saturating_mul(1000),
        ));
    }
    if let Some(n) = integer(v) {
        return u64::try_from(n).map(ReadFrom::Offset).map_err(|_| bad());
    }
    match text(v).as_deref() {
        Some("first") => Ok(ReadFrom::First),
        Some("last") => Ok(ReadFrom::Last),
        Some("next") => Ok(ReadFrom::Next),
        Some(t) => interval_ms(t).map(ReadFrom::Ago).ok_or_else(bad),
        None => Err(bad()),
    }
}

/// A consumer's `x-stream-filter` (a string or an array of strings) and
/// `x-stream-match-unfiltered` (a boolean), if it filters.
fn filter_of(arguments: &FieldTable) -> Result<Option<StreamFilter>, Exception> {
    let args = arguments.inner();
    let Some(v) = args.get("x-stream-filter") else {
        return Ok(None);
    };
    let bad = || precondition(format!("invalid x-stream-filter {v:?}"));
    let values = match v {
        AMQPValue::FieldArray(items) => items
            .as_slice()
            .iter()
            .map(|i| text(i).ok_or_else(bad))
            .collect::<Result<Vec<_>, _>>()?,
        other => vec![text(other).ok_or_else(bad)?],
    };
    let match_unfiltered = match args.get("x-stream-match-unfiltered") {
        None => false,
        Some(AMQPValue::Boolean(b)) => *b,
        Some(other) => {
            return Err(precondition(format!(
                "invalid x-stream-match-unfiltered {other:?}"
            )));
        }
    };
    Ok(Some(StreamFilter {
        values,
        match_unfiltered,
    }))
}

/// Whether a consumer asks for server-side offset tracking (`LavinMQ`'s
/// `x-stream-automatic-offset-tracking`, a boolean or "true").
fn tracking_of(arguments: &FieldTable) -> Result<bool, Exception> {
    match arguments.inner().get("x-stream-automatic-offset-tracking") {
        None => Ok(false),
        Some(AMQPValue::Boolean(b)) => Ok(*b),
        Some(v) => match text(v).as_deref() {
            Some("true") => Ok(true),
            Some("false") => Ok(false),
            _ => Err(precondition(format!(
                "invalid x-stream-automatic-offset-tracking {v:?}"
            ))),
        },
    }
}

/// What a tracking consumer has acked: the offset after the contiguous run of
/// acks (what is stored), and acked ranges past a gap (by first offset; an ack
/// settles its delivery and the records its filter skipped before it).
#[derive(Debug, Default)]
pub(super) struct Tracking {
    next: Option<u64>,
    ahead: std::collections::BTreeMap<u64, u64>,
}

impl Tracking {
    /// The first offset delivered to the consumer starts the run.
    pub(super) fn delivered(&mut self, first: u64) {
        self.next.get_or_insert(first);
    }

    /// Records the ack that settles `from..=offset`; answers the new contiguous
    /// end if it moved.
    fn acked(&mut self, from: u64, offset: u64) -> Option<u64> {
        let next = self.next.as_mut()?;
        if offset < *next {
            return None;
        }
        self.ahead.insert(from.max(*next), offset);
        let before = *next;
        while let Some(last) = self.ahead.remove(next) {
            *next = last + 1;
        }
        (*next > before).then_some(*next)
    }
}

impl Session {
    /// Settled deliveries of tracking consumers move their tracked offsets (an ack,
    /// or a nack or reject without requeue: the record was handled) and are taken
    /// out of what goes to the broker as acks.
    pub(super) fn track_settled(
        &mut self,
        ch: u16,
        taken: &mut [(u64, super::Unacked)],
        requeue: Option<bool>,
    ) {
        let mut moved: Vec<(String, String, u64)> = Vec::new();
        for (_, u) in taken.iter_mut() {
            let Some((tag, from, offset)) = super::consumer::parse_tracking(&u.receipt) else {
                continue;
            };
            let (tag, stream) = (tag.to_owned(), u.queue.to_string());
            u.receipt.clear();
            if requeue == Some(true) {
                continue;
            }
            let next = self
                .channels
                .get_mut(&ch)
                .and_then(|c| c.consumers.get_mut(&tag))
                .and_then(|k| k.tracking.as_mut())
                .and_then(|t| t.acked(from, offset));
            if let Some(next) = next {
                moved.retain(|(s, t, _)| !(*s == stream && *t == tag));
                moved.push((stream, tag, next));
            }
        }
        for (stream, tag, next) in moved {
            let broker = self.broker.clone();
            self.tasks.spawn(async move {
                if let Err(e) = broker.track_offset(&stream, &tag, next).await {
                    tracing::debug!(%stream, %tag, error = %e, "storing a tracked stream offset failed");
                }
            });
        }
    }
}

/// 540 for what a stream does not do.
pub(super) fn not_for_streams(what: &str, queue: &str) -> Exception {
    Exception::channel(
        NOT_IMPLEMENTED,
        format!("{what} not supported by stream queues (queue '{queue}')"),
    )
}

impl Session {
    /// `queue.declare` of a stream: declares it (or confirms an identical one) and
    /// answers `declare-ok` with no message or consumer count.
    pub(super) async fn declare_stream(
        &mut self,
        ch: u16,
        name: String,
        options: StreamOptions,
        nowait: bool,
    ) -> Result<(), Exception> {
        self.allow(Operation::Configure, "queue", &name)?;
        match self.broker.declare_stream(&name, options).await {
            Ok(Declared::Created | Declared::Existed) => {}
            Err(BrokerError::Conflict { difference, .. }) => {
                return Err(precondition(format!(
                    "inequivalent arg for queue '{name}': {difference}"
                )));
            }
            Err(e) => return Err(e.into()),
        }
        self.stream_declared(ch, name, nowait)
    }

    /// Answers `declare-ok` for stream `name`.
    pub(super) fn stream_declared(
        &mut self,
        ch: u16,
        name: String,
        nowait: bool,
    ) -> Result<(), Exception> {
        self.channel(ch)?.last_queue = Some(name.clone());
        if !nowait {
            self.conn.method(
                ch,
                AMQPClass::Queue(queue::AMQPMethod::DeclareOk(queue::DeclareOk {
                    queue: ShortString::from(name),
                    message_count: 0,
                    consumer_count: 0,
                })),
            );
        }
        Ok(())
    }

    /// `queue.delete` of a stream.
    pub(super) async fn delete_stream(
        &mut self,
        ch: u16,
        name: &str,
        nowait: bool,
    ) -> Result<(), Exception> {
        self.allow(Operation::Configure, "queue", name)?;
        match self.broker.delete_stream(name).await {
            Ok(()) | Err(BrokerError::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        if !nowait {
            self.conn.method(
                ch,
                AMQPClass::Queue(queue::AMQPMethod::DeleteOk(queue::DeleteOk {
                    message_count: 0,
                })),
            );
        }
        Ok(())
    }

    /// `basic.consume` on a stream.
    pub(super) fn consume_stream(
        &mut self,
        ch: u16,
        c: &basic::Consume,
        tag: String,
        queue: String,
    ) -> Result<(), Exception> {
        if c.no_ack {
            return Err(not_for_streams("automatic acknowledgement", &queue));
        }
        if let Ok(info) = self.broker.stream_info(&queue)
            && info.options.partitions > 1
        {
            let last = info.options.partitions - 1;
            return Err(precondition(format!(
                "stream '{queue}' has {} partitions: consume each as a stream queue                  '{queue}-0' .. '{queue}-{last}' (RabbitMQ's super-stream convention)",
                info.options.partitions
            )));
        }
        let mut from = start_of(&c.arguments)?;
        let filter = filter_of(&c.arguments)?;
        let tracked = tracking_of(&c.arguments)?;
        if tracked {
            if c.consumer_tag.as_str().is_empty() {
                return Err(precondition(
                    "x-stream-automatic-offset-tracking needs a consumer tag of the \
                     client's (the tag names the tracked offset)"
                        .to_owned(),
                ));
            }
            // Resume where the tag's acks left off, if they did.
            if let Some(next) = self
                .broker
                .tracked_offset(&queue, &tag)
                .map_err(Exception::from)?
            {
                from = ReadFrom::Offset(next);
            }
        }
        let stop = self.stop.child_token();
        let front_ends = self.front_ends.clone();
        let listed = self.registered.consuming(&self.key(&queue)?, &tag);
        let channel = self.channel(ch)?;
        let wants = channel.state.consumer_credit(false);
        if wants.shared {
            return Err(precondition(format!(
                "a global prefetch (basic.qos global) is not supported for stream queue '{queue}'"
            )));
        }
        let Some(prefetch) = wants.own else {
            return Err(precondition(format!(
                "consumer prefetch count is not set for stream queue '{queue}'"
            )));
        };
        let credit = Arc::new(Semaphore::new(usize::from(prefetch)));
        let flow = channel.flow.0.subscribe();
        let rewind = Rewind::default();
        let counted = front_ends.track(Protocol::Amqp, Held::Consumer);
        channel.consumers.insert(
            tag.clone(),
            Consumer {
                queue: queue.clone(),
                no_ack: false,
                credit: Some(credit.clone()),
                stop: stop.clone(),
                _use: None,
                tracking: tracked.then(Tracking::default),
                rewind: Some(rewind.clone()),
                _counted: counted,
                _listed: listed,
            },
        );
        if !c.nowait {
            self.conn.method(
                ch,
                AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(basic::ConsumeOk {
                    consumer_tag: ShortString::from(tag.clone()),
                })),
            );
        }
        let generation = self.channel(ch)?.generation;
        let tracked = tracked.then(|| tag.clone());
        self.tasks.spawn(consume_loop(ConsumerTask {
            broker: self.broker.clone(),
            queue,
            channel: ch,
            generation,
            consumer: tag,
            credit: Some(credit),
            shared: None,
            bytes: self.credit.clone(),
            stop,
            // No single active consumer on a stream: no turn to wait for.
            gates: Gates { flow, active: None },
            events: self.events_tx.clone(),
            lease_ms: self.config.lease_ms(),
            source: Source::Stream {
                from,
                filter,
                tracked,
                covered: None,
                rewind,
            },
        }));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_and_offsets_read_as_rabbitmq_writes_them() {
        assert_eq!(interval_ms("7D"), Some(7 * 86_400_000));
        assert_eq!(interval_ms("12h"), Some(12 * 3_600_000));
        assert_eq!(interval_ms("30m"), Some(1_800_000));
        assert_eq!(interval_ms("10s"), Some(10_000));
        assert_eq!(interval_ms("1Y"), Some(365 * 86_400_000));
        assert_eq!(interval_ms("x"), None);
        assert_eq!(interval_ms("5w"), None);
        let args = |v: AMQPValue| {
            let mut t = FieldTable::default();
            t.insert("x-stream-offset".into(), v);
            t
        };
        assert_eq!(start_of(&FieldTable::default()).unwrap(), ReadFrom::Next);
        assert_eq!(
            start_of(&args(AMQPValue::LongString("first".into()))).unwrap(),
            ReadFrom::First
        );
        assert_eq!(
            start_of(&args(AMQPValue::LongInt(5))).unwrap(),
            ReadFrom::Offset(5)
        );
        assert_eq!(
            start_of(&args(AMQPValue::Timestamp(10))).unwrap(),
            ReadFrom::Time(10_000)
        );
        assert_eq!(
            start_of(&args(AMQPValue::LongString("1h".into()))).unwrap(),
            ReadFrom::Ago(3_600_000)
        );
        assert!(start_of(&args(AMQPValue::LongInt(-1))).is_err());
        assert!(start_of(&args(AMQPValue::LongString("soon".into()))).is_err());
    }
}

#[cfg(test)]
mod tracking_tests {
    use super::Tracking;

    #[test]
    fn the_tracked_offset_moves_over_contiguous_acks_only() {
        let mut t = Tracking::default();
        assert_eq!(t.acked(3, 3), None, "nothing delivered yet");
        t.delivered(3);
        assert_eq!(t.acked(4, 4), None, "3 is not acked yet");
        assert_eq!(t.acked(3, 3), Some(5), "3 and 4 are");
        assert_eq!(t.acked(4, 4), None, "an ack again changes nothing");
        assert_eq!(t.acked(6, 6), None);
        assert_eq!(t.acked(5, 5), Some(7));
    }

    #[test]
    fn an_ack_also_settles_the_records_its_filter_skipped() {
        let mut t = Tracking::default();
        // Deliveries 2 (0 and 1 skipped), 5 (3 and 4 skipped), 6.
        t.delivered(0);
        assert_eq!(t.acked(6, 6), None);
        assert_eq!(t.acked(3, 5), None, "0..=2 are not acked yet");
        assert_eq!(t.acked(0, 2), Some(7), "now all of 0..=6 are");
    }
}
