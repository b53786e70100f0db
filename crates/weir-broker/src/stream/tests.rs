//! Streams over the whole broker on real files: the partitioner agrees with Kafka,
//! keyed records keep their order in one partition, readers start where they ask,
//! wait for records, are clamped by retention, and everything survives a restart.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;

use super::{ReadFrom, StreamOptions, StreamRecordIn, murmur2, partition_for};
use crate::api::{Declared, QueueOptions};
use crate::broker::Broker;
use crate::config::BrokerConfig;
use crate::error::BrokerError;

async fn open(dir: &std::path::Path) -> Broker {
    let mut config = BrokerConfig::new(dir);
    config.limits.disk_free_min_bytes = 0;
    Broker::open(config).await.expect("open").0
}

fn record(key: Option<&str>, body: &str) -> StreamRecordIn {
    StreamRecordIn {
        key: key.map(|k| Bytes::copy_from_slice(k.as_bytes())),
        headers: BTreeMap::from([("h".to_owned(), Bytes::from_static(b"v"))]),
        body: Bytes::copy_from_slice(body.as_bytes()),
    }
}

fn bodies(read: &super::StreamRead) -> Vec<String> {
    read.records
        .iter()
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        .collect()
}

#[test]
fn the_partitioner_is_kafkas() {
    // Kafka's own test vectors (`UtilsTest.testMurmur2`), as signed ints.
    #[allow(clippy::cast_possible_wrap, reason = "Kafka's vectors are Java ints")]
    let signed = |s: &[u8]| murmur2(s) as i32;
    assert_eq!(signed(b"21"), -973_932_308);
    assert_eq!(signed(b"foobar"), -790_332_482);
    assert_eq!(signed(b"a-little-bit-long-string"), -985_981_536);
    assert_eq!(signed(b"a-little-bit-longer-string"), -1_486_304_829);
    assert_eq!(
        signed(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8"),
        -58_897_971
    );
    assert_eq!(signed(b"abc"), 479_470_107);
    assert!(partition_for(b"foobar", 7) < 7);
}

#[tokio::test]
async fn keyed_records_keep_their_order_in_one_partition_and_readers_start_where_they_ask() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = open(dir.path()).await;
    let options = StreamOptions {
        partitions: 3,
        ..StreamOptions::default()
    };
    assert_eq!(
        broker
            .declare_stream("events", options.clone())
            .await
            .expect("declare"),
        Declared::Created
    );
    assert_eq!(
        broker
            .declare_stream("events", options)
            .await
            .expect("again"),
        Declared::Existed
    );
    assert!(matches!(
        broker
            .declare_stream("events", StreamOptions::default())
            .await,
        Err(BrokerError::Conflict { .. })
    ));
    let placed = broker
        .append(
            "events",
            (0..6)
                .map(|i| record(Some("user-7"), &format!("k{i}")))
                .collect(),
        )
        .await
        .expect("append");
    let partition = partition_for(b"user-7", 3);
    assert!(placed.iter().all(|p| p.partition == partition));
    assert_eq!(
        placed.iter().map(|p| p.offset).collect::<Vec<_>>(),
        [0, 1, 2, 3, 4, 5]
    );
    let read = broker
        .read_stream("events", partition, ReadFrom::First, 100, 0)
        .await
        .expect("read");
    assert_eq!(bodies(&read), ["k0", "k1", "k2", "k3", "k4", "k5"]);
    assert_eq!(read.next, 6);
    assert_eq!(read.records[0].headers["h"], Bytes::from_static(b"v"));
    assert_eq!(read.records[0].key.as_deref(), Some(&b"user-7"[..]));
    // Reading changed nothing: the same read answers the same.
    let again = broker
        .read_stream("events", partition, ReadFrom::Offset(4), 1, 0)
        .await
        .expect("read");
    assert_eq!((bodies(&again), again.next), (vec!["k4".to_owned()], 5));
    let last = broker
        .read_stream("events", partition, ReadFrom::Last, 10, 0)
        .await
        .expect("last");
    assert_eq!(bodies(&last), ["k5"]);
    let next = broker
        .read_stream("events", partition, ReadFrom::Next, 10, 0)
        .await
        .expect("next");
    assert!(next.records.is_empty());
    assert_eq!(next.next, 6);
    let by_time = broker
        .read_stream("events", partition, ReadFrom::Time(0), 2, 0)
        .await
        .expect("time");
    assert_eq!(bodies(&by_time), ["k0", "k1"]);
    let recent = broker
        .read_stream("events", partition, ReadFrom::Ago(60_000), 1, 0)
        .await
        .expect("ago");
    assert_eq!(bodies(&recent), ["k0"]);
    assert!(matches!(
        broker
            .read_stream("events", partition, ReadFrom::Offset(7), 1, 0)
            .await,
        Err(BrokerError::InvalidArgument { .. })
    ));
    assert!(matches!(
        broker.read_stream("events", 3, ReadFrom::First, 1, 0).await,
        Err(BrokerError::InvalidArgument { .. })
    ));
    // Unkeyed records are spread over the partitions.
    let spread = broker
        .append(
            "events",
            (0..6).map(|i| record(None, &format!("u{i}"))).collect(),
        )
        .await
        .expect("append");
    for p in 0..3 {
        assert_eq!(spread.iter().filter(|x| x.partition == p).count(), 2);
    }
}

