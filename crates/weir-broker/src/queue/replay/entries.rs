//! What replay and the actor both build from a message record: its [`Entry`].

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
