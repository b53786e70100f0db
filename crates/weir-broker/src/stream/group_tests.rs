//! Consumer groups over the whole broker on real files: disjoint partitions that
//! rebalance when a member leaves or times out, positions and commits, commits
//! refused from non-owners and kept across a restart, start policies, lag, resets.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;

use super::PollOptions;
use super::groups::GroupConfig;
use super::{ReadFrom, StreamOptions, StreamRecordIn};
use crate::api::Declared;
use crate::broker::Broker;
use crate::config::BrokerConfig;
use crate::error::BrokerError;

async fn open(dir: &std::path::Path) -> Broker {
    let mut config = BrokerConfig::new(dir);
    config.limits.disk_free_min_bytes = 0;
    Broker::open(config).await.expect("open").0
}

fn records(prefix: &str, n: usize) -> Vec<StreamRecordIn> {
    (0..n)
        .map(|i| StreamRecordIn {
            body: Bytes::from(format!("{prefix}{i}")),
            ..StreamRecordIn::default()
        })
        .collect()
}

async fn stream_with_group(broker: &Broker, partitions: u32, config: GroupConfig) {
    let options = StreamOptions {
        partitions,
        ..StreamOptions::default()
    };
    broker.declare_stream("s", options).await.expect("stream");
    assert_eq!(
        broker
            .declare_group("s", "g", config.clone())
            .await
            .expect("group"),
        Declared::Created
    );
    assert_eq!(
        broker.declare_group("s", "g", config).await.expect("again"),
        Declared::Existed
    );
}

#[tokio::test]
async fn members_get_disjoint_partitions_and_take_over_when_one_leaves_or_times_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = open(dir.path()).await;
    let config = GroupConfig {
        session_timeout_ms: 300,
        ..GroupConfig::default()
    };
    stream_with_group(&broker, 4, config).await;
    broker.append("s", records("r", 8)).await.expect("append");
    let a = broker.poll("s", "g", "a", 100, 0).await.expect("a");
    assert_eq!(a.partitions, [0, 1, 2, 3], "alone, a owns every partition");
    assert_eq!(a.records.len(), 8);
    let b = broker.poll("s", "g", "b", 100, 0).await.expect("b");
    let a = broker.poll("s", "g", "a", 100, 0).await.expect("a again");
    assert_eq!(a.partitions, [0, 2]);
    assert_eq!(b.partitions, [1, 3]);
    // b had never read: it starts from the committed offsets (none: the start
    // policy, first) and gets its partitions' records again.
    assert_eq!(b.records.len(), 4);
    assert!(broker.leave("s", "g", "b").expect("leave"));
    let a = broker.poll("s", "g", "a", 100, 0).await.expect("a alone");
    assert_eq!(a.partitions, [0, 1, 2, 3]);
    // A member that stops polling is dropped after the session timeout.
    broker.poll("s", "g", "c", 1, 0).await.expect("c joins");
    tokio::time::sleep(Duration::from_millis(600)).await;
    let a = broker
        .poll("s", "g", "a", 100, 0)
        .await
        .expect("a after c timed out");
    assert_eq!(a.partitions, [0, 1, 2, 3]);
    let info = broker.group("s", "g").await.expect("describe");
    assert_eq!(info.members.keys().collect::<Vec<_>>(), ["a"]);
}

#[tokio::test]
async fn commits_come_from_owners_survive_a_restart_and_are_where_a_new_member_starts() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let broker = open(dir.path()).await;
        stream_with_group(&broker, 2, GroupConfig::default()).await;
        broker.append("s", records("r", 10)).await.expect("append");
        let a = broker.poll("s", "g", "a", 100, 0).await.expect("a");
        assert_eq!(a.records.len(), 10);
        // Polls go on from where the last one stopped.
        assert!(
            broker
                .poll("s", "g", "a", 100, 0)
                .await
                .expect("again")
                .records
                .is_empty()
        );
        broker.poll("s", "g", "b", 100, 0).await.expect("b joins");
        let refused = broker
            .commit("s", "g", "a", BTreeMap::from([(1, 3)]))
            .await
            .expect_err("a no longer owns partition 1");
        assert_eq!(refused.code(), "not_owner");
        broker
            .commit("s", "g", "a", BTreeMap::from([(0, 3)]))
            .await
            .expect("a owns partition 0");
        broker
            .commit("s", "g", "b", BTreeMap::from([(1, 5)]))
            .await
            .expect("b owns partition 1");
        let info = broker.group("s", "g").await.expect("describe");
        assert_eq!(info.partitions[0].committed, Some(3));
        assert_eq!(info.partitions[0].lag, 2);
        assert_eq!(info.partitions[1].lag, 0);
        broker.shutdown().await;
    }
    let broker = open(dir.path()).await;
    let info = broker
        .group("s", "g")
        .await
        .expect("describe after restart");
    assert_eq!(info.partitions[0].committed, Some(3));
    assert_eq!(info.partitions[1].committed, Some(5));
    assert!(
        info.members.is_empty(),
        "members are not kept across a restart"
    );
    let c = broker.poll("s", "g", "c", 100, 0).await.expect("c");
    let offsets: Vec<(u32, u64)> = c.records.iter().map(|r| (r.partition, r.offset)).collect();
    assert_eq!(offsets, [(0, 3), (0, 4)], "from the committed offsets on");
}

