//! The client commands (`weir queue`, `send`, `recv`, `ack`, `nack`, `dlq`, and the
//! routing commands of [`routing`]: `exchange`, `bind`, `publish`, `subscribe`...):
//! thin HTTP clients of a running broker. Tables for people by default, the broker's
//! own JSON with `--json`. A refusal prints the broker's `reason` and exits 1.

pub mod api;
mod routing;
pub mod table;

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::Context as _;
use base64::Engine as _;
use clap::ValueEnum;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, BufReader, Stdin};

use self::api::{Api, DEFAULT_SERVER, Delivery, Messages, QueueInfo, QueueList, Settle};
use self::table::{Align, age, body_cell, bytes, headers_cell, or_dash, table};

/// Most messages per send request: the broker's default batch limit.
const MAX_BATCH_MESSAGES: usize = 1000;

/// Encoded bytes after which a stdin batch is sent early: half the broker's default
/// request limit (`max_body_bytes`, 16 MiB), so a file of long lines still goes
/// through in requests it accepts.
const MAX_BATCH_BYTES: usize = 8 << 20;

/// How long `recv --wait` long-polls.
const LONG_POLL_MS: u64 = 20_000;

/// Where the broker is; shared by every command that talks to it.
#[derive(clap::Args, Clone, Debug)]
pub struct ServerArgs {
    /// Base URL of the broker's HTTP API.
    #[arg(long, env = "WEIR_SERVER", default_value = DEFAULT_SERVER, value_name = "URL")]
    pub server: String,
}

/// Connection and output options of the client commands.
#[derive(clap::Args, Clone, Debug)]
pub struct Common {
    #[command(flatten)]
    server: ServerArgs,
    /// Print the broker's JSON answer (one line per answer) instead of a table.
    #[arg(long)]
    json: bool,
}

/// Client commands: each is one or a few calls of the broker's REST API.
#[derive(clap::Subcommand, Debug)]
pub enum ClientCommand {
    /// Create, list, show, delete and purge queues.
    #[command(subcommand)]
    Queue(QueueCommand),
    /// Send one message, or one message per line of stdin (batched).
    Send(SendArgs),
    /// Receive (lease) messages; with --ack also acknowledge them.
    Recv(RecvArgs),
    /// Acknowledge received messages by their receipts.
    Ack(AckArgs),
    /// Give received messages back for a retry, or reject them to the dead-letter queue.
    Nack(NackArgs),
    /// Look at and redrive the messages dead-lettered from a queue.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Create, list, show and delete exchanges.
    #[command(subcommand)]
    Exchange(routing::ExchangeCommand),
    /// Bind a queue (or, with --to-exchange, an exchange) to an exchange.
    Bind(routing::BindArgs),
    /// Remove a binding (the same arguments as `bind`).
    Unbind(routing::BindArgs),
    /// List bindings, optionally only from SOURCE and/or to DESTINATION.
    Bindings(routing::BindingsArgs),
    /// Publish one message, or one per line of stdin, through an exchange.
    Publish(routing::PublishArgs),
    /// Subscribe to a topic: a queue of your own that gets a copy of each matching
    /// message.
    Subscribe(routing::SubscribeArgs),
    /// Remove a subscription and its queue.
    Unsubscribe(routing::UnsubscribeArgs),
    /// List the subscriptions of a topic.
    Subscriptions(routing::SubscriptionsArgs),
}

/// `weir queue …`.
#[derive(clap::Subcommand, Debug)]
pub enum QueueCommand {
    /// Create a queue (succeeds if an identical one exists).
    Create(CreateArgs),
    /// List queues with their counts.
    List(ListArgs),
    /// Show a queue's options and stats.
    Show(NameArgs),
    /// Delete a queue and its messages.
    Delete(NameArgs),
    /// Remove every ready message of a queue.
    Purge(NameArgs),
}

/// `weir dlq …`.
#[derive(clap::Subcommand, Debug)]
pub enum DlqCommand {
    /// Show messages dead-lettered from QUEUE, without taking them.
    Peek(DlqPeekArgs),
    /// Move messages dead-lettered from QUEUE back to it.
    Redrive(DlqRedriveArgs),
}

