//! Entry points of the `kafka_request` and `kafka_session` fuzz targets (`fuzz/`),
//! and the tests that replay their corpora (`fuzz/corpus/kafka_request`,
//! `fuzz/corpus/kafka_session`) on every `cargo test`.
//!
//! [`request`]: arbitrary bytes as a request frame (what follows the size prefix):
//! the header and body decode or are refused, never a panic or an allocation the
//! bytes cannot back (the vendored decoder's patch). The same bytes as a Produce
//! record set: what parses is written back as Fetch writes it, and that parses to
//! the same records (reserved `x-weir-` headers left out, as Fetch leaves them).
//!
//! [`SessionHarness`]: arbitrary bytes as one client connection to
//! [`serve_listeners`](crate::serve_listeners) against a real broker: the session
//! ends once the client has sent everything and closed its side, and it writes
//! only whole, size-prefixed frames. A JoinGroup or SyncGroup rightly waits for
//! the group's other members, up to the rebalance timeout: the harness's broker
//! cuts that to [`REBALANCE`] (`[kafka] max_rebalance_timeout_ms`), and a session
//! may take that long per such request on top of [`SESSION_BOUND`]. Its groups
//! outlive a session (members until their session timeout), within small caps.
//!
//! Nothing here is used by the front end itself.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use bytes::{Buf as _, Bytes, BytesMut};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_util::sync::CancellationToken;
use weir_broker::stream::{Offset, RESERVED_HEADER_PREFIX, RecordView, visit_stored};
use weir_broker::{Broker, BrokerConfig, FsyncPolicy, Limits};

use crate::records::{OutBatch, parse_batches};

/// Decodes `data` as a request and as record batches (see the module doc).
///
/// # Panics
///
/// When record batches that parsed do not parse the same once written for Fetch.
pub fn request(data: &[u8]) {
    let bytes = Bytes::copy_from_slice(data);
    // The session reads at least 8 bytes of frame (its size check).
    if bytes.len() >= 8 {
        let _ = crate::session::decode(bytes.clone());
    }
    let Ok(batches) = parse_batches(&bytes, 1 << 20) else {
        return;
    };
    for batch in batches {
        let records = owned_records(batch.batch.as_bytes());
        let mut out = OutBatch::default();
        for (i, (key, headers, body)) in records.iter().enumerate() {
            out.push(&RecordView {
                offset: i as u64,
                timestamp_ms: 1_700_000_000_000,
                key: key.as_deref(),
                headers: headers.iter().map(|(k, v)| (&k[..], &v[..])).collect(),
                body,
            });
        }
        let mut written = BytesMut::new();
        out.finish(&mut written);
        let again =
            parse_batches(&written.freeze(), 1 << 20).expect("a batch written for Fetch parses");
        assert_eq!(again.len(), 1);
        let again = owned_records(again[0].batch.as_bytes());
        assert_eq!(again.len(), records.len());
        for ((key, headers, body), b) in records.into_iter().zip(again) {
            let shown: Vec<_> = headers
                .into_iter()
                .filter(|(k, _)| !k.starts_with(RESERVED_HEADER_PREFIX.as_bytes()))
                .collect();
            assert_eq!((key, shown, body), b);
        }
    }
}

/// Key, headers and body.
pub(crate) type Owned = (Option<Vec<u8>>, Vec<(Vec<u8>, Vec<u8>)>, Vec<u8>);

/// The records of a batch that parsed, as every reader sees them.
pub(crate) fn owned_records(batch: &[u8]) -> Vec<Owned> {
    let mut out = Vec::new();
    visit_stored(batch, Offset(0), |r| {
        out.push((
            r.key.map(<[u8]>::to_vec),
            r.headers
                .iter()
                .map(|(k, v)| (k.to_vec(), v.to_vec()))
                .collect(),
            r.body.to_vec(),
        ));
    })
    .expect("a batch that parsed reads");
    out
}

/// [`SessionHarness::session`] runs one connection's bytes through the front
/// end's own listener and session code, as a client on the same machine would.
pub struct SessionHarness {
    broker: Broker,
    addr: SocketAddr,
    shutdown: CancellationToken,
    server: tokio::task::JoinHandle<()>,
}

