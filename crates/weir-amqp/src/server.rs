//! The listener: accepts connections up to a limit and runs a session for each.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use amq_protocol::protocol::connection::StartOk;
use amq_protocol::types::AMQPValue;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use weir_broker::Broker;

use crate::registry::Registry;
use crate::session;

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
    /// Users and passwords (PLAIN and AMQPLAIN).
    pub users: Vec<(String, String)>,
    /// The `guest` user may only connect from a loopback address (RabbitMQ's rule).
    pub guest_loopback_only: bool,
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
            users: vec![("guest".into(), "guest".into())],
            guest_loopback_only: true,
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
            shutdown: CancellationToken::new(),
        }
    }
}

impl AmqpConfig {
    /// Checks `start-ok`'s credentials; the reason when refused.
    pub(crate) fn authenticate(&self, start_ok: &StartOk, peer: SocketAddr) -> Result<(), String> {
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
        let known = self.users.iter().any(|(u, p)| *u == user && *p == password);
        if !known {
            return Err(format!("login refused for user '{user}'"));
        }
        if user == "guest" && self.guest_loopback_only && !peer.ip().is_loopback() {
            return Err("user 'guest' can only connect via localhost".into());
        }
        Ok(())
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

/// Open connections per peer IP address.
type PerPeer = Arc<Mutex<HashMap<IpAddr, usize>>>;

/// One connection counted against its peer address until dropped.
struct PeerSlot {
    counts: PerPeer,
    ip: IpAddr,
}

impl PeerSlot {
    /// Counts a connection from `ip`, unless it already has `limit`.
    fn take(counts: &PerPeer, ip: IpAddr, limit: usize) -> Option<PeerSlot> {
        // The map is consistent between statements, so a poisoned lock is usable.
        let mut map = counts.lock().unwrap_or_else(PoisonError::into_inner);
        let n = map.entry(ip).or_insert(0);
        if *n >= limit {
            return None;
        }
        *n += 1;
        Some(PeerSlot {
            counts: counts.clone(),
            ip,
        })
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut map = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// Accepts connections on `listener` until `config.shutdown`, then waits (up to 5 s)
/// for the sessions to close.
pub async fn serve(listener: TcpListener, broker: Broker, config: AmqpConfig) {
    let config = Arc::new(config);
    let replies = Arc::new(session::Replies::default());
    let registry = Arc::new(Registry::default());
    let slots = Arc::new(Semaphore::new(config.max_connections));
    let per_peer: PerPeer = Arc::default();
    let sessions = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            () = config.shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                tracing::warn!(error = %e, "accepting an AMQP connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, limit = config.max_connections, "AMQP connection refused: too many connections");
            drop(stream);
            continue;
        };
        let Some(peer_slot) = PeerSlot::take(&per_peer, peer.ip(), config.max_connections_per_peer)
        else {
            tracing::warn!(%peer, limit = config.max_connections_per_peer, "AMQP connection refused: too many connections from this address");
            drop(stream);
            continue;
        };
        if let Some(idle) = config.tcp_keepalive {
            // A peer that vanished (no FIN, no RST) and disabled heartbeats is
            // still found: the kernel probes after `idle`, then every 10 s, 6 times.
            let keepalive = socket2::TcpKeepalive::new()
                .with_time(idle)
                .with_interval(Duration::from_secs(10))
                .with_retries(6);
            if let Err(e) = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive) {
                tracing::debug!(%peer, error = %e, "could not set TCP keepalive");
            }
        }
        let (broker, config, replies, registry) = (
            broker.clone(),
            config.clone(),
            replies.clone(),
            registry.clone(),
        );
        sessions.spawn(async move {
            session::run(stream, peer, broker, config, replies, registry).await;
            drop((slot, peer_slot));
        });
    }
    sessions.close();
    let _ = tokio::time::timeout(Duration::from_secs(5), sessions.wait()).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::types::{FieldTable, LongString};

    fn start_ok(mechanism: &str, response: Vec<u8>) -> StartOk {
        StartOk {
            client_properties: FieldTable::default(),
            mechanism: mechanism.into(),
            response: LongString::from(response),
            locale: "en_US".into(),
        }
    }

    #[test]
    fn plain_and_amqplain_logins() {
        let config = AmqpConfig::default();
        let local: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let remote: SocketAddr = "10.0.0.9:5000".parse().unwrap();
        assert!(
            config
                .authenticate(&start_ok("PLAIN", b"\0guest\0guest".to_vec()), local)
                .is_ok()
        );
        assert!(
            config
                .authenticate(&start_ok("PLAIN", b"\0guest\0nope".to_vec()), local)
                .is_err()
        );
        assert!(
            config
                .authenticate(&start_ok("PLAIN", b"\0guest\0guest".to_vec()), remote)
                .is_err()
        );
        // LOGIN: S "guest", PASSWORD: S "guest", as a table body.
        let mut table = Vec::new();
        for (k, v) in [("LOGIN", "guest"), ("PASSWORD", "guest")] {
            table.push(k.len() as u8);
            table.extend_from_slice(k.as_bytes());
            table.push(b'S');
            table.extend_from_slice(&(v.len() as u32).to_be_bytes());
            table.extend_from_slice(v.as_bytes());
        }
        assert!(
            config
                .authenticate(&start_ok("AMQPLAIN", table), local)
                .is_ok()
        );
        assert!(
            config
                .authenticate(&start_ok("EXTERNAL", Vec::new()), local)
                .is_err()
        );
    }
}
