//! [`MemLog`]: the log in memory, for the broker's tests and anything else that wants
//! the log's behaviour without files. It passes the same conformance suite as
//! [`crate::FileLog`] and refuses the same oversized appends, so code tested against
//! it behaves the same on disk. It keeps everything (no segments, so no retention) and
//! a "reopen" ([`MemLog::reopen`]) sees all of it, as if every append were durable.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::batch::{EncodedBatch, check_limits};
use crate::config::{LogConfig, Retention};
use crate::error::{LogError, Result};
use crate::incoming::IncomingBatch;
use crate::message_log::{LogStats, MessageLog, Watermark, wait_for};
use crate::record::{Appended, NewRecord, Offset, ReadLimits, Record};
use crate::shared::now_ms;
use crate::stored::StoredBatches;

#[derive(Debug)]
struct State {
    start: u64,
    /// Records from `start` on; `records[i]` has offset `start + i`.
    records: VecDeque<Record>,
    /// Encoded size of each record, for read limits (same accounting as the file log).
    sizes: VecDeque<usize>,
    closed: bool,
}

#[derive(Debug)]
struct Inner {
    config: LogConfig,
    state: Mutex<State>,
    watermark: watch::Sender<Watermark>,
    /// Appends since this log (or its reopening) was made.
    appends: AtomicU64,
}

/// An in-memory [`MessageLog`]. Clones share the same records.
#[derive(Clone, Debug)]
pub struct MemLog {
    inner: Arc<Inner>,
}

impl MemLog {
    /// An empty log that enforces `config`'s record and batch limits.
    pub fn new(config: LogConfig) -> Self {
        MemLog::with_state(
            config,
            State {
                start: 0,
                records: VecDeque::new(),
                sizes: VecDeque::new(),
                closed: false,
            },
        )
    }

    /// The same records, open again after a `close` (a simulated restart).
    #[must_use]
    pub fn reopen(&self) -> MemLog {
        let state = {
            let state = self.lock();
            State {
                start: state.start,
                records: state.records.clone(),
                sizes: state.sizes.clone(),
                closed: false,
            }
        };
        MemLog::with_state(self.inner.config.clone(), state)
    }

