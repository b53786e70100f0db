//! Checking and building what a client sends before it reaches a queue: message
//! ids, sizes, headers and AMQP fields into a message record ([`prepare`]), and
//! receipts ([`check_receipts`]).

use std::collections::BTreeMap;
use std::hash::{BuildHasher, RandomState};

use weir_log::Header;

use crate::api::{MAX_GROUP_BYTES, MAX_ID_BYTES, QueueOptions, SendMessage, check_duration};
use crate::config::Limits;
use crate::error::{BrokerError, Limit, Result};
use crate::hex::push_hex;
use crate::queue::record::{
    EXCHANGE_HEADER, MessageMeta, Outgoing, PROPERTIES_HEADER, ROUTING_KEY_HEADER,
};

/// A process-unique message id: 32 hex digits of time, a counter and randomness.
pub(crate) fn generate_id(now: i64) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    static SALT: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let salt = *SALT.get_or_init(|| RandomState::new().hash_one(std::process::id()));
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut id = String::with_capacity(32);
    push_hex(
        &mut id,
        u64::try_from(now).unwrap_or(0) & 0xffff_ffff_ffff,
        12,
    );
    push_hex(&mut id, salt >> 48, 4);
    push_hex(&mut id, salt.wrapping_add(n), 16);
    id
}

/// Checks one message and builds what is written.
pub(crate) fn prepare(
    i: usize,
    m: SendMessage,
    options: &QueueOptions,
    limits: &Limits,
    now: i64,
) -> Result<Outgoing> {
    let field = |f: &str| format!("messages[{i}].{f}");
    if m.body.len() as u64 > limits.max_message_bytes {
        return Err(BrokerError::LimitExceeded {
            what: Limit::MessageBytes,
            limit: limits.max_message_bytes,
        });
    }
    if let Some(id) = &m.id
        && (id.is_empty() || id.len() > MAX_ID_BYTES)
    {
        return Err(BrokerError::invalid(
            field("id"),
            format!("must be 1..={MAX_ID_BYTES} bytes"),
        ));
    }
    if let Some(g) = &m.group
        && (g.is_empty() || g.len() > MAX_GROUP_BYTES)
    {
        return Err(BrokerError::invalid(
            field("group"),
            format!("must be 1..={MAX_GROUP_BYTES} bytes"),
        ));
    }
    if let Some(d) = m.delay_ms {
        check_duration(&field("delay_ms"), d, 0)?;
    }
    if let Some(t) = m.ttl_ms {
        check_duration(&field("ttl_ms"), t, 1)?;
    }
    let ms = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    let ttl = match (m.ttl_ms, options.message_ttl_ms) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let not_before = m.delay_ms.filter(|d| *d > 0).map_or(0, |d| now + ms(d));
    // A delayed message's TTL runs from when it becomes deliverable.
    let expires = ttl.map_or(0, |t| now.max(not_before) + ms(t));
    let headers: BTreeMap<String, String> = m.headers;
    if headers.keys().any(|k| k.starts_with('\0')) {
        return Err(BrokerError::invalid(
            field("headers"),
            "a header name may not start with a NUL character (reserved)",
        ));
    }
    let mut headers: Vec<Header> = headers
        .into_iter()
        .map(|(k, v)| Header::new(k, v))
        .collect();
    if let Some(properties) = m.properties {
        headers.push(Header::new(PROPERTIES_HEADER, properties));
    }
    if let Some(key) = m.routing_key.filter(|k| !k.is_empty()) {
        headers.push(Header::new(ROUTING_KEY_HEADER, key));
    }
    if let Some(exchange) = m.exchange.filter(|e| !e.is_empty()) {
        headers.push(Header::new(EXCHANGE_HEADER, exchange));
    }
    Ok(Outgoing {
        meta: MessageMeta {
            id: m.id.unwrap_or_else(|| generate_id(now)),
            priority: m.priority.unwrap_or(0).min(options.max_priority),
            not_before_ms: not_before,
            expires_at_ms: expires,
            group: m.group,
            attempts: 0,
            moved_from: None,
            enqueued_at_ms: now,
            dead_letter: None,
            shared_mark: 0,
        },
        headers,
        body: m.body,
    })
}

pub(crate) fn check_receipts(receipts: &[String]) -> Result<()> {
    if receipts.is_empty() {
        return Err(BrokerError::invalid(
            "receipts",
            "at least one receipt is needed",
        ));
    }
    if receipts.len() > 10_000 {
        return Err(BrokerError::LimitExceeded {
            what: Limit::ReceiptsPerRequest,
            limit: 10_000,
        });
    }
    Ok(())
}
