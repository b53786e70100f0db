//! The AMQP front end's settings ([`AmqpConfig`]) and the credential check they
//! drive: what the listener, the connection machine and the sessions read, in a
//! leaf module that imports none of them.

use std::time::Duration;

use amq_protocol::protocol::connection::StartOk;
use amq_protocol::types::AMQPValue;
use tokio_util::sync::CancellationToken;

/// The broker's longest lease (its `MAX_DURATION_MS`: 30 days), ms.
const MAX_LEASE_MS: u64 = 30 * 24 * 3600 * 1000;
/// Longest time between two checks of the consumer timeout, ms.
const CONSUMER_TIMEOUT_CHECK_MAX_MS: u64 = 60_000;

/// The AMQP front end's settings.
#[derive(Clone, Debug)]
pub struct AmqpConfig {
    /// Largest frame offered in `connection.tune` (bytes, frame header included).
    pub frame_max: u32,
    /// Most channels per connection offered in `connection.tune`.
    pub channel_max: u16,
    /// Heartbeat interval offered in `connection.tune`, seconds (0: none).
    pub heartbeat_s: u16,
    /// Most connections open at once; more are closed at accept.
    pub max_connections: usize,
    /// How long a refused login waits before its `connection.close`, so guessing
    /// passwords over one connection after another is slow. (Users, passwords and
    /// the loopback-only rule are the broker's: `weir_broker::access`.)
    pub failed_login_delay: Duration,
    /// Largest message body accepted (the broker's limit).
    pub max_message_bytes: u64,
    /// Time allowed for each handshake step (protocol header, start-ok, tune-ok,
    /// open); a peer slower than this is closed.
    pub handshake_timeout: Duration,
    /// A write to the peer that makes no progress for this long closes the connection.
    pub write_timeout: Duration,
    /// TCP keepalive idle time on accepted sockets (`None`: off).
    pub tcp_keepalive: Option<Duration>,
    /// Smallest heartbeat interval a client may negotiate, seconds (a smaller non-zero
    /// request gets this one).
    pub min_heartbeat_s: u16,
    /// Most connections open at once from one peer IP address.
    pub max_connections_per_peer: usize,
    /// Most consumers on one channel.
    pub max_consumers_per_channel: usize,
    /// Most bytes of deliveries queued for one connection's socket and not yet written.
    pub max_buffered_bytes: usize,
    /// Most bytes of message content being assembled (header seen, body incomplete)
    /// on one connection, all channels together.
    pub max_partial_publish_bytes: u64,
    /// Most fields in one field table or array, nested ones included.
    pub max_table_fields: usize,
    /// A channel holding a delivery unacked for longer is closed with 406
    /// PRECONDITION_FAILED and its deliveries requeued (RabbitMQ's
    /// `consumer_timeout`, 30 minutes by default); `None`: never.
    pub consumer_timeout: Option<Duration>,
    /// Cancelled when the broker shuts down: sessions close with 320.
    pub shutdown: CancellationToken,
}

impl Default for AmqpConfig {
    fn default() -> Self {
        AmqpConfig {
            frame_max: 131_072,
            channel_max: 2047,
            heartbeat_s: 60,
            max_connections: 10_000,
            failed_login_delay: Duration::from_secs(1),
            max_message_bytes: 128 << 20,
            handshake_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(30),
            tcp_keepalive: Some(Duration::from_secs(60)),
            min_heartbeat_s: 1,
            max_connections_per_peer: 5_000,
            max_consumers_per_channel: 4_096,
            max_buffered_bytes: 4 << 20,
            max_partial_publish_bytes: 128 << 20,
            max_table_fields: 65_536,
            consumer_timeout: Some(Duration::from_secs(30 * 60)),
            shutdown: CancellationToken::new(),
        }
    }
}

impl AmqpConfig {
    /// The broker lease of a delivered message: past the consumer timeout and its
    /// check (at most a minute later), so the channel's close requeues the message,
    /// not a silent lease expiry; without a timeout, the longest lease there is.
    pub(crate) fn lease_ms(&self) -> u64 {
        let max = MAX_LEASE_MS;
        self.consumer_timeout.map_or(max, |t| {
            u64::try_from(t.as_millis())
                .unwrap_or(max)
                .saturating_add(2 * CONSUMER_TIMEOUT_CHECK_MAX_MS)
                .min(max)
        })
    }

    /// How often a connection looks for deliveries past the consumer timeout: half
    /// the timeout, between 50 ms and a minute (RabbitMQ checks once a minute).
    pub(crate) fn consumer_timeout_check(&self) -> Option<Duration> {
        self.consumer_timeout.map(|t| {
            (t / 2).clamp(
                Duration::from_millis(50),
                Duration::from_millis(CONSUMER_TIMEOUT_CHECK_MAX_MS),
            )
        })
    }

    /// The user and password of `start-ok` (PLAIN or AMQPLAIN); the reason when
    /// they cannot be read. Whether they are right is the broker's to say.
    pub(crate) fn credentials(&self, start_ok: &StartOk) -> Result<(String, String), String> {
        let response = start_ok.response.as_bytes();
        let (user, password) = match start_ok.mechanism.as_str() {
            "PLAIN" => {
                let mut parts = response.split(|b| *b == 0).skip(1);
                let user = parts.next().unwrap_or_default();
                let password = parts.next().unwrap_or_default();
                (
                    String::from_utf8_lossy(user).into_owned(),
                    String::from_utf8_lossy(password).into_owned(),
                )
            }
            "AMQPLAIN" => amqplain(response, self.max_table_fields)
                .ok_or("AMQPLAIN response does not parse")?,
            other => {
                return Err(format!(
                    "authentication mechanism {other} is not supported (PLAIN, AMQPLAIN)"
                ));
            }
        };
        Ok((user, password))
    }
}

/// AMQPLAIN's response: a field table without its length prefix.
fn amqplain(response: &[u8], max_fields: usize) -> Option<(String, String)> {
    let mut framed = Vec::with_capacity(response.len() + 4);
    framed.extend_from_slice(&u32::try_from(response.len()).ok()?.to_be_bytes());
    framed.extend_from_slice(response);
    crate::tables::check_table(&framed, max_fields).ok()?;
    let (_, table) = amq_protocol::types::parsing::parse_field_table(&framed[..]).ok()?;
    let text = |key: &str| match table.inner().get(key)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    };
    Some((text("LOGIN")?, text("PASSWORD")?))
}
