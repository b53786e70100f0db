//! The broker's configuration: defaults < TOML file < `WEIR_*` environment < flags.
//!
//! Top-level keys map to `WEIR_<KEY>` (`WEIR_DATA_DIR`), section keys to
//! `WEIR_<SECTION>_<KEY>` (`WEIR_LIMITS_MAX_QUEUES`). Every key is listed in
//! docs/configuration.md.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use weir_broker::{FsyncPolicy, Limits};
use weir_http::HttpConfig;

pub use crate::kafka_config::KafkaSection;

/// Log settings the operator may tune per broker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSection {
    /// Segment size of each queue's log: smaller frees space of settled messages
    /// sooner, larger means fewer files.
    pub segment_bytes: u64,
    /// Threads in each of the two log pools (writers and syncs) that every queue's log
    /// shares; 0: one per core, at least 2 and at most 32. At most 256.
    pub threads: u16,
    /// Most segment and index files the logs keep open at once; past it, files not
    /// used lately are closed and opened again when next used. 0: what the open-file
    /// limit leaves once connections and the broker's own files are reserved.
    pub max_open_files: u64,
    /// Bytes of each stream partition's newest batches kept in memory, so readers
    /// that keep up read no file; 0: none. At most 1 GiB.
    pub stream_tail_cache_bytes: u64,
}

impl Default for LogSection {
    fn default() -> Self {
        LogSection {
            segment_bytes: 64 << 20,
            threads: 0,
            max_open_files: 0,
            stream_tail_cache_bytes: weir_broker::STREAM_TAIL_CACHE_BYTES,
        }
    }
}

impl LogSection {
    /// Threads per log pool as configured (`None`: by cores), or what is wrong.
    pub fn pool_threads(&self) -> anyhow::Result<Option<usize>> {
        if self.threads > 256 {
            bail!(
                "invalid configuration: log.threads must be at most 256, got {}",
                self.threads
            );
        }
        Ok((self.threads > 0).then_some(usize::from(self.threads)))
    }

    /// The most files the logs keep open: `max_open_files` if set (within the
    /// budget the open-file limit leaves, when there is one), else that budget.
    pub fn open_files_limit(&self, budget: Option<u64>) -> Option<u64> {
        match (self.max_open_files, budget) {
            (0, budget) => budget,
            (set, Some(budget)) => Some(set.min(budget)),
            (set, None) => Some(set),
        }
    }
}

/// The AMQP front end's settings (`[amqp]`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AmqpSection {
    /// Largest frame offered in `connection.tune`, bytes (4096 ..= 16 MiB).
    pub frame_max: u32,
    /// Most channels per connection offered in `connection.tune` (1 ..= 65535).
    pub channel_max: u16,
    /// Heartbeat interval offered, seconds (0: none unless the client asks).
    pub heartbeat_s: u16,
    /// Most open AMQP connections; more are closed when accepted.
    pub max_connections: u32,
    /// Deprecated: users to create at start if they do not exist yet,
    /// `"user:password"`, with every permission on `/`. Users live in `access.json`
    /// in the data directory (argon2id passwords, decision 0008).
    pub users: Vec<String>,
    /// The `guest` user may log in only from loopback (RabbitMQ's `loopback_users`).
    pub guest_loopback_only: bool,
    /// A refused login waits this long before the connection is closed, ms (at most
    /// 60,000).
    pub failed_login_delay_ms: u64,
    /// Time allowed for each handshake step, milliseconds (RabbitMQ: 10 s).
    pub handshake_timeout_ms: u64,
    /// A socket write that makes no progress this long closes the connection, ms.
    pub write_timeout_ms: u64,
    /// TCP keepalive idle time on accepted sockets, seconds (0: off).
    pub tcp_keepalive_s: u32,
    /// Smallest heartbeat a client may negotiate, seconds (smaller non-zero asks get it).
    pub min_heartbeat_s: u16,
    /// Most connections from one peer IP address.
    pub max_connections_per_peer: u32,
    /// Most consumers on one channel.
    pub max_consumers_per_channel: u32,
    /// Most delivery bytes queued for one connection and not yet written to its socket.
    pub max_buffered_bytes: u64,
    /// Most bytes of incomplete message content on one connection (at least
    /// `limits.max_message_bytes` takes effect).
    pub max_partial_publish_bytes: u64,
    /// Most fields in one field table or array, nested ones included.
    pub max_table_fields: u32,
    /// A channel that holds a delivery unacked this long is closed with 406
    /// PRECONDITION_FAILED and its deliveries requeued, ms (RabbitMQ's
    /// `consumer_timeout`: 30 minutes); 0: never.
    pub consumer_timeout_ms: u64,
}

