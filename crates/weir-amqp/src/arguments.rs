//! RabbitMQ's `x-` arguments, mapped to weir's queue and exchange options.
//!
//! An argument weir implements changes the options; one it does not implement yet
//! is refused with 540 NOT_IMPLEMENTED and says so, instead of being ignored; a
//! bad value is 406 PRECONDITION_FAILED. An argument RabbitMQ 3.10 refuses for the
//! queue's type is 406 as there (`check_type_arguments`). Arguments that only tune
//! RabbitMQ's own storage or cluster have nothing to tune here and are accepted
//! where RabbitMQ accepts them. Unknown keys are ignored, as RabbitMQ does; so are
//! consume arguments, once `check_consume_arguments` has checked the known ones.

use std::collections::BTreeMap;

use amq_protocol::types::{AMQPValue, FieldTable, ShortString};
use weir_broker::queue_arguments::{ArgValue, apply_queue_argument};
use weir_broker::{Binding, DestinationType, QueueOptions};

use crate::codes::{Exception, PRECONDITION_FAILED};

/// The options of a queue declared with `arguments` (the mapping is the broker's,
/// [`weir_broker::queue_arguments`], shared with definitions imports).
pub(crate) fn queue_options(arguments: &FieldTable) -> Result<QueueOptions, Exception> {
    let mut options = QueueOptions::default();
    for (name, value) in arguments {
        apply_queue_argument(&mut options, name.as_str(), &arg_value(value))
            .map_err(|e| Exception::channel(PRECONDITION_FAILED, e.to_string()))?;
    }
    options
        .validate("queue")
        .map_err(|e| Exception::channel(PRECONDITION_FAILED, e.to_string()))?;
    Ok(options)
}

/// An AMQP field value as the broker's argument mapping takes it.
fn arg_value(v: &AMQPValue) -> ArgValue {
    if let AMQPValue::Boolean(b) = v {
        return ArgValue::Bool(*b);
    }
    if let Some(s) = text(v) {
        return ArgValue::Text(s);
    }
    integer(v).map_or(ArgValue::Other, ArgValue::Int)
}

/// Arguments RabbitMQ 3.10 refuses for a queue type (its `invalid_arguments`
/// per type): 406 PRECONDITION_FAILED, as there. Stream arguments are refused for
/// both types weir has; the quorum-only ones for classic queues, and classic
/// storage tuning for quorum queues. Where weir implements an argument for both
/// types (`x-delivery-limit` on classic, `x-max-priority` on quorum) it takes it:
/// a client that works with RabbitMQ never sends those.
pub(crate) fn check_type_arguments(queue: &str, arguments: &FieldTable) -> Result<(), Exception> {
    const STREAM: [&str; 3] = [
        "x-max-age",
        "x-stream-max-segment-size-bytes",
        "x-initial-cluster-size",
    ];
    const QUORUM_ONLY: [&str; 5] = [
        "x-max-in-memory-length",
        "x-max-in-memory-bytes",
        "x-dead-letter-strategy",
        "x-quorum-initial-group-size",
        "x-queue-leader-locator",
    ];
    const CLASSIC_ONLY: [&str; 3] = ["x-queue-mode", "x-queue-version", "x-queue-master-locator"];
    // `queue` is broker-wide: the texts name its vhost as RabbitMQ's do.
    let (vhost, queue) = weir_broker::vhost::split(queue);
    let quorum = arguments
        .inner()
        .get("x-queue-type")
        .and_then(text)
        .is_some_and(|t| t == "quorum");
    let (refused, kind): (&[&str], &str) = if quorum {
        (&CLASSIC_ONLY, "rabbit_quorum_queue")
    } else {
        (&QUORUM_ONLY, "rabbit_classic_queue")
    };
    for (name, _) in arguments {
        let name = name.as_str();
        if STREAM.contains(&name) || refused.contains(&name) {
            return Err(Exception::channel(
                PRECONDITION_FAILED,
                format!(
                    "invalid arg '{name}' for queue '{queue}' in vhost '{vhost}' of queue type {kind}"
                ),
            ));
        }
    }
    Ok(())
}

