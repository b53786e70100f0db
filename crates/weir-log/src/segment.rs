//! Segments: the files a log is made of, and reading batches out of them.
//!
//! A log directory holds, per segment, `{base_offset:020}.log` (file header, then
//! batches) and `{base_offset:020}.idx` (file header, then index entries), where
//! `base_offset` is the offset of the segment's first record. Zero-padding makes a
//! lexical sort an offset sort. Only the last segment is appended to (the *active*
//! one); the others are *sealed*: complete, synced, and never written again.
//!
//! [`BatchCursor`] walks the batches of a byte range with large buffered reads. Reads,
//! recovery and index rebuilds all use it, so there is one reader of the batch format.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use bytes::Bytes;

use crate::batch::{self, BATCH_HEADER_LEN, BatchHeader, Check, RECORD_OVERHEAD, Records};
use crate::error::{Corruption, LogError, Result};
use crate::header::{FILE_HEADER_LEN, FileHeader, FileKind};
use crate::index::{self, ENTRY_LEN, Index, IndexEntry};
use crate::io::{FileIo, Fs, read_exact_at};
use crate::record::{ReadLimits, Record};

/// File name of the segment starting at `base`.
pub(crate) fn log_file_name(base: u64) -> String {
    format!("{base:020}.log")
}

/// File name of the index of the segment starting at `base`.
pub(crate) fn index_file_name(base: u64) -> String {
    format!("{base:020}.idx")
}

/// The base offset named by a segment or index file name, and which one it is.
pub(crate) fn parse_file_name(name: &str) -> Option<(u64, FileKind)> {
    let (digits, kind) = if let Some(d) = name.strip_suffix(".log") {
        (d, FileKind::Segment)
    } else {
        (name.strip_suffix(".idx")?, FileKind::Index)
    };
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((digits.parse().ok()?, kind))
}

const MIN_READ_CHUNK: usize = 16 * 1024;
/// Large enough that a sequential read runs at page-cache speed, small enough that a
/// read of a few records does not pull megabytes.
pub(crate) const MAX_READ_CHUNK: usize = 1024 * 1024;

/// What [`BatchCursor::next`] found.
#[derive(Debug)]
pub(crate) enum Step {
    /// A whole, checked batch that continues the offsets.
    Batch {
        pos: u64,
        header: BatchHeader,
        bytes: Bytes,
    },
    /// Reached the end of the range cleanly.
    End,
    /// The bytes at `pos` are not a valid next batch.
    Torn { pos: u64, reason: Corruption },
}

/// Walks the batches in `[pos, end)` of a file, checking each one's checksum and that
/// its base offset continues from the previous batch.
pub(crate) struct BatchCursor<'a> {
    file: &'a dyn FileIo,
    path: &'a Path,
    pos: u64,
    end: u64,
    expected_offset: u64,
    buf: Bytes,
    buf_pos: u64,
    /// Bytes the next read asks for (at least what the next batch needs): it
    /// starts small and doubles up to `max_chunk`, so a read of one batch does not
    /// pull (and zero) a megabyte, and a long scan still reads in large pieces.
    chunk: usize,
    max_chunk: usize,
}

impl<'a> BatchCursor<'a> {
    pub(crate) fn new(
        file: &'a dyn FileIo,
        path: &'a Path,
        pos: u64,
        end: u64,
        expected_offset: u64,
        chunk: usize,
    ) -> Self {
        BatchCursor {
            file,
            path,
            pos,
            end,
            expected_offset,
            buf: Bytes::new(),
            buf_pos: pos,
            chunk: MIN_READ_CHUNK,
            max_chunk: chunk.clamp(MIN_READ_CHUNK, MAX_READ_CHUNK),
        }
    }

    /// Position of the next batch.
    pub(crate) fn pos(&self) -> u64 {
        self.pos
    }

    /// Offset the next batch must start at.
    pub(crate) fn expected_offset(&self) -> u64 {
        self.expected_offset
    }

