//! How an AMQP message is kept in the broker and given back.
//!
//! The broker stores a front end's description of a message as opaque bytes
//! ([`SendMessage::properties`]). Here they are
//!
//! ```text
//! version u8 = 1 | exchange: u8 length + bytes | routing key: u8 length + bytes |
//! basic properties, encoded as in a content header (flags, then the fields)
//! ```
//!
//! so every property and every header value (all field-table types) comes back as it
//! was published. Besides, the properties the broker understands are mapped to its
//! own fields: `message-id` is the message id (and de-duplication key),
//! `priority`, `expiration` (ms, a per-message TTL), an `x-delay` header (ms, a
//! delay, no plugin needed), and string-valued headers become the message's headers,
//! so an HTTP consumer sees them. A message sent over HTTP has no description: it
//! is delivered from the default exchange with its queue's name as routing key and
//! its headers as long strings.

use amq_protocol::frame::WriteContext;
use amq_protocol::protocol::basic::{AMQPProperties, gen_properties, parse_properties};
use amq_protocol::types::{AMQPValue, FieldArray, FieldTable, LongString, ShortString};
use bytes::Bytes;
use weir_broker::stream::{PROPERTIES_HEADER, RESERVED_HEADER_PREFIX, StreamRecord};
use weir_broker::{DeadLetterInfo, Delivery, SendMessage};

use crate::codes::{Exception, PRECONDITION_FAILED};
use crate::tables;

const VERSION: u8 = 1;

/// A published message as the broker takes it.
pub(crate) fn to_send(
    exchange: &str,
    routing_key: &str,
    properties: &AMQPProperties,
    body: Bytes,
) -> Result<SendMessage, Exception> {
    let blob = encode(exchange, routing_key, properties)?;
    let mut message = SendMessage {
        body,
        properties: Some(blob),
        priority: *properties.priority(),
        ..SendMessage::default()
    };
    if let Some(id) = properties.message_id()
        && (1..=256).contains(&id.as_str().len())
    {
        message.id = Some(id.as_str().to_owned());
    }
    if let Some(expiration) = properties.expiration() {
        let ms: u64 = expiration.as_str().trim().parse().map_err(|_| {
            Exception::channel(
                PRECONDITION_FAILED,
                format!(
                    "invalid expiration '{}': milliseconds expected",
                    expiration.as_str()
                ),
            )
        })?;
        // 0 means "now or never": the shortest TTL the broker has.
        message.ttl_ms = Some(ms.max(1));
    }
    if let Some(headers) = properties.headers() {
        for (name, value) in headers {
            if name.as_str() == "x-delay" {
                if let Some(ms) = as_integer(value).and_then(|ms| u64::try_from(ms).ok()) {
                    message.delay_ms = Some(ms).filter(|ms| *ms > 0);
                }
                continue;
            }
            if name.as_str().starts_with('\0') {
                continue;
            }
            if let Some(text) = as_text(value) {
                message.headers.insert(name.as_str().to_owned(), text);
            }
        }
    }
    Ok(message)
}

/// The stored description of a message: the version, exchange, routing key and
/// properties (see the module doc).
fn encode(
    exchange: &str,
    routing_key: &str,
    properties: &AMQPProperties,
) -> Result<Bytes, Exception> {
    let mut blob = Vec::with_capacity(64 + exchange.len() + routing_key.len());
    blob.push(VERSION);
    blob.push(exchange.len() as u8);
    blob.extend_from_slice(exchange.as_bytes());
    blob.push(routing_key.len() as u8);
    blob.extend_from_slice(routing_key.as_bytes());
    // The properties go after the prefix, into the same buffer.
    gen_properties(properties)(WriteContext::from(blob))
        .map(|ctx| Bytes::from(ctx.write))
        .map_err(|_| {
            Exception::channel(PRECONDITION_FAILED, "the message properties do not encode")
        })
}

