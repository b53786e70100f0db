//! What every handler shares: the application state ([`AppState`]), the result
//! type, the alarm check that guards writes, and the JSON answer helper. A leaf
//! module: the extractors and both route files use it, it uses none of them.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{FromRef, FromRequestParts};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use tokio::sync::{Semaphore, watch};
use weir_broker::{Alarms, Broker};

use crate::error::ApiError;

pub(crate) type ApiResult = Result<Response, ApiError>;

/// What the handlers share. Handlers that need only the broker take
/// `State<Broker>` ([`FromRef`]).
#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) broker: Broker,
    /// Largest request body, bytes (`[http] max_body_bytes`).
    pub(crate) max_body_bytes: u64,
    /// One permit per receive waiting in a long poll (`[http] max_long_polls`).
    pub(crate) long_polls: LongPolls,
    /// The broker's resource alarms: sends are refused while one is raised.
    pub(crate) alarms: watch::Receiver<Alarms>,
    /// Host, origin and login checks ([`crate::auth`]).
    pub(crate) guard: Arc<Guard>,
    /// Requests answered, for metrics ([`crate::request_counts`]).
    pub(crate) requests: Arc<crate::request_counts::Requests>,
    /// The dashboard's sessions and live figures ([`crate::dashboard`]).
    pub(crate) dashboard: Arc<crate::dashboard::store::Dashboard>,
}

impl FromRef<AppState> for Broker {
    fn from_ref(state: &AppState) -> Broker {
        state.broker.clone()
    }
}

/// What the request guard ([`crate::auth`]) needs from the configuration.
#[derive(Debug)]
pub(crate) struct Guard {
    /// `[http] allowed_hosts`, lower case.
    pub(crate) allowed_hosts: Vec<String>,
    pub(crate) any_host: bool,
    pub(crate) failed_login_delay: Duration,
}

impl Guard {
    pub(crate) fn new(allowed_hosts: &[String], failed_login_delay_ms: u64) -> Guard {
        Guard {
            allowed_hosts: allowed_hosts
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
            any_host: allowed_hosts.iter().any(|h| h == "*"),
            failed_login_delay: Duration::from_millis(failed_login_delay_ms),
        }
    }
}

/// The long-poll cap: permits, and how many there are (for the refusal's reason).
#[derive(Clone)]
pub(crate) struct LongPolls {
    pub(crate) permits: Arc<Semaphore>,
    pub(crate) max: u32,
}

/// A request's place among the long polls (see [`LongPolls::hold`]).
pub(crate) struct LongPoll {
    /// How long the request may wait: what it asked, or 0 over the cap.
    pub(crate) wait_ms: u64,
    /// It asked to wait, and the cap was reached: it is served at once.
    over_cap: bool,
    /// Held while it waits; dropped with the request if the client hangs up.
    _permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl LongPolls {
    /// A request that asks to wait `wait_ms` takes one of the permits; over the cap
    /// it is served at once instead (what is there now). An out-of-range wait takes
    /// none: the broker refuses it with its 400.
    pub(crate) fn hold(&self, wait_ms: u64, max_wait_ms: u64) -> LongPoll {
        if wait_ms == 0 || wait_ms > max_wait_ms {
            return LongPoll {
                wait_ms,
                over_cap: false,
                _permit: None,
            };
        }
        match Arc::clone(&self.permits).try_acquire_owned() {
            Ok(permit) => LongPoll {
                wait_ms,
                over_cap: false,
                _permit: Some(permit),
            },
            Err(_) => LongPoll {
                wait_ms: 0,
                over_cap: true,
                _permit: None,
            },
        }
    }

    /// 429 with `Retry-After` for a request over the cap that found nothing: an
    /// empty answer at once would send a client that relies on the wait to pace
    /// itself into a tight loop. `what` names the requests and what was missing.
    pub(crate) fn refusal(
        &self,
        poll: &LongPoll,
        found_nothing: bool,
        what: &str,
    ) -> Option<ApiError> {
        (poll.over_cap && found_nothing).then(|| {
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_long_polls",
                format!("{} {what}; retry later", self.max),
            )
            .retry_after(LONG_POLL_RETRY_AFTER_S)
        })
    }
}

impl FromRef<AppState> for LongPolls {
    fn from_ref(state: &AppState) -> LongPolls {
        state.long_polls.clone()
    }
}

/// Seconds a send refused by an alarm is told to wait. The alarms are checked once
/// a second, and space or memory comes back as consumers take messages, which
/// takes longer than a second.
const ALARM_RETRY_AFTER_S: u32 = 5;

/// Seconds a long poll over the cap is told to wait: a slot frees as soon as any
/// waiting receive is answered.
pub(crate) const LONG_POLL_RETRY_AFTER_S: u32 = 1;

/// The refusal of a send while `alarms` has one raised: 503 with `Retry-After`
/// (not 507: the alarm passes by itself, and retry logic knows 503 and its
/// `Retry-After`; see docs/http-api.md).
pub(crate) fn alarm_refusal(alarms: Alarms) -> Option<ApiError> {
    let reason = alarms.reason()?;
    Some(
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "resource_alarm",
            format!(
                "the broker is {reason}: sends and publishes are refused until the alarm \
                 clears (receiving, acking, purging and deleting go on and free space); \
                 retry later"
            ),
        )
        .retry_after(ALARM_RETRY_AFTER_S),
    )
}

/// An extractor that refuses the request while a resource alarm is raised. It
/// comes before the body extractor in a handler's arguments, so a refused body is
/// not read (it is drained after the answer).
pub(crate) struct WritesAllowed;

impl FromRequestParts<AppState> for WritesAllowed {
    type Rejection = ApiError;

    async fn from_request_parts(_: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let alarms = *state.alarms.borrow();
        match alarm_refusal(alarms) {
            Some(refusal) => Err(refusal),
            None => Ok(WritesAllowed),
        }
    }
}

#[allow(clippy::unnecessary_wraps)] // handlers end with `ok(..)` or `?`
pub(crate) fn ok(status: StatusCode, body: Value) -> ApiResult {
    Ok((status, Json(body)).into_response())
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;
    use weir_broker::Alarms;

    use super::alarm_refusal;

    #[test]
    fn either_alarm_refuses_sends_with_503_and_retry_after() {
        assert!(alarm_refusal(Alarms::default()).is_none());
        let refusal = alarm_refusal(Alarms {
            disk: false,
            memory: true,
        })
        .expect("refused");
        assert_eq!(refusal.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(refusal.code, "resource_alarm");
        assert!(
            refusal.reason.contains("low on memory"),
            "{}",
            refusal.reason
        );
        assert_eq!(refusal.retry_after_s, Some(5));
    }
}
