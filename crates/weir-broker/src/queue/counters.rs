//! The lifetime counters of a queue, kept exact across crashes.
//!
//! Every record of the queue's log adds a fixed delta to the counters
//! ([`StateOp::delta`], [`MessageMeta::delta`](super::record::MessageMeta::delta)).
//! [`Counters`] keeps `base`, the sum over every record below `base_below`, and the
//! deltas of appends that landed above it. Before the log is trimmed to `below`,
//! the deltas under `below` are folded into `base` and a `totals` checkpoint
//! `{below, base}` is written; replay takes the checkpoint with the highest `below`
//! and adds every record from there on. The actor only trims below its appends in
//! flight, so every record under the trim point has landed and been counted here.
//!
//! Shared messages (decision 0004) leave no record in the queue's log: their `sent`
//! comes from the shared log at replay, for those at or above the checkpoint's
//! `shared_below`. So a checkpoint also counts every shared message under its
//! `shared_below`, and the queue folds a batch of them in only when the batch is
//! gone and `shared_below` moves past it.

use std::collections::BTreeMap;

use crate::queue::record::{StateOp, Totals};

/// Most dedup ids per checkpoint record (about 40 bytes each, so about 2 MB: far
/// under the log's record limit however many ids a window holds).
pub(crate) const DEDUP_IDS_PER_RECORD: usize = 50_000;

/// See the module documentation.
#[derive(Debug)]
pub(crate) struct Counters {
    /// The counters of every record below `base_below`.
    base: Totals,
    base_below: u64,
    /// Every shared message under this key is in `base`.
    shared_below: u64,
    /// Deltas of appends that landed at or above `base_below`, by first offset:
    /// (next offset, delta).
    landed: BTreeMap<u64, (u64, Totals)>,
}

impl Counters {
    /// Counters restored by replay: `base` covers every record below `base_below`
    /// and every shared message under `shared_below`.
    pub(crate) fn new(base: Totals, base_below: u64, shared_below: u64) -> Counters {
        Counters {
            base,
            base_below,
            shared_below,
            landed: BTreeMap::new(),
        }
    }

    /// The shared messages under `shared_below` are settled; `sent` of them are not
    /// in the base yet.
    pub(crate) fn fold_shared(&mut self, shared_below: u64, sent: u64) {
        self.base.sent += sent;
        self.shared_below = self.shared_below.max(shared_below);
    }

    /// An append landed at `first..next`, adding `delta`.
    pub(crate) fn landed(&mut self, first: u64, next: u64, delta: Totals) {
        if delta != Totals::default() {
            self.landed.insert(first, (next, delta));
        }
    }

    /// Folds the deltas of every append below `below` into the base.
    pub(crate) fn fold(&mut self, below: u64) {
        if below <= self.base_below {
            return;
        }
        while let Some((&first, &(next, delta))) = self.landed.first_key_value() {
            if first >= below {
                break;
            }
            self.landed.remove(&first);
            if next <= below {
                self.base.add(&delta);
            } else {
                // Only a batch of sends can straddle a trim point (the trim point is
                // the offset of a message still held): one `sent` per record.
                let under = below - first;
                self.base.sent += under;
                let rest = Totals {
                    sent: delta.sent - under,
                    ..delta
                };
                self.landed.insert(below, (next, rest));
            }
        }
        self.base_below = below;
    }

    /// The checkpoint records for a trim: the totals, then the dedup ids that only
    /// the trimmed part of the log remembers, in chunks. Also returns the chunks,
    /// to note where each id is remembered once written.
    pub(crate) fn checkpoint(
        &self,
        dedup_ids: &[(i64, String)],
    ) -> (Vec<StateOp>, Vec<Vec<(i64, String)>>) {
        let chunks: Vec<Vec<(i64, String)>> = dedup_ids
            .chunks(DEDUP_IDS_PER_RECORD)
            .map(<[_]>::to_vec)
            .collect();
        let mut ops = vec![StateOp::Totals {
            below: self.base_below,
            shared_below: self.shared_below,
            totals: self.base,
        }];
        ops.extend(chunks.iter().cloned().map(StateOp::Dedup));
        (ops, chunks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::record::SHARED;

    fn sent(n: u64) -> Totals {
        Totals {
            sent: n,
            ..Totals::default()
        }
    }

    #[test]
    fn folding_splits_a_send_batch_at_the_trim_point() {
        let mut c = Counters::new(sent(5), 10, 0);
        c.landed(10, 14, sent(4));
        c.landed(
            14,
            15,
            Totals {
                acked: 2,
                ..Totals::default()
            },
        );
        c.fold(12);
        let (ops, _) = c.checkpoint(&[]);
        assert_eq!(
            ops,
            [StateOp::Totals {
                below: 12,
                shared_below: 0,
                totals: sent(7)
            }]
        );
        c.fold(20);
        let (ops, _) = c.checkpoint(&[]);
        assert_eq!(
            ops,
            [StateOp::Totals {
                below: 20,
                shared_below: 0,
                totals: Totals {
                    sent: 9,
                    acked: 2,
                    ..Totals::default()
                }
            }]
        );
        // Folding backwards changes nothing.
        c.fold(3);
        assert_eq!(c.checkpoint(&[]).0.len(), 1);
        // Shared messages fold in by count, with the floor they move past.
        c.fold_shared(SHARED + 40, 3);
        c.fold_shared(SHARED + 30, 0);
        assert_eq!(
            c.checkpoint(&[]).0[0],
            StateOp::Totals {
                below: 20,
                shared_below: SHARED + 40,
                totals: Totals {
                    sent: 12,
                    acked: 2,
                    ..Totals::default()
                }
            }
        );
    }

    #[test]
    fn dedup_ids_are_chunked_below_the_record_limit() {
        let c = Counters::new(Totals::default(), 0, 0);
        let ids: Vec<(i64, String)> = (0..120_000)
            .map(|n| (1_700_000_000_000 + n, format!("{n:032x}")))
            .collect();
        let (ops, chunks) = c.checkpoint(&ids);
        assert_eq!(ops.len(), 4, "totals + 3 chunks");
        assert_eq!(chunks.iter().map(Vec::len).sum::<usize>(), 120_000);
        for op in &ops {
            let (key, body) = op.encode();
            assert!(
                key.len() + body.len() < 4 << 20,
                "a record of {} bytes",
                body.len()
            );
        }
    }
}
