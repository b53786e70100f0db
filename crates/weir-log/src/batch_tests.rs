//! Tests of the stored batch format (`batch.rs`).

use super::*;
use proptest::prelude::*;

fn decode(batch: &Bytes) -> (BatchHeader, Vec<Record>) {
    let Check::Complete(header) = check(batch) else {
        panic!("batch did not check: {:?}", check(batch));
    };
    let records = Records::new(batch, &header)
        .map(|r| r.unwrap().to_record(batch).unwrap())
        .collect();
    (header, records)
}

fn sample() -> Vec<NewRecord> {
    vec![
        NewRecord::new("hello").with_timestamp(5),
        NewRecord::new("")
            .with_key("k")
            .with_header("content-type", "text/plain")
            .with_header("", ""),
        NewRecord::new(vec![0u8; 1000]).with_key(""),
    ]
}

/// Large bodies are borrowed, not copied: the pieces are the same bytes, in
/// order, with the same CRC, as one buffer would be, wherever they fall.
#[test]
fn borrowed_bodies_encode_the_same_batch() {
    let big = |n: usize, b: u8| Bytes::from(vec![b; n]);
    let records = vec![
        NewRecord::new(big(BORROW_BODY_BYTES, 1)).with_key("first"),
        NewRecord::new("small").with_header("h", "v"),
        NewRecord::new(big(BORROW_BODY_BYTES + 7, 2)),
        NewRecord::new(big(BORROW_BODY_BYTES * 2, 3)).with_timestamp(9),
        NewRecord::new(big(BORROW_BODY_BYTES - 1, 4)),
    ];
    let mut batch = EncodedBatch::encode(&records, 42, 1 << 20, 1 << 20).unwrap();
    batch.set_base_offset(7);
    assert!(
        batch.parts().count() > 1,
        "large bodies are separate pieces"
    );
    let big_body = &records[3].body;
    assert!(
        batch.parts().any(|p| p.as_ptr() == big_body.as_ptr()),
        "a large body is the record's own memory"
    );
    let bytes = Bytes::copy_from_slice(&batch.contiguous());
    assert_eq!(bytes.len() as u64, batch.len());
    let (header, decoded) = decode(&bytes);
    assert_eq!(header.base_offset, 7);
    assert_eq!(decoded.len(), records.len());
    for (new, got) in records.iter().zip(&decoded) {
        assert_eq!(got.key, new.key);
        assert_eq!(got.headers, new.headers);
        assert_eq!(got.body, new.body);
    }
}

#[test]
fn round_trip_keeps_every_field() {
    let records = sample();
    let mut batch = EncodedBatch::encode(&records, 42, 1 << 20, 1 << 20).unwrap();
    batch.set_base_offset(1000);
    let bytes = Bytes::copy_from_slice(&batch.contiguous());
    let (header, decoded) = decode(&bytes);
    assert_eq!(header.base_offset, 1000);
    assert_eq!(header.count, 3);
    assert_eq!(header.len as usize, bytes.len());
    assert_eq!(header.max_timestamp_ms, 42);
    assert_eq!(decoded.len(), 3);
    for (i, (new, got)) in records.iter().zip(&decoded).enumerate() {
        assert_eq!(got.offset.0, 1000 + i as u64);
        assert_eq!(got.timestamp_ms, new.timestamp_ms.unwrap_or(42));
        assert_eq!(got.key, new.key);
        assert_eq!(got.headers, new.headers);
        assert_eq!(got.body, new.body);
    }
}

#[test]
fn base_offset_is_outside_the_checksum() {
    let mut batch = EncodedBatch::encode(&sample(), 1, 1 << 20, 1 << 20).unwrap();
    batch.set_base_offset(7);
    let crc_a = batch.contiguous()[12..16].to_vec();
    batch.set_base_offset(9_999);
    assert_eq!(&batch.contiguous()[12..16], &crc_a[..]);
    assert!(matches!(check(&batch.contiguous()), Check::Complete(_)));
}

#[test]
fn every_single_bit_flip_after_the_offset_is_detected() {
    let batch = EncodedBatch::encode(&sample(), 1, 1 << 20, 1 << 20).unwrap();
    let good = batch.contiguous().to_vec();
    for byte in 8..good.len() {
        for bit in 0..8 {
            let mut bad = good.clone();
            bad[byte] ^= 1 << bit;
            assert!(
                !matches!(check(&bad), Check::Complete(_)),
                "flip of byte {byte} bit {bit} went unnoticed"
            );
        }
    }
}

#[test]
fn short_buffers_ask_for_more() {
    let batch = EncodedBatch::encode(&sample(), 1, 1 << 20, 1 << 20).unwrap();
    let bytes = batch.contiguous();
    assert_eq!(check(&bytes[..10]), Check::Incomplete { need: 32 });
    assert_eq!(check(&bytes[..40]), Check::Incomplete { need: bytes.len() });
}

