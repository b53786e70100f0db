//! Who may connect and what they may do (issue 20): users with tags and hashed
//! passwords, vhosts, and each user's permissions per vhost, as RabbitMQ has them,
//! one model for every protocol. The front ends ask [`Access::authenticate`] at login
//! and [`Access::check`] before each operation; the CLI and the HTTP API manage it.
//!
//! Why it is built this way:
//! - Stored in `access.json` in the data directory ([`definitions`]), rewritten whole
//!   and durably on each change, and a change takes effect in memory only once it is
//!   on disk, so what a client was told survives `kill -9`. A file that cannot be read
//!   stops the broker from starting: falling back to the default `guest` would open a
//!   closed broker.
//! - Passwords are argon2id ([`password`], decision 0008), which costs tens of
//!   milliseconds by design; HTTP checks credentials on every request and AMQP clients
//!   reconnect in storms, so a login that succeeded leaves a keyed SHA-256 of the
//!   credentials (a key random per process) and the same credentials are then checked
//!   against that in constant time. Changing or removing a user drops it.
//! - The users RabbitMQ calls `loopback_users` (`guest` by default) may log in only
//!   from a loopback address, checked before the password and refused with the same
//!   answer as a wrong password.
//! - A fresh broker has `guest`/`guest`, tagged `administrator`, with every
//!   permission on the vhost `/`.

mod constant_time;
pub mod definitions;
mod import;
mod lookup;
pub mod password;
pub mod permissions;
pub mod scram;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use argon2::password_hash::rand_core::{OsRng, RngCore};
use sha2::{Digest, Sha256};

use crate::files::write_durably;
use definitions::{Definitions, PermissionDef, UserDef, VhostDef};
use password::{Hashing, StoredPassword};
use permissions::Compiled;
pub use permissions::{Operation, Patterns};

/// The default vhost.
pub const DEFAULT_VHOST: &str = "/";
/// The file, in the data directory.
pub const FILE: &str = "access.json";
/// Longest user or vhost name, bytes (RabbitMQ's short strings).
const MAX_NAME_BYTES: usize = 255;

/// Why a management change was refused.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// Adding a user that exists.
    #[error("user '{0}' already exists")]
    UserExists(String),
    /// Naming a user that does not exist.
    #[error("no user '{0}'")]
    NoSuchUser(String),
    /// Adding a vhost that exists.
    #[error("vhost '{0}' already exists")]
    VhostExists(String),
    /// Naming a vhost that does not exist.
    #[error("no vhost '{0}'")]
    NoSuchVhost(String),
    /// A user, vhost or tag name out of shape.
    #[error("invalid name {0:?}: 1 to 255 bytes without control characters")]
    InvalidName(String),
    /// A permission pattern that does not compile.
    #[error("invalid {} pattern: {reason}", operation.as_str())]
    InvalidPattern {
        /// Which of the three.
        operation: Operation,
        /// The regex compiler's reason.
        reason: String,
    },
    /// `access.json` cannot be read or does not hold together.
    #[error("{}: {reason}", path.display())]
    BadFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Writing `access.json` failed (the change did not take effect).
    #[error("writing {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
}

/// A login refused: no such user, a wrong password, or a loopback-only user from
/// another address. Which one is not said.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("login refused: wrong user name or password")]
pub struct LoginRefused;

/// An operation refused, worded as RabbitMQ words it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("access to {kind} '{name}' in vhost '{vhost}' refused for user '{user}'")]
pub struct Refused {
    /// Who asked.
    pub user: String,
    /// Where.
    pub vhost: String,
    /// `queue`, `exchange` or `vhost`.
    pub kind: &'static str,
    /// The resource's name.
    pub name: String,
    /// What was asked (`None` for access to the vhost itself).
    pub operation: Option<Operation>,
}

/// A logged-in user, as it was at login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The user name.
    pub name: String,
    /// Its tags (`administrator`, `management`, `monitoring`...).
    pub tags: Vec<String>,
}

