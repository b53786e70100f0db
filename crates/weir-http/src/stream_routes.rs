//! Streams over HTTP (issue 21, docs/http-api.md "Streams"): declare, list, show,
//! alter (retention), delete, append, read and trim. Permissions as RabbitMQ checks its
//! stream queues: declare, alter, delete and trim need `configure` on the stream, appending `write` on the
//! default exchange (`amq.default`, as a publish to the stream through it), reading
//! `read` on the stream.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::json;
use weir_broker::access::Operation;
use weir_broker::stream::{
    Placed, RESERVED_HEADER_PREFIX, ReadFrom, StreamOptions, StreamRecord, StreamRecordIn,
};
use weir_broker::{Declared, Vhost};

use crate::auth::{Caller, Scoped};
use crate::error::ApiError;
use crate::extract::{Batched, JsonBody, QueryParams};
use crate::state::{ApiResult, LongPolls, ok};
use crate::stored_format;

pub(crate) async fn declare(
    caller: Caller,
    Scoped(broker): Scoped,
    Path(name): Path<String>,
    JsonBody(options): JsonBody<StreamOptions>,
) -> ApiResult {
    caller.allow(Operation::Configure, "queue", &name)?;
    let status = match broker.declare_stream(&name, options).await? {
        Declared::Created => StatusCode::CREATED,
        Declared::Existed => StatusCode::OK,
    };
    ok(status, json!(info(&broker, &name)?))
}

fn info(broker: &Vhost, name: &str) -> Result<weir_broker::stream::StreamInfo, ApiError> {
    Ok(broker.stream_info(name)?)
}

pub(crate) async fn list(caller: Caller, Scoped(broker): Scoped) -> ApiResult {
    caller.allow_view()?;
    ok(StatusCode::OK, json!({"streams": broker.streams()}))
}

pub(crate) async fn show(
    caller: Caller,
    Scoped(broker): Scoped,
    Path(name): Path<String>,
) -> ApiResult {
    caller.allow_view()?;
    ok(StatusCode::OK, json!(info(&broker, &name)?))
}

/// A PATCH body: each setting left out stays, `null` clears it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StreamChange {
    #[serde(default, deserialize_with = "given")]
    max_age_ms: Setting,
    #[serde(default, deserialize_with = "given")]
    max_bytes: Setting,
    #[serde(default, deserialize_with = "given")]
    segment_bytes: Setting,
}

/// One setting of a PATCH: left out, or given (a number, or `null` to clear).
#[derive(Default)]
enum Setting {
    #[default]
    Kept,
    Given(Option<u64>),
}

fn given<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Setting, D::Error> {
    Option::<u64>::deserialize(d).map(Setting::Given)
}

/// Changes a stream's retention and segment size, at once and for good.
pub(crate) async fn alter(
    caller: Caller,
    Scoped(broker): Scoped,
    Path(name): Path<String>,
    JsonBody(change): JsonBody<StreamChange>,
) -> ApiResult {
    caller.allow(Operation::Configure, "queue", &name)?;
    let mut options = info(&broker, &name)?.options;
    let fields = [
        (change.max_age_ms, &mut options.max_age_ms),
        (change.max_bytes, &mut options.max_bytes),
        (change.segment_bytes, &mut options.segment_bytes),
    ];
    for (asked, field) in fields {
        if let Setting::Given(value) = asked {
            *field = value;
        }
    }
    broker.alter_stream(&name, options).await?;
    ok(StatusCode::OK, json!(info(&broker, &name)?))
}

pub(crate) async fn delete(
    caller: Caller,
    Scoped(broker): Scoped,
    Path(name): Path<String>,
) -> ApiResult {
    caller.allow(Operation::Configure, "queue", &name)?;
    broker.delete_stream(&name).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// One record as appended over HTTP.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RecordIn {
    key: Option<String>,
    key_base64: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    body: Option<String>,
    body_base64: Option<String>,
}

impl Batched for RecordIn {
    const FIELD: &'static str = "messages";
}

