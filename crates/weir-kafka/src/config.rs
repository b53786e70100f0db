//! The Kafka front end's settings ([`KafkaConfig`]), in a leaf module.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// The Kafka front end's settings (`[kafka]` in the configuration file).
#[derive(Clone, Debug)]
pub struct KafkaConfig {
    /// The vhost Kafka clients use: topics are the streams of this vhost.
    pub vhost: String,
    /// Who a connection is before (or without) SASL: a user of the broker, held to
    /// its permissions and to the loopback-only rule (`guest` by default, which may
    /// only connect from loopback). `None`: a connection must authenticate first.
    pub anonymous_user: Option<String>,
    /// The host put in Metadata's broker list (`None`: the address the client
    /// connected to).
    pub advertised_host: Option<String>,
    /// The port put there (`None`: the port the client connected to).
    pub advertised_port: Option<u16>,
    /// Whether Metadata creates a topic a client names that does not exist (Kafka's
    /// `auto.create.topics.enable`), with `default_partitions`.
    pub auto_create_topics: bool,
    /// Partitions of an auto-created topic (Kafka's `num.partitions`).
    pub default_partitions: u32,
    /// Largest request accepted (Kafka's `socket.request.max.bytes`); a larger one
    /// closes the connection.
    pub max_request_bytes: usize,
    /// Most bytes of requests read and not yet answered, every connection
    /// together (Kafka's `queued.max.request.bytes`); a request waits for room
    /// before its body is read. At least `max_request_bytes`.
    pub max_inflight_request_bytes: usize,
    /// Largest record set a compressed batch may inflate to.
    pub max_uncompressed_batch_bytes: usize,
    /// Most connections open at once.
    pub max_connections: usize,
    /// Most connections open at once from one peer address.
    pub max_connections_per_peer: usize,
    /// Longest Fetch `max_wait_ms` honoured (a longer one is cut to this).
    pub max_wait: Duration,
    /// Longest JoinGroup rebalance timeout honoured (a longer one is cut to this):
    /// how long a rebalance may wait for a member to join again.
    pub max_rebalance_timeout: Duration,
    /// Most consumer groups held at once (with a member, or an id handed out);
    /// a JoinGroup for another answers `COORDINATOR_NOT_AVAILABLE`.
    pub max_groups: usize,
    /// Most members of one group (Kafka's `group.max.size`); another's JoinGroup
    /// answers `GROUP_MAX_SIZE_REACHED`.
    pub max_group_members: usize,
    /// Most idempotent producers whose sequences are held, every partition
    /// together (each producer counted once per partition it writes to); the
    /// least recently heard of is forgotten to make room.
    pub max_producer_ids: usize,
    /// An idempotent producer not heard from for this long is forgotten (Kafka's
    /// `producer.id.expiration.ms`).
    pub producer_id_expiration: Duration,
    /// A connection with no request for this long is closed (Kafka's
    /// `connections.max.idle.ms`).
    pub idle_timeout: Duration,
    /// A write to the peer that makes no progress for this long closes the connection.
    pub write_timeout: Duration,
    /// Time allowed for a TLS handshake.
    pub handshake_timeout: Duration,
    /// How long a refused login waits before its answer.
    pub failed_login_delay: Duration,
    /// Cancelled when the broker shuts down: connections close.
    pub shutdown: CancellationToken,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            vhost: "/".to_owned(),
            anonymous_user: Some("guest".to_owned()),
            advertised_host: None,
            advertised_port: None,
            auto_create_topics: true,
            default_partitions: 1,
            max_request_bytes: 100 << 20,
            max_uncompressed_batch_bytes: 64 << 20,
            max_inflight_request_bytes: 512 << 20,
            max_connections: 10_000,
            max_connections_per_peer: 5_000,
            max_wait: Duration::from_secs(30),
            max_rebalance_timeout: Duration::from_secs(3600),
            max_groups: 100_000,
            max_group_members: 10_000,
            max_producer_ids: 100_000,
            producer_id_expiration: Duration::from_secs(86_400),
            idle_timeout: Duration::from_secs(600),
            write_timeout: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(10),
            failed_login_delay: Duration::from_secs(1),
            shutdown: CancellationToken::new(),
        }
    }
}
