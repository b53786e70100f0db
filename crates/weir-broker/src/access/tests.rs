//! The access model against its file: defaults, logins, permissions, durability.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha256};

use super::*;

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const REMOTE: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7));

fn open(dir: &Path) -> Access {
    Access::open(dir, vec!["guest".to_owned()]).unwrap()
}

#[test]
fn a_fresh_broker_has_guest_on_the_default_vhost_from_loopback_only() {
    let dir = tempfile::tempdir().unwrap();
    let access = open(dir.path());
    assert!(dir.path().join(FILE).exists(), "the defaults are written");
    let guest = access.authenticate("guest", "guest", LOOPBACK).unwrap();
    assert!(guest.is_administrator());
    // SCRAM credentials come with the password; guest's only from loopback.
    assert!(access.scram_credentials("guest", LOOPBACK).is_some());
    assert!(access.scram_credentials("guest", REMOTE).is_none());
    // IPv4-mapped loopback counts as loopback.
    let mapped = IpAddr::V6(Ipv4Addr::LOCALHOST.to_ipv6_mapped());
    assert!(access.authenticate("guest", "guest", mapped).is_ok());
    assert!(
        access
            .authenticate("guest", "guest", IpAddr::V6(Ipv6Addr::LOCALHOST))
            .is_ok()
    );
    // From elsewhere, the same answer as a wrong password; the rest of 127/8 is
    // elsewhere (a second host in a container or test rig), remembered login or not.
    assert_eq!(
        access.authenticate("guest", "guest", REMOTE),
        Err(LoginRefused)
    );
    let second = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    assert_eq!(
        access.authenticate("guest", "guest", second),
        Err(LoginRefused)
    );
    assert_eq!(
        access.remembered("guest", "guest", second),
        Some(Err(LoginRefused))
    );
    assert_eq!(
        access
            .remembered("guest", "guest", LOOPBACK)
            .map(|p| p.map(|p| p.name)),
        Some(Ok("guest".to_owned())),
        "a login seen before needs no hash"
    );
    assert_eq!(access.remembered("guest", "other", LOOPBACK), None);
    assert_eq!(
        access.remembered("nobody", "x", LOOPBACK),
        None,
        "an unknown user pays a hash too, as a wrong password does"
    );
    assert_eq!(
        access.authenticate("guest", "wrong", LOOPBACK),
        Err(LoginRefused)
    );
    assert_eq!(
        access.authenticate("nobody", "guest", LOOPBACK),
        Err(LoginRefused)
    );
    assert_eq!(access.vhosts(), [DEFAULT_VHOST]);
    access.check_vhost(&guest, "/").unwrap();
    access
        .check(&guest, "/", Operation::Configure, "queue", "anything")
        .unwrap();
}

#[test]
fn users_vhosts_and_permissions_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let access = open(dir.path());
        access
            .add_user("app", "s3cret", &["monitoring".to_owned()])
            .unwrap();
        access.add_vhost("orders").unwrap();
        access
            .set_permissions(
                "app",
                "orders",
                Patterns {
                    configure: "^app\\.".into(),
                    write: ".*".into(),
                    read: String::new(),
                },
            )
            .unwrap();
        access.remove_user("guest").unwrap();
    }
    let access = open(dir.path());
    assert_eq!(
        access.users(),
        [UserInfo {
            name: "app".into(),
            tags: vec!["monitoring".into()]
        }]
    );
    assert_eq!(access.vhosts(), ["/", "orders"]);
    let app = access.authenticate("app", "s3cret", REMOTE).unwrap();
    assert!(!app.is_administrator());
    assert!(access.authenticate("guest", "guest", LOOPBACK).is_err());
    access.check_vhost(&app, "orders").unwrap();
    let refused = access.check_vhost(&app, "/").unwrap_err();
    assert_eq!(
        refused.to_string(),
        "access to vhost '/' in vhost '/' refused for user 'app'"
    );
    access
        .check(&app, "orders", Operation::Configure, "queue", "app.jobs")
        .unwrap();
    let refused = access
        .check(&app, "orders", Operation::Configure, "queue", "jobs")
        .unwrap_err();
    assert_eq!(
        refused.to_string(),
        "access to queue 'jobs' in vhost 'orders' refused for user 'app'"
    );
    // Write on the default exchange is checked as `amq.default`; read is nothing.
    access
        .check(&app, "orders", Operation::Write, "exchange", "")
        .unwrap();
    assert!(
        access
            .check(&app, "orders", Operation::Read, "queue", "app.jobs")
            .is_err()
    );
}

#[test]
fn a_changed_password_ends_the_remembered_login() {
    let dir = tempfile::tempdir().unwrap();
    let access = open(dir.path());
    access.add_user("app", "one", &[]).unwrap();
    assert!(access.authenticate("app", "one", REMOTE).is_ok());
    // The second login takes the remembered path; still right.
    assert!(access.authenticate("app", "one", REMOTE).is_ok());
    assert!(access.authenticate("app", "two", REMOTE).is_err());
    access.set_password("app", "two").unwrap();
    assert!(access.authenticate("app", "one", REMOTE).is_err());
    assert!(access.authenticate("app", "two", REMOTE).is_ok());
    access.remove_user("app").unwrap();
    assert!(access.authenticate("app", "two", REMOTE).is_err());
}

