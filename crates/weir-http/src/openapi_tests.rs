//! The `OpenAPI` document (`openapi.json`, served at `/api/openapi.json`) against the
//! router (`routes.rs`): every route and method is documented, nothing else is, path
//! parameters are declared, every `$ref` resolves and error answers use `Error`.
//!
//! The routes are listed here by hand ([`ROUTES`]) and also read from the router's
//! source, so neither the list nor the document can drift from the code.

use std::collections::BTreeSet;

use serde_json::Value;

const DOCUMENT: &str = include_str!("openapi.json");
const ROUTES_SOURCE: &str = include_str!("routes.rs");

/// Every (method, path) that `routes::router` registers.
const ROUTES: [(&str, &str); 61] = [
    ("get", "/healthz"),
    ("get", "/metrics"),
    ("get", "/metrics/per-object"),
    ("get", "/api/openapi.json"),
    ("get", "/api/broker"),
    ("get", "/api/connections"),
    ("get", "/api/connections/{id}"),
    ("delete", "/api/connections/{id}"),
    ("get", "/api/queues"),
    ("get", "/api/queues/{name}"),
    ("put", "/api/queues/{name}"),
    ("delete", "/api/queues/{name}"),
    ("post", "/api/queues/{name}/purge"),
    ("post", "/api/queues/{name}/messages"),
    ("post", "/api/queues/{name}/receive"),
    ("post", "/api/queues/{name}/ack"),
    ("post", "/api/queues/{name}/nack"),
    ("post", "/api/queues/{name}/extend"),
    ("get", "/api/queues/{name}/dead-letters"),
    ("post", "/api/queues/{name}/dead-letters/redrive"),
    ("get", "/api/exchanges"),
    ("get", "/api/exchanges/{name}"),
    ("put", "/api/exchanges/{name}"),
    ("delete", "/api/exchanges/{name}"),
    ("post", "/api/exchanges/{name}/publish"),
    ("get", "/api/bindings"),
    ("post", "/api/bindings"),
    ("delete", "/api/bindings"),
    ("post", "/api/topics/{topic}/publish"),
    ("get", "/api/topics/{topic}/subscriptions"),
    ("put", "/api/topics/{topic}/subscriptions/{name}"),
    ("delete", "/api/topics/{topic}/subscriptions/{name}"),
    ("get", "/api/streams"),
    ("get", "/api/streams/{name}"),
    ("put", "/api/streams/{name}"),
    ("patch", "/api/streams/{name}"),
    ("delete", "/api/streams/{name}"),
    ("post", "/api/streams/{name}/messages"),
    ("get", "/api/streams/{name}/messages"),
    ("delete", "/api/streams/{name}/messages"),
    ("get", "/api/streams/{name}/groups"),
    ("get", "/api/streams/{name}/groups/{group}"),
    ("put", "/api/streams/{name}/groups/{group}"),
    ("delete", "/api/streams/{name}/groups/{group}"),
    ("post", "/api/streams/{name}/groups/{group}/poll"),
    ("post", "/api/streams/{name}/groups/{group}/commit"),
    ("post", "/api/streams/{name}/groups/{group}/leave"),
    ("post", "/api/streams/{name}/groups/{group}/reset"),
    ("get", "/api/whoami"),
    ("get", "/api/users"),
    ("get", "/api/users/{name}"),
    ("put", "/api/users/{name}"),
    ("delete", "/api/users/{name}"),
    ("get", "/api/vhosts"),
    ("put", "/api/vhosts/{name}"),
    ("delete", "/api/vhosts/{name}"),
    ("get", "/api/permissions"),
    ("put", "/api/permissions/{vhost}/{user}"),
    ("delete", "/api/permissions/{vhost}/{user}"),
    ("get", "/api/definitions"),
    ("post", "/api/definitions"),
];

/// axum's method routing functions that `OpenAPI` has an operation for.
const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "patch", "head", "options", "trace",
];

