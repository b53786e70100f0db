//! Opening a log directory and repairing what a crash left.
//!
//! What a crash can leave, given the order in which the writer does things (the
//! numbered cases are explained in `docs/on-disk-format.md`):
//!
//! - sealed segments are whole: each was synced, its index (with an end entry) was
//!   synced, and only then was the next segment created. They are not read at open;
//!   only the last 20 bytes of each index are, to check the segments join up.
//! - the active (last) segment may end in a torn tail: part of a batch, zeros, stale or
//!   flipped bytes after the last sync. Its index may end in torn entries too, but
//!   every entry that passes its CRC points at data that was synced before the entry
//!   was written. So recovery walks back from the last index entry to the first one
//!   whose batch checks out, scans forward from there, and truncates at the first batch
//!   that fails. The scan covers about one index interval plus the unsynced tail: it is
//!   bounded, whatever the size of the log.
//! - a segment whose creation was interrupted (header not yet synced, nothing appended)
//!   is removed.
//! - a pipelined log's roll (see `syncer::Seal`) writes on into the next segment
//!   before the sealed one's tail, its index's end entry and the new headers are
//!   durable, in that order. A crash in between can leave the last sealed segment
//!   short or torn and without an end entry, or the next segment without a valid
//!   header. Nothing in the next segment was acknowledged then (its appends are
//!   answered after the seal), so it is removed and the sealed segment is recovered
//!   as the active one. Only the last sealed segment can be in that state: a log
//!   seals one segment at a time.
//! - temporary files of an interrupted rewrite are removed; segments entirely below
//!   the stored start offset (an interrupted trim) are removed.
//!
//! Everything recovery changes is synced before the log accepts appends, so a second
//! crash right after recovery finds a consistent directory.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::batch::{self, BATCH_HEADER_LEN, Check};
use crate::config::LogConfig;
use crate::error::{Corruption, LogError, Result};
use crate::header::{FILE_HEADER_LEN, FileHeader, FileKind};
use crate::index::{ENTRY_LEN, Index, IndexEntry};
use crate::io::{FileIo, Fs, LOCK_FILE, read_exact_at};
use crate::meta;
use crate::record::Offset;
use crate::segment::{self, Segment, index_file_name, log_file_name, parse_file_name};

/// The largest start offset or segment base a log opens with (2^62). Nothing
/// writes one past it: at a billion appends a second a log takes 146 years to get
/// there (and the broker's record keys use the bit above). So one past it is damage,
/// and refusing it keeps every later offset (the writer's next offset, a batch's
/// end) a long way from overflowing u64.
pub(crate) const MAX_OFFSET: u64 = 1 << 62;

/// What opening a log found and repaired. Logged at `warn` when anything was cut.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segments in the log after recovery.
    pub segments: usize,
    /// Bytes cut from the end of the active segment (a torn or corrupt tail).
    pub truncated_bytes: u64,
    /// Batches, whole or partial, in the cut bytes whose header could still be read.
    /// Garbage that does not look like a batch counts only in `truncated_bytes`.
    pub lost_batches: u64,
    /// Bytes of the active segment that were scanned (the tail scan's bound).
    pub scanned_bytes: u64,
    /// Files removed: temporaries, a half-created segment, orphaned indexes, segments
    /// below the start offset.
    pub removed_files: Vec<String>,
    /// The last segment was removed because the roll that created it was cut short
    /// (a pipelined log writes on into a new segment while the roll is made durable;
    /// nothing in it was acknowledged).
    pub unfinished_roll: bool,
    /// First offset after recovery.
    pub first_offset: Offset,
    /// Next offset to be written after recovery.
    pub next_offset: Offset,
    /// Time spent.
    pub elapsed: Duration,
}

/// The writer's starting point in the active segment.
pub(crate) struct ActiveState {
    pub(crate) segment: Arc<Segment>,
    pub(crate) index_file: Arc<dyn FileIo>,
    pub(crate) index_file_len: u64,
    pub(crate) write_pos: u64,
    pub(crate) next_offset: u64,
    pub(crate) max_timestamp_ms: i64,
    pub(crate) bytes_since_entry: u64,
}

pub(crate) struct Recovered {
    pub(crate) segments: BTreeMap<u64, Arc<Segment>>,
    pub(crate) active: ActiveState,
    pub(crate) start_offset: u64,
    pub(crate) report: RecoveryReport,
}