    /// Makes the buffer hold `[pos, pos + need)`; false if the range ends first.
    fn fill(&mut self, need: usize) -> Result<bool> {
        let need_end = self.pos + need as u64;
        if need_end > self.end {
            return Ok(false);
        }
        let buf_end = self.buf_pos + self.buf.len() as u64;
        if self.pos >= self.buf_pos && need_end <= buf_end {
            return Ok(true);
        }
        let len = (need.max(self.chunk) as u64).min(self.end - self.pos) as usize;
        self.chunk = (self.chunk * 2).min(self.max_chunk);
        let mut data = vec![0u8; len];
        read_exact_at(self.file, self.pos, &mut data).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                LogError::corrupt(self.path, self.pos, Corruption::Truncated)
            } else {
                LogError::io("read", self.path, e)
            }
        })?;
        self.buf = Bytes::from(data);
        self.buf_pos = self.pos;
        Ok(true)
    }

    /// The next batch of data that must be whole (committed or sealed): a torn
    /// batch there is corruption, not a tail to cut. `None` at the end of the range.
    pub(crate) fn next_committed(&mut self) -> Result<Option<(BatchHeader, Bytes)>> {
        match self.next()? {
            Step::End => Ok(None),
            Step::Torn { pos, reason } => Err(LogError::corrupt(self.path, pos, reason)),
            Step::Batch { header, bytes, .. } => Ok(Some((header, bytes))),
        }
    }

    pub(crate) fn next(&mut self) -> Result<Step> {
        if self.pos >= self.end {
            return Ok(Step::End);
        }
        let mut need = batch::BATCH_HEADER_LEN;
        loop {
            if !self.fill(need)? {
                return Ok(Step::Torn {
                    pos: self.pos,
                    reason: Corruption::Truncated,
                });
            }
            let start = (self.pos - self.buf_pos) as usize;
            match batch::check(&self.buf[start..]) {
                Check::Complete(header) => {
                    if header.base_offset != self.expected_offset {
                        return Ok(Step::Torn {
                            pos: self.pos,
                            reason: Corruption::OffsetGap {
                                expected: self.expected_offset,
                                found: header.base_offset,
                            },
                        });
                    }
                    let bytes = self.buf.slice(start..start + header.len as usize);
                    let pos = self.pos;
                    self.pos += u64::from(header.len);
                    self.expected_offset = header.next_offset();
                    return Ok(Step::Batch { pos, header, bytes });
                }
                Check::Incomplete { need: more } => need = more,
                Check::Invalid(reason) => {
                    return Ok(Step::Torn {
                        pos: self.pos,
                        reason,
                    });
                }
            }
        }
    }
}

/// Why [`Segment::read`] stopped.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ReadFlow {
    /// A limit was reached or the end offset was met: the read is done.
    Done,
    /// The segment ran out; the read continues in the next one.
    Exhausted { next_offset: u64 },
}

/// One segment, shared by the writer (which appends to the active one) and readers.
#[derive(Debug)]
pub(crate) struct Segment {
    pub(crate) base: u64,
    /// Wall-clock creation time, for rolling by age.
    pub(crate) created_ms: i64,
    pub(crate) log_path: PathBuf,
    pub(crate) index_path: PathBuf,
    pub(crate) file: Arc<dyn FileIo>,
    /// Bytes readers may read. For the active segment it is the end of the last
    /// committed batch (the writer may be ahead of it); for a sealed one, its length.
    committed_len: AtomicU64,
    /// The in-memory index. `None` until first needed for sealed segments found at
    /// open, so opening a large log reads no index files.
    index: RwLock<Option<Index>>,
    fs: Arc<dyn Fs>,
    index_interval_bytes: u32,
}

impl Segment {
    /// A segment found on disk; `index` is `Some` for the active one.
    pub(crate) fn new(
        fs: Arc<dyn Fs>,
        dir: &Path,
        header: FileHeader,
        file: Arc<dyn FileIo>,
        committed_len: u64,
        index: Option<Index>,
        index_interval_bytes: u32,
    ) -> Self {
        Segment {
            base: header.base_offset,
            created_ms: header.created_ms,
            log_path: dir.join(log_file_name(header.base_offset)),
            index_path: dir.join(index_file_name(header.base_offset)),
            file,
            committed_len: AtomicU64::new(committed_len),
            index: RwLock::new(index),
            fs,
            index_interval_bytes,
        }
    }

    /// Creates the files of a new, empty segment and syncs them. The caller syncs the
    /// directory before anything is appended.
    pub(crate) fn create(
        fs: Arc<dyn Fs>,
        dir: &Path,
        base: u64,
        now_ms: i64,
        index_interval_bytes: u32,
    ) -> Result<(Segment, Arc<dyn FileIo>)> {
        let (segment, index_file) =
            Segment::create_unsynced(fs, dir, base, now_ms, index_interval_bytes)?;
        segment
            .file
            .sync_data()
            .map_err(|e| LogError::io("write header of", &segment.log_path, e))?;
        index_file
            .sync_data()
            .map_err(|e| LogError::io("write", &segment.index_path, e))?;
        Ok((segment, index_file))
    }

