//! Micro-benchmarks of a queue's in-memory hot paths, the ones the performance work
//! changed. Run with `cargo bench -p weir-broker --bench queue`.
//!
//! - `cycle`: a message's life in the delivery state, per message: into the ready
//!   queue, leased, acked by receipt, settled.
//! - `give back into a backlog`: leased messages returned to their place in a
//!   backlog of 1 M (the ready queue's chunked insert).
//! - `fresh 1 KiB`: a freshly written message copied into the cache and taken out
//!   for delivery (what saves the read from the log).

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use weir_broker::bench_api::{FreshFixture, QueueFixture};

fn queue(c: &mut Criterion) {
    let mut group = c.benchmark_group("queue state");
    group.throughput(Throughput::Elements(100));
    let mut fixture = QueueFixture::new();
    group.bench_function("cycle, 100 messages", |b| {
        b.iter(|| black_box(fixture.cycle(100)));
    });
    let mut backlog = QueueFixture::with_backlog(1_000_000);
    group.bench_function("give back into a backlog of 1 M, 100 messages", |b| {
        b.iter(|| black_box(backlog.lease_and_give_back(100)));
    });
    group.finish();

    let mut group = c.benchmark_group("fresh");
    group.throughput(Throughput::Elements(100));
    let mut fresh = FreshFixture::new(1024);
    group.bench_function("1 KiB, 100 messages", |b| {
        b.iter(|| black_box(fresh.insert_and_take(100)));
    });
    group.finish();
}

criterion_group!(benches, queue);
criterion_main!(benches);