/// Arguments of commands that take only a queue name.
#[derive(clap::Args, Debug)]
pub struct NameArgs {
    /// The queue.
    name: String,
    #[command(flatten)]
    common: Common,
}

/// `weir queue list`.
#[derive(clap::Args, Debug)]
pub struct ListArgs {
    #[command(flatten)]
    common: Common,
}

/// How the retry delay grows.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum BackoffArg {
    Fixed,
    Exponential,
}

/// What happens when a queue is full.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum OverflowArg {
    DropHead,
    RejectPublish,
    RejectPublishDlx,
    DeadLetter,
}

/// `weir queue create`. Options not given are left to the broker's defaults.
#[derive(clap::Args, Debug)]
pub struct CreateArgs {
    /// The queue.
    name: String,
    #[command(flatten)]
    options: QueueOptionArgs,
    #[command(flatten)]
    common: Common,
}

/// A queue's options as flags (`queue create`, `subscribe`). Options not given are
/// left to the broker's defaults.
#[derive(clap::Args, Debug)]
pub struct QueueOptionArgs {
    /// How long a received message stays leased before it is delivered again.
    #[arg(long, value_name = "MS")]
    visibility_timeout_ms: Option<u64>,
    /// Dead-letter (or drop) a message after this many failed deliveries.
    #[arg(long, value_name = "N")]
    max_deliveries: Option<u32>,
    /// Where rejected, expired, over-delivered and overflowed messages go.
    #[arg(long, value_name = "QUEUE")]
    dead_letter_queue: Option<String>,
    /// Delay before a failed message is delivered again.
    #[arg(long, value_name = "MS")]
    retry_delay_ms: Option<u64>,
    /// How the retry delay grows with the delivery count.
    #[arg(long, value_enum)]
    retry_backoff: Option<BackoffArg>,
    /// Cap of the exponential retry delay.
    #[arg(long, value_name = "MS")]
    retry_delay_max_ms: Option<u64>,
    /// Highest message priority (0: no priorities).
    #[arg(long, value_name = "N")]
    max_priority: Option<u8>,
    /// Default time to live of a message.
    #[arg(long, value_name = "MS")]
    message_ttl_ms: Option<u64>,
    /// At most this many ready messages.
    #[arg(long, value_name = "N")]
    max_length: Option<u64>,
    /// At most this many bytes of ready bodies.
    #[arg(long, value_name = "BYTES")]
    max_length_bytes: Option<u64>,
    /// What a full queue does with a new message.
    #[arg(long, value_enum)]
    overflow: Option<OverflowArg>,
    /// Ignore a send whose id was seen within this window.
    #[arg(long, value_name = "MS")]
    dedup_window_ms: Option<u64>,
    /// Delete the queue once it has gone this long unused (no consumer, no
    /// receive, no redeclaration).
    #[arg(long, value_name = "MS")]
    expires_ms: Option<u64>,
    /// At most one AMQP consumer gets messages at a time.
    #[arg(long)]
    single_active_consumer: bool,
}

/// `weir send`.
#[derive(clap::Args, Debug)]
pub struct SendArgs {
    /// The queue.
    queue: String,
    /// The body; `-` or nothing reads stdin and sends each non-empty line as one
    /// message, in batches of up to 1000.
    body: Option<String>,
    /// The message id (also the de-duplication key); generated when absent. Only
    /// with a BODY argument.
    #[arg(long)]
    id: Option<String>,
    #[command(flatten)]
    message: MessageArgs,
    #[command(flatten)]
    common: Common,
}

