//! `weir stream create|alter|ls|show|rm|trim|send|read|tail` and `weir group
//! ls|show|reset`:
//! streams and their consumer groups over the HTTP API (docs/http-api.md
//! "Streams", "Consumer groups").

use std::io::BufRead as _;
use std::process::ExitCode;

use reqwest::Method;
use serde_json::{Value, json};

use super::api::{self, Api};
use super::table::{Align, bytes, or_dash, printable, table};
use super::{Common, LONG_POLL_MS, MAX_BATCH_MESSAGES};

/// `weir stream …`.
#[derive(clap::Subcommand, Debug)]
pub enum StreamCommand {
    /// Create a stream (succeeds if an identical one exists).
    Create(StreamCreateArgs),
    /// Change a stream's retention or segment size (applied at once).
    Alter(StreamAlterArgs),
    /// List streams.
    Ls(StreamListArgs),
    /// Show a stream's partitions: first and next offset, bytes, segments.
    Show(StreamNameArgs),
    /// Delete a stream and its records.
    Rm(StreamNameArgs),
    /// Remove a partition's records below an offset (Kafka's DeleteRecords).
    Trim(StreamTrimArgs),
    /// Append one record, or one per line of stdin (batched).
    Send(StreamSendArgs),
    /// Read records from an offset, a time, first, last or next.
    Read(StreamReadArgs),
    /// Print records as they are appended (from `--from`, `next` by default).
    Tail(StreamReadArgs),
}

/// `weir group …`.
#[derive(clap::Subcommand, Debug)]
pub enum GroupCommand {
    /// List a stream's consumer groups with their lag.
    Ls(StreamNameArgs),
    /// Show a group: members, owners, committed offsets and lag per partition.
    Show(GroupArgs),
    /// Move a group's committed offsets (only while no member is live).
    Reset(GroupResetArgs),
}

/// Arguments of commands that take only a stream name.
#[derive(clap::Args, Debug)]
pub struct StreamNameArgs {
    /// The stream.
    stream: String,
    #[command(flatten)]
    common: Common,
}

/// `weir stream ls`.
#[derive(clap::Args, Debug)]
pub struct StreamListArgs {
    #[command(flatten)]
    common: Common,
}

/// `weir stream create`.
#[derive(clap::Args, Debug)]
pub struct StreamCreateArgs {
    /// The stream.
    stream: String,
    /// Partitions (records with the same key share one).
    #[arg(long, default_value_t = 1)]
    partitions: u32,
    /// Remove records older than this (whole segments).
    #[arg(long, value_name = "MS")]
    max_age_ms: Option<u64>,
    /// Keep at most about this many bytes per partition (whole segments).
    #[arg(long, value_name = "BYTES")]
    max_bytes: Option<u64>,
    /// Seal each partition's segments at this size (retention removes whole
    /// segments; default the broker's `[log] segment_bytes`).
    #[arg(long, value_name = "BYTES")]
    segment_bytes: Option<u64>,
    /// Answer appends once written rather than once synced.
    #[arg(long)]
    not_durable: bool,
    #[command(flatten)]
    common: Common,
}

/// `weir stream alter`: each option left out stays as it is.
#[derive(clap::Args, Debug)]
pub struct StreamAlterArgs {
    /// The stream.
    stream: String,
    /// Remove records older than this (whole segments); `none`: no limit.
    #[arg(long, value_name = "MS|none", value_parser = limit)]
    max_age_ms: Option<Limit>,
    /// Keep at most about this many bytes per partition; `none`: no limit.
    #[arg(long, value_name = "BYTES|none", value_parser = limit)]
    max_bytes: Option<Limit>,
    /// Seal segments from now on at this size; `none`: the broker's.
    #[arg(long, value_name = "BYTES|none", value_parser = limit)]
    segment_bytes: Option<Limit>,
    #[command(flatten)]
    common: Common,
}

