//! The HTTP front end's settings (`[http]`): limits and timeouts, each checked by
//! [`HttpConfig::problems`], and the views the server, body reader and long polls
//! take of them. A leaf under the server and the routes.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{body, phase};

/// Settings of the HTTP front end (`[http]`). Defaults and their reasons are in
/// docs/configuration.md.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Largest request body, bytes; larger ones get 413 `payload_too_large` (before
    /// any of the body is read when its `Content-Length` says so).
    pub max_body_bytes: u64,
    /// Most open connections. At the cap, the connection waiting longest for a
    /// request is closed to make room; if none is waiting, the newcomer waits.
    pub max_connections: u32,
    /// How long a client has to send a whole request head: from the connection's
    /// start for its first request, from the head's first byte after that. Bounds
    /// how long a slowloris (a head sent a byte at a time, or never finished) holds
    /// a connection.
    pub header_read_timeout_ms: u64,
    /// How long a keep-alive connection may wait for its next request before it is
    /// closed.
    pub idle_timeout_ms: u64,
    /// Longest wait for the next bytes of a request body (between two reads, as
    /// nginx's `client_body_timeout`); the request then gets 408.
    pub body_read_timeout_ms: u64,
    /// Longest wait for a client to take the next bytes of an answer (nginx's
    /// `send_timeout`); the connection is then closed.
    pub write_timeout_ms: u64,
    /// Most receives waiting in a long poll (`wait_ms` > 0) at once; one more is
    /// served as a short poll, and gets 429 `too_many_long_polls` when nothing is
    /// ready. Below `max_connections`, so long polls cannot take every connection;
    /// 0 means half of `max_connections`.
    pub max_long_polls: u32,
    /// Most bytes of a refused request body (413, or a body the endpoint ignores)
    /// read and thrown away after the answer, so a client that writes its whole body
    /// before reading (Python's `http.client`) reads the answer. A longer declared
    /// body is not drained: the connection is closed after the answer.
    pub max_drain_bytes: u64,
    /// Longest time spent draining one refused body.
    pub drain_timeout_ms: u64,
    /// Host names (and IP literals) a request's `Host` header may name, beside the
    /// loopback names and the address the connection came in on, which are always
    /// allowed. `"*"` allows any. Refusing other names defeats DNS rebinding: a page
    /// on a name the attacker controls, resolved to the broker, still sends its own
    /// name.
    pub allowed_hosts: Vec<String>,
    /// How long a refused login (wrong user or password) waits before its 401.
    pub failed_login_delay_ms: u64,
    /// A dashboard session unused this long ends (its browser logs in again).
    pub dashboard_session_idle_ms: u64,
    /// Most dashboard sessions held at once; a login past that ends the session
    /// idle longest.
    pub dashboard_max_sessions: u32,
}

/// The longest timeout the `[http]` keys take (30 days, the broker's longest
/// duration anywhere).
pub const MAX_TIMEOUT_MS: u64 = 30 * 24 * 3600 * 1000;

/// The longest `failed_login_delay_ms` (a minute, as `[amqp]`'s).
const MAX_LOGIN_DELAY_MS: u64 = 60_000;

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            max_body_bytes: 16 << 20,
            max_connections: 1024,
            header_read_timeout_ms: 30_000,
            idle_timeout_ms: 75_000,
            body_read_timeout_ms: 60_000,
            write_timeout_ms: 60_000,
            max_long_polls: 0,
            max_drain_bytes: 256 << 20,
            drain_timeout_ms: 30_000,
            allowed_hosts: Vec::new(),
            failed_login_delay_ms: 1000,
            dashboard_session_idle_ms: 8 * 3600 * 1000,
            dashboard_max_sessions: 10_000,
        }
    }
}