/// A stream record as an AMQP delivery, as RabbitMQ's stream queues give them: the
/// properties it was published with over AMQP (or, appended over HTTP, its headers
/// as long strings, from the default exchange with the stream's name as routing
/// key), plus an `x-stream-offset` header with its offset. No receipt: a stream
/// consumer's ack only returns credit.
pub(crate) fn stream_delivery(r: &StreamRecord, stream: &str) -> Delivery {
    let stored = r
        .headers
        .get(PROPERTIES_HEADER)
        .and_then(|blob| decode(blob));
    let (exchange, routing_key, properties) = stored.unwrap_or_else(|| {
        let mut headers = FieldTable::default();
        for (name, value) in &r.headers {
            if name.len() <= 255 && !name.starts_with(RESERVED_HEADER_PREFIX) {
                headers.insert(
                    ShortString::from(name.as_str()),
                    AMQPValue::LongString(LongString::from(value.to_vec())),
                );
            }
        }
        let properties = AMQPProperties::default()
            .with_headers(headers)
            .with_delivery_mode(2)
            .with_timestamp(u64::try_from(r.timestamp_ms / 1000).unwrap_or(0));
        (String::new(), stream.to_owned(), properties)
    });
    let mut headers = properties.headers().clone().unwrap_or_default();
    headers.insert(
        "x-stream-offset".into(),
        AMQPValue::LongLongInt(i64::try_from(r.offset).unwrap_or(i64::MAX)),
    );
    let properties = properties.with_headers(headers);
    Delivery {
        receipt: None,
        id: r.offset.to_string(),
        body: r.body.clone(),
        headers: std::collections::BTreeMap::new(),
        priority: 0,
        group: None,
        delivery_count: 1,
        enqueued_at_ms: r.timestamp_ms,
        dead_letter: None,
        properties: encode(&exchange, &routing_key, &properties).ok(),
        position: None,
    }
}

/// The exchange, routing key and properties to deliver `d` with, from queue `queue`.
pub(crate) fn from_delivery(d: &Delivery, queue: &str) -> (String, String, AMQPProperties) {
    let (exchange, routing_key, properties) = stored_or_built(d, queue);
    match &d.dead_letter {
        Some(death) => {
            // A dead letter was republished through its dead-letter exchange with
            // the dead-letter routing key (or its own), as RabbitMQ does.
            let (exchange, routing_key) = match death.routing_keys.first() {
                Some(key) => (death.exchange.clone(), key.clone()),
                None => (exchange, routing_key),
            };
            (exchange, routing_key, with_death(properties, death))
        }
        None => (exchange, routing_key, properties),
    }
}

/// A dead letter's properties as RabbitMQ 3.x gives them (`rabbit_dead_letter`):
/// the `x-death` array, one table per (queue, reason) with its count, the most
/// recent first; `x-first-death-queue`, `-reason` and `-exchange`; no
/// `expiration` (the per-message TTL does not follow a dead letter; the death it
/// caused keeps it as `original-expiration`).
fn with_death(properties: AMQPProperties, death: &DeadLetterInfo) -> AMQPProperties {
    let long = |s: &str| AMQPValue::LongString(LongString::from(s.as_bytes().to_vec()));
    // Only the first death can have had one: RabbitMQ drops it when it
    // dead-letters (a consumer may republish a dead letter with one, which weir
    // does not take apart).
    let expiration = properties.expiration().clone();
    let first = &death.first_death;
    let entries = death
        .deaths
        .iter()
        .map(|d| {
            let mut entry = FieldTable::default();
            entry.insert(
                "count".into(),
                AMQPValue::LongLongInt(i64::try_from(d.count).unwrap_or(i64::MAX)),
            );
            entry.insert("reason".into(), long(d.reason.rabbitmq_name()));
            entry.insert("queue".into(), long(&d.queue));
            entry.insert(
                "time".into(),
                AMQPValue::Timestamp(u64::try_from(d.time_ms / 1000).unwrap_or(0)),
            );
            entry.insert("exchange".into(), long(&d.exchange));
            entry.insert(
                "routing-keys".into(),
                AMQPValue::FieldArray(FieldArray::from(
                    d.routing_keys.iter().map(|k| long(k)).collect::<Vec<_>>(),
                )),
            );
            if let Some(expiration) = &expiration
                && d.queue == first.queue
                && d.reason == first.reason
            {
                entry.insert("original-expiration".into(), long(expiration.as_str()));
            }
            AMQPValue::FieldTable(entry)
        })
        .collect::<Vec<_>>();
    let mut headers = properties.headers().clone().unwrap_or_default();
    // A consumer that republished a dead letter kept its `x-death`: RabbitMQ
    // goes on counting in it, so the deaths since then are merged into it.
    let entries = match headers.inner().get("x-death") {
        Some(AMQPValue::FieldArray(earlier)) => merged_deaths(earlier.as_slice(), entries),
        _ => entries,
    };
    headers.insert(
        "x-death".into(),
        AMQPValue::FieldArray(FieldArray::from(entries)),
    );
    // Set once, at the first death: a republished dead letter keeps its own.
    if !headers.contains_key("x-first-death-reason") {
        headers.insert(
            "x-first-death-reason".into(),
            long(first.reason.rabbitmq_name()),
        );
        headers.insert("x-first-death-queue".into(), long(&first.queue));
        headers.insert("x-first-death-exchange".into(), long(&first.exchange));
    }
    without_expiration(&properties.with_headers(headers))
}

