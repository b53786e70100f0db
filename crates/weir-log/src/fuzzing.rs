//! Entry points for the fuzz targets in `fuzz/` (cargo fuzz), and for the tests that
//! replay their corpora (`fuzz/corpus/log_batch`, `fuzz/corpus/log_recovery`) on
//! every `cargo test`.
//!
//! * [`batch`](fn@batch): arbitrary bytes as the batches of a segment: the batch check, the
//!   record walk and record parsing, plus the file header, index entry and the
//!   decoders of `log.meta`. A batch whose records all parse must encode again to
//!   records that parse the same. The same bytes as an appender's batches
//!   ([`crate::IncomingBatch`]), in weir's format and as a Kafka producer's
//!   (`parse_kafka`, within a bound for compressed ones): what parses must stamp
//!   into batches that check and hold the same records.
//! * [`recovery`]: arbitrary bytes as the files of a log directory (segments,
//!   indexes, `log.meta`, temporaries) on the in-memory [`CrashFs`]. Opening it
//!   must either fail with an error or give a log whose records read back, that
//!   takes an append and reads it back, and that opens again to the same offsets
//!   with nothing more to repair.
//!
//! Nothing here is used by the log itself.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use bytes::Bytes;

use crate::batch::{self, BATCH_HEADER_LEN, Check, EncodedBatch, FORMAT_MAX_BATCH_LEN, Records};
use crate::header::{FILE_HEADER_LEN, FileHeader, FileKind};
use crate::index::{self, ENTRY_LEN};
use crate::segment::{index_file_name, log_file_name, parse_file_name};
use crate::testing::CrashFs;
use crate::{
    FileLog, IncomingBatch, LogConfig, LogError, MessageLog, NewRecord, Offset, ReadLimits, Record,
};

/// Decodes `data` as a run of batches (see the module doc).
///
/// # Panics
///
/// When a batch that decoded does not decode the same after encoding it again.
pub fn batch(data: &[u8]) {
    let path = Path::new("fuzz.log");
    if let Some(header) = data.first_chunk::<FILE_HEADER_LEN>() {
        for kind in [FileKind::Segment, FileKind::Index] {
            let _ = FileHeader::decode(header, kind, 0, path);
        }
    }
    let _ = index::decode_entries(data, u64::MAX);
    let _ = index::decode_entries(data, data.len() as u64);

    incoming(data);
    let bytes = Bytes::copy_from_slice(data);
    let mut pos = 0;
    while pos < bytes.len() {
        let Check::Complete(header) = batch::check(&bytes[pos..]) else {
            // Not a batch here: try from the next byte, as a reader resyncing would
            // (cheaply: only a few times per input).
            pos += BATCH_HEADER_LEN.max(1);
            continue;
        };
        let len = header.len as usize;
        let one = bytes.slice(pos..pos + len);
        pos += len;
        let mut records = Vec::new();
        let mut whole = true;
        match batch::record_source(&one, &header) {
            Ok(one) => {
                for record in Records::new(&one, &header) {
                    match record.and_then(|r| r.to_record(&one)) {
                        Ok(record) => records.push(record),
                        Err(_) => whole = false,
                    }
                }
            }
            Err(_) => whole = false,
        }
        if whole {
            assert_eq!(
                records.len(),
                header.count as usize,
                "records of {header:?}"
            );
            round_trip(&records, header.base_offset);
        }
    }
}

