//! RabbitMQ's queue `x-` arguments and weir's [`QueueOptions`], both ways, for
//! every front end: AMQP's `queue.declare` reads them from a field table, a
//! definitions import from JSON, a definitions export writes them back. Each front
//! end turns its own value type into an [`ArgValue`] and an [`ArgError`] into its
//! own refusal.

use serde_json::{Value, json};

use crate::api::{Overflow, QueueOptions};

/// An argument's value, as either front end carries it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ArgValue {
    /// Any integer type.
    Int(i128),
    /// A string (AMQP's long or short string).
    Text(String),
    /// A boolean.
    Bool(bool),
    /// Anything else (a table, an array, a float...).
    Other,
}

impl ArgValue {
    fn non_negative(&self) -> Option<u64> {
        match self {
            ArgValue::Int(n) => u64::try_from(*n).ok(),
            _ => None,
        }
    }

    fn text(&self) -> Option<&str> {
        match self {
            ArgValue::Text(s) => Some(s),
            _ => None,
        }
    }
}

impl From<&Value> for ArgValue {
    fn from(v: &Value) -> ArgValue {
        match v {
            Value::Number(n) => n
                .as_i64()
                .map(i128::from)
                .or_else(|| n.as_u64().map(i128::from))
                .map_or(ArgValue::Other, ArgValue::Int),
            Value::String(s) => ArgValue::Text(s.clone()),
            Value::Bool(b) => ArgValue::Bool(*b),
            _ => ArgValue::Other,
        }
    }
}

/// A bad argument value: `invalid arg '{name}': {what}`, as RabbitMQ words it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid arg '{name}': {what}")]
pub struct ArgError {
    /// The argument.
    pub name: String,
    /// What it should have been.
    pub what: String,
}

/// Applies one argument to `options`. Arguments weir has nothing to do for
/// (RabbitMQ's storage and cluster tuning, unknown keys) change nothing, as
/// RabbitMQ ignores unknown keys.
///
/// # Errors
/// [`ArgError`] for a value of the wrong type or range, or a queue type weir does
/// not have.
pub fn apply_queue_argument(
    options: &mut QueueOptions,
    name: &str,
    value: &ArgValue,
) -> Result<(), ArgError> {
    let bad = |what: &str| ArgError {
        name: name.to_owned(),
        what: what.to_owned(),
    };
    match name {
        "x-message-ttl" => {
            let ms = value
                .non_negative()
                .ok_or_else(|| bad("a non-negative integer"))?;
            options.message_ttl_ms = Some(ms.max(1));
        }
        "x-max-length" => {
            options.max_length = Some(
                value
                    .non_negative()
                    .ok_or_else(|| bad("a non-negative integer"))?,
            );
        }
        "x-max-length-bytes" => {
            options.max_length_bytes = Some(
                value
                    .non_negative()
                    .ok_or_else(|| bad("a non-negative integer"))?,
            );
        }
        "x-overflow" => {
            options.overflow = match value.text() {
                Some("drop-head") => Overflow::DropHead,
                Some("reject-publish") => Overflow::RejectPublish,
                Some("reject-publish-dlx") => Overflow::RejectPublishDlx,
                _ => return Err(bad("drop-head, reject-publish or reject-publish-dlx")),
            };
        }
        "x-max-priority" => {
            let p = value
                .non_negative()
                .ok_or_else(|| bad("an integer 0..=255"))?;
            options.max_priority = u8::try_from(p).map_err(|_| bad("an integer 0..=255"))?;
        }
        "x-delivery-limit" => {
            let n = value
                .non_negative()
                .ok_or_else(|| bad("a non-negative integer"))?;
            // RabbitMQ counts redeliveries; weir counts deliveries.
            options.max_deliveries = Some(u32::try_from(n.saturating_add(1)).unwrap_or(u32::MAX));
        }
        "x-dead-letter-exchange" => {
            options.dead_letter_exchange =
                Some(value.text().ok_or_else(|| bad("a string"))?.into());
        }
        "x-dead-letter-routing-key" => {
            options.dead_letter_routing_key =
                Some(value.text().ok_or_else(|| bad("a string"))?.into());
        }
        "x-queue-type" => match value.text() {
            Some("classic" | "quorum") => {}
            Some(other) => {
                return Err(bad(&format!(
                    "queue type '{other}' is not supported (classic and quorum are weir work \
                     queues; stream is a stream)"
                )));
            }
            None => return Err(bad("a string")),
        },
        "x-expires" => {
            // RabbitMQ refuses 0: a queue must live at least a millisecond.
            let ms = value
                .non_negative()
                .filter(|ms| *ms > 0)
                .ok_or_else(|| bad("a positive integer"))?;
            options.expires_ms = Some(ms);
        }
        "x-single-active-consumer" => match value {
            ArgValue::Bool(on) => options.single_active_consumer = *on,
            _ => return Err(bad("a boolean")),
        },
        // RabbitMQ's storage and cluster tuning (x-queue-mode, x-queue-version,
        // x-queue-master-locator; for quorum queues x-max-in-memory-*,
        // x-quorum-initial-group-size, x-queue-leader-locator,
        // x-dead-letter-strategy) and unknown keys: nothing to do.
        _ => {}
    }
    Ok(())
}