#[tokio::test]
async fn a_reader_waits_for_the_next_record() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = open(dir.path()).await;
    broker
        .declare_stream("s", StreamOptions::default())
        .await
        .expect("declare");
    let reader = {
        let broker = broker.clone();
        tokio::spawn(async move { broker.read_stream("s", 0, ReadFrom::Next, 10, 20_000).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    broker
        .append("s", vec![record(None, "late")])
        .await
        .expect("append");
    let read = reader.await.expect("join").expect("read");
    assert_eq!(bodies(&read), ["late"]);
}

#[tokio::test]
async fn streams_survive_a_restart_share_the_queue_namespace_and_go_when_deleted() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let broker = open(dir.path()).await;
        broker
            .declare_stream("s", StreamOptions::default())
            .await
            .expect("declare");
        broker
            .append("s", vec![record(None, "kept")])
            .await
            .expect("append");
        broker
            .declare("q", QueueOptions::default())
            .await
            .expect("queue");
        assert!(matches!(
            broker.declare_stream("q", StreamOptions::default()).await,
            Err(BrokerError::PreconditionFailed { .. })
        ));
        assert!(matches!(
            broker.declare("s", QueueOptions::default()).await,
            Err(BrokerError::PreconditionFailed { .. })
        ));
        broker
            .declare_stream("gone", StreamOptions::default())
            .await
            .expect("declare");
        broker.delete_stream("gone").await.expect("delete");
        broker.shutdown().await;
    }
    let broker = open(dir.path()).await;
    let read = broker
        .read_stream("s", 0, ReadFrom::First, 10, 0)
        .await
        .expect("read");
    assert_eq!(bodies(&read), ["kept"]);
    assert!(matches!(
        broker.stream_info("gone"),
        Err(BrokerError::NotFound { .. })
    ));
    assert_eq!(broker.streams_where(|_| true).len(), 1);
}

#[tokio::test]
async fn retention_removes_old_segments_and_clamps_readers_to_the_first_record() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = BrokerConfig::new(dir.path());
    config.limits.disk_free_min_bytes = 0;
    config.log.segment_bytes = 4096;
    config.log.retention_check_interval_ms = 50;
    let broker = Broker::open(config).await.expect("open").0;
    let options = StreamOptions {
        max_bytes: Some(16 * 1024),
        ..StreamOptions::default()
    };
    broker.declare_stream("r", options).await.expect("declare");
    let body = "x".repeat(500);
    for _ in 0..20 {
        broker
            .append("r", (0..10).map(|_| record(None, &body)).collect())
            .await
            .expect("append");
    }
    let mut first = 0;
    for _ in 0..100 {
        first = broker.stream_info("r").expect("info").partition_stats[0].first_offset;
        if first > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(first > 0, "retention removed old segments");
    let info = broker.stream_info("r").expect("info");
    assert_eq!(
        info.partition_stats[0].next_offset, 200,
        "the newest are kept"
    );
    let read = broker
        .read_stream("r", 0, ReadFrom::Offset(0), 1, 0)
        .await
        .expect("read");
    assert_eq!(
        read.records[0].offset, first,
        "a reader below the first is clamped"
    );
}

#[tokio::test]
async fn partitions_grow_and_never_shrink() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let broker = open(dir.path()).await;
        broker
            .declare_stream("g", StreamOptions::default())
            .await
            .expect("declare");
        broker
            .append("g", vec![record(None, "before")])
            .await
            .expect("append");
        let three = StreamOptions {
            partitions: 3,
            ..StreamOptions::default()
        };
        assert_eq!(
            broker
                .declare_stream("g", three.clone())
                .await
                .expect("grow"),
            Declared::Existed
        );
        assert_eq!(
            broker.stream_info("g").expect("info").partition_stats.len(),
            3
        );
        let placed = broker
            .append(
                "g",
                (0..3).map(|i| record(None, &format!("u{i}"))).collect(),
            )
            .await
            .expect("append");
        assert_eq!(
            placed.iter().map(|p| p.partition).collect::<Vec<_>>(),
            [0, 1, 2],
            "the new partitions take records"
        );
        assert!(matches!(
            broker.declare_stream("g", StreamOptions::default()).await,
            Err(BrokerError::Conflict { .. })
        ));
        broker.shutdown().await;
    }
    let broker = open(dir.path()).await;
    let info = broker.stream_info("g").expect("info");
    assert_eq!(info.options.partitions, 3);
    let read = broker
        .read_stream("g", 0, ReadFrom::First, 10, 0)
        .await
        .expect("read");
    assert_eq!(bodies(&read), ["before", "u0"]);
}