impl Principal {
    /// Tagged `administrator`: may manage users, vhosts and permissions.
    pub fn is_administrator(&self) -> bool {
        self.tags.iter().any(|t| t == "administrator")
    }
}

/// A user as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    /// The user name.
    pub name: String,
    /// Its tags.
    pub tags: Vec<String>,
}

/// One user's permissions in one vhost, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PermissionInfo {
    /// The user.
    pub user: String,
    /// The vhost.
    pub vhost: String,
    /// What it may configure, write and read there.
    pub patterns: Patterns,
}

#[derive(Debug, Clone)]
struct User {
    password: StoredPassword,
    tags: Vec<String>,
}

#[derive(Debug, Clone, Default)]
struct State {
    users: BTreeMap<String, User>,
    vhosts: BTreeSet<String>,
    /// By (vhost, user).
    permissions: BTreeMap<(String, String), Compiled>,
}

/// Users, vhosts and permissions, durable in `access.json`.
#[derive(Debug)]
pub struct Access {
    path: PathBuf,
    state: RwLock<State>,
    /// Serialises changes: each writes the whole file.
    changing: Mutex<()>,
    /// User -> keyed digest of the credentials of its last successful login.
    verified: Mutex<HashMap<String, [u8; 32]>>,
    key: [u8; 32],
    loopback_users: Vec<String>,
    /// Password checks running at once, at most one per core: each argon2id hash
    /// takes 19 MiB and a core for tens of milliseconds, so a storm of logins with
    /// new credentials waits here (within the front end's handshake timeout)
    /// instead of taking memory and the blocking threads without a bound.
    hashing: tokio::sync::Semaphore,
    /// Counts changes: front ends watch it to close the connections of a deleted
    /// vhost or user, as RabbitMQ does.
    changes: tokio::sync::watch::Sender<u64>,
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn valid_name(name: &str) -> Result<(), AccessError> {
    if name.is_empty() || name.len() > MAX_NAME_BYTES || name.chars().any(char::is_control) {
        return Err(AccessError::InvalidName(name.to_owned()));
    }
    Ok(())
}

/// The loopback address itself: `127.0.0.1` or `::1` (IPv4-mapped included).
/// Narrower than RabbitMQ, which takes all of `127.0.0.0/8`: the rest of that range
/// is what containers and test rigs hand out as a second "host" (a client bound to
/// `127.0.0.2` stands for another machine), and a loopback-only user should not
/// reach the broker from there.
fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4 == std::net::Ipv4Addr::LOCALHOST,
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map_or(v6 == std::net::Ipv6Addr::LOCALHOST, |v4| {
                v4 == std::net::Ipv4Addr::LOCALHOST
            }),
    }
}