/// `weir stream trim`.
#[derive(clap::Args, Debug)]
pub struct StreamTrimArgs {
    /// The stream.
    stream: String,
    /// The partition.
    #[arg(long, default_value_t = 0)]
    partition: u32,
    /// Records below this offset go; `end`: every record appended so far.
    #[arg(long, value_name = "OFFSET|end")]
    before: String,
    #[command(flatten)]
    common: Common,
}

/// A limit given on the command line: a number, or `none`.
#[derive(Clone, Copy, Debug)]
struct Limit(Option<u64>);

fn limit(text: &str) -> Result<Limit, String> {
    if text == "none" {
        return Ok(Limit(None));
    }
    text.parse()
        .map(|n| Limit(Some(n)))
        .map_err(|e| format!("{text}: {e} (a number, or none)"))
}

/// `weir stream send`.
#[derive(clap::Args, Debug)]
pub struct StreamSendArgs {
    /// The stream.
    stream: String,
    /// The record's body; without it, each line of stdin is a record.
    body: Option<String>,
    /// The records' key (records with one key stay in one partition, in order).
    #[arg(long)]
    key: Option<String>,
    /// A header, `NAME=VALUE` (repeatable).
    #[arg(long = "header", value_name = "NAME=VALUE")]
    headers: Vec<String>,
    #[command(flatten)]
    common: Common,
}

/// `weir stream read` and `weir stream tail`.
#[derive(clap::Args, Debug)]
pub struct StreamReadArgs {
    /// The stream.
    stream: String,
    /// The partition.
    #[arg(long, default_value_t = 0)]
    partition: u32,
    /// Where to start: first, last, next, an offset, `time:<ms since the epoch>`,
    /// `ago:<ms>` (read: first; tail: next).
    #[arg(long)]
    from: Option<String>,
    /// At most this many records (read), or per request (tail).
    #[arg(long, default_value_t = 100)]
    max: u32,
    #[command(flatten)]
    common: Common,
}

/// `weir group show`.
#[derive(clap::Args, Debug)]
pub struct GroupArgs {
    /// The stream.
    stream: String,
    /// The group.
    group: String,
    #[command(flatten)]
    common: Common,
}

/// `weir group reset`.
#[derive(clap::Args, Debug)]
pub struct GroupResetArgs {
    /// The stream.
    stream: String,
    /// The group.
    group: String,
    /// Where to: first, last, next, an offset, `time:<ms>`, `ago:<ms>`.
    #[arg(long)]
    to: String,
    /// Only say what would be set.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    common: Common,
}

fn print_json_or(common: &Common, body: &Value, text: impl FnOnce() -> String) {
    if common.json {
        println!("{}", api::to_json_line(body));
    } else {
        print!("{}", text());
    }
}

fn items<'a>(body: &'a Value, key: &str) -> &'a [Value] {
    body[key].as_array().map_or(&[], Vec::as_slice)
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

