//! Replay's own messages in memory: the entries of a queue's own log in offset
//! order, in chunks that are allocated and freed one at a time, with settled ones
//! marked [`GONE`] and compacted away, so replaying a long log costs no more memory
//! than the running queue will hold.

use crate::queue::entry::Entry;
use crate::queue::ready::CHUNK;

/// In an entry's `seq` during replay: the message is settled. (Until `finish`
/// assigns arrival numbers, `seq` holds the record's shared mark, which is below
/// this.)
pub(super) const GONE: u64 = u64::MAX;

/// The own messages of a queue during replay, in offset order, in chunks of at most
/// [`CHUNK`] entries.
///
/// Why chunks: one vector doubling to 5 M entries holds up to twice its length, and
/// twice again while it is copied; chunks are allocated one at a time and freed one at
/// a time by `finish`, while the state's own chunks fill up. A settled message
/// stays in its chunk, marked [`GONE`], until a quarter of the chunk is gone; then the
/// chunk is compacted (or freed, when nothing in it is left), so the log's settled
/// history costs no memory beyond a quarter of what is held, plus the last chunk.
#[derive(Default)]
pub(crate) struct OwnMessages {
    chunks: Vec<OwnChunk>,
}

struct OwnChunk {
    /// The lowest offset ever put in the chunk: chunks are found by it, even once
    /// compacted or emptied.
    first: u64,
    /// In offset order; `seq` holds the shared mark, or [`GONE`].
    entries: Vec<Entry>,
    /// Entries marked [`GONE`] still in `entries`.
    gone: usize,
}

impl OwnChunk {
    /// Drops the settled entries once they are a quarter of the chunk (so each
    /// compaction is paid for by as many settles as a quarter of what it copies).
    fn compact(&mut self) {
        if self.gone == 0 || self.gone * 4 < self.entries.len() {
            return;
        }
        if self.gone == self.entries.len() {
            self.entries = Vec::new();
        } else {
            self.entries.retain(|e| e.seq != GONE);
            self.entries.shrink_to_fit();
        }
        self.gone = 0;
    }
}

impl OwnMessages {
    /// Adds a message above every one before it.
    pub(super) fn push(&mut self, entry: Entry) {
        if let Some(last) = self.chunks.last_mut() {
            if last.entries.len() < CHUNK {
                last.entries.push(entry);
                return;
            }
            // It stops being the last: what was settled in it while it filled
            // (a queue consumed as it goes settles most of it) goes now.
            last.compact();
        }
        // The first chunk grows as a vector does (most queues hold few messages,
        // and are all replayed before any starts); the next ones are full size.
        let entries = if self.chunks.is_empty() {
            vec![entry]
        } else {
            let mut entries = Vec::with_capacity(CHUNK);
            entries.push(entry);
            entries
        };
        self.chunks.push(OwnChunk {
            first: entry.offset,
            entries,
            gone: 0,
        });
    }

    /// Where the message at `offset` is (settled or not): chunk and position.
    pub(super) fn find(&self, offset: u64) -> Option<(usize, usize)> {
        let chunk = self
            .chunks
            .partition_point(|c| c.first <= offset)
            .checked_sub(1)?;
        let at = self.chunks[chunk]
            .entries
            .binary_search_by_key(&offset, |e| e.offset)
            .ok()?;
        Some((chunk, at))
    }

    /// The message at `offset`, unless settled.
    pub(super) fn get(&self, offset: u64) -> Option<&Entry> {
        let (chunk, at) = self.find(offset)?;
        Some(&self.chunks[chunk].entries[at]).filter(|e| e.seq != GONE)
    }

    /// The message at `offset`, unless settled.
    pub(super) fn get_mut(&mut self, offset: u64) -> Option<&mut Entry> {
        let (chunk, at) = self.find(offset)?;
        Some(&mut self.chunks[chunk].entries[at]).filter(|e| e.seq != GONE)
    }

