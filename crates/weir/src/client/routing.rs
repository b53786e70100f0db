//! The routing commands: `weir exchange …`, `bind`, `unbind`, `bindings`, `publish`,
//! `subscribe`, `unsubscribe` and `subscriptions`. Like the queue commands they only
//! move JSON (`docs/http-api.md`, "Routing"); the broker checks every argument.
//!
//! The default exchange is `""`; `amq.default` names it too, as in the HTTP paths.

use std::fmt::Write as _;
use std::process::ExitCode;

use clap::ValueEnum;
use serde_json::{Value, json};

use super::api::{
    self, Api, BindingInfo, BindingList, DEFAULT_EXCHANGE, ExchangeInfo, ExchangeList,
    PublishReply, SubscriptionInfo, SubscriptionList,
};
use super::queue::create_options;
use super::send::{Batcher, StdinLines, Template, id_with_stdin};
use super::table::{self, Align, or_dash, table};
use super::{Common, MessageArgs, QueueOptionArgs, messages, parse_header};

/// `weir exchange …`.
#[derive(clap::Subcommand, Debug)]
pub enum ExchangeCommand {
    /// Create an exchange (succeeds if an identical one exists).
    Create(ExchangeCreateArgs),
    /// List exchanges.
    List(ExchangeListArgs),
    /// Show an exchange's options and the bindings it routes through.
    Show(ExchangeNameArgs),
    /// Delete an exchange and every binding from or to it.
    Delete(ExchangeDeleteArgs),
}

/// How an exchange routes.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum ExchangeTypeArg {
    /// The routing key equals the binding's key.
    Direct,
    /// The routing key matches the binding's pattern (`*` one word, `#` any).
    Topic,
    /// Every binding, whatever the key.
    Fanout,
    /// Message headers match the binding's arguments (`x-match`).
    Headers,
}

/// `weir exchange create`. Options not given are left to the broker's defaults.
#[derive(clap::Args, Debug)]
pub struct ExchangeCreateArgs {
    /// The exchange.
    name: String,
    /// How it routes.
    #[arg(long = "type", value_enum)]
    kind: ExchangeTypeArg,
    /// Not kept across a restart (nor are the bindings from or to it).
    #[arg(long)]
    transient: bool,
    /// Delete it when its last binding (as a source) is removed.
    #[arg(long)]
    auto_delete: bool,
    /// Send messages that reach no queue through it to this exchange instead.
    #[arg(long, value_name = "EXCHANGE")]
    alternate_exchange: Option<String>,
    #[command(flatten)]
    common: Common,
}

/// `weir exchange list`.
#[derive(clap::Args, Debug)]
pub struct ExchangeListArgs {
    #[command(flatten)]
    common: Common,
}

/// `weir exchange show`.
#[derive(clap::Args, Debug)]
pub struct ExchangeNameArgs {
    /// The exchange.
    name: String,
    #[command(flatten)]
    common: Common,
}

/// `weir exchange delete`.
#[derive(clap::Args, Debug)]
pub struct ExchangeDeleteArgs {
    /// The exchange.
    name: String,
    /// Refuse (409 `precondition_failed`) while it is the source of a binding.
    #[arg(long)]
    if_unused: bool,
    #[command(flatten)]
    common: Common,
}

/// `weir bind` and `weir unbind`.
#[derive(clap::Args, Debug)]
pub struct BindArgs {
    /// The exchange messages come from.
    source: String,
    /// The queue (or, with --to-exchange, the exchange) they go to.
    destination: String,
    /// The routing key (direct) or pattern (topic); fanout and headers ignore it.
    #[arg(long, default_value = "", value_name = "KEY")]
    key: String,
    /// DESTINATION is an exchange, not a queue.
    #[arg(long)]
    to_exchange: bool,
    /// A binding argument, repeatable: `x-match=all|any|all-with-x|any-with-x` and
    /// the header values to match (headers exchanges).
    #[arg(long = "arg", value_name = "K=V", value_parser = parse_header)]
    arguments: Vec<(String, String)>,
    #[command(flatten)]
    common: Common,
}