impl Default for AmqpSection {
    fn default() -> Self {
        AmqpSection {
            frame_max: 131_072,
            channel_max: 2047,
            heartbeat_s: 60,
            max_connections: 10_000,
            users: Vec::new(),
            guest_loopback_only: true,
            failed_login_delay_ms: 1_000,
            handshake_timeout_ms: 10_000,
            write_timeout_ms: 30_000,
            tcp_keepalive_s: 60,
            min_heartbeat_s: 1,
            max_connections_per_peer: 5_000,
            max_consumers_per_channel: 4_096,
            max_buffered_bytes: 4 << 20,
            max_partial_publish_bytes: 128 << 20,
            max_table_fields: 65_536,
            consumer_timeout_ms: 30 * 60 * 1000,
        }
    }
}

impl AmqpSection {
    /// The deprecated `users` entries as (user, password).
    ///
    /// # Errors
    /// An entry that is not `"user:password"` (named by its user part only).
    pub fn seed_users(&self) -> anyhow::Result<Vec<(String, String)>> {
        self.users
            .iter()
            .map(|entry| match entry.split_once(':') {
                Some((user, password)) if !user.is_empty() => {
                    Ok((user.to_owned(), password.to_owned()))
                }
                _ => bail!(
                    "amqp.users entry '{}' is not \"user:password\"",
                    entry.split(':').next().unwrap_or_default()
                ),
            })
            .collect()
    }