    /// Creates a segment's files and writes their headers, without syncing them: the
    /// caller syncs both files (and the directory) before anything in the segment is
    /// acknowledged. A pipelined log's roll does that on its sync thread.
    pub(crate) fn create_unsynced(
        fs: Arc<dyn Fs>,
        dir: &Path,
        base: u64,
        now_ms: i64,
        index_interval_bytes: u32,
    ) -> Result<(Segment, Arc<dyn FileIo>)> {
        let header = FileHeader {
            kind: FileKind::Segment,
            base_offset: base,
            created_ms: now_ms,
        };
        let log_path = dir.join(log_file_name(base));
        let file = fs
            .create(&log_path)
            .map_err(|e| LogError::io("create", &log_path, e))?;
        file.write_all_at(0, &[&header.encode()])
            .map_err(|e| LogError::io("write header of", &log_path, e))?;
        let index_path = dir.join(index_file_name(base));
        let index_file = fs
            .create(&index_path)
            .map_err(|e| LogError::io("create", &index_path, e))?;
        let index_header = FileHeader {
            kind: FileKind::Index,
            ..header
        };
        index_file
            .write_all_at(0, &[&index_header.encode()])
            .map_err(|e| LogError::io("write", &index_path, e))?;
        let segment = Segment::new(
            fs,
            dir,
            header,
            file,
            FILE_HEADER_LEN as u64,
            Some(Index::default()),
            index_interval_bytes,
        );
        Ok((segment, index_file))
    }

    pub(crate) fn committed_len(&self) -> u64 {
        self.committed_len.load(Ordering::Acquire)
    }

    pub(crate) fn set_committed_len(&self, len: u64) {
        self.committed_len.store(len, Ordering::Release);
    }

    /// Runs `f` on the index, loading (or rebuilding) it first if needed.
    /// The index is only ever replaced whole (loaded under the lock, then stored),
    /// so a panic while the lock was held (a load that failed on damaged bytes)
    /// leaves it as it was: a poisoned lock is used as it is rather than failing
    /// every later read of the segment.
    pub(crate) fn with_index<R>(&self, f: impl FnOnce(&Index) -> R) -> Result<R> {
        {
            let guard = self.index.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(index) = guard.as_ref() {
                return Ok(f(index));
            }
        }
        let mut guard = self.index.write().unwrap_or_else(PoisonError::into_inner);
        if guard.is_none() {
            *guard = Some(self.load_sealed_index()?);
        }
        Ok(f(guard.as_ref().expect("invariant: just loaded")))
    }

    /// Adds entries to the in-memory index of the active segment.
    pub(crate) fn extend_index(&self, entries: &[IndexEntry]) {
        let mut guard = self.index.write().unwrap_or_else(PoisonError::into_inner);
        let index = guard.get_or_insert_with(Index::default);
        for entry in entries {
            index.push(*entry);
        }
    }

    /// Newest record timestamp of a sealed segment (from its index's end entry).
    pub(crate) fn sealed_max_timestamp(&self) -> Result<i64> {
        self.with_index(|i| i.last().map_or(i64::MIN, |e| e.max_ts_before))
    }

    /// Loads a sealed segment's index. One with damaged entries is rebuilt by
    /// scanning the segment once, in memory only: this runs on reader threads, which
    /// never write to the log's directory. (A missing index or one without an end
    /// entry is rebuilt and saved at open, where nothing else runs.)
    fn load_sealed_index(&self) -> Result<Index> {
        let len = self.committed_len();
        match read_index_file(&*self.fs, &self.index_path, self.base, len) {
            Ok(Some((entries, false)))
                if entries.last().is_some_and(|e| u64::from(e.position) == len) =>
            {
                return Ok(Index::from_entries(entries));
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(path = %self.index_path.display(), error = %e, "unreadable index");
            }
        }
        tracing::warn!(segment = %self.log_path.display(), "rebuilding the damaged index of a sealed segment in memory");
        Ok(Index::from_entries(rebuild_sealed_entries(
            &*self.file,
            &self.log_path,
            self.base,
            len,
            self.index_interval_bytes,
        )?))
    }

    /// Where a scan for `offset` should start: (position, offset of the batch there).
    fn seek(&self, offset: u64) -> Result<(u64, u64)> {
        let rel = offset.saturating_sub(self.base);
        let entry = self.with_index(|i| i.floor_offset(rel))?;
        Ok(entry.map_or((FILE_HEADER_LEN as u64, self.base), |e| {
            (u64::from(e.position), self.base + u64::from(e.rel_offset))
        }))
    }

