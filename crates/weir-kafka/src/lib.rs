//! weir's Kafka front end (issue 23): Kafka's wire protocol over weir's streams, so
//! librdkafka, the Java client, kafka-python and kcat produce and consume without
//! change. A Kafka topic is a stream of the front end's vhost, a Kafka partition
//! one of its partitions; the same records are read over AMQP and HTTP. It uses
//! `weir-broker`'s public API only.
//!
//! Messages are decoded and encoded with `kafka-protocol` (patched: vendor/README.md);
//! record batches with weir's own codec. Requests of a connection are answered one
//! at a time, in order, as Kafka's broker does.
//!
//! | behaviour | file |
//! |---|---|
//! | accept loops (plain and TLS), connection cap | `server.rs` |
//! | frames (size-checked), header and body decoding, the connection loop, anonymous user | `session.rs` |
//! | a connection's state and what connections share (a leaf) | `state.rs` |
//! | which handler answers which request | `handlers.rs` |
//! | APIs and versions served, ApiVersions | `apis.rs` |
//! | Metadata, DescribeCluster, DescribeLogDirs, auto-creation, permission helpers | `metadata.rs` |
//! | CreateTopics, DeleteTopics, CreatePartitions, DescribeConfigs | `topics.rs` |
//! | AlterConfigs, IncrementalAlterConfigs: a topic's retention changed | `alter_configs.rs` |
//! | DeleteRecords: a partition's oldest records trimmed | `delete_records.rs` |
//! | Produce | `produce.rs` |
//! | the idempotent producer: InitProducerId, sequences kept and read back | `producers.rs` |
//! | Fetch (long poll) and ListOffsets | `fetch.rs` |
//! | the classic group protocol's state machine: joins, generations, rebalances, sessions | `coordinator.rs` |
//! | static members (`group.instance.id`): their places kept across restarts | `static_members.rs` |
//! | FindCoordinator, JoinGroup, SyncGroup, Heartbeat, LeaveGroup, ListGroups, DescribeGroups, OffsetCommit, OffsetFetch | `groups.rs` |
//! | OffsetDelete: some of a group's committed offsets deleted | `offset_delete.rs` |
//! | record batches in and out, bounded decompression | `records.rs` |
//! | SASL PLAIN and SCRAM-SHA-256 | `sasl.rs` |
//! | SCRAM's messages, nonces and auth message | `scram.rs` |
//! | broker errors as Kafka error codes | `errors.rs` |
//! | `[kafka]` settings | `config.rs` |
//! | the fuzz target's entry point and corpus replay | `fuzzing.rs` |
//!
//! What is supported, partly or not at all is in docs/kafka-compat.md.

mod alter_configs;
mod apis;
mod config;
mod coordinator;
mod delete_records;
mod errors;
mod fetch;
#[doc(hidden)]
pub mod fuzzing;
mod groups;
mod handlers;
mod metadata;
mod offset_delete;
mod produce;
mod producers;
mod records;
mod sasl;
mod scram;
mod server;
mod session;
mod state;
mod topics;

pub use config::KafkaConfig;
pub use server::{Listeners, TlsSettings, serve_listeners};