    /// The front end's settings, or what is wrong with the section.
    pub fn to_config(&self, max_message_bytes: u64) -> anyhow::Result<weir_amqp::AmqpConfig> {
        let mut problems = Vec::new();
        if !(4096..=16 << 20).contains(&self.frame_max) {
            problems.push(format!(
                "amqp.frame_max {} is outside 4096..=16777216",
                self.frame_max
            ));
        }
        if self.channel_max == 0 {
            problems.push("amqp.channel_max must be at least 1".to_owned());
        }
        for (name, value) in [
            ("max_connections", u64::from(self.max_connections)),
            (
                "max_connections_per_peer",
                u64::from(self.max_connections_per_peer),
            ),
            (
                "max_consumers_per_channel",
                u64::from(self.max_consumers_per_channel),
            ),
            ("max_table_fields", u64::from(self.max_table_fields)),
            ("handshake_timeout_ms", self.handshake_timeout_ms),
            ("write_timeout_ms", self.write_timeout_ms),
        ] {
            if value == 0 {
                problems.push(format!("amqp.{name} must be at least 1"));
            }
        }
        for (name, value) in [
            ("handshake_timeout_ms", self.handshake_timeout_ms),
            ("write_timeout_ms", self.write_timeout_ms),
            ("consumer_timeout_ms", self.consumer_timeout_ms),
        ] {
            if value > weir_http::MAX_TIMEOUT_MS {
                problems.push(format!(
                    "amqp.{name} {value} is over {} (30 days)",
                    weir_http::MAX_TIMEOUT_MS
                ));
            }
        }
        if self.max_buffered_bytes < u64::from(self.frame_max) {
            problems.push(format!(
                "amqp.max_buffered_bytes {} is below amqp.frame_max {}",
                self.max_buffered_bytes, self.frame_max
            ));
        }
        if let Err(e) = self.seed_users() {
            problems.push(e.to_string());
        }
        if self.failed_login_delay_ms > 60_000 {
            problems.push(format!(
                "amqp.failed_login_delay_ms {} is over 60000",
                self.failed_login_delay_ms
            ));
        }
        if !problems.is_empty() {
            bail!("invalid configuration: {}", problems.join("; "));
        }
        Ok(weir_amqp::AmqpConfig {
            frame_max: self.frame_max,
            channel_max: self.channel_max,
            heartbeat_s: self.heartbeat_s,
            max_connections: self.max_connections as usize,
            failed_login_delay: Duration::from_millis(self.failed_login_delay_ms),
            max_message_bytes,
            handshake_timeout: Duration::from_millis(self.handshake_timeout_ms),
            write_timeout: Duration::from_millis(self.write_timeout_ms),
            tcp_keepalive: (self.tcp_keepalive_s > 0)
                .then(|| Duration::from_secs(u64::from(self.tcp_keepalive_s))),
            min_heartbeat_s: self.min_heartbeat_s,
            max_connections_per_peer: self.max_connections_per_peer as usize,
            max_consumers_per_channel: self.max_consumers_per_channel as usize,
            max_buffered_bytes: usize::try_from(self.max_buffered_bytes).unwrap_or(usize::MAX),
            max_partial_publish_bytes: self.max_partial_publish_bytes.max(max_message_bytes),
            max_table_fields: self.max_table_fields as usize,
            consumer_timeout: (self.consumer_timeout_ms > 0)
                .then(|| Duration::from_millis(self.consumer_timeout_ms)),
            ..weir_amqp::AmqpConfig::default()
        })
    }
}

/// TLS for the `amqps_listen` and `https_listen` listeners (`[tls]`): one
/// certificate for both. Read at start and again on SIGHUP.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsSection {
    /// PEM file with the server's certificate chain, the server's own certificate
    /// first.
    pub cert: Option<PathBuf>,
    /// PEM file with the certificate's private key (PKCS#8, RSA or EC).
    pub key: Option<PathBuf>,
    /// PEM file with the CA certificates that sign client certificates. When set,
    /// a TLS client must present a certificate signed by one of them.
    pub ca: Option<PathBuf>,
}

/// The value of a `*_listen` key that turns the listener off.
pub const OFF: &str = "off";

/// Everything `weir serve` needs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where queues live.
    pub data_dir: PathBuf,
    /// HTTP API address; port 0 picks a free one.
    pub http_listen: String,
    /// AMQP 0-9-1 address; its settings are `[amqp]`.
    pub amqp_listen: String,
    /// HTTPS address (the API over TLS, with `[tls]`); `off` by default.
    pub https_listen: String,
    /// AMQP 0-9-1 over TLS address (5671 by convention, with `[tls]`); `off` by default.
    pub amqps_listen: String,
    /// Kafka address (9092 by convention); its settings are `[kafka]`; `off` by default.
    pub kafka_listen: String,
    /// Kafka over TLS address (9093 by convention, with `[tls]`); `off` by default.
    pub kafka_tls_listen: String,
    /// When a confirm may be sent: `always` (after fdatasync), `interval:<ms>`, `never`.
    pub fsync: FsyncPolicy,
    /// Log filter when `RUST_LOG` is not set (`info`, `debug`, `weir_broker=debug`).
    pub log_level: String,
    /// Client limits.
    pub limits: Limits,
    /// HTTP front end.
    pub http: HttpConfig,
    /// AMQP front end.
    pub amqp: AmqpSection,
    /// Kafka front end.
    pub kafka: KafkaSection,
    /// Queue logs.
    pub log: LogSection,
    /// Certificates of the TLS listeners.
    pub tls: TlsSection,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./weir-data"),
            http_listen: "127.0.0.1:8080".into(),
            amqp_listen: "127.0.0.1:5672".into(),
            https_listen: OFF.into(),
            amqps_listen: OFF.into(),
            kafka_listen: OFF.into(),
            kafka_tls_listen: OFF.into(),
            fsync: FsyncPolicy::Always,
            log_level: "info".into(),
            limits: Limits::default(),
            http: HttpConfig::default(),
            amqp: AmqpSection::default(),
            kafka: KafkaSection::default(),
            log: LogSection::default(),
            tls: TlsSection::default(),
        }
    }
}