#[tokio::test]
async fn streams_go_through_definitions_and_rabbitmq_stream_queues_import() {
    let (source_dir, target_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let source = open(source_dir.path()).await;
    let options = StreamOptions {
        partitions: 2,
        max_age_ms: Some(7 * 86_400_000),
        ..StreamOptions::default()
    };
    source
        .declare_stream("events", options.clone())
        .await
        .expect("stream");
    let exported = source.export_definitions().await;
    let def = exported
        .queues
        .iter()
        .find(|q| q.name == "events")
        .expect("exported");
    assert_eq!(def.arguments["x-queue-type"], "stream");
    assert_eq!(def.arguments["x-max-age"], "604800s");
    let target = open(target_dir.path()).await;
    target.import_definitions(exported).await.expect("import");
    assert_eq!(
        target.stream_info("events").expect("imported").options,
        options
    );
    // A RabbitMQ 3.x export of a stream queue.
    let rabbit: crate::definitions::BrokerDefinitions = serde_json::from_value(serde_json::json!({
        "queues": [{"name": "audit", "vhost": "/", "durable": true, "auto_delete": false,
                    "arguments": {"x-queue-type": "stream", "x-max-age": "12h",
                                  "x-max-length-bytes": 1_000_000_000}}]
    }))
    .expect("parses");
    target.import_definitions(rabbit).await.expect("import");
    let audit = target.stream_info("audit").expect("a stream").options;
    assert_eq!(
        (audit.max_age_ms, audit.max_bytes),
        (Some(43_200_000), Some(1_000_000_000))
    );
}

#[tokio::test]
async fn a_partitions_queue_name_reads_and_tracks_that_partition_and_is_no_one_elses() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = open(dir.path()).await;
    let three = StreamOptions {
        partitions: 3,
        ..StreamOptions::default()
    };
    broker
        .declare("orders-1", QueueOptions::default())
        .await
        .expect("a queue");
    let refused = broker.declare_stream("orders", three.clone()).await;
    assert!(
        matches!(refused, Err(BrokerError::PreconditionFailed { .. })),
        "{refused:?}"
    );
    broker.delete("orders-1").await.expect("delete");
    broker
        .declare_stream("orders", three)
        .await
        .expect("declare");
    let keyed: Vec<StreamRecordIn> = (0..30)
        .map(|i| record(Some(&format!("k{i}")), &format!("r{i}")))
        .collect();
    broker.append("orders", keyed).await.expect("append");
    let direct = broker
        .read_stream("orders", 1, ReadFrom::First, 100, 0)
        .await
        .expect("read partition 1");
    let by_name = broker
        .read_stream("orders-1", 0, ReadFrom::First, 100, 0)
        .await
        .expect("read orders-1");
    assert!(!direct.records.is_empty());
    assert_eq!(bodies(&direct), bodies(&by_name));
    assert!(
        broker
            .read_stream("orders-1", 1, ReadFrom::First, 1, 0)
            .await
            .is_err()
    );
    assert!(
        broker
            .read_stream("orders-3", 0, ReadFrom::First, 1, 0)
            .await
            .is_err()
    );
    broker
        .track_offset("orders-1", "t", 5)
        .await
        .expect("track");
    assert_eq!(
        broker.tracked_offset("orders-1", "t").expect("tracked"),
        Some(5)
    );
    assert_eq!(
        broker.tracked_offset("orders-0", "t").expect("tracked"),
        None
    );
    for taken in [
        broker
            .declare("orders-2", QueueOptions::default())
            .await
            .map(|_| ()),
        broker.delete_stream("orders-2").await,
    ] {
        assert!(
            matches!(taken, Err(BrokerError::PreconditionFailed { .. })),
            "{taken:?}"
        );
    }
    assert_eq!(
        broker
            .declare_stream("orders-2", StreamOptions::default())
            .await
            .expect("the partition, as a stream queue"),
        Declared::Existed
    );
}

#[tokio::test]
async fn a_streams_own_segment_size_seals_its_segments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = open(dir.path()).await;
    let small = StreamOptions {
        segment_bytes: Some(4096),
        ..StreamOptions::default()
    };
    let too_small = StreamOptions {
        segment_bytes: Some(100),
        ..StreamOptions::default()
    };
    assert!(broker.declare_stream("tiny", too_small).await.is_err());
    broker.declare_stream("s", small).await.expect("declare");
    let body = "x".repeat(1000);
    for _ in 0..20 {
        broker
            .append("s", vec![record(None, &body)])
            .await
            .expect("append");
    }
    let info = broker.stream_info("s").expect("info");
    assert!(info.partition_stats[0].segments >= 4, "{info:?}");
    assert_eq!(info.options.segment_bytes, Some(4096));
}

