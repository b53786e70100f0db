//! Tests of the whole broker (actors, real logs) on a file system whose syncs a test
//! can hold and then let succeed or fail, and whose writes it can make fail for lack
//! of space: the windows of decision 0005 (taken in once written, answered once
//! synced) become deterministic, and so does a full disk. The gate and the helpers
//! here are shared with `restart_tests` (what a restart brings back), which runs on
//! the same gated file system.

use std::collections::BTreeSet;
use std::io;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use weir_log::io::{DirLock, FileIo, Fs, StdFs};

use crate::api::{QueueOptions, ReceiveRequest, SendMessage, SendOutcome};
use crate::broker::Broker;
use crate::config::BrokerConfig;
use crate::error::Result;

/// Whether file syncs go through, wait, or fail, and whether writes fit.
#[derive(Debug, Default)]
#[allow(
    clippy::struct_excessive_bools,
    reason = "independent switches of a test's file system"
)]
struct GateState {
    /// Syncs wait while this is set.
    held: bool,
    /// Syncs fail (EIO, nothing made durable) while this is set.
    failing: bool,
    /// Every write fails with ENOSPC (after writing half of what it was given).
    disk_full: bool,
    /// Only the header of a new segment (the first write of a roll) fails so.
    no_room_for_segments: bool,
    /// Syncs waiting at the gate now (their writes are done).
    waiting: usize,
}

/// The switch shared by a [`GatedFs`] and its files.
#[derive(Debug, Default)]
pub(crate) struct Gate {
    state: Mutex<GateState>,
    opened: Condvar,
}

impl Gate {
    fn hold(&self) {
        self.state.lock().expect("gate").held = true;
    }

    /// Lets the held syncs (and later ones) go on; `fail`: they fail.
    fn release(&self, fail: bool) {
        let mut state = self.state.lock().expect("gate");
        state.held = false;
        state.failing = fail;
        self.opened.notify_all();
    }

    fn set_disk_full(&self, full: bool) {
        self.state.lock().expect("gate").disk_full = full;
    }

    fn set_no_room_for_segments(&self, no_room: bool) {
        self.state.lock().expect("gate").no_room_for_segments = no_room;
    }

    /// Whether a write at `pos` of a segment (`segment`) or another file fits.
    fn fits(&self, segment: bool, pos: u64) -> bool {
        let state = self.state.lock().expect("gate");
        !(state.disk_full || (segment && pos == 0 && state.no_room_for_segments))
    }

    /// Waits while held; whether the sync may run.
    fn pass(&self) -> bool {
        let mut state = self.state.lock().expect("gate");
        state.waiting += 1;
        while state.held {
            state = self.opened.wait(state).expect("gate");
        }
        state.waiting -= 1;
        !state.failing
    }

    /// Waits until a sync waits at the held gate: the write before it is done.
    async fn until_a_sync_waits(&self) {
        bounded("a held sync", async {
            while self.state.lock().expect("gate").waiting == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
    }
}

/// The real file system, with file syncs behind a [`Gate`].
#[derive(Debug)]
struct GatedFs {
    inner: Arc<dyn Fs>,
    gate: Arc<Gate>,
}

#[derive(Debug)]
struct GatedFile {
    inner: Arc<dyn FileIo>,
    gate: Arc<Gate>,
    /// A log segment (`.log`).
    segment: bool,
}

impl FileIo for GatedFile {
    fn read_at(&self, pos: u64, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read_at(pos, buf)
    }
    fn write_all_at(&self, pos: u64, bufs: &[&[u8]]) -> io::Result<()> {
        if self.gate.fits(self.segment, pos) {
            return self.inner.write_all_at(pos, bufs);
        }
        // What fit before the disk filled up.
        if let Some(first) = bufs.first() {
            self.inner.write_all_at(pos, &[&first[..first.len() / 2]])?;
        }
        Err(io::Error::from_raw_os_error(28))
    }
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.inner.set_len(len)
    }
    fn sync_data(&self) -> io::Result<()> {
        if self.gate.pass() {
            self.inner.sync_data()
        } else {
            Err(io::Error::from_raw_os_error(5))
        }
    }
}

impl GatedFs {
    fn wrap(&self, path: &Path, file: Arc<dyn FileIo>) -> Arc<dyn FileIo> {
        Arc::new(GatedFile {
            inner: file,
            gate: self.gate.clone(),
            segment: path.extension().is_some_and(|e| e == "log"),
        })
    }
}

impl Fs for GatedFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.inner.create_dir_all(dir)
    }
    fn open(&self, path: &Path) -> io::Result<Arc<dyn FileIo>> {
        self.inner.open(path).map(|f| self.wrap(path, f))
    }
    fn create(&self, path: &Path) -> io::Result<Arc<dyn FileIo>> {
        self.inner.create(path).map(|f| self.wrap(path, f))
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.inner.list(dir)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        self.inner.remove(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.inner.rename(from, to)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.inner.sync_dir(dir)
    }
    fn lock_dir(&self, dir: &Path) -> io::Result<DirLock> {
        self.inner.lock_dir(dir)
    }
}

