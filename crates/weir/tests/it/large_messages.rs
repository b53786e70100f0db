//! Large messages as RabbitMQ 3.x takes them (up to 128 MiB by default): client
//! suites publish 20-22 MB bodies.

use futures_lite::StreamExt;
use lapin::BasicProperties;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions,
};
use lapin::types::FieldTable;
use weir_testkit::Broker;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_22_mb_message_goes_through_and_survives_a_restart() {
    let mut broker = Broker::start().await.expect("broker");
    let body: Vec<u8> = (0..22_000_000u32).map(|i| (i % 251) as u8).collect();
    {
        let connection = crate::amqp::connect(&broker).await;
        let channel = connection.create_channel().await.expect("channel");
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .expect("confirms");
        crate::amqp::declare(&channel, "big").await;
        let confirm = channel
            .basic_publish(
                "".into(),
                "big".into(),
                BasicPublishOptions::default(),
                &body,
                BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .expect("publish")
            .await
            .expect("confirm");
        assert!(confirm.is_ack(), "{confirm:?}");
        connection.close(200, "bye".into()).await.expect("close");
    }
    broker.kill9().await.expect("kill -9");
    broker.restart().await.expect("restart");
    let connection = crate::amqp::connect(&broker).await;
    let channel = connection.create_channel().await.expect("channel");
    let mut consumer = channel
        .basic_consume(
            "big".into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume");
    let delivery = tokio::time::timeout(std::time::Duration::from_secs(30), consumer.next())
        .await
        .expect("a delivery in time")
        .expect("stream")
        .expect("delivery");
    assert_eq!(delivery.data.len(), body.len());
    assert!(delivery.data == body, "the body comes back byte for byte");
    delivery.ack(BasicAckOptions::default()).await.expect("ack");
}