/// Runs a `weir stream` command.
pub(super) async fn stream(cmd: StreamCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        StreamCommand::Create(args) => {
            let api = args.common.server.api()?;
            let mut body = json!({
                "partitions": args.partitions,
                "max_age_ms": args.max_age_ms,
                "max_bytes": args.max_bytes,
                "durable": !args.not_durable,
            });
            if let Some(bytes) = args.segment_bytes {
                body["segment_bytes"] = json!(bytes);
            }
            let reply = api
                .request(Method::PUT, &["api", "streams", &args.stream], Some(&body))
                .await?;
            let verb = if reply.status.as_u16() == 201 {
                "created"
            } else {
                "exists:"
            };
            print_json_or(&args.common, &reply.body, || {
                format!(
                    "{verb} stream {} ({} partitions)\n",
                    args.stream, args.partitions
                )
            });
        }
        StreamCommand::Alter(args) => {
            let api = args.common.server.api()?;
            let mut body = json!({});
            for (name, value) in [
                ("max_age_ms", args.max_age_ms),
                ("max_bytes", args.max_bytes),
                ("segment_bytes", args.segment_bytes),
            ] {
                if let Some(Limit(value)) = value {
                    body[name] = json!(value);
                }
            }
            let reply = api
                .request(
                    Method::PATCH,
                    &["api", "streams", &args.stream],
                    Some(&body),
                )
                .await?;
            print_json_or(&args.common, &reply.body, || {
                let shown = |v: &Value| {
                    v.as_u64()
                        .map_or_else(|| "none".to_owned(), |n| n.to_string())
                };
                format!(
                    "altered stream {}: max_age_ms {}, max_bytes {}, segment_bytes {}\n",
                    args.stream,
                    shown(&reply.body["max_age_ms"]),
                    shown(&reply.body["max_bytes"]),
                    shown(&reply.body["segment_bytes"]),
                )
            });
        }
        StreamCommand::Ls(args) => {
            let api = args.common.server.api()?;
            let reply = api.request(Method::GET, &["api", "streams"], None).await?;
            print_json_or(&args.common, &reply.body, || streams_table(&reply.body));
        }
        StreamCommand::Show(args) => {
            let api = args.common.server.api()?;
            let reply = api
                .request(Method::GET, &["api", "streams", &args.stream], None)
                .await?;
            print_json_or(&args.common, &reply.body, || partitions_table(&reply.body));
        }
        StreamCommand::Rm(args) => {
            let api = args.common.server.api()?;
            let reply = api
                .request(Method::DELETE, &["api", "streams", &args.stream], None)
                .await?;
            print_json_or(&args.common, &reply.body, || {
                format!("deleted stream {}\n", args.stream)
            });
        }
        StreamCommand::Trim(args) => trim(args).await?,
        StreamCommand::Send(args) => send(args).await?,
        StreamCommand::Read(args) => {
            let api = args.common.server.api()?;
            let from = args.from.clone().unwrap_or_else(|| "first".to_owned());
            let reply = read(&api, &args, &from, 0).await?;
            print_json_or(&args.common, &reply, || records_table(&reply));
        }
        StreamCommand::Tail(args) => tail(args).await?,
    }
    Ok(ExitCode::SUCCESS)
}

fn streams_table(body: &Value) -> String {
    let rows: Vec<Vec<String>> = items(body, "streams")
        .iter()
        .map(|s| {
            let parts = items(s, "partition_stats");
            let records: u64 = parts
                .iter()
                .map(|p| u(&p["next_offset"]).saturating_sub(u(&p["first_offset"])))
                .sum();
            let size: u64 = parts.iter().map(|p| u(&p["bytes"])).sum();
            vec![
                printable(s["name"].as_str().unwrap_or_default()),
                u(&s["partitions"]).to_string(),
                records.to_string(),
                bytes(size),
            ]
        })
        .collect();
    table(
        &[
            ("NAME", Align::Left),
            ("PARTITIONS", Align::Right),
            ("RECORDS", Align::Right),
            ("SIZE", Align::Right),
        ],
        &rows,
    )
}

fn partitions_table(body: &Value) -> String {
    let rows: Vec<Vec<String>> = items(body, "partition_stats")
        .iter()
        .map(|p| {
            vec![
                u(&p["partition"]).to_string(),
                u(&p["first_offset"]).to_string(),
                u(&p["next_offset"]).to_string(),
                bytes(u(&p["bytes"])),
                u(&p["segments"]).to_string(),
            ]
        })
        .collect();
    table(
        &[
            ("PARTITION", Align::Right),
            ("FIRST", Align::Right),
            ("NEXT", Align::Right),
            ("SIZE", Align::Right),
            ("SEGMENTS", Align::Right),
        ],
        &rows,
    )
}