fn bytes_of(
    i: usize,
    field: &str,
    text: Option<String>,
    b64: Option<String>,
) -> Result<Option<Bytes>, ApiError> {
    match (text, b64) {
        (Some(text), None) => Ok(Some(Bytes::from(text))),
        (None, Some(b64)) => BASE64
            .decode(b64.as_bytes())
            .map(|b| Some(Bytes::from(b)))
            .map_err(|e| {
                ApiError::bad_request(
                    "invalid_argument",
                    format!("messages[{i}].{field}_base64 is not valid base64: {e}"),
                )
            }),
        (None, None) => Ok(None),
        (Some(_), Some(_)) => Err(ApiError::bad_request(
            "invalid_argument",
            format!("messages[{i}] has both {field} and {field}_base64; give one"),
        )),
    }
}

fn record_in(i: usize, r: RecordIn) -> Result<StreamRecordIn, ApiError> {
    let body = bytes_of(i, "body", r.body, r.body_base64)?.ok_or_else(|| {
        ApiError::bad_request(
            "invalid_argument",
            format!("messages[{i}] needs a body (text) or body_base64 (binary)"),
        )
    })?;
    Ok(StreamRecordIn {
        key: bytes_of(i, "key", r.key, r.key_base64)?,
        headers: r
            .headers
            .into_iter()
            .map(|(k, v)| (k, Bytes::from(v)))
            .collect(),
        body,
    })
}

pub(crate) async fn append(
    caller: Caller,
    Scoped(broker): Scoped,
    Path(name): Path<String>,
    body: stored_format::AppendBody<RecordIn>,
) -> ApiResult {
    caller.allow(Operation::Write, "exchange", "")?;
    let body = match body {
        stored_format::AppendBody::Json(body) => body,
        stored_format::AppendBody::Batches(parts) => {
            let placed = broker.append_batches(&name, parts).await?;
            let records: u64 = placed.iter().map(|p| u64::from(p.count)).sum();
            broker.traffic().confirmed(records);
            return ok(StatusCode::CREATED, json!({"batches": placed}));
        }
    };
    let records = body
        .items
        .into_iter()
        .enumerate()
        .map(|(i, r)| record_in(i, r))
        .collect::<Result<Vec<_>, _>>()?;
    let placed = broker.append(&name, records).await?;
    broker.traffic().confirmed(placed.len() as u64);
    // Serialized straight from the list: a `Value` per record was a tenth of an
    // append's cost.
    let answer = Placements { messages: &placed };
    Ok((StatusCode::CREATED, axum::Json(answer)).into_response())
}

/// An append's answer.
#[derive(Serialize)]
struct Placements<'a> {
    messages: &'a [Placed],
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TrimQuery {
    partition: Option<u32>,
    before: String,
}

/// Removes a partition's records below `before` (an offset, or `end` for every
/// record so far), as Kafka's DeleteRecords: its first offset moves there for
/// good and whole segments below it are reclaimed. `configure` on the stream, as
/// deleting it.
pub(crate) async fn trim(
    caller: Caller,
    Scoped(broker): Scoped,
    Path(name): Path<String>,
    QueryParams(q): QueryParams<TrimQuery>,
) -> ApiResult {
    caller.allow(Operation::Configure, "queue", &name)?;
    let before = match q.before.as_str() {
        "end" => None,
        n => Some(n.parse::<u64>().map_err(|_| {
            ApiError::bad_request("invalid_argument", "before: an offset or `end`")
        })?),
    };
    let partition = q.partition.unwrap_or(0);
    let first = broker.trim_stream(&name, partition, before).await?;
    ok(
        StatusCode::OK,
        json!({"partition": partition, "first_offset": first}),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReadQuery {
    partition: Option<u32>,
    from: Option<String>,
    max: Option<u32>,
    wait_ms: Option<u64>,
}

/// A record as read: text bodies and keys as text, others in base64. Serialized
/// straight to the answer (no `serde_json::Value` per record: building one was the
/// larger part of a read's cost).
#[derive(Serialize)]
pub(crate) struct RecordOut<'a> {
    partition: u32,
    offset: u64,
    timestamp_ms: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key_base64: Option<String>,
    headers: HeadersOut<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    body_base64: Option<String>,
}

/// A record's headers as a JSON object of strings, written as they are read; the
/// broker's own (`x-weir-…`: an AMQP publish's description, `PROPERTIES_HEADER`,
/// which stays for AMQP readers, or a Kafka producer's sequences) are left out.
pub(crate) struct HeadersOut<'a>(&'a BTreeMap<String, Bytes>);