/// Opens (or creates) the log in `dir`. The caller holds the directory lock.
pub(crate) fn recover(
    fs: &Arc<dyn Fs>,
    dir: &Path,
    config: &LogConfig,
    now_ms: i64,
) -> Result<Recovered> {
    let started = Instant::now();
    let mut report = RecoveryReport::default();
    let mut logs = list_segments(fs, dir, &mut report)?;
    let mut start_offset = meta::read(&**fs, dir)?.unwrap_or(0);
    // Offsets past MAX_OFFSET are damage (nothing writes them), and refusing them
    // here keeps the writer's offset arithmetic from overflowing.
    let overflow = |name: String, offset: u64| {
        LogError::corrupt(
            dir.join(name),
            0,
            Corruption::OffsetOverflow {
                base_offset: offset,
                count: 0,
            },
        )
    };
    if start_offset > MAX_OFFSET {
        return Err(overflow(meta::META_FILE.to_owned(), start_offset));
    }
    if let Some(&last) = logs.last()
        && last > MAX_OFFSET
    {
        return Err(overflow(log_file_name(last), last));
    }

    // The last segment may be a creation cut short: nothing in it can have been
    // acknowledged, because appends start only after its header and the directory
    // are synced. Offsets below its base may have been handed out, so a log that is
    // left with no segment restarts there, never lower.
    let mut floor = 0;
    while let Some(&last) = logs.last() {
        let path = dir.join(log_file_name(last));
        let file = fs.open(&path).map_err(|e| LogError::io("open", &path, e))?;
        let len = file.len().map_err(|e| LogError::io("stat", &path, e))?;
        if len > FILE_HEADER_LEN as u64 || read_header(&*file, &path, last).is_ok() {
            break;
        }
        tracing::warn!(segment = %path.display(), "removing a segment whose creation was interrupted");
        remove(fs, dir, &log_file_name(last), &mut report)?;
        remove_if_exists(fs, dir, &index_file_name(last), &mut report)?;
        logs.pop();
        floor = floor.max(last);
    }

    undo_unfinished_roll(fs, dir, &mut logs, config, &mut report)?;

    let mut segments = BTreeMap::new();
    let active = if let Some((&last, sealed)) = logs.split_last() {
        for (i, &base) in sealed.iter().enumerate() {
            let next_base = logs[i + 1];
            let segment = open_sealed(fs, dir, base, next_base, config)?;
            segments.insert(base, Arc::new(segment));
        }
        recover_active(fs, dir, last, config, &mut report)?
    } else {
        create_active(fs, dir, start_offset.max(floor), now_ms, config)?
    };
    segments.insert(active.segment.base, active.segment.clone());
    let mut active = active;

    // A trim beyond what survived (possible only when acknowledged appends were not
    // yet synced) must not let offsets below the start be handed out again: restart
    // the log at the start offset.
    if start_offset > active.next_offset {
        tracing::warn!(
            start_offset,
            next_offset = active.next_offset,
            "the stored start offset is past the end of the log; starting an empty segment there"
        );
        for base in segments.keys().copied().collect::<Vec<_>>() {
            segments.remove(&base);
            remove(fs, dir, &log_file_name(base), &mut report)?;
            remove_if_exists(fs, dir, &index_file_name(base), &mut report)?;
        }
        active = create_active(fs, dir, start_offset, now_ms, config)?;
        segments.insert(active.segment.base, active.segment.clone());
    }

    remove_segments_below(fs, dir, &mut segments, start_offset, &mut report)?;
    fs.sync_dir(dir).map_err(|e| LogError::io("sync", dir, e))?;

    let first_base = *segments
        .keys()
        .next()
        .expect("invariant: an active segment exists");
    start_offset = start_offset.max(first_base);
    report.segments = segments.len();
    report.first_offset = Offset(start_offset);
    report.next_offset = Offset(active.next_offset);
    report.elapsed = started.elapsed();
    if report.truncated_bytes > 0 || !report.removed_files.is_empty() {
        tracing::warn!(
            dir = %dir.display(),
            truncated_bytes = report.truncated_bytes,
            lost_batches = report.lost_batches,
            removed_files = ?report.removed_files,
            "recovered a log after an unclean stop"
        );
    }
    tracing::info!(
        dir = %dir.display(),
        segments = report.segments,
        first_offset = start_offset,
        next_offset = active.next_offset,
        scanned_bytes = report.scanned_bytes,
        elapsed_ms = report.elapsed.as_millis() as u64,
        "opened log"
    );
    Ok(Recovered {
        segments,
        active,
        start_offset,
        report,
    })
}

