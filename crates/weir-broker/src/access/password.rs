//! Passwords at rest (decision 0008): argon2id for every password set in weir, and
//! RabbitMQ's salted SHA-256 accepted as it comes in RabbitMQ definitions, so users
//! move over with their passwords; such a hash is replaced by an argon2id one at the
//! user's next successful login. Both are checked in constant time.
//!
//! Formats, as stored in `access.json` (RabbitMQ's definitions fields):
//! - `argon2id`: a PHC string, `$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>` (the
//!   argon2 crate's defaults, OWASP's minimum).
//! - `rabbit_password_hashing_sha256`: base64 of a 4-byte salt followed by
//!   SHA-256(salt ‖ password), RabbitMQ's default since 3.6.

use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// How a stored password hash was made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Hashing {
    /// argon2id, a PHC string (what weir writes).
    #[serde(rename = "argon2id")]
    Argon2id,
    /// RabbitMQ's salted SHA-256 (read from imported definitions).
    #[serde(rename = "rabbit_password_hashing_sha256")]
    RabbitSha256,
}

/// A password as stored: the hash and how it was made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredPassword {
    /// The hash in the format of its [`Hashing`].
    pub hash: String,
    /// How it was made.
    pub hashing: Hashing,
    /// SCRAM-SHA-256 credentials from the same password (RFC 5803's form,
    /// [`super::scram`]); `None` until the password is set or first used.
    pub scram: Option<String>,
}

/// Hashes `password` with argon2id and a fresh random salt.
///
/// # Panics
/// If the operating system's random source fails (nothing can be salted then).
pub fn hash(password: &str) -> StoredPassword {
    let salt = SaltString::generate(&mut OsRng);
    let hash = Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .expect("invariant: argon2id with its default parameters hashes any password")
        .to_string();
    StoredPassword {
        hash,
        hashing: Hashing::Argon2id,
        scram: Some(super::scram::ScramCredentials::derive(password).to_stored()),
    }
}

/// Whether `password` is the one `stored` was made from. A malformed hash matches
/// nothing.
pub fn verify(stored: &StoredPassword, password: &str) -> bool {
    match stored.hashing {
        Hashing::Argon2id => PasswordHash::new(&stored.hash).is_ok_and(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        }),
        Hashing::RabbitSha256 => {
            let Ok(bytes) = STANDARD.decode(stored.hash.as_bytes()) else {
                return false;
            };
            let Some((salt, want)) = bytes.split_first_chunk::<4>() else {
                return false;
            };
            want.len() == 32 && constant_time_eq(&rabbit_digest(*salt, password), want)
        }
    }
}

/// The most memory (KiB), passes and lanes a stored argon2id hash may ask for.
const MAX_M_KIB: u32 = 4 * 19 * 1024;
const MAX_T: u32 = 8;
const MAX_P: u32 = 4;

/// Whether a stored hash has the shape its hashing says (checked on import and
/// at start), with argon2id parameters no dearer than a few times weir's own.
pub fn is_well_formed(stored: &StoredPassword) -> bool {
    if let Some(scram) = &stored.scram
        && super::scram::ScramCredentials::from_stored(scram).is_none()
    {
        return false;
    }
    match stored.hashing {
        Hashing::Argon2id => PasswordHash::new(&stored.hash).is_ok_and(|parsed| {
            // A hash's own parameters set what checking it costs: an imported one
            // may not ask for more than a few times weir's (m = 19 MiB, t = 2, p = 1),
            // or every login attempt for that user would take gigabytes or minutes.
            let param = |name: &str| parsed.params.get_decimal(name);
            parsed.algorithm.as_str() == "argon2id"
                && parsed.salt.is_some()
                && parsed.hash.is_some()
                && param("m").is_some_and(|m| m <= MAX_M_KIB)
                && param("t").is_some_and(|t| t <= MAX_T)
                && param("p").is_some_and(|p| p <= MAX_P)
        }),
        Hashing::RabbitSha256 => STANDARD
            .decode(stored.hash.as_bytes())
            .is_ok_and(|bytes| bytes.len() == 4 + 32),
    }
}

/// SHA-256(salt ‖ password), RabbitMQ's hash under a salt.
fn rabbit_digest(salt: [u8; 4], password: &str) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(salt);
    hasher.update(password.as_bytes());
    hasher.finalize().into()
}

pub(crate) use super::constant_time::constant_time_eq;

#[cfg(test)]
mod tests {
    use super::*;

    /// Found in review: an imported hash asking for 4 GiB made every login for
    /// that user allocate it.
    #[test]
    fn argon2id_parameters_dearer_than_a_few_times_weirs_are_refused() {
        let ours = hash("s3cret");
        assert!(is_well_formed(&ours));
        for (from, to) in [
            ("m=19456", "m=4194304"),
            ("t=2", "t=100000"),
            ("p=1", "p=64"),
        ] {
            let dear = StoredPassword {
                hash: ours.hash.replace(from, to),
                hashing: Hashing::Argon2id,
                scram: None,
            };
            assert!(!is_well_formed(&dear), "{}", dear.hash);
        }
    }

    #[test]
    fn argon2id_hashes_verify_and_differ_by_salt() {
        let a = hash("s3cret");
        let b = hash("s3cret");
        assert_eq!(a.hashing, Hashing::Argon2id);
        assert!(a.hash.starts_with("$argon2id$"), "{}", a.hash);
        assert_ne!(a.hash, b.hash, "a fresh salt each time");
        assert!(verify(&a, "s3cret"));
        assert!(!verify(&a, "s3cret "));
        assert!(!verify(&a, ""));
        assert!(is_well_formed(&a));
    }

    /// A hash as RabbitMQ 3.10 writes it in its definitions: base64(salt ‖
    /// SHA-256(salt ‖ password)). This one is made here from a fixed salt.
    #[test]
    fn rabbitmq_sha256_hashes_verify() {
        let salt = [0x90, 0x8d, 0xc6, 0x0a];
        let mut bytes = salt.to_vec();
        bytes.extend_from_slice(&rabbit_digest(salt, "guest"));
        let stored = StoredPassword {
            hash: STANDARD.encode(&bytes),
            hashing: Hashing::RabbitSha256,
            scram: None,
        };
        assert!(is_well_formed(&stored));
        assert!(verify(&stored, "guest"));
        assert!(!verify(&stored, "Guest"));
    }

    #[test]
    fn malformed_hashes_match_nothing() {
        for stored in [
            StoredPassword {
                hash: "not base64!".into(),
                hashing: Hashing::RabbitSha256,
                scram: None,
            },
            StoredPassword {
                hash: STANDARD.encode([1, 2, 3]),
                hashing: Hashing::RabbitSha256,
                scram: None,
            },
            StoredPassword {
                hash: "$argon2id$broken".into(),
                hashing: Hashing::Argon2id,
                scram: None,
            },
        ] {
            assert!(!is_well_formed(&stored), "{stored:?}");
            assert!(!verify(&stored, ""), "{stored:?}");
        }
    }

    #[test]
    fn constant_time_eq_compares_whole_slices() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