/// The `x-death` a publisher sent (`earlier`) with the deaths weir recorded
/// since (`recent`, most recent first) applied as RabbitMQ applies each: the
/// entry of the same queue and reason has its count raised and moves to the
/// front, otherwise the new entry goes in front.
fn merged_deaths(earlier: &[AMQPValue], recent: Vec<AMQPValue>) -> Vec<AMQPValue> {
    let key = |v: &AMQPValue| match v {
        AMQPValue::FieldTable(t) => {
            let text = |name: &str| match t.inner().get(name) {
                Some(AMQPValue::LongString(s)) => Some(s.as_bytes().to_vec()),
                Some(AMQPValue::ShortString(s)) => Some(s.as_str().as_bytes().to_vec()),
                _ => None,
            };
            Some((text("queue")?, text("reason")?))
        }
        _ => None,
    };
    let count = |v: &AMQPValue| match v {
        AMQPValue::FieldTable(t) => t.inner().get("count").and_then(integer).unwrap_or(0),
        _ => 0,
    };
    let mut out: Vec<AMQPValue> = earlier.to_vec();
    for death in recent.into_iter().rev() {
        let at = key(&death).and_then(|k| out.iter().position(|e| key(e).as_ref() == Some(&k)));
        let entry = match at {
            Some(at) => {
                let mut kept = out.remove(at);
                let total = count(&kept).saturating_add(count(&death));
                // Its other fields stay those of its first death, as in RabbitMQ.
                if let AMQPValue::FieldTable(t) = &mut kept {
                    t.insert("count".into(), AMQPValue::LongLongInt(total));
                }
                kept
            }
            None => death,
        };
        out.insert(0, entry);
    }
    out
}

/// An integer field of any AMQP integer type.
fn integer(v: &AMQPValue) -> Option<i64> {
    Some(match v {
        AMQPValue::ShortShortInt(n) => i64::from(*n),
        AMQPValue::ShortShortUInt(n) => i64::from(*n),
        AMQPValue::ShortInt(n) => i64::from(*n),
        AMQPValue::ShortUInt(n) => i64::from(*n),
        AMQPValue::LongInt(n) => i64::from(*n),
        AMQPValue::LongUInt(n) => i64::from(*n),
        AMQPValue::LongLongInt(n) => *n,
        _ => return None,
    })
}

/// `p` without its `expiration` (the codec's properties have setters only).
fn without_expiration(p: &AMQPProperties) -> AMQPProperties {
    let mut out = AMQPProperties::default();
    macro_rules! copy {
        ($($get:ident => $set:ident),*) => {
            $(if let Some(v) = p.$get() {
                out = out.$set(v.clone());
            })*
        };
    }
    copy!(
        content_type => with_content_type,
        content_encoding => with_content_encoding,
        headers => with_headers,
        delivery_mode => with_delivery_mode,
        priority => with_priority,
        correlation_id => with_correlation_id,
        reply_to => with_reply_to,
        message_id => with_message_id,
        timestamp => with_timestamp,
        kind => with_type,
        user_id => with_user_id,
        app_id => with_app_id,
        cluster_id => with_cluster_id
    );
    out
}

fn stored_or_built(d: &Delivery, queue: &str) -> (String, String, AMQPProperties) {
    if let Some(stored) = d.properties.as_ref().and_then(|p| decode(p)) {
        return stored;
    }
    let mut headers = FieldTable::default();
    for (name, value) in &d.headers {
        if name.len() <= 255 {
            headers.insert(
                ShortString::from(name.as_str()),
                AMQPValue::LongString(LongString::from(value.as_bytes().to_vec())),
            );
        }
    }
    let mut properties = AMQPProperties::default()
        .with_headers(headers)
        .with_delivery_mode(2)
        .with_priority(d.priority)
        .with_timestamp(u64::try_from(d.enqueued_at_ms / 1000).unwrap_or(0));
    if d.id.len() <= 255 {
        properties = properties.with_message_id(ShortString::from(d.id.as_str()));
    }
    (String::new(), queue.to_owned(), properties)
}