/// A broker on `dir` with gated syncs and writes, and 4 KiB segments (a roll every
/// dozen small messages).
pub(crate) async fn gated_broker(dir: &Path) -> (Broker, Arc<Gate>) {
    let gate = Arc::new(Gate::default());
    let fs = Arc::new(GatedFs {
        inner: StdFs::shared(),
        gate: gate.clone(),
    });
    let mut config = BrokerConfig::new(dir);
    config.log.segment_bytes = 4096;
    // The disk alarm looks at the real disk; these tests fill a make-believe one.
    config.limits.disk_free_min_bytes = 0;
    let (broker, _) = Broker::open_with_fs(config, fs).await.expect("open");
    (broker, gate)
}

/// A broker on a temporary directory with gated syncs, and a queue `q` that
/// remembers ids for a minute.
async fn broker_with_gate() -> (tempfile::TempDir, Broker, Arc<Gate>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (broker, gate) = gated_broker(dir.path()).await;
    let options = QueueOptions {
        dedup_window_ms: Some(60_000),
        ..QueueOptions::default()
    };
    broker.declare("q", options).await.expect("declare");
    (dir, broker, gate)
}

pub(crate) fn message(id: &str) -> SendMessage {
    SendMessage {
        id: Some(id.to_owned()),
        body: "body".into(),
        ..SendMessage::default()
    }
}

/// Bounds a wait that must end (a hang fails the test instead of stalling it).
pub(crate) async fn bounded<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), future)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish"))
}

/// Sends `x`, holds its sync, and waits until the queue has taken it in (a receive
/// gets it: decision 0005 delivers once written). Returns the first send's answer.
async fn send_and_hold(
    broker: &Broker,
    gate: &Gate,
) -> tokio::task::JoinHandle<Result<Vec<SendOutcome>>> {
    gate.hold();
    let first = {
        let broker = broker.clone();
        tokio::spawn(async move { broker.send("q", vec![message("x")]).await })
    };
    let request = ReceiveRequest {
        max: 1,
        wait_ms: 20_000,
        visibility_timeout_ms: None,
    };
    let got = bounded("the receive", broker.receive("q", request))
        .await
        .expect("receive");
    assert_eq!(
        got.len(),
        1,
        "the first send is taken in while its sync waits"
    );
    assert!(!first.is_finished(), "and not answered before its sync");
    first
}

/// A retry of a send whose records are written but not yet synced is not answered
/// "duplicate" until the original is durable: the queue may already deliver the
/// original (decision 0005), but its sync may still fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_is_a_duplicate_only_once_the_original_is_synced() {
    let (_dir, broker, gate) = broker_with_gate().await;
    let first = send_and_hold(&broker, &gate).await;
    let mut retry = broker
        .send_queued("q", vec![message("x")])
        .await
        .expect("queued");
    // A command queued after the retry: once it is answered, the queue has seen
    // the retry, and an answer to it would be here already.
    broker.info("q").await.expect("info");
    assert!(
        retry.try_recv().is_err(),
        "the retry is not answered while the original's sync is held"
    );
    gate.release(false);
    let first = bounded("the first send", first)
        .await
        .expect("task")
        .expect("the first send succeeds");
    assert!(!first[0].duplicate);
    let retry = bounded("the retry", retry)
        .await
        .expect("answered")
        .expect("the retry succeeds");
    assert!(retry[0].duplicate, "once synced, the retry is a duplicate");
    broker.shutdown().await;
}

/// When the original's sync fails, a retry that came in meanwhile is never
/// answered "duplicate" (of a message that may be lost): the id is forgotten and
/// the retry is a new send.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_is_not_a_duplicate_of_a_send_whose_sync_failed() {
    let (_dir, broker, gate) = broker_with_gate().await;
    let first = send_and_hold(&broker, &gate).await;
    let retry = broker
        .send_queued("q", vec![message("x")])
        .await
        .expect("queued");
    broker.info("q").await.expect("info");
    gate.release(true);
    let first = bounded("the first send", first).await.expect("task");
    assert!(first.is_err(), "the first send's sync failed: {first:?}");
    let retry = bounded("the retry", retry).await.expect("answered");
    assert!(
        !retry.as_ref().is_ok_and(|outcomes| outcomes[0].duplicate),
        "the retry is not a duplicate of a send that failed: {retry:?}"
    );
    broker.shutdown().await;
}