#[tokio::test]
async fn start_policies_long_polls_and_resets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = open(dir.path()).await;
    let config = GroupConfig {
        start: "next".into(),
        session_timeout_ms: 200,
    };
    stream_with_group(&broker, 1, config).await;
    broker.append("s", records("old", 3)).await.expect("append");
    assert!(
        broker
            .poll("s", "g", "a", 10, 0)
            .await
            .expect("a")
            .records
            .is_empty(),
        "next: only what comes after the first join"
    );
    let waiting = {
        let broker = broker.clone();
        tokio::spawn(async move { broker.poll("s", "g", "a", 10, 20_000).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    broker.append("s", records("new", 1)).await.expect("append");
    let got = waiting.await.expect("join").expect("poll");
    assert_eq!(got.records[0].body, Bytes::from_static(b"new0"));
    let live = broker
        .reset_group("s", "g", ReadFrom::First, true)
        .await
        .expect_err("a live member");
    assert!(matches!(live, BrokerError::PreconditionFailed { .. }));
    broker.leave("s", "g", "a").expect("leave");
    let dry = broker
        .reset_group("s", "g", ReadFrom::First, true)
        .await
        .expect("dry run");
    assert_eq!(dry, BTreeMap::from([(0, 0)]));
    assert_eq!(
        broker.group("s", "g").await.expect("info").partitions[0].committed,
        None
    );
    broker
        .reset_group("s", "g", ReadFrom::Offset(2), false)
        .await
        .expect("reset");
    let b = broker.poll("s", "g", "b", 10, 0).await.expect("b");
    let bodies: Vec<&[u8]> = b.records.iter().map(|r| &r.body[..]).collect();
    assert_eq!(bodies, [&b"old2"[..], &b"new0"[..]]);
    broker.delete_group("s", "g").await.expect("delete");
    assert!(matches!(
        broker.group("s", "g").await,
        Err(BrokerError::NotFound { .. })
    ));
}

#[tokio::test]
async fn a_stored_poll_answers_whole_batches_and_moves_the_position_past_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = open(dir.path()).await;
    stream_with_group(&broker, 1, GroupConfig::default()).await;
    for i in 0..3 {
        broker
            .append("s", records(&format!("{i}-"), 4))
            .await
            .expect("append");
    }
    // A max of 5 takes whole batches: the first two (8 records), not the third.
    let stored = |max| PollOptions {
        max,
        min: 1,
        wait_ms: 0,
        stored: true,
    };
    let polled = broker
        .poll_with("s", "g", "m", stored(5))
        .await
        .expect("poll");
    assert!(polled.records.is_empty(), "stored polls fill `stored` only");
    assert_eq!(polled.stored.len(), 1);
    let first = &polled.stored[0].batches;
    assert_eq!((first.from.0, first.records, first.next.0), (0, 8, 8));
    assert_eq!(first.batches.len(), 2);
    let bodies: Vec<Bytes> = first
        .to_records()
        .expect("decode")
        .into_iter()
        .map(|r| r.body)
        .collect();
    assert_eq!(bodies[4], "1-0");
    assert_eq!(bodies.len(), 8);
    // The next poll goes on from there; a plain poll sees the same position.
    let rest = broker
        .poll_with("s", "g", "m", stored(100))
        .await
        .expect("rest");
    let got: usize = rest.stored.iter().map(|s| s.batches.records).sum();
    assert_eq!(got + first.records, 12, "every record once");
    assert!(
        broker
            .poll("s", "g", "m", 100, 0)
            .await
            .expect("plain")
            .is_empty()
    );
    // What a stored poll got can be committed like any poll's.
    let offsets: BTreeMap<u32, u64> = polled
        .stored
        .iter()
        .chain(&rest.stored)
        .map(|s| (s.partition, s.batches.next.0))
        .collect();
    broker.commit("s", "g", "m", offsets).await.expect("commit");
    let info = broker.group("s", "g").await.expect("describe");
    let lag: u64 = info.partitions.iter().map(|p| p.lag).sum();
    assert_eq!(lag, 0, "{info:?}");
}

#[tokio::test]
async fn a_stored_read_starts_inside_a_batch_and_says_where() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = open(dir.path()).await;
    broker
        .declare_stream("r", StreamOptions::default())
        .await
        .expect("stream");
    broker.append("r", records("x", 6)).await.expect("append");
    let read = broker
        .read_stream_stored("r", 0, ReadFrom::Offset(2), 100, 0)
        .await
        .expect("read");
    assert_eq!((read.batches.from.0, read.batches.next.0), (2, 6));
    assert_eq!(read.batches.records, 4);
    let records = read.batches.to_records().expect("decode");
    let bodies: Vec<&[u8]> = records.iter().map(|r| &r.body[..]).collect();
    assert_eq!(bodies, [&b"x2"[..], b"x3", b"x4", b"x5"]);
    assert!(
        broker
            .read_stream_stored("r", 1, ReadFrom::First, 1, 0)
            .await
            .is_err(),
        "no partition 1"
    );
}