    fn with_state(config: LogConfig, state: State) -> MemLog {
        let (watermark, _) = watch::channel(Watermark {
            start: state.start,
            next: state.start + state.records.len() as u64,
            closed: state.closed,
        });
        MemLog {
            inner: Arc::new(Inner {
                config,
                state: Mutex::new(state),
                watermark,
                appends: AtomicU64::new(0),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .expect("invariant: MemLog lock never poisoned")
    }

    fn publish(&self, state: &State) {
        let mark = Watermark {
            start: state.start,
            next: state.start + state.records.len() as u64,
            closed: state.closed,
        };
        self.inner.watermark.send_replace(mark);
    }

    fn append_now(&self, records: &[NewRecord]) -> Result<Appended> {
        let config = &self.inner.config;
        check_limits(records, config.max_record_bytes, config.max_batch_bytes)?;
        let now = now_ms();
        let mut state = self.lock();
        if state.closed {
            return Err(LogError::Closed);
        }
        let first = state.start + state.records.len() as u64;
        for (i, new) in records.iter().enumerate() {
            state.sizes.push_back(crate::batch::encoded_record_len(new));
            state.records.push_back(Record {
                offset: Offset(first + i as u64),
                timestamp_ms: new.timestamp_ms.unwrap_or(now),
                key: new.key.clone(),
                headers: new.headers.clone(),
                body: new.body.clone(),
            });
        }
        self.publish(&state);
        self.inner.appends.fetch_add(1, Ordering::Relaxed);
        Ok(Appended {
            first: Offset(first),
            next: Offset(first + records.len() as u64),
        })
    }

    fn read_now(&self, from: Offset, limits: ReadLimits) -> Result<Vec<Record>> {
        let state = self.lock();
        let next = state.start + state.records.len() as u64;
        if from.0 < state.start || from.0 > next {
            return Err(LogError::OffsetOutOfRange {
                requested: from.0,
                first: state.start,
                next,
            });
        }
        let skip = (from.0 - state.start) as usize;
        let mut out = Vec::new();
        let mut used = 0usize;
        for (record, size) in state.records.iter().zip(&state.sizes).skip(skip) {
            if out.len() >= limits.max_records
                || (!out.is_empty() && used.saturating_add(*size) > limits.max_bytes)
            {
                break;
            }
            used += size;
            out.push(record.clone());
        }
        Ok(out)
    }

    fn trim_now(&self, before: Offset) -> Result<()> {
        let mut state = self.lock();
        if state.closed {
            return Err(LogError::Closed);
        }
        let next = state.start + state.records.len() as u64;
        if before.0 > next {
            return Err(LogError::OffsetOutOfRange {
                requested: before.0,
                first: state.start,
                next,
            });
        }
        while state.start < before.0 {
            state.records.pop_front();
            state.sizes.pop_front();
            state.start += 1;
        }
        self.publish(&state);
        Ok(())
    }
}

impl MessageLog for MemLog {
    // Like the file log, nothing happens until a future is polled: a dropped append
    // appends nothing, and concurrent appends are ordered by when they run.
    async fn append_batch(&self, records: &[NewRecord]) -> Result<Appended> {
        self.append_now(records)
    }

    async fn read_from(&self, from: Offset, limits: ReadLimits) -> Result<Vec<Record>> {
        self.read_now(from, limits)
    }

    async fn read_stored(&self, from: Offset, limits: ReadLimits) -> Result<StoredBatches> {
        let records = self.read_now(from, limits)?;
        let (Some(first), Some(last)) = (records.first(), records.last()) else {
            return Ok(StoredBatches::empty(from));
        };
        let (base, next) = (first.offset, last.offset.next());
        let new: Vec<NewRecord> = records
            .into_iter()
            .map(|r| NewRecord {
                timestamp_ms: Some(r.timestamp_ms),
                key: r.key,
                headers: r.headers,
                body: r.body,
            })
            .collect();
        // The records were taken under the configured limits; one batch of them is
        // bounded only by the format.
        let mut batch =
            EncodedBatch::encode(&new, now_ms(), self.inner.config.max_record_bytes, u32::MAX)?;
        batch.set_base_offset(base.0);
        let bytes = bytes::Bytes::from(batch.contiguous().into_owned());
        Ok(StoredBatches {
            from,
            next,
            records: new.len(),
            bytes: bytes.len(),
            batches: vec![bytes],
        })
    }

    fn first_offset(&self) -> Offset {
        Offset(self.inner.watermark.borrow().start)
    }

    fn next_offset(&self) -> Offset {
        Offset(self.inner.watermark.borrow().next)
    }

    async fn offset_for_timestamp(&self, timestamp_ms: i64) -> Result<Option<Offset>> {
        let state = self.lock();
        Ok(state
            .records
            .iter()
            .find(|r| r.timestamp_ms >= timestamp_ms)
            .map(|r| r.offset))
    }

    async fn trim_before(&self, offset: Offset) -> Result<()> {
        self.trim_now(offset)
    }

    fn wait_for(&self, offset: Offset) -> impl Future<Output = Result<Offset>> + Send {
        wait_for(self.inner.watermark.subscribe(), offset)
    }

    // No segments, so no retention (module doc): the settings are checked as the
    // file log checks them, and there is nothing to apply.
    async fn reconfigure(&self, retention: Retention) -> Result<()> {
        self.inner.config.with_retention(retention).validate()
    }

    // Submitted appends happen at the call, so their order is the call order; an
    // append in memory is as durable as it gets at once, so the staged pair
    // resolves together and "unsynced" is a plain append.
    fn submit_batch(
        &self,
        records: &[NewRecord],
    ) -> impl Future<Output = Result<Appended>> + Send + use<> {
        std::future::ready(self.append_now(records))
    }

    fn submit_batch_staged(
        &self,
        records: &[NewRecord],
    ) -> (
        impl Future<Output = Result<Appended>> + Send + use<>,
        impl Future<Output = Result<Appended>> + Send + use<>,
    ) {
        let result = self.append_now(records);
        (
            std::future::ready(result.clone()),
            std::future::ready(result),
        )
    }

    fn append_batch_unsynced(
        &self,
        records: &[NewRecord],
    ) -> impl Future<Output = Result<Appended>> + Send + use<> {
        std::future::ready(self.append_now(records))
    }

    fn append_incoming(
        &self,
        batch: IncomingBatch,
        _sync: bool,
    ) -> impl Future<Output = Result<Appended>> + Send + use<> {
        let config = &self.inner.config;
        let records = batch.into_records(now_ms(), config.max_record_bytes, config.max_batch_bytes);
        std::future::ready(records.and_then(|records| self.append_now(&records)))
    }

    fn stats(&self) -> LogStats {
        let state = self.lock();
        let appends = self.inner.appends.load(Ordering::Relaxed);
        LogStats {
            first_offset: Offset(state.start),
            next_offset: Offset(state.start + state.records.len() as u64),
            segments: 1,
            size_bytes: state.sizes.iter().map(|s| *s as u64).sum(),
            appends,
            commit_groups: appends,
            data_syncs: 0,
        }
    }

    async fn close(&self) -> Result<()> {
        let mut state = self.lock();
        state.closed = true;
        self.publish(&state);
        Ok(())
    }
}