fn record_row(r: &Value) -> Vec<String> {
    let key = r["key"]
        .as_str()
        .map(printable)
        .or_else(|| r["key_base64"].as_str().map(|b| format!("base64:{b}")));
    let body = r["body"].as_str().map_or_else(
        || format!("base64:{}", r["body_base64"].as_str().unwrap_or_default()),
        printable,
    );
    vec![
        u(&r["partition"]).to_string(),
        u(&r["offset"]).to_string(),
        r["timestamp_ms"].as_i64().unwrap_or(0).to_string(),
        or_dash(key),
        body,
    ]
}

fn records_table(body: &Value) -> String {
    let rows: Vec<Vec<String>> = items(body, "messages").iter().map(record_row).collect();
    table(
        &[
            ("PARTITION", Align::Right),
            ("OFFSET", Align::Right),
            ("TIMESTAMP_MS", Align::Right),
            ("KEY", Align::Left),
            ("BODY", Align::Left),
        ],
        &rows,
    )
}

async fn read(api: &Api, args: &StreamReadArgs, from: &str, wait_ms: u64) -> anyhow::Result<Value> {
    let query = [
        ("partition", args.partition.to_string()),
        ("from", from.to_owned()),
        ("max", args.max.to_string()),
        ("wait_ms", wait_ms.to_string()),
    ];
    let segments = ["api", "streams", args.stream.as_str(), "messages"];
    let reply = api
        .request_with(Method::GET, &segments, &query, None, wait_ms)
        .await?;
    Ok(reply.body)
}

/// `weir stream trim`: `DELETE /api/streams/{name}/messages?partition=&before=`.
async fn trim(args: StreamTrimArgs) -> anyhow::Result<()> {
    let api = args.common.server.api()?;
    let query = [
        ("partition", args.partition.to_string()),
        ("before", args.before.clone()),
    ];
    let segments = ["api", "streams", args.stream.as_str(), "messages"];
    let reply = api
        .request_with(Method::DELETE, &segments, &query, None, 0)
        .await?;
    print_json_or(&args.common, &reply.body, || {
        format!(
            "trimmed partition {} of stream {}: it starts at offset {}\n",
            args.partition,
            args.stream,
            u(&reply.body["first_offset"])
        )
    });
    Ok(())
}

/// Long-polls from `--from` (`next` by default) and prints each record as it
/// comes, until interrupted.
async fn tail(args: StreamReadArgs) -> anyhow::Result<()> {
    let api = args.common.server.api()?;
    let mut from = args.from.clone().unwrap_or_else(|| "next".to_owned());
    loop {
        let body = read(&api, &args, &from, LONG_POLL_MS).await?;
        for r in items(&body, "messages") {
            if args.common.json {
                println!("{}", api::to_json_line(r));
            } else {
                let row = record_row(r);
                println!("{}/{}  {}  {}", row[0], row[1], row[3], row[4]);
            }
        }
        from = u(&body["next"]).to_string();
    }
}

async fn send(args: StreamSendArgs) -> anyhow::Result<()> {
    let api = args.common.server.api()?;
    let mut headers = serde_json::Map::new();
    for h in &args.headers {
        let (name, value) = h
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--header {h:?} is not NAME=VALUE"))?;
        headers.insert(name.to_owned(), Value::String(value.to_owned()));
    }
    let record = |body: &str| {
        let mut r = json!({"body": body, "headers": headers});
        if let Some(key) = &args.key {
            r["key"] = json!(key);
        }
        r
    };
    let segments = ["api", "streams", args.stream.as_str(), "messages"];
    let mut sent = 0u64;
    let mut last = Value::Null;
    let mut flush = async |batch: &mut Vec<Value>| -> anyhow::Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let body = json!({"messages": std::mem::take(batch)});
        let reply = api.request(Method::POST, &segments, Some(&body)).await?;
        sent += items(&reply.body, "messages").len() as u64;
        last = reply.body;
        Ok(())
    };
    let mut batch = Vec::new();
    if let Some(body) = &args.body {
        batch.push(record(body));
    } else {
        for line in std::io::stdin().lock().lines() {
            batch.push(record(&line?));
            if batch.len() >= MAX_BATCH_MESSAGES {
                flush(&mut batch).await?;
            }
        }
    }
    flush(&mut batch).await?;
    print_json_or(&args.common, &last, || {
        let placed = items(&last, "messages").last();
        match (sent, placed) {
            (1, Some(p)) => format!(
                "appended to {} partition {} offset {}\n",
                args.stream,
                u(&p["partition"]),
                u(&p["offset"])
            ),
            _ => format!("appended {sent} records to {}\n", args.stream),
        }
    });
    Ok(())
}

