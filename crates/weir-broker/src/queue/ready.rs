//! The ready messages of one priority, in arrival (`seq`) order, kept in chunks of at
//! most [`CHUNK`] entries.
//!
//! Why chunks and not one `VecDeque`: a deque grows by doubling and copying, so a
//! queue filling to 10 million messages (56 bytes each, 560 MB) briefly held the old
//! 8 M-entry buffer and the new 16 M-entry one at once: 1.07 GB of peak RSS for a
//! backlog that needs 660 MB. It also never gave the memory back once drained.
//! Chunks are allocated and freed one at a time, so memory follows the backlog both
//! ways and the peak is what is held.
//!
//! Most pushes go to the back (new messages have the highest `seq`). A message given
//! back (a nack, an expired lease) goes back to its place by `seq`: the chunk that
//! holds its place is found by binary search, and a full chunk is split in two.
//!
//! Invariant: no chunk is empty, except a lone one kept so that a queue cycling one
//! message at a time does not allocate per message.

use std::collections::VecDeque;

use super::entry::Entry;

/// Entries per chunk at most: 56 KiB of entries. Unit tests use chunks of 8, so
/// every queue test (the model tests included) crosses chunk boundaries and splits
/// chunks.
pub(crate) const CHUNK: usize = if cfg!(test) { 8 } else { 1024 };

#[derive(Debug, Default)]
pub(crate) struct Ready {
    chunks: VecDeque<VecDeque<Entry>>,
    len: usize,
}

impl Ready {
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn front(&self) -> Option<&Entry> {
        self.chunks.front().and_then(VecDeque::front)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.chunks.iter().flatten()
    }

    /// Puts `entry` in its place by `seq`.
    pub(crate) fn push(&mut self, entry: Entry) {
        self.len += 1;
        let last = self.chunks.back().and_then(VecDeque::back);
        if last.is_none_or(|b| b.seq < entry.seq) {
            match self.chunks.back_mut() {
                Some(chunk) if chunk.len() < CHUNK => chunk.push_back(entry),
                _ => self.chunks.push_back(VecDeque::from([entry])),
            }
            return;
        }
        // Some entry has a higher seq, so every chunk is non-empty: the first chunk
        // whose last entry comes after `entry` holds its place.
        let mut index = self
            .chunks
            .partition_point(|c| c.back().is_some_and(|b| b.seq < entry.seq));
        if self.chunks[index].len() == CHUNK {
            let full = &mut self.chunks[index];
            let mut upper = VecDeque::with_capacity(CHUNK);
            upper.extend(full.drain(CHUNK / 2..));
            let goes_up = full.back().is_some_and(|b| b.seq < entry.seq);
            self.chunks.insert(index + 1, upper);
            if goes_up {
                index += 1;
            }
        }
        let chunk = &mut self.chunks[index];
        let pos = chunk.partition_point(|e| e.seq < entry.seq);
        chunk.insert(pos, entry);
    }

    pub(crate) fn pop_front(&mut self) -> Option<Entry> {
        let chunk = self.chunks.front_mut()?;
        let entry = chunk.pop_front()?;
        if chunk.is_empty() && self.chunks.len() > 1 {
            self.chunks.pop_front();
        }
        self.len -= 1;
        Some(entry)
    }

    /// Moves up to `max` entries from the front into `out`.
    pub(crate) fn drain_front(&mut self, max: usize, out: &mut Vec<Entry>) {
        let mut want = max.min(self.len);
        while want > 0 {
            let Some(chunk) = self.chunks.front_mut() else {
                break;
            };
            let n = want.min(chunk.len());
            out.extend(chunk.drain(..n));
            want -= n;
            self.len -= n;
            if chunk.is_empty() && self.chunks.len() > 1 {
                self.chunks.pop_front();
            }
        }
    }

