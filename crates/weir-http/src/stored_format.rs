//! The binary read format (`Accept: application/vnd.weir.batches`, docs/http-api.md
//! "Binary reads"): a stream read or a group poll answered with the stored batches
//! as they are, instead of one JSON object per record.
//!
//! Why: a JSON answer costs the broker about half a microsecond per record read
//! (escaping, header maps) and the reader as much to parse it, so ten consumer
//! groups that keep up spend two cores on it (docs/benchmarks.md "Streams"). Here
//! the broker checks each batch's checksum and copies its bytes; the reader walks
//! length-prefixed fields.
//!
//! The body is a sequence of partition sections, integers little-endian as in the
//! log's own format:
//!
//! ```text
//! u32 partition | u64 from | u64 next | u32 length | length bytes of batches
//! ```
//!
//! `from` is the offset the read started at (records below it in the first batch
//! were answered before: skip them), `next` where to read on (what a group commits).
//!
//! Appends may be sent the same way (`Content-Type: application/vnd.weir.batches`,
//! docs/http-api.md "Binary appends"), in sections without offsets, the appender
//! naming each batch's partition as a Kafka producer does:
//!
//! ```text
//! u32 partition | u32 length | length bytes of batches
//! ```
//!
//! The broker parses no record into a value of its own: each batch is checked and
//! stamped by the log ([`weir_broker::stream::IncomingBatch`]).

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::{FromRequest, Request};
use axum::http::header::{ACCEPT, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::{BufMut, Bytes, BytesMut};
use http_body::{Frame, SizeHint};
use weir_broker::stream::{IncomingBatch, PartitionBatches, StoredRead};

use crate::error::ApiError;
use crate::extract::{OneOrMany, read_raw_body};
use crate::state::AppState;

/// The media type of the binary format.
pub(crate) const MEDIA_TYPE: &str = "application/vnd.weir.batches";

/// Bytes of a section's fixed fields.
const SECTION_HEADER_LEN: usize = 4 + 8 + 8 + 4;

/// Whether the request's `Accept` names the binary format.
pub(crate) fn wanted(headers: &HeaderMap) -> bool {
    headers
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(names_format)
}

/// Whether a media type (with parameters or not) is the binary format.
fn names_format(media: &str) -> bool {
    let media = media.split(';').next().unwrap_or("").trim();
    media.eq_ignore_ascii_case(MEDIA_TYPE)
}

/// An append's body: JSON records, or batches in the binary format when the
/// request's `Content-Type` names it.
pub(crate) enum AppendBody<T> {
    /// `{"messages": [...]}` or one record.
    Json(OneOrMany<T>),
    /// The binary format's sections, parsed and checked.
    Batches(Vec<PartitionBatches>),
}

impl<T: crate::extract::Batched> FromRequest<AppState> for AppendBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let binary = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(names_format);
        if !binary {
            return OneOrMany::from_request(req, state)
                .await
                .map(AppendBody::Json);
        }
        let bytes = read_raw_body(req, state.max_body_bytes).await?;
        parse_sections(&bytes).map(AppendBody::Batches)
    }
}

/// Bytes of an append section's fixed fields.
const APPEND_SECTION_HEADER_LEN: usize = 4 + 4;

/// The sections of a binary append, each batch checked.
fn parse_sections(mut bytes: &[u8]) -> Result<Vec<PartitionBatches>, ApiError> {
    let bad = |reason: String| ApiError::bad_request("invalid_batches", reason);
    let mut parts = Vec::new();
    while !bytes.is_empty() {
        let i = parts.len();
        let Some((head, rest)) = bytes.split_at_checked(APPEND_SECTION_HEADER_LEN) else {
            return Err(bad(format!(
                "section {i}: {} bytes, shorter than its 8-byte header",
                bytes.len()
            )));
        };
        let partition = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        let len = u32::from_le_bytes([head[4], head[5], head[6], head[7]]) as usize;
        let Some((section, rest)) = rest.split_at_checked(len) else {
            return Err(bad(format!(
                "section {i}: its length says {len} bytes, {} follow",
                rest.len()
            )));
        };
        let batches = IncomingBatch::parse(section)
            .map_err(|e| bad(format!("section {i} (partition {partition}): {e}")))?;
        parts.push(PartitionBatches { partition, batches });
        bytes = rest;
    }
    Ok(parts)
}

/// A 200 answer holding `sections`, with `extra` headers. The batches go out as
/// they were read (one body frame each), not copied into one buffer.
pub(crate) fn answer(sections: &[StoredRead], extra: &[(&'static str, String)]) -> Response {
    let mut frames = VecDeque::with_capacity(sections.len() * 2);
    for section in sections {
        let b = &section.batches;
        let mut head = BytesMut::with_capacity(SECTION_HEADER_LEN);
        head.put_u32_le(section.partition);
        head.put_u64_le(b.from.0);
        head.put_u64_le(b.next.0);
        // A read answers at most about 8 MiB, far below u32::MAX.
        head.put_u32_le(u32::try_from(b.bytes).unwrap_or(u32::MAX));
        frames.push_back(head.freeze());
        frames.extend(b.batches.iter().cloned());
    }
    let body = Frames {
        left: frames.iter().map(|f| f.len() as u64).sum(),
        frames,
    };
    let mut response = (StatusCode::OK, Body::new(body)).into_response();
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(MEDIA_TYPE));
    for (name, value) in extra {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(*name, value);
        }
    }
    response
}

/// A body of byte chunks already in memory, sent one frame each.
struct Frames {
    frames: VecDeque<Bytes>,
    left: u64,
}

impl http_body::Body for Frames {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let next = self.frames.pop_front();
        if let Some(frame) = &next {
            self.left -= frame.len() as u64;
        }
        Poll::Ready(next.map(|bytes| Ok(Frame::data(bytes))))
    }

    fn is_end_stream(&self) -> bool {
        self.frames.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_names_the_format_among_others_and_with_parameters() {
        let mut headers = HeaderMap::new();
        assert!(!wanted(&headers));
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        assert!(!wanted(&headers));
        headers.insert(
            ACCEPT,
            HeaderValue::from_static("application/json, Application/Vnd.Weir.Batches;q=0.9"),
        );
        assert!(wanted(&headers));
    }

    #[tokio::test]
    async fn sections_carry_partition_from_next_and_length() {
        use weir_broker::stream::{Offset, StoredBatches};
        let batches = StoredBatches {
            from: Offset(3),
            next: Offset(9),
            records: 6,
            bytes: 5,
            batches: vec![
                bytes::Bytes::from_static(b"ab"),
                bytes::Bytes::from_static(b"cde"),
            ],
        };
        let response = answer(
            &[StoredRead {
                partition: 2,
                batches,
            }],
            &[("weir-generation", "7".into())],
        );
        assert_eq!(response.headers()[CONTENT_TYPE], MEDIA_TYPE);
        assert_eq!(response.headers()["weir-generation"], "7");
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("body");
        let mut expected = Vec::new();
        expected.extend(2u32.to_le_bytes());
        expected.extend(3u64.to_le_bytes());
        expected.extend(9u64.to_le_bytes());
        expected.extend(5u32.to_le_bytes());
        expected.extend(b"abcde");
        assert_eq!(&body[..], &expected[..]);
    }
}
