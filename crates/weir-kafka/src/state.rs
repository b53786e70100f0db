//! A connection's state and what connections share, in a leaf module the
//! connection loop (`session.rs`) and every request handler import.

use std::net::SocketAddr;
use std::sync::Arc;

use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use weir_broker::Vhost;
use weir_broker::access::Principal;
use weir_broker::connections::Registered;
use weir_broker::metrics::Tracked;

use crate::config::KafkaConfig;
use crate::coordinator::Coordinator;
use crate::producers::Producers;

/// Why a connection ends.
#[derive(Debug)]
pub(crate) enum Closed {
    /// The peer went, or the broker is shutting down.
    Quietly,
    /// A protocol violation or a failed write: logged with the reason.
    Because(String),
}

impl<E: std::fmt::Display> From<E> for Closed {
    fn from(e: E) -> Self {
        Closed::Because(e.to_string())
    }
}

/// One request, decoded.
pub(crate) struct Request {
    pub header: RequestHeader,
    pub key: ApiKey,
    pub body: RequestKind,
}

/// What every connection of the front end shares.
pub(crate) struct Shared {
    /// The consumer groups.
    pub coordinator: Coordinator,
    /// The idempotent producers' sequences.
    pub producers: Producers,
    /// Bytes of requests read and not yet answered, all connections together, in
    /// KiB (`max_inflight_request_bytes`).
    pub request_budget: Arc<Semaphore>,
}

impl Shared {
    pub(crate) fn new(config: &KafkaConfig) -> Shared {
        let kib =
            (config.max_inflight_request_bytes / 1024).max(config.max_request_bytes.div_ceil(1024));
        Shared {
            coordinator: Coordinator::new(crate::coordinator::Limits {
                groups: config.max_groups,
                members: config.max_group_members,
            }),
            producers: Producers::new(crate::producers::Keep {
                most: config.max_producer_ids,
                idle: config.producer_id_expiration,
            }),
            request_budget: Arc::new(Semaphore::new(kib.min(Semaphore::MAX_PERMITS))),
        }
    }
}

/// A connection's state.
pub(crate) struct Session {
    pub broker: Vhost,
    pub config: Arc<KafkaConfig>,
    pub peer: SocketAddr,
    /// The address the client reached (what Metadata advertises by default).
    pub local: SocketAddr,
    /// Who the connection acts as: the anonymous user until SASL names another.
    pub who: Option<Principal>,
    pub sasl: Sasl,
    /// What connections share: consumer groups, producers.
    pub shared: Arc<Shared>,
    pub registered: Registered,
    /// Whether the client's id is in the connection registry.
    pub client_noted: bool,
    /// Cancelled when the client sends a request other than a Fetch while a Fetch
    /// waits for records: that Fetch is then answered at once (`session.rs`).
    pub next_request: CancellationToken,
    pub _counted: Tracked,
}

/// Where a connection is in SASL.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) enum Sasl {
    /// No handshake yet.
    #[default]
    Start,
    /// A handshake chose this mechanism; its tokens come next.
    Chosen(&'static str),
    /// A SCRAM exchange waits for the client's final message.
    Scram(Box<crate::scram::Exchange>),
    /// Logged in.
    Done,
}