    /// Keeps the entries `keep` says yes to, visiting them in order.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&Entry) -> bool) {
        for chunk in &mut self.chunks {
            chunk.retain(&mut keep);
        }
        let spare = self.chunks.pop_back();
        self.chunks.retain(|c| !c.is_empty());
        if let Some(spare) = spare
            && (!spare.is_empty() || self.chunks.is_empty())
        {
            self.chunks.push_back(spare);
        }
        self.len = self.chunks.iter().map(VecDeque::len).sum();
    }

    /// Empties the queue, returning its entries in order.
    pub(crate) fn take_all(&mut self) -> impl Iterator<Item = Entry> + use<> {
        self.len = 0;
        std::mem::take(&mut self.chunks).into_iter().flatten()
    }

    /// Entries allocated for, in all chunks.
    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.chunks.iter().map(VecDeque::capacity).sum()
    }

    #[cfg(test)]
    fn check_invariants(&self) {
        assert_eq!(self.len, self.iter().count());
        assert!(self.chunks.iter().all(|c| c.len() <= CHUNK));
        if self.chunks.len() > 1 {
            assert!(self.chunks.iter().all(|c| !c.is_empty()));
        }
        let seqs: Vec<u64> = self.iter().map(|e| e.seq).collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "out of order");
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn entry(seq: u64) -> Entry {
        Entry {
            offset: seq,
            group: 0,
            expires_at: 0,
            enqueued_at: 0,
            size: 1,
            attempts: 0,
            origin: u32::try_from(seq % 3).expect("small"),
            priority: 0,
            seq,
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Push(u64),
        Pop,
        Drain(usize),
        RetainNotOrigin(u32),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0..5_000u64).prop_map(Op::Push),
            2 => Just(Op::Pop),
            1 => (0..1_500usize).prop_map(Op::Drain),
            1 => (0..3u32).prop_map(Op::RetainNotOrigin),
        ]
    }

    proptest! {
        /// Any mix of pushes (in and out of order), pops, drains and retains keeps
        /// the same entries, in the same order, as a sorted list does.
        #[test]
        fn behaves_as_a_sorted_list(ops in proptest::collection::vec(op(), 1..400)) {
            let mut ready = Ready::default();
            let mut model: Vec<u64> = Vec::new();
            let mut next = 10_000u64;
            for op in ops {
                match op {
                    Op::Push(seq) => {
                        // Seqs are unique; half the pushes are new arrivals.
                        let seq = if seq % 2 == 0 { next += 1; next } else { seq };
                        if model.binary_search(&seq).is_err() {
                            let at = model.partition_point(|&s| s < seq);
                            model.insert(at, seq);
                            ready.push(entry(seq));
                        }
                    }
                    Op::Pop => {
                        let want = (!model.is_empty()).then(|| model.remove(0));
                        prop_assert_eq!(ready.pop_front().map(|e| e.seq), want);
                    }
                    Op::Drain(n) => {
                        let mut out = Vec::new();
                        ready.drain_front(n, &mut out);
                        let want: Vec<u64> = model.drain(..n.min(model.len())).collect();
                        prop_assert_eq!(out.iter().map(|e| e.seq).collect::<Vec<_>>(), want);
                    }
                    Op::RetainNotOrigin(o) => {
                        ready.retain(|e| e.origin != o);
                        model.retain(|&s| s % 3 != u64::from(o));
                    }
                }
                ready.check_invariants();
                prop_assert_eq!(ready.len(), model.len());
                prop_assert_eq!(ready.front().map(|e| e.seq), model.first().copied());
            }
            let all: Vec<u64> = ready.take_all().map(|e| e.seq).collect();
            prop_assert_eq!(all, model);
            prop_assert_eq!(ready.len(), 0);
        }
    }

    /// Filling allocates chunk by chunk and draining frees them: memory never holds
    /// two copies of the backlog, and little is kept once it is gone.
    #[test]
    fn memory_follows_the_backlog() {
        let mut ready = Ready::default();
        for seq in 0..100_000u64 {
            ready.push(entry(seq));
            assert!(
                ready.capacity() < ready.len() + CHUNK,
                "{}",
                ready.capacity()
            );
        }
        let mut out = Vec::new();
        ready.drain_front(99_990, &mut out);
        assert!(ready.capacity() < 10 + 2 * CHUNK, "{}", ready.capacity());
        while ready.pop_front().is_some() {}
        assert!(ready.capacity() <= CHUNK, "{}", ready.capacity());
        // The lone chunk is reused.
        ready.push(entry(200_000));
        assert!(ready.capacity() <= CHUNK);
        assert_eq!(ready.pop_front().map(|e| e.seq), Some(200_000));
    }
}
