//! The accept side: plain and TLS listeners, at most `max_connections` open
//! connections between them, `TCP_NODELAY` on each, accept errors (out of file
//! descriptors) backed off instead of spun on, and graceful shutdown. A TLS
//! handshake runs in the connection's task, as part of its first request head.
//!
//! **At the cap** a new connection is accepted and waits for a slot. To make one,
//! the server closes the connection that has waited longest for a request (an idle
//! keep-alive connection, or one that never sent a byte), as nginx does with its
//! keep-alive connections, once it has waited [`RECLAIM_WAITING_AFTER`]. Failing
//! that, it closes the connection that has been sending its request head longest,
//! once that has taken [`RECLAIM_HEAD_AFTER`] (a slowloris: a real client sends its
//! head in one packet). A request being served is never cut off. So a flood of idle
//! or half-sent connections delays a newcomer by seconds (at most
//! [`RECLAIM_HEAD_AFTER`], or the header timeout when that is shorter) rather than
//! locking it out; if every connection is serving a request, the newcomer waits
//! for one to finish.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;
use weir_broker::metrics::{FrontEnds, Held, Protocol};

use crate::auth::Addrs;
use crate::config::HttpConfig;
use crate::connection::{self, Io, Service};
use crate::phase::{Clock, ConnectionState, Phase, Timeouts};

/// How long a connection must have waited for a request before the server, at
/// its cap, may close it to make room. Not at once: a client that has just
/// connected, or that was just answered, is likely about to send.
pub(crate) const RECLAIM_WAITING_AFTER: Duration = Duration::from_secs(1);

/// How long a request head must have been arriving before the server, at its
/// cap, may close it to make room.
pub(crate) const RECLAIM_HEAD_AFTER: Duration = Duration::from_secs(5);

/// How often a server at its cap looks again for a connection to close, when none
/// could be closed (every connection is serving a request).
const RECLAIM_RETRY: Duration = Duration::from_millis(25);

/// The open connections, for reclaiming. Locked only to insert, remove and scan
/// (no `.await` under the lock); the scan runs only at the cap.
#[derive(Default)]
struct Registry {
    connections: Mutex<HashMap<u64, Arc<ConnectionState>>>,
}

impl Registry {
    fn insert(&self, id: u64, state: Arc<ConnectionState>) {
        self.lock().insert(id, state);
    }

    fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<ConnectionState>>> {
        // The map stays consistent whatever panicked while it was held.
        self.connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Closes one connection to make room (see the module doc); true if one was
    /// chosen.
    fn reclaim_one(&self, now_ms: u64, after: ReclaimAfter) -> bool {
        let connections = self.lock();
        // Lowest (rank, since, id) first; ties in the same millisecond go to the
        // connection accepted first.
        let mut best: Option<(ReclaimKey, &Arc<ConnectionState>, Phase)> = None;
        for (&id, state) in connections.iter() {
            let phase = state.phase();
            let since = state.since_ms();
            let waited = now_ms.saturating_sub(since);
            let rank = match phase {
                Phase::Idle | Phase::Fresh if waited >= after.waiting_ms => 0,
                Phase::Head if waited >= after.head_ms => 1,
                _ => continue,
            };
            let key = (rank, since, id);
            if best.is_none_or(|(best_key, _, _)| key < best_key) {
                best = Some((key, state, phase));
            }
        }
        best.is_some_and(|(_, state, phase)| state.reclaim(phase))
    }
}

/// A reclaim candidate's order: its rank (waiting before sending a head), since
/// when, and its accept order.
type ReclaimKey = (u8, u64, u64);

/// When connections become candidates for reclaiming, in [`Clock`] ms.
#[derive(Clone, Copy, Debug)]
struct ReclaimAfter {
    /// Waiting for a request (`Fresh`, `Idle`).
    waiting_ms: u64,
    /// Sending a request head (`Head`).
    head_ms: u64,
}

impl ReclaimAfter {
    fn new(header_read_timeout: Duration) -> ReclaimAfter {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        ReclaimAfter {
            waiting_ms: ms(RECLAIM_WAITING_AFTER),
            head_ms: ms(RECLAIM_HEAD_AFTER.min(header_read_timeout)),
        }
    }
}

/// Removes a connection from the registry when its task ends, however it ends.
struct Registered {
    registry: Arc<Registry>,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.registry.remove(self.id);
    }
}

