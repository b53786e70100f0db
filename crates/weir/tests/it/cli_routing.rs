//! The routing commands (`weir exchange`, `bind`, `unbind`, `bindings`, `publish`,
//! `subscribe`, `unsubscribe`, `subscriptions`) run as the real binary against a
//! real broker.

// Each test is a session of commands, one after another, as a user would type them.
#![allow(clippy::too_many_lines)]

use serde_json::Value;
use weir_testkit::Broker;

use crate::Api;
use crate::cli::{Run, messages, weir};

async fn start() -> (Broker, Api) {
    let broker = Broker::start().await.expect("broker starts");
    let api = Api::new(&broker);
    (broker, api)
}

/// Asserts that `run` was refused by the broker (exit 1) with `code` on stderr and
/// nothing on stdout.
#[track_caller]
fn refused(run: &Run, code: &str) {
    assert_eq!(run.code, Some(1), "expected {code}: {}", run.stderr);
    assert!(run.stderr.contains(code), "expected {code}: {}", run.stderr);
    assert!(run.stdout.is_empty(), "{}", run.stdout);
}

/// The names in a `--json` list under `key`, field `field`.
fn names(run: &Run, key: &str, field: &str) -> Vec<String> {
    run.json()[key]
        .as_array()
        .unwrap_or_else(|| panic!("no {key}: {}", run.stdout))
        .iter()
        .map(|v| v[field].as_str().expect("a string").to_owned())
        .collect()
}

#[tokio::test]
async fn exchange_create_list_show_and_delete_round_trip() {
    let (b, _api) = start().await;
    let run = weir(&b, &["exchange", "create", "logs", "--type", "topic"], b"")
        .await
        .ok();
    assert_eq!(run.stdout.trim(), "created exchange logs (topic)");
    // The same declaration again is fine; a different one is refused with the reason.
    let run = weir(&b, &["exchange", "create", "logs", "--type", "topic"], b"")
        .await
        .ok();
    assert_eq!(run.stdout.trim(), "exchange logs exists with these options");
    let run = weir(&b, &["exchange", "create", "logs", "--type", "direct"], b"").await;
    refused(&run, "exchange_exists_with_different_options");

    let created = weir(
        &b,
        &[
            "exchange",
            "create",
            "tmp",
            "--type",
            "fanout",
            "--transient",
            "--auto-delete",
            "--alternate-exchange",
            "logs",
            "--json",
        ],
        b"",
    )
    .await
    .ok()
    .json();
    assert_eq!(created["type"], "fanout");
    assert_eq!(created["durable"], false);
    assert_eq!(created["auto_delete"], true);
    assert_eq!(created["alternate_exchange"], "logs");

    let run = weir(&b, &["exchange", "list"], b"").await.ok();
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert!(lines[0].starts_with("NAME"), "{}", run.stdout);
    assert!(
        lines
            .iter()
            .any(|l| l.split_whitespace().take(2).eq(["logs", "topic"])),
        "{}",
        run.stdout
    );
    let run = weir(&b, &["exchange", "list", "--json"], b"").await.ok();
    let listed = names(&run, "exchanges", "name");
    let own: Vec<&String> = listed.iter().filter(|n| !n.starts_with("amq.")).collect();
    assert_eq!(own, ["logs", "tmp"]);
    assert!(listed.iter().any(|n| n == "amq.topic"), "{listed:?}");

    weir(&b, &["queue", "create", "errors"], b"").await.ok();
    weir(&b, &["bind", "logs", "errors", "--key", "*.error"], b"")
        .await
        .ok();
    let run = weir(&b, &["exchange", "show", "logs"], b"").await.ok();
    assert!(run.stdout.starts_with("exchange logs\n"), "{}", run.stdout);
    assert!(
        run.stdout
            .lines()
            .any(|l| l.split_whitespace().eq(["type", "topic"])),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("bindings (1):"), "{}", run.stdout);
    assert!(
        run.stdout.lines().any(|l| l.split_whitespace().eq([
            "errors",
            "queue",
            "\"*.error\"",
            "-"
        ])),
        "{}",
        run.stdout
    );
    let shown = weir(&b, &["exchange", "show", "logs", "--json"], b"")
        .await
        .ok()
        .json();
    assert_eq!(shown["bindings"], 1);

    // In use: --if-unused refuses; a plain delete takes the bindings with it.
    let run = weir(&b, &["exchange", "delete", "logs", "--if-unused"], b"").await;
    refused(&run, "precondition_failed");
    let run = weir(&b, &["exchange", "delete", "logs"], b"").await.ok();
    assert_eq!(run.stdout.trim(), "deleted exchange logs");
    refused(
        &weir(&b, &["exchange", "show", "logs"], b"").await,
        "exchange_not_found",
    );
    let run = weir(&b, &["bindings", "--destination", "errors"], b"")
        .await
        .ok();
    assert_eq!(run.stdout.trim(), "no bindings");
    let run = weir(&b, &["exchange", "delete", "tmp", "--json"], b"")
        .await
        .ok();
    assert_eq!(run.json()["deleted"], "tmp");
    let run = weir(&b, &["exchange", "list"], b"").await.ok();
    // Only RabbitMQ's built-in exchanges are left.
    let rows: Vec<&str> = run.stdout.lines().skip(1).collect();
    assert!(
        !rows.is_empty() && rows.iter().all(|l| l.starts_with("amq.")),
        "{}",
        run.stdout
    );

    // The default exchange is built in; a type is required.
    let run = weir(
        &b,
        &["exchange", "create", "amq.default", "--type", "direct"],
        b"",
    )
    .await;
    refused(&run, "access_refused");
    let run = weir(&b, &["exchange", "create", "x"], b"").await;
    assert_eq!(run.code, Some(2), "{}", run.stderr);
}

