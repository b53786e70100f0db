//! Micro-benchmarks of the hot paths: batch encoding with its CRC (per append),
//! checking and decoding (per read), and index lookups (per seek). Run with
//! `cargo bench -p weir-log --bench codec`.

// Benchmark code: numeric casts between counters and sizes are intended, and scenario
// functions read better whole than split to satisfy a line count.
#![allow(
    clippy::cast_possible_wrap,
    clippy::cast_precision_loss,
    clippy::cast_sign_loss,
    clippy::too_many_lines,
    clippy::needless_pass_by_value
)]

use std::hint::black_box;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use weir_log::NewRecord;
use weir_log::bench_api::{IndexFixture, decode_batch, encode_batch};

fn batches(c: &mut Criterion) {
    for (count, size) in [(1000usize, 100usize), (64, 1024), (1, 1024)] {
        let records: Vec<_> = (0..count)
            .map(|i| NewRecord::new(vec![i as u8; size]))
            .collect();
        let encoded = Bytes::from(encode_batch(&records, 1));
        let mut group = c.benchmark_group(format!("batch {count}x{size}B"));
        group.throughput(Throughput::Bytes(encoded.len() as u64));
        group.bench_function("encode+crc", |b| {
            b.iter(|| encode_batch(black_box(&records), 1));
        });
        group.bench_function("check+decode", |b| {
            b.iter(|| decode_batch(black_box(&encoded)));
        });
        group.finish();
    }
}

fn index(c: &mut Criterion) {
    let fixture = IndexFixture::new(16_384);
    let mut rel = 0u64;
    c.bench_function("index floor_offset (16k entries)", |b| {
        b.iter(|| {
            rel = (rel + 7919) % 65_536;
            fixture.floor_offset(black_box(rel))
        });
    });
}

criterion_group!(benches, batches, index);
criterion_main!(benches);