// ---------------------------------------------------------------------------
// A full disk (docs/reliability.md, defects A and B)

/// A message with a 300-byte body: a 4 KiB segment holds about a dozen.
fn sized(id: &str) -> SendMessage {
    SendMessage {
        id: Some(id.to_owned()),
        body: vec![b'm'; 300].into(),
        ..SendMessage::default()
    }
}

pub(crate) fn receive_all(max: u32) -> ReceiveRequest {
    ReceiveRequest {
        max,
        wait_ms: 0,
        visibility_timeout_ms: Some(60_000),
    }
}

/// Every message queue `name` holds, received and acked.
pub(crate) async fn drain(broker: &Broker, name: &str) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    loop {
        let got = broker
            .receive(name, receive_all(100))
            .await
            .expect("receive");
        if got.is_empty() {
            return ids;
        }
        for d in &got {
            assert!(ids.insert(d.id.clone()), "{} delivered twice", d.id);
        }
        let receipts = got.iter().filter_map(|d| d.receipt.clone()).collect();
        let report = broker.ack(name, receipts).await.expect("ack");
        assert!(report.failed.is_empty(), "{report:?}");
    }
}

/// Opens the broker on `dir` again once `stopped` (shut down) has let go of it.
pub(crate) async fn reopen(dir: &Path, stopped: Broker) -> Broker {
    drop(stopped);
    bounded("the data directory's release", async {
        loop {
            let gate = Arc::new(Gate::default());
            let fs = Arc::new(GatedFs {
                inner: StdFs::shared(),
                gate,
            });
            let mut config = BrokerConfig::new(dir);
            config.limits.disk_free_min_bytes = 0;
            match Broker::open_with_fs(config, fs).await {
                Ok((broker, _)) => return broker,
                // A task of the old broker may still hold it for a moment.
                Err(e) if e.code() == "unavailable" => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("reopen: {e}"),
            }
        }
    })
    .await
}

