//! The log writer threads: one process-wide pool that runs the writers of every open
//! [`crate::FileLog`].
//!
//! Why: a thread per log (decision 0002) was fine for tens of logs; the broker has one
//! log per queue, and 10,000 queues meant 10,000 writer threads (and as many sync
//! threads, see `syncer`). The pool has a fixed number of threads, sized by the
//! machine (`shared::default_threads`), and each thread multiplexes many logs.
//!
//! How:
//! - A log is assigned to one pool thread when it opens (the thread with the fewest
//!   logs) and stays there for its life, so its requests are handled in the order they
//!   were sent, by one thread at a time, exactly as with a thread of its own.
//! - Each thread has one mailbox for all its logs. It sleeps until a request comes or
//!   the earliest timer deadline among its logs passes, then takes everything queued,
//!   sorts it into each log's queue, runs one group per log that has requests
//!   ([`Writer::handle_group`]: up to `MAX_GROUP_BYTES` of that log's queue, one write
//!   and one sync as before), and then the timers that are due ([`Writer::on_timer`]).
//! - Timers are a `BTreeSet` of (deadline, log): after each step of a log its
//!   deadline is recomputed ([`Writer::next_deadline`]) and its entry moved, so a timer
//!   costs O(log n) however many logs the thread holds.
//! - A log leaves its thread when it closes, or when every handle is dropped (the
//!   handle's last clone sends `Dropped`, after all its requests): the thread then
//!   handles what is still queued, syncs and releases the log as `close` would.
//! - A panic in one log's step is caught: that log's writer is dropped (its directory
//!   lock released, so it can be reopened) and every later request of it is answered
//!   with [`LogError::Failed`]; the thread goes on with its other logs.
//!
//! The cost: logs on one thread wait for each other. A log that syncs on the writer
//! (plain appends under `fsync = always` before any staged append, and every
//! non-pipelined roll) holds the other logs of its thread for that sync, so a slow
//! `fdatasync` of one log delays them. Logs that take staged appends (every broker
//! queue) sync on the sync pool instead, where one pass syncs every log's file once.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::error::{LogError, Result};
use crate::mailbox::{Empty, Receiver, Sender, mailbox};
use crate::shared::{Shared, default_threads};
use crate::writer::{
    MAX_GROUP_BYTES, Request, Writer, refuse_closed, refuse_request, request_bytes,
};

/// Most events a pool thread takes from its mailbox before it runs a round of
/// groups and timers: bounds how long timers wait behind a flood of requests.
const MAX_EVENTS_PER_ROUND: usize = 65_536;

/// When a timer step leaves its deadline in the past (it waits for the sync pool),
/// how long the thread waits before trying again, instead of spinning.
const RETRY_TIMER_AFTER: Duration = Duration::from_millis(1);

/// What a pool thread is told.
enum Event {
    /// A log opened on this thread.
    Open { id: u64, writer: Box<Writer> },
    /// A request of one of its logs.
    Request { id: u64, request: Request },
    /// Every handle of a log was dropped; nothing more will come for it.
    Dropped { id: u64 },
}

/// One pool thread, as the opening side sees it.
struct Slot {
    events: Sender<Event>,
    /// Logs on the thread: opening picks the thread with the fewest.
    logs: Arc<AtomicUsize>,
}

pub(crate) struct WriterPool {
    slots: Vec<Slot>,
}

impl WriterPool {
    /// The process-wide pool, started when the first log opens.
    ///
    /// # Errors
    /// [`LogError::Io`] if its threads could not be started (then, and at every
    /// later open).
    pub(crate) fn global(dir: &Path) -> Result<&'static WriterPool> {
        static POOL: OnceLock<std::result::Result<WriterPool, (std::io::ErrorKind, String)>> =
            OnceLock::new();
        POOL.get_or_init(|| {
            WriterPool::new(default_threads()).map_err(|e| (e.kind(), e.to_string()))
        })
        .as_ref()
        .map_err(|(kind, message)| {
            LogError::io(
                "start the log writer threads for",
                dir,
                std::io::Error::new(*kind, message.clone()),
            )
        })
    }

    fn new(threads: usize) -> std::io::Result<WriterPool> {
        let mut slots = Vec::with_capacity(threads);
        for i in 0..threads {
            let (events, queue) = mailbox::<Event>();
            let logs = Arc::new(AtomicUsize::new(0));
            let load = logs.clone();
            std::thread::Builder::new()
                .name(format!("weir-log-writer-{i}"))
                .spawn(move || PoolThread::new(load).run(&queue))?;
            slots.push(Slot { events, logs });
        }
        Ok(WriterPool { slots })
    }

    /// Hands `writer` to the pool thread with the fewest logs, for the rest of its
    /// life, and returns the handle its requests go through.
    pub(crate) fn register(&self, writer: Writer) -> WriterHandle {
        static NEXT_ID: AtomicU64 = AtomicU64::new(0);
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let (index, slot) = self
            .slots
            .iter()
            .enumerate()
            .min_by_key(|(_, s)| s.logs.load(Ordering::Relaxed))
            .expect("invariant: a pool has at least one thread");
        slot.logs.fetch_add(1, Ordering::Relaxed);
        let events = slot.events.clone();
        // The thread lives as long as the pool holds its sender: this cannot fail.
        let _ = events.send(Event::Open {
            id,
            writer: Box::new(writer),
        });
        WriterHandle {
            inner: Arc::new(HandleInner {
                id,
                thread: index,
                events,
            }),
        }
    }
}

