//! Micro-benchmarks of one append's round trip through the log's threads: the
//! caller's mailbox hand-off to the writer, the write and the answer, without the
//! disk's sync time (what decision 0005 took off the delivery path). Run with
//! `cargo bench -p weir-log --bench handoff`.
//!
//! - `append, fsync never`: the hand-off and write of a plain append.
//! - `unsynced append, fsync always`: an AMQP ack's record (answered once written).
//! - `staged append until written, fsync always`: a message until it can be
//!   delivered (its sync runs meanwhile on the sync thread).

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use weir_log::{FileLog, FsyncPolicy, LogConfig, MessageLog, NewRecord};

fn open(fsync: FsyncPolicy) -> (tempfile::TempDir, FileLog) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let config = LogConfig {
        fsync,
        ..LogConfig::default()
    };
    let (log, _) = FileLog::open(dir.path(), config).expect("the log opens");
    (dir, log)
}

fn handoff(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    let record = [NewRecord::new(vec![7u8; 1024])];
    let mut group = c.benchmark_group("1 KiB append round trip");

    let (_dir, log) = open(FsyncPolicy::Never);
    group.bench_function("append, fsync never", |b| {
        b.iter(|| runtime.block_on(log.append_batch(black_box(&record))));
    });
    runtime.block_on(log.close()).expect("closes");

    let (_dir, log) = open(FsyncPolicy::Always);
    group.bench_function("unsynced append, fsync always", |b| {
        b.iter(|| runtime.block_on(log.append_batch_unsynced(black_box(&record))));
    });
    group.bench_function("staged append until written, fsync always", |b| {
        b.iter(|| {
            let (written, _durable) = log.submit_batch_staged(black_box(&record));
            runtime.block_on(written)
        });
    });
    runtime.block_on(log.close()).expect("closes");
    group.finish();
}

criterion_group!(benches, handoff);
criterion_main!(benches);
