//! Tests of the queue record format (`super`): round trips, truncated and damaged
//! records, and records written by older versions.

use super::*;
use proptest::prelude::*;

#[test]
fn message_meta_round_trips() {
    let meta = MessageMeta {
        id: "order-7".into(),
        priority: 3,
        not_before_ms: 1_700_000_000_000,
        expires_at_ms: 0,
        group: Some("customer-1".into()),
        attempts: 2,
        moved_from: Some(0),
        enqueued_at_ms: 1_699_999_999_000,
        dead_letter: Some(DeadLetterInfo {
            reason: DeadLetterReason::MaxDeliveries,
            time_ms: 1_700_000_000_500,
            source_queue: "orders".into(),
            delivery_count: 5,
            exchange: "dlx".into(),
            routing_keys: vec!["retry".into()],
            deaths: vec![
                Death {
                    queue: "orders".into(),
                    reason: DeadLetterReason::MaxDeliveries,
                    count: 1,
                    exchange: "shop".into(),
                    routing_keys: vec!["order.new".into(), "cc".into()],
                    time_ms: 1_700_000_000_500,
                },
                Death {
                    queue: "retry".into(),
                    reason: DeadLetterReason::Expired,
                    count: 7,
                    exchange: String::new(),
                    routing_keys: Vec::new(),
                    time_ms: 1_600_000_000_000,
                },
            ],
            first_death: FirstDeath {
                queue: "retry".into(),
                reason: DeadLetterReason::Expired,
                exchange: String::new(),
            },
        }),
        shared_mark: 98_765,
    };
    let key = meta.encode();
    match decode(Some(&key), b"body").unwrap() {
        Decoded::Message(m) => assert_eq!(m, meta),
        other => panic!("kind: {other:?}"),
    }
    for cut in 0..key.len() {
        assert!(decode(Some(&key[..cut]), b"").is_err(), "cut at {cut}");
    }
}

#[test]
fn dead_letters_written_before_the_history_read_as_one_death() {
    let mut key = vec![KIND_MESSAGE, 1, 1, b'm', 0, 0, 0, 0, 0, 0, 0];
    // dead_letter kind 1: rejected, time 9, source "q", delivered 2.
    key.extend_from_slice(&[1, 1, 9, 1, b'q', 2]);
    let Decoded::Message(m) = decode(Some(&key), b"").unwrap() else {
        panic!("not a message");
    };
    let d = m.dead_letter.unwrap();
    assert_eq!(
        (
            d.reason,
            d.time_ms,
            d.source_queue.as_str(),
            d.delivery_count
        ),
        (DeadLetterReason::Rejected, 9, "q", 2)
    );
    assert_eq!(d.deaths.len(), 1);
    assert_eq!((d.deaths[0].queue.as_str(), d.deaths[0].count), ("q", 1));
    assert_eq!(d.first_death.queue, "q");
    assert_eq!((d.exchange.as_str(), d.routing_keys.len()), ("", 0));
}

#[test]
fn version_1_message_records_still_decode_without_a_mark() {
    let meta = MessageMeta {
        id: "old".into(),
        shared_mark: 5,
        ..MessageMeta::default()
    };
    let mut key = meta.encode().to_vec();
    key[1] = 1;
    key.pop(); // version 1 had no mark (5 is one varint byte)
    match decode(Some(&key), b"").unwrap() {
        Decoded::Message(m) => assert_eq!(
            m,
            MessageMeta {
                shared_mark: 0,
                ..meta
            }
        ),
        other => panic!("kind: {other:?}"),
    }
}

#[test]
fn shared_records_round_trip_and_cost_a_few_bytes_per_destination() {
    let meta = MessageMeta {
        id: "fan".into(),
        priority: 2,
        ..MessageMeta::default()
    };
    let ids: Vec<u32> = (1..=10).collect();
    let key = encode_shared(&ids, &meta);
    assert_eq!(key.len(), meta.encode().len() + 2 + ids.len());
    match decode(Some(&key), b"body").unwrap() {
        Decoded::Shared(got, m) => {
            assert_eq!(got, ids);
            assert_eq!(m, meta);
        }
        other => panic!("kind: {other:?}"),
    }
    for cut in 0..key.len() {
        assert!(decode(Some(&key[..cut]), b"").is_err(), "cut at {cut}");
    }
}

#[test]
fn retired_reference_records_are_refused() {
    assert!(decode(Some(&[3, 1, 0]), b"").is_err());
}

#[test]
fn checkpoints_without_shared_below_still_decode() {
    let op = StateOp::Totals {
        below: 9,
        shared_below: 300,
        totals: Totals {
            sent: 4,
            ..Totals::default()
        },
    };
    let (key, body) = op.encode();
    // The older layout ended before `shared_below` (300 is two varint bytes).
    let old = &body[..body.len() - 2];
    match decode(Some(&key), old).unwrap() {
        Decoded::State(StateOp::Totals {
            below,
            shared_below,
            totals,
        }) => {
            assert_eq!((below, shared_below, totals.sent), (9, 0, 4));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn truncated_keys_are_errors_not_panics() {
    let key = MessageMeta {
        id: "x".into(),
        ..MessageMeta::default()
    }
    .encode();
    for cut in 0..key.len() {
        assert!(decode(Some(&key[..cut]), b"").is_err(), "cut at {cut}");
    }
    assert!(decode(None, b"").is_err());
}

proptest! {
    #[test]
    fn state_ops_round_trip(
        delivered in proptest::collection::vec((any::<u64>(), any::<u32>()), 0..20),
        settled in proptest::collection::btree_set(any::<u64>(), 0..20),
        retry in proptest::collection::vec((any::<u64>(), any::<u32>(), 0i64..i64::MAX), 0..20),
    ) {
        let ops = [
            StateOp::Delivered(delivered),
            StateOp::Settled(SettleReason::Acked, settled.into_iter().collect()),
            StateOp::Retry(retry),
            StateOp::Dedup(vec![(5, "a".into()), (9, "bé".into())]),
            StateOp::Totals {
                below: 7,
                shared_below: SHARED + 12,
                totals: Totals { sent: 1, acked: 2, purged: u64::MAX, ..Totals::default() },
            },
            StateOp::Duplicates(3),
            StateOp::Declined(vec![SHARED + 3, SHARED + 90]),
        ];
        for op in ops {
            prop_assert_eq!(roundtrip(&op), op);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(key in proptest::collection::vec(any::<u8>(), 0..64),
                                   body in proptest::collection::vec(any::<u8>(), 0..64)) {
        let _ = decode(Some(&key), &body);
    }
}
