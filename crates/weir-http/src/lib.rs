//! weir's HTTP front end: the REST API for queues (send, receive, ack, nack, extend,
//! dead letters, administration), `/healthz` and the `OpenAPI` document at
//! `/api/openapi.json`. It translates JSON to the broker API ([`weir_broker::Broker`])
//! and broker errors to statuses with a JSON body `{"error", "reason"}`; it holds no
//! queue state of its own. The contract is `docs/http-api.md`.
//!
//! It drives hyper's HTTP/1 connections itself ([`serve`]) so that no client can
//! hold the API: a connection has a header-read, an idle and a write timeout, a
//! request body a between-reads timeout, a full server closes its idle connections
//! to make room (nginx does the same), long polls have a cap of their own, a body over
//! the limit is answered 413 before it is read and then drained so the client reads
//! the answer, and sends are refused while a broker resource alarm is raised.
//! [`serve_listeners`] serves HTTPS too (tokio-rustls, the handshake in each
//! connection's task), beside plain HTTP or instead of it, under one connection cap.
//!
//! ```no_run
//! # async fn run(broker: weir_broker::Broker) -> std::io::Result<()> {
//! let config = weir_http::HttpConfig::default();
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! let shutdown = tokio_util::sync::CancellationToken::new();
//! let front_ends = broker.front_ends();
//! let router = weir_http::router(broker, &config);
//! weir_http::serve(listener, router, &config, front_ends, shutdown).await
//! # }
//! ```

mod admin_routes;
mod auth;
#[doc(hidden)]
pub mod bench_api;
mod body;
mod config;
mod connection;
mod connection_routes;
mod dashboard;
mod error;
mod extract;
#[doc(hidden)]
pub mod fuzzing;
mod group_routes;
mod messages;
mod metrics;
mod phase;
mod request_counts;
mod routes;
mod routing_routes;
mod server;
mod state;
mod stored_format;
mod stream_routes;
mod vhost_paths;

#[cfg(test)]
mod openapi_tests;

use axum::Router;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use weir_broker::Broker;
use weir_broker::metrics::FrontEnds;

pub use config::{HttpConfig, MAX_TIMEOUT_MS};
pub use error::{ApiError, status_of};
pub use server::{Listeners, TlsSettings};

/// The routes, ready to serve.
pub fn router(broker: Broker, config: &HttpConfig) -> Router {
    routes::router(broker, config)
}

/// Serves `router` on `listener` until `shutdown` is cancelled: then stops
/// accepting, closes the connections that wait for a request, and lets requests in
/// flight finish. See [`HttpConfig`] for the limits and timeouts it enforces. Each
/// connection is counted in `front_ends` while it is open (metrics).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    config: &HttpConfig,
    front_ends: Arc<FrontEnds>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let listeners = Listeners {
        plain: Some(listener),
        tls: None,
    };
    server::serve(listeners, router, config, front_ends, shutdown).await;
    Ok(())
}

/// Serves `router` as [`serve`] does, on a plain listener, a TLS one or both
/// ([`Listeners`]), with one connection cap for both.
pub async fn serve_listeners(
    listeners: Listeners,
    router: Router,
    config: &HttpConfig,
    front_ends: Arc<FrontEnds>,
    shutdown: CancellationToken,
) {
    server::serve(listeners, router, config, front_ends, shutdown).await;
}
