//! Logins over AMQP against the broker's users (issue 20, first step): passwords
//! are checked against `access.json` in the data directory, a refusal is 403
//! `ACCESS_REFUSED`, users survive `kill -9`, and an unknown vhost is
//! refused with 530 `NOT_ALLOWED`, as RabbitMQ does.

use lapin::{Connection, ConnectionProperties};
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
