//! `weir queue` (create, list, show, delete, purge): tables of queues and their options.

use std::process::ExitCode;

use clap::ValueEnum;
use serde_json::{Value, json};

use super::api::{QueueInfo, QueueList};
use super::table::{self, Align, age, bytes, or_dash, table};
use super::{QueueCommand, QueueOptionArgs, api, print_count};

pub(super) async fn queue(cmd: QueueCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        QueueCommand::Create(args) => {
            let api = args.common.server.api()?;
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
            let api = args.common.server.api()?;
            let reply = api.list().await?;
            if args.common.json {
                println!("{}", api::to_json_line(&reply.body));
            } else {
                let list: QueueList = reply.parse()?;
                print!("{}", queue_table(&list.queues));
            }
        }
        QueueCommand::Show(args) => {
            let api = args.common.server.api()?;
            let reply = api.info(&args.name).await?;
            if args.common.json {
                println!("{}", api::to_json_line(&reply.body));
            } else {
                print!("{}", queue_details(&reply.body));
            }
        }
        QueueCommand::Delete(args) => {
            let api = args.common.server.api()?;
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
            let api = args.common.server.api()?;
            let reply = api.purge(&args.name).await?;
            let template = format!("purged {{messages}} from {}", args.name);
            print_count(&args.common, &reply.body, "purged", &template);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The options JSON of `queue create` and `subscribe`: only the flags given, so the broker's
/// defaults apply to the rest (and an identical re-create matches).
pub(super) fn create_options(args: &QueueOptionArgs) -> Value {
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

pub(super) fn queue_table(queues: &[QueueInfo]) -> String {
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
pub(super) fn queue_details(info: &Value) -> String {
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