impl Access {
    /// Opens `access.json` in `data_dir`, or makes it with the defaults (`guest`).
    /// `loopback_users` may log in only from a loopback address.
    ///
    /// # Errors
    /// [`AccessError::BadFile`] for a file that cannot be read or does not hold
    /// together (a hash of the wrong shape, a bad pattern, a permission of an unknown
    /// user or vhost); [`AccessError::Io`] when the defaults cannot be written.
    pub fn open(data_dir: &Path, loopback_users: Vec<String>) -> Result<Access, AccessError> {
        let path = data_dir.join(FILE);
        let bad = |reason: String| AccessError::BadFile {
            path: path.clone(),
            reason,
        };
        let state = match std::fs::read(&path) {
            Ok(bytes) => {
                let defs: Definitions =
                    serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
                State::from_definitions(defs).map_err(|e| bad(e.to_string()))?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let state = State::defaults();
                write_state(&path, &state)?;
                state
            }
            Err(e) => return Err(bad(e.to_string())),
        };
        let mut key = [0; 32];
        OsRng.fill_bytes(&mut key);
        Ok(Access {
            path,
            state: RwLock::new(state),
            changing: Mutex::new(()),
            verified: Mutex::new(HashMap::new()),
            key,
            loopback_users,
            hashing: tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(2, std::num::NonZero::get),
            ),
            changes: tokio::sync::watch::Sender::new(0),
        })
    }

    /// [`Access::authenticate`] from async code: on a blocking thread, one password
    /// check per core at a time.
    ///
    /// # Errors
    /// [`LoginRefused`], whatever the reason.
    pub async fn log_in(
        self: &Arc<Self>,
        user: String,
        password: String,
        peer: IpAddr,
    ) -> Result<Principal, LoginRefused> {
        if let Some(known) = self.remembered(&user, &password, peer) {
            return known;
        }
        let _permit = self.hashing.acquire().await.map_err(|_| LoginRefused)?;
        let access = self.clone();
        tokio::task::spawn_blocking(move || access.authenticate(&user, &password, peer))
            .await
            .map_err(|_| LoginRefused)?
    }

    /// Checks a login. Blocks for the password hash (tens of milliseconds) the first
    /// time given credentials are seen; call it where blocking is allowed.
    ///
    /// # Errors
    /// [`LoginRefused`], whatever the reason.
    pub fn authenticate(
        &self,
        user: &str,
        password: &str,
        peer: IpAddr,
    ) -> Result<Principal, LoginRefused> {
        if let Some(known) = self.remembered(user, password, peer) {
            return known;
        }
        let digest = self.digest(user, password);
        let stored = read(&self.state)
            .users
            .get(user)
            .map(|u| u.password.clone());
        let Some(stored) = stored else {
            // As long as a wrong password takes: a hash of the same cost.
            static DUMMY: std::sync::OnceLock<StoredPassword> = std::sync::OnceLock::new();
            let dummy = DUMMY.get_or_init(|| password::hash("weir: no such user"));
            let _ = password::verify(dummy, password);
            return Err(LoginRefused);
        };
        if !password::verify(&stored, password) {
            return Err(LoginRefused);
        }
        let mut upgraded = None;
        if stored.hashing == Hashing::RabbitSha256 || stored.scram.is_none() {
            // An imported RabbitMQ hash, or a hash from before SCRAM credentials:
            // replaced by argon2id with SCRAM now that the password is known. If
            // that fails the old hash stays, and it still works.
            let argon = password::hash(password);
            let replaced = self.change(|state| {
                if let Some(u) = state.users.get_mut(user)
                    && u.password == stored
                {
                    u.password = argon.clone();
                }
                Ok(())
            });
            if replaced.is_ok() {
                upgraded = Some(argon);
            }
        }
        // Remembered under the read lock, and only if the password is still the one
        // checked: a change takes the write lock first and forgets logins after.
        let state = read(&self.state);
        let found = state.users.get(user).ok_or(LoginRefused)?;
        if found.password != stored && Some(&found.password) != upgraded.as_ref() {
            return Err(LoginRefused);
        }
        lock(&self.verified).insert(user.to_owned(), digest);
        Ok(Principal {
            name: user.to_owned(),
            tags: found.tags.clone(),
        })
    }

    /// The answer to a login that needs no password hash: refused for a
    /// loopback-only user from elsewhere or an unknown user, accepted for the
    /// credentials of an earlier successful login; `None` when the hash must decide.
    /// Cheap (one SHA-256), so the HTTP API calls it on every request.
    pub fn remembered(
        &self,
        user: &str,
        password: &str,
        peer: IpAddr,
    ) -> Option<Result<Principal, LoginRefused>> {
        if self.loopback_users.iter().any(|u| u == user) && !is_loopback(peer) {
            return Some(Err(LoginRefused));
        }
        let digest = self.digest(user, password);
        let state = read(&self.state);
        // An unknown user goes through a hash too (see `authenticate`), so the
        // answer's timing does not tell it from a wrong password.
        let found = state.users.get(user)?;
        let seen = lock(&self.verified)
            .get(user)
            .is_some_and(|d| password::constant_time_eq(d, &digest));
        seen.then(|| {
            Ok(Principal {
                name: user.to_owned(),
                tags: found.tags.clone(),
            })
        })
    }

    /// Whether `who` may look at what is in `vhost`: it has permissions there, or
    /// is tagged `administrator` or `monitoring` (which see every vhost, as in
    /// RabbitMQ's management API).
    ///
    /// # Errors
    /// [`Refused`] naming the vhost.
    pub fn check_view(&self, who: &Principal, vhost: &str) -> Result<(), Refused> {
        if who
            .tags
            .iter()
            .any(|t| t == "administrator" || t == "monitoring")
            && self.has_vhost(vhost)
        {
            return Ok(());
        }
        self.check_vhost(who, vhost)
    }

    /// Whether `who` may use `vhost` at all (has permissions there).
    ///
    /// # Errors
    /// [`Refused`] naming the vhost.
    pub fn check_vhost(&self, who: &Principal, vhost: &str) -> Result<(), Refused> {
        let state = read(&self.state);
        if state.users.contains_key(&who.name)
            && state
                .permissions
                .contains_key(&(vhost.to_owned(), who.name.clone()))
        {
            return Ok(());
        }
        Err(Refused {
            user: who.name.clone(),
            vhost: vhost.to_owned(),
            kind: "vhost",
            name: vhost.to_owned(),
            operation: None,
        })
    }

    /// Whether `who` may do `operation` on the `kind` (`queue`, `exchange`) named
    /// `name` in `vhost`. The default exchange is checked under `amq.default`, as
    /// RabbitMQ does.
    ///
    /// # Errors
    /// [`Refused`], worded as RabbitMQ's `ACCESS_REFUSED`.
    pub fn check(
        &self,
        who: &Principal,
        vhost: &str,
        operation: Operation,
        kind: &'static str,
        name: &str,
    ) -> Result<(), Refused> {
        let checked = if kind == "exchange" && name.is_empty() {
            "amq.default"
        } else {
            name
        };
        let state = read(&self.state);
        let allowed = state.users.contains_key(&who.name)
            && state
                .permissions
                .get(&(vhost.to_owned(), who.name.clone()))
                .is_some_and(|p| p.allows(operation, checked));
        if allowed {
            return Ok(());
        }
        Err(Refused {
            user: who.name.clone(),
            vhost: vhost.to_owned(),
            kind,
            name: name.to_owned(),
            operation: Some(operation),
        })
    }

    /// Adds a user (as `rabbitmqctl add_user`).
    ///
    /// # Errors
    /// [`AccessError::UserExists`], [`AccessError::InvalidName`], or the write.
    pub fn add_user(&self, name: &str, password: &str, tags: &[String]) -> Result<(), AccessError> {
        valid_name(name)?;
        tags.iter().try_for_each(|t| valid_name(t))?;
        let hashed = password::hash(password);
        self.change(|state| {
            if state.users.contains_key(name) {
                return Err(AccessError::UserExists(name.to_owned()));
            }
            state.users.insert(
                name.to_owned(),
                User {
                    password: hashed,
                    tags: tags.to_vec(),
                },
            );
            Ok(())
        })
    }

    /// Sets a user's password; its earlier logins are forgotten.
    ///
    /// # Errors
    /// [`AccessError::NoSuchUser`] or the write.
    pub fn set_password(&self, name: &str, password: &str) -> Result<(), AccessError> {
        let hashed = password::hash(password);
        self.change(|state| {
            let user = state
                .users
                .get_mut(name)
                .ok_or_else(|| AccessError::NoSuchUser(name.to_owned()))?;
            user.password = hashed;
            Ok(())
        })?;
        lock(&self.verified).remove(name);
        Ok(())
    }

    /// Replaces a user's tags.
    ///
    /// # Errors
    /// [`AccessError::NoSuchUser`], [`AccessError::InvalidName`] or the write.
    pub fn set_tags(&self, name: &str, tags: &[String]) -> Result<(), AccessError> {
        tags.iter().try_for_each(|t| valid_name(t))?;
        self.change(|state| {
            let user = state
                .users
                .get_mut(name)
                .ok_or_else(|| AccessError::NoSuchUser(name.to_owned()))?;
            user.tags = tags.to_vec();
            Ok(())
        })
    }

    /// Removes a user and its permissions.
    ///
    /// # Errors
    /// [`AccessError::NoSuchUser`] or the write.
    pub fn remove_user(&self, name: &str) -> Result<(), AccessError> {
        self.change(|state| {
            state
                .users
                .remove(name)
                .ok_or_else(|| AccessError::NoSuchUser(name.to_owned()))?;
            state.permissions.retain(|(_, user), _| user != name);
            Ok(())
        })?;
        lock(&self.verified).remove(name);
        Ok(())
    }

    /// Whether `name` is a user.
    pub fn has_user(&self, name: &str) -> bool {
        read(&self.state).users.contains_key(name)
    }

    /// Every user, by name.
    pub fn users(&self) -> Vec<UserInfo> {
        read(&self.state)
            .users
            .iter()
            .map(|(name, u)| UserInfo {
                name: name.clone(),
                tags: u.tags.clone(),
            })
            .collect()
    }

    /// Adds a vhost.
    ///
    /// # Errors
    /// [`AccessError::VhostExists`], [`AccessError::InvalidName`] or the write.
    pub fn add_vhost(&self, name: &str) -> Result<(), AccessError> {
        valid_name(name)?;
        self.change(|state| {
            if !state.vhosts.insert(name.to_owned()) {
                return Err(AccessError::VhostExists(name.to_owned()));
            }
            Ok(())
        })
    }

    /// Removes a vhost and every permission in it. (What lives in it is the
    /// broker's to delete.)
    ///
    /// # Errors
    /// [`AccessError::NoSuchVhost`] or the write.
    pub fn remove_vhost(&self, name: &str) -> Result<(), AccessError> {
        self.change(|state| {
            if !state.vhosts.remove(name) {
                return Err(AccessError::NoSuchVhost(name.to_owned()));
            }
            state.permissions.retain(|(vhost, _), _| vhost != name);
            Ok(())
        })
    }

    /// Every vhost, by name.
    pub fn vhosts(&self) -> Vec<String> {
        read(&self.state).vhosts.iter().cloned().collect()
    }

    /// Whether `name` is a vhost.
    pub fn has_vhost(&self, name: &str) -> bool {
        read(&self.state).vhosts.contains(name)
    }

    /// Sets a user's permissions in a vhost (as `rabbitmqctl set_permissions`).
    ///
    /// # Errors
    /// [`AccessError::NoSuchUser`], [`AccessError::NoSuchVhost`],
    /// [`AccessError::InvalidPattern`] or the write.
    pub fn set_permissions(
        &self,
        user: &str,
        vhost: &str,
        patterns: Patterns,
    ) -> Result<(), AccessError> {
        let compiled = Compiled::new(patterns)
            .map_err(|(operation, reason)| AccessError::InvalidPattern { operation, reason })?;
        self.change(|state| {
            if !state.users.contains_key(user) {
                return Err(AccessError::NoSuchUser(user.to_owned()));
            }
            if !state.vhosts.contains(vhost) {
                return Err(AccessError::NoSuchVhost(vhost.to_owned()));
            }
            state
                .permissions
                .insert((vhost.to_owned(), user.to_owned()), compiled);
            Ok(())
        })
    }

    /// Removes a user's permissions in a vhost; true if it had some.
    ///
    /// # Errors
    /// The write.
    pub fn clear_permissions(&self, user: &str, vhost: &str) -> Result<bool, AccessError> {
        let mut had = false;
        self.change(|state| {
            had = state
                .permissions
                .remove(&(vhost.to_owned(), user.to_owned()))
                .is_some();
            Ok(())
        })?;
        Ok(had)
    }

    /// Every permission, by vhost then user.
    pub fn permissions(&self) -> Vec<PermissionInfo> {
        read(&self.state)
            .permissions
            .iter()
            .map(|((vhost, user), p)| PermissionInfo {
                user: user.clone(),
                vhost: vhost.clone(),
                patterns: p.patterns().clone(),
            })
            .collect()
    }

    /// Applies `f` to a copy of the state, writes the result, and only then makes it
    /// the state: a change the file does not hold never takes effect.
    fn change(
        &self,
        f: impl FnOnce(&mut State) -> Result<(), AccessError>,
    ) -> Result<(), AccessError> {
        let _one_at_a_time = lock(&self.changing);
        let mut next = read(&self.state).clone();
        f(&mut next)?;
        write_state(&self.path, &next)?;
        *self.state.write().unwrap_or_else(PoisonError::into_inner) = next;
        self.changes.send_modify(|n| *n += 1);
        Ok(())
    }

    /// Changes as they happen (a counter): a front end re-checks what its
    /// connections rely on (their vhost, their user) when it moves.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// A keyed digest of the credentials, for the cache of verified logins.
    fn digest(&self, user: &str, password: &str) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update(self.key);
        hasher.update((user.len() as u64).to_be_bytes());
        hasher.update(user.as_bytes());
        hasher.update(password.as_bytes());
        hasher.finalize().into()
    }
}

