//! The Kafka front end's settings (`[kafka]`), checked whole into a
//! [`weir_kafka::KafkaConfig`]. Its listeners are the top-level `kafka_listen` and
//! `kafka_tls_listen`, both off by default.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The Kafka front end's settings (`[kafka]`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaSection {
    /// The vhost whose streams are the Kafka topics.
    pub vhost: String,
    /// The user a connection acts as without SASL (`guest`, which may connect only
    /// from loopback); empty: SASL is required.
    pub anonymous_user: String,
    /// The host Metadata advertises (empty: the address the client connected to).
    pub advertised_host: String,
    /// The port Metadata advertises (0: the port the client connected to).
    pub advertised_port: u16,
    /// Metadata creates the topics clients name (Kafka's `auto.create.topics.enable`).
    pub auto_create_topics: bool,
    /// Partitions of an auto-created topic, or one created without a count (1 ..= 1024).
    pub default_partitions: u32,
    /// Largest request, bytes (Kafka's `socket.request.max.bytes`); a larger one
    /// closes the connection.
    pub max_request_bytes: u64,
    /// Largest size a compressed batch may inflate to, bytes.
    pub max_uncompressed_batch_bytes: u64,
    /// Most bytes of requests read and not yet answered, all connections together
    /// (at least `max_request_bytes`).
    pub max_inflight_request_bytes: u64,
    /// Most open Kafka connections; more are closed when accepted.
    pub max_connections: u32,
    /// Most open Kafka connections from one peer address; more are closed when
    /// accepted.
    pub max_connections_per_peer: u32,
    /// Longest Fetch wait honoured, ms.
    pub max_wait_ms: u64,
    /// Longest JoinGroup rebalance timeout honoured, ms.
    pub max_rebalance_timeout_ms: u64,
    /// Most consumer groups held at once.
    pub max_groups: u32,
    /// Most members of one consumer group.
    pub max_group_members: u32,
    /// Most idempotent producers whose sequences are held (per partition written
    /// to); the least recently heard of is forgotten to make room.
    pub max_producer_ids: u32,
    /// An idempotent producer not heard from this long is forgotten, ms (Kafka's
    /// `producer.id.expiration.ms`).
    pub producer_id_expiration_ms: u64,
    /// A connection without a request this long is closed, ms (Kafka's
    /// `connections.max.idle.ms`).
    pub idle_timeout_ms: u64,
    /// A socket write that makes no progress this long closes the connection, ms.
    pub write_timeout_ms: u64,
    /// Time allowed for a TLS handshake or a SASL password check, ms.
    pub handshake_timeout_ms: u64,
    /// A refused SASL login waits this long before its answer, ms (at most 60,000).
    pub failed_login_delay_ms: u64,
}

impl Default for KafkaSection {
    fn default() -> Self {
        KafkaSection {
            vhost: "/".to_owned(),
            anonymous_user: "guest".to_owned(),
            advertised_host: String::new(),
            advertised_port: 0,
            auto_create_topics: true,
            default_partitions: 1,
            max_request_bytes: 100 << 20,
            max_uncompressed_batch_bytes: 64 << 20,
            max_inflight_request_bytes: 512 << 20,
            max_connections: 10_000,
            max_connections_per_peer: 5_000,
            max_wait_ms: 30_000,
            max_rebalance_timeout_ms: 3_600_000,
            max_groups: 100_000,
            max_group_members: 10_000,
            max_producer_ids: 100_000,
            producer_id_expiration_ms: 86_400_000,
            idle_timeout_ms: 600_000,
            write_timeout_ms: 30_000,
            handshake_timeout_ms: 10_000,
            failed_login_delay_ms: 1_000,
        }
    }
}

