//! weir's AMQP 0-9-1 front end: RabbitMQ's protocol, with its extensions, over the
//! one broker API, so existing clients (pika, lapin, amqplib, the Java client)
//! work unmodified. It uses `weir-broker`'s public API only, never `weir-log` or
//! `weir-http`.
//!
//! Two sans-IO machines hold the protocol; a tokio shell performs what they say:
//!
//! | behaviour | file |
//! |---|---|
//! | accept loops (plain and TLS), TLS handshakes, connection limits, TCP keepalive | `server.rs` |
//! | the socket, plain or TLS, written without waiting | `socket.rs` |
//! | frame header checked against `frame_max`, then parsed | `framing.rs` |
//! | field tables walked without recursion, depth and size limits | `tables.rs` |
//! | the connection machine: states, heartbeats, close handshakes, channel open/close | `connection.rs` |
//! | handshake (start, PLAIN/AMQPLAIN, tune, open) | `connection/handshake.rs` |
//! | publish assembled from method, header and body frames | `connection/content.rs` |
//! | the channel machine: delivery tags, ack/nack/reject/recover, prefetch credit, confirms and their ack/nack frames, tx, `channel.flow` | `channel.rs` |
//! | the shell: socket loop, events, timers, consumer timeout, channel and connection end | `session.rs` |
//! | method ordering, `channel.flow`, `confirm.select` | `session/channel_methods.rs` |
//! | `exchange.*` / `queue.*` against the broker | `session/exchange.rs`, `session/queue.rs` |
//! | `basic.qos`, `cancel`, `get`, `ack`, `nack`, `reject`, `recover` | `session/basic.rs` |
//! | `basic.consume` (exclusive, single active, auto-delete, direct reply-to) | `session/consume.rs` |
//! | `basic.publish`, returns, direct replies | `session/publish.rs` |
//! | `tx.select`, `commit`, `rollback` | `session/tx.rs` |
//! | deliveries written, confirms sent, consumers cancelled when their queue goes | `session/deliver.rs` |
//! | the consumer task (long polls within prefetch and byte credit) | `session/consumer.rs` |
//! | the publisher task and confirmer (batches, group commit) | `session/publisher.rs` |
//! | what the tasks tell the session | `session/event.rs` |
//! | direct reply-to consumers across connections | `session/replies.rs` |
//! | byte credit and bounded output to the socket | `session/outflow.rs` |
//! | message properties stored and given back exactly | `message.rs` |
//! | exclusive queues, auto-delete, consumers across connections | `registry.rs` |
//! | RabbitMQ `x-` arguments | `arguments.rs` |
//! | reply codes; broker errors to channel or connection exceptions | `codes.rs` |
//! | `[amqp]` settings | `config.rs` |
//! | fuzz target bodies and corpus replays | `fuzzing.rs` |
//!
//! Imports go one way: the leaves (`codes`, `tables`, `channel`, `session/event`,
//! `session/outflow`, the tasks) import no module that imports them; the method
//! files extend `Session` and nothing imports them. Unit tests sit next to each
//! file (`channel_tests.rs`, `connection_tests.rs`); the machines run without a
//! socket, the session only against a real broker (`fuzzing`, `crates/weir/tests`).
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
mod socket;
mod tables;

pub use config::AmqpConfig;
pub use server::{Listeners, TlsSettings, serve, serve_listeners};
