//! The Dead letters pages: why did it fail? A list of the dead-letter queues (those
//! a queue names as its `dead_letter_queue`, or reaches through its dead-letter
//! exchange), and a page per dead-letter queue with each message's reason, source
//! queue, delivery count, times and body; redrive one, the selected or all of
//! them back to their source queues, or delete them. Reached from the Overview in
//! two clicks (Dead letters, then the queue).
//!
//! Redriving all runs in the background (in chunks, as `POST
//! .../dead-letters/redrive` does); the page's live count shows it draining.

use std::collections::{BTreeMap, BTreeSet};

use askama::Template;
use axum::extract::{Form, Path, Query, State};
use axum::response::Response;
use weir_broker::Broker;
use weir_broker::access::Operation;
use weir_broker::api::{Delivery, QueueInfo};
use weir_broker::names::split;

use super::queues::{shown_body, visible};
use super::{Flash, PageInfo, allowed, done, format, render, segment};
use crate::auth::Caller;

/// Most messages a dead-letter queue's page shows.
const SHOWN: u32 = 100;

/// The dead-letter queues among `queues` (broker-wide names), each with the
/// queues that send to it.
pub(crate) fn dead_letter_queues(
    broker: &Broker,
    queues: &[QueueInfo],
) -> BTreeMap<String, BTreeSet<String>> {
    let mut found: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let none = BTreeMap::new();
    for q in queues {
        let o = &q.options;
        let mut targets = Vec::new();
        if let Some(d) = &o.dead_letter_queue {
            targets.push(d.clone());
        }
        if let Some(x) = &o.dead_letter_exchange {
            match &o.dead_letter_routing_key {
                Some(key) => targets.extend(broker.route_test(x, key, &none).unwrap_or_default()),
                // Dead letters keep their own routing keys: any queue bound there.
                None => targets.extend(
                    broker
                        .bindings(Some(x), None)
                        .into_iter()
                        .map(|b| b.destination),
                ),
            }
        }
        for t in targets {
            found
                .entry(t)
                .or_default()
                .insert(split(&q.name).1.to_owned());
        }
    }
    found
}

struct DlqRow {
    name: String,
    vhost: String,
    href: String,
    ready: String,
    sources: String,
}

#[derive(Template)]
#[template(path = "dead_letters.html")]
struct DeadLettersPage {
    page: PageInfo,
    rows: Vec<DlqRow>,
}

/// The dead-letter queue page's address.
fn href(vhost: &str, name: &str) -> String {
    format!("/ui/dead-letters/{}/{}", segment(vhost), segment(name))
}

/// `GET /ui/dead-letters`.
pub(crate) async fn list(
    caller: Caller,
    State(broker): State<Broker>,
    Query(flash): Query<Flash>,
) -> Response {
    let queues = visible(&broker, &caller).await;
    let dlqs = dead_letter_queues(&broker, &queues);
    let rows = queues
        .iter()
        .filter_map(|q| {
            let sources = dlqs.get(&q.name)?;
            let (vhost, name) = split(&q.name);
            Some(DlqRow {
                href: href(vhost, name),
                name: name.to_owned(),
                vhost: vhost.to_owned(),
                ready: format::count(q.stats.ready),
                sources: sources.iter().cloned().collect::<Vec<_>>().join(", "),
            })
        })
        .collect();
    render(&DeadLettersPage {
        page: PageInfo::new("dead-letters", &caller, &flash),
        rows,
    })
}

struct Letter {
    position: u64,
    reason: String,
    source: String,
    deliveries: u32,
    died: String,
    enqueued: String,
    id: String,
    body: String,
}

impl Letter {
    fn of(d: Delivery) -> Letter {
        let (reason, source, deliveries, died) = match &d.dead_letter {
            Some(info) => (
                info.reason.rabbitmq_name().to_owned(),
                info.source_queue.clone(),
                info.delivery_count,
                format::time_ms(info.time_ms),
            ),
            None => (
                "not dead-lettered".to_owned(),
                String::new(),
                0,
                String::new(),
            ),
        };
        Letter {
            position: d.position.unwrap_or_default(),
            reason,
            source,
            deliveries,
            died,
            enqueued: format::time_ms(d.enqueued_at_ms),
            id: d.id,
            body: shown_body(&d.body),
        }
    }
}

