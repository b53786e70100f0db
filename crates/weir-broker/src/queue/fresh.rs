//! [`Fresh`]: copies of the messages a queue wrote lately, so delivering one right
//! after it was written needs no read from the log.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use rustc_hash::FxHashMap;
use tokio::time::Instant;
use weir_log::{Header, Record};

use crate::queue::record::{MessageMeta, Outgoing};

/// Most body bytes [`Fresh`] holds per queue, the largest body it takes, and how long
/// it keeps one (a message not delivered by then waits behind a backlog, and is
/// read from the log when its turn comes).
const FRESH_BYTES: usize = 4 << 20;

const FRESH_MAX_BODY: usize = 64 << 10;

const FRESH_FOR: Duration = Duration::from_secs(2);

/// Copies of the messages this queue wrote lately, by offset, so delivering one
/// right after it was written needs no read from the log (a hop to a read thread
/// and back). Bodies are copied: the originals may be slices of a much larger
/// network buffer, which they would keep alive.
#[derive(Default)]
pub(crate) struct Fresh {
    by_offset: FxHashMap<u64, Outgoing>,
    /// Insertion order, for expiry; offsets taken since stay here until they age out.
    order: VecDeque<(u64, Instant)>,
    bytes: usize,
}

impl Fresh {
    pub(crate) fn insert(&mut self, offset: u64, message: Outgoing) {
        let size = message.body.len();
        if size > FRESH_MAX_BODY || self.bytes + size > FRESH_BYTES {
            return;
        }
        let copy = |b: &Bytes| Bytes::copy_from_slice(b);
        let message = Outgoing {
            meta: message.meta,
            headers: message
                .headers
                .iter()
                .map(|h| Header {
                    name: copy(&h.name),
                    value: copy(&h.value),
                })
                .collect(),
            body: copy(&message.body),
        };
        // Those taken already leave the queue from the front.
        while let Some(&(front, _)) = self.order.front()
            && !self.by_offset.contains_key(&front)
        {
            self.order.pop_front();
        }
        self.bytes += size;
        self.by_offset.insert(offset, message);
        self.order.push_back((offset, Instant::now()));
    }

    /// The message at `offset` as its log record would give it, if held.
    pub(crate) fn take(&mut self, offset: u64) -> Option<(MessageMeta, Record)> {
        let m = self.by_offset.remove(&offset)?;
        self.bytes -= m.body.len();
        let rec = Record {
            offset: weir_log::Offset(offset),
            timestamp_ms: 0,
            key: None,
            headers: m.headers,
            body: m.body,
        };
        Some((m.meta, rec))
    }

    /// Drops what was written before `FRESH_FOR` ago.
    pub(crate) fn expire(&mut self, now: Instant) {
        while let Some(&(offset, at)) = self.order.front() {
            if now.duration_since(at) < FRESH_FOR {
                break;
            }
            self.order.pop_front();
            if let Some(m) = self.by_offset.remove(&offset) {
                self.bytes -= m.body.len();
            }
        }
    }
}