/// `data` as an appender's batches: refused, or stamped into batches that check and
/// hold records with the same keys.
fn incoming(data: &[u8]) {
    let weir = IncomingBatch::parse(data).unwrap_or_default();
    let kafka = IncomingBatch::parse_kafka(data, 1 << 20).unwrap_or_default();
    for incoming in weir.into_iter().chain(kafka) {
        let (count, keys) = (
            incoming.count(),
            incoming.map_keys(|k| k.map(<[u8]>::to_vec)),
        );
        let mut stamped = incoming
            .into_encoded(7, u32::MAX, FORMAT_MAX_BATCH_LEN)
            .expect("within the format's limits");
        stamped.set_base_offset(3);
        let bytes = Bytes::copy_from_slice(&stamped.contiguous());
        let Check::Complete(header) = batch::check(&bytes) else {
            panic!("a stamped incoming batch does not check");
        };
        assert_eq!((header.count, header.max_timestamp_ms), (count, 7));
        let bytes = batch::record_source(&bytes, &header).expect("a stamped batch inflates");
        let records: Vec<Record> = Records::new(&bytes, &header)
            .map(|r| {
                r.and_then(|r| r.to_record(&bytes))
                    .expect("stamped records parse")
            })
            .collect();
        let got: Vec<Option<Vec<u8>>> = records
            .iter()
            .map(|r| r.key.as_ref().map(|k| k.to_vec()))
            .collect();
        assert_eq!(got, keys, "keys changed through stamping");
        assert!(
            records.iter().all(|r| r.timestamp_ms == 7),
            "every record stamped"
        );
    }
}

/// Encodes decoded records again and checks they decode to the same.
fn round_trip(records: &[Record], base_offset: u64) {
    let new: Vec<NewRecord> = records
        .iter()
        .map(|r| NewRecord {
            timestamp_ms: Some(r.timestamp_ms),
            key: r.key.clone(),
            headers: r.headers.clone(),
            body: r.body.clone(),
        })
        .collect();
    let mut encoded = EncodedBatch::encode(&new, 0, u32::MAX, FORMAT_MAX_BATCH_LEN)
        .expect("decoded records encode again");
    encoded.set_base_offset(base_offset);
    let again = Bytes::copy_from_slice(&encoded.contiguous());
    let Check::Complete(header) = batch::check(&again) else {
        panic!("a batch encoded from decoded records does not check");
    };
    let again = batch::record_source(&again, &header).expect("an encoded batch reads");
    let decoded: Vec<Record> = Records::new(&again, &header)
        .map(|r| {
            r.and_then(|r| r.to_record(&again))
                .expect("records encoded again parse")
        })
        .collect();
    assert_eq!(
        decoded, records,
        "records changed through encode and decode"
    );
}

/// Bases a file name can have in [`recovery`] inputs (picked by index): small ones
/// that seeds use, and the edges of the offset space.
const BASES: [u64; 16] = [
    0,
    1,
    2,
    3,
    4,
    5,
    8,
    10,
    16,
    20,
    100,
    1000,
    1 << 32,
    (1 << 62) - 1,
    u64::MAX - 1,
    u64::MAX,
];

/// The directory of the log in [`recovery`].
const DIR: &str = "/fuzz/log";

/// One file of a [`recovery`] input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirFile {
    /// Its name in the log directory.
    pub name: String,
    /// Its bytes.
    pub bytes: Vec<u8>,
}

/// Flag of a [`recovery`] input's first byte: recompute the checksums of file
/// headers, batches, index entries and `log.meta`, so the fuzzer reaches what
/// comes after them.
pub const FIX_CHECKSUMS: u8 = 1;

/// Parses a [`recovery`] input: a flags byte, then files, each `[tag u8][len u16
/// LE][bytes]`. The tag's low two bits say which file (0 segment, 1 index,
/// 2 `log.meta`, 3 a temporary), the rest picks its base offset from `BASES`.
pub fn parse_dir(data: &[u8]) -> (u8, Vec<DirFile>) {
    let Some((&flags, mut rest)) = data.split_first() else {
        return (0, Vec::new());
    };
    let mut files = Vec::new();
    while let [tag, l0, l1, tail @ ..] = rest {
        let len = usize::from(u16::from_le_bytes([*l0, *l1])).min(tail.len());
        let (bytes, after) = tail.split_at(len);
        rest = after;
        let base = BASES[usize::from(tag >> 2) % BASES.len()];
        let name = match tag & 3 {
            0 => log_file_name(base),
            1 => index_file_name(base),
            2 => "log.meta".to_owned(),
            _ => format!("{}.tmp", index_file_name(base)),
        };
        let mut bytes = bytes.to_vec();
        if flags & FIX_CHECKSUMS != 0 {
            fix_checksums(tag & 3, &mut bytes);
        }
        files.push(DirFile { name, bytes });
    }
    (flags, files)
}

