//! `weir recv` and `weir dlq peek`: deliveries as a table, or as JSON.

use std::process::ExitCode;

use anyhow::Context as _;

use super::api::{Delivery, Messages, Settle};
use super::table::{self, Align, age, body_cell, headers_cell, or_dash, table};
use super::{DlqPeekArgs, LONG_POLL_MS, RecvArgs, api};

pub(super) async fn recv(args: RecvArgs) -> anyhow::Result<ExitCode> {
    let api = args.common.server.api()?;
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

pub(super) fn deliveries_table(messages: &[Delivery], with_receipt: bool) -> String {
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

pub(super) async fn dlq_peek(args: DlqPeekArgs) -> anyhow::Result<ExitCode> {
    let api = args.common.server.api()?;
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
