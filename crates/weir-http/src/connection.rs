//! One HTTP connection: what it is doing ([`Phase`]), the timeouts that follow from
//! that, and the task that drives hyper on it.
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
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::http::{Request, Response, header};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::body::{BodySettings, RequestBody, ResponseBody};

/// The connection timeouts (see [`crate::HttpConfig`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Timeouts {
    /// A whole request head must arrive within this.
    pub(crate) header_read: Duration,
    /// A keep-alive connection may wait this long for its next request.
    pub(crate) idle: Duration,
    /// A write may wait this long for the client to take bytes.
    pub(crate) write: Duration,
}

/// What a connection is doing. Stored in an `AtomicU8`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Phase {
    /// Accepted, no byte of its first request yet: the header timeout runs from
    /// the accept (nginx's rule), so a connection that never sends is closed then.
    Fresh = 0,
    /// Answered at least one request, no byte of the next yet: the idle timeout.
    Idle = 1,
    /// Bytes of a request head arrived, the head is not complete: the header
    /// timeout.
    Head = 2,
    /// A request is being served (its body read, its handler run, its answer
    /// written, or its refused body drained): only the write timeout applies.
    Busy = 3,
    /// Chosen to be closed to make room for a new connection.
    Reclaimed = 4,
}

impl Phase {
    fn from_u8(v: u8) -> Phase {
        match v {
            0 => Phase::Fresh,
            1 => Phase::Idle,
            2 => Phase::Head,
            3 => Phase::Busy,
            _ => Phase::Reclaimed,
        }
    }
}

/// A clock in milliseconds since the server started, so instants fit in atomics.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Clock {
    epoch: Instant,
}

impl Clock {
    pub(crate) fn new() -> Clock {
        Clock {
            epoch: Instant::now(),
        }
    }

    pub(crate) fn now_ms(self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn instant(self, ms: u64) -> Instant {
        self.epoch + Duration::from_millis(ms)
    }
}

/// A connection's state, shared by its socket wrapper, its service, its request
/// tokens, its task and the server's registry (which reclaims idle connections).
/// Only atomics: every section is a load or a compare-and-swap.
pub(crate) struct ConnectionState {
    /// The [`Phase`].
    phase: AtomicU8,
    /// When the phase began ([`Clock`] ms); for `Head` after `Fresh`, the accept.
    since_ms: AtomicU64,
    /// When a write began to wait for the client, plus one ([`Clock`] ms); 0 when
    /// no write waits.
    write_stalled_ms: AtomicU64,
    /// Requests begun and not finished (0 or 1 in HTTP/1, which serves one at a
    /// time; counted in case hyper overlaps the end of one with the next).
    in_flight: AtomicUsize,
    /// Wakes the connection's task when its deadline may have moved earlier.
    wake: Notify,
    clock: Clock,
}

impl ConnectionState {
    pub(crate) fn new(clock: Clock) -> ConnectionState {
        ConnectionState {
            phase: AtomicU8::new(Phase::Fresh as u8),
            since_ms: AtomicU64::new(clock.now_ms()),
            write_stalled_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            wake: Notify::new(),
            clock,
        }
    }

    pub(crate) fn phase(&self) -> Phase {
        Phase::from_u8(self.phase.load(Ordering::Acquire))
    }

    pub(crate) fn since_ms(&self) -> u64 {
        self.since_ms.load(Ordering::Acquire)
    }

    /// Moves from `from` to `to` if the connection is still in `from`.
    fn transition(&self, from: Phase, to: Phase) -> bool {
        self.phase
            .compare_exchange(from as u8, to as u8, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Bytes arrived from the client.
    pub(crate) fn bytes_read(&self) {
        match self.phase() {
            // The first request's header timeout runs from the accept.
            Phase::Fresh => {
                self.transition(Phase::Fresh, Phase::Head);
            }
            Phase::Idle => {
                self.since_ms.store(self.clock.now_ms(), Ordering::Release);
                if self.transition(Phase::Idle, Phase::Head) {
                    // The header timeout is usually shorter than what is left of
                    // the idle one.
                    self.wake.notify_one();
                }
            }
            Phase::Head | Phase::Busy | Phase::Reclaimed => {}
        }
    }

    /// A write could not go on because the client is not reading.
    fn write_stalled(&self) {
        if self.write_stalled_ms.load(Ordering::Relaxed) == 0 {
            self.write_stalled_ms
                .store(self.clock.now_ms() + 1, Ordering::Release);
            self.wake.notify_one();
        }
    }

    /// A write went through.
    fn write_moved(&self) {
        if self.write_stalled_ms.load(Ordering::Relaxed) != 0 {
            self.write_stalled_ms.store(0, Ordering::Release);
        }
    }

    /// Chooses this connection to be closed if it is still in `expected` (one of
    /// the phases in which no request is being served); true if it was.
    pub(crate) fn reclaim(&self, expected: Phase) -> bool {
        debug_assert!(matches!(expected, Phase::Fresh | Phase::Idle | Phase::Head));
        let done = self.transition(expected, Phase::Reclaimed);
        if done {
            self.wake.notify_one();
        }
        done
    }

    /// When the connection is to be closed unless its phase moves on.
    fn deadline(&self, timeouts: &Timeouts) -> Option<Instant> {
        let since = self.clock.instant(self.since_ms());
        match self.phase() {
            Phase::Fresh | Phase::Head => Some(since + timeouts.header_read),
            Phase::Idle => Some(since + timeouts.idle),
            Phase::Busy => match self.write_stalled_ms.load(Ordering::Acquire) {
                0 => None,
                stalled => Some(self.clock.instant(stalled - 1) + timeouts.write),
            },
            Phase::Reclaimed => Some(self.clock.instant(0)),
        }
    }

    /// Why the connection is closed at `deadline`, if it is past.
    fn expired(&self, timeouts: &Timeouts) -> Option<&'static str> {
        let deadline = self.deadline(timeouts)?;
        if deadline > Instant::now() {
            return None;
        }
        Some(match self.phase() {
            Phase::Fresh | Phase::Head => "header read timeout",
            Phase::Idle => "idle timeout",
            Phase::Busy => "write timeout",
            Phase::Reclaimed => "closed to make room for a new connection",
        })
    }
}

/// A request being served. Held by the request body, the handler's future and the
/// answer's body; when the last holder drops it, the connection is idle again.
pub(crate) struct InFlight {
    connection: Arc<ConnectionState>,
}

impl InFlight {
    pub(crate) fn begin(connection: &Arc<ConnectionState>) -> InFlight {
        connection.in_flight.fetch_add(1, Ordering::AcqRel);
        // A reclaimed connection stays reclaimed: its task is closing it.
        let _ = connection
            .phase
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |p| {
                (p != Phase::Reclaimed as u8).then_some(Phase::Busy as u8)
            });
        InFlight {
            connection: Arc::clone(connection),
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let c = &self.connection;
        if c.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            c.since_ms.store(c.clock.now_ms(), Ordering::Release);
            if c.transition(Phase::Busy, Phase::Idle) {
                c.wake.notify_one();
            }
        }
    }
}

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
}

impl hyper::service::Service<Request<Incoming>> for Service {
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
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

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