/// A user imported with RabbitMQ's hash logs in with its password, and the hash is
/// then argon2id on disk.
#[test]
fn a_rabbitmq_hash_is_replaced_by_argon2id_at_the_first_login() {
    let dir = tempfile::tempdir().unwrap();
    let salt = [1u8, 2, 3, 4];
    let mut bytes = salt.to_vec();
    bytes.extend_from_slice(
        &Sha256::new()
            .chain_update(salt)
            .chain_update("pw")
            .finalize(),
    );
    let defs = serde_json::json!({
        "users": [{"name": "old", "password_hash": STANDARD.encode(&bytes),
                   "hashing_algorithm": "rabbit_password_hashing_sha256",
                   "tags": "management"}],
        "vhosts": [{"name": "/"}],
        "permissions": [{"user": "old", "vhost": "/", "configure": "", "write": "", "read": ".*"}]
    });
    std::fs::write(dir.path().join(FILE), defs.to_string()).unwrap();
    let access = open(dir.path());
    assert!(access.authenticate("old", "nope", REMOTE).is_err());
    assert!(
        access.scram_credentials("old", REMOTE).is_none(),
        "no SCRAM before a login"
    );
    let old = access.authenticate("old", "pw", REMOTE).unwrap();
    assert_eq!(old.tags, ["management"]);
    let on_disk: Definitions =
        serde_json::from_slice(&std::fs::read(dir.path().join(FILE)).unwrap()).unwrap();
    assert_eq!(on_disk.users[0].hashing_algorithm, Hashing::Argon2id);
    // The first login with the password made SCRAM credentials too, durably.
    assert!(on_disk.users[0].scram_sha_256.is_some());
    assert!(access.scram_credentials("old", REMOTE).is_some());
    drop(access);
    let access = open(dir.path());
    assert!(access.authenticate("old", "pw", REMOTE).is_ok());
}

#[test]
fn bad_changes_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let access = open(dir.path());
    let before = std::fs::read(dir.path().join(FILE)).unwrap();
    assert!(matches!(
        access.add_user("guest", "x", &[]),
        Err(AccessError::UserExists(_))
    ));
    assert!(matches!(
        access.add_user("", "x", &[]),
        Err(AccessError::InvalidName(_))
    ));
    assert!(matches!(
        access.add_user("a\nb", "x", &[]),
        Err(AccessError::InvalidName(_))
    ));
    assert!(matches!(
        access.add_vhost("/"),
        Err(AccessError::VhostExists(_))
    ));
    assert!(matches!(
        access.set_permissions("guest", "nope", Patterns::all()),
        Err(AccessError::NoSuchVhost(_))
    ));
    assert!(matches!(
        access.set_permissions("nobody", "/", Patterns::all()),
        Err(AccessError::NoSuchUser(_))
    ));
    let bad = Patterns {
        configure: "[".into(),
        ..Patterns::all()
    };
    assert!(matches!(
        access.set_permissions("guest", "/", bad),
        Err(AccessError::InvalidPattern {
            operation: Operation::Configure,
            ..
        })
    ));
    assert_eq!(std::fs::read(dir.path().join(FILE)).unwrap(), before);
}

#[test]
fn removing_a_vhost_removes_its_permissions() {
    let dir = tempfile::tempdir().unwrap();
    let access = open(dir.path());
    access.add_vhost("tmp").unwrap();
    access
        .set_permissions("guest", "tmp", Patterns::all())
        .unwrap();
    assert_eq!(access.permissions().len(), 2);
    access.remove_vhost("tmp").unwrap();
    assert!(!access.has_vhost("tmp"));
    assert_eq!(access.permissions().len(), 1);
    let guest = access.authenticate("guest", "guest", LOOPBACK).unwrap();
    assert!(access.check_vhost(&guest, "tmp").is_err());
    assert!(matches!(
        access.remove_vhost("tmp"),
        Err(AccessError::NoSuchVhost(_))
    ));
}

/// A damaged file stops the start instead of falling back to `guest`.
#[test]
fn a_file_that_does_not_hold_together_is_an_error() {
    for text in [
        "{not json",
        r#"{"users":[{"name":"a","password_hash":"short","hashing_algorithm":"rabbit_password_hashing_sha256","tags":[]}]}"#,
        r#"{"vhosts":[{"name":"/"}],"permissions":[{"user":"ghost","vhost":"/","configure":"","write":"","read":""}]}"#,
    ] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE), text).unwrap();
        let err = Access::open(dir.path(), vec![]).unwrap_err();
        assert!(matches!(err, AccessError::BadFile { .. }), "{text}: {err}");
    }
}

/// The golden `access.json` (tests/fixtures/access-v1): an argon2id user and one in
/// RabbitMQ's SHA-256 format with its tags as one string, as RabbitMQ 3.8 exported
/// them. Every build reads it the same way.
#[test]
fn this_build_reads_the_v1_access_fixture() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/access-v1");
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(fixture.join(FILE), dir.path().join(FILE)).unwrap();
    let access = open(dir.path());
    assert_eq!(access.vhosts(), ["/", "orders"]);
    let admin = access.authenticate("admin", "fixture-pw", REMOTE).unwrap();
    assert!(admin.is_administrator());
    assert!(access.authenticate("admin", "wrong", REMOTE).is_err());
    let migrated = access
        .authenticate("migrated", "rabbit-pw", REMOTE)
        .unwrap();
    assert_eq!(migrated.tags, ["management", "monitoring"]);
    access.check_vhost(&migrated, "orders").unwrap();
    assert!(access.check_vhost(&migrated, "/").is_err());
    access
        .check(
            &migrated,
            "orders",
            Operation::Configure,
            "queue",
            "orders.eu",
        )
        .unwrap();
    assert!(
        access
            .check(
                &migrated,
                "orders",
                Operation::Write,
                "exchange",
                "orders.eu"
            )
            .is_err(),
        "the empty write pattern allows nothing"
    );
}
