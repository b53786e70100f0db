//! `access.json` in the data directory: users, vhosts and permissions in the shape
//! of RabbitMQ's definitions (`rabbitmqctl export_definitions`), so the same reader
//! takes RabbitMQ's file later and the file reads as what it is. Written whole and
//! durably on every change (temporary file, fsync, rename, directory fsync), so a
//! `kill -9` leaves the old or the new version, never a mix.

use serde::{Deserialize, Serialize};

use super::password::Hashing;

/// The file (and the access part of a definitions export or import).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Definitions {
    /// Users with their password hashes.
    #[serde(default)]
    pub users: Vec<UserDef>,
    /// Vhosts.
    #[serde(default)]
    pub vhosts: Vec<VhostDef>,
    /// Each user's patterns per vhost.
    #[serde(default)]
    pub permissions: Vec<PermissionDef>,
}

/// A user, with its hash (never a password).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserDef {
    /// The name.
    pub name: String,
    /// The hash, in the format `hashing_algorithm` names.
    pub password_hash: String,
    /// `argon2id` or RabbitMQ's `rabbit_password_hashing_sha256`.
    pub hashing_algorithm: Hashing,
    /// weir's: SCRAM-SHA-256 credentials (RFC 5803's form), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scram_sha_256: Option<String>,
    /// A list (RabbitMQ 3.9+); RabbitMQ before wrote one comma-separated string.
    #[serde(default, deserialize_with = "tags")]
    pub tags: Vec<String>,
}

/// A vhost.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VhostDef {
    /// The name.
    pub name: String,
}

/// One user's permissions in one vhost.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PermissionDef {
    /// The user.
    pub user: String,
    /// The vhost.
    pub vhost: String,
    /// What it may declare and delete.
    pub configure: String,
    /// What it may write to.
    pub write: String,
    /// What it may read from.
    pub read: String,
}

/// Tags as a list or as one comma-separated string (also what `PUT
/// /api/users/{name}` takes).
///
/// # Errors
/// Anything but a list of strings or a string.
pub fn tags<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Tags {
        List(Vec<String>),
        Text(String),
    }
    Ok(match Tags::deserialize(d)? {
        Tags::List(list) => list,
        Tags::Text(text) => text
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A user as RabbitMQ 3.8 exported it (tags as a string) and as 3.10 does.
    #[test]
    fn rabbitmq_user_shapes_read() {
        let old: UserDef = serde_json::from_str(
            r#"{"name":"ops","password_hash":"kI3GCqW5JLMJa4iX1lo7X4D6XbYqlLgxIs30+P6tENUV2POR",
                "hashing_algorithm":"rabbit_password_hashing_sha256","tags":"administrator, monitoring"}"#,
        )
        .unwrap();
        assert_eq!(old.tags, ["administrator", "monitoring"]);
        assert_eq!(old.hashing_algorithm, Hashing::RabbitSha256);
        let new: UserDef = serde_json::from_str(
            r#"{"name":"app","password_hash":"x","hashing_algorithm":"argon2id","tags":[]}"#,
        )
        .unwrap();
        assert!(new.tags.is_empty());
        assert!(
            serde_json::from_str::<UserDef>(
                r#"{"name":"a","password_hash":"x","hashing_algorithm":"md5","tags":[]}"#
            )
            .is_err(),
            "an unknown hashing is refused, not guessed"
        );
    }
}