impl KafkaSection {
    /// The front end's settings, or every problem at once.
    pub fn to_config(&self) -> anyhow::Result<weir_kafka::KafkaConfig> {
        let mut problems = Vec::new();
        if !(1..=1024).contains(&self.default_partitions) {
            problems.push(format!(
                "kafka.default_partitions {} is outside 1..=1024",
                self.default_partitions
            ));
        }
        if !(1 << 10..=1 << 30).contains(&self.max_request_bytes) {
            problems.push(format!(
                "kafka.max_request_bytes {} is outside 1 KiB ..= 1 GiB",
                self.max_request_bytes
            ));
        }
        if !(1 << 10..=1 << 30).contains(&self.max_uncompressed_batch_bytes) {
            problems.push(format!(
                "kafka.max_uncompressed_batch_bytes {} is outside 1 KiB ..= 1 GiB",
                self.max_uncompressed_batch_bytes
            ));
        }
        if self.max_inflight_request_bytes < self.max_request_bytes
            || self.max_inflight_request_bytes > 1 << 40
        {
            problems.push(format!(
                "kafka.max_inflight_request_bytes {} is below kafka.max_request_bytes {} or over 1 TiB",
                self.max_inflight_request_bytes, self.max_request_bytes
            ));
        }
        for (name, value) in [
            ("max_connections", u64::from(self.max_connections)),
            (
                "max_connections_per_peer",
                u64::from(self.max_connections_per_peer),
            ),
            ("idle_timeout_ms", self.idle_timeout_ms),
            ("write_timeout_ms", self.write_timeout_ms),
            ("handshake_timeout_ms", self.handshake_timeout_ms),
            ("max_rebalance_timeout_ms", self.max_rebalance_timeout_ms),
            ("max_groups", u64::from(self.max_groups)),
            ("max_group_members", u64::from(self.max_group_members)),
            ("max_producer_ids", u64::from(self.max_producer_ids)),
            ("producer_id_expiration_ms", self.producer_id_expiration_ms),
        ] {
            if value == 0 {
                problems.push(format!("kafka.{name} must be at least 1"));
            }
        }
        if self.max_rebalance_timeout_ms > 86_400_000 {
            problems.push(format!(
                "kafka.max_rebalance_timeout_ms {} is over 86400000 (a day)",
                self.max_rebalance_timeout_ms
            ));
        }
        if self.failed_login_delay_ms > 60_000 {
            problems.push(format!(
                "kafka.failed_login_delay_ms {} is over 60000",
                self.failed_login_delay_ms
            ));
        }
        if !problems.is_empty() {
            anyhow::bail!("invalid configuration: {}", problems.join("; "));
        }
        let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        Ok(weir_kafka::KafkaConfig {
            vhost: self.vhost.clone(),
            anonymous_user: non_empty(&self.anonymous_user),
            advertised_host: non_empty(&self.advertised_host),
            advertised_port: (self.advertised_port != 0).then_some(self.advertised_port),
            auto_create_topics: self.auto_create_topics,
            default_partitions: self.default_partitions,
            max_request_bytes: usize::try_from(self.max_request_bytes).unwrap_or(usize::MAX),
            max_uncompressed_batch_bytes: usize::try_from(self.max_uncompressed_batch_bytes)
                .unwrap_or(usize::MAX),
            max_inflight_request_bytes: usize::try_from(self.max_inflight_request_bytes)
                .unwrap_or(usize::MAX),
            max_connections: self.max_connections as usize,
            max_connections_per_peer: self.max_connections_per_peer as usize,
            max_wait: Duration::from_millis(self.max_wait_ms),
            max_rebalance_timeout: Duration::from_millis(self.max_rebalance_timeout_ms),
            max_groups: self.max_groups as usize,
            max_group_members: self.max_group_members as usize,
            max_producer_ids: self.max_producer_ids as usize,
            producer_id_expiration: Duration::from_millis(self.producer_id_expiration_ms),
            idle_timeout: Duration::from_millis(self.idle_timeout_ms),
            write_timeout: Duration::from_millis(self.write_timeout_ms),
            handshake_timeout: Duration::from_millis(self.handshake_timeout_ms),
            failed_login_delay: Duration::from_millis(self.failed_login_delay_ms),
            ..weir_kafka::KafkaConfig::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kafka_section_is_checked_whole() {
        let c = KafkaSection {
            default_partitions: 0,
            max_request_bytes: 1,
            idle_timeout_ms: 0,
            max_rebalance_timeout_ms: 86_400_001,
            max_producer_ids: 0,
            ..KafkaSection::default()
        };
        let e = c.to_config().unwrap_err().to_string();
        assert!(e.contains("max_rebalance_timeout_ms"), "{e}");
        assert!(e.contains("default_partitions"), "{e}");
        assert!(e.contains("max_request_bytes"), "{e}");
        assert!(e.contains("idle_timeout_ms"), "{e}");
        assert!(e.contains("max_producer_ids"), "{e}");
        let ok = KafkaSection {
            anonymous_user: String::new(),
            advertised_port: 19092,
            ..KafkaSection::default()
        }
        .to_config()
        .unwrap();
        assert_eq!(ok.anonymous_user, None);
        assert_eq!(ok.advertised_port, Some(19092));
        assert_eq!(ok.advertised_host, None);
    }
}
