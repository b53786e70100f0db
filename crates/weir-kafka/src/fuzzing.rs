//! Entry point of the `kafka_request` fuzz target (`fuzz/`), and the test that
//! replays its corpus (`fuzz/corpus/kafka_request`) on every `cargo test`.
//!
//! [`request`]: arbitrary bytes as a request frame (what follows the size prefix):
//! the header and body decode or are refused, never a panic or an allocation the
//! bytes cannot back (the vendored decoder's patch). The same bytes as a Produce
//! record set: what parses is written back as Fetch writes it, and that parses to
//! the same records (reserved `x-weir-` headers left out, as Fetch leaves them).
//!
//! Nothing here is used by the front end itself.

use bytes::{Bytes, BytesMut};
use weir_broker::stream::{RESERVED_HEADER_PREFIX, RecordView};

use crate::records::{OutBatch, parse_batches};

/// Decodes `data` as a request and as record batches (see the module doc).
///
/// # Panics
///
/// When record batches that parsed do not parse the same once written for Fetch.
pub fn request(data: &[u8]) {
    let bytes = Bytes::copy_from_slice(data);
    // The session reads at least 8 bytes of frame (its size check).
    if bytes.len() >= 8 {
        let _ = crate::session::decode(bytes.clone());
    }
    let Ok(batches) = parse_batches(&bytes, 1 << 20) else {
        return;
    };
    for batch in batches {
        let mut out = OutBatch::default();
        for (i, r) in batch.records.iter().enumerate() {
            out.push(&RecordView {
                offset: i as u64,
                timestamp_ms: 1_700_000_000_000,
                key: r.key.as_deref(),
                headers: r
                    .headers
                    .iter()
                    .map(|h| (&h.name[..], &h.value[..]))
                    .collect(),
                body: &r.body,
            });
        }
        let mut written = BytesMut::new();
        out.finish(&mut written);
        let again =
            parse_batches(&written.freeze(), 1 << 20).expect("a batch written for Fetch parses");
        assert_eq!(again.len(), 1);
        let again = &again[0].records;
        assert_eq!(again.len(), batch.records.len());
        for (a, b) in batch.records.iter().zip(again) {
            assert_eq!(a.key, b.key);
            assert_eq!(a.body, b.body);
            let shown: Vec<_> = a
                .headers
                .iter()
                .filter(|h| !h.name.starts_with(RESERVED_HEADER_PREFIX.as_bytes()))
                .collect();
            assert_eq!(shown.len(), b.headers.len());
            for (x, y) in shown.iter().zip(&b.headers) {
                assert_eq!((&x.name, &x.value), (&y.name, &y.value));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;

    fn corpus() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/kafka_request")
    }

    /// Every input of the corpus, on a 256 KiB stack as in `fuzz/`.
    #[test]
    fn the_corpus_replays() {
        let mut n = 0;
        for entry in std::fs::read_dir(corpus()).expect("the corpus exists") {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            std::thread::Builder::new()
                .stack_size(256 << 10)
                .spawn(move || request(&bytes))
                .unwrap()
                .join()
                .expect("no panic");
            n += 1;
        }
        assert!(n >= 5, "only {n} inputs");
    }

    /// Seeds: frames a client sends, and a record set.
    fn seeds() -> Vec<(&'static str, Vec<u8>)> {
        let mut produce_batch = BytesMut::new();
        let mut out = OutBatch::default();
        out.push(&RecordView {
            offset: 0,
            timestamp_ms: 1,
            key: Some(b"k"),
            headers: vec![(b"h".as_slice(), b"v".as_slice())],
            body: b"body",
        });
        out.finish(&mut produce_batch);
        vec![
            (
                "api-versions-v3",
                vec![
                    0, 18, 0, 3, 0, 0, 0, 1, 0, 4, b'k', b'c', b'a', b't', 0, 0, 0, 0,
                ],
            ),
            (
                "metadata-v0-all",
                vec![0, 3, 0, 0, 0, 0, 0, 1, 0xff, 0xff, 0, 0, 0, 0],
            ),
            (
                "metadata-v9-huge",
                vec![
                    0, 3, 0, 9, 0, 0, 0, 2, 0xff, 0xff, 0, 0xff, 0xff, 0xff, 0xff, 0x0f,
                ],
            ),
            (
                "fetch-v4-empty",
                vec![
                    0, 1, 0, 4, 0, 0, 0, 3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 1, 0xf4, 0,
                    0, 0, 1, 0, 0x10, 0, 0, 0, 0, 0, 0, 0, 0,
                ],
            ),
            ("record-batch", produce_batch.to_vec()),
        ]
    }

    /// Writes the seeds: `cargo test -p weir-kafka write_seeds -- --ignored`.
    #[test]
    #[ignore = "writes fuzz/corpus/kafka_request"]
    fn write_seeds() {
        std::fs::create_dir_all(corpus()).unwrap();
        for (name, bytes) in seeds() {
            std::fs::write(corpus().join(format!("seed-{name}")), bytes).unwrap();
        }
    }
}