#[tokio::test]
async fn bind_unbind_and_bindings_filter_and_refuse_what_the_broker_refuses() {
    let (b, _api) = start().await;
    for (name, kind) in [("a", "fanout"), ("b", "fanout"), ("h", "headers")] {
        weir(&b, &["exchange", "create", name, "--type", kind], b"")
            .await
            .ok();
    }
    for queue in ["q1", "q2"] {
        weir(&b, &["queue", "create", queue], b"").await.ok();
    }

    let run = weir(&b, &["bind", "a", "b", "--to-exchange"], b"")
        .await
        .ok();
    assert_eq!(run.stdout.trim(), "bound a -> exchange b, key \"\"");
    refused(
        &weir(&b, &["bind", "b", "a", "--to-exchange"], b"").await,
        "binding_loop",
    );
    weir(&b, &["bind", "b", "q1"], b"").await.ok();
    let run = weir(&b, &["bind", "a", "q2", "--key", "k"], b"").await.ok();
    assert_eq!(run.stdout.trim(), "bound a -> queue q2, key \"k\"");
    let run = weir(&b, &["bind", "a", "q2", "--key", "k"], b"").await.ok();
    assert_eq!(run.stdout.trim(), "binding a -> queue q2, key \"k\" exists");
    let run = weir(
        &b,
        &[
            "bind",
            "h",
            "q1",
            "--arg",
            "x-match=any",
            "--arg",
            "format=pdf",
            "--json",
        ],
        b"",
    )
    .await
    .ok();
    assert_eq!(run.json()["arguments"]["x-match"], "any");
    assert_eq!(run.json()["arguments"]["format"], "pdf");

    refused(
        &weir(&b, &["bind", "h", "q2", "--arg", "x-match=most"], b"").await,
        "invalid_argument",
    );
    refused(
        &weir(&b, &["bind", "a", "missing"], b"").await,
        "queue_not_found",
    );
    refused(
        &weir(&b, &["bind", "nope", "q1"], b"").await,
        "exchange_not_found",
    );
    refused(
        &weir(&b, &["bind", "amq.default", "q1"], b"").await,
        "access_refused",
    );

    let run = weir(&b, &["bindings"], b"").await.ok();
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert!(lines[0].starts_with("SOURCE"), "{}", run.stdout);
    assert_eq!(lines.len(), 5, "a header and four bindings: {}", run.stdout);
    let run = weir(&b, &["bindings", "--source", "a", "--json"], b"")
        .await
        .ok();
    assert_eq!(names(&run, "bindings", "destination"), ["b", "q2"]);
    let run = weir(&b, &["bindings", "--destination", "q1", "--json"], b"")
        .await
        .ok();
    assert_eq!(names(&run, "bindings", "source"), ["b", "h"]);

    // The bindings route: a reaches q1 through b, and q2 directly.
    let run = weir(&b, &["publish", "a", "", "hi", "--json"], b"")
        .await
        .ok();
    assert_eq!(
        run.json()["messages"][0]["queues"],
        serde_json::json!(["q1", "q2"])
    );

    let run = weir(&b, &["unbind", "a", "q2", "--key", "k"], b"")
        .await
        .ok();
    assert_eq!(run.stdout.trim(), "unbound a -> queue q2, key \"k\"");
    refused(
        &weir(&b, &["unbind", "a", "q2", "--key", "k"], b"").await,
        "binding_not_found",
    );
    let run = weir(&b, &["unbind", "a", "b", "--to-exchange", "--json"], b"")
        .await
        .ok();
    assert_eq!(run.json()["unbound"]["destination_type"], "exchange");
    let run = weir(&b, &["bindings", "--source", "a"], b"").await.ok();
    assert_eq!(run.stdout.trim(), "no bindings");
}

