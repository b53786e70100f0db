//! One HTTP connection: the task that drives hyper on it ([`drive`]), the socket
//! wrapper ([`Io`]) and the service ([`Service`]). What the connection is doing
//! ([`Phase`]) and the timeouts that follow from it live in [`crate::phase`].
//!
//! hyper's own `header_read_timeout` runs from the moment a connection is ready for
//! a request, so it cannot tell an idle keep-alive connection from a slowloris, and
//! hyper has no idle or write timeout. So the phase is tracked here instead: the
//! socket wrapper ([`Io`]) sees the first bytes of a request arrive and writes stall,
//! the service ([`Service`]) sees a request begin, and an [`InFlight`] token, held
//! by the request body, the answer's body and the handler, sees it end. The task
//! ([`drive`]) sleeps until the deadline of the current phase and closes the
//! connection if the phase has not moved on by then.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::Router;
use axum::http::{Request, Response, header};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::auth::Addrs;
use crate::body::{BodySettings, RequestBody, ResponseBody};
use crate::phase::{ConnectionState, InFlight, Phase, Timeouts};

/// The socket, reporting reads and stalled writes to the connection's state.
/// Generic over the stream so the fuzz target (`crate::fuzzing`) drives the same
/// connection over an in-memory pipe.
pub(crate) struct Io<S = TcpStream> {
    stream: S,
    state: Arc<ConnectionState>,
}

impl<S> Io<S> {
    pub(crate) fn new(stream: S, state: Arc<ConnectionState>) -> Io<S> {
        Io { stream, state }
    }

    fn track_write<T>(&self, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match poll {
            Poll::Pending => self.state.write_stalled(),
            Poll::Ready(_) => self.state.write_moved(),
        }
        poll
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Io<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.stream).poll_read(cx, buf);
        if matches!(poll, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.state.bytes_read();
        }
        poll
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Io<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.track_write(poll)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.stream).poll_flush(cx);
        self.track_write(poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.track_write(poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// hyper's service for one connection: wraps the request body (timeouts, drain)
/// and the answer's body (end of the request), and calls the router.
#[derive(Clone)]
pub(crate) struct Service {
    pub(crate) router: Router,
    pub(crate) state: Arc<ConnectionState>,
    pub(crate) body: Arc<BodySettings>,
    /// The connection's two ends, for the login's loopback check and the Host check.
    pub(crate) addrs: Addrs,
}

impl hyper::service::Service<Request<Incoming>> for Service {
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, mut request: Request<Incoming>) -> Self::Future {
        request.extensions_mut().insert(self.addrs);
        crate::vhost_paths::rewrite(&mut request);
        let in_flight = Arc::new(InFlight::begin(&self.state));
        let expect_continue = request
            .headers()
            .get(header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        let request = request.map(|incoming| {
            RequestBody::new(
                incoming,
                Arc::clone(&in_flight),
                Arc::clone(&self.body),
                expect_continue,
            )
        });
        let mut router = self.router.clone();
        Box::pin(async move {
            // The router is always ready (`poll_ready` is a constant `Ready`).
            let Ok(response) = tower_service::Service::call(&mut router, request).await;
            Ok(response.map(|body| ResponseBody::new(body, in_flight)))
        })
    }
}

/// Serves one connection until it closes, a timeout closes it, the server reclaims
/// it, or `shutdown` (then: closed at once unless a request is being served, which
/// is finished first).
pub(crate) async fn drive<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    io: Io<S>,
    service: Service,
    timeouts: Timeouts,
    shutdown: CancellationToken,
) {
    let state = Arc::clone(&service.state);
    let mut builder = hyper::server::conn::http1::Builder::new();
    // The header timeout is enforced here (see the module doc), not by hyper.
    builder.header_read_timeout(None).keep_alive(true);
    let connection = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    let mut stopping = false;
    loop {
        let deadline = state.deadline(&timeouts);
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "HTTP connection ended with an error");
                }
                return;
            }
            // Deadlines only move later without a wake-up; the check after the
            // sleep tells whether this one still holds.
            () = sleep_until(deadline) => {
                if let Some(why) = state.expired(&timeouts) {
                    tracing::debug!(why, "closing HTTP connection");
                    return;
                }
            }
            () = state.wake.notified() => {}
            () = shutdown.cancelled(), if !stopping => {
                stopping = true;
                // hyper closes a connection between requests at once, and one in
                // the middle of a request after its answer. A request head that
                // is not complete has not been accepted yet: close it too.
                if matches!(state.phase(), Phase::Fresh | Phase::Head | Phase::Idle) {
                    return;
                }
                connection.as_mut().graceful_shutdown();
            }
        }
    }
}

/// Sleeps until `deadline`; forever without one.
pub(crate) async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phase::Clock;
    use std::time::Duration;

    fn timeouts() -> Timeouts {
        Timeouts {
            header_read: Duration::from_secs(30),
            idle: Duration::from_secs(75),
            write: Duration::from_secs(60),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn each_phase_has_its_deadline() {
        let t = timeouts();
        let state = Arc::new(ConnectionState::new(Clock::new()));
        let start = Instant::now();
        // A fresh connection: the header timeout from the accept, and bytes do not
        // restart it.
        assert_eq!(state.deadline(&t), Some(start + t.header_read));
        tokio::time::advance(Duration::from_secs(10)).await;
        state.bytes_read();
        assert_eq!(state.phase(), Phase::Head);
        assert_eq!(state.deadline(&t), Some(start + t.header_read));
        // Serving: no deadline until a write stalls.
        let in_flight = InFlight::begin(&state);
        assert_eq!(state.phase(), Phase::Busy);
        state.bytes_read();
        assert_eq!(
            state.phase(),
            Phase::Busy,
            "body bytes are not a new request"
        );
        assert_eq!(state.deadline(&t), None);
        state.write_stalled();
        let stalled = Instant::now();
        assert_eq!(state.deadline(&t), Some(stalled + t.write));
        state.write_moved();
        assert_eq!(state.deadline(&t), None);
        // Answered: idle, then a new head has the header timeout from its first byte.
        tokio::time::advance(Duration::from_secs(1)).await;
        drop(in_flight);
        assert_eq!(state.phase(), Phase::Idle);
        assert_eq!(state.deadline(&t), Some(Instant::now() + t.idle));
        tokio::time::advance(Duration::from_secs(50)).await;
        assert_eq!(state.expired(&t), None);
        state.bytes_read();
        assert_eq!(state.phase(), Phase::Head);
        assert_eq!(state.deadline(&t), Some(Instant::now() + t.header_read));
        tokio::time::advance(t.header_read).await;
        assert_eq!(state.expired(&t), Some("header read timeout"));
    }

    #[tokio::test(start_paused = true)]
    async fn only_a_connection_between_requests_is_reclaimed() {
        let t = timeouts();
        let state = Arc::new(ConnectionState::new(Clock::new()));
        let in_flight = InFlight::begin(&state);
        assert!(!state.reclaim(Phase::Fresh), "it moved on to Busy");
        assert!(!state.reclaim(Phase::Idle));
        drop(in_flight);
        assert!(state.reclaim(Phase::Idle));
        assert_eq!(
            state.expired(&t),
            Some("closed to make room for a new connection")
        );
        // A request that races the reclaim does not revive the connection.
        let late = InFlight::begin(&state);
        assert_eq!(state.phase(), Phase::Reclaimed);
        drop(late);
        assert_eq!(state.phase(), Phase::Reclaimed);
    }
}