/// The fields every message of one `send` or `publish` shares.
#[derive(clap::Args, Debug)]
pub struct MessageArgs {
    /// An application header, repeatable.
    #[arg(long = "header", value_name = "K=V", value_parser = parse_header)]
    headers: Vec<(String, String)>,
    /// The priority, from 0 to the queue's highest (higher is delivered first).
    #[arg(long)]
    priority: Option<u8>,
    /// Deliver no earlier than this many ms from now.
    #[arg(long, value_name = "MS")]
    delay_ms: Option<u64>,
    /// The message group: FIFO within a group, one message of it in flight at a time.
    #[arg(long)]
    group: Option<String>,
    /// Time to live from now.
    #[arg(long, value_name = "MS")]
    ttl_ms: Option<u64>,
}

/// `weir recv`.
#[derive(clap::Args, Debug)]
pub struct RecvArgs {
    /// The queue.
    queue: String,
    /// At most this many messages.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
    max: u32,
    /// Long-poll: wait up to 20 s for a first message.
    #[arg(long, conflicts_with = "wait_ms")]
    wait: bool,
    /// Wait up to this long for a first message.
    #[arg(long, value_name = "MS")]
    wait_ms: Option<u64>,
    /// Lease length; the queue's visibility timeout when absent.
    #[arg(long, value_name = "MS")]
    visibility_timeout_ms: Option<u64>,
    /// Acknowledge the messages once printed (otherwise they come back after their
    /// lease unless acked with `weir ack`).
    #[arg(long)]
    ack: bool,
    #[command(flatten)]
    common: Common,
}

/// `weir ack`.
#[derive(clap::Args, Debug)]
pub struct AckArgs {
    /// The queue.
    queue: String,
    /// Receipts from `weir recv`.
    #[arg(required = true)]
    receipts: Vec<String>,
    #[command(flatten)]
    common: Common,
}

/// `weir nack`.
#[derive(clap::Args, Debug)]
pub struct NackArgs {
    /// The queue.
    queue: String,
    /// Receipts from `weir recv`.
    #[arg(required = true)]
    receipts: Vec<String>,
    /// Dead-letter the messages instead of retrying them.
    #[arg(long)]
    reject: bool,
    /// Retry after this long instead of the queue's backoff.
    #[arg(long, value_name = "MS", conflicts_with = "reject")]
    delay_ms: Option<u64>,
    #[command(flatten)]
    common: Common,
}

/// `weir dlq peek`.
#[derive(clap::Args, Debug)]
pub struct DlqPeekArgs {
    /// The source queue (not its dead-letter queue).
    queue: String,
    /// At most this many messages.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000))]
    max: u32,
    #[command(flatten)]
    common: Common,
}

/// `weir dlq redrive`.
#[derive(clap::Args, Debug)]
pub struct DlqRedriveArgs {
    /// The source queue (not its dead-letter queue).
    queue: String,
    /// At most this many messages; all when absent.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    max: Option<u32>,
    #[command(flatten)]
    common: Common,
}

fn parse_header(raw: &str) -> Result<(String, String), String> {
    raw.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{raw:?} is not K=V"))
}

/// Runs one client command. Broker refusals become errors carrying its reason
/// (`main` prints them and exits 1).
pub async fn run(cmd: ClientCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ClientCommand::Queue(cmd) => queue(cmd).await,
        ClientCommand::Send(args) => send(args).await,
        ClientCommand::Recv(args) => recv(args).await,
        ClientCommand::Ack(args) => {
            let api = Api::new(&args.common.server.server)?;
            let reply = api.settle(&args.queue, Settle::Ack, &args.receipts).await?;
            print_count(&args.common, &reply.body, "acked", "acked {messages}");
            Ok(ExitCode::SUCCESS)
        }
        ClientCommand::Nack(args) => {
            let api = Api::new(&args.common.server.server)?;
            let how = Settle::Nack {
                requeue: !args.reject,
                delay_ms: args.delay_ms,
            };
            let reply = api.settle(&args.queue, how, &args.receipts).await?;
            print_count(&args.common, &reply.body, "nacked", "nacked {messages}");
            Ok(ExitCode::SUCCESS)
        }
        ClientCommand::Dlq(DlqCommand::Peek(args)) => dlq_peek(args).await,
        ClientCommand::Dlq(DlqCommand::Redrive(args)) => {
            let api = Api::new(&args.common.server.server)?;
            let reply = api.redrive(&args.queue, args.max).await?;
            let template = format!("redrove {{messages}} to {}", args.queue);
            print_count(&args.common, &reply.body, "redriven", &template);
            Ok(ExitCode::SUCCESS)
        }
        ClientCommand::Exchange(cmd) => routing::exchange(cmd).await,
        ClientCommand::Bind(args) => routing::bind(args, true).await,
        ClientCommand::Unbind(args) => routing::bind(args, false).await,
        ClientCommand::Bindings(args) => routing::bindings(args).await,
        ClientCommand::Publish(args) => routing::publish(args).await,
        ClientCommand::Subscribe(args) => routing::subscribe(args).await,
        ClientCommand::Unsubscribe(args) => routing::unsubscribe(args).await,
        ClientCommand::Subscriptions(args) => routing::subscriptions(args).await,
    }
}