/// The current TLS settings of a listener; see [`Listeners`].
pub type TlsSettings = watch::Receiver<Arc<ServerConfig>>;

/// Where the HTTP front end listens: a plain listener, a TLS one, or both. Both
/// share one connection cap. The binary sends new TLS settings when the
/// certificates are reloaded (SIGHUP); each connection takes those in force when it
/// is accepted, so open connections keep theirs.
#[derive(Default)]
pub struct Listeners {
    /// Plain HTTP.
    pub plain: Option<TcpListener>,
    /// HTTPS and its settings.
    pub tls: Option<(TcpListener, TlsSettings)>,
}

/// The next connection on `listener`; never, without one.
async fn accept(listener: Option<&TcpListener>) -> std::io::Result<(TcpStream, SocketAddr)> {
    match listener {
        Some(listener) => listener.accept().await,
        None => std::future::pending().await,
    }
}

pub(crate) async fn serve(
    listeners: Listeners,
    router: Router,
    config: &HttpConfig,
    front_ends: Arc<FrontEnds>,
    shutdown: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(
        usize::try_from(config.max_connections)
            .unwrap_or(usize::MAX)
            .max(1),
    ));
    let registry = Arc::new(Registry::default());
    let tracker = TaskTracker::new();
    let clock = Clock::new();
    let timeouts = config.timeouts();
    let reclaim_after = ReclaimAfter::new(timeouts.header_read);
    let body = Arc::new(config.body_settings());
    let Listeners { plain, tls } = listeners;
    let (tls_listener, tls_settings) = tls.unzip();
    let mut next_id = 0u64;
    let mut backoff = Duration::from_millis(5);
    loop {
        let (accepted, tls) = tokio::select! {
            accepted = accept(plain.as_ref()) => (accepted, None),
            accepted = accept(tls_listener.as_ref()) => {
                // The settings in force now, for this connection's whole life.
                let settings = tls_settings.as_ref().map(|s| TlsAcceptor::from(s.borrow().clone()));
                (accepted, settings)
            }
            () = shutdown.cancelled() => break,
        };
        let (stream, peer) = match accepted {
            Ok((stream, peer)) => {
                backoff = Duration::from_millis(5);
                (stream, peer)
            }
            Err(e) => {
                tracing::warn!(error = %e, "HTTP accept failed; backing off");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = shutdown.cancelled() => break,
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let Some(permit) = slot(&permits, &registry, clock, reclaim_after, &shutdown).await else {
            break;
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
        let counted = front_ends.track(Protocol::Http, Held::Connection);
        let state = Arc::new(ConnectionState::new(clock));
        next_id += 1;
        registry.insert(next_id, Arc::clone(&state));
        let registered = Registered {
            registry: Arc::clone(&registry),
            id: next_id,
        };
        let Ok(local) = stream.local_addr() else {
            continue; // the socket is already gone
        };
        let service = Service {
            router: router.clone(),
            state: Arc::clone(&state),
            body: Arc::clone(&body),
            addrs: Addrs {
                peer,
                local,
                tls: tls.is_some(),
            },
        };
        let shutdown = shutdown.clone();
        // Everything logged while serving this connection names it.
        let span = if tls.is_some() {
            tracing::info_span!("https", %peer, connection = next_id)
        } else {
            tracing::info_span!("http", %peer, connection = next_id)
        };
        tracker.spawn(
            async move {
                match tls {
                    None => {
                        connection::drive(Io::new(stream, state), service, timeouts, shutdown)
                            .await;
                    }
                    Some(acceptor) => {
                        if let Some(stream) =
                            handshake(&acceptor, stream, &state, &timeouts, &shutdown).await
                        {
                            connection::drive(Io::new(stream, state), service, timeouts, shutdown)
                                .await;
                        }
                    }
                }
                drop(registered);
                drop(counted);
                drop(permit);
            }
            .instrument(span),
        );
    }
    // Stop accepting (the listeners close), then wait for the connections: those
    // between requests close at once, the others after their answer.
    drop((plain, tls_listener));
    tracker.close();
    tracker.wait().await;
}

/// The server side of a TLS handshake. It is part of the connection's first request
/// head: it ends at the header timeout (counted from the accept), a server at its
/// cap may reclaim the connection meanwhile (it is `Fresh`), and shutdown stops it.
/// `None` (logged, the socket closed) when it does not complete.
async fn handshake(
    acceptor: &TlsAcceptor,
    stream: TcpStream,
    state: &ConnectionState,
    timeouts: &Timeouts,
    shutdown: &CancellationToken,
) -> Option<TlsStream<TcpStream>> {
    let accepting = acceptor.accept(stream);
    tokio::pin!(accepting);
    loop {
        let deadline = state.deadline(timeouts);
        tokio::select! {
            accepted = &mut accepting => match accepted {
                Ok(stream) => return Some(stream),
                // A client that does not trust the certificate, presents none where
                // one is required, or speaks plain HTTP or anything else.
                Err(e) => {
                    tracing::info!(error = %e, "HTTPS TLS handshake failed");
                    return None;
                }
            },
            // Deadlines only move later without a wake-up (see `connection::drive`).
            () = connection::sleep_until(deadline) => {
                if let Some(why) = state.expired(timeouts) {
                    tracing::info!(why, "HTTPS TLS handshake did not complete; closing");
                    return None;
                }
            }
            () = state.wake.notified() => {}
            () = shutdown.cancelled() => return None,
        }
    }
}

/// A connection slot: at once if one is free, else after closing a connection to
/// make room (or after one closes by itself). `None` on shutdown.
async fn slot(
    permits: &Arc<Semaphore>,
    registry: &Registry,
    clock: Clock,
    after: ReclaimAfter,
    shutdown: &CancellationToken,
) -> Option<OwnedSemaphorePermit> {
    if let Ok(permit) = Arc::clone(permits).try_acquire_owned() {
        return Some(permit);
    }
    loop {
        let reclaimed = registry.reclaim_one(clock.now_ms(), after);
        if reclaimed {
            tracing::debug!("HTTP connection cap reached: closed a waiting connection");
        }
        // After a reclaim its slot comes back within moments; the timeout is only
        // a fallback in case that connection started a request meanwhile.
        let wait = if reclaimed {
            Duration::from_secs(1)
        } else {
            RECLAIM_RETRY
        };
        tokio::select! {
            permit = Arc::clone(permits).acquire_owned() => {
                return Some(permit.expect("invariant: the semaphore is never closed"));
            }
            () = tokio::time::sleep(wait) => {}
            () = shutdown.cancelled() => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phase::InFlight;

    #[tokio::test(start_paused = true)]
    async fn the_longest_waiting_go_first_then_slow_heads_and_requests_never() {
        let clock = Clock::new();
        let registry = Registry::default();
        let add = |id| {
            let state = Arc::new(ConnectionState::new(clock));
            registry.insert(id, Arc::clone(&state));
            state
        };
        let after = ReclaimAfter::new(Duration::from_secs(30));
        let reclaim = || registry.reclaim_one(clock.now_ms(), after);
        let head = add(1);
        head.bytes_read();
        let busy = add(2);
        let _serving = InFlight::begin(&busy);
        let idle = add(3);
        let answered = InFlight::begin(&idle);
        tokio::time::advance(Duration::from_millis(500)).await;
        drop(answered);
        tokio::time::advance(Duration::from_millis(200)).await;
        let fresh = add(4);
        assert!(!reclaim(), "nothing has waited long enough");
        tokio::time::advance(Duration::from_millis(1300)).await;
        // Idle for 1.5 s, fresh for 1.3 s: the longest-waiting first.
        assert!(reclaim());
        assert_eq!(idle.phase(), Phase::Reclaimed);
        assert_eq!(fresh.phase(), Phase::Fresh);
        registry.remove(3);
        assert!(reclaim());
        assert_eq!(fresh.phase(), Phase::Reclaimed);
        registry.remove(4);
        // The head has been arriving for 2 s: not yet.
        assert!(!reclaim());
        tokio::time::advance(Duration::from_secs(3)).await;
        assert!(reclaim());
        assert_eq!(head.phase(), Phase::Reclaimed);
        registry.remove(1);
        assert!(!reclaim(), "a connection serving a request is never closed");
        assert_eq!(busy.phase(), Phase::Busy);
    }
}
