//! HTTP requests answered, by method, route and status code, for the metrics
//! (`weir_http_requests_total`, docs/metrics.md): a middleware outside the login
//! check counts every answer. A leaf: the state holds the counts, the metrics read
//! them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;

/// HTTP requests answered since the start, by method, route (the router's path
/// template, `unmatched` for none) and status code: a few hundred series at most.
#[derive(Debug, Default)]
pub(crate) struct Requests(Mutex<HashMap<(String, String, u16), u64>>);

impl Requests {
    fn count(&self, method: &str, route: &str, code: u16) {
        let mut counts = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (method.to_owned(), route.to_owned(), code);
        *counts.entry(key).or_default() += 1;
    }

    pub(crate) fn snapshot(&self) -> Vec<((String, String, u16), u64)> {
        let counts = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out: Vec<_> = counts.iter().map(|(k, v)| (k.clone(), *v)).collect();
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
    let method = request.method().as_str().to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    requests.count(&method, &route, response.status().as_u16());
    response
}
