//! Request extractors whose failures are [`ApiError`]s, so bad JSON, unknown
//! fields, wrong types and oversized bodies all get the JSON error shape (axum's
//! own rejections answer in plain text).

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use http_body::Body as _;
use http_body_util::BodyExt;
use serde::de::DeserializeOwned;

use crate::body::BodyError;
use crate::error::ApiError;
use crate::state::AppState;

/// A JSON body. Any content type is accepted (curl's `-d` says form-urlencoded);
/// an empty body reads as `{}`.
pub struct JsonBody<T>(pub T);

fn too_large(reason: String) -> ApiError {
    ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", reason)
}

/// The answer to a body that could not be read.
fn unreadable(e: axum::Error) -> ApiError {
    match e.into_inner().downcast::<BodyError>() {
        Ok(e) if matches!(*e, BodyError::Timeout(_)) => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            e.to_string(),
        ),
        Ok(e) => ApiError::bad_request(
            "invalid_body",
            format!("could not read the request body: {e}"),
        ),
        Err(e) => ApiError::bad_request(
            "invalid_body",
            format!("could not read the request body: {e}"),
        ),
    }
}

/// A JSON body ([`read_raw_body`]); an empty or blank one reads as `{}`.
async fn read_body(req: Request, max: u64) -> Result<Bytes, ApiError> {
    let bytes = read_raw_body(req, max).await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Bytes::from_static(b"{}"));
    }
    Ok(bytes)
}

/// The whole body as sent, at most `max` bytes. A `Content-Length` over `max` is
/// refused before any of the body is read, a chunked body as soon as it passes
/// `max`; what is left of a refused body is drained after the answer
/// ([`crate::body`]).
pub(crate) async fn read_raw_body(req: Request, max: u64) -> Result<Bytes, ApiError> {
    let mut body = req.into_body();
    let declared = body.size_hint().lower();
    if declared > max {
        return Err(too_large(format!(
            "the request body ({declared} bytes by its Content-Length) is over the limit of {max} bytes"
        )));
    }
    // Kept as received, so a body that came in one piece is not copied.
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut total = 0u64;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(unreadable)?.into_data() else {
            continue; // trailers
        };
        total += data.len() as u64;
        if total > max {
            return Err(too_large(format!(
                "the request body is over the limit of {max} bytes"
            )));
        }
        chunks.push(data);
    }
    Ok(if chunks.len() == 1 {
        chunks.pop().unwrap_or_default()
    } else {
        Bytes::from(chunks.concat())
    })
}

fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request("invalid_json", format!("request body: {e}")))
}

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        parse_json(&read_body(req, state.max_body_bytes).await?).map(JsonBody)
    }
}

/// A body that is one item or `{"<FIELD>": [items]}`.
pub trait Batched: DeserializeOwned {
    /// The field of the batch form (`messages`, `bindings`).
    const FIELD: &'static str;
}

/// One item or a batch of them, parsed in one pass: a batch is an object whose
/// first (and only) key is `T::FIELD`, which a look at the first key tells without
/// parsing the body twice.
pub struct OneOrMany<T> {
    /// The items.
    pub items: Vec<T>,
    /// Whether the batch form was used.
    pub batch: bool,
}

/// The first key of a JSON object, if it has one without escapes.
fn first_key(bytes: &[u8]) -> Option<&[u8]> {
    let rest = bytes.trim_ascii_start().strip_prefix(b"{")?;
    let rest = rest.trim_ascii_start().strip_prefix(b"\"")?;
    let end = rest.iter().position(|b| *b == b'"' || *b == b'\\')?;
    (rest[end] == b'"').then(|| &rest[..end])
}

impl<T: Batched> FromRequest<AppState> for OneOrMany<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let bytes = read_body(req, state.max_body_bytes).await?;
        if first_key(&bytes) != Some(T::FIELD.as_bytes()) {
            return Ok(OneOrMany {
                items: vec![parse_json(&bytes)?],
                batch: false,
            });
        }
        let mut batch: std::collections::BTreeMap<String, Vec<T>> = parse_json(&bytes)?;
        if let Some(other) = batch.keys().find(|k| k.as_str() != T::FIELD) {
            return Err(ApiError::bad_request(
                "invalid_json",
                format!(
                    "request body: unknown field `{other}`, expected `{}`",
                    T::FIELD
                ),
            ));
        }
        Ok(OneOrMany {
            items: batch.remove(T::FIELD).unwrap_or_default(),
            batch: true,
        })
    }
}

/// Query parameters, with unknown or mistyped ones refused.
pub struct QueryParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::try_from_uri(&parts.uri)
            .map(|q| QueryParams(q.0))
            .map_err(|e| {
                ApiError::bad_request(
                    "invalid_argument",
                    format!("query string: {}", e.body_text()),
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::first_key;

    #[test]
    fn the_first_key_is_read_without_parsing() {
        assert_eq!(first_key(br#" { "messages": []}"#), Some(&b"messages"[..]));
        assert_eq!(
            first_key(br#"{"body": "x", "messages": []}"#),
            Some(&b"body"[..])
        );
        assert_eq!(first_key(br#"{"m\u0065ssages": []}"#), None);
        assert_eq!(first_key(b"{}"), None);
        assert_eq!(first_key(b"[1]"), None);
    }
}
