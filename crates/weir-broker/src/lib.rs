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

mod alarms;
pub mod api;
#[doc(hidden)]
pub mod bench_api;
mod broker;
#[cfg(test)]
mod broker_tests;
mod clock;
pub mod error;
mod exchanges;
#[doc(hidden)]
pub mod fuzzing;
mod handle;
mod hex;
mod locks;
#[cfg(test)]
mod mem_tests;
mod queue;
pub mod routing;
mod shared;
mod supervisor;

pub use alarms::Alarms;
pub use api::{
    Backoff, DeadLetterInfo, DeadLetterReason, Death, Declared, Delivery, FirstDeath, NackOptions,
    Overflow, QueueInfo, QueueOptions, QueueStats, ReceiveRequest, SendMessage, SendOutcome,
    SettleReport,
};
pub use broker::{Broker, BrokerConfig, Limits, StartReport};
pub use error::{BrokerError, Kind, Limit, Result, StorageFailure};
pub use exchanges::{
    ExchangeInfo, PublishMessage, PublishOptions, PublishOutcome, QueuedPublish, SubscriptionInfo,
    subscription_queue,
};
pub use handle::UseGuard;
pub use routing::{Binding, DestinationType, ExchangeOptions, ExchangeType};
pub use weir_log::FsyncPolicy;
