//! Every vhost over HTTP: `/api/vhosts/{vhost}/queues/...` (and `exchanges`,
//! `bindings`, `topics`, `streams`) is the same API as `/api/queues/...` in that vhost; the
//! short paths are the vhost `/` (`%2F` in a path, as RabbitMQ spells it).
//!
//! Done before routing, so each handler exists once: the path is rewritten to its
//! short form and the vhost goes into the request's extensions ([`InVhost`]), where
//! the login guard finds it and builds the caller's view of the broker.

use axum::http::{Request, Uri};
use percent_encoding::percent_decode_str;

/// The vhost a request names in its path, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct InVhost(pub(crate) String);

/// What may follow `/api/vhosts/{vhost}/`.
const SCOPED: [&str; 5] = ["queues", "exchanges", "bindings", "topics", "streams"];

/// Rewrites `/api/vhosts/{vhost}/{queues|exchanges|bindings|topics}...` to
/// `/api/...` and records the vhost. A vhost that does not decode as UTF-8 is left
/// alone (the router answers 404).
pub(crate) fn rewrite<B>(request: &mut Request<B>) {
    let Some((vhost, rest)) = scoped(request.uri().path()) else {
        return;
    };
    let Ok(vhost) = percent_decode_str(vhost).decode_utf8() else {
        return;
    };
    let vhost = vhost.into_owned();
    let mut short = format!("/api/{rest}");
    if let Some(query) = request.uri().query() {
        short.push('?');
        short.push_str(query);
    }
    let Ok(path_and_query) = short.parse() else {
        return;
    };
    let mut parts = request.uri().clone().into_parts();
    parts.path_and_query = Some(path_and_query);
    if let Ok(uri) = Uri::from_parts(parts) {
        *request.uri_mut() = uri;
        request.extensions_mut().insert(InVhost(vhost));
    }
}

/// The raw vhost segment and what follows it, for a vhost-scoped path.
fn scoped(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix("/api/vhosts/")?;
    let (vhost, rest) = rest.split_once('/')?;
    let first = rest.split('/').next()?;
    (!vhost.is_empty() && SCOPED.contains(&first)).then_some((vhost, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewritten(uri: &str) -> (String, Option<String>) {
        let mut request = Request::builder().uri(uri).body(()).expect("request");
        rewrite(&mut request);
        let vhost = request.extensions().get::<InVhost>().map(|v| v.0.clone());
        (request.uri().to_string(), vhost)
    }

    #[test]
    fn vhost_paths_become_short_paths_with_their_vhost() {
        assert_eq!(
            rewritten("/api/vhosts/staging/queues/orders/receive?max=5"),
            (
                "/api/queues/orders/receive?max=5".into(),
                Some("staging".into())
            )
        );
        assert_eq!(
            rewritten("/api/vhosts/%2F/exchanges"),
            ("/api/exchanges".into(), Some("/".into()))
        );
        assert_eq!(
            rewritten("/api/vhosts/a%20b/topics/t/publish"),
            ("/api/topics/t/publish".into(), Some("a b".into()))
        );
        // The vhost admin paths stay as they are.
        assert_eq!(
            rewritten("/api/vhosts/staging"),
            ("/api/vhosts/staging".into(), None)
        );
        assert_eq!(
            rewritten("/api/vhosts/staging/users"),
            ("/api/vhosts/staging/users".into(), None)
        );
        assert_eq!(rewritten("/api/queues/q"), ("/api/queues/q".into(), None));
        assert_eq!(
            rewritten("/api/vhosts/%FF/queues"),
            ("/api/vhosts/%FF/queues".into(), None)
        );
    }
}