    /// A cursor over the committed batches from the one holding `from`, reading
    /// chunks sized for `records_left` records or `bytes_left` bytes.
    pub(crate) fn cursor_from(
        &self,
        from: u64,
        records_left: usize,
        bytes_left: usize,
    ) -> Result<BatchCursor<'_>> {
        let (pos, expected) = self.seek(from)?;
        let chunk = bytes_left
            .min(records_left.saturating_mul(1024))
            .saturating_add(self.index_interval_bytes as usize);
        Ok(BatchCursor::new(
            &*self.file,
            &self.log_path,
            pos,
            self.committed_len(),
            expected,
            chunk,
        ))
    }

    /// Appends to `out` the records from `from` (inclusive) to `end_offset`
    /// (exclusive), within `limits`; `used_bytes` carries the byte count across segments.
    pub(crate) fn read(
        &self,
        from: u64,
        end_offset: u64,
        limits: &ReadLimits,
        out: &mut Vec<Record>,
        used_bytes: &mut usize,
    ) -> Result<ReadFlow> {
        let records_left = limits.max_records.saturating_sub(out.len());
        let bytes_left = limits.max_bytes.saturating_sub(*used_bytes);
        let mut cursor = self.cursor_from(from, records_left, bytes_left)?;
        loop {
            let Some((header, bytes)) = cursor.next_committed()? else {
                return Ok(ReadFlow::Exhausted {
                    next_offset: cursor.expected_offset(),
                });
            };
            if header.next_offset() <= from {
                continue;
            }
            let bytes = batch::record_source(&bytes, &header)
                .map_err(|r| LogError::corrupt(&self.log_path, cursor.pos(), r))?;
            for record in Records::new(&bytes, &header) {
                let record =
                    record.map_err(|r| LogError::corrupt(&self.log_path, cursor.pos(), r))?;
                if record.offset < from {
                    continue;
                }
                if record.offset >= end_offset {
                    return Ok(ReadFlow::Done);
                }
                let len = record.encoded_len();
                if !out.is_empty() && used_bytes.saturating_add(len) > limits.max_bytes {
                    return Ok(ReadFlow::Done);
                }
                out.push(
                    record
                        .to_record(&bytes)
                        .map_err(|r| LogError::corrupt(&self.log_path, cursor.pos(), r))?,
                );
                *used_bytes += len;
                if out.len() >= limits.max_records {
                    return Ok(ReadFlow::Done);
                }
            }
        }
    }

    /// The first offset in `[min_offset, end_offset)` whose record has a timestamp of
    /// at least `timestamp_ms`, if this segment holds one.
    pub(crate) fn find_timestamp(
        &self,
        timestamp_ms: i64,
        min_offset: u64,
        end_offset: u64,
    ) -> Result<Option<u64>> {
        let by_time = self.with_index(|i| i.floor_time(timestamp_ms))?;
        let (time_pos, time_offset) = by_time.map_or((FILE_HEADER_LEN as u64, self.base), |e| {
            (u64::from(e.position), self.base + u64::from(e.rel_offset))
        });
        let (pos, expected) = if time_offset >= min_offset {
            (time_pos, time_offset)
        } else {
            self.seek(min_offset)?
        };
        let mut cursor = BatchCursor::new(
            &*self.file,
            &self.log_path,
            pos,
            self.committed_len(),
            expected,
            MAX_READ_CHUNK,
        );
        loop {
            let Some((header, bytes)) = cursor.next_committed()? else {
                return Ok(None);
            };
            if header.base_offset >= end_offset {
                return Ok(None);
            }
            if header.max_timestamp_ms < timestamp_ms || header.next_offset() <= min_offset {
                continue;
            }
            let bytes = batch::record_bytes(&bytes, &header)
                .map_err(|r| LogError::corrupt(&self.log_path, cursor.pos(), r))?;
            for record in Records::new(&bytes, &header) {
                let record =
                    record.map_err(|r| LogError::corrupt(&self.log_path, cursor.pos(), r))?;
                if record.offset >= end_offset {
                    return Ok(None);
                }
                if record.offset >= min_offset && record.timestamp_ms >= timestamp_ms {
                    return Ok(Some(record.offset));
                }
            }
        }
    }
}

