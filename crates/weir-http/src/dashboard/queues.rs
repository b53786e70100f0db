//! The Queues pages: what is backing up? A table of every queue the caller may
//! see, filtered by name, sorted by any column and paged (100 a page); and a page
//! per queue with its live depth and rates, settings, bindings, a peek at its first
//! ready messages, a form to publish a test message and one to purge it.

use std::fmt::Write as _;

use askama::Template;
use axum::extract::{Form, Path, Query, State};
use axum::response::Response;
use bytes::Bytes;
use serde::Deserialize;
use weir_broker::Broker;
use weir_broker::access::Operation;
use weir_broker::api::{QueueInfo, SendMessage};
use weir_broker::names::split;

use super::{Flash, PageInfo, allowed, done, format, render, segment, visible_vhosts};
use crate::auth::Caller;

/// Rows per page.
pub(crate) const PAGE: usize = 100;

/// A queue as a table row shows it.
pub(crate) struct Row {
    pub(crate) name: String,
    pub(crate) vhost: String,
    pub(crate) href: String,
    pub(crate) ready: String,
    pub(crate) unacked: String,
    pub(crate) delayed: String,
    pub(crate) consumers: String,
    pub(crate) age: String,
    pub(crate) bytes: String,
    /// The most times one of its leases held now was extended.
    pub(crate) extensions: String,
}

impl Row {
    pub(crate) fn of(q: &QueueInfo) -> Row {
        let (vhost, name) = split(&q.name);
        let s = &q.stats;
        Row {
            href: href(vhost, name),
            name: name.to_owned(),
            vhost: vhost.to_owned(),
            ready: format::count(s.ready),
            unacked: format::count(s.leased),
            delayed: format::count(s.delayed),
            consumers: format::count(s.consumers),
            age: s.oldest_age_ms.map_or_else(String::new, format::age_ms),
            bytes: format::bytes(s.bytes),
            extensions: format::count(u64::from(s.max_lease_extensions)),
        }
    }
}

/// A queue page's address.
pub(crate) fn href(vhost: &str, name: &str) -> String {
    format!("/ui/queues/{}/{}", segment(vhost), segment(name))
}

/// Every queue in the vhosts `caller` may see.
pub(crate) async fn visible(broker: &Broker, caller: &Caller) -> Vec<QueueInfo> {
    let vhosts = visible_vhosts(broker, &caller.principal);
    let mut queues = broker.list().await;
    queues.retain(|q| vhosts.iter().any(|v| v == split(&q.name).0));
    queues
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct ListQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    sort: Option<String>,
    #[serde(default)]
    dir: Option<String>,
    #[serde(default)]
    page: Option<usize>,
    #[serde(flatten)]
    flash: Flash,
}

/// The sortable columns: key, heading, numeric.
const COLUMNS: [(&str, &str, bool); 8] = [
    ("name", "Name", false),
    ("vhost", "Vhost", false),
    ("ready", "Ready", true),
    ("unacked", "Unacked", true),
    ("delayed", "Delayed", true),
    ("consumers", "Receivers", true),
    ("age", "Oldest", true),
    ("bytes", "Bytes", true),
];

#[derive(Template)]
#[template(path = "queues.html")]
struct QueuesPage {
    page: PageInfo,
    filter: String,
    sort: String,
    dir: String,
    headings: Vec<Heading>,
    total: usize,
    page_no: usize,
    pages: usize,
    rows: Vec<Row>,
    prev: Option<String>,
    next: Option<String>,
}

/// A column heading: its sort link, and an arrow on the current sort.
struct Heading {
    href: String,
    label: &'static str,
    class: &'static str,
    arrow: &'static str,
}

/// The headings of a table sorted by `sort` in `dir`: each links to sorting by
/// its column (the other way for the current one; numbers largest first).
fn headings(filter: &str, sort: &str, dir: &str) -> Vec<Heading> {
    COLUMNS
        .iter()
        .map(|&(key, label, numeric)| {
            let current = key == sort;
            let next = match (current, dir, numeric) {
                (true, "asc", _) | (false, _, true) => "desc",
                _ => "asc",
            };
            Heading {
                href: list_link(filter, key, next, 1),
                label,
                class: if numeric { "n" } else { "" },
                arrow: match (current, dir) {
                    (false, _) => "",
                    (true, "desc") => " ▾",
                    (true, _) => " ▴",
                },
            }
        })
        .collect()
}

fn list_link(filter: &str, sort: &str, dir: &str, page: usize) -> String {
    format!(
        "/ui/queues?q={}&sort={sort}&dir={dir}&page={page}",
        segment(filter)
    )
}

