//! The `queue_record` target: a queue's log as recovery finds it. Options as stored
//! in `queue.json`, then records for the queue's own log and the shared log, each
//! decoded (what decodes must encode and decode to the same), replayed into a queue
//! state as the broker does at start, and then delivered, acked, nacked, released
//! and expired. The input format ([`QueueInput`]) lives here with its encoder, so
//! the seeds in `tests` are written by the same code that reads them.

use std::collections::HashMap;

use bytes::Bytes;
use weir_log::fuzzing::block_on;
use weir_log::{LogConfig, MemLog, MessageLog, NewRecord, Offset};

use super::input::Input;
use crate::api::QueueOptions;
use crate::queue::record::{self, Decoded, encode_shared};
use crate::queue::replay::{Arrivals, Wanted, finish, replay_own, scan_shared};
use crate::queue::state::{Acked, QueueState, format_receipt};

/// The time replay and delivery run at, ms since the epoch.
pub(super) const NOW: i64 = 1_700_000_000_000;

/// One record of a [`queue_record`] input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogRecord {
    /// In the shared log rather than the queue's own.
    pub shared: bool,
    /// The record key (`None`: no key).
    pub key: Option<Vec<u8>>,
    /// The record body.
    pub body: Vec<u8>,
}

/// A [`queue_record`] input, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueInput {
    /// Records of the own log below this are trimmed away before replay.
    pub trim: u8,
    /// `queue.json` (the default options when it does not parse).
    pub options: Vec<u8>,
    /// The records, in log order.
    pub records: Vec<LogRecord>,
}

impl QueueInput {
    /// `[trim u8][options len u16 LE][options]`, then records, each `[flags u8:
    /// bit 0 shared, bit 1 keyed][key len u8][key][body len u16 LE][body]`.
    pub fn parse(data: &[u8]) -> QueueInput {
        let mut input = Input(data);
        let trim = input.u8();
        let len = usize::from(input.u16());
        let options = input.bytes(len).to_vec();
        let mut records = Vec::new();
        while !input.is_empty() {
            let flags = input.u8();
            let key_len = usize::from(input.u8());
            let key = input.bytes(key_len).to_vec();
            let body_len = usize::from(input.u16());
            let body = input.bytes(body_len).to_vec();
            records.push(LogRecord {
                shared: flags & 1 != 0,
                key: (flags & 2 != 0).then_some(key),
                body,
            });
        }
        QueueInput {
            trim,
            options,
            records,
        }
    }

    /// The bytes [`QueueInput::parse`] reads back as `self` (keys are cut to 255
    /// bytes, bodies to 65,535).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![self.trim];
        let options = &self.options[..self.options.len().min(usize::from(u16::MAX))];
        out.extend_from_slice(&(options.len() as u16).to_le_bytes());
        out.extend_from_slice(options);
        for r in &self.records {
            let key = r.key.as_deref().unwrap_or_default();
            let key = &key[..key.len().min(255)];
            let body = &r.body[..r.body.len().min(usize::from(u16::MAX))];
            out.push(u8::from(r.shared) | (u8::from(r.key.is_some()) << 1));
            out.push(key.len() as u8);
            out.extend_from_slice(key);
            out.extend_from_slice(&(body.len() as u16).to_le_bytes());
            out.extend_from_slice(body);
        }
        out
    }
}

/// Decodes one record, and checks that what decodes encodes to the same.
fn decode_checked(key: Option<&[u8]>, body: &[u8]) {
    match record::decode(key, body) {
        Ok(Decoded::Message(meta)) => {
            let again = meta.encode();
            match record::decode(Some(&again), &[]) {
                Ok(Decoded::Message(back)) => assert_eq!(back, meta, "message key round trip"),
                other => panic!("a message key encoded again decodes as {other:?}"),
            }
        }
        Ok(Decoded::State(op)) => {
            let (k, b) = op.encode();
            match record::decode(Some(&k), &b) {
                Ok(Decoded::State(back)) => assert_eq!(back, op, "state record round trip"),
                other => panic!("a state record encoded again decodes as {other:?}"),
            }
        }
        Ok(Decoded::Shared(destinations, meta)) => {
            let again = encode_shared(&destinations, &meta);
            match record::decode(Some(&again), &[]) {
                Ok(Decoded::Shared(d, m)) => {
                    assert_eq!((d, m), (destinations, meta), "shared key round trip");
                }
                other => panic!("a shared key encoded again decodes as {other:?}"),
            }
        }
        Err(_) => {}
    }
}

/// Replays a queue's logs made of `data` (see [`super`]).
///
/// # Panics
///
/// When a record that decodes does not decode the same after encoding it again.
pub fn queue_record(data: &[u8]) {
    let input = QueueInput::parse(data);
    for r in &input.records {
        decode_checked(r.key.as_deref(), &r.body);
    }
    let options: QueueOptions = serde_json::from_slice(&input.options).unwrap_or_default();
    let config = LogConfig {
        max_record_bytes: 1 << 20,
        max_batch_bytes: 2 << 20,
        ..LogConfig::default()
    };
    let own = MemLog::new(config.clone());
    let shared = MemLog::new(config);
    for (i, r) in input.records.iter().enumerate() {
        let log = if r.shared { &shared } else { &own };
        let record = NewRecord {
            timestamp_ms: Some(NOW - 1_000 + i64::try_from(i).unwrap_or(0)),
            key: r.key.clone().map(Bytes::from),
            headers: Vec::new(),
            body: Bytes::from(r.body.clone()),
        };
        block_on(log.append_batch(&[record])).expect("an in-memory append");
    }
    let trim = u64::from(input.trim).min(own.next_offset().0);
    block_on(own.trim_before(Offset(trim))).expect("an in-memory trim");

    let mut state = QueueState::new(options, 1);
    let replayed = block_on(replay_own(&own, &mut state, "fuzz", NOW)).expect("replay reads");
    let wanted = Wanted {
        from: replayed.shared_below,
        ids: state.options().dedup_window_ms.is_some(),
    };
    let arrivals = block_on(scan_shared(&shared, &HashMap::from([(0, wanted)])))
        .expect("the shared scan reads")
        .remove(&0)
        .unwrap_or_else(Arrivals::default);
    let _ = finish(replayed, arrivals, &mut state, NOW);

    // Deliver what was restored, and settle it every way there is.
    let mut now = NOW;
    for round in 0..4 {
        let (leased, _) = state.lease(64, 30_000, now);
        let mut acked = Vec::new();
        for (i, (entry, lease)) in leased.into_iter().enumerate() {
            let receipt = format_receipt(entry.offset, lease);
            match (i + round) % 4 {
                0 => {
                    if let Ok(Acked::Now(_)) = state.ack("fuzz", &receipt) {
                        acked.push(entry.offset);
                    }
                }
                1 => {
                    let _ = state.nack("fuzz", &receipt, true, None, now);
                }
                2 => {
                    let _ = state.nack("fuzz", &receipt, false, None, now);
                }
                _ => state.release(entry.offset, lease),
            }
        }
        state.acks_written(&acked, true);
        now = now.saturating_add(3_600_000);
        let _ = state.tick(now);
    }
    let _ = state.stats(0, now);
    let _ = state.floor(own.next_offset().0);
    let _ = state.purge();
}
