//! Logins and permissions over AMQP against the broker's users (issue 20): passwords
//! are checked against `access.json` in the data directory, a refusal is 403
//! `ACCESS_REFUSED`, users survive `kill -9`, and an unknown vhost is
//! refused with 530 `NOT_ALLOWED`, as RabbitMQ does.

use lapin::options::{
    BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions,
    QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use serde_json::json;
use weir_testkit::Broker;

fn url(broker: &Broker, user: &str, password: &str, vhost: &str) -> String {
    format!("amqp://{user}:{password}@{}/{vhost}", broker.amqp_addr())
}

async fn connect(url: &str) -> Result<Connection, lapin::Error> {
    Connection::connect(url, ConnectionProperties::default()).await
}

#[tokio::test]
async fn a_wrong_password_is_refused_after_a_delay_and_the_right_one_logs_in() {
    let broker = Broker::start().await.expect("broker starts");
    // (The refusal also waits `[amqp] failed_login_delay_ms` first; not timed here.)
    let err = connect(&url(&broker, "guest", "wrong", "%2f"))
        .await
        .expect_err("a wrong password is refused");
    assert!(err.to_string().contains("ACCESS_REFUSED"), "{err}");
    let err = connect(&url(&broker, "nobody", "guest", "%2f"))
        .await
        .expect_err("an unknown user is refused the same way");
    assert!(err.to_string().contains("ACCESS_REFUSED"), "{err}");
    let conn = connect(&url(&broker, "guest", "guest", "%2f"))
        .await
        .expect("guest/guest logs in from loopback");
    conn.create_channel().await.expect("a channel opens");
    let err = connect(&url(&broker, "guest", "guest", "elsewhere"))
        .await
        .expect_err("an unknown vhost is refused");
    assert!(err.to_string().contains("NOT_ALLOWED"), "{err}");
    // The broker is unaffected by the refused ones.
    let _ = conn.close(200, "bye".into()).await;
}

/// Users of the deprecated `[amqp] users` key are created once, with argon2id
/// hashes on disk (never the password), and stay after `kill -9` even when the key
/// is gone from the configuration.
#[tokio::test]
async fn users_are_durable_and_stored_hashed() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("weir.toml");
    std::fs::write(&config, "[amqp]\nusers = [\"app:s3cret\"]\n").unwrap();
    let mut broker = Broker::start_with(&["--config", config.to_str().unwrap()])
        .await
        .expect("broker starts");
    let conn = connect(&url(&broker, "app", "s3cret", "%2f"))
        .await
        .expect("the configured user logs in");
    let _ = conn.close(200, "bye".into()).await;
    let stored = std::fs::read_to_string(broker.data_dir().join("access.json")).unwrap();
    assert!(
        stored.contains("\"app\"") && stored.contains("$argon2id$"),
        "{stored}"
    );
    assert!(!stored.contains("s3cret"), "no password on disk: {stored}");

    std::fs::write(&config, "").unwrap();
    broker.kill9().await.expect("kill -9");
    broker.restart().await.expect("restart");
    let conn = connect(&url(&broker, "app", "s3cret", "%2f"))
        .await
        .expect("the user is still there after kill -9");
    let _ = conn.close(200, "bye".into()).await;
    let err = connect(&url(&broker, "app", "wrong", "%2f"))
        .await
        .expect_err("and its password is still checked");
    assert!(err.to_string().contains("ACCESS_REFUSED"), "{err}");
}

