//! Verifying a benchmark run. Every message carries a sequence number; the consumers
//! record each one they get, and the run is verified when the sequence numbers
//! `0..sent` each arrived exactly once: the count, their sum and a bitmap of those
//! seen (for duplicates) all agree. `weir bench amqp` and `weir bench http` both
//! report through this.

use std::sync::atomic::{AtomicU64, Ordering};

pub(crate) struct Tally {
    received: AtomicU64,
    sum: AtomicU64,
    duplicates: AtomicU64,
    /// One bit per sequence number seen.
    seen: Vec<AtomicU64>,
}

impl Tally {
    /// Room for sequence numbers below `capacity` (rounded up to 64).
    pub(crate) fn new(capacity: u64) -> Tally {
        Tally {
            received: AtomicU64::new(0),
            sum: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            seen: (0..capacity.div_ceil(64))
                .map(|_| AtomicU64::new(0))
                .collect(),
        }
    }

    /// Sequence numbers this tally can tell apart: producers stop below it.
    pub(crate) fn capacity(&self) -> u64 {
        self.seen.len() as u64 * 64
    }

    /// A message with sequence number `seq` arrived.
    pub(crate) fn see(&self, seq: u64) {
        self.received.fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(seq, Ordering::Relaxed);
        let Some(word) = self.seen.get((seq / 64) as usize) else {
            // Not one of this run's: it can never make the run verified.
            self.duplicates.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let bit = 1u64 << (seq % 64);
        if word.fetch_or(bit, Ordering::Relaxed) & bit != 0 {
            self.duplicates.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A message arrived without a sequence number (a body too short for one).
    pub(crate) fn see_unnumbered(&self) {
        self.received.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// Messages that arrived more than once, or were not of this run.
    pub(crate) fn duplicates(&self) -> u64 {
        self.duplicates.load(Ordering::Relaxed)
    }

    /// Whether exactly the sequence numbers `0..sent` arrived, each once.
    pub(crate) fn holds_exactly(&self, sent: u64) -> bool {
        let expected_sum = if sent == 0 { 0 } else { sent * (sent - 1) / 2 };
        self.received() == sent
            && self.duplicates() == 0
            && self.sum.load(Ordering::Relaxed) == expected_sum
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_once_verifies_and_a_loss_or_a_duplicate_does_not() {
        let whole = Tally::new(1000);
        (0..1000).rev().for_each(|s| whole.see(s));
        assert!(whole.holds_exactly(1000));
        assert!(!whole.holds_exactly(999));

        let lost = Tally::new(1000);
        (0..999).for_each(|s| lost.see(s));
        assert!(!lost.holds_exactly(1000));

        // 5 twice and 6 never: count and sum alone would not tell.
        let swapped = Tally::new(1000);
        (0..1000)
            .map(|s| if s == 6 { 5 } else { s })
            .for_each(|s| swapped.see(s));
        assert_eq!(swapped.duplicates(), 1);
        assert!(!swapped.holds_exactly(1000));

        let foreign = Tally::new(64);
        foreign.see(10_000);
        assert_eq!(foreign.duplicates(), 1);
        assert_eq!(foreign.capacity(), 64);
    }
}