/// Prints the JSON with `--json`, else `template` with `{messages}` replaced by the
/// count in field `key` ("1 message", "2 messages").
fn print_count(common: &Common, body: &Value, key: &str, template: &str) {
    if common.json {
        println!("{}", api::to_json_line(body));
    } else {
        let n = body.get(key).and_then(Value::as_u64).unwrap_or(0);
        println!("{}", template.replace("{messages}", &messages(n)));
    }
}

/// "1 message", "2 messages".
fn messages(n: u64) -> String {
    if n == 1 {
        "1 message".to_owned()
    } else {
        format!("{n} messages")
    }
}

async fn queue(cmd: QueueCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        QueueCommand::Create(args) => {
            let api = Api::new(&args.common.server.server)?;
            let reply = api
                .declare(&args.name, &create_options(&args.options))
                .await?;
            if args.common.json {
                println!("{}", api::to_json_line(&reply.body));
            } else if reply.status == reqwest::StatusCode::CREATED {
                println!("created queue {}", args.name);
            } else {
                println!("queue {} exists with these options", args.name);
            }
        }
        QueueCommand::List(args) => {
            let api = Api::new(&args.common.server.server)?;
            let reply = api.list().await?;
            if args.common.json {
                println!("{}", api::to_json_line(&reply.body));
            } else {
                let list: QueueList = reply.parse()?;
                print!("{}", queue_table(&list.queues));
            }
        }
        QueueCommand::Show(args) => {
            let api = Api::new(&args.common.server.server)?;
            let reply = api.info(&args.name).await?;
            if args.common.json {
                println!("{}", api::to_json_line(&reply.body));
            } else {
                print!("{}", queue_details(&reply.body));
            }
        }
        QueueCommand::Delete(args) => {
            let api = Api::new(&args.common.server.server)?;
            let reply = api.delete(&args.name).await?;
            if args.common.json {
                // 204 has no body; say something a script can parse all the same.
                let body = if reply.body.is_null() {
                    json!({ "deleted": args.name })
                } else {
                    reply.body
                };
                println!("{}", api::to_json_line(&body));
            } else {
                println!("deleted queue {}", args.name);
            }
        }
        QueueCommand::Purge(args) => {
            let api = Api::new(&args.common.server.server)?;
            let reply = api.purge(&args.name).await?;
            let template = format!("purged {{messages}} from {}", args.name);
            print_count(&args.common, &reply.body, "purged", &template);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The options JSON of `queue create` and `subscribe`: only the flags given, so the broker's
/// defaults apply to the rest (and an identical re-create matches).
fn create_options(args: &QueueOptionArgs) -> Value {
    let name_of = |v: Option<clap::builder::PossibleValue>| v.map(|p| Value::from(p.get_name()));
    let mut options = serde_json::Map::new();
    let fields: [(&str, Option<Value>); 14] = [
        (
            "visibility_timeout_ms",
            args.visibility_timeout_ms.map(Value::from),
        ),
        ("max_deliveries", args.max_deliveries.map(Value::from)),
        (
            "dead_letter_queue",
            args.dead_letter_queue.clone().map(Value::from),
        ),
        ("retry_delay_ms", args.retry_delay_ms.map(Value::from)),
        (
            "retry_backoff",
            name_of(args.retry_backoff.and_then(|b| b.to_possible_value())),
        ),
        (
            "retry_delay_max_ms",
            args.retry_delay_max_ms.map(Value::from),
        ),
        ("max_priority", args.max_priority.map(Value::from)),
        ("message_ttl_ms", args.message_ttl_ms.map(Value::from)),
        ("max_length", args.max_length.map(Value::from)),
        ("max_length_bytes", args.max_length_bytes.map(Value::from)),
        (
            "overflow",
            name_of(args.overflow.and_then(|o| o.to_possible_value())),
        ),
        ("dedup_window_ms", args.dedup_window_ms.map(Value::from)),
        ("expires_ms", args.expires_ms.map(Value::from)),
        (
            "single_active_consumer",
            args.single_active_consumer.then_some(Value::Bool(true)),
        ),
    ];
    for (key, value) in fields {
        if let Some(value) = value {
            options.insert(key.to_owned(), value);
        }
    }
    Value::Object(options)
}

fn queue_table(queues: &[QueueInfo]) -> String {
    if queues.is_empty() {
        return "no queues\n".to_owned();
    }
    let columns = [
        ("NAME", Align::Left),
        ("READY", Align::Right),
        ("LEASED", Align::Right),
        ("DELAYED", Align::Right),
        ("BYTES", Align::Right),
        ("OLDEST", Align::Right),
        ("CONSUMERS", Align::Right),
        ("SENT", Align::Right),
        ("ACKED", Align::Right),
        ("DEAD-LETTERED", Align::Right),
        ("DLQ", Align::Left),
    ];
    let rows: Vec<Vec<String>> = queues
        .iter()
        .map(|q| {
            let s = &q.stats;
            let dlq = q.options.get("dead_letter_queue").and_then(Value::as_str);
            vec![
                q.name.clone(),
                s.ready.to_string(),
                s.leased.to_string(),
                s.delayed.to_string(),
                bytes(s.bytes),
                or_dash(s.oldest_age_ms.map(age)),
                s.consumers.to_string(),
                s.sent_total.to_string(),
                s.acked_total.to_string(),
                s.dead_lettered_total.to_string(),
                or_dash(dlq),
            ]
        })
        .collect();
    table(&columns, &rows)
}

/// `queue show`: every option and stat the broker reports, as two-column lists.
fn queue_details(info: &Value) -> String {
    let scalar = |v: &Value| match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => table::printable(s),
        other => other.to_string(),
    };
    let section = |key: &str| -> Vec<Vec<String>> {
        info.get(key)
            .and_then(Value::as_object)
            .map(|fields| {
                fields
                    .iter()
                    .map(|(k, v)| vec![format!("  {k}"), scalar(v)])
                    .collect()
            })
            .unwrap_or_default()
    };
    let name = info.get("name").and_then(Value::as_str).unwrap_or("?");
    let columns = [("", Align::Left), ("", Align::Left)];
    let mut out = format!("queue {}\n", table::printable(name));
    for key in ["options", "stats"] {
        out.push_str(key);
        out.push_str(":\n");
        // Skip the (empty) header line of the two-column table.
        let body = table(&columns, &section(key));
        out.extend(body.lines().skip(1).map(|line| format!("{line}\n")));
    }
    out
}

/// Builds the messages of one `send` or `publish` from the shared flags.
struct Template<'a> {
    args: &'a MessageArgs,
    headers: BTreeMap<&'a str, &'a str>,
    /// Fields added to every message (`routing_key`, `mandatory` for a publish).
    extra: serde_json::Map<String, Value>,
}