/// Waits until `check` holds of queue `name`'s stats.
pub(crate) async fn until_stats(
    broker: &Broker,
    name: &str,
    check: impl Fn(&crate::api::QueueStats) -> bool,
) {
    bounded("the queue's stats", async {
        while !check(&broker.info(name).await.expect("info").stats) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

/// Defect A: a write that ran out of space while an earlier send's sync was still
/// in flight (a queue's log always has one under load) was taken for a failed sync:
/// the log refused every write until the broker restarted. Now the send that did not
/// fit is refused (`storage_full`), the earlier one is confirmed, and once there is
/// room sends are taken again, without a restart. A roll whose new segment finds no
/// room is refused the same way. After a restart every confirmed message is there
/// and no refused one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_sends_and_the_queue_takes_them_again_once_there_is_room() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (broker, gate) = gated_broker(dir.path()).await;
    broker
        .declare("q", QueueOptions::default())
        .await
        .expect("declare");
    let mut confirmed = BTreeSet::new();
    for id in ["a", "b", "c"] {
        broker.send("q", vec![sized(id)]).await.expect("send");
        confirmed.insert(id.to_owned());
    }
    // A send written, its sync held; then one that finds the disk full.
    gate.hold();
    let held = {
        let broker = broker.clone();
        tokio::spawn(async move { broker.send("q", vec![sized("held")]).await })
    };
    // Counted once admitted, written a moment later: the sync waiting at the gate
    // says the write is done.
    until_stats(&broker, "q", |s| s.ready == 4).await;
    gate.until_a_sync_waits().await;
    gate.set_disk_full(true);
    let no_room = {
        let broker = broker.clone();
        tokio::spawn(async move { broker.send("q", vec![sized("no-room")]).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    gate.release(false);
    bounded("the held send", held)
        .await
        .expect("task")
        .expect("the earlier send is confirmed");
    confirmed.insert("held".to_owned());
    let refused = bounded("the send without room", no_room)
        .await
        .expect("task")
        .expect_err("no room for it");
    assert_eq!(refused.code(), "storage_full", "{refused}");
    gate.set_disk_full(false);
    broker
        .send("q", vec![sized("after")])
        .await
        .expect("room again: the queue takes sends without a restart");
    confirmed.insert("after".to_owned());

    // A roll that finds no room for the new segment.
    gate.set_no_room_for_segments(true);
    let mut roll_refused = None;
    for i in 0..100 {
        let id = format!("roll-{i}");
        match broker.send("q", vec![sized(&id)]).await {
            Ok(_) => {
                confirmed.insert(id);
            }
            Err(e) => {
                roll_refused = Some(e);
                break;
            }
        }
    }
    let roll_refused = roll_refused.expect("a roll was needed and found no room");
    assert_eq!(roll_refused.code(), "storage_full", "{roll_refused}");
    gate.set_no_room_for_segments(false);
    for i in 0..30 {
        let id = format!("later-{i}");
        broker
            .send("q", vec![sized(&id)])
            .await
            .expect("the roll happens once there is room");
        confirmed.insert(id);
    }
    broker.shutdown().await;

    let broker = reopen(dir.path(), broker).await;
    assert_eq!(
        drain(&broker, "q").await,
        confirmed,
        "after a restart: every confirmed message, no refused one"
    );
    broker.shutdown().await;
}

/// Defect B: an ack whose record could not be written (a full disk) made the message
/// ready again at once, so its consumer got it again and again (20,763 deliveries of
/// one message in 7 s in the soak), and its delivery count grew. Now the ack is kept:
/// the message is not delivered again, the client is told the ack is not durable
/// (`storage_full`), the broker writes it once there is room, and the same receipt
/// acked again answers once it is durable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ack_that_cannot_be_written_is_kept_and_written_once_there_is_room() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (broker, gate) = gated_broker(dir.path()).await;
    broker
        .declare("q", QueueOptions::default())
        .await
        .expect("declare");
    broker
        .send("q", vec![sized("a"), sized("b"), sized("c")])
        .await
        .expect("send");
    let got = broker.receive("q", receive_all(3)).await.expect("receive");
    assert_eq!(got.len(), 3);
    let receipt = |i: usize| got[i].receipt.clone().expect("receipt");

    gate.set_disk_full(true);
    // An HTTP ack (answered once durable) and an AMQP one (answered once written).
    let report = broker.ack("q", vec![receipt(0)]).await.expect("ack");
    assert_eq!(report.settled, 0, "{report:?}");
    assert_eq!(report.failed[0].1.code(), "storage_full", "{report:?}");
    let report = broker
        .ack_unsynced("q", vec![receipt(1)])
        .await
        .expect("ack");
    assert!(!report.failed.is_empty(), "{report:?}");
    for _ in 0..5 {
        let again = broker
            .receive(
                "q",
                ReceiveRequest {
                    max: 10,
                    wait_ms: 100,
                    visibility_timeout_ms: Some(60_000),
                },
            )
            .await
            .expect("receive");
        assert!(again.is_empty(), "an acked message came back: {again:?}");
    }
    let stats = broker.info("q").await.expect("info").stats;
    assert_eq!((stats.ready, stats.leased), (0, 1), "{stats:?}");

    gate.set_disk_full(false);
    let report = bounded("the ack asked again", broker.ack("q", vec![receipt(0)]))
        .await
        .expect("ack");
    assert_eq!(
        (report.settled, report.failed.len()),
        (1, 0),
        "once there is room the same receipt is acked: {report:?}"
    );
    // The AMQP ack nobody asks about again: the broker writes it by itself.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let report = broker.ack("q", vec![receipt(2)]).await.expect("ack");
    assert!(report.failed.is_empty(), "{report:?}");
    broker.shutdown().await;

    let broker = reopen(dir.path(), broker).await;
    assert!(
        drain(&broker, "q").await.is_empty(),
        "every ack is durable after the restart"
    );
    broker.shutdown().await;
}

/// Declares fanout exchange `fan` bound to `queues`: its messages are stored once,
/// in the shared log.
pub(crate) async fn fan_out_to<S: weir_log::LogStore>(broker: &Broker<S>, queues: &[&str]) {
    use crate::routing::{Binding, DestinationType, ExchangeOptions, ExchangeType};
    broker
        .declare_exchange("fan", ExchangeOptions::of(ExchangeType::Fanout))
        .await
        .expect("exchange");
    for name in queues {
        broker
            .bind(Binding {
                source: "fan".into(),
                destination: (*name).into(),
                destination_type: DestinationType::Queue,
                routing_key: String::new(),
                arguments: std::collections::BTreeMap::new(),
            })
            .await
            .expect("bind");
    }
}