/// Writes a [`recovery`] input for `files` (seeds and tests).
pub fn encode_dir(flags: u8, files: &[DirFile]) -> Vec<u8> {
    let mut out = vec![flags];
    for file in files {
        let (kind, base) = if file.name == "log.meta" {
            (2, 0)
        } else if let Some((base, kind)) = parse_file_name(&file.name) {
            (u8::from(kind == FileKind::Index), base)
        } else if let Some((base, _)) = file.name.strip_suffix(".tmp").and_then(parse_file_name) {
            (3, base)
        } else {
            continue;
        };
        let Some(index) = BASES.iter().position(|b| *b == base) else {
            continue;
        };
        let Ok(len) = u16::try_from(file.bytes.len()) else {
            continue;
        };
        out.push(((index as u8) << 2) | kind);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&file.bytes);
    }
    out
}

fn put_crc(bytes: &mut [u8], covered: std::ops::Range<usize>, at: usize) {
    if bytes.len() >= at + 4 && covered.end <= bytes.len() {
        let crc = crc32c::crc32c(&bytes[covered]);
        bytes[at..at + 4].copy_from_slice(&crc.to_le_bytes());
    }
}

/// `kind` as in [`parse_dir`]'s tags.
fn fix_checksums(kind: u8, bytes: &mut [u8]) {
    if kind == 2 {
        put_crc(bytes, 0..20, 20);
        return;
    }
    put_crc(bytes, 0..28, 28);
    if kind == 0 {
        let mut pos = FILE_HEADER_LEN;
        while pos + BATCH_HEADER_LEN <= bytes.len() {
            let len = u32::from_le_bytes([
                bytes[pos + 8],
                bytes[pos + 9],
                bytes[pos + 10],
                bytes[pos + 11],
            ]) as usize;
            if len < BATCH_HEADER_LEN || pos + len > bytes.len() {
                break;
            }
            let batch = &mut bytes[pos..pos + len];
            let crc = crc32c::crc32c_append(crc32c::crc32c(&batch[8..12]), &batch[16..]);
            batch[12..16].copy_from_slice(&crc.to_le_bytes());
            pos += len;
        }
    } else {
        let mut pos = FILE_HEADER_LEN;
        while pos + ENTRY_LEN <= bytes.len() {
            put_crc(bytes, pos..pos + 16, pos + 16);
            pos += ENTRY_LEN;
        }
    }
}

/// The configuration [`recovery`] opens logs with: small segments and a dense
/// index, so inputs of a few KiB hold several of each.
pub fn recovery_config() -> LogConfig {
    LogConfig {
        segment_bytes: 1024,
        index_interval_bytes: 64,
        lock_dir: false,
        ..LogConfig::default()
    }
}

