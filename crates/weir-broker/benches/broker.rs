//! Micro-benchmark of the broker's work path in one process: 100 messages of 1 KiB
//! sent to a queue (staged appends, the fresh cache, the send-order chain), received
//! (leased and read back from the cache) and acked unsynced (as AMQP acks are), with
//! `fsync = never` so the figure is CPU and hand-offs, not the disk. Run with
//! `cargo bench -p weir-broker --bench broker`.

use std::hint::black_box;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use weir_broker::FsyncPolicy;
use weir_broker::api::{QueueOptions, ReceiveRequest, SendMessage};
use weir_broker::{Broker, BrokerConfig};

fn broker(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut config = BrokerConfig::new(dir.path());
    config.log.fsync = FsyncPolicy::Never;
    let (broker, _) = runtime
        .block_on(Broker::open(config))
        .expect("the broker opens");
    runtime
        .block_on(broker.declare("bench", QueueOptions::default()))
        .expect("the queue is declared");
    let batch: Vec<SendMessage> = (0..100)
        .map(|_| SendMessage {
            body: Bytes::from(vec![7u8; 1024]),
            ..SendMessage::default()
        })
        .collect();

    let mut group = c.benchmark_group("broker");
    group.throughput(Throughput::Elements(100));
    group.bench_function("send, receive, ack 100 x 1 KiB", |b| {
        b.iter(|| {
            runtime.block_on(async {
                broker.send("bench", batch.clone()).await.expect("sent");
                let mut receipts = Vec::with_capacity(100);
                while receipts.len() < 100 {
                    let got = broker
                        .receive(
                            "bench",
                            ReceiveRequest {
                                max: 100,
                                wait_ms: 1_000,
                                visibility_timeout_ms: None,
                            },
                        )
                        .await
                        .expect("received");
                    receipts.extend(got.into_iter().filter_map(|d| d.receipt));
                }
                black_box(broker.ack_unsynced("bench", receipts).await.expect("acked"))
            })
        });
    });
    group.finish();
    runtime.block_on(broker.shutdown());
}

criterion_group!(benches, broker);
criterion_main!(benches);
