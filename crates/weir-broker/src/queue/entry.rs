//! [`Entry`]: what a queue keeps in memory per message. A leaf module: the ready
//! list ([`super::ready`]) and the state machine ([`super::state`]) both build on it.

use crate::queue::record::SHARED;

/// What the queue keeps in memory per message: a few dozen bytes. Body, headers and
/// id stay on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    /// The message's key: its record's offset in the queue's log, or [`SHARED`]` |`
    /// its offset in the shared log.
    pub(crate) offset: u64,
    /// Hash of the group key, 0 for none. A collision only merges two groups'
    /// ordering, it cannot reorder one group.
    pub(crate) group: u64,
    /// When it expires, ms since the epoch; 0 for never.
    pub(crate) expires_at: i64,
    /// First enqueue time, for the age of the oldest message.
    pub(crate) enqueued_at: i64,
    /// Body size in bytes.
    pub(crate) size: u32,
    /// Deliveries so far.
    pub(crate) attempts: u32,
    /// Hash of the source queue of a dead-lettered message, 0 for none (for peeks
    /// and redrives filtered by source).
    pub(crate) origin: u32,
    /// Effective priority.
    pub(crate) priority: u8,
    /// Arrival order in this queue (assigned when the message is committed or
    /// restored): ready messages are delivered in this order, whichever log holds them.
    pub(crate) seq: u64,
}

/// Whether `key` names a message in the shared log.
pub(crate) fn is_shared(key: u64) -> bool {
    key & SHARED != 0
}
