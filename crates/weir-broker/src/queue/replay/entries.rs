//! What replay and the actor both build from a message record: its [`Entry`], and
//! the expiry of a shared message in one queue.

use crate::queue::entry::Entry;
use crate::queue::record::MessageMeta;
use crate::queue::state::key_hash;

/// Builds the entry of a message record.
pub(crate) fn entry_of(offset: u64, meta: &MessageMeta, size: u32) -> Entry {
    Entry {
        offset,
        group: meta.group.as_deref().map_or(0, key_hash),
        expires_at: meta.expires_at_ms,
        enqueued_at: meta.enqueued_at_ms,
        size,
        attempts: meta.attempts,
        origin: meta
            .dead_letter
            .as_ref()
            .map_or(0, |d| key_hash(&d.source_queue) as u32),
        priority: meta.priority,
        seq: 0,
    }
}

/// When a shared message published at `published_ms` with its own expiry
/// `message_expiry` (0: none) expires in a queue whose TTL is `queue_ttl_ms`: the
/// earlier of the two, the queue's counted from when the message became deliverable.
pub(crate) fn shared_expiry(
    message_expiry: i64,
    not_before: i64,
    published_ms: i64,
    queue_ttl_ms: Option<u64>,
) -> i64 {
    let queue = queue_ttl_ms.map_or(0, |t| {
        published_ms
            .max(not_before)
            .saturating_add(i64::try_from(t).unwrap_or(i64::MAX))
    });
    match (message_expiry, queue) {
        (0, q) => q,
        (m, 0) => m,
        (m, q) => m.min(q),
    }
}
