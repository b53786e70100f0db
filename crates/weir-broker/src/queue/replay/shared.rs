//! The shared log's side of replay: which shared messages each queue wants, and
//! the one scan of the shared log that sorts them out to their queues.

use std::collections::HashMap;

use weir_log::{MessageLog, Offset};

use crate::queue::entry::Entry;
use crate::queue::ready::CHUNK;
use crate::queue::record::{self, Decoded, SHARED};

use super::entries::entry_of;
use super::reading::Chunks;

/// Which shared messages a queue wants from [`scan_shared`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Wanted {
    /// Its shared messages from this key on (its `shared_below`).
    pub(crate) from: u64,
    /// Whether it keeps their de-duplication ids (it has a window).
    pub(crate) ids: bool,
}

/// One shared message for one queue, from the shared log.
pub(crate) struct SharedArrival {
    /// Its entry as the message record gives it: key `SHARED | offset`, the
    /// message's own expiry (the queue's TTL is applied by `finish`), enqueued
    /// when it was published.
    pub(super) entry: Entry,
    /// When it may be delivered (0: at once).
    pub(super) not_before: i64,
    /// Its de-duplication id, for a queue that keeps them.
    pub(super) id: Option<Box<str>>,
}

/// The shared messages of one queue, in key order, in chunks (as `OwnMessages`,
/// and for the same reason).
#[derive(Default)]
pub(crate) struct Arrivals {
    chunks: Vec<Vec<SharedArrival>>,
}

impl Arrivals {
    fn push(&mut self, arrival: SharedArrival) {
        match self.chunks.last_mut() {
            Some(last) if last.len() < CHUNK => last.push(arrival),
            Some(_) => {
                let mut chunk = Vec::with_capacity(CHUNK);
                chunk.push(arrival);
                self.chunks.push(chunk);
            }
            None => self.chunks.push(vec![arrival]),
        }
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = &SharedArrival> {
        self.chunks.iter().flatten()
    }

    /// Each chunk is freed once its arrivals are taken.
    pub(super) fn into_iter(self) -> impl Iterator<Item = SharedArrival> {
        self.chunks.into_iter().flatten()
    }
}

/// Reads the shared log from the lowest key wanted on and sorts its messages out
/// to the queues that want them (by queue id). One pass for all queues.
pub(crate) async fn scan_shared<L: MessageLog>(
    shared: &L,
    wanted: &HashMap<u32, Wanted>,
) -> weir_log::Result<HashMap<u32, Arrivals>> {
    let mut out: HashMap<u32, Arrivals> = HashMap::new();
    let Some(lowest) = wanted.values().map(|w| w.from).min() else {
        return Ok(out);
    };
    let from = Offset((lowest & !SHARED).max(shared.first_offset().0));
    let mut chunks = Chunks::new(shared, from, shared.next_offset());
    while let Some(records) = chunks.next().await? {
        for rec in records {
            let key = SHARED | rec.offset.0;
            match record::decode(rec.key.as_deref(), &rec.body) {
                Ok(Decoded::Shared(destinations, meta)) => {
                    let mut entry = entry_of(key, &meta, rec.body.len() as u32);
                    entry.enqueued_at = rec.timestamp_ms;
                    for id in destinations {
                        let Some(w) = wanted.get(&id).filter(|w| key >= w.from) else {
                            continue;
                        };
                        out.entry(id).or_default().push(SharedArrival {
                            entry,
                            not_before: meta.not_before_ms,
                            id: (w.ids && !meta.id.is_empty()).then(|| meta.id.as_str().into()),
                        });
                    }
                }
                Ok(_) => {
                    tracing::warn!(
                        offset = rec.offset.0,
                        "a record of the shared log that is not a shared message; skipped"
                    );
                }
                Err(e) => {
                    tracing::warn!(
                        offset = rec.offset.0,
                        reason = e.0,
                        "skipping a record of the shared log that does not decode"
                    );
                }
            }
        }
    }
    Ok(out)
}
