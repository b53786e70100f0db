//! A stream's consumer groups over HTTP (issue 21, docs/http-api.md "Consumer
//! groups"). Every group endpoint needs `read` on the stream: a group is its
//! readers' own bookkeeping (RabbitMQ's stream offset tracking needs no more).

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::json;
use weir_broker::Declared;
use weir_broker::access::Operation;
use weir_broker::stream::groups::GroupConfig;
use weir_broker::stream::{PollOptions, ReadFrom};

use crate::auth::{Caller, Scoped};
use crate::extract::JsonBody;
use crate::state::{ApiResult, LongPolls, ok};
use crate::stored_format;
use crate::stream_routes::RecordOut;

pub(crate) async fn list(
    caller: Caller,
    Scoped(broker): Scoped,
    Path(stream): Path<String>,
) -> ApiResult {
    caller.allow(Operation::Read, "queue", &stream)?;
    ok(
        StatusCode::OK,
        json!({"groups": broker.groups(&stream).await?}),
    )
}

pub(crate) async fn declare(
    caller: Caller,
    Scoped(broker): Scoped,
    Path((stream, group)): Path<(String, String)>,
    JsonBody(config): JsonBody<GroupConfig>,
) -> ApiResult {
    caller.allow(Operation::Read, "queue", &stream)?;
    let status = match broker.declare_group(&stream, &group, config).await? {
        Declared::Created => StatusCode::CREATED,
        Declared::Existed => StatusCode::OK,
    };
    ok(status, json!(broker.group(&stream, &group).await?))
}

pub(crate) async fn show(
    caller: Caller,
    Scoped(broker): Scoped,
    Path((stream, group)): Path<(String, String)>,
) -> ApiResult {
    caller.allow(Operation::Read, "queue", &stream)?;
    ok(StatusCode::OK, json!(broker.group(&stream, &group).await?))
}

pub(crate) async fn delete(
    caller: Caller,
    Scoped(broker): Scoped,
    Path((stream, group)): Path<(String, String)>,
) -> ApiResult {
    caller.allow(Operation::Read, "queue", &stream)?;
    broker.delete_group(&stream, &group).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PollIn {
    member: String,
    max: Option<u32>,
    /// Wait (up to `wait_ms`) for at least this many unread records.
    min: Option<u32>,
    wait_ms: Option<u64>,
}

/// A poll's answer, serialized straight to the response.
#[derive(serde::Serialize)]
struct PollOut<'a> {
    generation: u64,
    partitions: &'a [u32],
    messages: Vec<RecordOut<'a>>,
}

/// Joins or heartbeats and answers records from the member's partitions; a long
/// poll takes one of `[http] max_long_polls`, as a queue's receive does. With
/// `Accept: application/vnd.weir.batches` the records are the stored batches
/// (`stored_format`), the generation and partitions in `weir-generation` and
/// `weir-partitions` headers.
pub(crate) async fn poll(
    caller: Caller,
    Scoped(broker): Scoped,
    State(long_polls): State<LongPolls>,
    Path((stream, group)): Path<(String, String)>,
    request_headers: HeaderMap,
    JsonBody(p): JsonBody<PollIn>,
) -> ApiResult {
    caller.allow(Operation::Read, "queue", &stream)?;
    let poll = long_polls.hold(p.wait_ms.unwrap_or(0), broker.limits().max_wait_ms);
    let stored = stored_format::wanted(&request_headers);
    let options = PollOptions {
        max: p.max.unwrap_or(100),
        min: p.min.unwrap_or(1),
        wait_ms: poll.wait_ms,
        stored,
    };
    let polled = broker
        .poll_with(&stream, &group, &p.member, options)
        .await?;
    let what = "requests are already waiting in a long poll ([http] max_long_polls) and no \
                record is there yet";
    if let Some(refused) = long_polls.refusal(&poll, polled.is_empty(), what) {
        return Err(refused);
    }
    if stored {
        let partitions: Vec<String> = polled.partitions.iter().map(u32::to_string).collect();
        let headers = [
            ("weir-generation", polled.generation.to_string()),
            ("weir-partitions", partitions.join(",")),
        ];
        return Ok(stored_format::answer(&polled.stored, &headers));
    }
    let messages: Vec<RecordOut<'_>> = polled.records.iter().map(RecordOut::of).collect();
    Ok((
        StatusCode::OK,
        axum::Json(PollOut {
            generation: polled.generation,
            partitions: &polled.partitions,
            messages,
        }),
    )
        .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CommitIn {
    member: String,
    offsets: BTreeMap<u32, u64>,
}

pub(crate) async fn commit(
    caller: Caller,
    Scoped(broker): Scoped,
    Path((stream, group)): Path<(String, String)>,
    JsonBody(c): JsonBody<CommitIn>,
) -> ApiResult {
    caller.allow(Operation::Read, "queue", &stream)?;
    broker.commit(&stream, &group, &c.member, c.offsets).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LeaveIn {
    member: String,
}

pub(crate) async fn leave(
    caller: Caller,
    Scoped(broker): Scoped,
    Path((stream, group)): Path<(String, String)>,
    JsonBody(l): JsonBody<LeaveIn>,
) -> ApiResult {
    caller.allow(Operation::Read, "queue", &stream)?;
    broker.leave(&stream, &group, &l.member)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ResetIn {
    to: String,
    #[serde(default)]
    dry_run: bool,
}

/// Sets every committed offset to `to` (`first`, `last`, `next`, an offset,
/// `time:`, `ago:`) while no member is live (409 otherwise).
pub(crate) async fn reset(
    caller: Caller,
    Scoped(broker): Scoped,
    Path((stream, group)): Path<(String, String)>,
    JsonBody(r): JsonBody<ResetIn>,
) -> ApiResult {
    caller.allow(Operation::Read, "queue", &stream)?;
    let to: ReadFrom = r.to.parse()?;
    let offsets = broker.reset_group(&stream, &group, to, r.dry_run).await?;
    ok(
        StatusCode::OK,
        json!({"offsets": offsets, "dry_run": r.dry_run}),
    )
}