fn decode(blob: &[u8]) -> Option<(String, String, AMQPProperties)> {
    let (&version, rest) = blob.split_first()?;
    if version != VERSION {
        return None;
    }
    let (exchange, rest) = short_str(rest)?;
    let (routing_key, rest) = short_str(rest)?;
    // Checked when published, but the parser recurses: a blob from anywhere else
    // (an older build, a damaged log) must not take the stack with it.
    tables::check_properties(rest, usize::MAX).ok()?;
    let (left, properties) = parse_properties(rest).ok()?;
    left.is_empty()
        .then_some((exchange, routing_key, properties))
}

/// A stored short string. Bytes that are not UTF-8 (a damaged log: weir writes
/// only what it parsed as UTF-8) are replaced, and the result is cut back to 255
/// bytes at a character boundary: each replacement takes 3 bytes, and a longer
/// string could not be sent as a short string.
fn short_str(buf: &[u8]) -> Option<(String, &[u8])> {
    let (&len, rest) = buf.split_first()?;
    let len = usize::from(len);
    (rest.len() >= len).then(|| {
        let mut text = String::from_utf8_lossy(&rest[..len]).into_owned();
        if text.len() > 255 {
            let mut cut = 255;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
        }
        (text, &rest[len..])
    })
}

fn as_integer(v: &AMQPValue) -> Option<i64> {
    Some(match v {
        AMQPValue::ShortShortInt(n) => i64::from(*n),
        AMQPValue::ShortShortUInt(n) => i64::from(*n),
        AMQPValue::ShortInt(n) => i64::from(*n),
        AMQPValue::ShortUInt(n) => i64::from(*n),
        AMQPValue::LongInt(n) => i64::from(*n),
        AMQPValue::LongUInt(n) => i64::from(*n),
        AMQPValue::LongLongInt(n) => *n,
        AMQPValue::Timestamp(n) => i64::try_from(*n).ok()?,
        AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes())
            .ok()?
            .trim()
            .parse()
            .ok()?,
        AMQPValue::ShortString(s) => s.as_str().trim().parse().ok()?,
        _ => return None,
    })
}