/// Runs a `weir group` command.
pub(super) async fn group(cmd: GroupCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        GroupCommand::Ls(args) => {
            let api = args.common.server.api()?;
            let segments = ["api", "streams", args.stream.as_str(), "groups"];
            let reply = api.request(Method::GET, &segments, None).await?;
            print_json_or(&args.common, &reply.body, || {
                let rows: Vec<Vec<String>> = items(&reply.body, "groups")
                    .iter()
                    .map(|g| {
                        let parts = items(g, "partitions");
                        let lag: u64 = parts.iter().map(|p| u(&p["lag"])).sum();
                        let lag_ms = parts.iter().map(|p| u(&p["lag_ms"])).max().unwrap_or(0);
                        let members = g["members"].as_object().map_or(0, serde_json::Map::len);
                        vec![
                            printable(g["name"].as_str().unwrap_or_default()),
                            members.to_string(),
                            lag.to_string(),
                            lag_ms.to_string(),
                        ]
                    })
                    .collect();
                table(
                    &[
                        ("GROUP", Align::Left),
                        ("MEMBERS", Align::Right),
                        ("LAG", Align::Right),
                        ("LAG_MS", Align::Right),
                    ],
                    &rows,
                )
            });
        }
        GroupCommand::Show(args) => {
            let api = args.common.server.api()?;
            let segments = [
                "api",
                "streams",
                args.stream.as_str(),
                "groups",
                args.group.as_str(),
            ];
            let reply = api.request(Method::GET, &segments, None).await?;
            print_json_or(&args.common, &reply.body, || group_table(&reply.body));
        }
        GroupCommand::Reset(args) => {
            let api = args.common.server.api()?;
            let segments = [
                "api",
                "streams",
                args.stream.as_str(),
                "groups",
                args.group.as_str(),
                "reset",
            ];
            let body = json!({"to": args.to, "dry_run": args.dry_run});
            let reply = api.request(Method::POST, &segments, Some(&body)).await?;
            print_json_or(&args.common, &reply.body, || {
                let offsets = reply.body["offsets"]
                    .as_object()
                    .map(|o| {
                        o.iter()
                            .map(|(p, v)| format!("{p}:{}", u(v)))
                            .collect::<Vec<_>>()
                            .join(" ")
                    })
                    .unwrap_or_default();
                let verb = if args.dry_run { "would set" } else { "set" };
                format!("{verb} {} offsets to {offsets}\n", args.group)
            });
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn group_table(body: &Value) -> String {
    let rows: Vec<Vec<String>> = items(body, "partitions")
        .iter()
        .map(|p| {
            vec![
                u(&p["partition"]).to_string(),
                or_dash(p["owner"].as_str().map(printable)),
                or_dash(p["committed"].as_u64()),
                u(&p["end"]).to_string(),
                u(&p["lag"]).to_string(),
                u(&p["lag_ms"]).to_string(),
            ]
        })
        .collect();
    table(
        &[
            ("PARTITION", Align::Right),
            ("OWNER", Align::Left),
            ("COMMITTED", Align::Right),
            ("END", Align::Right),
            ("LAG", Align::Right),
            ("LAG_MS", Align::Right),
        ],
        &rows,
    )
}
