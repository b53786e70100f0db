//! The client commands (`weir queue`, `send`, `recv`, `ack`, `nack`, `dlq`, and the
//! routing commands of [`routing`]: `exchange`, `bind`, `publish`, `subscribe`...,
//! and the access commands of [`access`]: `user`, `vhost`, `permissions`):
//! thin HTTP clients of a running broker. Tables for people by default, the broker's
//! own JSON with `--json`. A refusal prints the broker's `reason` and exits 1.
//!
//! This file holds the arguments and the dispatch; `queue`, `send`, `recv` (with
//! `dlq peek`) and `routing` run the commands over `api` (the HTTP client) and
//! `table` (the output).

mod access;
pub mod api;
mod queue;
mod recv;
mod routing;
mod send;
mod stream;
pub mod table;

use std::process::ExitCode;

use clap::ValueEnum;
use serde_json::Value;

use self::api::{Api, DEFAULT_SERVER, Settle};

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
    /// User for the broker's HTTP API (HTTP Basic); credentials in the URL win.
    #[arg(long, env = "WEIR_USER", default_value = "guest", value_name = "NAME")]
    pub user: String,
    /// That user's password.
    #[arg(
        long,
        env = "WEIR_PASSWORD",
        default_value = "guest",
        hide_default_value = true,
        hide_env_values = true
    )]
    pub password: String,
    /// CA certificates (PEM) to trust for an https:// server.
    /// (`WEIR_SERVER_CA`, not `WEIR_TLS_CA`: that one is `weir serve`'s client-CA.)
    #[arg(long = "tls-ca", env = "WEIR_SERVER_CA", value_name = "FILE")]
    pub tls_ca: Option<std::path::PathBuf>,
    /// The vhost of the queues, exchanges, bindings, topics and permissions named
    /// (default `/`).
    #[arg(long, env = "WEIR_VHOST", value_name = "NAME")]
    pub vhost: Option<String>,
}

impl ServerArgs {
    /// The API client these options name.
    pub fn api(&self) -> anyhow::Result<Api> {
        self.api_at(&self.server)
    }

    /// The API client of the broker at `server`, with these credentials and CA.
    pub fn api_at(&self, server: &str) -> anyhow::Result<Api> {
        Ok(Api::new(server, self.tls_ca.as_deref())?
            .with_login(&self.user, &self.password)
            .in_vhost(self.vhost.as_deref().unwrap_or("/")))
    }
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

impl Common {
    /// The vhost named with `--vhost` (`WEIR_VHOST`), or `/`.
    fn vhost(&self) -> &str {
        self.server.vhost.as_deref().unwrap_or("/")
    }
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
    /// Add, change, delete and list users (administrators only).
    #[command(subcommand)]
    User(access::UserCommand),
    /// Add, delete and list vhosts (administrators only).
    #[command(subcommand)]
    Vhost(access::VhostCommand),
    /// Set, clear and list users' permissions per vhost (administrators only).
    #[command(subcommand)]
    Permissions(access::PermissionsCommand),
    /// Export or import users, vhosts, permissions, queues, exchanges and bindings
    /// (administrators only).
    #[command(subcommand)]
    Definitions(access::DefinitionsCommand),
    /// Create, list, show and delete streams; append to, read and tail them.
    #[command(subcommand)]
    Stream(stream::StreamCommand),
    /// List, show and reset a stream's consumer groups.
    #[command(subcommand)]
    Group(stream::GroupCommand),
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
        ClientCommand::Queue(cmd) => queue::queue(cmd).await,
        ClientCommand::Send(args) => send::send(args).await,
        ClientCommand::Recv(args) => recv::recv(args).await,
        ClientCommand::Ack(args) => {
            let api = args.common.server.api()?;
            let reply = api.settle(&args.queue, Settle::Ack, &args.receipts).await?;
            print_count(&args.common, &reply.body, "acked", "acked {messages}");
            Ok(ExitCode::SUCCESS)
        }
        ClientCommand::Nack(args) => {
            let api = args.common.server.api()?;
            let how = Settle::Nack {
                requeue: !args.reject,
                delay_ms: args.delay_ms,
            };
            let reply = api.settle(&args.queue, how, &args.receipts).await?;
            print_count(&args.common, &reply.body, "nacked", "nacked {messages}");
            Ok(ExitCode::SUCCESS)
        }
        ClientCommand::Dlq(DlqCommand::Peek(args)) => recv::dlq_peek(args).await,
        ClientCommand::Dlq(DlqCommand::Redrive(args)) => {
            let api = args.common.server.api()?;
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
        ClientCommand::User(cmd) => access::user(cmd).await,
        ClientCommand::Vhost(cmd) => access::vhost(cmd).await,
        ClientCommand::Permissions(cmd) => access::permissions(cmd).await,
        ClientCommand::Definitions(cmd) => access::definitions(cmd).await,
        ClientCommand::Stream(cmd) => stream::stream(cmd).await,
        ClientCommand::Group(cmd) => stream::group(cmd).await,
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

#[cfg(test)]
pub(crate) mod tests {
    use super::queue::create_options;
    use super::send::{Batcher, Template};
    use super::*;
    use clap::Parser;
    use serde_json::json;

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
    fn every_command_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn wait_and_wait_ms_conflict() {
        let cli = Cli::try_parse_from(["weir", "recv", "q", "--wait", "--wait-ms", "5"]);
        assert!(cli.is_err());
    }
}