/// Opens a log directory made of `data` (see the module doc).
///
/// # Panics
///
/// When a log that opened loses an append, reads back something else than was
/// appended, or needs repairs again at its next open.
pub fn recovery(data: &[u8]) {
    let (_, files) = parse_dir(data);
    let fs = CrashFs::new();
    let dir = PathBuf::from(DIR);
    let shared = fs.shared();
    shared.create_dir_all(&dir).expect("in memory");
    for file in &files {
        let path = dir.join(&file.name);
        let handle = shared.create(&path).expect("in memory");
        handle.write_all_at(0, &[&file.bytes]).expect("in memory");
        handle.sync_data().expect("in memory");
    }
    shared.sync_dir(&dir).expect("in memory");

    let Ok((log, _report)) = FileLog::open_with(fs.shared(), &dir, recovery_config()) else {
        return;
    };
    let (first, next) = (log.first_offset(), log.next_offset());
    let whole = read_all(&log, first, next);
    for timestamp in [i64::MIN, 0, i64::MAX] {
        let _ = block_on(log.offset_for_timestamp(timestamp));
    }
    let mut expected_next = next;
    if whole {
        let record = NewRecord::new("after recovery")
            .with_key("k")
            .with_header("h", "v")
            .with_timestamp(7);
        match block_on(log.append_batch(std::slice::from_ref(&record))) {
            Ok(appended) => {
                assert_eq!(appended.first, next, "an append after recovery");
                expected_next = appended.next;
                let back = log
                    .read_blocking(next, ReadLimits::records(1))
                    .expect("the record just appended reads back");
                assert_eq!(back.len(), 1);
                assert_eq!(
                    (&back[0].key, &back[0].headers, &back[0].body),
                    (&record.key, &record.headers, &record.body)
                );
            }
            // The offsets are exhausted (a base near u64::MAX).
            Err(LogError::TooLarge { .. } | LogError::OffsetOutOfRange { .. }) => {}
            Err(e) => panic!("an append to a recovered log failed: {e}"),
        }
    }
    let closed = block_on(log.close());
    drop(log);
    if closed.is_err() {
        return;
    }
    // What recovery left (and the append) opens again as it was, with nothing to
    // repair.
    let (again, report) = FileLog::open_with(fs.shared(), &dir, recovery_config())
        .unwrap_or_else(|e| panic!("a log that recovered does not open again: {e}"));
    assert_eq!(
        (again.first_offset(), again.next_offset()),
        (first, expected_next),
        "offsets after reopening"
    );
    assert_eq!(report.truncated_bytes, 0, "a second recovery cut bytes");
    let _ = block_on(again.close());
}

/// Reads `first..next` in chunks; false if a read failed (damage found late).
fn read_all(log: &FileLog, first: Offset, next: Offset) -> bool {
    let mut at = first;
    while at < next {
        match log.read_blocking(at, ReadLimits::new(64, 64 << 10)) {
            Ok(records) if !records.is_empty() => {
                for (i, r) in records.iter().enumerate() {
                    assert_eq!(r.offset.0, at.0 + i as u64, "records out of order");
                }
                at = Offset(at.0 + records.len() as u64);
            }
            Ok(_) => panic!("an empty read at {at} below the end {next}"),
            Err(_) => return false,
        }
    }
    true
}

