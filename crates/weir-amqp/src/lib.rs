//! weir's AMQP 0-9-1 front end: RabbitMQ's protocol, with its extensions, over the
//! one broker API, so existing clients (pika, lapin, amqplib, the Java client)
//! work unmodified.
//!
//! Components:
//! * [`framing`]: frames checked against `frame_max` from their 7-byte header
//!   before anything is buffered, parsed with `amq-protocol`; bodies stay `Bytes`
//!   slices on the way in and out.
//! * `connection`: the protocol of one connection as a sans-IO state machine
//!   (handshake, limits, heartbeats, close handshakes, content assembly), driven by
//!   bytes and the time, so it is unit-tested and fuzzed (`fuzzing`, `fuzz/`)
//!   without sockets.
//! * `channel`: a channel's delivery tags and unacked deliveries, as plain data.
//! * `session`: the shell around a connection: one task per connection running
//!   its channel methods against the broker, with a
//!   publisher task per channel (ordered, batched publishes; confirms once
//!   durable) and a consumer task per `basic.consume` (long polls within the
//!   prefetch credit).
//! * `message`: how an AMQP message (exchange, routing key, every property) is
//!   stored in the broker and given back exactly.
//! * `registry`: what AMQP knows across connections and the broker does not: owners
//!   of exclusive queues, auto-delete queues, every queue's consumers (exclusive
//!   consumers, single active consumer).
//! * `arguments`: RabbitMQ `x-` arguments mapped to weir's options.
//! * `codes`: reply codes; broker errors become channel or connection exceptions in
//!   one place.
//!
//! What is supported, partly or not at all is in docs/amqp-compat.md.

mod arguments;
mod channel;
mod codes;
mod config;
mod connection;
pub(crate) mod framing;
#[doc(hidden)]
pub mod fuzzing;
mod message;
mod registry;
mod server;
mod session;
mod tables;

pub use config::AmqpConfig;
pub use server::serve;
