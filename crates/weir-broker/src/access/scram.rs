//! SCRAM-SHA-256 credentials (RFC 5802, RFC 7677) of a user, for front ends that
//! offer the mechanism (Kafka's SASL). They are made from the password whenever it
//! is set, and, for a user made before (or imported from RabbitMQ), at its first
//! login with the password; until then SCRAM cannot log that user in. Stored beside
//! the password hash in RFC 5803's form:
//! `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>` (base64).
//!
//! What the front end does with them: it checks a client's proof
//! ([`ScramCredentials::check_proof`]) and signs its answer
//! ([`ScramCredentials::server_signature`]) over the exchange's auth message; the
//! password itself never crosses.

use std::num::NonZeroU32;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ring::{digest, hmac, pbkdf2};

use super::constant_time::constant_time_eq;

/// PBKDF2 iterations for new credentials (RFC 7677's minimum, Kafka's default).
pub const ITERATIONS: u32 = 4096;
/// Most iterations accepted from stored credentials (each login costs them).
const MAX_ITERATIONS: u32 = 100_000;

/// A user's SCRAM-SHA-256 credentials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScramCredentials {
    /// The salt.
    pub salt: Vec<u8>,
    /// PBKDF2 iterations.
    pub iterations: u32,
    stored_key: [u8; 32],
    server_key: [u8; 32],
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data);
    let mut out = [0; 32];
    out.copy_from_slice(tag.as_ref());
    out
}

fn sha256(data: &[u8]) -> [u8; 32] {
    let mut out = [0; 32];
    out.copy_from_slice(digest::digest(&digest::SHA256, data).as_ref());
    out
}

impl ScramCredentials {
    /// Credentials for `password` with a fresh random salt.
    ///
    /// # Panics
    /// If the operating system's random source fails.
    pub fn derive(password: &str) -> ScramCredentials {
        let mut salt = vec![0; 16];
        getrandom::getrandom(&mut salt).expect("the operating system's random source");
        Self::with_salt(password, salt, ITERATIONS)
    }

    fn with_salt(password: &str, salt: Vec<u8>, iterations: u32) -> ScramCredentials {
        let mut salted = [0; 32];
        pbkdf2::derive(
            pbkdf2::PBKDF2_HMAC_SHA256,
            NonZeroU32::new(iterations).unwrap_or(NonZeroU32::MIN),
            &salt,
            password.as_bytes(),
            &mut salted,
        );
        let client_key = hmac_sha256(&salted, b"Client Key");
        ScramCredentials {
            salt,
            iterations,
            stored_key: sha256(&client_key),
            server_key: hmac_sha256(&salted, b"Server Key"),
        }
    }

    /// Whether `proof` (`ClientKey` XOR `ClientSignature`) is that of the password
    /// these credentials were made from, over `auth_message`.
    pub fn check_proof(&self, auth_message: &[u8], proof: &[u8]) -> bool {
        if proof.len() != 32 {
            return false;
        }
        let signature = hmac_sha256(&self.stored_key, auth_message);
        let client_key: Vec<u8> = proof.iter().zip(signature).map(|(p, s)| p ^ s).collect();
        constant_time_eq(&sha256(&client_key), &self.stored_key)
    }

    /// The server's signature over `auth_message` (the `v=` of its final message).
    pub fn server_signature(&self, auth_message: &[u8]) -> [u8; 32] {
        hmac_sha256(&self.server_key, auth_message)
    }

    /// RFC 5803's form.
    pub fn to_stored(&self) -> String {
        format!(
            "SCRAM-SHA-256${}:{}${}:{}",
            self.iterations,
            STANDARD.encode(&self.salt),
            STANDARD.encode(self.stored_key),
            STANDARD.encode(self.server_key)
        )
    }

    /// Read back from RFC 5803's form; `None` if it is not well formed.
    pub fn from_stored(text: &str) -> Option<ScramCredentials> {
        let rest = text.strip_prefix("SCRAM-SHA-256$")?;
        let (params, keys) = rest.split_once('$')?;
        let (iterations, salt) = params.split_once(':')?;
        let (stored, server) = keys.split_once(':')?;
        let iterations: u32 = iterations.parse().ok()?;
        if !(1..=MAX_ITERATIONS).contains(&iterations) {
            return None;
        }
        Some(ScramCredentials {
            salt: STANDARD.decode(salt).ok()?,
            iterations,
            stored_key: STANDARD.decode(stored).ok()?.try_into().ok()?,
            server_key: STANDARD.decode(server).ok()?.try_into().ok()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677's example exchange (user, pencil).
    #[test]
    fn the_rfc_7677_example_checks_out() {
        let salt = STANDARD.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let creds = ScramCredentials::with_salt("pencil", salt, 4096);
        let auth = "n=user,r=rOprNGfwEbeRWgbNEkqO,\
                    r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,\
                    c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let proof = STANDARD
            .decode("dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
            .unwrap();
        assert!(creds.check_proof(auth.as_bytes(), &proof));
        assert!(!creds.check_proof(b"another message", &proof));
        assert_eq!(
            STANDARD.encode(creds.server_signature(auth.as_bytes())),
            "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
        let again = ScramCredentials::from_stored(&creds.to_stored()).unwrap();
        assert_eq!(again, creds);
        assert!(ScramCredentials::from_stored("SCRAM-SHA-256$0:AA==$AA==:AA==").is_none());
        assert!(ScramCredentials::from_stored("nonsense").is_none());
        assert_ne!(
            ScramCredentials::derive("x").salt,
            ScramCredentials::derive("x").salt
        );
    }
}
