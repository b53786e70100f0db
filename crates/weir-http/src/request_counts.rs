//! HTTP requests answered, by method, route and status code, for the metrics
//! (`weir_http_requests_total`, docs/metrics.md): a middleware outside the login
//! check counts every answer. A leaf: the state holds the counts, the metrics read
//! them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;

/// HTTP requests answered since the start, by route (the router's path template,
/// `unmatched` for none), then method and status code: a few hundred series at
/// most. A request that finds its route counted already allocates nothing.
#[derive(Debug, Default)]
pub(crate) struct Requests(Mutex<HashMap<String, ByAnswer>>);

/// One route's counts, by method and status code.
type ByAnswer = HashMap<(Method, u16), u64>;

impl Requests {
    fn count(&self, route: &str, method: Method, code: u16) {
        let mut counts = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let by_route = match counts.get_mut(route) {
            Some(by_route) => by_route,
            None => counts.entry(route.to_owned()).or_default(),
        };
        *by_route.entry((method, code)).or_default() += 1;
    }

    /// `((method, route, code), count)`, sorted.
    pub(crate) fn snapshot(&self) -> Vec<((String, String, u16), u64)> {
        let counts = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out: Vec<_> = counts
            .iter()
            .flat_map(|(route, by)| {
                by.iter().map(move |((method, code), n)| {
                    ((method.as_str().to_owned(), route.clone(), *code), *n)
                })
            })
            .collect();
        out.sort();
        out
    }
}

/// Middleware counting every answer ([`Requests`]), refusals of the login included.
pub(crate) async fn count(
    State(requests): State<Arc<Requests>>,
    request: Request,
    next: Next,
) -> Response {
    // A standard method and the matched path (an `Arc`) clone without allocating.
    let method = request.method().clone();
    let route = request.extensions().get::<MatchedPath>().cloned();
    let response = next.run(request).await;
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    requests.count(route, method, response.status().as_u16());
    response
}