/// `weir bindings`.
#[derive(clap::Args, Debug)]
pub struct BindingsArgs {
    /// Only bindings from this exchange.
    #[arg(long, value_name = "EXCHANGE")]
    source: Option<String>,
    /// Only bindings to this queue or exchange.
    #[arg(long, value_name = "NAME")]
    destination: Option<String>,
    #[command(flatten)]
    common: Common,
}

/// `weir publish`.
#[derive(clap::Args, Debug)]
pub struct PublishArgs {
    /// The exchange; `""` or `amq.default` is the default exchange, which routes to
    /// the queue named by KEY.
    exchange: String,
    /// The routing key.
    key: String,
    /// The body; `-` or nothing reads stdin and publishes each non-empty line as one
    /// message, in batches of up to 1000.
    body: Option<String>,
    /// The message id (the same in every queue it reaches; also the de-duplication
    /// key); generated when absent. Only with a BODY argument.
    #[arg(long)]
    id: Option<String>,
    /// Fail (exit 1) when a message reaches no queue. It is dropped either way.
    #[arg(long)]
    mandatory: bool,
    #[command(flatten)]
    message: MessageArgs,
    #[command(flatten)]
    common: Common,
}

/// `weir subscribe`.
#[derive(clap::Args, Debug)]
pub struct SubscribeArgs {
    /// The topic: a topic exchange, created if missing.
    topic: String,
    /// The subscriber's name; its queue is `sub:TOPIC:NAME`.
    name: String,
    /// The routing keys it wants (`*` one word, `#` zero or more); everything when
    /// absent. Subscribing again with another pattern replaces it.
    #[arg(long, value_name = "PATTERN")]
    pattern: Option<String>,
    #[command(flatten)]
    queue: QueueOptionArgs,
    #[command(flatten)]
    common: Common,
}

/// `weir unsubscribe`.
#[derive(clap::Args, Debug)]
pub struct UnsubscribeArgs {
    /// The topic.
    topic: String,
    /// The subscriber's name.
    name: String,
    #[command(flatten)]
    common: Common,
}

/// `weir subscriptions`.
#[derive(clap::Args, Debug)]
pub struct SubscriptionsArgs {
    /// The topic.
    topic: String,
    #[command(flatten)]
    common: Common,
}

/// An exchange name for a request body: `amq.default` is the default exchange
/// (`""`), which the broker then refuses to bind with `access_refused`.
fn body_name(name: &str) -> &str {
    if name == DEFAULT_EXCHANGE { "" } else { name }
}

/// "exchange logs", or "the default exchange".
fn exchange_label(name: &str) -> String {
    if body_name(name).is_empty() {
        "the default exchange".to_owned()
    } else {
        format!("exchange {name}")
    }
}

/// `k=v,k2=v2`, or `-`.
fn pairs_cell<'a>(pairs: impl IntoIterator<Item = (&'a String, &'a String)>) -> String {
    let pairs: Vec<String> = pairs
        .into_iter()
        .map(|(k, v)| format!("{}={}", table::printable(k), table::printable(v)))
        .collect();
    if pairs.is_empty() {
        "-".to_owned()
    } else {
        pairs.join(",")
    }
}

