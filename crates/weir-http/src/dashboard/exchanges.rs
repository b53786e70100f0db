//! The Exchanges pages: where does key K go? Every exchange the caller may see with
//! its type, bindings and unroutable count; and a page per exchange with its
//! settings, its bindings and a routing test box (a key and headers: the queues
//! and streams a message would reach, nothing published).

use std::collections::BTreeMap;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use serde::Deserialize;
use weir_broker::Broker;
use weir_broker::ExchangeInfo;

use super::{Flash, PageInfo, done, format, render, segment, visible_vhosts};
use crate::auth::Caller;

/// An exchange's name as shown (the default exchange has none).
fn label(name: &str) -> String {
    if name.is_empty() {
        "(default)".to_owned()
    } else {
        name.to_owned()
    }
}

fn href(vhost: &str, name: &str) -> String {
    // The default exchange's empty name as `amq.default`, as RabbitMQ's API has it.
    let name = if name.is_empty() { "amq.default" } else { name };
    format!("/ui/exchanges/{}/{}", segment(vhost), segment(name))
}

fn kind(x: &ExchangeInfo) -> String {
    format!("{:?}", x.options.kind).to_lowercase()
}

struct ExchangeRow {
    name: String,
    label: String,
    vhost: String,
    href: String,
    kind: String,
    durable: bool,
    internal: bool,
    bindings: usize,
    unroutable: String,
}

#[derive(Template)]
#[template(path = "exchanges.html")]
struct ExchangesPage {
    page: PageInfo,
    rows: Vec<ExchangeRow>,
}

/// `GET /ui/exchanges`.
pub(crate) async fn list(
    caller: Caller,
    State(broker): State<Broker>,
    Query(flash): Query<Flash>,
) -> Response {
    let mut rows = Vec::new();
    for vhost in visible_vhosts(&broker, &caller.principal) {
        let Ok(view) = broker.vhost(&vhost) else {
            continue;
        };
        for x in view.exchanges() {
            rows.push(ExchangeRow {
                href: href(&vhost, &x.name),
                label: label(&x.name),
                vhost: vhost.clone(),
                kind: kind(&x),
                durable: x.options.durable,
                internal: x.options.internal,
                bindings: x.bindings,
                unroutable: format::count(view.unroutable_count(&x.name)),
                name: x.name,
            });
        }
    }
    render(&ExchangesPage {
        page: PageInfo::new("exchanges", &caller, &flash),
        rows,
    })
}

#[derive(Template)]
#[template(path = "exchange.html")]
struct ExchangePage {
    page: PageInfo,
    label: String,
    vhost: String,
    base: String,
    kind: String,
    durable: bool,
    internal: bool,
    alternate: String,
    unroutable: String,
    key: String,
    headers: String,
    tested: bool,
    routed: Vec<String>,
    route_error: Option<String>,
    /// Destination, its kind, routing key, arguments.
    bindings: Vec<(String, String, String, String)>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RouteQuery {
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    headers: String,
    #[serde(flatten)]
    flash: Flash,
}

/// `name=value, name=value` as headers.
fn parse_headers(text: &str) -> BTreeMap<String, String> {
    text.split(',')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            Some((k.trim().to_owned(), v.trim().to_owned()))
        })
        .filter(|(k, _)| !k.is_empty())
        .collect()
}

/// `GET /ui/exchanges/{vhost}/{name}` (`?key=&headers=` tests the routing).
pub(crate) async fn page(
    caller: Caller,
    State(broker): State<Broker>,
    Path((vhost, name)): Path<(String, String)>,
    Query(query): Query<RouteQuery>,
) -> Response {
    let name = if name == "amq.default" {
        String::new()
    } else {
        name
    };
    let view = broker
        .access()
        .check_view(&caller.principal, &vhost)
        .ok()
        .and_then(|()| broker.vhost(&vhost).ok());
    let Some((view, x)) = view.and_then(|v| v.exchange(&name).ok().map(|x| (v, x))) else {
        return done(
            "/ui/exchanges",
            Err(format!(
                "no exchange '{name}' in vhost '{vhost}' that you may see"
            )),
        );
    };
    let (routed, route_error) = match &query.key {
        Some(key) => match view.route_test(&name, key, &parse_headers(&query.headers)) {
            Ok(routed) => (routed, None),
            Err(e) => (Vec::new(), Some(e.to_string())),
        },
        None => (Vec::new(), None),
    };
    let bindings = view
        .bindings(Some(&name), None)
        .into_iter()
        .map(|b| {
            let args = b
                .arguments
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(", ");
            (
                b.destination,
                format!("{:?}", b.destination_type).to_lowercase(),
                b.routing_key,
                args,
            )
        })
        .collect();
    render(&ExchangePage {
        page: PageInfo::new("exchanges", &caller, &query.flash),
        label: label(&x.name),
        base: href(&vhost, &x.name),
        vhost,
        kind: kind(&x),
        durable: x.options.durable,
        internal: x.options.internal,
        alternate: x
            .options
            .alternate_exchange
            .clone()
            .unwrap_or_else(|| "none".to_owned()),
        unroutable: format::count(view.unroutable_count(&x.name)),
        tested: query.key.is_some(),
        key: query.key.unwrap_or_default(),
        headers: query.headers,
        routed,
        route_error,
        bindings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_read_from_name_value_pairs() {
        let h = parse_headers(" format = pdf, kind=report,,bad, =x");
        assert_eq!(h.len(), 2);
        assert_eq!(h["format"], "pdf");
        assert_eq!(h["kind"], "report");
    }
}