/// `GET /ui/queues`.
pub(crate) async fn list(
    caller: Caller,
    State(broker): State<Broker>,
    Query(query): Query<ListQuery>,
) -> Response {
    let mut queues = visible(&broker, &caller).await;
    let filter = query.q.trim().to_owned();
    if !filter.is_empty() {
        let needle = filter.to_lowercase();
        queues.retain(|q| split(&q.name).1.to_lowercase().contains(&needle));
    }
    let sort = query
        .sort
        .filter(|s| COLUMNS.iter().any(|(k, _, _)| k == s))
        .unwrap_or_else(|| "name".to_owned());
    let dir = if query.dir.as_deref() == Some("desc") {
        "desc"
    } else {
        "asc"
    };
    sort_queues(&mut queues, &sort);
    if dir == "desc" {
        queues.reverse();
    }
    let total = queues.len();
    let pages = total.div_ceil(PAGE).max(1);
    let page_no = query.page.unwrap_or(1).clamp(1, pages);
    let rows = queues
        .iter()
        .skip((page_no - 1) * PAGE)
        .take(PAGE)
        .map(Row::of)
        .collect();
    let headings = headings(&filter, &sort, dir);
    render(&QueuesPage {
        page: PageInfo::new("queues", &caller, &query.flash),
        prev: (page_no > 1).then(|| list_link(&filter, &sort, dir, page_no - 1)),
        next: (page_no < pages).then(|| list_link(&filter, &sort, dir, page_no + 1)),
        filter,
        dir: dir.to_owned(),
        sort,
        headings,
        total,
        page_no,
        pages,
        rows,
    })
}

fn sort_queues(queues: &mut [QueueInfo], by: &str) {
    let key = |q: &QueueInfo| -> u64 {
        let s = &q.stats;
        match by {
            "ready" => s.ready,
            "unacked" => s.leased,
            "delayed" => s.delayed,
            "consumers" => s.consumers,
            "age" => s.oldest_age_ms.unwrap_or(0),
            "bytes" => s.bytes,
            _ => 0,
        }
    };
    match by {
        "name" => queues.sort_by(|a, b| split(&a.name).1.cmp(split(&b.name).1)),
        "vhost" => queues.sort_by(|a, b| split(&a.name).cmp(&split(&b.name))),
        _ => queues.sort_by(|a, b| key(a).cmp(&key(b)).then_with(|| a.name.cmp(&b.name))),
    }
}

/// A peeked message as the queue page shows it.
struct Peeked {
    id: String,
    deliveries: u32,
    body: String,
}

/// Most ready messages a queue page peeks at.
const PEEK: u32 = 10;

/// Longest body shown, in bytes.
const BODY_SHOWN: usize = 2000;

/// A message body as text, cut to [`BODY_SHOWN`] bytes.
pub(crate) fn shown_body(body: &Bytes) -> String {
    let cut = &body[..body.len().min(BODY_SHOWN)];
    let mut text = String::from_utf8_lossy(cut).into_owned();
    if body.len() > BODY_SHOWN {
        let _ = write!(text, " … ({} bytes in all)", body.len());
    }
    text
}