fn as_text(v: &AMQPValue) -> Option<String> {
    match v {
        AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok().map(str::to_owned),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use weir_broker::{DeadLetterReason, Death, FirstDeath};

    use super::*;

    #[test]
    fn stored_short_strings_that_are_not_utf8_still_fit() {
        let mut stored = vec![255u8];
        stored.extend_from_slice(&[0xFF; 255]);
        let (text, rest) = short_str(&stored).unwrap();
        assert!(rest.is_empty());
        assert!(text.len() <= 255 && text.chars().all(|c| c == '\u{FFFD}'));
    }
    use amq_protocol::types::{ByteArray, DecimalValue, FieldArray};

    #[test]
    fn every_property_and_header_type_round_trips() {
        let mut headers = FieldTable::default();
        let values = [
            AMQPValue::Boolean(true),
            AMQPValue::ShortShortInt(-3),
            AMQPValue::ShortShortUInt(3),
            AMQPValue::ShortInt(-300),
            AMQPValue::ShortUInt(300),
            AMQPValue::LongInt(-70_000),
            AMQPValue::LongUInt(70_000),
            AMQPValue::LongLongInt(-5_000_000_000),
            AMQPValue::Float(1.5),
            AMQPValue::Double(2.25),
            AMQPValue::DecimalValue(DecimalValue {
                scale: 2,
                value: 314,
            }),
            // No ShortString: RabbitMQ's field-table dialect reads 's' as a short
            // int, and clients send strings as long strings.
            AMQPValue::LongString("long".into()),
            AMQPValue::FieldArray(FieldArray::from(vec![
                AMQPValue::LongInt(1),
                AMQPValue::Void,
            ])),
            AMQPValue::Timestamp(1_700_000_000),
            AMQPValue::FieldTable(FieldTable::default()),
            AMQPValue::ByteArray(ByteArray::from(vec![0u8, 255])),
            AMQPValue::Void,
        ];
        for (i, v) in values.iter().enumerate() {
            headers.insert(format!("h{i}").into(), v.clone());
        }
        let properties = AMQPProperties::default()
            .with_content_type("application/json".into())
            .with_content_encoding("gzip".into())
            .with_headers(headers)
            .with_delivery_mode(2)
            .with_priority(5)
            .with_correlation_id("c-1".into())
            .with_reply_to("replies".into())
            .with_expiration("60000".into())
            .with_message_id("m-1".into())
            .with_timestamp(1_700_000_000)
            .with_type("order".into())
            .with_user_id("guest".into())
            .with_app_id("shop".into());
        let sent = to_send("orders", "created", &properties, Bytes::from_static(b"{}")).unwrap();
        assert_eq!(sent.id.as_deref(), Some("m-1"));
        assert_eq!(sent.priority, Some(5));
        assert_eq!(sent.ttl_ms, Some(60_000));
        assert_eq!(sent.headers.get("h11").map(String::as_str), Some("long"));
        assert_eq!(sent.headers.len(), 1, "only string values are copied");
        let delivery = Delivery {
            receipt: None,
            id: "m-1".into(),
            body: sent.body.clone(),
            headers: sent.headers.clone(),
            priority: 5,
            group: None,
            delivery_count: 1,
            enqueued_at_ms: 0,
            dead_letter: None,
            properties: sent.properties.clone(),
            position: None,
        };
        let (exchange, key, back) = from_delivery(&delivery, "q");
        assert_eq!((exchange.as_str(), key.as_str()), ("orders", "created"));
        assert_eq!(back, properties);
    }

    #[test]
    fn dead_letters_carry_rabbitmqs_headers_and_their_dead_letter_route() {
        let p = AMQPProperties::default()
            .with_expiration("500".into())
            .with_correlation_id("c".into());
        let sent = to_send("shop", "order.new", &p, Bytes::new()).unwrap();
        let delivery = Delivery {
            receipt: None,
            id: "m".into(),
            body: Bytes::new(),
            headers: BTreeMap::new(),
            priority: 0,
            group: None,
            delivery_count: 1,
            enqueued_at_ms: 0,
            dead_letter: Some(DeadLetterInfo {
                reason: DeadLetterReason::MaxDeliveries,
                time_ms: 1_700_000_000_999,
                source_queue: "retry".into(),
                delivery_count: 3,
                exchange: "dlx".into(),
                routing_keys: vec!["again".into()],
                deaths: vec![
                    death("retry", DeadLetterReason::MaxDeliveries, 1, "dlx", "retry"),
                    death("orders", DeadLetterReason::Expired, 2, "shop", "order.new"),
                ],
                first_death: FirstDeath {
                    queue: "orders".into(),
                    reason: DeadLetterReason::Expired,
                    exchange: "shop".into(),
                },
            }),
            properties: sent.properties,
            position: None,
        };
        let (exchange, key, back) = from_delivery(&delivery, "q");
        assert_eq!((exchange.as_str(), key.as_str()), ("dlx", "again"));
        assert_eq!(*back.expiration(), None);
        assert_eq!(
            back.correlation_id().as_ref().map(ShortString::as_str),
            Some("c")
        );
        let headers = back.headers().clone().unwrap();
        let h = headers.inner();
        let long = |s: &str| AMQPValue::LongString(s.into());
        assert_eq!(h.get("x-first-death-queue"), Some(&long("orders")));
        assert_eq!(h.get("x-first-death-reason"), Some(&long("expired")));
        assert_eq!(h.get("x-first-death-exchange"), Some(&long("shop")));
        let Some(AMQPValue::FieldArray(deaths)) = h.get("x-death") else {
            panic!("x-death: {h:?}");
        };
        let tables: Vec<&FieldTable> = deaths
            .as_slice()
            .iter()
            .map(|d| match d {
                AMQPValue::FieldTable(t) => t,
                other => panic!("{other:?}"),
            })
            .collect();
        let first = tables[0].inner();
        assert_eq!(first.get("reason"), Some(&long("delivery_limit")));
        assert_eq!(first.get("count"), Some(&AMQPValue::LongLongInt(1)));
        assert_eq!(
            first.get("time"),
            Some(&AMQPValue::Timestamp(1_700_000_000))
        );
        assert_eq!(first.get("original-expiration"), None);
        let second = tables[1].inner();
        assert_eq!(second.get("queue"), Some(&long("orders")));
        assert_eq!(second.get("count"), Some(&AMQPValue::LongLongInt(2)));
        assert_eq!(second.get("exchange"), Some(&long("shop")));
        assert_eq!(
            second.get("routing-keys"),
            Some(&AMQPValue::FieldArray(vec![long("order.new")].into()))
        );
        assert_eq!(second.get("original-expiration"), Some(&long("500")));
    }

    fn death(
        queue: &str,
        reason: DeadLetterReason,
        count: u64,
        exchange: &str,
        key: &str,
    ) -> Death {
        Death {
            queue: queue.into(),
            reason,
            count,
            exchange: exchange.into(),
            routing_keys: vec![key.into()],
            time_ms: 1_700_000_000_999,
        }
    }

    /// A consumer republished a dead letter with its `x-death` (count 2 for
    /// `work`/`rejected`); it dies twice more in `work` and once in `parking`:
    /// the counts go on from the publisher's, as RabbitMQ's do.
    #[test]
    fn a_republished_x_death_is_counted_on() {
        let long = |s: &str| AMQPValue::LongString(s.into());
        let entry = |queue: &str, reason: &str, count: AMQPValue| {
            let mut t = FieldTable::default();
            t.insert("queue".into(), long(queue));
            t.insert("reason".into(), long(reason));
            t.insert("count".into(), count);
            t.insert("time".into(), AMQPValue::Timestamp(1));
            AMQPValue::FieldTable(t)
        };
        let mut headers = FieldTable::default();
        headers.insert(
            "x-death".into(),
            AMQPValue::FieldArray(
                vec![
                    entry("work", "rejected", AMQPValue::LongInt(2)),
                    entry("older", "expired", AMQPValue::LongLongInt(1)),
                ]
                .into(),
            ),
        );
        headers.insert("x-first-death-queue".into(), long("older"));
        headers.insert("x-first-death-reason".into(), long("expired"));
        headers.insert("x-first-death-exchange".into(), long(""));
        let properties = AMQPProperties::default().with_headers(headers);
        let death = DeadLetterInfo {
            reason: DeadLetterReason::Rejected,
            source_queue: "parking".into(),
            delivery_count: 1,
            time_ms: 1_700_000_000_999,
            exchange: String::new(),
            routing_keys: vec!["parking".into()],
            deaths: vec![
                death("parking", DeadLetterReason::Rejected, 1, "", "parking"),
                death("work", DeadLetterReason::Rejected, 2, "", "work"),
            ],
            first_death: FirstDeath {
                queue: "work".into(),
                reason: DeadLetterReason::Rejected,
                exchange: String::new(),
            },
        };
        let back = with_death(properties, &death);
        let headers = back.headers().clone().unwrap();
        let h = headers.inner();
        let Some(AMQPValue::FieldArray(deaths)) = h.get("x-death") else {
            panic!("x-death: {h:?}");
        };
        let summary: Vec<(AMQPValue, AMQPValue, AMQPValue)> = deaths
            .as_slice()
            .iter()
            .map(|d| match d {
                AMQPValue::FieldTable(t) => (
                    t.inner()["queue"].clone(),
                    t.inner()["reason"].clone(),
                    t.inner()["count"].clone(),
                ),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                (long("parking"), long("rejected"), AMQPValue::LongLongInt(1)),
                (long("work"), long("rejected"), AMQPValue::LongLongInt(4)),
                (long("older"), long("expired"), AMQPValue::LongLongInt(1)),
            ]
        );
        assert_eq!(h.get("x-first-death-queue"), Some(&long("older")), "kept");
    }

    #[test]
    fn x_delay_and_bad_expirations() {
        let mut headers = FieldTable::default();
        headers.insert("x-delay".into(), AMQPValue::LongInt(5_000));
        let p = AMQPProperties::default().with_headers(headers);
        assert_eq!(
            to_send("", "q", &p, Bytes::new()).unwrap().delay_ms,
            Some(5_000)
        );
        let p = AMQPProperties::default().with_expiration("soon".into());
        assert_eq!(
            to_send("", "q", &p, Bytes::new()).unwrap_err().code,
            PRECONDITION_FAILED
        );
    }

    #[test]
    fn messages_from_http_get_their_headers_as_long_strings() {
        let delivery = Delivery {
            receipt: None,
            id: "abc".into(),
            body: Bytes::new(),
            headers: [("k".to_owned(), "v".to_owned())].into(),
            priority: 0,
            group: None,
            delivery_count: 1,
            enqueued_at_ms: 1_700_000_000_000,
            dead_letter: None,
            properties: None,
            position: None,
        };
        let (exchange, key, p) = from_delivery(&delivery, "jobs");
        assert_eq!((exchange.as_str(), key.as_str()), ("", "jobs"));
        assert_eq!(
            p.message_id().as_ref().map(ShortString::as_str),
            Some("abc")
        );
        let h = p.headers().as_ref().unwrap();
        assert_eq!(h.inner().get("k"), Some(&AMQPValue::LongString("v".into())));
    }
}
