//! `weir user|vhost|permissions` against a running broker (issue 20), as
//! `rabbitmqctl` manages RabbitMQ: the commands log in as an administrator
//! (guest/guest by default, `--user`/`--password` or `WEIR_USER`/`WEIR_PASSWORD`
//! otherwise) and what they set is what the broker then enforces.

use serde_json::json;
use weir_testkit::Broker;

use crate::cli::weir;

#[tokio::test]
async fn users_vhosts_and_permissions_are_managed_from_the_cli() {
    let broker = Broker::start().await.expect("broker starts");
    weir(&broker, &["user", "add", "app", "s3cret"], b"")
        .await
        .ok();
    let again = weir(&broker, &["user", "add", "app", "other"], b"").await;
    assert_eq!(again.code, Some(1));
    assert!(again.stderr.contains("already exists"), "{}", again.stderr);
    let users = weir(&broker, &["user", "ls", "--json"], b"")
        .await
        .ok()
        .json();
    assert!(
        users["users"]
            .as_array()
            .unwrap()
            .contains(&json!({"name": "app", "tags": []})),
        "{users}"
    );
    // No permissions yet: the broker refuses app.
    let as_app = ["--user", "app", "--password", "s3cret"];
    let list = weir(&broker, &[&["queue", "list"][..], &as_app].concat(), b"").await;
    assert_eq!(list.code, Some(1));
    assert!(list.stderr.contains("access_refused"), "{}", list.stderr);
    weir(
        &broker,
        &["permissions", "set", "app", "^app\\.", ".*", ".*"],
        b"",
    )
    .await
    .ok();
    let perms = weir(
        &broker,
        &["permissions", "ls", "--vhost", "/", "--json"],
        b"",
    )
    .await
    .ok()
    .json();
    assert!(
        perms["permissions"].as_array().unwrap().contains(
            &json!({"user": "app", "vhost": "/", "configure": "^app\\.", "write": ".*", "read": ".*"})
        ),
        "{perms}"
    );
    weir(
        &broker,
        &[&["queue", "create", "app.jobs"][..], &as_app].concat(),
        b"",
    )
    .await
    .ok();
    let refused = weir(
        &broker,
        &[&["queue", "create", "jobs"][..], &as_app].concat(),
        b"",
    )
    .await;
    assert_eq!(refused.code, Some(1), "configure is ^app\\. only");
    // A non-administrator cannot manage users.
    let manage = weir(&broker, &[&["user", "ls"][..], &as_app].concat(), b"").await;
    assert_eq!(manage.code, Some(1));
    assert!(manage.stderr.contains("administrator"), "{}", manage.stderr);
    // A new password from stdin; the old one stops working.
    weir(
        &broker,
        &["user", "passwd", "app", "--password-stdin"],
        b"n3w\n",
    )
    .await
    .ok();
    let old = weir(&broker, &[&["queue", "list"][..], &as_app].concat(), b"").await;
    assert!(old.stderr.contains("unauthorized"), "{}", old.stderr);
    let new = weir(
        &broker,
        &[
            "queue",
            "list",
            "--user",
            "app",
            "--password",
            "n3w",
            "--json",
        ],
        b"",
    )
    .await
    .ok()
    .json();
    assert_eq!(new["queues"][0]["name"], "app.jobs");
}

#[tokio::test]
async fn tags_vhosts_and_removal_from_the_cli() {
    let broker = Broker::start().await.expect("broker starts");
    weir(&broker, &["user", "add", "app", "n3w"], b"")
        .await
        .ok();
    let refused = weir(
        &broker,
        &[
            "vhost",
            "add",
            "staging",
            "--user",
            "app",
            "--password",
            "n3w",
        ],
        b"",
    )
    .await;
    assert_eq!(refused.code, Some(1), "not an administrator yet");
    weir(&broker, &["user", "tags", "app", "administrator"], b"")
        .await
        .ok();
    weir(
        &broker,
        &[
            "vhost",
            "add",
            "staging",
            "--user",
            "app",
            "--password",
            "n3w",
        ],
        b"",
    )
    .await
    .ok();
    let vhosts = weir(&broker, &["vhost", "ls", "--json"], b"")
        .await
        .ok()
        .json();
    assert_eq!(
        vhosts,
        json!({"vhosts": [{"name": "/"}, {"name": "staging"}]})
    );
    weir(
        &broker,
        &[
            "permissions",
            "set",
            "--vhost",
            "staging",
            "app",
            "",
            "",
            ".*",
        ],
        b"",
    )
    .await
    .ok();
    weir(&broker, &["vhost", "rm", "staging"], b"").await.ok();
    let perms = weir(&broker, &["permissions", "ls", "--json"], b"")
        .await
        .ok()
        .json();
    assert_eq!(
        perms["permissions"].as_array().unwrap().len(),
        1,
        "guest's on / only: staging's went with it: {perms}"
    );
    let gone = weir(&broker, &["vhost", "rm", "staging"], b"").await;
    assert!(gone.stderr.contains("vhost_not_found"), "{}", gone.stderr);
    // Removed: app can no longer log in.
    weir(&broker, &["user", "rm", "app"], b"").await.ok();
    let after = weir(
        &broker,
        &["queue", "list", "--user", "app", "--password", "n3w"],
        b"",
    )
    .await;
    assert!(after.stderr.contains("unauthorized"), "{}", after.stderr);
    // A wrong administrator password is refused for every command.
    let wrong = weir(&broker, &["user", "ls", "--password", "nope"], b"").await;
    assert_eq!(wrong.code, Some(1));
}