#[tokio::test]
async fn a_streams_retention_changes_at_once_and_across_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let small = StreamOptions {
        partitions: 2,
        segment_bytes: Some(4096),
        ..StreamOptions::default()
    };
    {
        let broker = open(dir.path()).await;
        broker
            .declare_stream("a", small.clone())
            .await
            .expect("declare");
        let body = "x".repeat(500);
        for _ in 0..20 {
            broker
                .append("a", (0..10).map(|_| record(None, &body)).collect())
                .await
                .expect("append");
        }
        let firsts = |broker: &Broker| -> Vec<u64> {
            let info = broker.stream_info("a").expect("info");
            info.partition_stats
                .iter()
                .map(|p| p.first_offset)
                .collect()
        };
        assert_eq!(firsts(&broker), [0, 0]);
        // Partitions and durability are not retention.
        let fewer = StreamOptions {
            partitions: 1,
            ..small.clone()
        };
        assert!(matches!(
            broker.alter_stream("a", fewer).await,
            Err(BrokerError::InvalidArgument { .. })
        ));
        let limited = StreamOptions {
            max_bytes: Some(8 * 1024),
            segment_bytes: Some(8192),
            ..small.clone()
        };
        broker
            .alter_stream("a", limited.clone())
            .await
            .expect("alter");
        // Applied at once, not at the next retention check a minute later.
        assert!(
            firsts(&broker).iter().all(|f| *f > 0),
            "{:?}",
            firsts(&broker)
        );
        assert_eq!(broker.stream_info("a").expect("info").options, limited);
        assert!(matches!(
            broker.alter_stream("nope", limited).await,
            Err(BrokerError::NotFound { .. })
        ));
        broker.shutdown().await;
    }
    let broker = open(dir.path()).await;
    let info = broker.stream_info("a").expect("info");
    assert_eq!(
        info.options.max_bytes,
        Some(8 * 1024),
        "kept across a restart"
    );
    assert_eq!(info.options.segment_bytes, Some(8192));
}

#[tokio::test]
async fn a_trimmed_partition_starts_at_the_trim_across_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = StreamOptions {
        partitions: 2,
        segment_bytes: Some(4096),
        ..StreamOptions::default()
    };
    {
        let broker = open(dir.path()).await;
        broker.declare_stream("t", options).await.expect("declare");
        let body = "y".repeat(300);
        for _ in 0..10 {
            broker
                .append("t", (0..10).map(|_| record(Some("k"), &body)).collect())
                .await
                .expect("append");
        }
        let partition = partition_for(b"k", 2);
        let other = 1 - partition;
        assert_eq!(
            broker.trim_stream("t", partition, Some(42)).await.ok(),
            Some(42)
        );
        let read = broker
            .read_stream("t", partition, ReadFrom::First, 1, 0)
            .await
            .expect("read");
        assert_eq!(read.records.first().map(|r| r.offset), Some(42));
        assert!(
            matches!(
                broker.read_stream("t", partition, ReadFrom::Offset(3), 1, 0).await,
                Ok(r) if r.records.first().map(|r| r.offset) == Some(42)
            ),
            "a reader below the first is clamped to it"
        );
        assert_eq!(
            broker.trim_stream("t", partition, Some(7)).await.ok(),
            Some(42),
            "a trim below the first changes nothing"
        );
        assert!(matches!(
            broker.trim_stream("t", partition, Some(101)).await,
            Err(BrokerError::InvalidArgument { .. })
        ));
        assert!(matches!(
            broker.trim_stream("t", 2, None).await,
            Err(BrokerError::InvalidArgument { .. })
        ));
        assert!(
            matches!(
                broker.trim_stream("t-1", 0, None).await,
                Err(BrokerError::NotFound { .. })
            ),
            "not through a partition's queue name"
        );
        assert_eq!(
            broker.trim_stream("t", other, None).await.ok(),
            Some(0),
            "the end of an empty partition"
        );
        let segments = |broker: &Broker| {
            broker.stream_info("t").expect("info").partition_stats[partition as usize].segments
        };
        let before = segments(&broker);
        broker.shutdown().await;
        drop(broker);
        let broker = open(dir.path()).await;
        assert_eq!(broker.stream_bounds("t", partition).ok(), Some((42, 100)));
        assert_eq!(
            broker.trim_stream("t", partition, None).await.ok(),
            Some(100)
        );
        assert!(
            segments(&broker) < before,
            "whole segments below it are reclaimed"
        );
        broker.shutdown().await;
    }
}
