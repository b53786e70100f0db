//! The listener: accepts connections up to a limit and runs a session for each.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;
use weir_broker::Broker;

use crate::config::AmqpConfig;
use crate::registry::Registry;
use crate::session;

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
        // Everything logged for this connection (its channels, consumers and
        // publishers included) names it.
        sessions.spawn(
            async move {
                session::run(stream, peer, broker, config, replies, registry).await;
                drop((slot, peer_slot));
            }
            .instrument(tracing::info_span!("amqp", %peer)),
        );
    }
    sessions.close();
    let _ = tokio::time::timeout(Duration::from_secs(5), sessions.wait()).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::protocol::connection::StartOk;
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
    fn plain_and_amqplain_credentials_are_read() {
        let config = AmqpConfig::default();
        assert_eq!(
            config.credentials(&start_ok("PLAIN", b"\0app\0s3cret".to_vec())),
            Ok(("app".to_owned(), "s3cret".to_owned()))
        );
        // PLAIN's authorisation identity (before the first NUL) is ignored.
        assert_eq!(
            config.credentials(&start_ok("PLAIN", b"other\0app\0pw".to_vec())),
            Ok(("app".to_owned(), "pw".to_owned()))
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
        assert_eq!(
            config.credentials(&start_ok("AMQPLAIN", table)),
            Ok(("guest".to_owned(), "guest".to_owned()))
        );
        assert!(
            config
                .credentials(&start_ok("AMQPLAIN", vec![1, 2]))
                .is_err()
        );
        assert!(
            config
                .credentials(&start_ok("EXTERNAL", Vec::new()))
                .unwrap_err()
                .contains("not supported")
        );
    }
}