#[derive(Template)]
#[template(path = "dead_letter.html")]
struct DeadLetterPage {
    page: PageInfo,
    name: String,
    vhost: String,
    base: String,
    live: String,
    ready: String,
    letters: Vec<Letter>,
}

/// `GET /ui/dead-letters/{vhost}/{name}`.
pub(crate) async fn page(
    caller: Caller,
    State(broker): State<Broker>,
    Path((vhost, name)): Path<(String, String)>,
    Query(flash): Query<Flash>,
) -> Response {
    let found = async {
        allowed(
            &broker,
            &caller.principal,
            &vhost,
            Operation::Read,
            "queue",
            &name,
        )?;
        let view = broker.vhost(&vhost).map_err(|e| e.to_string())?;
        let info = view.info(&name).await.map_err(|e| e.to_string())?;
        let letters = view
            .peek(&name, None, SHOWN)
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>((info, letters))
    }
    .await;
    let (info, letters) = match found {
        Ok(found) => found,
        Err(e) => return done("/ui/dead-letters", Err(e)),
    };
    render(&DeadLetterPage {
        page: PageInfo::new("dead-letters", &caller, &flash),
        base: href(&vhost, &name),
        live: format!("/ui/live/queues/{}/{}", segment(&vhost), segment(&name)),
        ready: format::count(info.stats.ready),
        letters: letters.into_iter().map(Letter::of).collect(),
        name,
        vhost,
    })
}

/// `POST /ui/dead-letters/{vhost}/{name}/act`: the form's fields, as pairs (the
/// selection's checkboxes repeat `at`). `one` is `redrive:<position>` or
/// `delete:<position>` (a row's button); `bulk` is `redrive`, `delete` (the
/// selected rows) or `redrive-all`.
pub(crate) async fn act(
    caller: Caller,
    State(broker): State<Broker>,
    Path((vhost, name)): Path<(String, String)>,
    Form(fields): Form<Vec<(String, String)>>,
) -> Response {
    let back = href(&vhost, &name);
    let field = |key: &str| {
        fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };
    let selected: Vec<u64> = fields
        .iter()
        .filter(|(k, _)| k == "at")
        .filter_map(|(_, v)| v.parse().ok())
        .collect();
    let (what, positions) = match (field("one"), field("bulk")) {
        (Some(one), _) => match one.split_once(':') {
            Some((what, p)) => (what, p.parse().ok().into_iter().collect()),
            None => (one, Vec::new()),
        },
        (None, Some(bulk)) => (bulk, selected),
        (None, None) => ("", Vec::new()),
    };
    if let Err(e) = allowed(
        &broker,
        &caller.principal,
        &vhost,
        Operation::Read,
        "queue",
        &name,
    ) {
        return done(&back, Err(e));
    }
    let Ok(view) = broker.vhost(&vhost) else {
        return done("/ui/dead-letters", Err(format!("no vhost '{vhost}'")));
    };
    if what == "redrive-all" {
        let total = view.info(&name).await.map_or(0, |i| i.stats.ready);
        let queue = name.clone();
        tokio::spawn(async move {
            let max = u32::try_from(total).unwrap_or(u32::MAX).max(1);
            if let Err(e) = view.redrive(&queue, None, max).await {
                tracing::warn!(%queue, error = %e, "a redrive from the dashboard failed");
            }
        });
        return done(
            &back,
            Ok(format!(
                "Redriving {} messages: the count above falls as they move.",
                format::count(total)
            )),
        );
    }
    if positions.is_empty() {
        return done(&back, Err("No message selected.".to_owned()));
    }
    let outcome = match what {
        "redrive" => view
            .redrive_at(&name, positions)
            .await
            .map(|n| format!("Redrove {} message{}.", format::count(n), plural(n))),
        "delete" => view
            .remove_at(&name, positions)
            .await
            .map(|n| format!("Deleted {} message{}.", format::count(n), plural(n))),
        other => return done(&back, Err(format!("unknown action '{other}'"))),
    };
    done(&back, outcome.map_err(|e| e.to_string()))
}

fn plural(n: u64) -> &'static str {
    if n == 1 { "" } else { "s" }
}