#[tokio::test]
async fn publish_prints_where_each_message_went_and_mandatory_fails_when_unroutable() {
    let (b, _api) = start().await;
    weir(
        &b,
        &["exchange", "create", "orders", "--type", "direct"],
        b"",
    )
    .await
    .ok();
    for queue in ["billing", "shipping"] {
        weir(&b, &["queue", "create", queue], b"").await.ok();
        weir(&b, &["bind", "orders", queue, "--key", "created"], b"")
            .await
            .ok();
    }

    let run = weir(
        &b,
        &["publish", "orders", "created", "order 1", "--id", "o-1"],
        b"",
    )
    .await
    .ok();
    assert_eq!(run.stdout.trim(), "o-1 -> billing, shipping");

    // Unroutable: dropped, and only an error with --mandatory.
    let run = weir(
        &b,
        &["publish", "orders", "cancelled", "x", "--id", "u-1"],
        b"",
    )
    .await
    .ok();
    assert_eq!(run.stdout.trim(), "u-1 -> no queue (unroutable, dropped)");
    let run = weir(
        &b,
        &[
            "publish",
            "orders",
            "cancelled",
            "x",
            "--id",
            "u-2",
            "--mandatory",
        ],
        b"",
    )
    .await;
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert_eq!(run.stdout.trim(), "u-2 -> no queue (unroutable, dropped)");
    assert!(
        run.stderr.contains("reached no queue") && run.stderr.contains("--mandatory"),
        "{}",
        run.stderr
    );

    // Stdin: one message per non-empty line, one line of output each, then totals.
    let run = weir(
        &b,
        &["publish", "orders", "created", "--header", "src=cli"],
        b"a\nb\n\nc\r\n",
    )
    .await
    .ok();
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{}", run.stdout);
    assert!(
        lines[..3]
            .iter()
            .all(|l| l.ends_with(" -> billing, shipping")),
        "{}",
        run.stdout
    );
    assert_eq!(
        lines[3],
        "published 3 messages through exchange orders: 6 copies enqueued, 0 unroutable"
    );
    let run = weir(&b, &["publish", "orders", "created", "--id", "x"], b"a\n").await;
    assert_eq!(run.code, Some(2), "--id with stdin: {}", run.stderr);

    // The default exchange, as "" or amq.default: the key names the queue.
    let run = weir(&b, &["publish", "", "billing", "direct"], b"")
        .await
        .ok();
    assert!(run.stdout.trim().ends_with(" -> billing"), "{}", run.stdout);
    let run = weir(
        &b,
        &[
            "publish",
            "amq.default",
            "nowhere",
            "x",
            "--mandatory",
            "--json",
        ],
        b"",
    )
    .await;
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert_eq!(run.json()["returned"], 1);
    assert!(
        run.stderr.contains("the default exchange"),
        "{}",
        run.stderr
    );

    let got = messages(
        &weir(
            &b,
            &["recv", "billing", "--max", "10", "--json", "--ack"],
            b"",
        )
        .await
        .ok(),
    );
    let bodies: Vec<&str> = got
        .iter()
        .map(|m| m["body"].as_str().expect("text"))
        .collect();
    assert_eq!(bodies, ["order 1", "a", "b", "c", "direct"]);
    assert_eq!(got[0]["id"], "o-1");
    assert_eq!(got[1]["headers"]["src"], "cli");
    let got = messages(
        &weir(&b, &["recv", "shipping", "--max", "10", "--json"], b"")
            .await
            .ok(),
    );
    assert_eq!(got.len(), 4, "{got:?}");

    // Headers exchanges route on --header.
    weir(
        &b,
        &["exchange", "create", "docs", "--type", "headers"],
        b"",
    )
    .await
    .ok();
    weir(&b, &["queue", "create", "pdfs"], b"").await.ok();
    weir(&b, &["bind", "docs", "pdfs", "--arg", "format=pdf"], b"")
        .await
        .ok();
    let run = weir(
        &b,
        &[
            "publish",
            "docs",
            "",
            "report",
            "--header",
            "format=pdf",
            "--json",
        ],
        b"",
    )
    .await
    .ok();
    assert_eq!(run.json()["routed"], 1);
    let run = weir(
        &b,
        &[
            "publish",
            "docs",
            "",
            "log",
            "--header",
            "format=txt",
            "--json",
        ],
        b"",
    )
    .await
    .ok();
    assert_eq!(run.json()["unroutable"], 1);

    refused(
        &weir(&b, &["publish", "nope", "k", "x"], b"").await,
        "exchange_not_found",
    );
}

