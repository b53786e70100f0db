//! Dashboard logins: a browser logs in once with a form (the broker's users, the
//! same check as HTTP Basic) and gets a session cookie, so pages, forms and the live
//! event streams need no credentials of their own.
//!
//! The cookie holds a 256-bit random token and nothing else; it is `HttpOnly`
//! (scripts cannot read it) and `SameSite=Strict` (no other site's page can make the
//! browser send it), and the request guard still refuses cross-site changes. A
//! session ends on logout, after `[http] dashboard_session_idle_ms` without a
//! request, and as soon as its user is deleted or its password changed (the session
//! remembers a fingerprint of the password hash it logged in with). At most
//! `[http] dashboard_max_sessions` are held: a new login past that ends the one
//! idle longest, so logins cannot grow memory.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, header};
use weir_broker::access::{Access, Principal};

/// The cookie's name.
pub(crate) const COOKIE: &str = "weir_session";

struct Session {
    user: String,
    /// The user's password fingerprint at login ([`Access::login_stamp`]).
    stamp: u64,
    last_seen: Instant,
}

/// The open sessions, by token.
pub(crate) struct Sessions {
    open: Mutex<HashMap<String, Session>>,
    /// A session unused this long ends.
    idle: Duration,
    /// Most sessions held at once.
    max: usize,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Sessions {
    /// No session yet; each ends after `idle` unused, at most `max` at once.
    pub(crate) fn new(idle: Duration, max: usize) -> Sessions {
        Sessions {
            open: Mutex::default(),
            idle,
            max: max.max(1),
        }
    }

    /// How long an unused session lasts.
    pub(crate) fn idle(&self) -> Duration {
        self.idle
    }

    /// Opens a session for `user` (just logged in, with password fingerprint
    /// `stamp`, [`Access::login_stamp`]); its token.
    ///
    /// # Errors
    /// The system's random source failed.
    pub(crate) fn open(&self, user: &str, stamp: u64) -> Result<String, getrandom::Error> {
        let mut bytes = [0u8; 32];
        getrandom::getrandom(&mut bytes)?;
        let token = bytes.iter().fold(String::with_capacity(64), |mut t, b| {
            let _ = write!(t, "{b:02x}");
            t
        });
        let mut open = lock(&self.open);
        let now = Instant::now();
        open.retain(|_, s| now.duration_since(s.last_seen) < self.idle);
        if open.len() >= self.max
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
        let good = now.duration_since(session.last_seen) < self.idle
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

/// The `Set-Cookie` value that holds `token` for `idle` (or, with `None`, clears
/// it).
pub(crate) fn set_cookie(token: Option<&str>, idle: Duration, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    match token {
        Some(token) => format!(
            "{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
            idle.as_secs().max(1)
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
        let set = set_cookie(Some("t"), Duration::from_secs(60), true);
        assert!(
            set.contains("HttpOnly") && set.contains("SameSite=Strict") && set.ends_with("Secure")
        );
        assert!(set.contains("Max-Age=60"));
        assert!(set_cookie(None, Duration::ZERO, false).contains("Max-Age=0"));
    }

    #[test]
    fn past_the_cap_a_login_ends_the_session_idle_longest() {
        let sessions = Sessions::new(Duration::from_secs(3600), 2);
        let first = sessions.open("a", 1).unwrap();
        std::thread::sleep(Duration::from_millis(2));
        let second = sessions.open("b", 1).unwrap();
        std::thread::sleep(Duration::from_millis(2));
        let third = sessions.open("c", 1).unwrap();
        let open = lock(&sessions.open);
        assert_eq!(open.len(), 2);
        assert!(!open.contains_key(&first));
        assert!(open.contains_key(&second) && open.contains_key(&third));
    }
}
