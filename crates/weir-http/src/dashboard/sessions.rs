//! Dashboard logins: a browser logs in once with a form (the broker's users, the
//! same check as HTTP Basic) and gets a session cookie, so pages, forms and the live
//! event streams need no credentials of their own.
//!
//! The cookie holds a 256-bit random token and nothing else; it is `HttpOnly`
//! (scripts cannot read it) and `SameSite=Strict` (no other site's page can make the
//! browser send it), and the request guard still refuses cross-site changes. A
//! session ends on logout, after [`IDLE`] without a request, and as soon as its
//! user is deleted or its password changed (the session remembers a fingerprint of
//! the password hash it logged in with). At most [`MAX_SESSIONS`] are held: a new
//! login past that ends the one idle longest, so logins cannot grow memory.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, header};
use weir_broker::access::{Access, Principal};

/// The cookie's name.
pub(crate) const COOKIE: &str = "weir_session";

/// A session unused this long ends.
pub(crate) const IDLE: Duration = Duration::from_secs(8 * 3600);

/// Most sessions held at once.
pub(crate) const MAX_SESSIONS: usize = 10_000;

struct Session {
    user: String,
    /// The user's password fingerprint at login ([`Access::login_stamp`]).
    stamp: u64,
    last_seen: Instant,
}

/// The open sessions, by token.
#[derive(Default)]
pub(crate) struct Sessions {
    open: Mutex<HashMap<String, Session>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Sessions {
    /// Opens a session for `user` (just logged in); its token.
    ///
    /// # Errors
    /// The system's random source failed.
    pub(crate) fn open(&self, access: &Access, user: &str) -> Result<String, getrandom::Error> {
        let mut bytes = [0u8; 32];
        getrandom::getrandom(&mut bytes)?;
        let token = bytes.iter().fold(String::with_capacity(64), |mut t, b| {
            let _ = write!(t, "{b:02x}");
            t
        });
        let stamp = access.login_stamp(user).unwrap_or_default();
        let mut open = lock(&self.open);
        let now = Instant::now();
        open.retain(|_, s| now.duration_since(s.last_seen) < IDLE);
        if open.len() >= MAX_SESSIONS
            && let Some(oldest) = open
                .iter()
                .min_by_key(|(_, s)| s.last_seen)
                .map(|(t, _)| t.clone())
        {
            open.remove(&oldest);
        }
        open.insert(
            token.clone(),
            Session {
                user: user.to_owned(),
                stamp,
                last_seen: now,
            },
        );
        Ok(token)
    }

    /// The user of the session whose token the request's cookie holds, if it is
    /// still good; marks it used.
    pub(crate) fn principal(&self, access: &Access, headers: &HeaderMap) -> Option<Principal> {
        let token = token(headers)?;
        let mut open = lock(&self.open);
        let session = open.get_mut(token)?;
        let now = Instant::now();
        let good = now.duration_since(session.last_seen) < IDLE
            && access.login_stamp(&session.user) == Some(session.stamp);
        if !good {
            open.remove(token);
            return None;
        }
        session.last_seen = now;
        access.principal(&session.user)
    }

    /// Ends the request's session, if any.
    pub(crate) fn close(&self, headers: &HeaderMap) {
        if let Some(token) = token(headers) {
            lock(&self.open).remove(token);
        }
    }
}

/// The session token in the request's cookies.
fn token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            (name == COOKIE && value.len() == 64).then_some(value)
        })
}

/// The `Set-Cookie` value that holds `token` (or, with `None`, clears it).
pub(crate) fn set_cookie(token: Option<&str>, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    match token {
        Some(token) => format!(
            "{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
            IDLE.as_secs()
        ),
        None => format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{secure}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn the_token_is_found_among_other_cookies() {
        let mut headers = HeaderMap::new();
        let token = "ab".repeat(32);
        headers.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("other=1; {COOKIE}={token}; x=y")).unwrap(),
        );
        assert_eq!(super::token(&headers), Some(token.as_str()));
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("weir_session=short"),
        );
        assert_eq!(super::token(&headers), None);
    }

    #[test]
    fn a_set_cookie_is_http_only_and_same_site_strict() {
        let set = set_cookie(Some("t"), true);
        assert!(
            set.contains("HttpOnly") && set.contains("SameSite=Strict") && set.ends_with("Secure")
        );
        assert!(set_cookie(None, false).contains("Max-Age=0"));
    }
}