#[tokio::test]
async fn subscribers_each_get_a_copy_and_unsubscribe_deletes_their_queue() {
    let (b, api) = start().await;
    let run = weir(&b, &["subscribe", "user.created", "email"], b"")
        .await
        .ok();
    assert_eq!(
        run.stdout.trim(),
        "subscribed email to user.created (pattern \"#\"); receive from queue sub:user.created:email"
    );
    let sms = [
        "subscribe",
        "user.created",
        "sms",
        "--pattern",
        "user.*",
        "--max-deliveries",
        "3",
    ];
    weir(&b, &sms, b"").await.ok();
    let run = weir(&b, &sms, b"").await.ok();
    assert!(
        run.stdout
            .starts_with("subscription sms to user.created exists"),
        "{}",
        run.stdout
    );
    // The queue options reached the subscriber's queue.
    let info = weir(
        &b,
        &["queue", "show", "sub:user.created:sms", "--json"],
        b"",
    )
    .await
    .ok()
    .json();
    assert_eq!(info["options"]["max_deliveries"], 3);

    let run = weir(&b, &["subscriptions", "user.created"], b"").await.ok();
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert!(lines[0].starts_with("NAME"), "{}", run.stdout);
    assert!(lines[1].starts_with("email "), "{}", run.stdout);
    assert!(lines[2].starts_with("sms "), "{}", run.stdout);

    // One publish, one copy per subscriber.
    let run = weir(
        &b,
        &[
            "publish",
            "user.created",
            "user.created",
            "{\"user_id\": 123}",
        ],
        b"",
    )
    .await
    .ok();
    assert!(
        run.stdout
            .trim()
            .ends_with(" -> sub:user.created:email, sub:user.created:sms"),
        "{}",
        run.stdout
    );
    for queue in ["sub:user.created:email", "sub:user.created:sms"] {
        let got = messages(
            &weir(&b, &["recv", queue, "--json", "--ack"], b"")
                .await
                .ok(),
        );
        assert_eq!(got.len(), 1, "{queue}: {got:?}");
        assert_eq!(got[0]["body"], "{\"user_id\": 123}");
    }
    let run = weir(&b, &["subscriptions", "user.created", "--json"], b"")
        .await
        .ok();
    let subs = run.json()["subscriptions"].clone();
    assert!(
        subs.as_array()
            .expect("subscriptions")
            .iter()
            .all(|s| s["stats"]["acked_total"] == 1),
        "{subs}"
    );

    // Another pattern replaces the old one.
    let run = weir(
        &b,
        &[
            "subscribe",
            "user.created",
            "sms",
            "--pattern",
            "order.*",
            "--max-deliveries",
            "3",
            "--json",
        ],
        b"",
    )
    .await
    .ok();
    assert_eq!(run.json()["pattern"], "order.*");
    let run = weir(&b, &["subscriptions", "user.created", "--json"], b"")
        .await
        .ok();
    assert_eq!(names(&run, "subscriptions", "pattern"), ["#", "order.*"]);
    weir(&b, &["publish", "user.created", "user.deleted", "bye"], b"")
        .await
        .ok();
    assert_eq!(api.stats("sub:user.created:email").await["ready"], 1);
    assert_eq!(api.stats("sub:user.created:sms").await["ready"], 0);

    let run = weir(&b, &["unsubscribe", "user.created", "sms"], b"")
        .await
        .ok();
    assert_eq!(
        run.stdout.trim(),
        "unsubscribed sms from user.created (its queue is deleted)"
    );
    refused(
        &weir(&b, &["queue", "show", "sub:user.created:sms"], b"").await,
        "queue_not_found",
    );
    refused(
        &weir(&b, &["unsubscribe", "user.created", "sms"], b"").await,
        "subscription_not_found",
    );
    let run = weir(&b, &["subscriptions", "user.created", "--json"], b"")
        .await
        .ok();
    assert_eq!(names(&run, "subscriptions", "name"), ["email"]);
    weir(&b, &["unsubscribe", "user.created", "email"], b"")
        .await
        .ok();
    let run = weir(&b, &["subscriptions", "user.created"], b"").await.ok();
    assert_eq!(run.stdout.trim(), "no subscriptions to user.created");

    // Only topic exchanges take subscriptions; unknown topics have none to list.
    weir(&b, &["exchange", "create", "fan", "--type", "fanout"], b"")
        .await
        .ok();
    refused(
        &weir(&b, &["subscribe", "fan", "x"], b"").await,
        "precondition_failed",
    );
    refused(
        &weir(&b, &["subscriptions", "nosuch"], b"").await,
        "exchange_not_found",
    );
    let value: Value = weir(&b, &["exchange", "show", "user.created", "--json"], b"")
        .await
        .ok()
        .json();
    assert_eq!(value["type"], "topic", "subscribe created the topic");
}
