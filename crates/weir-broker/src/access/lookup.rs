//! Looking a user up without a password, for a front end that keeps its own
//! logins (the dashboard's sessions): who the user is now, and a fingerprint of
//! its password that changes when the password does, so such a login ends with a
//! password change or the user's deletion.

use sha2::{Digest, Sha256};

use super::{Access, Principal, read};

impl Access {
    /// User `name` with its tags now, if it exists.
    pub fn principal(&self, name: &str) -> Option<Principal> {
        read(&self.state).users.get(name).map(|u| Principal {
            name: name.to_owned(),
            tags: u.tags.clone(),
        })
    }

    /// User `name` as a connection from `peer` that presents no password may act
    /// (a Kafka connection before SASL), if it exists and, for a loopback-only user
    /// (`guest`), `peer` is a loopback address.
    pub fn principal_from(&self, name: &str, peer: std::net::IpAddr) -> Option<Principal> {
        if self.loopback_users.iter().any(|u| u == name) && !super::is_loopback(peer) {
            return None;
        }
        self.principal(name)
    }

    /// User `name`'s SCRAM-SHA-256 credentials, for a login from `peer`: `None` for
    /// an unknown user, one without credentials yet (made before them and not
    /// logged in since), or a loopback-only user from elsewhere.
    pub fn scram_credentials(
        &self,
        name: &str,
        peer: std::net::IpAddr,
    ) -> Option<super::scram::ScramCredentials> {
        if self.loopback_users.iter().any(|u| u == name) && !super::is_loopback(peer) {
            return None;
        }
        let state = read(&self.state);
        let stored = state.users.get(name)?.password.scram.as_deref()?;
        super::scram::ScramCredentials::from_stored(stored)
    }

    /// A fingerprint of user `name`'s stored password (not of the password: of its
    /// salted hash), if the user exists; it changes whenever the password is set.
    pub fn login_stamp(&self, name: &str) -> Option<u64> {
        let state = read(&self.state);
        let stored = &state.users.get(name)?.password;
        let digest = Sha256::digest(stored.hash.as_bytes());
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        Some(u64::from_le_bytes(first))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stamp_changes_with_the_password_and_goes_with_the_user() {
        let dir = tempfile::tempdir().unwrap();
        let access = Access::open(dir.path(), Vec::new()).unwrap();
        access
            .add_user("ann", "one", &["monitoring".to_owned()])
            .unwrap();
        let before = access.login_stamp("ann").expect("ann exists");
        assert_eq!(access.principal("ann").unwrap().tags, vec!["monitoring"]);
        access.set_password("ann", "two").unwrap();
        assert_ne!(access.login_stamp("ann"), Some(before));
        access.remove_user("ann").unwrap();
        assert_eq!(access.login_stamp("ann"), None);
        assert!(access.principal("ann").is_none());
    }
}