impl<'a> Template<'a> {
    fn new(args: &'a MessageArgs) -> Template<'a> {
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
    fn message(&self, body: &[u8], id: Option<&str>) -> Value {
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

async fn send(args: SendArgs) -> anyhow::Result<ExitCode> {
    let api = Api::new(&args.common.server.server)?;
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
fn id_with_stdin() -> ExitCode {
    let message = "--id names one message; it cannot be used when reading lines from stdin";
    let _ = clap::Error::raw(clap::error::ErrorKind::ArgumentConflict, message).print();
    ExitCode::from(2)
}

/// `send` from stdin: one message per non-empty line, in batches.
async fn send_lines(
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
struct SendTotals {
    sent: u64,
    duplicates: u64,
}

/// Sends one batch of `send_lines`.
async fn send_batch(
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
struct StdinLines {
    reader: BufReader<Stdin>,
    line: Vec<u8>,
}

impl StdinLines {
    fn new() -> StdinLines {
        StdinLines {
            reader: BufReader::new(tokio::io::stdin()),
            line: Vec::new(),
        }
    }

    /// The next non-empty line; `None` at the end of stdin.
    async fn next(&mut self) -> anyhow::Result<Option<&[u8]>> {
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
struct Batcher {
    batch: Vec<Value>,
    /// JSON size of `batch`.
    encoded_bytes: usize,
}

impl Batcher {
    /// Adds a message; returns the batch to send first when it had no room left
    /// for it.
    fn push(&mut self, message: Value) -> Option<Value> {
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
    fn take(&mut self) -> Option<Value> {
        if self.batch.is_empty() {
            return None;
        }
        self.encoded_bytes = 0;
        Some(json!({ "messages": std::mem::take(&mut self.batch) }))
    }
}

async fn recv(args: RecvArgs) -> anyhow::Result<ExitCode> {
    let api = Api::new(&args.common.server.server)?;
    let wait_ms = if args.wait {
        LONG_POLL_MS
    } else {
        args.wait_ms.unwrap_or(0)
    };
    let reply = api
        .receive(&args.queue, args.max, wait_ms, args.visibility_timeout_ms)
        .await?;
    let raw = reply.body.clone();
    let received: Messages = reply.parse()?;
    // Print first, then ack: if the ack fails the messages come back later, which
    // is the at-least-once promise; acking first could lose what was never shown.
    if args.common.json {
        println!("{}", api::to_json_line(&raw));
    } else if received.messages.is_empty() {
        println!("no messages");
    } else {
        print!("{}", deliveries_table(&received.messages, !args.ack));
    }
    if args.ack && !received.messages.is_empty() {
        let receipts: Vec<String> = received
            .messages
            .iter()
            .filter_map(|m| m.receipt.clone())
            .collect();
        api.settle(&args.queue, Settle::Ack, &receipts)
            .await
            .context(
                "the messages above were received but not acked; they will be delivered again",
            )?;
    }
    Ok(ExitCode::SUCCESS)
}

fn deliveries_table(messages: &[Delivery], with_receipt: bool) -> String {
    let mut columns = vec![
        ("ID", Align::Left),
        ("DELIVERY", Align::Right),
        ("PRIORITY", Align::Right),
        ("GROUP", Align::Left),
        ("HEADERS", Align::Left),
    ];
    if with_receipt {
        columns.push(("RECEIPT", Align::Left));
    }
    columns.push(("BODY", Align::Left));
    let rows: Vec<Vec<String>> = messages
        .iter()
        .map(|m| {
            let mut row = vec![
                table::printable(&m.id),
                m.delivery_count.to_string(),
                m.priority.to_string(),
                or_dash(m.group.as_deref().map(table::printable)),
                headers_cell(m),
            ];
            if with_receipt {
                row.push(or_dash(m.receipt.as_deref()));
            }
            row.push(body_cell(m));
            row
        })
        .collect();
    table(&columns, &rows)
}

async fn dlq_peek(args: DlqPeekArgs) -> anyhow::Result<ExitCode> {
    let api = Api::new(&args.common.server.server)?;
    let reply = api.dead_letters(&args.queue, args.max).await?;
    if args.common.json {
        println!("{}", api::to_json_line(&reply.body));
        return Ok(ExitCode::SUCCESS);
    }
    let peeked: Messages = reply.parse()?;
    if peeked.messages.is_empty() {
        println!("no dead letters from {}", args.queue);
        return Ok(ExitCode::SUCCESS);
    }
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let columns = [
        ("ID", Align::Left),
        ("REASON", Align::Left),
        ("FROM", Align::Left),
        ("DELIVERIES", Align::Right),
        ("AGE", Align::Right),
        ("HEADERS", Align::Left),
        ("BODY", Align::Left),
    ];
    let rows: Vec<Vec<String>> = peeked
        .messages
        .iter()
        .map(|m| {
            let dead = m.dead_letter.as_ref();
            vec![
                table::printable(&m.id),
                or_dash(dead.map(|d| d.reason.as_str())),
                or_dash(dead.map(|d| d.source_queue.as_str())),
                or_dash(dead.map(|d| d.delivery_count)),
                or_dash(dead.map(|d| age(u64::try_from(now_ms - d.time_ms).unwrap_or(0)))),
                headers_cell(m),
                body_cell(m),
            ]
        })
        .collect();
    print!("{}", table(&columns, &rows));
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    pub(crate) struct Cli {
        #[command(subcommand)]
        command: ClientCommand,
    }

    /// Parses client-command arguments as the binary would.
    pub(crate) fn parse(args: &[&str]) -> ClientCommand {
        Cli::try_parse_from(std::iter::once("weir").chain(args.iter().copied()))
            .unwrap()
            .command
    }

    #[test]
    fn create_sends_only_the_options_given() {
        let ClientCommand::Queue(QueueCommand::Create(args)) = parse(&[
            "queue",
            "create",
            "q",
            "--max-deliveries",
            "3",
            "--retry-backoff",
            "exponential",
            "--overflow",
            "reject-publish",
        ]) else {
            panic!("not a create");
        };
        assert_eq!(
            create_options(&args.options),
            json!({"max_deliveries": 3, "retry_backoff": "exponential", "overflow": "reject-publish"})
        );
    }

    #[test]
    fn send_messages_carry_the_shared_fields_and_base64_for_binary() {
        let ClientCommand::Send(args) = parse(&[
            "send",
            "q",
            "-",
            "--header",
            "a=b=c",
            "--priority",
            "2",
            "--group",
            "g",
        ]) else {
            panic!("not a send");
        };
        let template = Template::new(&args.message);
        assert_eq!(
            template.message(b"hi", None),
            json!({"body": "hi", "headers": {"a": "b=c"}, "priority": 2, "group": "g"})
        );
        assert_eq!(
            template.message(&[0xff], Some("x"))["body_base64"],
            json!("/w==")
        );
    }

    #[test]
    fn batches_are_cut_by_count_and_the_rest_is_taken_at_the_end() {
        let mut batcher = Batcher::default();
        let mut sent = Vec::new();
        for i in 0..=MAX_BATCH_MESSAGES {
            if let Some(body) = batcher.push(json!({ "body": i.to_string() })) {
                sent.push(body);
            }
        }
        assert_eq!(sent.len(), 1);
        assert_eq!(
            sent[0]["messages"].as_array().map(Vec::len),
            Some(MAX_BATCH_MESSAGES)
        );
        let rest = batcher.take().expect("the last message");
        assert_eq!(
            rest["messages"],
            json!([{ "body": MAX_BATCH_MESSAGES.to_string() }])
        );
        assert!(batcher.take().is_none());
    }

    #[test]
    fn batches_are_cut_by_encoded_size() {
        let mut batcher = Batcher::default();
        let big = "x".repeat(MAX_BATCH_BYTES / 2);
        assert!(batcher.push(json!({ "body": big })).is_none());
        let first = batcher
            .push(json!({ "body": big }))
            .expect("no room for a second");
        assert_eq!(first["messages"].as_array().map(Vec::len), Some(1));
        assert!(batcher.take().is_some());
    }

    #[test]
    fn wait_and_wait_ms_conflict() {
        let cli = Cli::try_parse_from(["weir", "recv", "q", "--wait", "--wait-ms", "5"]);
        assert!(cli.is_err());
    }
}