/// A broker with guest's queue `theirs` and a user `limited`/`pw` whose
/// permissions on `/` cover names starting with `mine.` (and `amq.default` for
/// write), set in `access.json` while the broker was stopped.
async fn broker_with_a_limited_user(config: &std::path::Path) -> Broker {
    std::fs::write(config, "[amqp]\nusers = [\"limited:pw\"]\n").unwrap();
    let mut broker = Broker::start_with(&["--config", config.to_str().unwrap()])
        .await
        .expect("broker starts");
    let guest = connect(&url(&broker, "guest", "guest", "%2f"))
        .await
        .unwrap();
    let ch = guest.create_channel().await.unwrap();
    ch.queue_declare(
        "theirs".into(),
        QueueDeclareOptions::durable(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let _ = guest.close(200, "bye".into()).await;
    broker.terminate().await.unwrap();
    let path = broker.data_dir().join("access.json");
    let mut defs: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    for p in defs["permissions"].as_array_mut().unwrap() {
        if p["user"] == "limited" {
            p["configure"] = json!("^mine\\.");
            p["write"] = json!("^mine\\.|^amq\\.default$");
            p["read"] = json!("^mine\\.");
        }
    }
    std::fs::write(&path, defs.to_string()).unwrap();
    broker.restart().await.unwrap();
    broker
}

/// A user limited to names starting with `mine.`: each kind of permission is
/// allowed on its own names and refused elsewhere with 403 `ACCESS_REFUSED`, which
/// closes only the channel.
#[tokio::test]
async fn each_permission_is_allowed_on_its_names_and_refused_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker_with_a_limited_user(&dir.path().join("weir.toml")).await;
    let conn = connect(&url(&broker, "limited", "pw", "%2f"))
        .await
        .unwrap();
    let refused = |e: lapin::Error| {
        let text = e.to_string();
        assert!(text.contains("ACCESS_REFUSED"), "{text}");
        text
    };
    // configure: declare and delete.
    let ch = conn.create_channel().await.unwrap();
    ch.queue_declare(
        "mine.q".into(),
        QueueDeclareOptions::durable(),
        FieldTable::default(),
    )
    .await
    .expect("configure on mine.*");
    let text = refused(
        ch.queue_declare(
            "other".into(),
            QueueDeclareOptions::durable(),
            FieldTable::default(),
        )
        .await
        .expect_err("no configure on other"),
    );
    assert!(
        text.contains("queue 'other' in vhost '/' refused for user 'limited'"),
        "{text}"
    );
    // write: publish through the default exchange (as amq.default) is allowed,
    // through amq.direct refused.
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    ch.basic_publish(
        "".into(),
        "mine.q".into(),
        BasicPublishOptions::default(),
        b"hi",
        BasicProperties::default(),
    )
    .await
    .unwrap()
    .await
    .expect("write on amq.default");
    let outcome = match ch
        .basic_publish(
            "amq.direct".into(),
            "x".into(),
            BasicPublishOptions::default(),
            b"no",
            BasicProperties::default(),
        )
        .await
    {
        Err(e) => Err(e),
        Ok(confirm) => confirm.await.map(|_| ()),
    };
    refused(outcome.expect_err("no write on amq.direct"));
    // read: get from its own queue, not from guest's; bind needs read on the exchange.
    let ch = conn.create_channel().await.unwrap();
    let got = ch
        .basic_get("mine.q".into(), BasicGetOptions { no_ack: true })
        .await
        .expect("read on mine.*")
        .expect("the message is there");
    assert_eq!(got.delivery.data, b"hi");
    refused(
        ch.basic_get("theirs".into(), BasicGetOptions { no_ack: true })
            .await
            .expect_err("no read on theirs"),
    );
    let ch = conn.create_channel().await.unwrap();
    refused(
        ch.queue_bind(
            "mine.q".into(),
            "amq.fanout".into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect_err("no read on amq.fanout"),
    );
    // The connection survived every refusal.
    let ch = conn.create_channel().await.unwrap();
    ch.queue_delete("mine.q".into(), QueueDeleteOptions::default())
        .await
        .expect("configure on mine.q");
    let _ = conn.close(200, "bye".into()).await;
}

/// As RabbitMQ: declaring a queue with a dead-letter exchange, or an exchange with
/// an alternate exchange, also needs write on that exchange.
#[tokio::test]
async fn a_dead_letter_or_alternate_exchange_needs_write_on_it() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker_with_a_limited_user(&dir.path().join("weir.toml")).await;
    let conn = connect(&url(&broker, "limited", "pw", "%2f"))
        .await
        .unwrap();
    let with = |key: &str, exchange: &str| {
        let mut args = FieldTable::default();
        args.insert(key.into(), AMQPValue::LongString(exchange.into()));
        args
    };
    let ch = conn.create_channel().await.unwrap();
    ch.queue_declare(
        "mine.dl".into(),
        QueueDeclareOptions::durable(),
        with("x-dead-letter-exchange", "mine.dlx"),
    )
    .await
    .expect("write on mine.dlx");
    let err = ch
        .queue_declare(
            "mine.dl2".into(),
            QueueDeclareOptions::durable(),
            with("x-dead-letter-exchange", "amq.direct"),
        )
        .await
        .expect_err("no write on amq.direct");
    assert!(
        err.to_string().contains("ACCESS_REFUSED") && err.to_string().contains("'amq.direct'"),
        "{err}"
    );
    let ch = conn.create_channel().await.unwrap();
    let err = ch
        .exchange_declare(
            "mine.ex".into(),
            lapin::ExchangeKind::Fanout,
            ExchangeDeclareOptions::default(),
            with("alternate-exchange", "amq.direct"),
        )
        .await
        .expect_err("no write on the alternate amq.direct");
    assert!(err.to_string().contains("ACCESS_REFUSED"), "{err}");
    let _ = conn.close(200, "bye".into()).await;
}