#[derive(Template)]
#[template(path = "queue.html")]
struct QueuePage {
    page: PageInfo,
    name: String,
    vhost: String,
    base: String,
    live: String,
    f: Row,
    settings: Vec<(&'static str, String)>,
    bindings: Vec<(String, String)>,
    peeked: Vec<Peeked>,
    consumers: Vec<ConsumerRow>,
}

/// An AMQP consumer of the queue, with its connection.
struct ConsumerRow {
    tag: String,
    href: String,
    peer: String,
    user: String,
    client: String,
    unacked: String,
}

/// The AMQP consumers of queue `name` in `vhost`, linked to their connections.
fn consumers(broker: &Broker, vhost: &str, name: &str) -> Vec<ConsumerRow> {
    broker
        .connections()
        .consumers_of(&weir_broker::names::join(vhost, name))
        .into_iter()
        .map(|(c, tag)| ConsumerRow {
            tag,
            href: format!("/ui/connections#connection-{}", c.id),
            peer: c.peer,
            user: c.user.unwrap_or_default(),
            client: c.client.product.unwrap_or_default(),
            unacked: format::count(c.figures.unacked),
        })
        .collect()
}

fn settings(info: &QueueInfo) -> Vec<(&'static str, String)> {
    let o = &info.options;
    let or_none = |v: Option<String>| v.unwrap_or_else(|| "none".to_owned());
    vec![
        (
            "visibility timeout",
            format::age_ms(o.visibility_timeout_ms),
        ),
        (
            "max deliveries",
            or_none(o.max_deliveries.map(|n| n.to_string())),
        ),
        ("dead-letter queue", or_none(o.dead_letter_queue.clone())),
        ("message TTL", or_none(o.message_ttl_ms.map(format::age_ms))),
        ("max length", or_none(o.max_length.map(format::count))),
        ("durable", (!o.transient).to_string()),
        ("messages sent, ever", format::count(info.stats.sent_total)),
        ("acked, ever", format::count(info.stats.acked_total)),
        (
            "dead-lettered, ever",
            format::count(info.stats.dead_lettered_total),
        ),
        ("on disk", format::bytes(info.stats.disk_bytes)),
    ]
}

/// `GET /ui/queues/{vhost}/{name}`.
pub(crate) async fn page(
    caller: Caller,
    State(broker): State<Broker>,
    Path((vhost, name)): Path<(String, String)>,
    Query(flash): Query<Flash>,
) -> Response {
    let found = match broker.access().check_view(&caller.principal, &vhost) {
        Ok(()) => match broker.vhost(&vhost) {
            Ok(view) => view.info(&name).await.map(|info| (view, info)).ok(),
            Err(_) => None,
        },
        Err(_) => None,
    };
    let Some((view, info)) = found else {
        return done(
            "/ui/queues",
            Err(format!(
                "no queue '{name}' in vhost '{vhost}' that you may see"
            )),
        );
    };
    let peeked = view
        .peek(&name, None, PEEK)
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|d| Peeked {
            id: d.id,
            deliveries: d.delivery_count,
            body: shown_body(&d.body),
        })
        .collect();
    let bindings = view
        .bindings(None, Some(&name))
        .into_iter()
        .map(|b| (b.source, b.routing_key))
        .collect();
    let base = href(&vhost, &name);
    let mut row = Row::of(&info);
    row.age = info
        .stats
        .oldest_age_ms
        .map_or_else(|| "empty".to_owned(), format::age_ms);
    render(&QueuePage {
        page: PageInfo::new("queues", &caller, &flash),
        consumers: consumers(&broker, &vhost, &name),
        live: format!("/ui/live/queues/{}/{}", segment(&vhost), segment(&name)),
        settings: settings(&info),
        f: row,
        base,
        name,
        vhost,
        bindings,
        peeked,
    })
}

#[derive(Deserialize)]
pub(crate) struct PurgeForm {
    #[serde(default)]
    confirm: Option<String>,
}

/// `POST /ui/queues/{vhost}/{name}/purge`: needs the form's confirmation box.
pub(crate) async fn purge(
    caller: Caller,
    State(broker): State<Broker>,
    Path((vhost, name)): Path<(String, String)>,
    Form(form): Form<PurgeForm>,
) -> Response {
    let back = href(&vhost, &name);
    if form.confirm.as_deref() != Some("yes") {
        return done(
            &back,
            Err("Nothing purged: tick the box to confirm.".to_owned()),
        );
    }
    let outcome = async {
        allowed(
            &broker,
            &caller.principal,
            &vhost,
            Operation::Read,
            "queue",
            &name,
        )?;
        let view = broker.vhost(&vhost).map_err(|e| e.to_string())?;
        let n = view.purge(&name).await.map_err(|e| e.to_string())?;
        Ok(format!(
            "Purged {} message{}.",
            format::count(n),
            if n == 1 { "" } else { "s" }
        ))
    }
    .await;
    done(&back, outcome)
}

#[derive(Deserialize)]
pub(crate) struct PublishForm {
    body: String,
}

/// `POST /ui/queues/{vhost}/{name}/publish`: a test message through the default
/// exchange (needs `write` on it, as an HTTP send does).
pub(crate) async fn publish(
    caller: Caller,
    State(broker): State<Broker>,
    Path((vhost, name)): Path<(String, String)>,
    Form(form): Form<PublishForm>,
) -> Response {
    let back = href(&vhost, &name);
    let outcome = async {
        allowed(
            &broker,
            &caller.principal,
            &vhost,
            Operation::Write,
            "exchange",
            "",
        )?;
        let view = broker.vhost(&vhost).map_err(|e| e.to_string())?;
        let message = SendMessage {
            body: Bytes::from(form.body),
            ..SendMessage::default()
        };
        let sent = view
            .send(&name, vec![message])
            .await
            .map_err(|e| e.to_string())?;
        broker.traffic().confirmed(sent.len() as u64);
        Ok("Published a test message.".to_owned())
    }
    .await;
    done(&back, outcome)
}
