//! The listeners: accept connections (plain and TLS) up to `max_connections`,
//! and `max_connections_per_peer` from one address, and run a session for each; a
//! TLS handshake runs in the connection's task, within `handshake_timeout`, never
//! in the accept loop.

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

use crate::config::KafkaConfig;
use crate::session;
use crate::state::Shared;

/// The current TLS settings of a listener (new ones arrive on a certificate
/// reload; each connection keeps those in force when it was accepted).
pub type TlsSettings = watch::Receiver<Arc<ServerConfig>>;

/// Where the Kafka front end listens: plain (9092 by convention), TLS, or both;
/// they share one connection cap and one per-address cap.
#[derive(Default)]
pub struct Listeners {
    /// Plain Kafka.
    pub plain: Option<TcpListener>,
    /// Kafka over TLS and its settings.
    pub tls: Option<(TcpListener, TlsSettings)>,
}

async fn accept(
    listener: Option<&TcpListener>,
) -> std::io::Result<(TcpStream, std::net::SocketAddr)> {
    match listener {
        Some(listener) => listener.accept().await,
        None => std::future::pending().await,
    }
}

/// Accepts connections until `config.shutdown`, then waits (up to 5 s) for the
/// sessions to end.
pub async fn serve_listeners(listeners: Listeners, broker: Broker, config: KafkaConfig) {
    let config = Arc::new(config);
    let slots = Arc::new(Semaphore::new(config.max_connections));
    let per_peer = PeerCounts::default();
    let sessions = TaskTracker::new();
    let shared = Arc::new(Shared::new(&config));
    // Sessions that ran out and rebalances past their deadline, a few times a second.
    let ticking = tokio::spawn({
        let (shared, shutdown) = (shared.clone(), config.shutdown.clone());
        async move {
            let mut every = tokio::time::interval(Duration::from_millis(200));
            while tokio::select! {
                _ = every.tick() => true,
                () = shutdown.cancelled() => false,
            } {
                shared.coordinator.tick(std::time::Instant::now());
            }
        }
    });
    let (tls_listener, tls_settings) = listeners.tls.unzip();
    loop {
        let (accepted, tls) = tokio::select! {
            () = config.shutdown.cancelled() => break,
            accepted = accept(listeners.plain.as_ref()) => (accepted, None),
            accepted = accept(tls_listener.as_ref()) => {
                let settings = tls_settings.as_ref().map(|s| TlsAcceptor::from(s.borrow().clone()));
                (accepted, settings)
            }
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                tracing::warn!(error = %e, "accepting a Kafka connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, limit = config.max_connections, "Kafka connection refused: too many connections");
            continue;
        };
        let Some(peer_slot) = per_peer.take(peer.ip(), config.max_connections_per_peer) else {
            tracing::warn!(%peer, limit = config.max_connections_per_peer, "Kafka connection refused: too many connections from this address");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let Ok(local) = stream.local_addr() else {
            continue;
        };
        let (broker, config, shared) = (broker.clone(), config.clone(), shared.clone());
        let span = tracing::info_span!("kafka", %peer);
        sessions.spawn(
            async move {
                match tls {
                    None => session::run(stream, (peer, local), broker, config, shared).await,
                    Some(acceptor) => {
                        let accepting =
                            tokio::time::timeout(config.handshake_timeout, acceptor.accept(stream));
                        let accepted = tokio::select! {
                            accepted = accepting => accepted,
                            () = config.shutdown.cancelled() => return,
                        };
                        match accepted {
                            Ok(Ok(stream)) => {
                                session::run(stream, (peer, local), broker, config, shared).await;
                            }
                            Ok(Err(e)) => tracing::info!(error = %e, "Kafka TLS handshake failed"),
                            Err(_) => tracing::info!(
                                "Kafka TLS handshake did not complete in time; closing"
                            ),
                        }
                    }
                }
                drop((slot, peer_slot));
            }
            .instrument(span),
        );
    }
    sessions.close();
    ticking.abort();
    let _ = tokio::time::timeout(Duration::from_secs(5), sessions.wait()).await;
}