impl Config {
    /// A listener's address, `None` when it is `off`.
    pub fn listen(address: &str) -> Option<&str> {
        (address != OFF).then_some(address)
    }

    /// Whether a TLS listener is on (`[tls]` is then needed).
    pub fn tls_on(&self) -> bool {
        [
            &self.https_listen,
            &self.amqps_listen,
            &self.kafka_tls_listen,
        ]
        .iter()
        .any(|l| Config::listen(l).is_some())
    }

    /// Every problem with the listeners and `[tls]` (empty when there is none).
    pub fn listener_problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let listeners = [
            &self.http_listen,
            &self.amqp_listen,
            &self.https_listen,
            &self.amqps_listen,
            &self.kafka_listen,
            &self.kafka_tls_listen,
        ];
        if listeners.iter().all(|l| Config::listen(l).is_none()) {
            problems.push("every listener is off: turn on at least one of http_listen, amqp_listen, https_listen, amqps_listen, kafka_listen, kafka_tls_listen".to_owned());
        }
        let tls_on = self.tls_on();
        if tls_on {
            for (key, value) in [("cert", &self.tls.cert), ("key", &self.tls.key)] {
                if value.is_none() {
                    problems.push(format!(
                        "tls.{key} is needed by https_listen, amqps_listen and kafka_tls_listen (--tls-{key})"
                    ));
                }
            }
        }
        problems
    }
}

const TOP_LEVEL: [&str; 9] = [
    "data_dir",
    "http_listen",
    "amqp_listen",
    "https_listen",
    "amqps_listen",
    "kafka_listen",
    "kafka_tls_listen",
    "fsync",
    "log_level",
];
const SECTIONS: [&str; 6] = ["limits", "http", "amqp", "kafka", "log", "tls"];

/// A value from the environment: numbers and booleans as such, anything else as a
/// string.
fn env_value(raw: &str) -> toml::Value {
    if let Ok(i) = raw.parse::<i64>() {
        return toml::Value::Integer(i);
    }
    if let Ok(b) = raw.parse::<bool>() {
        return toml::Value::Boolean(b);
    }
    toml::Value::String(raw.to_owned())
}