/// Longest a session may take once its client has sent everything and closed its
/// side: far more than any input needs (a Fetch waits 50 ms at most here).
const SESSION_BOUND: Duration = Duration::from_secs(10);

/// API keys whose requests may rightly wait for the group's other members.
const JOIN_GROUP: i16 = 11;
const SYNC_GROUP: i16 = 14;

/// The harness broker's `max_rebalance_timeout_ms`: the longest a JoinGroup or
/// SyncGroup waits for other members.
const REBALANCE: Duration = Duration::from_millis(50);

impl SessionHarness {
    /// Opens a broker on `data_dir` and serves Kafka on a loopback port. Run it on
    /// a runtime with time and I/O enabled.
    ///
    /// # Panics
    ///
    /// If the broker does not open or the port cannot be bound.
    pub async fn open(data_dir: &Path) -> SessionHarness {
        let mut broker_config = BrokerConfig::new(data_dir);
        // Nothing here needs to survive a crash; `never` keeps each input fast.
        broker_config.log.fsync = FsyncPolicy::Never;
        broker_config.log.segment_bytes = 64 << 10;
        broker_config.limits = Limits {
            max_queues: 64,
            max_message_bytes: 64 << 10,
            disk_free_min_bytes: 0,
            ..Limits::default()
        };
        let (broker, _) = Broker::open(broker_config)
            .await
            .expect("the fuzz broker opens");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let addr = listener.local_addr().expect("a bound address");
        let shutdown = CancellationToken::new();
        let config = crate::KafkaConfig {
            default_partitions: 2,
            max_request_bytes: 1 << 20,
            max_inflight_request_bytes: 4 << 20,
            max_uncompressed_batch_bytes: 1 << 20,
            max_wait: Duration::from_millis(50),
            max_rebalance_timeout: REBALANCE,
            max_groups: 64,
            max_group_members: 16,
            // Producers are forgotten often, so that path is fuzzed too.
            max_producer_ids: 8,
            // A refused login answers at once: a fuzzer tries many.
            failed_login_delay: Duration::ZERO,
            shutdown: shutdown.clone(),
            ..crate::KafkaConfig::default()
        };
        let listeners = crate::Listeners {
            plain: Some(listener),
            tls: None,
        };
        let server = tokio::spawn(crate::serve_listeners(listeners, broker.clone(), config));
        SessionHarness {
            broker,
            addr,
            shutdown,
            server,
        }
    }

    /// Connects, sends `data` (its first byte picks how it is cut into writes: 0,
    /// whole), closes the sending side and reads everything the server writes
    /// until it closes. Returns what it wrote.
    ///
    /// # Panics
    ///
    /// When the session does not end, or writes anything but whole, size-prefixed
    /// frames.
    pub async fn session(&self, data: &[u8]) -> Vec<u8> {
        let Some((&cut, data)) = data.split_first() else {
            return Vec::new();
        };
        // A join waits its rebalance timeout and as long again; a sync, once.
        let bound = SESSION_BOUND + 3 * REBALANCE * group_waits(data);
        let size = if cut == 0 {
            data.len().max(1)
        } else {
            usize::from(cut)
        };
        let stream = tokio::net::TcpStream::connect(self.addr)
            .await
            .expect("the fuzz server accepts");
        let (mut read, mut write) = stream.into_split();
        let send = async {
            for piece in data.chunks(size) {
                if write.write_all(piece).await.is_err() {
                    return;
                }
                tokio::task::yield_now().await;
            }
            let _ = write.shutdown().await;
        };
        let receive = async {
            let mut out = Vec::new();
            // A reset (the server closed with input unread) ends it too.
            let _ = read.read_to_end(&mut out).await;
            out
        };
        let out = tokio::time::timeout(bound, async { tokio::join!(send, receive).1 })
            .await
            .expect("the session ends once its client has sent everything");
        let mut written = &out[..];
        while written.has_remaining() {
            assert!(written.len() >= 4, "a size prefix cut short");
            let len = usize::try_from(written.get_i32()).expect("a size that is not negative");
            assert!(len >= 4, "a frame without a correlation id");
            assert!(written.len() >= len, "a frame cut short");
            written.advance(len);
        }
        out
    }

