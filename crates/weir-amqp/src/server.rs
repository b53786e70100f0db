//! The listeners: accept connections (plain and TLS) up to a limit and run a
//! session for each; a TLS handshake runs in the connection's task, never in the
//! accept loop.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;
use weir_broker::Broker;
use weir_broker::peers::PeerCounts;

use crate::config::AmqpConfig;
use crate::registry::Registry;
use crate::session;
use crate::socket::Socket;

/// The current TLS settings of a listener. The binary sends new ones when the
/// certificates are reloaded (SIGHUP); each connection takes those in force when it
/// is accepted, so open connections keep theirs.
pub type TlsSettings = watch::Receiver<Arc<ServerConfig>>;

/// Where the AMQP front end listens: a plain listener, a TLS one (RabbitMQ's
/// `listeners.ssl`), or both. Both share one connection cap and one per-peer cap.
#[derive(Default)]
pub struct Listeners {
    /// Plain AMQP (5672 by convention).
    pub plain: Option<TcpListener>,
    /// AMQP over TLS (5671 by convention) and its settings.
    pub tls: Option<(TcpListener, TlsSettings)>,
}

/// Accepts connections on `listener` until `config.shutdown`, then waits (up to 5 s)
/// for the sessions to close.
pub async fn serve(listener: TcpListener, broker: Broker, config: AmqpConfig) {
    let listeners = Listeners {
        plain: Some(listener),
        tls: None,
    };
    serve_listeners(listeners, broker, config).await;
}

/// The next connection on `listener`; never, without one.
async fn accept(listener: Option<&TcpListener>) -> std::io::Result<(TcpStream, SocketAddr)> {
    match listener {
        Some(listener) => listener.accept().await,
        None => std::future::pending().await,
    }
}

/// Accepts connections on each of `listeners` until `config.shutdown`, then waits
/// (up to 5 s) for the sessions to close. A TLS connection's handshake runs in its
/// own task, within `handshake_timeout`, holding its connection slots meanwhile.
pub async fn serve_listeners(listeners: Listeners, broker: Broker, config: AmqpConfig) {
    let config = Arc::new(config);
    let replies = Arc::new(session::Replies::default());
    let registry = Arc::new(Registry::default());
    let slots = Arc::new(Semaphore::new(config.max_connections));
    let per_peer = PeerCounts::default();
    let sessions = TaskTracker::new();
    let (tls_listener, tls_settings) = listeners.tls.unzip();
    loop {
        let (accepted, tls) = tokio::select! {
            () = config.shutdown.cancelled() => break,
            accepted = accept(listeners.plain.as_ref()) => (accepted, None),
            accepted = accept(tls_listener.as_ref()) => {
                // The settings in force now, for this connection's whole life.
                let settings = tls_settings.as_ref().map(|s| TlsAcceptor::from(s.borrow().clone()));
                (accepted, settings)
            }
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
        let Some(peer_slot) = per_peer.take(peer.ip(), config.max_connections_per_peer) else {
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
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(%peer, error = %e, "could not set TCP_NODELAY");
        }
        let (broker, config, replies, registry) = (
            broker.clone(),
            config.clone(),
            replies.clone(),
            registry.clone(),
        );
        let span = if tls.is_some() {
            tracing::info_span!("amqps", %peer)
        } else {
            tracing::info_span!("amqp", %peer)
        };
        // Everything logged for this connection (its channels, consumers and
        // publishers included) names it.
        sessions.spawn(
            async move {
                let socket = match tls {
                    None => Some(Socket::Tcp(stream)),
                    Some(acceptor) => handshake(&acceptor, stream, &config).await,
                };
                if let Some(socket) = socket {
                    session::run(socket, peer, broker, config, replies, registry).await;
                }
                drop((slot, peer_slot));
            }
            .instrument(span),
        );
    }
    sessions.close();
    let _ = tokio::time::timeout(Duration::from_secs(5), sessions.wait()).await;
}

/// The server side of a TLS handshake, within `handshake_timeout` and until the
/// broker shuts down; `None` (logged, the socket closed) when it does not complete.
async fn handshake(
    acceptor: &TlsAcceptor,
    stream: TcpStream,
    config: &AmqpConfig,
) -> Option<Socket> {
    let accepting = tokio::time::timeout(config.handshake_timeout, acceptor.accept(stream));
    let outcome = tokio::select! {
        outcome = accepting => outcome,
        () = config.shutdown.cancelled() => return None,
    };
    match outcome {
        Ok(Ok(stream)) => Some(Socket::Tls(Box::new(stream))),
        // A client that does not trust the certificate, presents none where one is
        // required, or speaks plain AMQP or anything else to the TLS port.
        Ok(Err(e)) => {
            tracing::info!(error = %e, "AMQP TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::info!(
                timeout_ms = config.handshake_timeout.as_millis(),
                "AMQP TLS handshake did not complete in time; closing"
            );
            None
        }
    }
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
