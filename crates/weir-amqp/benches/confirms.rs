//! Micro-benchmark of the AMQP publish pipeline in one process: a lapin client on
//! loopback publishes 100 persistent 1 KiB messages with publisher confirms to a
//! queue that a no-ack consumer on the same connection drains, and waits for all
//! 100 confirms and deliveries. It covers the path the performance work changed:
//! frame reading with the adaptive buffer, the channel worker handing batches to
//! the queue, the confirmer task answering in order, and delivery. `fsync = never`,
//! so the figure is CPU and hand-offs, not the disk. Run with
//! `cargo bench -p weir-amqp --bench confirms`.
//!
//! The client is lapin, as applications use it, not one written for the bench: its
//! cost (framing, the confirm bookkeeping, the consumer stream, and the hand-offs
//! between its tasks on the same two runtime workers as the broker) is inside the
//! figure, so compare it only with runs of this same bench.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures_lite::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use weir_amqp::AmqpConfig;
use weir_broker::{Broker, BrokerConfig, FsyncPolicy};

const BATCH: u64 = 100;

fn confirms(c: &mut Criterion) {
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
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("a loopback port");
    let addr = listener.local_addr().expect("its address");
    let shutdown = AmqpConfig::default().shutdown;
    let amqp = AmqpConfig {
        shutdown: shutdown.clone(),
        ..AmqpConfig::default()
    };
    let server = runtime.spawn(weir_amqp::serve(listener, broker.clone(), amqp));

    let (connection, publisher, mut consumer) = runtime.block_on(async {
        let connection = Connection::connect(
            &format!("amqp://guest:guest@{addr}/%2f"),
            ConnectionProperties::default(),
        )
        .await
        .expect("connect");
        let publisher = connection.create_channel().await.expect("channel 1");
        publisher
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .expect("confirm.select");
        publisher
            .queue_declare(
                "bench".into(),
                QueueDeclareOptions::durable(),
                FieldTable::default(),
            )
            .await
            .expect("queue.declare");
        let consumer = connection
            .create_channel()
            .await
            .expect("channel 2")
            .basic_consume(
                "bench".into(),
                "bench".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..BasicConsumeOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("basic.consume");
        (connection, publisher, consumer)
    });
    let body = vec![7u8; 1024];
    let persistent = BasicProperties::default().with_delivery_mode(2);

    let mut group = c.benchmark_group("amqp");
    group.throughput(Throughput::Elements(BATCH));
    group.bench_function("publish with confirms and deliver, 100 x 1 KiB", |b| {
        b.iter(|| {
            runtime.block_on(async {
                // Publish the whole batch before awaiting a confirm, so the frames
                // pipeline as a confirming producer's do.
                let mut pending = Vec::new();
                for _ in 0..BATCH {
                    let confirm = publisher
                        .basic_publish(
                            "".into(),
                            "bench".into(),
                            BasicPublishOptions::default(),
                            &body,
                            persistent.clone(),
                        )
                        .await
                        .expect("basic.publish");
                    pending.push(confirm);
                }
                for confirm in pending {
                    let confirmation = confirm.await.expect("a confirm");
                    assert!(confirmation.is_ack(), "the broker nacked a publish");
                }
                for _ in 0..BATCH {
                    consumer
                        .next()
                        .await
                        .expect("the consumer is open")
                        .expect("a delivery");
                }
            });
        });
    });
    group.finish();
    runtime
        .block_on(connection.close(200, "done".into()))
        .expect("connection.close");
    shutdown.cancel();
    let _ = runtime.block_on(server);
    runtime.block_on(broker.shutdown());
}

criterion_group!(benches, confirms);
criterion_main!(benches);