/// Base offsets of the segments in `dir`, sorted; removes temporaries and indexes
/// without a segment on the way.
fn list_segments(fs: &Arc<dyn Fs>, dir: &Path, report: &mut RecoveryReport) -> Result<Vec<u64>> {
    let mut logs = Vec::new();
    let mut indexes = Vec::new();
    for name in fs.list(dir).map_err(|e| LogError::io("list", dir, e))? {
        if meta::is_temporary(&name) {
            remove(fs, dir, &name, report)?;
            continue;
        }
        match parse_file_name(&name) {
            Some((base, FileKind::Segment)) => logs.push(base),
            Some((base, FileKind::Index)) => indexes.push(base),
            None if name == meta::META_FILE || name == LOCK_FILE => {}
            None => tracing::debug!(file = %name, "ignoring a file that is not part of the log"),
        }
    }
    logs.sort_unstable();
    for base in indexes {
        if logs.binary_search(&base).is_err() {
            remove(fs, dir, &index_file_name(base), report)?;
        }
    }
    Ok(logs)
}

/// Removes segments wholly below the start offset: left over from an interrupted trim.
fn remove_segments_below(
    fs: &Arc<dyn Fs>,
    dir: &Path,
    segments: &mut BTreeMap<u64, Arc<Segment>>,
    start_offset: u64,
    report: &mut RecoveryReport,
) -> Result<()> {
    let below: Vec<u64> = segments
        .iter()
        .zip(segments.keys().skip(1))
        .filter(|(_, next_base)| **next_base <= start_offset)
        .map(|((base, _), _)| *base)
        .collect();
    for base in below {
        segments.remove(&base);
        remove(fs, dir, &log_file_name(base), report)?;
        remove_if_exists(fs, dir, &index_file_name(base), report)?;
    }
    Ok(())
}

fn remove(fs: &Arc<dyn Fs>, dir: &Path, name: &str, report: &mut RecoveryReport) -> Result<()> {
    let path = dir.join(name);
    fs.remove(&path)
        .map_err(|e| LogError::io("remove", &path, e))?;
    report.removed_files.push(name.to_owned());
    Ok(())
}

fn remove_if_exists(
    fs: &Arc<dyn Fs>,
    dir: &Path,
    name: &str,
    report: &mut RecoveryReport,
) -> Result<()> {
    match fs.remove(&dir.join(name)) {
        Ok(()) => {
            report.removed_files.push(name.to_owned());
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(LogError::io("remove", dir.join(name), e)),
    }
}

fn read_header(file: &dyn FileIo, path: &Path, base: u64) -> Result<FileHeader> {
    let mut bytes = [0u8; FILE_HEADER_LEN];
    read_exact_at(file, 0, &mut bytes).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            LogError::corrupt(path, 0, Corruption::Truncated)
        } else {
            LogError::io("read", path, e)
        }
    })?;
    FileHeader::decode(&bytes, FileKind::Segment, base, path)
}

/// A sealed segment: check its header and, cheaply (the last 20 bytes of its index),
/// that it ends where the next one begins. An index without a valid end entry (lost or
/// damaged) is rebuilt now, with one scan of the segment, and saved.
fn open_sealed(
    fs: &Arc<dyn Fs>,
    dir: &Path,
    base: u64,
    next_base: u64,
    config: &LogConfig,
) -> Result<Segment> {
    let path = dir.join(log_file_name(base));
    let file = fs.open(&path).map_err(|e| LogError::io("open", &path, e))?;
    let header = read_header(&*file, &path, base)?;
    let len = file.len().map_err(|e| LogError::io("stat", &path, e))?;
    let gap = |end_offset: u64| {
        LogError::corrupt(
            &path,
            len,
            Corruption::OffsetGap {
                expected: end_offset,
                found: next_base,
            },
        )
    };
    let index = if let Some(end) = peek_end_entry(&**fs, &dir.join(index_file_name(base)), len) {
        let end_offset = base + u64::from(end.rel_offset);
        if end_offset != next_base {
            return Err(gap(end_offset));
        }
        None
    } else {
        tracing::warn!(segment = %path.display(), "rebuilding the index of a sealed segment");
        let entries =
            segment::rebuild_sealed_entries(&*file, &path, base, len, config.index_interval_bytes)?;
        let end = entries.last().expect("invariant: the end entry");
        let end_offset = base + u64::from(end.rel_offset);
        if end_offset != next_base {
            return Err(gap(end_offset));
        }
        // Saving it is best effort: the in-memory index serves this run, and a full
        // disk must not keep the log from opening.
        if let Err(e) = segment::rewrite_index_file(&**fs, dir, base, header.created_ms, &entries) {
            tracing::warn!(segment = %path.display(), error = %e, "could not save a rebuilt index; it is rebuilt again at the next open");
            let tmp = dir.join(format!("{}.tmp", index_file_name(base)));
            let _ = fs.remove(&tmp);
        }
        Some(Index::from_entries(entries))
    };
    Ok(Segment::new(
        fs.clone(),
        dir,
        header,
        file,
        len,
        index,
        config.index_interval_bytes,
    ))
}