/// The index entries of a whole sealed segment, end entry included, from one scan.
/// A sealed segment was synced whole, so damage is an error, not a tail to cut.
pub(crate) fn rebuild_sealed_entries(
    file: &dyn FileIo,
    path: &Path,
    base: u64,
    len: u64,
    interval: u32,
) -> Result<Vec<IndexEntry>> {
    let (mut entries, end) = scan_entries(
        file,
        path,
        base,
        FILE_HEADER_LEN as u64,
        len,
        base,
        i64::MIN,
        interval,
    )?;
    if let Some((pos, reason)) = end.torn {
        return Err(LogError::corrupt(path, pos, reason));
    }
    entries.push(IndexEntry {
        rel_offset: (end.next_offset - base) as u32,
        position: len as u32,
        max_ts_before: end.max_timestamp_ms,
    });
    Ok(entries)
}

/// Where a scan ended.
#[derive(Debug)]
pub(crate) struct ScanEnd {
    /// Position after the last valid batch.
    pub(crate) pos: u64,
    /// Offset after the last valid batch.
    pub(crate) next_offset: u64,
    /// Largest timestamp seen (or the starting value).
    pub(crate) max_timestamp_ms: i64,
    /// Batch bytes after the last index entry (or the scan start), so a writer that
    /// resumes here keeps the same index spacing.
    pub(crate) bytes_since_entry: u64,
    /// Set if the scan stopped at bytes that are not a valid next batch.
    pub(crate) torn: Option<(u64, Corruption)>,
}

/// Scans `[pos, end)` from a batch boundary holding `expected_offset`, and returns
/// the index entries a writer would have made for it (one per `interval` bytes).
#[allow(clippy::too_many_arguments)]
pub(crate) fn scan_entries(
    file: &dyn FileIo,
    path: &Path,
    segment_base: u64,
    pos: u64,
    end: u64,
    expected_offset: u64,
    max_ts_before: i64,
    interval: u32,
) -> Result<(Vec<IndexEntry>, ScanEnd)> {
    let mut cursor = BatchCursor::new(file, path, pos, end, expected_offset, MAX_READ_CHUNK);
    let mut entries = Vec::new();
    let mut max_ts = max_ts_before;
    let mut since_entry: u64 = 0;
    loop {
        let step = match cursor.next()? {
            // Past what the index's u32 offsets hold: the writer rolls before that,
            // so only damage (under a checksum that holds) gets here.
            Step::Batch { pos, header, .. }
                if header.next_offset() - segment_base > u64::from(u32::MAX) =>
            {
                Step::Torn {
                    pos,
                    reason: Corruption::OffsetOverflow {
                        base_offset: header.base_offset,
                        count: header.count,
                    },
                }
            }
            step => step,
        };
        match step {
            Step::Batch {
                pos: at, header, ..
            } => {
                if since_entry >= u64::from(interval) {
                    entries.push(IndexEntry {
                        rel_offset: (header.base_offset - segment_base) as u32,
                        position: at as u32,
                        max_ts_before: max_ts,
                    });
                    since_entry = 0;
                }
                since_entry += u64::from(header.len);
                max_ts = max_ts.max(header.max_timestamp_ms);
            }
            step @ (Step::End | Step::Torn { .. }) => {
                let torn = match step {
                    Step::Torn { pos, reason } => Some((pos, reason)),
                    _ => None,
                };
                return Ok((
                    entries,
                    ScanEnd {
                        pos: cursor.pos(),
                        next_offset: cursor.expected_offset(),
                        max_timestamp_ms: max_ts,
                        bytes_since_entry: since_entry,
                        torn,
                    },
                ));
            }
        }
    }
}

/// Reads an index file: `Ok(None)` if it is missing or its header is bad (it will be
/// rebuilt), else the valid entries and whether any were dropped.
pub(crate) fn read_index_file(
    fs: &dyn Fs,
    path: &Path,
    base: u64,
    segment_len: u64,
) -> Result<Option<(Vec<IndexEntry>, bool)>> {
    let file = match fs.open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(LogError::io("open", path, e)),
    };
    let len = file.len().map_err(|e| LogError::io("stat", path, e))?;
    if len < FILE_HEADER_LEN as u64 {
        return Ok(None);
    }
    // A segment holds at most one batch per minimal batch size, so its index at
    // most one entry (and the end entry) per that many bytes. Only that much is
    // read: a damaged index that claims terabytes must not take the memory (what
    // is cut off counts as dropped entries).
    let most = FILE_HEADER_LEN as u64
        + (segment_len / (BATCH_HEADER_LEN + RECORD_OVERHEAD) as u64 + 2) * ENTRY_LEN as u64;
    let mut bytes = vec![0u8; len.min(most) as usize];
    read_exact_at(&*file, 0, &mut bytes).map_err(|e| LogError::io("read", path, e))?;
    let header: &[u8; FILE_HEADER_LEN] = bytes[..FILE_HEADER_LEN]
        .try_into()
        .expect("invariant: header-sized slice");
    if FileHeader::decode(header, FileKind::Index, base, path).is_err() {
        return Ok(None);
    }
    let (entries, dropped) = index::decode_entries(&bytes[FILE_HEADER_LEN..], segment_len);
    Ok(Some((entries, dropped || len > most)))
}

