//! weir's broker: durable work queues over `weir-log`, behind one API ([`Broker`])
//! that every front end (HTTP and AMQP 0-9-1) calls.
//!
//! It owns the queue model: sending (with ids, headers, priorities, delays, groups,
//! TTLs, de-duplication), leasing with visibility timeouts, ack / nack / extend,
//! retries with backoff, `max_deliveries`, dead-letter queues with peek and redrive,
//! length limits with overflow policies, purge, delete and stats, and recovery of all
//! of it from disk. It knows no protocol: no HTTP, no AMQP types.
//!
//! Each queue is owned by one task (its *actor*) that holds the delivery state in
//! memory (a few dozen bytes per message; bodies stay on disk) and writes every
//! change to the queue's log before it answers. See `docs/architecture.md`.
//!
//! Where each behaviour lives, from the API down (a module only imports modules
//! below it):
//!
//! - `broker`: [`Broker`], the API front ends call (declare, send, receive, ack,
//!   nack, extend, peek, redrive, purge, delete, stats, shutdown); `exchanges`: its
//!   exchange, binding, publish and topic API; `recovery`: opening the data
//!   directory and each queue's logs, and restarting a queue after a panic;
//!   `housekeeping`: queue expiry and trimming the shared log, once a second;
//!   `dead_letters`: where dead letters and redrives go; `prepare`: checking and
//!   building messages; `config`: [`BrokerConfig`] and [`Limits`].
//! - `supervisor`: restarts a queue whose actor panicked; `shared`: the dispatcher
//!   of messages stored once for several queues (decision 0004); `handle`: the
//!   broker's handle on a running queue; `routing`: exchanges and bindings as data;
//!   `alarms`: disk and memory alarms; `access`: users (argon2id passwords),
//!   vhosts and permissions in `access.json`, which the front ends log clients in
//!   against; `vhost`: names per vhost and [`Vhost`], the broker as seen from one
//!   vhost (what the front ends call), with its operations in `vhost_api`.
//! - `queue`: one queue. `actor` (the task that owns it and performs effects),
//!   `state` (the sans-IO state machine), `entry`/`ready` (what is kept per message),
//!   `record` (its log format), `replay` (recovery), `dlq` (death history), `host`
//!   (what a queue asks of its broker).
//! - Leaves: `api` (the public types), `error`, `clock`, `files`, `hex`, `locks`.
//!
//! ```no_run
//! # async fn demo() -> weir_broker::Result<()> {
//! use weir_broker::{Broker, BrokerConfig, QueueOptions, ReceiveRequest, SendMessage};
//! let (broker, _) = Broker::open(BrokerConfig::new("./weir-data")).await?;
//! broker.declare("emails", QueueOptions::default()).await?;
//! broker.send("emails", vec![SendMessage { body: "hi".into(), ..Default::default() }]).await?;
//! let got = broker.receive("emails", ReceiveRequest { max: 10, wait_ms: 0, visibility_timeout_ms: None }).await?;
//! broker.ack("emails", got.iter().filter_map(|d| d.receipt.clone()).collect()).await?;
//! # Ok(()) }
//! ```

pub mod access;
mod alarms;
pub mod api;
#[doc(hidden)]
pub mod bench_api;
mod broker;
#[cfg(test)]
mod broker_tests;
mod clock;
mod config;
pub mod connections;
mod dead_letters;
pub mod definitions;
pub mod error;
mod exchanges;
mod files;
mod front_ends;
#[doc(hidden)]
pub mod fuzzing;
mod handle;
mod hex;
mod housekeeping;
mod locks;
#[cfg(test)]
mod mem_tests;
pub mod metrics;
pub mod names;
pub mod peers;
mod prepare;
mod queue;
pub mod queue_arguments;
mod recovery;
#[cfg(test)]
mod restart_tests;
pub mod routing;
mod shared;
pub mod stream;
mod supervisor;
mod traffic;
pub mod vhost;
mod vhost_api;
#[cfg(test)]
mod vhost_tests;

pub use alarms::{Alarms, Resources};
pub use api::{
    Backoff, DeadLetterInfo, DeadLetterReason, Death, Declared, Delivery, FirstDeath, NackOptions,
    Overflow, QueueInfo, QueueOptions, QueueStats, ReceiveRequest, SendMessage, SendOutcome,
    SettleReport,
};
pub use broker::{Broker, StartReport};
pub use config::{BrokerConfig, Limits, MAX_MESSAGE_BYTES_CEILING, STREAM_TAIL_CACHE_BYTES};
pub use error::{BrokerError, Kind, Limit, Result, StorageFailure};
pub use exchanges::{
    ExchangeInfo, PublishMessage, PublishOptions, PublishOutcome, QueuedPublish, SubscriptionInfo,
    subscription_queue,
};
pub use handle::UseGuard;
pub use routing::{Binding, DestinationType, ExchangeOptions, ExchangeType};
pub use vhost::Vhost;
pub use weir_log::FsyncPolicy;
