//! Every HTTP error answer, in one place: a status and the JSON body
//! `{"error": "<stable code>", "reason": "<text>"}`.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use weir_broker::{BrokerError, StorageFailure};

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The stable code (`queue_not_found`).
    pub code: &'static str,
    /// Human text.
    pub reason: String,
    /// Extra fields merged into the body (per-receipt failures).
    pub extra: Option<Value>,
    /// Seconds for a `Retry-After` header, on refusals that pass by themselves
    /// (an alarm, the long-poll cap), so clients and their retry libraries wait
    /// that long instead of guessing.
    pub retry_after_s: Option<u32>,
    /// Answer with `WWW-Authenticate: Basic` (a 401), so browsers and clients know
    /// to send credentials.
    pub challenge: bool,
}

impl ApiError {
    /// An error answer with `status`, `code` and `reason`.
    pub fn new(status: StatusCode, code: &'static str, reason: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            reason: reason.into(),
            extra: None,
            retry_after_s: None,
            challenge: false,
        }
    }

    /// A 400 with code `code`.
    pub fn bad_request(code: &'static str, reason: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, reason)
    }

    /// The same answer with `WWW-Authenticate: Basic realm="weir"`.
    #[must_use]
    pub fn challenge(mut self) -> ApiError {
        self.challenge = true;
        self
    }

    /// The same answer with a `Retry-After: seconds` header.
    #[must_use]
    pub fn retry_after(mut self, seconds: u32) -> ApiError {
        self.retry_after_s = Some(seconds);
        self
    }
}

/// The status of each broker error.
pub fn status_of(e: &BrokerError) -> StatusCode {
    match e {
        BrokerError::NotFound { .. } => StatusCode::NOT_FOUND,
        BrokerError::Conflict { .. }
        | BrokerError::StaleReceipt { .. }
        | BrokerError::PreconditionFailed { .. }
        | BrokerError::NotOwner { .. }
        | BrokerError::BindingLoop { .. } => StatusCode::CONFLICT,
        BrokerError::AccessRefused { .. } => StatusCode::FORBIDDEN,
        BrokerError::LimitExceeded { what, .. } if what.is_size() => StatusCode::PAYLOAD_TOO_LARGE,
        BrokerError::InvalidName { .. }
        | BrokerError::InvalidArgument { .. }
        | BrokerError::MalformedReceipt { .. }
        | BrokerError::LimitExceeded { .. } => StatusCode::BAD_REQUEST,
        BrokerError::QueueFull { .. } => StatusCode::TOO_MANY_REQUESTS,
        BrokerError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        BrokerError::Storage { failure, .. } => match failure {
            StorageFailure::Full => StatusCode::INSUFFICIENT_STORAGE,
            StorageFailure::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            StorageFailure::Stopped | StorageFailure::Io => StatusCode::INTERNAL_SERVER_ERROR,
        },
        BrokerError::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl From<BrokerError> for ApiError {
    fn from(e: BrokerError) -> Self {
        let status = status_of(&e);
        if status.is_server_error() {
            tracing::error!(error = %e, "request failed");
        }
        ApiError::new(status, e.code(), e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({"error": self.code, "reason": self.reason});
        if let (Some(Value::Object(extra)), Some(map)) = (self.extra, body.as_object_mut()) {
            map.extend(extra);
        }
        let mut response = (self.status, Json(body)).into_response();
        if let Some(seconds) = self.retry_after_s {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if self.challenge {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"weir\", charset=\"UTF-8\""),
            );
        }
        response
    }
}