#[tokio::test]
async fn a_poll_with_a_min_waits_for_that_many_unread_records() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = open(dir.path()).await;
    let config = GroupConfig {
        start: "next".into(),
        ..GroupConfig::default()
    };
    stream_with_group(&broker, 1, config).await;
    let options = |min, wait_ms| PollOptions {
        max: 100,
        min,
        wait_ms,
        stored: false,
    };
    // Joined at the end (`next`): the position is pinned there while it waits.
    let polled = broker
        .poll_with("s", "g", "m", options(10, 0))
        .await
        .expect("join");
    assert!(polled.is_empty());
    broker.append("s", records("a", 4)).await.expect("append");
    // 4 of 10: the poll waits; 6 more arrive and it answers all 10.
    let waiting = {
        let broker = broker.clone();
        tokio::spawn(async move { broker.poll_with("s", "g", "m", options(10, 20_000)).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!waiting.is_finished(), "4 records are fewer than the min");
    broker.append("s", records("b", 6)).await.expect("append");
    let polled = waiting.await.expect("task").expect("poll");
    assert_eq!(polled.records.len(), 10);
    assert_eq!(polled.records[0].body, "a0");
    // At the deadline a poll answers what there is, fewer than the min.
    broker.append("s", records("c", 2)).await.expect("append");
    let polled = broker
        .poll_with("s", "g", "m", options(10, 50))
        .await
        .expect("deadline");
    assert_eq!(polled.records.len(), 2);
    assert!(matches!(
        broker.poll_with("s", "g", "m", options(101, 0)).await,
        Err(BrokerError::InvalidArgument { .. })
    ));
    assert!(matches!(
        broker.poll_with("s", "g", "m", options(0, 0)).await,
        Err(BrokerError::InvalidArgument { .. })
    ));
}

/// A coordinated commit's metadata strings are kept per partition until that
/// partition's next commit, across a snapshot and a restart.
#[tokio::test]
async fn coordinated_commit_metadata_lasts_until_the_next_commit_and_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let kept = BTreeMap::from([(0, "m0".to_owned())]);
    {
        let broker = open(dir.path()).await;
        let options = StreamOptions {
            partitions: 2,
            ..StreamOptions::default()
        };
        broker.declare_stream("s", options).await.expect("stream");
        broker.append("s", records("r", 10)).await.expect("append");
        let metadata = BTreeMap::from([(0, "m0".to_owned()), (1, "m1".to_owned())]);
        let offsets = BTreeMap::from([(0, 1), (1, 1)]);
        broker
            .commit_coordinated("s", "k", offsets, metadata)
            .await
            .expect("commit");
        // Partition 1 again, without metadata: its string goes, partition 0's stays.
        broker
            .commit_coordinated("s", "k", BTreeMap::from([(1, 2)]), BTreeMap::new())
            .await
            .expect("commit");
        assert_eq!(broker.commit_metadata("s", "k").unwrap(), kept);
        let snapshot = broker.stream("s").unwrap().groups.with(|g| g.snapshot());
        let mut replayed = super::groups::Groups::default();
        replayed.apply(serde_json::from_slice(&serde_json::to_vec(&snapshot).unwrap()).unwrap());
        assert_eq!(replayed.commit_metadata("k"), kept, "through a snapshot");
        broker.shutdown().await;
    }
    let broker = open(dir.path()).await;
    assert_eq!(
        broker.commit_metadata("s", "k").unwrap(),
        kept,
        "after a restart"
    );
    assert_eq!(
        broker.committed_offsets("s", "k").unwrap(),
        Some(BTreeMap::from([(0, 1), (1, 2)]))
    );
    broker.shutdown().await;
}