/// A routing key for a table: quoted, so an empty key shows.
fn key_cell(key: &str) -> String {
    format!("\"{}\"", table::printable(key))
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

/// Prints `{"deleted": name}`-like JSON for a 204 with `--json`, else `text`.
fn print_done(common: &Common, json: &Value, text: &str) {
    if common.json {
        println!("{}", api::to_json_line(json));
    } else {
        println!("{text}");
    }
}

/// Runs `weir exchange …`.
pub async fn exchange(cmd: ExchangeCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ExchangeCommand::Create(args) => {
            let api = args.common.server.api()?;
            let reply = api
                .declare_exchange(&args.name, &exchange_options(&args))
                .await?;
            if args.common.json {
                println!("{}", api::to_json_line(&reply.body));
            } else if reply.status == reqwest::StatusCode::CREATED {
                let kind = args
                    .kind
                    .to_possible_value()
                    .map(|v| v.get_name().to_owned());
                println!(
                    "created exchange {} ({})",
                    args.name,
                    kind.unwrap_or_default()
                );
            } else {
                println!("exchange {} exists with these options", args.name);
            }
        }
        ExchangeCommand::List(args) => {
            let api = args.common.server.api()?;
            let reply = api.exchanges().await?;
            if args.common.json {
                println!("{}", api::to_json_line(&reply.body));
            } else {
                let list: ExchangeList = reply.parse()?;
                print!("{}", exchange_table(&list.exchanges));
            }
        }
        ExchangeCommand::Show(args) => {
            let api = args.common.server.api()?;
            let reply = api.exchange(&args.name).await?;
            if args.common.json {
                println!("{}", api::to_json_line(&reply.body));
            } else {
                let info: ExchangeInfo = reply.parse()?;
                let bindings: BindingList = api.bindings(Some(&info.name), None).await?.parse()?;
                print!("{}", exchange_details(&info, &bindings.bindings));
            }
        }
        ExchangeCommand::Delete(args) => {
            let api = args.common.server.api()?;
            api.delete_exchange(&args.name, args.if_unused).await?;
            print_done(
                &args.common,
                &json!({ "deleted": args.name }),
                &format!("deleted exchange {}", args.name),
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The options JSON of `exchange create`: the type and only the flags given, so
/// the broker's defaults apply to the rest.
fn exchange_options(args: &ExchangeCreateArgs) -> Value {
    let mut options = serde_json::Map::new();
    if let Some(kind) = args.kind.to_possible_value() {
        options.insert("type".into(), kind.get_name().into());
    }
    if args.transient {
        options.insert("durable".into(), false.into());
    }
    if args.auto_delete {
        options.insert("auto_delete".into(), true.into());
    }
    if let Some(ae) = &args.alternate_exchange {
        options.insert("alternate_exchange".into(), ae.clone().into());
    }
    Value::Object(options)
}

fn exchange_table(exchanges: &[ExchangeInfo]) -> String {
    if exchanges.is_empty() {
        return "no exchanges\n".to_owned();
    }
    let columns = [
        ("NAME", Align::Left),
        ("TYPE", Align::Left),
        ("DURABLE", Align::Left),
        ("AUTO-DELETE", Align::Left),
        ("BINDINGS", Align::Right),
        ("ALTERNATE", Align::Left),
    ];
    let rows: Vec<Vec<String>> = exchanges
        .iter()
        .map(|e| {
            vec![
                table::printable(&e.name),
                e.kind.clone(),
                yes_no(e.durable).to_owned(),
                yes_no(e.auto_delete).to_owned(),
                e.bindings.to_string(),
                or_dash(e.alternate_exchange.as_deref().map(table::printable)),
            ]
        })
        .collect();
    table(&columns, &rows)
}

/// `exchange show`: the options as a two-column list, then its bindings.
fn exchange_details(info: &ExchangeInfo, bindings: &[BindingInfo]) -> String {
    let fields = [
        ("type", info.kind.clone()),
        ("durable", yes_no(info.durable).to_owned()),
        ("auto_delete", yes_no(info.auto_delete).to_owned()),
        (
            "alternate_exchange",
            or_dash(info.alternate_exchange.as_deref().map(table::printable)),
        ),
    ];
    let rows: Vec<Vec<String>> = fields
        .into_iter()
        .map(|(k, v)| vec![format!("  {k}"), v])
        .collect();
    let mut out = format!("exchange {}\n", table::printable(&info.name));
    // Skip the (empty) header line of the two-column table.
    let body = table(&[("", Align::Left), ("", Align::Left)], &rows);
    out.extend(body.lines().skip(1).map(|line| format!("{line}\n")));
    if bindings.is_empty() {
        out.push_str("no bindings\n");
    } else {
        let _ = writeln!(out, "bindings ({}):", bindings.len());
        let columns = [
            ("DESTINATION", Align::Left),
            ("TYPE", Align::Left),
            ("KEY", Align::Left),
            ("ARGUMENTS", Align::Left),
        ];
        let rows: Vec<Vec<String>> = bindings
            .iter()
            .map(|b| {
                vec![
                    table::printable(&b.destination),
                    b.destination_type.clone(),
                    key_cell(&b.routing_key),
                    pairs_cell(&b.arguments),
                ]
            })
            .collect();
        let body = table(&columns, &rows);
        out.extend(body.lines().map(|line| format!("  {line}\n")));
    }
    out
}

/// Runs `weir bind` (`bind` true) or `weir unbind`.
pub async fn bind(args: BindArgs, bind: bool) -> anyhow::Result<ExitCode> {
    let api = args.common.server.api()?;
    let destination_type = if args.to_exchange {
        "exchange"
    } else {
        "queue"
    };
    let destination = if args.to_exchange {
        body_name(&args.destination)
    } else {
        &args.destination
    };
    let arguments: serde_json::Map<String, Value> = args
        .arguments
        .iter()
        .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
        .collect();
    let binding = json!({
        "source": body_name(&args.source),
        "destination": destination,
        "destination_type": destination_type,
        "routing_key": args.key,
        "arguments": arguments,
    });
    let reply = api.binding(bind, &binding).await?;
    let mut label = format!(
        "{} -> {destination_type} {}, key {}",
        args.source,
        args.destination,
        key_cell(&args.key)
    );
    if !args.arguments.is_empty() {
        let pairs = args.arguments.iter().map(|(k, v)| (k, v));
        let _ = write!(label, ", arguments {}", pairs_cell(pairs));
    }
    let text = match (bind, reply.status) {
        (true, reqwest::StatusCode::CREATED) => format!("bound {label}"),
        (true, _) => format!("binding {label} exists"),
        (false, _) => format!("unbound {label}"),
    };
    // 204 (unbind) has no body; say something a script can parse all the same.
    let json = if reply.body.is_null() {
        json!({ "unbound": binding })
    } else {
        reply.body
    };
    print_done(&args.common, &json, &text);
    Ok(ExitCode::SUCCESS)
}

/// Runs `weir bindings`.
pub async fn bindings(args: BindingsArgs) -> anyhow::Result<ExitCode> {
    let api = args.common.server.api()?;
    let source = args.source.as_deref().map(body_name);
    let reply = api.bindings(source, args.destination.as_deref()).await?;
    if args.common.json {
        println!("{}", api::to_json_line(&reply.body));
        return Ok(ExitCode::SUCCESS);
    }
    let list: BindingList = reply.parse()?;
    if list.bindings.is_empty() {
        println!("no bindings");
        return Ok(ExitCode::SUCCESS);
    }
    let columns = [
        ("SOURCE", Align::Left),
        ("DESTINATION", Align::Left),
        ("TYPE", Align::Left),
        ("KEY", Align::Left),
        ("ARGUMENTS", Align::Left),
    ];
    let rows: Vec<Vec<String>> = list
        .bindings
        .iter()
        .map(|b| {
            vec![
                table::printable(&b.source),
                table::printable(&b.destination),
                b.destination_type.clone(),
                key_cell(&b.routing_key),
                pairs_cell(&b.arguments),
            ]
        })
        .collect();
    print!("{}", table(&columns, &rows));
    Ok(ExitCode::SUCCESS)
}

/// What the answers of one `publish` added up to.
#[derive(Default)]
struct PublishTotals {
    messages: u64,
    routed: u64,
    unroutable: u64,
    /// Unroutable messages published with `mandatory`.
    returned: u64,
}

/// Runs `weir publish`: one message, or one per line of stdin in batches. Prints
/// where each message went; with `--mandatory`, exits 1 if any reached no queue.
pub async fn publish(args: PublishArgs) -> anyhow::Result<ExitCode> {
    let api = args.common.server.api()?;
    let mut template = Template::new(&args.message);
    template
        .extra
        .insert("routing_key".into(), args.key.clone().into());
    if args.mandatory {
        template.extra.insert("mandatory".into(), true.into());
    }
    let mut totals = PublishTotals::default();
    match args.body.as_deref() {
        Some(body) if body != "-" => {
            let message = template.message(body.as_bytes(), args.id.as_deref());
            publish_batch(&api, &args, &message, &mut totals).await?;
        }
        _ => {
            if args.id.is_some() {
                return Ok(id_with_stdin());
            }
            let mut lines = StdinLines::new();
            let mut batcher = Batcher::default();
            while let Some(text) = lines.next().await? {
                if let Some(body) = batcher.push(template.message(text, None)) {
                    publish_batch(&api, &args, &body, &mut totals).await?;
                }
            }
            if let Some(body) = batcher.take() {
                publish_batch(&api, &args, &body, &mut totals).await?;
            }
            if !args.common.json {
                println!(
                    "published {} through {}: {} enqueued, {} unroutable",
                    messages(totals.messages),
                    exchange_label(&args.exchange),
                    copies(totals.routed),
                    totals.unroutable
                );
            }
        }
    }
    if totals.returned > 0 {
        anyhow::bail!(
            "{} reached no queue through {} and {} dropped (--mandatory)",
            messages(totals.returned),
            exchange_label(&args.exchange),
            if totals.returned == 1 { "was" } else { "were" }
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// "1 copy", "3 copies".
fn copies(n: u64) -> String {
    if n == 1 {
        "1 copy".to_owned()
    } else {
        format!("{n} copies")
    }
}

/// Publishes one request (a message or a batch) and prints where each went.
async fn publish_batch(
    api: &Api,
    args: &PublishArgs,
    body: &Value,
    totals: &mut PublishTotals,
) -> anyhow::Result<()> {
    let reply = match api.publish(&args.exchange, body, true).await {
        Ok(reply) => reply,
        // Nothing was published yet: the broker's reason says it all.
        Err(e) if totals.messages == 0 => return Err(e.into()),
        Err(e) => {
            return Err(anyhow::Error::new(e).context(format!(
                "{} were published through {} before this failure",
                messages(totals.messages),
                exchange_label(&args.exchange)
            )));
        }
    };
    if args.common.json {
        println!("{}", api::to_json_line(&reply.body));
    }
    let answer: PublishReply = reply.parse()?;
    if !args.common.json {
        for outcome in &answer.messages {
            println!("{}", outcome_line(outcome));
        }
    }
    totals.messages += answer.messages.len() as u64;
    totals.routed += answer.routed;
    totals.unroutable += answer.unroutable;
    totals.returned += answer.returned;
    Ok(())
}

/// Where one message went: `ID -> q1, q2`, with the queues that already had it, or
/// `ID -> no queue (unroutable, dropped)`.
fn outcome_line(outcome: &super::api::PublishOutcome) -> String {
    let id = table::printable(&outcome.id);
    if outcome.unroutable {
        return format!("{id} -> no queue (unroutable, dropped)");
    }
    let mut line = format!("{id} -> ");
    line.push_str(&outcome.queues.join(", "));
    if !outcome.duplicate_in.is_empty() {
        if !outcome.queues.is_empty() {
            line.push(' ');
        }
        let _ = write!(
            line,
            "(duplicate, not enqueued again: {})",
            outcome.duplicate_in.join(", ")
        );
    }
    line
}

/// Runs `weir subscribe`.
pub async fn subscribe(args: SubscribeArgs) -> anyhow::Result<ExitCode> {
    let api = args.common.server.api()?;
    let mut body = serde_json::Map::new();
    if let Some(pattern) = &args.pattern {
        body.insert("pattern".into(), pattern.clone().into());
    }
    let options = create_options(&args.queue);
    if options.as_object().is_some_and(|o| !o.is_empty()) {
        body.insert("queue".into(), options);
    }
    let reply = api
        .subscribe(&args.topic, &args.name, &Value::Object(body))
        .await?;
    if args.common.json {
        println!("{}", api::to_json_line(&reply.body));
        return Ok(ExitCode::SUCCESS);
    }
    let created = reply.status == reqwest::StatusCode::CREATED;
    let info: SubscriptionInfo = reply.parse()?;
    let what = if created {
        format!("subscribed {} to {}", info.name, args.topic)
    } else {
        format!("subscription {} to {} exists", info.name, args.topic)
    };
    println!(
        "{what} (pattern {}); receive from queue {}",
        key_cell(&info.pattern),
        info.queue
    );
    Ok(ExitCode::SUCCESS)
}

/// Runs `weir unsubscribe`.
pub async fn unsubscribe(args: UnsubscribeArgs) -> anyhow::Result<ExitCode> {
    let api = args.common.server.api()?;
    api.unsubscribe(&args.topic, &args.name).await?;
    print_done(
        &args.common,
        &json!({ "unsubscribed": args.name, "topic": args.topic }),
        &format!(
            "unsubscribed {} from {} (its queue is deleted)",
            args.name, args.topic
        ),
    );
    Ok(ExitCode::SUCCESS)
}

/// Runs `weir subscriptions`.
pub async fn subscriptions(args: SubscriptionsArgs) -> anyhow::Result<ExitCode> {
    let api = args.common.server.api()?;
    let reply = api.subscriptions(&args.topic).await?;
    if args.common.json {
        println!("{}", api::to_json_line(&reply.body));
        return Ok(ExitCode::SUCCESS);
    }
    let list: SubscriptionList = reply.parse()?;
    if list.subscriptions.is_empty() {
        println!("no subscriptions to {}", args.topic);
        return Ok(ExitCode::SUCCESS);
    }
    let columns = [
        ("NAME", Align::Left),
        ("PATTERN", Align::Left),
        ("READY", Align::Right),
        ("LEASED", Align::Right),
        ("SENT", Align::Right),
        ("ACKED", Align::Right),
        ("QUEUE", Align::Left),
    ];
    let rows: Vec<Vec<String>> = list
        .subscriptions
        .iter()
        .map(|s| {
            let stats = s.stats.as_ref();
            vec![
                table::printable(&s.name),
                key_cell(&s.pattern),
                or_dash(stats.map(|s| s.ready)),
                or_dash(stats.map(|s| s.leased)),
                or_dash(stats.map(|s| s.sent_total)),
                or_dash(stats.map(|s| s.acked_total)),
                table::printable(&s.queue),
            ]
        })
        .collect();
    print!("{}", table(&columns, &rows));
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::ClientCommand;
    use crate::client::tests::{Cli, parse};
    use clap::Parser;

    #[test]
    fn exchange_create_sends_the_type_and_only_the_flags_given() {
        let ClientCommand::Exchange(ExchangeCommand::Create(args)) =
            parse(&["exchange", "create", "logs", "--type", "topic"])
        else {
            panic!("not an exchange create");
        };
        assert_eq!(exchange_options(&args), json!({"type": "topic"}));
        let ClientCommand::Exchange(ExchangeCommand::Create(args)) = parse(&[
            "exchange",
            "create",
            "tmp",
            "--type",
            "fanout",
            "--transient",
            "--auto-delete",
            "--alternate-exchange",
            "ae",
        ]) else {
            panic!("not an exchange create");
        };
        assert_eq!(
            exchange_options(&args),
            json!({"type": "fanout", "durable": false, "auto_delete": true, "alternate_exchange": "ae"})
        );
        let missing_type = Cli::try_parse_from(["weir", "exchange", "create", "x"]);
        assert!(missing_type.is_err());
    }

    #[test]
    fn amq_default_is_the_default_exchange_in_bodies() {
        assert_eq!(body_name("amq.default"), "");
        assert_eq!(body_name(""), "");
        assert_eq!(body_name("logs"), "logs");
        assert_eq!(exchange_label("amq.default"), "the default exchange");
        assert_eq!(exchange_label("logs"), "exchange logs");
    }

    #[test]
    fn outcome_lines_say_where_a_message_went() {
        let line = |v: Value| outcome_line(&serde_json::from_value(v).unwrap());
        assert_eq!(
            line(
                json!({"id": "a", "queues": ["q1", "q2"], "duplicate_in": [], "unroutable": false})
            ),
            "a -> q1, q2"
        );
        assert_eq!(
            line(json!({"id": "b", "queues": ["q1"], "duplicate_in": ["q2"], "unroutable": false})),
            "b -> q1 (duplicate, not enqueued again: q2)"
        );
        assert_eq!(
            line(json!({"id": "c", "queues": [], "duplicate_in": [], "unroutable": true})),
            "c -> no queue (unroutable, dropped)"
        );
    }
}