/// Builds the configuration from an optional file, the environment (`vars`) and
/// flag overrides (`flags`: top-level key, or `section.key`, → value).
pub fn load(
    file: Option<&Path>,
    vars: impl IntoIterator<Item = (String, String)>,
    flags: &[(&str, Option<String>)],
) -> anyhow::Result<Config> {
    let mut table = match file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading config file {}", path.display()))?;
            text.parse::<toml::Table>()
                .with_context(|| format!("parsing config file {}", path.display()))?
        }
        None => toml::Table::new(),
    };
    for (name, raw) in vars {
        let Some(rest) = name.strip_prefix("WEIR_") else {
            continue;
        };
        let key = rest.to_ascii_lowercase();
        if TOP_LEVEL.contains(&key.as_str()) {
            table.insert(key, toml::Value::String(raw));
            continue;
        }
        for section in SECTIONS {
            if let Some(field) = key.strip_prefix(section).and_then(|k| k.strip_prefix('_')) {
                let entry = table
                    .entry(section.to_owned())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                let Some(section_table) = entry.as_table_mut() else {
                    bail!("config: {section} must be a table");
                };
                section_table.insert(field.to_owned(), env_value(&raw));
            }
        }
    }
    for (key, value) in flags {
        let Some(v) = value else {
            continue;
        };
        let value = toml::Value::String(v.clone());
        match key.split_once('.') {
            Some((section, field)) => {
                let entry = table
                    .entry(section.to_owned())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                let Some(section_table) = entry.as_table_mut() else {
                    bail!("config: {section} must be a table");
                };
                section_table.insert(field.to_owned(), value);
            }
            None => {
                table.insert((*key).to_owned(), value);
            }
        }
    }
    let config: Config = table
        .try_into()
        .context("invalid configuration (check the file, WEIR_* variables and flags)")?;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precedence_is_defaults_file_env_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("weir.toml");
        std::fs::write(
            &file,
            "data_dir = \"/from-file\"\nhttp_listen = \"127.0.0.1:1\"\nfsync = \"never\"\n[limits]\nmax_queues = 5\n",
        )
        .unwrap();
        let env = vec![
            ("WEIR_HTTP_LISTEN".to_owned(), "127.0.0.1:2".to_owned()),
            ("WEIR_LIMITS_MAX_QUEUES".to_owned(), "7".to_owned()),
            (
                "WEIR_SERVER".to_owned(),
                "ignored: a client variable".to_owned(),
            ),
        ];
        let flags = [
            ("fsync", Some("interval:5".to_owned())),
            ("amqp_listen", None),
        ];
        let c = load(Some(&file), env, &flags).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/from-file"));
        assert_eq!(c.http_listen, "127.0.0.1:2");
        assert_eq!(c.limits.max_queues, 7);
        assert_eq!(c.fsync.to_string(), "interval:5");
        assert_eq!(c.amqp_listen, "127.0.0.1:5672");
    }

    #[test]
    fn tls_keys_come_from_flags_and_the_environment_and_listeners_turn_off() {
        let env = vec![
            ("WEIR_AMQPS_LISTEN".to_owned(), "127.0.0.1:5671".to_owned()),
            ("WEIR_TLS_KEY".to_owned(), "/env/key.pem".to_owned()),
        ];
        let flags = [
            ("amqp_listen", Some(OFF.to_owned())),
            ("tls.cert", Some("/flag/cert.pem".to_owned())),
        ];
        let c = load(None, env, &flags).unwrap();
        assert_eq!(Config::listen(&c.amqp_listen), None);
        assert_eq!(Config::listen(&c.amqps_listen), Some("127.0.0.1:5671"));
        assert_eq!(Config::listen(&c.https_listen), None, "off by default");
        assert_eq!(c.tls.cert, Some(PathBuf::from("/flag/cert.pem")));
        assert_eq!(c.tls.key, Some(PathBuf::from("/env/key.pem")));
        assert!(
            c.listener_problems().is_empty(),
            "{:?}",
            c.listener_problems()
        );
        // A TLS listener without a key, and nothing on at all, are refused.
        let c = load(
            None,
            Vec::new(),
            &[("https_listen", Some("127.0.0.1:0".to_owned()))],
        )
        .unwrap();
        let problems = c.listener_problems();
        assert!(
            problems.len() == 2
                && problems[0].contains("tls.cert")
                && problems[1].contains("tls.key"),
            "{problems:?}"
        );
        let off = [
            ("http_listen", Some(OFF.to_owned())),
            ("amqp_listen", Some(OFF.to_owned())),
        ];
        let c = load(None, Vec::new(), &off).unwrap();
        assert!(c.listener_problems()[0].contains("every listener is off"));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("weir.toml");
        std::fs::write(&file, "data_dri = \"x\"\n").unwrap();
        assert!(load(Some(&file), Vec::new(), &[]).is_err());
        let bad = vec![("WEIR_FSYNC".to_owned(), "sometimes".to_owned())];
        let e = format!("{:#}", load(None, bad, &[]).unwrap_err());
        assert!(e.contains("fsync policy"), "{e}");
    }

    #[test]
    fn http_timeouts_and_caps_come_from_the_environment() {
        let env = vec![
            (
                "WEIR_HTTP_HEADER_READ_TIMEOUT_MS".to_owned(),
                "1500".to_owned(),
            ),
            ("WEIR_HTTP_IDLE_TIMEOUT_MS".to_owned(), "2500".to_owned()),
            ("WEIR_HTTP_MAX_LONG_POLLS".to_owned(), "7".to_owned()),
            ("WEIR_HTTP_MAX_CONNECTIONS".to_owned(), "8".to_owned()),
            ("WEIR_HTTP_LISTEN".to_owned(), "127.0.0.1:3".to_owned()),
        ];
        let c = load(None, env, &[]).unwrap();
        assert_eq!(c.http.header_read_timeout_ms, 1500);
        assert_eq!(c.http.idle_timeout_ms, 2500);
        assert_eq!(c.http.max_long_polls, 7);
        assert_eq!(c.http_listen, "127.0.0.1:3");
        assert!(c.http.problems().is_empty());
        let too_many_polls = vec![
            ("WEIR_HTTP_MAX_LONG_POLLS".to_owned(), "8".to_owned()),
            ("WEIR_HTTP_MAX_CONNECTIONS".to_owned(), "8".to_owned()),
        ];
        let c = load(None, too_many_polls, &[]).unwrap();
        assert_eq!(c.http.problems().len(), 1, "{:?}", c.http.problems());
    }

    #[test]
    fn the_amqp_section_is_checked_whole() {
        let env = vec![
            ("WEIR_AMQP_FRAME_MAX".to_owned(), "1024".to_owned()),
            ("WEIR_AMQP_CHANNEL_MAX".to_owned(), "0".to_owned()),
        ];
        let c = load(None, env, &[]).unwrap();
        let e = c.amqp.to_config(1).unwrap_err().to_string();
        assert!(
            e.contains("frame_max 1024") && e.contains("channel_max"),
            "{e}"
        );
        let mut ok = AmqpSection {
            users: vec!["app:s3cret:with-colon".into()],
            ..AmqpSection::default()
        };
        ok.to_config(1).unwrap();
        assert_eq!(
            ok.seed_users().unwrap(),
            vec![("app".into(), "s3cret:with-colon".into())]
        );
        ok.users = vec!["nopassword".into()];
        assert!(ok.to_config(1).is_err());
        ok.users = Vec::new();
        ok.failed_login_delay_ms = 60_001;
        assert!(ok.to_config(1).is_err());
    }

    /// A deadline is `now + timeout`; a timeout near `i64::MAX` ms would overflow
    /// the clock at the first connection or long poll, so it is refused at start.
    #[test]
    fn timeouts_past_thirty_days_and_messages_over_512_mib_are_refused() {
        let env = vec![
            (
                "WEIR_AMQP_HANDSHAKE_TIMEOUT_MS".to_owned(),
                i64::MAX.to_string(),
            ),
            (
                "WEIR_AMQP_WRITE_TIMEOUT_MS".to_owned(),
                i64::MAX.to_string(),
            ),
            ("WEIR_LIMITS_MAX_WAIT_MS".to_owned(), i64::MAX.to_string()),
            (
                "WEIR_LIMITS_MAX_MESSAGE_BYTES".to_owned(),
                (1u64 << 30).to_string(),
            ),
        ];
        let c = load(None, env, &[]).unwrap();
        let e = c.amqp.to_config(1).unwrap_err().to_string();
        assert!(
            e.contains("handshake_timeout_ms") && e.contains("write_timeout_ms"),
            "{e}"
        );
        let problems = c.limits.problems();
        assert!(
            problems.len() == 2
                && problems[0].contains("max_message_bytes")
                && problems[1].contains("max_wait_ms"),
            "{problems:?}"
        );
        assert!(Config::default().limits.problems().is_empty());
    }
}