/// A log's way to its writer. Clones share it; when the last clone is dropped the
/// pool thread finishes the log's queued requests, syncs and releases it.
#[derive(Clone, Debug)]
pub(crate) struct WriterHandle {
    inner: Arc<HandleInner>,
}

#[derive(Debug)]
struct HandleInner {
    id: u64,
    /// Which pool thread runs the log (tests use it to put two logs on one thread).
    #[cfg_attr(not(test), allow(dead_code))]
    thread: usize,
    events: Sender<Event>,
}

impl Drop for HandleInner {
    fn drop(&mut self) {
        // Queued after every request of every clone, so the thread handles those first.
        let _ = self.events.send(Event::Dropped { id: self.id });
    }
}

impl WriterHandle {
    /// Queues `request` for the log's writer; gives it back if the pool is gone.
    pub(crate) fn send(&self, request: Request) -> std::result::Result<(), Request> {
        let id = self.inner.id;
        self.inner
            .events
            .send(Event::Request { id, request })
            .map_err(|event| match event {
                Event::Request { request, .. } => request,
                Event::Open { .. } | Event::Dropped { .. } => {
                    unreachable!("invariant: send gives back what it was given")
                }
            })
    }

    /// The pool thread that runs this log.
    #[cfg(test)]
    pub(crate) fn thread(&self) -> usize {
        self.inner.thread
    }
}

/// A log on a pool thread.
struct Log {
    /// `None` once a step of it panicked.
    writer: Option<Box<Writer>>,
    shared: Arc<Shared>,
    /// The answer to every request after a panic.
    panicked: Option<LogError>,
    /// Requests taken from the mailbox, not yet handled.
    queue: VecDeque<Request>,
    /// Whether the log is in the thread's `ready` list.
    ready: bool,
    /// Every handle is gone: once `queue` is empty, shut it down.
    dropped: bool,
    /// Its entry in the thread's `timers`.
    deadline: Option<Instant>,
}

/// The state a pool thread keeps for its logs.
struct PoolThread {
    logs: HashMap<u64, Log>,
    /// Logs with queued requests (or a pending shutdown), in the order they got them.
    ready: VecDeque<u64>,
    /// (deadline, log), earliest first: at most one entry per log.
    timers: BTreeSet<(Instant, u64)>,
    load: Arc<AtomicUsize>,
}

impl PoolThread {
    fn new(load: Arc<AtomicUsize>) -> PoolThread {
        PoolThread {
            logs: HashMap::new(),
            ready: VecDeque::new(),
            timers: BTreeSet::new(),
            load,
        }
    }

    fn run(mut self, events: &Receiver<Event>) {
        loop {
            // With logs ready, take only what is already queued; otherwise sleep until
            // a request comes or the earliest timer is due.
            let first = if self.ready.is_empty() {
                let deadline = self.timers.first().map(|(at, _)| *at);
                match events.recv_until(deadline) {
                    Ok(event) => Some(event),
                    Err(Empty::Timeout) => None,
                    // Only a pool that is itself dropped gets here (never the global
                    // one), after every log's handle was dropped.
                    Err(Empty::Disconnected) => return,
                }
            } else {
                None
            };
            if let Some(event) = first {
                self.take(event);
                for _ in 1..MAX_EVENTS_PER_ROUND {
                    match events.try_recv() {
                        Some(event) => self.take(event),
                        None => break,
                    }
                }
            }
            self.run_groups();
            self.run_timers();
        }
    }

    fn take(&mut self, event: Event) {
        match event {
            Event::Open { id, writer } => {
                let shared = writer.shared().clone();
                self.logs.insert(
                    id,
                    Log {
                        writer: Some(writer),
                        shared,
                        panicked: None,
                        queue: VecDeque::new(),
                        ready: false,
                        dropped: false,
                        deadline: None,
                    },
                );
                self.reschedule(id, None);
            }
            Event::Request { id, request } => {
                let Some(log) = self.logs.get_mut(&id) else {
                    // Closed (or never opened here): as a closed log's mailbox would.
                    refuse_closed(request);
                    return;
                };
                if let Some(error) = &log.panicked {
                    refuse_request(request, error);
                } else {
                    log.queue.push_back(request);
                    self.mark_ready(id);
                }
            }
            Event::Dropped { id } => {
                if let Some(log) = self.logs.get_mut(&id) {
                    log.dropped = true;
                    self.mark_ready(id);
                }
            }
        }
    }