/// The schemas the document promises.
const SCHEMAS: [&str; 18] = [
    "ReceiveRequest",
    "QueueOptions",
    "QueueStats",
    "QueueInfo",
    "MessageIn",
    "SendRequest",
    "SendResponse",
    "Delivery",
    "DeadLetter",
    "ReceiptsRequest",
    "Error",
    "ExchangeOptions",
    "ExchangeInfo",
    "Binding",
    "PublishRequest",
    "PublishResponse",
    "SubscriptionRequest",
    "SubscriptionInfo",
];

type Routes = BTreeSet<(String, String)>;

fn listed_routes() -> Routes {
    ROUTES
        .iter()
        .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
        .collect()
}

fn document() -> Value {
    serde_json::from_str(DOCUMENT).expect("openapi.json is valid JSON")
}

/// The index just past the parenthesis that closes the one open before `text`
/// (string literals skipped).
fn closing_paren(text: &str) -> usize {
    let mut depth = 1;
    let mut in_string = false;
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        if in_string {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_string = true,
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    return i;
                }
            }
            _ => {}
        }
    }
    panic!(
        "unbalanced parentheses in routes.rs after: {}",
        text.chars().take(80).collect::<String>()
    );
}

/// The names of the calls (`name(`) in `text`, outside string literals.
fn calls(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut ident = String::new();
    let mut in_string = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if in_string {
            match c {
                '\\' => {
                    chars.next();
                }
                '"' => in_string = false,
                _ => {}
            }
            continue;
        }
        if c.is_ascii_alphanumeric() || c == '_' {
            ident.push(c);
            continue;
        }
        if c == '(' && !ident.is_empty() {
            out.push(std::mem::take(&mut ident));
            continue;
        }
        ident.clear();
        in_string = c == '"';
    }
    out
}

/// The (method, path) pairs registered in `routes.rs`, read from the source of its
/// `router` function: each `.route("path", get(..).post(..))` call.
fn source_routes() -> Routes {
    let start = ROUTES_SOURCE
        .find("fn router(")
        .expect("routes.rs has fn router");
    // `fn router` and the functions after it that add routes to it (up to the
    // first handler).
    let body = &ROUTES_SOURCE[start..];
    let body = &body[..body
        .find("\nasync fn ")
        .expect("handlers follow the router")];
    let mut found = Routes::new();
    let mut rest = body;
    while let Some(at) = rest.find(".route(") {
        let call = &rest[at + ".route(".len()..];
        let end = closing_paren(call);
        let args = call[..end].trim_start();
        assert!(
            args.starts_with('"'),
            "a .route( call whose first argument is not a string literal: {args}"
        );
        let path_end = args[1..].find('"').expect("the path literal ends") + 1;
        let path = &args[1..path_end];
        let methods = calls(&args[path_end + 1..]);
        assert!(
            !methods.is_empty(),
            "route {path} has no method call this test understands"
        );
        for method in methods {
            // A method routed to a refusal handler is not an operation.
            if args.contains(&format!("{method}(method_not_allowed)"))
                || args.contains(&format!("{method}(receive_moved)"))
            {
                continue;
            }
            assert!(
                METHODS.contains(&method.as_str()),
                "route {path} calls {method}(..), which this test does not know; teach it (and document the route)"
            );
            found.insert((method, path.to_owned()));
        }
        rest = &call[end..];
    }
    found
}

fn documented_routes(doc: &Value) -> Routes {
    let paths = doc["paths"].as_object().expect("the document has paths");
    let mut found = Routes::new();
    for (path, item) in paths {
        let item = item.as_object().expect("a path item is an object");
        for method in item.keys().filter(|k| METHODS.contains(&k.as_str())) {
            found.insert((method.clone(), path.clone()));
        }
    }
    found
}

/// Follows a local `$ref` (`#/components/...`), or returns `value` itself.
fn resolve<'a>(doc: &'a Value, value: &'a Value) -> &'a Value {
    match value.get("$ref").and_then(Value::as_str) {
        Some(reference) => {
            let pointer = reference
                .strip_prefix('#')
                .unwrap_or_else(|| panic!("non-local $ref {reference}"));
            let target = doc
                .pointer(pointer)
                .unwrap_or_else(|| panic!("$ref {reference} does not resolve"));
            resolve(doc, target)
        }
        None => value,
    }
}