/// Removes the last segment if the roll that made it never became durable: the
/// segment before it has no valid end entry, and either does not end where the last
/// one begins (short or torn) or the last one's header is not valid, and the last
/// one's index holds no entry (a pipelined log writes none for a new segment before
/// its roll is durable). Anything else is damage, and opening reports it.
fn undo_unfinished_roll(
    fs: &Arc<dyn Fs>,
    dir: &Path,
    logs: &mut Vec<u64>,
    config: &LogConfig,
    report: &mut RecoveryReport,
) -> Result<()> {
    let &[.., sealed, last] = logs.as_slice() else {
        return Ok(());
    };
    let last_path = dir.join(log_file_name(last));
    let last_len = fs
        .open(&last_path)
        .and_then(|f| f.len())
        .map_err(|e| LogError::io("stat", &last_path, e))?;
    let indexed =
        segment::read_index_file(&**fs, &dir.join(index_file_name(last)), last, last_len)?
            .is_some_and(|(entries, _)| !entries.is_empty());
    if indexed {
        return Ok(());
    }
    let path = dir.join(log_file_name(sealed));
    let file = fs.open(&path).map_err(|e| LogError::io("open", &path, e))?;
    let len = file.len().map_err(|e| LogError::io("stat", &path, e))?;
    if peek_end_entry(&**fs, &dir.join(index_file_name(sealed)), len).is_some() {
        return Ok(());
    }
    if read_header(&*file, &path, sealed).is_err() {
        // Not a roll cut short: its header was durable before anything was
        // appended to it. Opening it reports the damage.
        return Ok(());
    }
    let (_, end) = segment::scan_entries(
        &*file,
        &path,
        sealed,
        FILE_HEADER_LEN as u64,
        len,
        sealed,
        i64::MIN,
        config.index_interval_bytes,
    )?;
    let joins = end.torn.is_none() && end.next_offset == last;
    if end.next_offset > last {
        // Overlaps the next segment: not something a crash leaves. Opening it
        // reports the gap.
        return Ok(());
    }
    let last_file = fs
        .open(&last_path)
        .map_err(|e| LogError::io("open", &last_path, e))?;
    if joins && read_header(&*last_file, &last_path, last).is_ok() {
        return Ok(());
    }
    tracing::warn!(
        segment = %last_path.display(),
        bytes = last_len,
        sealed_ends_at = end.next_offset,
        "removing a segment whose roll was cut short; nothing in it was acknowledged"
    );
    report.unfinished_roll = true;
    remove(fs, dir, &log_file_name(last), report)?;
    remove_if_exists(fs, dir, &index_file_name(last), report)?;
    logs.pop();
    Ok(())
}

/// The end entry of a sealed segment's index, if the index has a valid one.
fn peek_end_entry(fs: &dyn Fs, path: &Path, segment_len: u64) -> Option<IndexEntry> {
    let file = fs.open(path).ok()?;
    let len = file.len().ok()?;
    if len < (FILE_HEADER_LEN + ENTRY_LEN) as u64
        || !(len - FILE_HEADER_LEN as u64).is_multiple_of(ENTRY_LEN as u64)
    {
        return None;
    }
    let mut bytes = [0u8; ENTRY_LEN];
    read_exact_at(&*file, len - ENTRY_LEN as u64, &mut bytes).ok()?;
    let (entries, _) = crate::index::decode_entries(&bytes, segment_len);
    entries
        .first()
        .copied()
        .filter(|e| u64::from(e.position) == segment_len)
}

fn create_active(
    fs: &Arc<dyn Fs>,
    dir: &Path,
    base: u64,
    now_ms: i64,
    config: &LogConfig,
) -> Result<ActiveState> {
    let (segment, index_file) =
        Segment::create(fs.clone(), dir, base, now_ms, config.index_interval_bytes)?;
    fs.sync_dir(dir).map_err(|e| LogError::io("sync", dir, e))?;
    Ok(ActiveState {
        segment: Arc::new(segment),
        index_file,
        index_file_len: FILE_HEADER_LEN as u64,
        write_pos: FILE_HEADER_LEN as u64,
        next_offset: base,
        max_timestamp_ms: i64::MIN,
        bytes_since_entry: 0,
    })
}

