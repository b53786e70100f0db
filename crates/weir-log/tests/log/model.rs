//! Property test: random sequences of append / read / trim / reopen against a naive
//! model (a vector of bodies and a start offset). Tiny segments and a dense index make
//! every sequence roll segments and seek through the index.

use bytes::Bytes;
use proptest::prelude::*;
use weir_log::{
    FileLog, FsyncPolicy, LogConfig, LogError, MessageLog, NewRecord, Offset, ReadLimits,
};

use crate::common::block_on;

/// A read's byte limit: arbitrary, or exactly the size of the first n records from
/// the read position (the boundary where off-by-one errors live).
#[derive(Clone, Debug)]
enum ByteLimit {
    Any(usize),
    ExactlyRecords(usize),
}

#[derive(Clone, Debug)]
enum Op {
    /// Append one batch with these body sizes.
    Append(Vec<usize>),
    /// Read from a position picked in (or just past) the log.
    Read {
        pick: u16,
        max_records: usize,
        max_bytes: ByteLimit,
    },
    /// Trim to a position picked in the log.
    Trim(u16),
    /// Close and reopen.
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => proptest::collection::vec(0usize..400, 1..6).prop_map(Op::Append),
        4 => (any::<u16>(), 1usize..40, prop_oneof![
                (1usize..3000).prop_map(ByteLimit::Any),
                (1usize..8).prop_map(ByteLimit::ExactlyRecords),
            ])
            .prop_map(|(pick, max_records, max_bytes)| Op::Read { pick, max_records, max_bytes }),
        1 => any::<u16>().prop_map(Op::Trim),
        1 => Just(Op::Reopen),
    ]
}

fn body(offset: u64, len: usize) -> Bytes {
    let seed = offset.to_le_bytes();
    Bytes::from(
        (0..len)
            .map(|i| seed[i % 8] ^ (i as u8))
            .collect::<Vec<_>>(),
    )
}

struct Model {
    start: u64,
    /// Bodies of offsets `start..`.
    bodies: Vec<Bytes>,
}

impl Model {
    fn next(&self) -> u64 {
        self.start + self.bodies.len() as u64
    }

    fn pick(&self, pick: u16) -> u64 {
        // Anything from the start to one past the end (inclusive).
        self.start + u64::from(pick) % (self.bodies.len() as u64 + 1)
    }

    fn read(&self, from: u64, max_records: usize, max_bytes: usize) -> Vec<(u64, Bytes)> {
        let mut out = Vec::new();
        let mut used = 0;
        for (i, b) in self
            .bodies
            .iter()
            .enumerate()
            .skip((from - self.start) as usize)
        {
            let len = 18 + b.len();
            if out.len() == max_records || (!out.is_empty() && used + len > max_bytes) {
                break;
            }
            used += len;
            out.push((self.start + i as u64, b.clone()));
        }
        out
    }
}

fn config(fsync: FsyncPolicy) -> LogConfig {
    LogConfig {
        fsync,
        segment_bytes: 1024,
        index_interval_bytes: 64,
        max_record_bytes: 1024,
        max_batch_bytes: 8192,
        ..LogConfig::default()
    }
}

fn run(ops: &[Op], fsync: FsyncPolicy) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let config = config(fsync);
    let (mut log, _) = FileLog::open(dir.path(), config.clone()).unwrap();
    let mut model = Model {
        start: 0,
        bodies: Vec::new(),
    };
    block_on(async {
        for op in ops {
            match op {
                Op::Append(sizes) => {
                    let next = model.next();
                    let records: Vec<_> = sizes
                        .iter()
                        .enumerate()
                        .map(|(i, len)| NewRecord::new(body(next + i as u64, *len)))
                        .collect();
                    let appended = log.append_batch(&records).await.unwrap();
                    prop_assert_eq!(appended.first, Offset(next));
                    model.bodies.extend(records.into_iter().map(|r| r.body));
                }
                Op::Read {
                    pick,
                    max_records,
                    max_bytes,
                } => {
                    let from = model.pick(*pick);
                    let max_bytes = match max_bytes {
                        ByteLimit::Any(n) => *n,
                        ByteLimit::ExactlyRecords(n) => model
                            .read(from, *n, usize::MAX)
                            .iter()
                            .map(|(_, b)| 18 + b.len())
                            .sum::<usize>()
                            .max(1),
                    };
                    let got = log
                        .read_from(Offset(from), ReadLimits::new(*max_records, max_bytes))
                        .await
                        .unwrap();
                    let got: Vec<_> = got.into_iter().map(|r| (r.offset.0, r.body)).collect();
                    prop_assert_eq!(got, model.read(from, *max_records, max_bytes));
                    if from > 0 && from == model.start && model.start > 0 {
                        let below = log
                            .read_from(Offset(from - 1), ReadLimits::records(1))
                            .await;
                        let out_of_range = matches!(below, Err(LogError::OffsetOutOfRange { .. }));
                        prop_assert!(out_of_range, "below the start: {:?}", below);
                    }
                }
                Op::Trim(pick) => {
                    let to = model.pick(*pick);
                    log.trim_before(Offset(to)).await.unwrap();
                    if to > model.start {
                        model.bodies.drain(..(to - model.start) as usize);
                        model.start = to;
                    }
                }
                Op::Reopen => {
                    log.close().await.unwrap();
                    let (reopened, report) = FileLog::open(dir.path(), config.clone()).unwrap();
                    prop_assert_eq!(report.truncated_bytes, 0);
                    log = reopened;
                }
            }
            prop_assert_eq!(log.first_offset(), Offset(model.start));
            prop_assert_eq!(log.next_offset(), Offset(model.next()));
        }
        // The whole log, one record at a time and all at once.
        let all = log
            .read_from(Offset(model.start), ReadLimits::records(usize::MAX))
            .await
            .unwrap();
        prop_assert_eq!(all.len(), model.bodies.len());
        for (r, b) in all.iter().zip(&model.bodies) {
            prop_assert_eq!(&r.body, b);
        }
        log.close().await.unwrap();
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn file_log_matches_a_vector_model(ops in proptest::collection::vec(op(), 1..60)) {
        run(&ops, FsyncPolicy::Never)?;
    }

    #[test]
    fn file_log_matches_a_vector_model_with_fsync_always(ops in proptest::collection::vec(op(), 1..30)) {
        run(&ops, FsyncPolicy::Always)?;
    }
}