fn collect_refs<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                if let ("$ref", Value::String(r)) = (key.as_str(), v) {
                    out.push(r);
                } else {
                    collect_refs(v, out);
                }
            }
        }
        Value::Array(items) => {
            for v in items {
                collect_refs(v, out);
            }
        }
        _ => {}
    }
}

fn difference(a: &Routes, b: &Routes) -> Vec<String> {
    a.difference(b)
        .map(|(m, p)| format!("{} {p}", m.to_uppercase()))
        .collect()
}

#[test]
fn the_route_list_matches_the_router_source() {
    let listed = listed_routes();
    assert_eq!(listed.len(), ROUTES.len(), "ROUTES lists a route twice");
    let source = source_routes();
    assert!(
        listed == source,
        "ROUTES and routes.rs differ: only in ROUTES {:?}, only in routes.rs {:?}",
        difference(&listed, &source),
        difference(&source, &listed)
    );
}

#[test]
fn every_route_is_documented_and_nothing_else() {
    let doc = document();
    let documented = documented_routes(&doc);
    for routes in [listed_routes(), source_routes()] {
        assert!(
            documented == routes,
            "openapi.json and the router differ: undocumented {:?}, documented but not routed {:?}",
            difference(&routes, &documented),
            difference(&documented, &routes)
        );
    }
}

#[test]
fn path_parameters_are_declared() {
    let doc = document();
    let paths = doc["paths"].as_object().expect("the document has paths");
    for (method, path) in listed_routes() {
        let templated: BTreeSet<&str> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .collect();
        let item = &paths[&path];
        let mut declared = BTreeSet::new();
        for params in [&item["parameters"], &item[&method]["parameters"]] {
            for param in params.as_array().into_iter().flatten() {
                let param = resolve(&doc, param);
                if param["in"] == "path" {
                    assert!(
                        param["required"].as_bool() == Some(true),
                        "{method} {path}: path parameter {} must be required",
                        param["name"]
                    );
                    declared.insert(param["name"].as_str().expect("a parameter has a name"));
                }
            }
        }
        assert_eq!(
            templated, declared,
            "{method} {path}: path template and path parameters differ"
        );
    }
    assert!(
        paths.contains_key("/api/queues/{name}"),
        "path parameters are written {{name}}"
    );
}

#[test]
fn the_document_is_openapi_3_0_3_and_complete() {
    let doc = document();
    assert_eq!(doc["openapi"], "3.0.3");
    assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());
    for name in SCHEMAS {
        assert!(
            doc["components"]["schemas"][name].is_object(),
            "components/schemas/{name} is missing"
        );
    }
    let mut refs = Vec::new();
    collect_refs(&doc, &mut refs);
    assert!(!refs.is_empty());
    for reference in refs {
        let pointer = reference
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("non-local $ref {reference}"));
        assert!(
            doc.pointer(pointer).is_some(),
            "$ref {reference} does not resolve"
        );
    }
}

#[test]
fn every_operation_answers_success_and_errors_as_error_objects() {
    let doc = document();
    let error = &doc["components"]["schemas"]["Error"];
    let settle_error = &doc["components"]["schemas"]["SettleError"];
    for (method, path) in listed_routes() {
        let responses = doc["paths"][&path][&method]["responses"]
            .as_object()
            .unwrap_or_else(|| panic!("{method} {path} has no responses"));
        assert!(
            responses.keys().any(|s| s.starts_with('2')),
            "{method} {path} has no 2xx response"
        );
        for (status, response) in responses {
            let response = resolve(&doc, response);
            assert!(
                response["description"].is_string(),
                "{method} {path} {status}: no description"
            );
            if status.starts_with('4') || status.starts_with('5') {
                let schema = resolve(&doc, &response["content"]["application/json"]["schema"]);
                assert!(
                    schema == error || schema == settle_error,
                    "{method} {path} {status}: an error answer must be an Error (or SettleError)"
                );
            }
        }
    }
}
