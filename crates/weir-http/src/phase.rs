//! What one HTTP connection is doing ([`Phase`]), its shared state
//! ([`ConnectionState`]), the timeouts that follow from the phase ([`Timeouts`]),
//! and the [`InFlight`] token a request holds while it is served (the request body,
//! the handler and the answer's body each hold it). A leaf module: the connection
//! task (`connection`) and the bodies (`body`) both build on it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

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
    pub(crate) wake: Notify,
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
    pub(crate) fn write_stalled(&self) {
        if self.write_stalled_ms.load(Ordering::Relaxed) == 0 {
            self.write_stalled_ms
                .store(self.clock.now_ms() + 1, Ordering::Release);
            self.wake.notify_one();
        }
    }

    /// A write went through.
    pub(crate) fn write_moved(&self) {
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
    pub(crate) fn deadline(&self, timeouts: &Timeouts) -> Option<Instant> {
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
    pub(crate) fn expired(&self, timeouts: &Timeouts) -> Option<&'static str> {
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
