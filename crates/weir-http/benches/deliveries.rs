//! Micro-benchmark of the answer to an HTTP receive: 100 deliveries of 1 KiB
//! serialized as JSON, straight from the broker's values (before, each became a
//! `serde_json::Value` first, a tenth of the broker's CPU under `weir bench http`).
//! Run with `cargo bench -p weir-http --bench deliveries`.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use weir_http::bench_api::{deliveries, receive_answer};

fn receive(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    let got = deliveries(100, 1024);
    let mut group = c.benchmark_group("http");
    group.throughput(Throughput::Elements(100));
    group.bench_function("receive answer, 100 x 1 KiB", |b| {
        b.iter(|| black_box(runtime.block_on(receive_answer(&got))));
    });
    group.finish();
}

criterion_group!(benches, receive);
criterion_main!(benches);