/// Creates an index file holding `entries` and syncs it.
pub(crate) fn create_index_file(
    fs: &dyn Fs,
    dir: &Path,
    base: u64,
    created_ms: i64,
    entries: &[IndexEntry],
) -> Result<Arc<dyn FileIo>> {
    let path = dir.join(index_file_name(base));
    let file = fs
        .create(&path)
        .map_err(|e| LogError::io("create", &path, e))?;
    write_index(&*file, &path, base, created_ms, entries)?;
    Ok(file)
}

fn write_index(
    file: &dyn FileIo,
    path: &Path,
    base: u64,
    created_ms: i64,
    entries: &[IndexEntry],
) -> Result<()> {
    let header = FileHeader {
        kind: FileKind::Index,
        base_offset: base,
        created_ms,
    };
    file.write_all_at(0, &[&header.encode(), &encode_entries(entries)])
        .and_then(|()| file.sync_data())
        .map_err(|e| LogError::io("write", path, e))
}

/// Replaces an index file atomically: write `*.tmp`, sync, rename, sync the directory.
pub(crate) fn rewrite_index_file(
    fs: &dyn Fs,
    dir: &Path,
    base: u64,
    created_ms: i64,
    entries: &[IndexEntry],
) -> Result<()> {
    let tmp = dir.join(format!("{}.tmp", index_file_name(base)));
    let file = fs
        .create(&tmp)
        .map_err(|e| LogError::io("create", &tmp, e))?;
    write_index(&*file, &tmp, base, created_ms, entries)?;
    let path = dir.join(index_file_name(base));
    fs.rename(&tmp, &path)
        .map_err(|e| LogError::io("rename", &tmp, e))?;
    fs.sync_dir(dir).map_err(|e| LogError::io("sync", dir, e))
}

pub(crate) fn encode_entries(entries: &[IndexEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.len() * ENTRY_LEN);
    for entry in entries {
        out.extend_from_slice(&entry.encode());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the panic audit: the whole index file was read into memory,
    /// whatever its length (a damaged one could claim terabytes).
    #[test]
    fn an_index_is_read_only_as_far_as_its_segment_allows() {
        let fs = crate::testing::CrashFs::new();
        let dir = Path::new("/log");
        let header = FileHeader {
            kind: FileKind::Index,
            base_offset: 0,
            created_ms: 0,
        };
        let entries: Vec<IndexEntry> = (0..10_000)
            .map(|i| IndexEntry {
                rel_offset: i,
                position: 32 + i,
                max_ts_before: 0,
            })
            .collect();
        let file = fs.create(&dir.join(index_file_name(0))).unwrap();
        file.write_all_at(0, &[&header.encode(), &encode_entries(&entries)])
            .unwrap();
        // A 1,000-byte segment holds at most 20 batches.
        let (read, dropped) = read_index_file(&fs, &dir.join(index_file_name(0)), 0, 1_000)
            .unwrap()
            .unwrap();
        assert!(dropped);
        assert_eq!(read.len(), 1_000 / 50 + 2);
        assert_eq!(read[..], entries[..read.len()]);
    }

    #[test]
    fn file_names_sort_by_offset_and_parse_back() {
        assert_eq!(log_file_name(42), "00000000000000000042.log");
        assert_eq!(index_file_name(u64::MAX), "18446744073709551615.idx");
        assert_eq!(
            parse_file_name("00000000000000000042.log"),
            Some((42, FileKind::Segment))
        );
        assert_eq!(
            parse_file_name("00000000000000000042.idx"),
            Some((42, FileKind::Index))
        );
        assert_eq!(parse_file_name("42.log"), None);
        assert_eq!(parse_file_name("0000000000000000004x.log"), None);
        assert_eq!(parse_file_name("00000000000000000042.idx.tmp"), None);
        assert_eq!(parse_file_name("99999999999999999999.log"), None);
    }
}