    /// Deletes every stream.
    pub async fn reset(&self) {
        let Ok(vhost) = self.broker.vhost("/") else {
            return;
        };
        for stream in vhost.streams() {
            let _ = vhost.delete_stream(&stream.name).await;
        }
    }

    /// Stops serving and stops the broker.
    pub async fn close(self) {
        self.shutdown.cancel();
        let _ = self.server.await;
        self.broker.shutdown().await;
    }
}

/// How many of the size-prefixed frames `data` starts with are JoinGroup or
/// SyncGroup requests (up to the first bytes that are not a whole frame).
fn group_waits(data: &[u8]) -> u32 {
    let mut waits = 0;
    let mut rest = data;
    while rest.len() >= 6 {
        let size = i32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
        let Some(end) = usize::try_from(size)
            .ok()
            .and_then(|s| s.checked_add(4))
            .filter(|end| *end >= 6 && *end <= rest.len())
        else {
            break;
        };
        let key = i16::from_be_bytes([rest[4], rest[5]]);
        if key == JOIN_GROUP || key == SYNC_GROUP {
            waits += 1;
        }
        rest = &rest[end..];
    }
    waits
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;

    fn corpus() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/kafka_request")
    }

    /// Every input of the corpus, on a 256 KiB stack as in `fuzz/`.
    #[test]
    fn the_corpus_replays() {
        let mut n = 0;
        for entry in std::fs::read_dir(corpus()).expect("the corpus exists") {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            std::thread::Builder::new()
                .stack_size(256 << 10)
                .spawn(move || request(&bytes))
                .unwrap()
                .join()
                .expect("no panic");
            n += 1;
        }
        assert!(n >= 5, "only {n} inputs");
    }

    /// Seeds: frames a client sends, and a record set.
    fn seeds() -> Vec<(&'static str, Vec<u8>)> {
        let mut produce_batch = BytesMut::new();
        let mut out = OutBatch::default();
        out.push(&RecordView {
            offset: 0,
            timestamp_ms: 1,
            key: Some(b"k"),
            headers: vec![(b"h".as_slice(), b"v".as_slice())],
            body: b"body",
        });
        out.finish(&mut produce_batch);
        vec![
            (
                "api-versions-v3",
                vec![
                    0, 18, 0, 3, 0, 0, 0, 1, 0, 4, b'k', b'c', b'a', b't', 0, 0, 0, 0,
                ],
            ),
            (
                "metadata-v0-all",
                vec![0, 3, 0, 0, 0, 0, 0, 1, 0xff, 0xff, 0, 0, 0, 0],
            ),
            (
                "metadata-v9-huge",
                vec![
                    0, 3, 0, 9, 0, 0, 0, 2, 0xff, 0xff, 0, 0xff, 0xff, 0xff, 0xff, 0x0f,
                ],
            ),
            (
                "fetch-v4-empty",
                vec![
                    0, 1, 0, 4, 0, 0, 0, 3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 1, 0xf4, 0,
                    0, 0, 1, 0, 0x10, 0, 0, 0, 0, 0, 0, 0, 0,
                ],
            ),
            ("record-batch", produce_batch.to_vec()),
        ]
    }

    fn session_corpus() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/kafka_session")
    }

    /// Every input of the session corpus, against one broker.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_session_corpus_replays() {
        let dir = tempfile::tempdir().unwrap();
        let harness = SessionHarness::open(dir.path()).await;
        let mut n = 0;
        for entry in std::fs::read_dir(session_corpus()).expect("the corpus exists") {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            harness.session(&bytes).await;
            harness.reset().await;
            n += 1;
        }
        harness.close().await;
        assert!(n >= 4, "only {n} inputs");
    }

    /// The harness drives a whole session: the seed that makes a topic, produces
    /// to it and fetches from it gets three answers, the last with the record.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_seed_session_produces_and_fetches_back() {
        let dir = tempfile::tempdir().unwrap();
        let harness = SessionHarness::open(dir.path()).await;
        for (name, seed) in session_seeds() {
            if !name.starts_with("produce-and-fetch") {
                continue;
            }
            let out = harness.session(&seed).await;
            let mut frames = Vec::new();
            let mut rest = &out[..];
            while rest.has_remaining() {
                let len = usize::try_from(rest.get_i32()).unwrap();
                frames.push(rest[..len].to_vec());
                rest.advance(len);
            }
            assert_eq!(frames.len(), 3, "{name}: {out:?}");
            let fetched = &frames[2];
            assert!(
                fetched.windows(4).any(|w| w == b"body"),
                "{name}: the record comes back: {fetched:?}"
            );
            harness.reset().await;
        }
        harness.close().await;
    }

    #[test]
    fn group_joins_and_syncs_are_counted_up_to_a_broken_frame() {
        let frame = |key: i16| {
            let mut f = 6i32.to_be_bytes().to_vec();
            f.extend_from_slice(&key.to_be_bytes());
            f.extend_from_slice(&[0, 0, 0, 0]);
            f
        };
        let input = [frame(3), frame(11), frame(0), frame(14), vec![9, 9, 9]].concat();
        assert_eq!(group_waits(&input), 2);
        // A size that does not fit: nothing after it counts.
        let broken = [frame(11), vec![0x7f, 0xff, 0xff, 0xff, 0, 11], frame(11)].concat();
        assert_eq!(group_waits(&broken), 1);
    }

    /// A size-prefixed request: key, version, correlation id, no client id, body.
    fn framed(key: i16, version: i16, correlation: i32, body: &[u8]) -> Vec<u8> {
        let mut frame = Vec::new();
        frame.extend_from_slice(&key.to_be_bytes());
        frame.extend_from_slice(&version.to_be_bytes());
        frame.extend_from_slice(&correlation.to_be_bytes());
        frame.extend_from_slice(&[0xff, 0xff]);
        frame.extend_from_slice(body);
        let mut out = u32::try_from(frame.len()).unwrap().to_be_bytes().to_vec();
        out.extend(frame);
        out
    }

    /// Session seeds: a topic auto-created by Metadata v4, a Produce v3 of one
    /// batch to it, a Fetch v4 from its first offset; the request seeds framed.
    fn session_seeds() -> Vec<(&'static str, Vec<u8>)> {
        let batch = seeds()
            .into_iter()
            .find(|(name, _)| *name == "record-batch")
            .unwrap()
            .1;
        let topic = [0u8, 1, b't'];
        let metadata = [&[0u8, 0, 0, 1][..], &topic, &[1]].concat();
        let mut produce = vec![0xff, 0xff, 0xff, 0xff, 0, 0, 0x13, 0x88, 0, 0, 0, 1];
        produce.extend_from_slice(&topic);
        produce.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0]);
        produce.extend_from_slice(&u32::try_from(batch.len()).unwrap().to_be_bytes());
        produce.extend_from_slice(&batch);
        let mut fetch = vec![
            0xff, 0xff, 0xff, 0xff, 0, 0, 0, 10, 0, 0, 0, 1, 0, 0x10, 0, 0, 0, 0, 0, 0, 1,
        ];
        fetch.extend_from_slice(&topic);
        fetch.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        fetch.extend_from_slice(&[0, 0x10, 0, 0]);
        let round_trip = [
            framed(3, 4, 1, &metadata),
            framed(0, 3, 2, &produce),
            framed(1, 4, 3, &fetch),
        ]
        .concat();
        let requests: Vec<u8> = seeds()
            .into_iter()
            .filter(|(name, _)| *name != "record-batch")
            .flat_map(|(_, r)| {
                let mut f = u32::try_from(r.len()).unwrap().to_be_bytes().to_vec();
                f.extend(r);
                f
            })
            .collect();
        // A Fetch that waits on an empty topic, then requests behind it: another
        // kind ends its wait at once, a second Fetch does not (session.rs).
        let api_versions = framed(18, 0, 5, &[]);
        let behind_fetch = [
            framed(3, 4, 1, &metadata),
            framed(1, 4, 2, &fetch),
            api_versions.clone(),
            framed(1, 4, 6, &fetch),
            framed(1, 4, 7, &fetch),
            framed(3, 4, 8, &metadata),
        ]
        .concat();
        let with = |cut: u8, bytes: &[u8]| [&[cut][..], bytes].concat();
        vec![
            ("produce-and-fetch", with(0, &round_trip)),
            ("produce-and-fetch-dribbled", with(7, &round_trip)),
            ("requests", with(0, &requests)),
            ("requests-dribbled", with(3, &requests)),
            ("behind-a-fetch", with(0, &behind_fetch)),
            ("group-requests", with(0, &group_requests())),
            (
                "config-and-static-requests",
                with(0, &config_and_static_requests()),
            ),
            (
                "trim-and-offset-requests",
                with(0, &trim_and_offset_requests(&metadata, &produce)),
            ),
        ]
    }

    /// A topic Metadata v4 makes and a Produce v3 fills, then DeleteRecords v0 to
    /// the partition's end, a commit v2 without a member, OffsetDelete v0 of that
    /// offset, and DescribeCluster v0 (a flexible request: header v2).
    fn trim_and_offset_requests(metadata: &[u8], produce: &[u8]) -> Vec<u8> {
        let (group, topic, one) = ([0u8, 1, b'g'], [0u8, 1, b't'], [0u8, 0, 0, 1]);
        let delete_records = [
            &one[..],
            &topic,
            &one,
            &[0; 4],
            &[0xff; 8],
            &[0, 0, 0x13, 0x88],
        ]
        .concat();
        let commit = memberless_commit(1);
        let offset_delete = [&group[..], &one, &topic, &one, &[0; 4]].concat();
        [
            framed(3, 4, 1, metadata),
            framed(0, 3, 2, produce),
            framed(21, 0, 3, &delete_records),
            framed(8, 2, 4, &commit),
            framed(47, 0, 5, &offset_delete),
            // Header v2's tagged fields, then the body and its tagged fields.
            framed(60, 0, 6, &[0, 0, 0]),
        ]
        .concat()
    }

    /// A topic Metadata v4 makes, then IncrementalAlterConfigs v0 (a SET and a
    /// DELETE), AlterConfigs v0, DescribeConfigs v1, and a static member's
    /// JoinGroup v5 (instance `i`), Heartbeat v3 under another member id (fenced)
    /// and LeaveGroup v3 by instance id.
    fn config_and_static_requests() -> Vec<u8> {
        let string = |text: &str| {
            let mut out = u16::try_from(text.len()).unwrap().to_be_bytes().to_vec();
            out.extend_from_slice(text.as_bytes());
            out
        };
        let (one, two, null) = ([0u8, 0, 0, 1], [0u8, 0, 0, 2], [0xffu8, 0xff]);
        let topic = [&[2u8][..], &string("t")].concat();
        let incremental = [
            &one[..],
            &topic,
            &two,
            &string("retention.ms"),
            &[0],
            &string("1000"),
            &string("retention.bytes"),
            &[1],
            &null,
            &[0],
        ]
        .concat();
        let legacy = [
            &one[..],
            &topic,
            &one,
            &string("segment.bytes"),
            &string("4096"),
            &[0],
        ]
        .concat();
        let describe = [&one[..], &topic, &[0xff; 4], &[0]].concat();
        let group = string("g2");
        let join = [
            &group[..],
            &[0, 0, 0x17, 0x70, 0, 0, 0x17, 0x70],
            &string(""),
            &string("i"),
            &string("consumer"),
            &one,
            &string("range"),
            &[0, 0, 0, 0],
        ]
        .concat();
        let heartbeat = [&group[..], &one, &string("m"), &string("i")].concat();
        let leave = [&group[..], &one, &string(""), &string("i")].concat();
        [
            framed(3, 4, 1, &[&one[..], &string("t"), &[1]].concat()),
            framed(44, 0, 2, &incremental),
            framed(33, 0, 3, &legacy),
            framed(32, 1, 4, &describe),
            framed(11, 5, 5, &join),
            framed(12, 3, 6, &heartbeat),
            framed(13, 3, 7, &leave),
        ]
        .concat()
    }

    /// OffsetCommit v2 of group `g` without a member (generation -1): partition 0
    /// of topic `t` at `offset`, no metadata.
    fn memberless_commit(offset: u8) -> Vec<u8> {
        let (group, topic, one) = ([0u8, 1, b'g'], [0u8, 1, b't'], [0u8, 0, 0, 1]);
        [
            &group[..],
            &[0xff; 4],
            &[0, 0],
            &[0xff; 8],
            &one,
            &topic,
            &one,
            &[0; 4],
            &[0, 0, 0, 0, 0, 0, 0, offset],
            &[0xff, 0xff],
        ]
        .concat()
    }

    /// The coordinator's requests: FindCoordinator v0, a JoinGroup v0 that is
    /// the group's only member (answered at once), a SyncGroup v0, Heartbeat v0
    /// and LeaveGroup v0 of a member that is not there, a commit v2 with no
    /// member, OffsetFetch v1, DescribeGroups v0, ListGroups v0,
    /// InitProducerId v0 and DeleteGroups v0, against a topic Metadata v4 makes
    /// first.
    fn group_requests() -> Vec<u8> {
        let (group, topic, member) = ([0u8, 1, b'g'], [0u8, 1, b't'], [0u8, 1, b'm']);
        let one = [0u8, 0, 0, 1];
        let commit = memberless_commit(5);
        let offset_fetch = [&group[..], &one, &topic, &one, &[0; 4]].concat();
        let heartbeat = [&group[..], &one, &member].concat();
        let consumer = [&[0u8, 8][..], b"consumer"].concat();
        let range = [&[0u8, 5][..], b"range", &[0, 0, 0, 0]].concat();
        let join = [
            &group[..],
            &[0, 0, 0x17, 0x70],
            &[0, 0],
            &consumer,
            &one,
            &range,
        ]
        .concat();
        let sync = [&group[..], &one, &member, &[0; 4]].concat();
        [
            framed(3, 4, 1, &[&one[..], &topic, &[1]].concat()),
            framed(10, 0, 2, &group),
            framed(11, 0, 3, &join),
            framed(14, 0, 4, &sync),
            framed(8, 2, 5, &commit),
            framed(9, 1, 6, &offset_fetch),
            framed(12, 0, 7, &heartbeat),
            framed(13, 0, 8, &[&group[..], &member].concat()),
            framed(15, 0, 9, &[&one[..], &group].concat()),
            framed(16, 0, 10, &[]),
            framed(22, 0, 11, &[0xff, 0xff, 0, 0, 0x27, 0x10]),
            framed(42, 0, 12, &[&one[..], &group].concat()),
        ]
        .concat()
    }

    /// The answers a session wrote, one frame each.
    fn answers(out: &[u8]) -> Vec<Vec<u8>> {
        let mut frames = Vec::new();
        let mut rest = out;
        while rest.has_remaining() {
            let len = usize::try_from(rest.get_i32()).unwrap();
            frames.push(rest[..len].to_vec());
            rest.advance(len);
        }
        frames
    }

    /// The group seed reaches the coordinator: every request answered, none
    /// closing the connection; the Fetch seed answers in order.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_group_and_fetch_seeds_are_answered_in_full() {
        let dir = tempfile::tempdir().unwrap();
        let harness = SessionHarness::open(dir.path()).await;
        for (name, seed) in session_seeds() {
            let want = match name {
                "group-requests" => 12,
                "config-and-static-requests" => 7,
                "trim-and-offset-requests" | "behind-a-fetch" => 6,
                _ => continue,
            };
            let frames = answers(&harness.session(&seed).await);
            assert_eq!(frames.len(), want, "{name}: {frames:?}");
            let ids: Vec<i32> = frames
                .iter()
                .map(|f| i32::from_be_bytes(f[..4].try_into().unwrap()))
                .collect();
            let mut sorted = ids.clone();
            sorted.sort_unstable();
            assert_eq!(ids, sorted, "{name}: answered in order");
            harness.reset().await;
        }
        harness.close().await;
    }

    /// Writes the session seeds: `cargo test -p weir-kafka write_session_seeds --
    /// --ignored`.
    #[test]
    #[ignore = "writes fuzz/corpus/kafka_session"]
    fn write_session_seeds() {
        std::fs::create_dir_all(session_corpus()).unwrap();
        for (name, bytes) in session_seeds() {
            std::fs::write(session_corpus().join(format!("seed-{name}")), bytes).unwrap();
        }
    }

    /// Writes the seeds: `cargo test -p weir-kafka write_seeds -- --ignored`.
    #[test]
    #[ignore = "writes fuzz/corpus/kafka_request"]
    fn write_seeds() {
        std::fs::create_dir_all(corpus()).unwrap();
        for (name, bytes) in seeds() {
            std::fs::write(corpus().join(format!("seed-{name}")), bytes).unwrap();
        }
    }
}
