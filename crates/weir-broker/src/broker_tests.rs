//! Tests of the whole broker (actors, real logs) on a file system whose syncs a test
//! can hold and then let succeed or fail: the windows of decision 0005 (taken in
//! once written, answered once synced) become deterministic.

use std::io;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use weir_log::io::{DirLock, FileIo, Fs, StdFs};

use crate::api::{QueueOptions, ReceiveRequest, SendMessage, SendOutcome};
use crate::broker::{Broker, BrokerConfig};
use crate::error::Result;

/// Whether file syncs go through, wait, or fail.
#[derive(Debug, Default)]
struct GateState {
    /// Syncs wait while this is set.
    held: bool,
    /// Syncs fail (EIO, nothing made durable) while this is set.
    failing: bool,
}

/// The switch shared by a [`GatedFs`] and its files.
#[derive(Debug, Default)]
struct Gate {
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

    /// Waits while held; whether the sync may run.
    fn pass(&self) -> bool {
        let mut state = self.state.lock().expect("gate");
        while state.held {
            state = self.opened.wait(state).expect("gate");
        }
        !state.failing
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
}

impl FileIo for GatedFile {
    fn read_at(&self, pos: u64, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read_at(pos, buf)
    }
    fn write_all_at(&self, pos: u64, bufs: &[&[u8]]) -> io::Result<()> {
        self.inner.write_all_at(pos, bufs)
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
    fn wrap(&self, file: Arc<dyn FileIo>) -> Arc<dyn FileIo> {
        Arc::new(GatedFile {
            inner: file,
            gate: self.gate.clone(),
        })
    }
}

impl Fs for GatedFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.inner.create_dir_all(dir)
    }
    fn open(&self, path: &Path) -> io::Result<Arc<dyn FileIo>> {
        self.inner.open(path).map(|f| self.wrap(f))
    }
    fn create(&self, path: &Path) -> io::Result<Arc<dyn FileIo>> {
        self.inner.create(path).map(|f| self.wrap(f))
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

/// A broker on a temporary directory with gated syncs, and a queue `q` that
/// remembers ids for a minute.
async fn broker_with_gate() -> (tempfile::TempDir, Broker, Arc<Gate>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let gate = Arc::new(Gate::default());
    let fs = Arc::new(GatedFs {
        inner: StdFs::shared(),
        gate: gate.clone(),
    });
    let (broker, _) = Broker::open_with_fs(BrokerConfig::new(dir.path()), fs)
        .await
        .expect("open");
    let options = QueueOptions {
        dedup_window_ms: Some(60_000),
        ..QueueOptions::default()
    };
    broker.declare("q", options).await.expect("declare");
    (dir, broker, gate)
}

fn message(id: &str) -> SendMessage {
    SendMessage {
        id: Some(id.to_owned()),
        body: "body".into(),
        ..SendMessage::default()
    }
}

/// Bounds a wait that must end (a hang fails the test instead of stalling it).
async fn bounded<T>(what: &str, future: impl Future<Output = T>) -> T {
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