/// Runs a future to completion on this thread. The log's futures only wait for its
/// own threads, so no runtime is needed.
pub fn block_on<F: Future>(future: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = pin!(future);
    loop {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::park();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Torn;

    /// The stack every corpus input runs on, as in `fuzz/`: deep recursion shows.
    const STACK: usize = 256 << 10;

    fn on_small_stack(f: impl FnOnce() + Send + 'static) {
        std::thread::Builder::new()
            .stack_size(STACK)
            .spawn(f)
            .expect("spawn")
            .join()
            .expect("the input ran clean");
    }

    fn corpus(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../fuzz/corpus")
            .join(name)
    }

    fn replay(name: &str, min: usize, run: fn(&[u8])) {
        let dir = corpus(name);
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).expect("the corpus exists") {
            let path = entry.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            on_small_stack(move || run(&bytes));
            n += 1;
        }
        assert!(n >= min, "only {n} inputs in {}", dir.display());
    }

    fn records(n: usize, seed: usize) -> Vec<NewRecord> {
        (0..n)
            .map(|i| {
                let mut r = NewRecord::new(vec![b'a' + (i % 26) as u8; (i * 37 + seed) % 90])
                    .with_timestamp(1_000 + i64::try_from(i + seed).unwrap());
                if (i + seed).is_multiple_of(3) {
                    r = r.with_key(format!("key-{i}"));
                }
                if (i + seed) % 4 == 1 {
                    r = r
                        .with_header("content-type", "text/plain")
                        .with_header("", "");
                }
                r
            })
            .collect()
    }

    /// Files of a log made by appending `batches` (sizes) on a fresh `CrashFs`,
    /// trimmed below `trim`, then crashed with `torn` (`None`: closed cleanly).
    fn make_dir(batches: &[usize], trim: u64, torn: Option<Torn>) -> Vec<DirFile> {
        let fs = CrashFs::new();
        let dir = PathBuf::from(DIR);
        let (log, _) = FileLog::open_with(fs.shared(), &dir, recovery_config()).unwrap();
        for (i, n) in batches.iter().enumerate() {
            block_on(log.append_batch(&records(*n, i))).unwrap();
        }
        if trim > 0 {
            block_on(log.trim_before(Offset(trim))).unwrap();
        }
        let fs = match torn {
            None => {
                block_on(log.close()).unwrap();
                fs
            }
            Some(torn) => {
                let _ = block_on(log.append_batch(&records(3, 99)));
                fs.crash();
                drop(log);
                fs.after_crash(torn)
            }
        };
        let mut names = fs.shared().list(&dir).unwrap();
        names.sort();
        names
            .into_iter()
            .map(|name| DirFile {
                bytes: fs.file_bytes(&dir.join(&name)).unwrap(),
                name,
            })
            .collect()
    }

    /// The seeds of `fuzz/corpus/log_recovery` and, from their segments,
    /// `fuzz/corpus/log_batch`.
    fn seeds() -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        let shapes: [(&str, &[usize], u64); 5] = [
            ("empty", &[], 0),
            ("one", &[1], 0),
            ("few", &[1, 3, 2], 0),
            ("rolled", &[8, 8, 8, 8, 8, 8, 8, 8], 0),
            ("trimmed", &[8, 8, 8, 8, 8, 8, 8, 8], 30),
        ];
        for (name, batches, trim) in shapes {
            let files = make_dir(batches, trim, None);
            for flags in [0, FIX_CHECKSUMS] {
                out.push((
                    format!("recovery-{name}-{flags}"),
                    encode_dir(flags, &files),
                ));
            }
        }
        for torn in Torn::ALL {
            let files = make_dir(&[2, 5, 1, 3, 6], 0, Some(torn));
            let name = format!("{torn:?}").replace(['(', ')'], "-");
            out.push((format!("recovery-crash-{name}"), encode_dir(0, &files)));
        }
        out
    }

    fn is(file: &DirFile, kind: FileKind) -> bool {
        parse_file_name(&file.name).is_some_and(|(_, k)| k == kind)
    }

    fn batch_seeds() -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        let mut dirs = vec![
            ("one", make_dir(&[1], 0, None)),
            ("few", make_dir(&[1, 3, 2], 0, None)),
            ("many", make_dir(&[7, 1, 9, 2, 8, 8, 8, 8, 8], 0, None)),
        ];
        for torn in [Torn::HalfTail, Torn::FlippedBit, Torn::Hole] {
            dirs.push(("crash", make_dir(&[2, 5, 1, 3, 6], 0, Some(torn))));
        }
        for (i, (name, files)) in dirs.into_iter().enumerate() {
            for file in files {
                if is(&file, FileKind::Segment) || is(&file, FileKind::Index) {
                    out.push((format!("batch-{name}-{i}-{}", file.name), file.bytes));
                }
            }
        }
        // A Kafka producer's batches, each codec, as Produce hands them to the log.
        let records = [
            NewRecord::new("a"),
            NewRecord::new("bb").with_key("k").with_header("h", "v"),
        ];
        for codec in 0..=4 {
            let mut two = crate::testing::kafka_batch(&records, codec, None);
            two.extend(crate::testing::kafka_batch(
                &records[1..],
                codec,
                Some((5, 0, 9)),
            ));
            out.push((format!("batch-kafka-codec-{codec}"), two));
        }
        out
    }

    #[test]
    fn seeds_open_and_read_back() {
        for (name, bytes) in seeds() {
            let (_, files) = parse_dir(&bytes);
            assert_eq!(encode_dir(0, &files).len(), bytes.len(), "{name}");
            recovery(&bytes);
        }
        for (name, bytes) in batch_seeds() {
            if name.starts_with("batch-kafka") {
                let parsed = IncomingBatch::parse_kafka(&bytes, 1 << 20);
                assert_eq!(parsed.map(|b| b.len()), Ok(2), "{name}");
            }
            batch(&bytes);
        }
        // A clean log opens with every record.
        let bytes = encode_dir(0, &make_dir(&[1, 3, 2], 0, None));
        let (_, files) = parse_dir(&bytes);
        let fs = CrashFs::new();
        let shared = fs.shared();
        let dir = PathBuf::from(DIR);
        shared.create_dir_all(&dir).unwrap();
        for f in files {
            shared
                .create(&dir.join(f.name))
                .unwrap()
                .write_all_at(0, &[&f.bytes])
                .unwrap();
        }
        let (log, _) = FileLog::open_with(shared, &dir, recovery_config()).unwrap();
        assert_eq!(log.next_offset(), Offset(6));
    }

    /// Found by fuzzing (`regress-start-offset-max`): a `log.meta` holding a start
    /// offset of `u64::MAX` opened, and the writer's next offset overflowed at the
    /// first append. Offsets past 2^62 are refused as damage.
    #[test]
    fn offsets_past_the_largest_are_refused_at_open() {
        let bytes = std::fs::read(corpus("log_recovery").join("regress-start-offset-max")).unwrap();
        let (_, files) = parse_dir(&bytes);
        assert_eq!(files[0].name, "log.meta");
        let fs = CrashFs::new();
        let shared = fs.shared();
        let dir = PathBuf::from(DIR);
        shared.create_dir_all(&dir).unwrap();
        for f in &files {
            shared
                .create(&dir.join(&f.name))
                .unwrap()
                .write_all_at(0, &[&f.bytes])
                .unwrap();
        }
        let err = FileLog::open_with(shared, &dir, recovery_config()).unwrap_err();
        assert!(
            matches!(
                err,
                LogError::Corrupt {
                    reason: crate::Corruption::OffsetOverflow {
                        base_offset: u64::MAX,
                        count: 0
                    },
                    ..
                }
            ),
            "{err}"
        );
        recovery(&bytes);
    }

    /// Found by fuzzing (`regress-phantom-end-entry`): the active segment's index
    /// ended in a valid end entry naming offset 11 while the segment held 8
    /// records; recovery trusted it, and offsets 8..11 were never readable.
    #[test]
    fn an_end_entry_that_disagrees_with_the_segment_is_not_trusted() {
        let bytes =
            std::fs::read(corpus("log_recovery").join("regress-phantom-end-entry")).unwrap();
        let (_, files) = parse_dir(&bytes);
        let fs = CrashFs::new();
        let shared = fs.shared();
        let dir = PathBuf::from(DIR);
        shared.create_dir_all(&dir).unwrap();
        for f in &files {
            shared
                .create(&dir.join(&f.name))
                .unwrap()
                .write_all_at(0, &[&f.bytes])
                .unwrap();
        }
        let (log, _) = FileLog::open_with(shared, &dir, recovery_config()).unwrap();
        assert_eq!(log.next_offset(), Offset(8));
        recovery(&bytes);
    }

    /// Every file the fuzzer kept (and the seeds) runs clean on every `cargo test`.
    #[test]
    fn the_fuzz_corpora_replay() {
        replay("log_batch", batch_seeds().len(), batch);
        replay("log_recovery", seeds().len(), recovery);
    }

    /// Writes the seeds into the corpora: `cargo test -p weir-log write_seeds --
    /// --ignored`.
    #[test]
    #[ignore = "writes fuzz/corpus/log_batch and fuzz/corpus/log_recovery"]
    fn write_seeds() {
        for (dir, seeds) in [
            (corpus("log_recovery"), seeds()),
            (corpus("log_batch"), batch_seeds()),
        ] {
            std::fs::create_dir_all(&dir).unwrap();
            for (name, bytes) in seeds {
                std::fs::write(dir.join(format!("seed-{name}")), bytes).unwrap();
            }
        }
    }
}