fn write_state(path: &Path, state: &State) -> Result<(), AccessError> {
    let json = serde_json::to_vec_pretty(&state.to_definitions())
        .expect("invariant: definitions serialize");
    write_durably(path, &json).map_err(|source| AccessError::Io {
        path: path.to_path_buf(),
        source,
    })
}

impl State {
    fn defaults() -> State {
        let mut state = State::default();
        state.vhosts.insert(DEFAULT_VHOST.to_owned());
        state.users.insert(
            "guest".to_owned(),
            User {
                password: password::hash("guest"),
                tags: vec!["administrator".to_owned()],
            },
        );
        state.permissions.insert(
            (DEFAULT_VHOST.to_owned(), "guest".to_owned()),
            Compiled::new(Patterns::all()).expect("invariant: `.*` compiles"),
        );
        state
    }

    fn from_definitions(defs: Definitions) -> Result<State, AccessError> {
        let mut state = State::default();
        for user in defs.users {
            valid_name(&user.name)?;
            let password = StoredPassword {
                hash: user.password_hash,
                hashing: user.hashing_algorithm,
                scram: user.scram_sha_256,
            };
            if !password::is_well_formed(&password) {
                return Err(AccessError::InvalidName(format!(
                    "password hash of user {}",
                    user.name
                )));
            }
            state.users.insert(
                user.name,
                User {
                    password,
                    tags: user.tags,
                },
            );
        }
        for vhost in defs.vhosts {
            valid_name(&vhost.name)?;
            state.vhosts.insert(vhost.name);
        }
        for p in defs.permissions {
            if !state.users.contains_key(&p.user) {
                return Err(AccessError::NoSuchUser(p.user));
            }
            if !state.vhosts.contains(&p.vhost) {
                return Err(AccessError::NoSuchVhost(p.vhost));
            }
            let compiled = Compiled::new(Patterns {
                configure: p.configure,
                write: p.write,
                read: p.read,
            })
            .map_err(|(operation, reason)| AccessError::InvalidPattern { operation, reason })?;
            state.permissions.insert((p.vhost, p.user), compiled);
        }
        Ok(state)
    }

    fn to_definitions(&self) -> Definitions {
        Definitions {
            users: self
                .users
                .iter()
                .map(|(name, u)| UserDef {
                    name: name.clone(),
                    password_hash: u.password.hash.clone(),
                    hashing_algorithm: u.password.hashing,
                    scram_sha_256: u.password.scram.clone(),
                    tags: u.tags.clone(),
                })
                .collect(),
            vhosts: self
                .vhosts
                .iter()
                .map(|name| VhostDef { name: name.clone() })
                .collect(),
            permissions: self
                .permissions
                .iter()
                .map(|((vhost, user), p)| {
                    let patterns = p.patterns().clone();
                    PermissionDef {
                        user: user.clone(),
                        vhost: vhost.clone(),
                        configure: patterns.configure,
                        write: patterns.write,
                        read: patterns.read,
                    }
                })
                .collect(),
        }
    }
}
