//! `access.json` in the data directory: users, vhosts and permissions in the shape
//! of RabbitMQ's definitions (`rabbitmqctl export_definitions`), so the same reader
//! takes RabbitMQ's file later and the file reads as what it is. Written whole and
//! durably on every change (temporary file, fsync, rename, directory fsync), so a
//! `kill -9` leaves the old or the new version, never a mix.

use serde::{Deserialize, Serialize};

use super::password::Hashing;

/// The file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Definitions {
    #[serde(default)]
    pub(crate) users: Vec<UserDef>,
    #[serde(default)]
    pub(crate) vhosts: Vec<VhostDef>,
    #[serde(default)]
    pub(crate) permissions: Vec<PermissionDef>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct UserDef {
    pub(crate) name: String,
    pub(crate) password_hash: String,
    pub(crate) hashing_algorithm: Hashing,
    /// A list (RabbitMQ 3.9+); RabbitMQ before wrote one comma-separated string.
    #[serde(default, deserialize_with = "tags")]
    pub(crate) tags: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct VhostDef {
    pub(crate) name: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PermissionDef {
    pub(crate) user: String,
    pub(crate) vhost: String,
    pub(crate) configure: String,
    pub(crate) write: String,
    pub(crate) read: String,
}

/// Tags as a list or as one comma-separated string.
fn tags<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
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