    /// The message at `offset` is settled (or moved).
    pub(super) fn settle(&mut self, offset: u64) {
        let Some((index, at)) = self.find(offset) else {
            return;
        };
        let last = index + 1 == self.chunks.len();
        let chunk = &mut self.chunks[index];
        if chunk.entries[at].seq == GONE {
            return;
        }
        chunk.entries[at].seq = GONE;
        chunk.gone += 1;
        // The last chunk is still filling; `push` compacts it once full.
        if !last {
            chunk.compact();
        }
    }

    /// The messages not settled, in offset order; each chunk is freed once its
    /// entries are taken.
    pub(super) fn into_held(self) -> impl Iterator<Item = Entry> {
        self.chunks
            .into_iter()
            .flat_map(|c| c.entries.into_iter().filter(|e| e.seq != GONE))
    }

    /// Messages held (not settled).
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.chunks.iter().map(|c| c.entries.len() - c.gone).sum()
    }

    /// Entries allocated for, in all chunks.
    #[cfg(test)]
    pub(super) fn capacity(&self) -> usize {
        self.chunks.iter().map(|c| c.entries.capacity()).sum()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    fn entry(offset: u64, attempts: u32) -> Entry {
        Entry {
            offset,
            group: 0,
            expires_at: 0,
            enqueued_at: 0,
            size: 1,
            attempts,
            origin: 0,
            priority: 0,
            seq: offset / 3,
        }
    }

    #[derive(Clone, Debug)]
    enum Op {
        /// A message `gap` offsets above the last one.
        Push(u64),
        /// Settles the message `back` positions below the newest offset.
        Settle(u64),
        /// Bumps the delivery count of the message `back` below the newest offset.
        Deliver(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            5 => (1..4u64).prop_map(Op::Push),
            4 => (0..200u64).prop_map(Op::Settle),
            1 => (0..200u64).prop_map(Op::Deliver),
        ]
    }

    proptest! {
        /// Replay's own messages behave as a map by offset (lookups, settles and
        /// updates, in any order), give back exactly the held ones in offset order,
        /// and never hold more than 4/3 of the held messages plus one chunk: the
        /// settled history of a log costs no memory.
        #[test]
        fn own_messages_behave_as_a_map_and_stay_compact(
            ops in proptest::collection::vec(op(), 1..800),
        ) {
            let mut own = OwnMessages::default();
            let mut model: BTreeMap<u64, Entry> = BTreeMap::new();
            let mut next = 0u64;
            for op in ops {
                match op {
                    Op::Push(gap) => {
                        next += gap;
                        own.push(entry(next, 0));
                        model.insert(next, entry(next, 0));
                    }
                    Op::Settle(back) => {
                        let offset = next.saturating_sub(back);
                        own.settle(offset);
                        model.remove(&offset);
                    }
                    Op::Deliver(back) => {
                        let offset = next.saturating_sub(back);
                        if let Some(e) = own.get_mut(offset) {
                            e.attempts = e.attempts.saturating_add(1);
                        }
                        if let Some(e) = model.get_mut(&offset) {
                            e.attempts = e.attempts.saturating_add(1);
                        }
                    }
                }
                let offset = next.saturating_sub(7);
                prop_assert_eq!(own.get(offset), model.get(&offset));
                prop_assert_eq!(own.len(), model.len());
                prop_assert!(
                    own.capacity() * 3 <= model.len() * 4 + 3 * CHUNK,
                    "{} entries allocated for {} held",
                    own.capacity(),
                    model.len()
                );
            }
            let held: Vec<Entry> = own.into_held().collect();
            let want: Vec<Entry> = model.into_values().collect();
            prop_assert_eq!(held, want);
        }
    }

    /// A queue consumed as it goes (each message settled soon after it was
    /// written, within its chunk) replays into almost nothing.
    #[test]
    fn a_consumed_log_replays_into_a_chunk() {
        let mut own = OwnMessages::default();
        for offset in 0..100_000u64 {
            own.push(entry(offset, 0));
            if offset >= 3 {
                own.settle(offset - 3);
            }
        }
        assert_eq!(own.len(), 3);
        assert!(own.capacity() <= CHUNK + 3, "{}", own.capacity());
    }
}
