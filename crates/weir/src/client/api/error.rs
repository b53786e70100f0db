//! What a failed call says: the broker's own error code and reason when it answered,
//! else which broker could not be reached or what it sent instead of the API's JSON;
//! and whether a retry can succeed (`weir worker` retries only those).

use std::fmt;

use reqwest::StatusCode;
use serde::Deserialize;

/// A failed call.
#[derive(Debug)]
pub enum ApiError {
    /// The broker answered with an error status and (usually) its JSON error body.
    Server {
        /// The HTTP status.
        status: StatusCode,
        /// The stable error code (`queue_not_found`), or `http_<status>` when the body
        /// was not the broker's JSON (a proxy's page, say).
        code: String,
        /// The broker's explanation.
        reason: String,
    },
    /// No answer: connection refused or reset, a timeout, a body cut short.
    Transport {
        /// The request's URL, to say which broker was unreachable.
        url: String,
        /// What went wrong.
        source: reqwest::Error,
    },
    /// A success status with a body that is not what the API promises.
    Decode {
        /// The request's URL.
        url: String,
        /// The parser's complaint.
        source: serde_json::Error,
    },
}

impl ApiError {
    /// True when trying again later can succeed: the broker is restarting, overloaded
    /// or short of disk. Client errors (4xx) are final, except 429.
    pub fn is_transient(&self) -> bool {
        match self {
            ApiError::Server { status, .. } => {
                status.is_server_error() || *status == StatusCode::TOO_MANY_REQUESTS
            }
            ApiError::Transport { .. } => true,
            ApiError::Decode { .. } => false,
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiError::Server { code, reason, .. } => write!(f, "{reason} ({code})"),
            ApiError::Transport { url, source } => {
                // reqwest's own message ("error sending request for url (…)") and the
                // layers below repeat themselves; the innermost cause says what
                // happened ("Connection refused", "operation timed out").
                let mut cause: &dyn std::error::Error = source;
                while let Some(inner) = cause.source() {
                    cause = inner;
                }
                write!(f, "cannot reach the broker at {url}: {cause}")
            }
            ApiError::Decode { url, source } => {
                write!(
                    f,
                    "unexpected answer from {url} (is this a weir broker?): {source}"
                )
            }
        }
    }
}

impl std::error::Error for ApiError {}

/// The error of a non-success answer: the broker's `{"error", "reason"}` when the
/// body has it, else the start of whatever came back.
pub(super) fn server_error(status: StatusCode, bytes: &[u8]) -> ApiError {
    #[derive(Deserialize)]
    struct Body {
        error: String,
        #[serde(default)]
        reason: String,
    }
    if let Ok(body) = serde_json::from_slice::<Body>(bytes) {
        return ApiError::Server {
            status,
            reason: if body.reason.is_empty() {
                body.error.clone()
            } else {
                body.reason
            },
            code: body.error,
        };
    }
    let text = String::from_utf8_lossy(bytes);
    let text: String = text.trim().chars().take(200).collect();
    ApiError::Server {
        status,
        code: format!("http_{}", status.as_u16()),
        reason: if text.is_empty() {
            status.to_string()
        } else {
            format!("{status}: {text}")
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_give_code_and_reason() {
        let e = server_error(
            StatusCode::NOT_FOUND,
            br#"{"error":"queue_not_found","reason":"queue 'x' does not exist"}"#,
        );
        assert_eq!(e.to_string(), "queue 'x' does not exist (queue_not_found)");
        assert!(!e.is_transient());
        let e = server_error(StatusCode::BAD_GATEWAY, b"<html>bad gateway</html>");
        assert!(matches!(&e, ApiError::Server { code, .. } if code == "http_502"));
        assert!(e.is_transient());
    }
}
