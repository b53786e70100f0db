//! Reading messages back from the queue's log and the shared log, and turning
//! them into deliveries.

use rustc_hash::{FxBuildHasher, FxHashMap};
use weir_log::{MessageLog, Offset, ReadLimits, Record};

use crate::api::Delivery;
use crate::error::{BrokerError, Result};
use crate::queue::entry::{Entry, is_shared};
use crate::queue::record::{self, Decoded, MessageMeta, SHARED};
use crate::queue::state::format_receipt;

use super::Internal;

/// Reads the records at `offsets` of `log` into a map, one read per run of
/// consecutive offsets.
pub(super) async fn read_offsets<L: MessageLog>(
    log: &L,
    queue: &str,
    offsets: &mut [u64],
) -> Result<FxHashMap<u64, Record>> {
    offsets.sort_unstable();
    let mut found: FxHashMap<u64, Record> =
        FxHashMap::with_capacity_and_hasher(offsets.len(), FxBuildHasher);
    let mut i = 0;
    while i < offsets.len() {
        let start = offsets[i];
        let mut j = i + 1;
        while j < offsets.len() && offsets[j] <= offsets[j - 1] + 1 {
            j += 1;
        }
        let records = log
            .read_from(
                Offset(start),
                ReadLimits {
                    max_records: usize::try_from(offsets[j - 1] - start + 1).unwrap_or(usize::MAX),
                    max_bytes: usize::MAX,
                },
            )
            .await
            .map_err(|source| BrokerError::storage(queue.to_owned(), source))?;
        for rec in records {
            found.insert(rec.offset.0, rec);
        }
        i = j;
    }
    Ok(found)
}

/// Reads the messages of `entries` (in their order): own ones from the queue's log,
/// shared ones from the shared log.
pub(super) async fn read_entries<L: MessageLog>(
    log: &L,
    bodies: &L,
    queue: &str,
    entries: &[Entry],
) -> Result<Vec<(MessageMeta, Record)>> {
    let (mut shared, mut own): (Vec<u64>, Vec<u64>) = entries
        .iter()
        .map(|e| e.offset)
        .partition(|k| is_shared(*k));
    for key in &mut shared {
        *key &= !SHARED;
    }
    let mut found = read_offsets(log, queue, &mut own).await?;
    let mut found_shared = if shared.is_empty() {
        FxHashMap::default()
    } else {
        read_offsets(bodies, queue, &mut shared).await?
    };
    let missing = |what: &str, at: u64| {
        BrokerError::internal(format!("queue '{queue}': {what} at offset {at} is missing"))
    };
    let mut out = Vec::with_capacity(entries.len());
    for e in entries {
        let (rec, what) = if is_shared(e.offset) {
            let at = e.offset & !SHARED;
            (
                found_shared
                    .remove(&at)
                    .ok_or_else(|| missing("shared message", at))?,
                "shared message",
            )
        } else {
            (
                found
                    .remove(&e.offset)
                    .ok_or_else(|| missing("message", e.offset))?,
                "message",
            )
        };
        let meta = match record::decode(rec.key.as_deref(), &rec.body) {
            Ok(Decoded::Message(meta)) if !is_shared(e.offset) => meta,
            Ok(Decoded::Shared(_, mut meta)) if is_shared(e.offset) => {
                // Each queue has its own expiry, priority cap and first enqueue time
                // for it.
                meta.expires_at_ms = e.expires_at;
                meta.enqueued_at_ms = e.enqueued_at;
                meta.priority = e.priority;
                meta
            }
            Ok(_) => {
                return Err(BrokerError::internal(format!(
                    "queue '{queue}': the record at key {:#x} is not a {what} record",
                    e.offset
                )));
            }
            Err(err) => {
                return Err(BrokerError::internal(format!(
                    "queue '{queue}': the {what} at key {:#x} does not decode: {}",
                    e.offset, err.0
                )));
            }
        };
        out.push((meta, rec));
    }
    Ok(out)
}

/// The deliveries of `leased` messages, whose records are in `found`.
pub(super) fn deliveries(
    found: Vec<Option<(MessageMeta, Record)>>,
    leased: &[(Entry, u64)],
) -> Vec<Delivery> {
    found
        .into_iter()
        .zip(leased)
        .filter_map(|(message, (entry, lease_id))| {
            let (meta, rec) = message?;
            Some(delivery(
                Some(format_receipt(entry.offset, *lease_id)),
                meta,
                rec,
                entry.attempts,
            ))
        })
        .collect()
}

/// Gives back leases whose deliveries did not reach their receiver.
pub(super) fn release(leased: &[(Entry, u64)]) -> Internal {
    Internal::Release(leased.iter().map(|(e, id)| (e.offset, *id)).collect())
}

/// A peeked message: no receipt, its position.
pub(super) fn peeked(meta: MessageMeta, rec: Record, entry: &Entry) -> Delivery {
    Delivery {
        position: Some(entry.offset),
        ..delivery(None, meta, rec, entry.attempts)
    }
}

pub(super) fn delivery(
    receipt: Option<String>,
    meta: MessageMeta,
    rec: Record,
    delivery_count: u32,
) -> Delivery {
    let mut properties = None;
    let headers = rec
        .headers
        .into_iter()
        .filter_map(|h| {
            if h.name.as_ref() == crate::queue::record::PROPERTIES_HEADER {
                properties = Some(h.value);
                return None;
            }
            if h.name.starts_with(b"\0") {
                // The broker's own (the routing key): not the user's headers.
                return None;
            }
            Some((
                String::from_utf8_lossy(&h.name).into_owned(),
                String::from_utf8_lossy(&h.value).into_owned(),
            ))
        })
        .collect();
    Delivery {
        receipt,
        id: meta.id,
        body: rec.body,
        headers,
        priority: meta.priority,
        group: meta.group,
        delivery_count,
        enqueued_at_ms: meta.enqueued_at_ms,
        dead_letter: meta.dead_letter,
        properties,
        position: None,
    }
}
