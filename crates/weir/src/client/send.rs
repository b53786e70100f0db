//! `weir send`: one message, or a message per stdin line sent in batches, with
//! `{n}`/`{line}` templates for ids.

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::Context as _;
use base64::Engine as _;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, BufReader, Stdin};

use super::api::Api;
use super::{MAX_BATCH_BYTES, MAX_BATCH_MESSAGES, MessageArgs, SendArgs, api, messages};

/// Builds the messages of one `send` or `publish` from the shared flags.
pub(super) struct Template<'a> {
    args: &'a MessageArgs,
    headers: BTreeMap<&'a str, &'a str>,
    /// Fields added to every message (`routing_key`, `mandatory` for a publish).
    pub(super) extra: serde_json::Map<String, Value>,
}

impl<'a> Template<'a> {
    pub(super) fn new(args: &'a MessageArgs) -> Template<'a> {
        let headers = args
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        Template {
            args,
            headers,
            extra: serde_json::Map::new(),
        }
    }

    /// One message of the send (or publish) API; bodies that are not UTF-8 travel as
    /// base64.
    pub(super) fn message(&self, body: &[u8], id: Option<&str>) -> Value {
        let mut m = self.extra.clone();
        match std::str::from_utf8(body) {
            Ok(text) => m.insert("body".into(), text.into()),
            Err(_) => m.insert(
                "body_base64".into(),
                base64::engine::general_purpose::STANDARD
                    .encode(body)
                    .into(),
            ),
        };
        if !self.headers.is_empty() {
            m.insert("headers".into(), json!(self.headers));
        }
        let args = self.args;
        let optional: [(&str, Option<Value>); 5] = [
            ("id", id.map(Value::from)),
            ("priority", args.priority.map(Value::from)),
            ("delay_ms", args.delay_ms.map(Value::from)),
            ("group", args.group.clone().map(Value::from)),
            ("ttl_ms", args.ttl_ms.map(Value::from)),
        ];
        for (key, value) in optional {
            if let Some(value) = value {
                m.insert(key.into(), value);
            }
        }
        Value::Object(m)
    }
}

pub(super) async fn send(args: SendArgs) -> anyhow::Result<ExitCode> {
    let api = args.common.server.api()?;
    let template = Template::new(&args.message);
    match args.body.as_deref() {
        Some(body) if body != "-" => {
            let message = template.message(body.as_bytes(), args.id.as_deref());
            let reply = api.send(&args.queue, &message).await?;
            if args.common.json {
                println!("{}", api::to_json_line(&reply.body));
            } else {
                let first = reply.body.pointer("/messages/0");
                let id = first.and_then(|m| m.get("id")).and_then(Value::as_str);
                let duplicate = first
                    .and_then(|m| m.get("duplicate"))
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                let note = if duplicate {
                    " (duplicate, not enqueued)"
                } else {
                    ""
                };
                println!("{}{note}", id.unwrap_or("?"));
            }
            Ok(ExitCode::SUCCESS)
        }
        _ => {
            if args.id.is_some() {
                return Ok(id_with_stdin());
            }
            send_lines(&api, &args, &template).await
        }
    }
}

/// Refuses `--id` with messages from stdin like any other usage error (exit 2):
/// every line would carry the same id and all but the first would be duplicates.
pub(super) fn id_with_stdin() -> ExitCode {
    let message = "--id names one message; it cannot be used when reading lines from stdin";
    let _ = clap::Error::raw(clap::error::ErrorKind::ArgumentConflict, message).print();
    ExitCode::from(2)
}

/// `send` from stdin: one message per non-empty line, in batches.
pub(super) async fn send_lines(
    api: &Api,
    args: &SendArgs,
    template: &Template<'_>,
) -> anyhow::Result<ExitCode> {
    let mut lines = StdinLines::new();
    let mut batcher = Batcher::default();
    let mut totals = SendTotals::default();
    while let Some(text) = lines.next().await? {
        if let Some(body) = batcher.push(template.message(text, None)) {
            send_batch(api, args, &body, &mut totals).await?;
        }
    }
    if let Some(body) = batcher.take() {
        send_batch(api, args, &body, &mut totals).await?;
    }
    if !args.common.json {
        let dups = if totals.duplicates > 0 {
            format!(" ({} duplicates not enqueued)", totals.duplicates)
        } else {
            String::new()
        };
        println!("sent {} to {}{dups}", messages(totals.sent), args.queue);
    }
    Ok(ExitCode::SUCCESS)
}

/// What the answers of a `send` from stdin added up to so far.
#[derive(Default)]
pub(super) struct SendTotals {
    sent: u64,
    duplicates: u64,
}

/// Sends one batch of `send_lines`.
pub(super) async fn send_batch(
    api: &Api,
    args: &SendArgs,
    body: &Value,
    totals: &mut SendTotals,
) -> anyhow::Result<()> {
    let queue = &args.queue;
    let reply = api.send(queue, body).await.with_context(|| {
        format!(
            "{} were sent to {queue} before this failure",
            messages(totals.sent)
        )
    })?;
    if args.common.json {
        println!("{}", api::to_json_line(&reply.body));
    }
    let count = |key: &str| reply.body.get(key).and_then(Value::as_u64).unwrap_or(0);
    totals.sent += count("sent");
    totals.duplicates += count("duplicates");
    Ok(())
}

/// The non-empty lines of stdin, without their line endings (`\n` or `\r\n`).
pub(super) struct StdinLines {
    reader: BufReader<Stdin>,
    line: Vec<u8>,
}

impl StdinLines {
    pub(super) fn new() -> StdinLines {
        StdinLines {
            reader: BufReader::new(tokio::io::stdin()),
            line: Vec::new(),
        }
    }

    /// The next non-empty line; `None` at the end of stdin.
    pub(super) async fn next(&mut self) -> anyhow::Result<Option<&[u8]>> {
        loop {
            self.line.clear();
            let n = self
                .reader
                .read_until(b'\n', &mut self.line)
                .await
                .context("reading stdin")?;
            if n == 0 {
                return Ok(None);
            }
            let text = self.line.strip_suffix(b"\n").unwrap_or(&self.line);
            let text = text.strip_suffix(b"\r").unwrap_or(text);
            if !text.is_empty() {
                let len = text.len();
                return Ok(Some(&self.line[..len]));
            }
        }
    }
}

/// Groups messages into request bodies (`{"messages": [...]}`) the broker accepts:
/// at most [`MAX_BATCH_MESSAGES`] each, and [`MAX_BATCH_BYTES`] of JSON unless a
/// single message is larger. No I/O: the caller sends what it hands back.
#[derive(Default)]
pub(super) struct Batcher {
    batch: Vec<Value>,
    /// JSON size of `batch`.
    encoded_bytes: usize,
}

impl Batcher {
    /// Adds a message; returns the batch to send first when it had no room left
    /// for it.
    pub(super) fn push(&mut self, message: Value) -> Option<Value> {
        // The encoded size: escapes and base64 can make it several times the line.
        let size = serde_json::to_vec(&message).map_or(0, |v| v.len());
        let full = if self.batch.len() >= MAX_BATCH_MESSAGES
            || self.encoded_bytes + size > MAX_BATCH_BYTES
        {
            self.take()
        } else {
            None
        };
        self.batch.push(message);
        self.encoded_bytes += size;
        full
    }

    /// What is batched, as a request body, if anything.
    pub(super) fn take(&mut self) -> Option<Value> {
        if self.batch.is_empty() {
            return None;
        }
        self.encoded_bytes = 0;
        Some(json!({ "messages": std::mem::take(&mut self.batch) }))
    }
}