    fn mark_ready(&mut self, id: u64) {
        if let Some(log) = self.logs.get_mut(&id)
            && !log.ready
        {
            log.ready = true;
            self.ready.push_back(id);
        }
    }

    /// One group for each log that has requests; shuts down the logs whose handles
    /// are gone once their requests are handled.
    fn run_groups(&mut self) {
        for _ in 0..self.ready.len() {
            let Some(id) = self.ready.pop_front() else {
                break;
            };
            let Some(log) = self.logs.get_mut(&id) else {
                continue;
            };
            log.ready = false;
            if log.queue.is_empty() {
                if log.dropped {
                    // Every handle was dropped without close(): shut down cleanly anyway.
                    if let Some(Err(e)) = step(log, Writer::shutdown) {
                        tracing::error!(dir = %log.shared.dir.display(), error = %e, "log shutdown failed");
                    }
                    self.remove(id);
                }
                continue;
            }
            let mut group = Vec::new();
            let mut bytes = 0;
            while bytes < MAX_GROUP_BYTES
                && let Some(request) = log.queue.pop_front()
            {
                bytes += request_bytes(&request);
                group.push(request);
            }
            let closed = step(log, |writer| writer.handle_group(group)).unwrap_or(false);
            if closed {
                for later in log.queue.drain(..) {
                    refuse_closed(later);
                }
                let reply = log.writer.as_mut().and_then(|w| w.close_reply.take());
                self.remove(id);
                if let Some((reply, result)) = reply {
                    let _ = reply.send(result);
                }
                continue;
            }
            let again = !log.queue.is_empty() || log.dropped;
            self.reschedule(id, None);
            if again {
                self.mark_ready(id);
            }
        }
    }

    /// Runs each timer that is due, once.
    fn run_timers(&mut self) {
        let now = Instant::now();
        let due: Vec<u64> = self
            .timers
            .iter()
            .take_while(|(at, _)| *at <= now)
            .map(|(_, id)| *id)
            .collect();
        for id in due {
            if let Some(log) = self.logs.get_mut(&id) {
                step(log, Writer::on_timer);
                self.reschedule(id, Some(now + RETRY_TIMER_AFTER));
            }
        }
    }

    /// Moves the log's timer entry to its writer's next deadline (not before
    /// `not_before`, if given).
    fn reschedule(&mut self, id: u64, not_before: Option<Instant>) {
        let Some(log) = self.logs.get_mut(&id) else {
            return;
        };
        let next = log.writer.as_ref().map(|writer| {
            let at = writer.next_deadline();
            not_before.map_or(at, |floor| at.max(floor))
        });
        if next != log.deadline {
            if let Some(old) = log.deadline {
                self.timers.remove(&(old, id));
            }
            if let Some(at) = next {
                self.timers.insert((at, id));
            }
            log.deadline = next;
        }
    }

    fn remove(&mut self, id: u64) {
        if let Some(log) = self.logs.remove(&id) {
            if let Some(at) = log.deadline {
                self.timers.remove(&(at, id));
            }
            self.load.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Runs one step of a log's writer, catching a panic: the log then refuses every
/// request with [`LogError::Failed`], and the thread goes on with its other logs.
fn step<R>(log: &mut Log, f: impl FnOnce(&mut Writer) -> R) -> Option<R> {
    let writer = log.writer.as_mut()?;
    match catch_unwind(AssertUnwindSafe(|| f(writer))) {
        Ok(result) => Some(result),
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".to_string());
            let error = LogError::Failed {
                op: "run the writer of",
                path: log.shared.dir.clone(),
                source: Arc::new(std::io::Error::other(format!(
                    "the log's writer panicked: {message}"
                ))),
            };
            tracing::error!(dir = %log.shared.dir.display(), %message, "a log's writer panicked; the log refuses requests until reopened");
            // Releases the directory lock (so the log can be reopened) and waits for
            // the log's queued syncs. The replies of the panicked step were dropped
            // with it: their callers hear `Closed`.
            let writer = log.writer.take();
            let _ = catch_unwind(AssertUnwindSafe(move || drop(writer)));
            log.shared.watermark.send_modify(|w| w.closed = true);
            for request in log.queue.drain(..) {
                refuse_request(request, &error);
            }
            log.panicked = Some(error);
            None
        }
    }
}
