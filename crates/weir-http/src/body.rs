//! Request and answer bodies as the server hands them to the router.
//!
//! [`RequestBody`] fails a read that waits longer than the body-read timeout (the
//! handler answers 408), and when it is dropped before its end (a 413, or an
//! endpoint that ignores bodies) it drains the rest in a task of its own, bounded in
//! bytes and time. Without that drain hyper closes the connection as soon as the
//! answer is written, and a client that writes its whole body before it reads
//! (Python's `http.client`, `urllib`, `requests`) gets `BrokenPipeError` instead of
//! the answer. [`ResponseBody`] holds the request's [`InFlight`] token until hyper
//! has written the answer.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

use crate::phase::InFlight;

/// How request bodies are read and drained (see [`crate::HttpConfig`]).
#[derive(Clone, Debug)]
pub(crate) struct BodySettings {
    /// Longest wait for the next bytes of a body.
    pub(crate) read_timeout: Duration,
    /// Most bytes drained after the answer.
    pub(crate) max_drain_bytes: u64,
    /// Longest drain.
    pub(crate) drain_timeout: Duration,
}

/// Why a request body could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BodyError {
    /// No bytes came for the body-read timeout.
    #[error("no bytes of the request body arrived for {} ms", .0.as_millis())]
    Timeout(Duration),
    /// The connection failed (closed early, bad chunked encoding).
    #[error(transparent)]
    Read(#[from] hyper::Error),
}

/// How far a [`RequestBody`] has been read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Progress {
    /// Not read at all yet.
    Unread,
    /// Read, but not to its end.
    Reading,
    /// The end, an error or the timeout was reached: nothing to drain.
    Finished,
}

/// A request's body, with the body-read timeout and the drain on drop.
pub(crate) struct RequestBody {
    /// `None` once moved into a drain.
    inner: Option<Incoming>,
    in_flight: Arc<InFlight>,
    settings: Arc<BodySettings>,
    /// The client sent `Expect: 100-continue`: until the body is first read hyper
    /// has not sent `100 Continue`, so the client has not sent the body either.
    expect_continue: bool,
    /// How far the body has been read.
    progress: Progress,
    /// The body-read timeout, while a read waits.
    timer: Option<Pin<Box<Sleep>>>,
    /// `timer` is set for the current wait (reset after each frame).
    timer_armed: bool,
}

impl RequestBody {
    pub(crate) fn new(
        inner: Incoming,
        in_flight: Arc<InFlight>,
        settings: Arc<BodySettings>,
        expect_continue: bool,
    ) -> RequestBody {
        RequestBody {
            inner: Some(inner),
            in_flight,
            settings,
            expect_continue,
            progress: Progress::Unread,
            timer: None,
            timer_armed: false,
        }
    }
}

impl http_body::Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        if this.progress == Progress::Finished {
            return Poll::Ready(None);
        }
        this.progress = Progress::Reading;
        match Pin::new(inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.timer_armed = false;
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.progress = Progress::Finished;
                Poll::Ready(Some(Err(BodyError::Read(e))))
            }
            Poll::Ready(None) => {
                this.progress = Progress::Finished;
                Poll::Ready(None)
            }
            Poll::Pending => {
                let timeout = this.settings.read_timeout;
                if !this.timer_armed {
                    let deadline = Instant::now() + timeout;
                    match this.timer.as_mut() {
                        Some(timer) => timer.as_mut().reset(deadline),
                        None => this.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
                    }
                    this.timer_armed = true;
                }
                if let Some(timer) = this.timer.as_mut()
                    && timer.as_mut().poll(cx).is_ready()
                {
                    this.progress = Progress::Finished;
                    return Poll::Ready(Some(Err(BodyError::Timeout(timeout))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.progress == Progress::Finished
            || self
                .inner
                .as_ref()
                .is_none_or(http_body::Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), http_body::Body::size_hint)
    }
}

impl Drop for RequestBody {
    fn drop(&mut self) {
        let Some(inner) = self.inner.take() else {
            return;
        };
        if self.progress == Progress::Finished || http_body::Body::is_end_stream(&inner) {
            return;
        }
        // No `100 Continue` went out, so no body is coming: hyper skips it and
        // closes the connection after the answer, which such a client expects.
        if self.expect_continue && self.progress == Progress::Unread {
            return;
        }
        // A declared body that cannot be drained within the budget: better to close
        // after the answer at once than after reading it for nothing.
        if http_body::Body::size_hint(&inner).lower() > self.settings.max_drain_bytes {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(drain(
                inner,
                Arc::clone(&self.in_flight),
                Arc::clone(&self.settings),
            ));
        }
    }
}

/// Reads and throws away the rest of `body`, within the byte and time budgets and
/// the body-read timeout. Dropping `body` before its end makes hyper close the
/// connection after the answer; reaching the end keeps it alive.
async fn drain(mut body: Incoming, in_flight: Arc<InFlight>, settings: Arc<BodySettings>) {
    let deadline = Instant::now() + settings.drain_timeout;
    let mut left = settings.max_drain_bytes;
    loop {
        let wait = (Instant::now() + settings.read_timeout).min(deadline);
        match tokio::time::timeout_at(wait, body.frame()).await {
            Ok(Some(Ok(frame))) => {
                let len = frame.data_ref().map_or(0, |d| d.len() as u64);
                let Some(rest) = left.checked_sub(len) else {
                    tracing::debug!("refused request body is over max_drain_bytes; closing");
                    break;
                };
                left = rest;
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                tracing::debug!(error = %e, "refused request body failed while draining");
                break;
            }
            Err(_) => {
                tracing::debug!("refused request body drain timed out; closing");
                break;
            }
        }
    }
    drop(body);
    drop(in_flight);
}

/// An answer's body; the request ends when hyper drops it, after writing it.
pub(crate) struct ResponseBody {
    inner: Body,
    _in_flight: Arc<InFlight>,
}

impl ResponseBody {
    pub(crate) fn new(inner: Body, in_flight: Arc<InFlight>) -> ResponseBody {
        ResponseBody {
            inner,
            _in_flight: in_flight,
        }
    }
}

impl http_body::Body for ResponseBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
