//! weir's HTTP front end: the REST API for queues (send, receive, ack, nack, extend,
//! dead letters, administration), `/healthz` and the `OpenAPI` document at
//! `/api/openapi.json`. It translates JSON to the broker API ([`weir_broker::Broker`])
//! and broker errors to statuses with a JSON body `{"error", "reason"}`; it holds no
//! queue state of its own. The contract is `docs/http-api.md`.

#[doc(hidden)]
pub mod bench_api;
mod error;
mod extract;
mod listener;
mod routes;
mod routing_routes;

#[cfg(test)]
mod openapi_tests;

use axum::Router;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use weir_broker::Broker;

pub use error::{ApiError, status_of};

/// Settings of the HTTP front end.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Largest request body, bytes; larger ones get 413 `payload_too_large`.
    pub max_body_bytes: u64,
    /// Most open connections; one more waits to be accepted until one closes.
    pub max_connections: u32,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            max_body_bytes: 16 << 20,
            max_connections: 1024,
        }
    }
}

/// The routes, ready to serve.
pub fn router(broker: Broker, config: &HttpConfig) -> Router {
    routes::router(
        broker,
        usize::try_from(config.max_body_bytes).unwrap_or(usize::MAX),
    )
}

/// Serves `router` on `listener` until `shutdown` is cancelled, then lets requests
/// in flight finish. At most `config.max_connections` connections are open at once.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    config: &HttpConfig,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let max = usize::try_from(config.max_connections).unwrap_or(usize::MAX);
    axum::serve(listener::LimitedListener::new(listener, max), router)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}
