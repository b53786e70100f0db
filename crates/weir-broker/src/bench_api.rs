//! Hooks for the crate's criterion benchmarks (`benches/queue.rs`), which can only
//! call public items: the queue's in-memory hot paths behind a small hidden surface.
//! Not part of the API.

use tokio::time::Instant;

use bytes::Bytes;

use crate::api::QueueOptions;
use crate::queue::fresh::Fresh;
use crate::queue::record::MessageMeta;
use crate::queue::record::Outgoing;
use crate::queue::replay::entry_of;
use crate::queue::state::{Acked, QueueState, format_receipt};

const NOW: i64 = 1_700_000_000_000;
const VISIBILITY_MS: u64 = 30_000;

/// One queue's delivery state, without its log.
pub struct QueueFixture {
    state: QueueState,
    next_offset: u64,
    meta: MessageMeta,
}

impl QueueFixture {
    /// An empty queue.
    #[must_use]
    pub fn new() -> Self {
        QueueFixture {
            state: QueueState::new(QueueOptions::default(), 1),
            next_offset: 0,
            meta: MessageMeta {
                id: "m".to_owned(),
                enqueued_at_ms: NOW,
                ..MessageMeta::default()
            },
        }
    }

    /// A queue holding `backlog` ready messages.
    #[must_use]
    pub fn with_backlog(backlog: u64) -> Self {
        let mut fixture = QueueFixture::new();
        fixture.commit(backlog);
        fixture
    }

    fn commit(&mut self, n: u64) {
        let entries = (self.next_offset..self.next_offset + n)
            .map(|offset| (entry_of(offset, &self.meta, 1024), 0))
            .collect();
        self.next_offset += n;
        let _ = self.state.commit(entries, false, NOW);
    }

    /// `n` messages through their in-memory life: written (into the ready queue),
    /// leased, acked by receipt, settled. Returns how many were acked.
    pub fn cycle(&mut self, n: u64) -> usize {
        self.commit(n);
        let (leased, _) =
            self.state
                .lease(usize::try_from(n).unwrap_or(usize::MAX), VISIBILITY_MS, NOW);
        let mut settled = Vec::with_capacity(leased.len());
        for (entry, lease_id) in &leased {
            let receipt = format_receipt(entry.offset, *lease_id);
            if let Ok(Acked::Now(entry)) = self.state.ack("bench", &receipt) {
                settled.push(entry.offset);
            }
        }
        self.state.acks_written(&settled, true);
        settled.len()
    }

    /// Leases `n` messages from the head of the backlog and gives them back: each
    /// goes back to its place by arrival order (a consumer's channel closing with
    /// unacked messages).
    pub fn lease_and_give_back(&mut self, n: usize) -> usize {
        let (leased, _) = self.state.lease(n, VISIBILITY_MS, NOW);
        for (entry, lease_id) in &leased {
            self.state.release(entry.offset, *lease_id);
        }
        leased.len()
    }
}

impl Default for QueueFixture {
    fn default() -> Self {
        QueueFixture::new()
    }
}

/// The cache of freshly written messages a queue delivers from.
pub struct FreshFixture {
    fresh: Fresh,
    body: Bytes,
    next_offset: u64,
}

impl FreshFixture {
    /// Messages with bodies of `size` bytes.
    #[must_use]
    pub fn new(size: usize) -> Self {
        FreshFixture {
            fresh: Fresh::default(),
            body: Bytes::from(vec![7u8; size]),
            next_offset: 0,
        }
    }

    /// `n` messages written (copied in) and delivered (taken out). Returns the
    /// bytes delivered.
    pub fn insert_and_take(&mut self, n: u64) -> usize {
        let first = self.next_offset;
        for offset in first..first + n {
            self.fresh.insert(
                offset,
                Outgoing {
                    meta: MessageMeta::default(),
                    headers: Vec::new(),
                    body: self.body.clone(),
                },
            );
        }
        self.next_offset += n;
        let mut bytes = 0;
        for offset in first..first + n {
            if let Some((_, record)) = self.fresh.take(offset) {
                bytes += record.body.len();
            }
        }
        self.fresh.expire(Instant::now());
        bytes
    }
}