/// The `x-` arguments RabbitMQ would need for what `options` does, as JSON (a
/// definitions export). Options RabbitMQ has no argument for (visibility timeout,
/// retries, `dead_letter_queue`, de-duplication) are left out.
pub fn rabbitmq_arguments(options: &QueueOptions) -> serde_json::Map<String, Value> {
    let mut out = serde_json::Map::new();
    let mut put = |name: &str, value: Value| {
        out.insert(name.to_owned(), value);
    };
    if let Some(ms) = options.message_ttl_ms {
        put("x-message-ttl", json!(ms));
    }
    if let Some(n) = options.max_length {
        put("x-max-length", json!(n));
    }
    if let Some(n) = options.max_length_bytes {
        put("x-max-length-bytes", json!(n));
    }
    match options.overflow {
        // RabbitMQ's default; `dead-letter` is weir's own and has no argument.
        Overflow::DropHead | Overflow::DeadLetter => {}
        Overflow::RejectPublish => put("x-overflow", json!("reject-publish")),
        Overflow::RejectPublishDlx => put("x-overflow", json!("reject-publish-dlx")),
    }
    if options.max_priority > 0 {
        put("x-max-priority", json!(options.max_priority));
    }
    if let Some(n) = options.max_deliveries {
        put("x-delivery-limit", json!(n.saturating_sub(1)));
    }
    if let Some(dlx) = &options.dead_letter_exchange {
        put("x-dead-letter-exchange", json!(dlx));
    }
    if let Some(key) = &options.dead_letter_routing_key {
        put("x-dead-letter-routing-key", json!(key));
    }
    if let Some(ms) = options.expires_ms {
        put("x-expires", json!(ms));
    }
    if options.single_active_consumer {
        put("x-single-active-consumer", json!(true));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_map_to_options_and_back() {
        let mut options = QueueOptions::default();
        let args = json!({
            "x-message-ttl": 60000, "x-max-length": 10, "x-overflow": "reject-publish",
            "x-max-priority": 9, "x-delivery-limit": 3, "x-dead-letter-exchange": "dlx",
            "x-expires": 5000, "x-single-active-consumer": true, "x-queue-type": "quorum",
            "x-queue-mode": "lazy"
        });
        for (name, value) in args.as_object().unwrap() {
            apply_queue_argument(&mut options, name, &ArgValue::from(value)).unwrap();
        }
        assert_eq!(options.max_deliveries, Some(4));
        assert_eq!(options.overflow, Overflow::RejectPublish);
        let back = rabbitmq_arguments(&options);
        for key in [
            "x-message-ttl",
            "x-max-length",
            "x-overflow",
            "x-max-priority",
            "x-delivery-limit",
            "x-dead-letter-exchange",
            "x-expires",
            "x-single-active-consumer",
        ] {
            assert_eq!(back[key], args[key], "{key}");
        }
        assert!(!back.contains_key("x-queue-mode"));
    }

    #[test]
    fn bad_values_are_refused_with_rabbitmq_words() {
        let mut options = QueueOptions::default();
        let e = apply_queue_argument(&mut options, "x-max-length", &ArgValue::Int(-1)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid arg 'x-max-length': a non-negative integer"
        );
        let e = apply_queue_argument(
            &mut options,
            "x-queue-type",
            &ArgValue::Text("stream".into()),
        )
        .unwrap_err();
        assert!(e.what.contains("'stream' is not supported"), "{e}");
        assert!(
            apply_queue_argument(&mut options, "x-expires", &ArgValue::Int(0)).is_err(),
            "a queue lives at least a millisecond"
        );
    }
}