/// Recovers the active segment: bounded tail scan from the last good index entry.
fn recover_active(
    fs: &Arc<dyn Fs>,
    dir: &Path,
    base: u64,
    config: &LogConfig,
    report: &mut RecoveryReport,
) -> Result<ActiveState> {
    let path = dir.join(log_file_name(base));
    let file = fs.open(&path).map_err(|e| LogError::io("open", &path, e))?;
    let header = read_header(&*file, &path, base)?;
    let len = file.len().map_err(|e| LogError::io("stat", &path, e))?;
    let index_path = dir.join(index_file_name(base));
    let mut entries = match segment::read_index_file(&**fs, &index_path, base, len)? {
        Some((entries, _dropped)) => entries,
        None => Vec::new(),
    };

    // Walk back to the newest entry whose batch checks out. An end entry (at the
    // very end of the file: a sealed segment recovered as the active one) has no
    // batch to check, so it goes too and the scan from the entry before it (at
    // most an index interval and a batch back) finds the end again. Trusting it
    // let a damaged one that names more records than the segment holds make the
    // log hand out offsets that were never written (found by fuzzing).
    let mut start = (FILE_HEADER_LEN as u64, base, i64::MIN);
    while let Some(entry) = entries.last().copied() {
        let pos = u64::from(entry.position);
        let offset = base + u64::from(entry.rel_offset);
        if batch_starts_at(&*file, pos, offset, len) {
            start = (pos, offset, entry.max_ts_before);
            break;
        }
        entries.pop();
    }

    let (scanned_entries, end) = segment::scan_entries(
        &*file,
        &path,
        base,
        start.0,
        len,
        start.1,
        start.2,
        config.index_interval_bytes,
    )?;
    report.scanned_bytes += end.pos - start.0;
    if end.pos < len {
        report.truncated_bytes += len - end.pos;
        report.lost_batches += count_batch_headers(&*file, end.pos, len);
        if let Some((pos, reason)) = &end.torn {
            tracing::warn!(segment = %path.display(), position = pos, %reason, "truncating a torn tail");
        }
        file.set_len(end.pos)
            .map_err(|e| LogError::io("truncate", &path, e))?;
    }
    // What is kept must be durable before index entries point at it.
    file.sync_data()
        .map_err(|e| LogError::io("fsync", &path, e))?;
    entries.extend(scanned_entries);
    let index_file = segment::create_index_file(&**fs, dir, base, header.created_ms, &entries)?;
    let index_file_len = (FILE_HEADER_LEN + entries.len() * ENTRY_LEN) as u64;
    let segment = Segment::new(
        fs.clone(),
        dir,
        header,
        file,
        end.pos,
        Some(Index::from_entries(entries)),
        config.index_interval_bytes,
    );
    Ok(ActiveState {
        segment: Arc::new(segment),
        index_file,
        index_file_len,
        write_pos: end.pos,
        next_offset: end.next_offset,
        max_timestamp_ms: end.max_timestamp_ms,
        bytes_since_entry: end.bytes_since_entry,
    })
}

/// Whether a whole, valid batch holding `offset` first starts at `pos`.
fn batch_starts_at(file: &dyn FileIo, pos: u64, offset: u64, len: u64) -> bool {
    let mut header = [0u8; BATCH_HEADER_LEN];
    if pos + BATCH_HEADER_LEN as u64 > len || read_exact_at(file, pos, &mut header).is_err() {
        return false;
    }
    let batch_len = match batch::check(&header) {
        Check::Incomplete { need } => need as u64,
        _ => return false,
    };
    if pos + batch_len > len {
        return false;
    }
    let mut bytes = vec![0u8; batch_len as usize];
    if read_exact_at(file, pos, &mut bytes).is_err() {
        return false;
    }
    matches!(batch::check(&bytes), Check::Complete(h) if h.base_offset == offset)
}

/// Batches in `[pos, len)` whose header is readable and plausible.
fn count_batch_headers(file: &dyn FileIo, mut pos: u64, len: u64) -> u64 {
    let mut count = 0;
    let mut header = [0u8; BATCH_HEADER_LEN];
    while pos + BATCH_HEADER_LEN as u64 <= len && read_exact_at(file, pos, &mut header).is_ok() {
        let Check::Incomplete { need } = batch::check(&header) else {
            break;
        };
        count += 1;
        pos += need as u64;
    }
    count
}
