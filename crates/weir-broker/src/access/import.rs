//! The access part of a definitions export and import (`GET|POST /api/definitions`,
//! `weir definitions export|import`): users with their hashes, vhosts and
//! permissions, in RabbitMQ's shape, so RabbitMQ's own export imports here.

use super::definitions::Definitions;
use super::{Access, AccessError, State, lock, read};

impl Access {
    /// Users (with their password hashes, never passwords), vhosts and permissions.
    pub fn export(&self) -> Definitions {
        read(&self.state).to_definitions()
    }

    /// Merges `defs` in, all or nothing: vhosts are added, users are added or
    /// replaced (hash and tags), permissions are set; what `defs` does not name is
    /// kept. Replaced users' earlier logins are forgotten.
    ///
    /// # Errors
    /// A name, hash or pattern out of shape, a permission naming a user or vhost
    /// that neither exists nor is imported, or the write; nothing changes then.
    pub fn import(&self, defs: &Definitions) -> Result<(), AccessError> {
        self.change(|state| {
            let mut merged = state.to_definitions();
            for user in &defs.users {
                merged.users.retain(|u| u.name != user.name);
                merged.users.push(user.clone());
            }
            for vhost in &defs.vhosts {
                if !merged.vhosts.contains(vhost) {
                    merged.vhosts.push(vhost.clone());
                }
            }
            for p in &defs.permissions {
                merged
                    .permissions
                    .retain(|q| (&q.user, &q.vhost) != (&p.user, &p.vhost));
                merged.permissions.push(p.clone());
            }
            *state = State::from_definitions(merged)?;
            Ok(())
        })?;
        let mut verified = lock(&self.verified);
        for user in &defs.users {
            verified.remove(&user.name);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;
    use crate::access::definitions::{PermissionDef, UserDef, VhostDef};
    use crate::access::password::Hashing;

    const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    #[test]
    fn an_export_imports_elsewhere_and_a_bad_import_changes_nothing() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let from = Access::open(a.path(), vec![]).unwrap();
        from.add_user("app", "s3cret", &["monitoring".into()])
            .unwrap();
        from.add_vhost("staging").unwrap();
        from.set_permissions(
            "app",
            "staging",
            super::super::Patterns {
                configure: String::new(),
                write: "^x$".into(),
                read: ".*".into(),
            },
        )
        .unwrap();
        let exported = from.export();
        let to = Access::open(b.path(), vec![]).unwrap();
        to.import(&exported).unwrap();
        assert_eq!(to.export(), exported);
        // The hash moved, so the password works there.
        let app = to.authenticate("app", "s3cret", LOOPBACK).unwrap();
        assert_eq!(app.tags, ["monitoring"]);

        // A permission for a user nobody has: refused, nothing applied.
        let bad = Definitions {
            users: vec![UserDef {
                name: "new".into(),
                password_hash: exported.users[0].password_hash.clone(),
                hashing_algorithm: Hashing::Argon2id,
                scram_sha_256: None,
                tags: vec![],
            }],
            vhosts: vec![VhostDef {
                name: "other".into(),
            }],
            permissions: vec![PermissionDef {
                user: "ghost".into(),
                vhost: "other".into(),
                configure: ".*".into(),
                write: ".*".into(),
                read: ".*".into(),
            }],
        };
        assert!(matches!(to.import(&bad), Err(AccessError::NoSuchUser(_))));
        assert_eq!(to.export(), exported, "all or nothing");
        assert!(!to.has_vhost("other"));
    }
}