/// Found by fuzzing (`fuzz/corpus/log_batch/regress-offset-overflow`): a base
/// offset near `u64::MAX` overflowed the record walk.
#[test]
fn offsets_past_the_last_one_are_invalid() {
    let mut batch = EncodedBatch::encode(&sample(), 1, 1 << 20, 1 << 20).unwrap();
    batch.set_base_offset(u64::MAX - 2);
    assert_eq!(
        check(&batch.contiguous()),
        Check::Invalid(Corruption::OffsetOverflow {
            base_offset: u64::MAX - 2,
            count: 3
        })
    );
    batch.set_base_offset(u64::MAX - 3);
    assert!(
        matches!(check(&batch.contiguous()), Check::Complete(h) if h.next_offset() == u64::MAX)
    );
}

#[test]
fn a_count_the_length_cannot_hold_is_invalid() {
    let batch = EncodedBatch::encode(&[NewRecord::new("")], 1, 1 << 20, 1 << 20).unwrap();
    let mut bytes = batch.contiguous().to_vec();
    bytes[20..24].copy_from_slice(&2u32.to_le_bytes());
    let crc = checksum(&bytes);
    bytes[12..16].copy_from_slice(&crc.to_le_bytes());
    assert_eq!(check(&bytes), Check::Invalid(Corruption::RecordFraming));
}

#[test]
fn zeros_and_absurd_lengths_are_invalid() {
    assert_eq!(
        check(&[0u8; 64]),
        Check::Invalid(Corruption::BatchLength(0))
    );
    let mut header = [0u8; 32];
    header[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(
        check(&header),
        Check::Invalid(Corruption::BatchLength(u32::MAX))
    );
}

#[test]
fn limits_are_enforced_with_the_sizes_in_the_error() {
    let big = vec![NewRecord::new(vec![0u8; 100])];
    let err = EncodedBatch::encode(&big, 0, 100, 1000).unwrap_err();
    assert!(
        matches!(
            err,
            LogError::TooLarge {
                what: "record",
                size: 118,
                limit: 100
            }
        ),
        "{err:?}"
    );
    let many = vec![NewRecord::new(vec![0u8; 50]); 10];
    let err = EncodedBatch::encode(&many, 0, 100, 500).unwrap_err();
    assert!(
        matches!(err, LogError::TooLarge { what: "batch", .. }),
        "{err:?}"
    );
    assert!(matches!(
        EncodedBatch::encode(&[], 0, 100, 500).unwrap_err(),
        LogError::EmptyBatch
    ));
    let long_name = vec![NewRecord::new("").with_header(vec![b'n'; 70_000], "")];
    let err = EncodedBatch::encode(&long_name, 0, 1 << 20, 1 << 20).unwrap_err();
    assert!(
        matches!(
            err,
            LogError::TooLarge {
                what: "header name",
                ..
            }
        ),
        "{err:?}"
    );
}

fn arb_record() -> impl Strategy<Value = NewRecord> {
    let bytes = || proptest::collection::vec(any::<u8>(), 0..64).prop_map(Bytes::from);
    (
        proptest::option::of(any::<i64>()),
        proptest::option::of(bytes()),
        proptest::collection::vec((bytes(), bytes()), 0..4),
        bytes(),
    )
        .prop_map(|(timestamp_ms, key, headers, body)| NewRecord {
            timestamp_ms,
            key,
            headers: headers
                .into_iter()
                .map(|(name, value)| Header { name, value })
                .collect(),
            body,
        })
}

proptest! {
    #[test]
    fn encode_decode_round_trip(
        records in proptest::collection::vec(arb_record(), 1..20),
        base in any::<u32>(),
        now in any::<i64>(),
    ) {
        let mut batch = EncodedBatch::encode(&records, now, 1 << 20, 1 << 24).unwrap();
        batch.set_base_offset(u64::from(base));
        let bytes = Bytes::copy_from_slice(&batch.contiguous());
        let (header, decoded) = decode(&bytes);
        prop_assert_eq!(header.count as usize, records.len());
        prop_assert_eq!(
            header.max_timestamp_ms,
            records.iter().map(|r| r.timestamp_ms.unwrap_or(now)).max().unwrap()
        );
        for (i, (new, got)) in records.iter().zip(&decoded).enumerate() {
            prop_assert_eq!(got.offset.0, u64::from(base) + i as u64);
            prop_assert_eq!(got.timestamp_ms, new.timestamp_ms.unwrap_or(now));
            prop_assert_eq!(&got.key, &new.key);
            prop_assert_eq!(&got.headers, &new.headers);
            prop_assert_eq!(&got.body, &new.body);
        }
    }

    #[test]
    fn check_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        if let Check::Complete(header) = check(&bytes) {
            let batch = Bytes::copy_from_slice(&bytes[..header.len as usize]);
            for r in Records::new(&batch, &header).flatten() {
                let _ = r.to_record(&batch);
            }
        }
    }
}