impl Serialize for HeadersOut<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap as _;
        let shown = self
            .0
            .iter()
            .filter(|(k, _)| !k.starts_with(RESERVED_HEADER_PREFIX));
        let mut map = serializer.serialize_map(None)?;
        for (k, v) in shown {
            match std::str::from_utf8(v) {
                Ok(text) => map.serialize_entry(k, text)?,
                Err(_) => map.serialize_entry(k, &String::from_utf8_lossy(v))?,
            }
        }
        map.end()
    }
}

/// The answer of a read: the records and where to read on.
#[derive(Serialize)]
struct ReadOut<'a> {
    messages: Vec<RecordOut<'a>>,
    next: u64,
}

fn text_or_base64(bytes: &[u8]) -> (Option<&str>, Option<String>) {
    match std::str::from_utf8(bytes) {
        Ok(text) => (Some(text), None),
        Err(_) => (None, Some(BASE64.encode(bytes))),
    }
}

impl<'a> RecordOut<'a> {
    pub(crate) fn of(r: &'a StreamRecord) -> Self {
        let (key, key_base64) = r.key.as_deref().map_or((None, None), text_or_base64);
        let (body, body_base64) = text_or_base64(&r.body);
        RecordOut {
            partition: r.partition,
            offset: r.offset,
            timestamp_ms: r.timestamp_ms,
            key,
            key_base64,
            headers: HeadersOut(&r.headers),
            body,
            body_base64,
        }
    }
}

/// Reads a partition; a long poll (`wait_ms`) takes one of `[http] max_long_polls`,
/// as a queue's receive does. Reading changes nothing, so it is a GET. With
/// `Accept: application/vnd.weir.batches` the answer is the stored batches
/// (`stored_format`), one section even when empty (its `next` says where to go on).
pub(crate) async fn read(
    caller: Caller,
    Scoped(broker): Scoped,
    State(long_polls): State<LongPolls>,
    Path(name): Path<String>,
    request_headers: HeaderMap,
    QueryParams(q): QueryParams<ReadQuery>,
) -> ApiResult {
    caller.allow(Operation::Read, "queue", &name)?;
    let from: ReadFrom = q.from.as_deref().unwrap_or("first").parse()?;
    let poll = long_polls.hold(q.wait_ms.unwrap_or(0), broker.limits().max_wait_ms);
    let (partition, max) = (q.partition.unwrap_or(0), q.max.unwrap_or(100));
    let what = "reads are already waiting in a long poll ([http] max_long_polls) and no \
                record is there yet";
    if stored_format::wanted(&request_headers) {
        let read = broker
            .read_stream_stored(&name, partition, from, max, poll.wait_ms)
            .await?;
        if let Some(refused) = long_polls.refusal(&poll, read.batches.records == 0, what) {
            return Err(refused);
        }
        return Ok(stored_format::answer(&[read], &[]));
    }
    let read = broker
        .read_stream(&name, partition, from, max, poll.wait_ms)
        .await?;
    if let Some(refused) = long_polls.refusal(&poll, read.records.is_empty(), what) {
        return Err(refused);
    }
    let messages: Vec<RecordOut<'_>> = read.records.iter().map(RecordOut::of).collect();
    Ok((
        StatusCode::OK,
        axum::Json(ReadOut {
            messages,
            next: read.next,
        }),
    )
        .into_response())
}
