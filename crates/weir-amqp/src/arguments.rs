//! RabbitMQ's `x-` arguments, mapped to weir's queue and exchange options.
//!
//! An argument weir implements changes the options; one it does not implement yet
//! is refused with 540 NOT_IMPLEMENTED and says so, instead of being ignored; a
//! bad value is 406 PRECONDITION_FAILED. Arguments that only tune RabbitMQ's own
//! storage (`x-queue-mode`, `x-queue-version`, `x-queue-master-locator`) have
//! nothing to tune here and are accepted. Unknown non-`x-` keys are ignored, as
//! RabbitMQ does.

use std::collections::BTreeMap;

use amq_protocol::types::{AMQPValue, FieldTable, ShortString};
use weir_broker::{Binding, DestinationType, Overflow, QueueOptions};

use crate::codes::{Exception, NOT_IMPLEMENTED, PRECONDITION_FAILED};

/// The options of a queue declared with `arguments`.
pub(crate) fn queue_options(arguments: &FieldTable) -> Result<QueueOptions, Exception> {
    let mut options = QueueOptions::default();
    for (name, value) in arguments {
        let name = name.as_str();
        let bad = |what: &str| {
            Exception::channel(PRECONDITION_FAILED, format!("invalid arg '{name}': {what}"))
        };
        match name {
            "x-message-ttl" => {
                let ms = non_negative(value).ok_or_else(|| bad("a non-negative integer"))?;
                options.message_ttl_ms = Some(ms.max(1));
            }
            "x-max-length" => {
                options.max_length =
                    Some(non_negative(value).ok_or_else(|| bad("a non-negative integer"))?);
            }
            "x-max-length-bytes" => {
                options.max_length_bytes =
                    Some(non_negative(value).ok_or_else(|| bad("a non-negative integer"))?);
            }
            "x-overflow" => {
                options.overflow = match text(value).as_deref() {
                    Some("drop-head") => Overflow::DropHead,
                    Some("reject-publish") => Overflow::RejectPublish,
                    Some("reject-publish-dlx") => Overflow::RejectPublishDlx,
                    _ => return Err(bad("drop-head, reject-publish or reject-publish-dlx")),
                };
            }
            "x-max-priority" => {
                let p = non_negative(value).ok_or_else(|| bad("an integer 0..=255"))?;
                options.max_priority = u8::try_from(p).map_err(|_| bad("an integer 0..=255"))?;
            }
            "x-delivery-limit" => {
                let n = non_negative(value).ok_or_else(|| bad("a non-negative integer"))?;
                // RabbitMQ counts redeliveries; weir counts deliveries.
                options.max_deliveries =
                    Some(u32::try_from(n.saturating_add(1)).unwrap_or(u32::MAX));
            }
            "x-dead-letter-exchange" => {
                options.dead_letter_exchange = Some(text(value).ok_or_else(|| bad("a string"))?);
            }
            "x-dead-letter-routing-key" => {
                options.dead_letter_routing_key = Some(text(value).ok_or_else(|| bad("a string"))?);
            }
            "x-queue-type" => match text(value).as_deref() {
                Some("classic" | "quorum") => {}
                Some(other) => {
                    return Err(bad(&format!(
                        "queue type '{other}' is not supported (classic and quorum are weir work queues)"
                    )));
                }
                None => return Err(bad("a string")),
            },
            "x-expires" => {
                // RabbitMQ refuses 0: a queue must live at least a millisecond.
                let ms = non_negative(value)
                    .filter(|ms| *ms > 0)
                    .ok_or_else(|| bad("a positive integer"))?;
                options.expires_ms = Some(ms);
            }
            "x-single-active-consumer" => match value {
                AMQPValue::Boolean(on) => options.single_active_consumer = *on,
                _ => return Err(bad("a boolean")),
            },
            "x-max-in-memory-length"
            | "x-max-in-memory-bytes"
            | "x-stream-max-segment-size-bytes"
            | "x-max-age" => return Err(not_yet(name, "this argument")),
            // RabbitMQ's storage tuning (x-queue-mode, x-queue-version,
            // x-queue-master-locator) and unknown keys: nothing to do.
            _ => {}
        }
    }
    options
        .validate("queue")
        .map_err(|e| Exception::channel(PRECONDITION_FAILED, e.to_string()))?;
    Ok(options)
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

fn not_yet(name: &str, what: &str) -> Exception {
    Exception::channel(
        NOT_IMPLEMENTED,
        format!("{what} ('{name}') is not supported by weir yet"),
    )
}

fn non_negative(v: &AMQPValue) -> Option<u64> {
    let n: i128 = match v {
        AMQPValue::ShortShortInt(n) => (*n).into(),
        AMQPValue::ShortShortUInt(n) => (*n).into(),
        AMQPValue::ShortInt(n) => (*n).into(),
        AMQPValue::ShortUInt(n) => (*n).into(),
        AMQPValue::LongInt(n) => (*n).into(),
        AMQPValue::LongUInt(n) => (*n).into(),
        AMQPValue::LongLongInt(n) => (*n).into(),
        AMQPValue::Timestamp(n) => (*n).into(),
        _ => return None,
    };
    u64::try_from(n).ok()
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
        assert_eq!(o.overflow, Overflow::RejectPublish);
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
        let e = queue_options(&table(&[("x-max-age", AMQPValue::LongString("1D".into()))]))
            .unwrap_err();
        assert_eq!(e.code, NOT_IMPLEMENTED);
        assert!(queue_options(&table(&[("other", AMQPValue::Boolean(true))])).is_ok());
    }
}