impl HttpConfig {
    /// Every problem with these settings (empty when there is none), each naming its
    /// key as `http.<key>`.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.max_connections == 0 {
            problems.push("http.max_connections must be at least 1".to_owned());
        }
        if self.max_long_polls != 0 && self.max_long_polls >= self.max_connections {
            problems.push(format!(
                "http.max_long_polls ({}) must be below http.max_connections ({}), so that \
                 long polls cannot take every connection",
                self.max_long_polls, self.max_connections
            ));
        }
        for (key, value) in [
            ("header_read_timeout_ms", self.header_read_timeout_ms),
            ("idle_timeout_ms", self.idle_timeout_ms),
            ("body_read_timeout_ms", self.body_read_timeout_ms),
            ("write_timeout_ms", self.write_timeout_ms),
            ("drain_timeout_ms", self.drain_timeout_ms),
            ("dashboard_session_idle_ms", self.dashboard_session_idle_ms),
        ] {
            if value == 0 {
                problems.push(format!(
                    "http.{key} must be at least 1 (a connection without it can be held forever)"
                ));
            }
            // Deadlines are the time now plus these: a value near u64::MAX ms would
            // overflow the clock and panic every connection.
            if value > MAX_TIMEOUT_MS {
                problems.push(format!(
                    "http.{key} {value} is over {MAX_TIMEOUT_MS} (30 days)"
                ));
            }
        }
        if self.dashboard_max_sessions == 0 {
            problems.push("http.dashboard_max_sessions must be at least 1".to_owned());
        }
        if self.failed_login_delay_ms > MAX_LOGIN_DELAY_MS {
            problems.push(format!(
                "http.failed_login_delay_ms {} is over {MAX_LOGIN_DELAY_MS}",
                self.failed_login_delay_ms
            ));
        }
        for host in &self.allowed_hosts {
            let bare_v6 = host.parse::<std::net::Ipv6Addr>().is_ok();
            if host.is_empty()
                || host.contains(['/', ' ', '@', '['])
                || (host.contains(':') && !bare_v6)
            {
                problems.push(format!(
                    "http.allowed_hosts: {host:?} is not a host name (no scheme, path or port)"
                ));
            }
        }
        problems
    }

    /// The long-poll cap in force: `max_long_polls`, or half of `max_connections`.
    pub(crate) fn long_poll_cap(&self) -> u32 {
        match self.max_long_polls {
            0 => self.max_connections / 2,
            n => n,
        }
    }

    pub(crate) fn timeouts(&self) -> phase::Timeouts {
        phase::Timeouts {
            header_read: Duration::from_millis(self.header_read_timeout_ms),
            idle: Duration::from_millis(self.idle_timeout_ms),
            write: Duration::from_millis(self.write_timeout_ms),
        }
    }

    pub(crate) fn body_settings(&self) -> body::BodySettings {
        body::BodySettings {
            read_timeout: Duration::from_millis(self.body_read_timeout_ms),
            max_drain_bytes: self.max_drain_bytes,
            drain_timeout: Duration::from_millis(self.drain_timeout_ms),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::HttpConfig;

    #[test]
    fn the_defaults_are_valid_and_every_problem_is_reported() {
        assert_eq!(HttpConfig::default().problems(), Vec::<String>::new());
        assert_eq!(HttpConfig::default().long_poll_cap(), 512);
        let small = HttpConfig {
            max_connections: 10,
            ..HttpConfig::default()
        };
        assert_eq!(small.problems(), Vec::<String>::new());
        assert_eq!(small.long_poll_cap(), 5);
        let bad = HttpConfig {
            max_connections: 10,
            max_long_polls: 10,
            header_read_timeout_ms: 0,
            drain_timeout_ms: 0,
            ..HttpConfig::default()
        };
        let problems = bad.problems().join("; ");
        assert!(problems.contains("http.max_long_polls (10)"), "{problems}");
        assert!(
            problems.contains("http.header_read_timeout_ms"),
            "{problems}"
        );
        assert!(problems.contains("http.drain_timeout_ms"), "{problems}");
        assert_eq!(bad.problems().len(), 3);
        // Found by the panic audit: a timeout near u64::MAX overflowed the clock
        // at the first connection.
        let huge = HttpConfig {
            idle_timeout_ms: u64::MAX,
            write_timeout_ms: super::MAX_TIMEOUT_MS,
            ..HttpConfig::default()
        };
        assert_eq!(huge.problems().len(), 1, "{:?}", huge.problems());
        assert!(huge.problems()[0].contains("http.idle_timeout_ms"));
    }
}
