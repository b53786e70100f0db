//! Request extractors whose failures are [`ApiError`]s, so bad JSON, unknown
//! fields, wrong types and oversized bodies all get the JSON error shape (axum's
//! own rejections answer in plain text).

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// A JSON body. Any content type is accepted (curl's `-d` says form-urlencoded);
/// an empty body reads as `{}`.
pub struct JsonBody<T>(pub T);

async fn read_body<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    let bytes = Bytes::from_request(req, state).await.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError {
                status: StatusCode::PAYLOAD_TOO_LARGE,
                code: "payload_too_large",
                reason: format!("request body is over the limit ({e})"),
                extra: None,
            }
        } else {
            ApiError::bad_request(
                "invalid_body",
                format!("could not read the request body: {e}"),
            )
        }
    })?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Bytes::from_static(b"{}"));
    }
    Ok(bytes)
}

fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request("invalid_json", format!("request body: {e}")))
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        parse_json(&read_body(req, state).await?).map(JsonBody)
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

impl<S: Send + Sync, T: Batched> FromRequest<S> for OneOrMany<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = read_body(req, state).await?;
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