/// Checks `basic.consume`'s arguments as RabbitMQ's `consume_args` does:
/// `x-priority` is an integer and `x-cancel-on-ha-failover` a boolean (weir has
/// neither consumer priorities nor mirrors, so both are otherwise ignored), and
/// `x-stream-offset` is for streams; anything else is ignored.
pub(crate) fn check_consume_arguments(
    queue: &str,
    arguments: &FieldTable,
) -> Result<(), Exception> {
    let (vhost, queue) = weir_broker::vhost::split(queue);
    for (name, value) in arguments {
        let invalid = |what: String| {
            Exception::channel(
                PRECONDITION_FAILED,
                format!(
                    "invalid arg '{}' for queue '{queue}' in vhost '{vhost}': {what}",
                    name.as_str()
                ),
            )
        };
        match name.as_str() {
            "x-priority" => {
                let integer = matches!(
                    value,
                    AMQPValue::ShortShortInt(_)
                        | AMQPValue::ShortShortUInt(_)
                        | AMQPValue::ShortInt(_)
                        | AMQPValue::ShortUInt(_)
                        | AMQPValue::LongInt(_)
                        | AMQPValue::LongUInt(_)
                        | AMQPValue::LongLongInt(_)
                );
                if !integer {
                    return Err(invalid("\"expected integer\"".into()));
                }
            }
            "x-cancel-on-ha-failover" if !matches!(value, AMQPValue::Boolean(_)) => {
                return Err(invalid("unacceptable_type".into()));
            }
            "x-stream-offset" => {
                return Err(Exception::channel(
                    PRECONDITION_FAILED,
                    format!(
                        "invalid arg 'x-stream-offset' for queue '{queue}' in vhost '{vhost}' of \
                         queue type rabbit_classic_queue"
                    ),
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

/// The binding a bind or unbind method names.
pub(crate) fn binding(
    source: &str,
    destination: &str,
    destination_type: DestinationType,
    routing_key: &ShortString,
    arguments: &FieldTable,
) -> Binding {
    Binding {
        source: source.to_owned(),
        destination: destination.to_owned(),
        destination_type,
        routing_key: routing_key.as_str().to_owned(),
        arguments: binding_arguments(arguments),
    }
}

/// Binding arguments (headers exchanges) as the broker keeps them: strings.
fn binding_arguments(arguments: &FieldTable) -> BTreeMap<String, String> {
    arguments
        .into_iter()
        .filter_map(|(k, v)| {
            text(v)
                .or_else(|| number(v))
                .map(|v| (k.as_str().to_owned(), v))
        })
        .collect()
}

fn non_negative(v: &AMQPValue) -> Option<u64> {
    integer(v).and_then(|n| u64::try_from(n).ok())
}

fn integer(v: &AMQPValue) -> Option<i128> {
    Some(match v {
        AMQPValue::ShortShortInt(n) => (*n).into(),
        AMQPValue::ShortShortUInt(n) => (*n).into(),
        AMQPValue::ShortInt(n) => (*n).into(),
        AMQPValue::ShortUInt(n) => (*n).into(),
        AMQPValue::LongInt(n) => (*n).into(),
        AMQPValue::LongUInt(n) => (*n).into(),
        AMQPValue::LongLongInt(n) => (*n).into(),
        AMQPValue::Timestamp(n) => (*n).into(),
        _ => return None,
    })
}

fn text(v: &AMQPValue) -> Option<String> {
    match v {
        AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok().map(str::to_owned),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

fn number(v: &AMQPValue) -> Option<String> {
    match v {
        AMQPValue::Boolean(b) => Some(b.to_string()),
        AMQPValue::LongLongInt(n) => Some(n.to_string()),
        other => non_negative(other).map(|n| n.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(items: &[(&str, AMQPValue)]) -> FieldTable {
        let mut t = FieldTable::default();
        for (k, v) in items {
            t.insert((*k).into(), v.clone());
        }
        t
    }

    #[test]
    fn rabbitmq_arguments_become_weir_options() {
        let o = queue_options(&table(&[
            ("x-message-ttl", AMQPValue::LongInt(60_000)),
            ("x-max-length", AMQPValue::LongLongInt(10)),
            ("x-overflow", AMQPValue::LongString("reject-publish".into())),
            ("x-max-priority", AMQPValue::ShortShortUInt(9)),
            ("x-delivery-limit", AMQPValue::LongInt(3)),
            ("x-queue-type", AMQPValue::LongString("quorum".into())),
            ("x-expires", AMQPValue::LongInt(5_000)),
            ("x-single-active-consumer", AMQPValue::Boolean(true)),
        ]))
        .unwrap();
        assert_eq!(o.expires_ms, Some(5_000));
        assert!(o.single_active_consumer);
        assert_eq!(o.message_ttl_ms, Some(60_000));
        assert_eq!(o.max_length, Some(10));
        assert_eq!(o.overflow, weir_broker::Overflow::RejectPublish);
        assert_eq!(o.max_priority, 9);
        assert_eq!(o.max_deliveries, Some(4));
    }

    #[test]
    fn unsupported_and_bad_arguments_are_refused_clearly() {
        let e = queue_options(&table(&[(
            "x-queue-type",
            AMQPValue::LongString("stream".into()),
        )]))
        .unwrap_err();
        assert_eq!(e.code, PRECONDITION_FAILED);
        let e = queue_options(&table(&[("x-max-length", AMQPValue::LongInt(-1))])).unwrap_err();
        assert_eq!(e.code, PRECONDITION_FAILED);
        let e = queue_options(&table(&[("x-expires", AMQPValue::LongInt(0))])).unwrap_err();
        assert_eq!(e.code, PRECONDITION_FAILED);
        let e = queue_options(&table(&[(
            "x-single-active-consumer",
            AMQPValue::LongInt(1),
        )]))
        .unwrap_err();
        assert_eq!(e.code, PRECONDITION_FAILED);
        assert!(queue_options(&table(&[("other", AMQPValue::Boolean(true))])).is_ok());
    }

    #[test]
    fn arguments_of_other_queue_types_are_refused_as_rabbitmq_does() {
        let check = |items: &[(&str, AMQPValue)]| check_type_arguments("q", &table(items));
        let quorum = || ("x-queue-type", AMQPValue::LongString("quorum".into()));
        let e = check(&[("x-max-age", AMQPValue::LongString("1D".into()))]).unwrap_err();
        assert_eq!(e.code, PRECONDITION_FAILED);
        assert_eq!(
            e.text,
            "invalid arg 'x-max-age' for queue 'q' in vhost '/' of queue type rabbit_classic_queue"
        );
        let in_memory = || ("x-max-in-memory-length", AMQPValue::LongInt(5));
        assert!(check(&[in_memory()]).is_err());
        assert!(check(&[in_memory(), quorum()]).is_ok());
        assert!(queue_options(&table(&[in_memory(), quorum()])).is_ok());
        let lazy = || ("x-queue-mode", AMQPValue::LongString("lazy".into()));
        assert!(check(&[lazy()]).is_ok());
        let e = check(&[lazy(), quorum()]).unwrap_err();
        assert!(
            e.text.ends_with("of queue type rabbit_quorum_queue"),
            "{}",
            e.text
        );
        // What weir implements for both types is taken for both.
        assert!(check(&[("x-delivery-limit", AMQPValue::LongInt(3))]).is_ok());
        assert!(check(&[("x-max-priority", AMQPValue::LongInt(3)), quorum()]).is_ok());
        assert!(check(&[("x-foo", AMQPValue::LongInt(3)), quorum()]).is_ok());
    }

    #[test]
    fn consume_arguments_are_checked_as_rabbitmq_does() {
        let check = |items: &[(&str, AMQPValue)]| check_consume_arguments("q", &table(items));
        assert!(check(&[("x-priority", AMQPValue::LongInt(5))]).is_ok());
        let e = check(&[("x-priority", AMQPValue::LongString("high".into()))]).unwrap_err();
        assert_eq!(e.code, PRECONDITION_FAILED);
        assert!(check(&[("x-cancel-on-ha-failover", AMQPValue::Boolean(true))]).is_ok());
        assert!(check(&[("x-cancel-on-ha-failover", AMQPValue::LongInt(5))]).is_err());
        assert!(check(&[("x-stream-offset", AMQPValue::LongInt(5))]).is_err());
        assert!(check(&[("x-foo", AMQPValue::LongInt(5))]).is_ok());
    }
}
