//! The real files of [`crate::io::StdFs`], held open only while they are used.
//!
//! Why: a log keeps its active segment and index and every sealed segment it may read,
//! so ten thousand queues would hold twenty thousand descriptors, nearly all of them
//! idle, and a broker would run out of descriptors long before it runs out of anything
//! else. A [`CachedFile`] remembers its path and opens the file when it is used. When
//! the process holds its limit of open files ([`FileCache::set_limit`]), files not used
//! lately are closed and opened again on their next use, as RabbitMQ's file handle
//! cache does. The choice is a clock: each use sets a bit, the sweep clears it and
//! closes a file whose bit it finds clear. Sweeps run only when a file is about to be
//! opened at the limit, so a broker under its limit pays one relaxed store per use.
//!
//! Three rules keep the cache invisible to the log above it:
//! - **A file with writes not yet synced is never closed idle.** Linux reports a failed
//!   write-back to the descriptors that were open when it failed; an `fdatasync` on a
//!   descriptor opened afterwards can return success for lost bytes. When a sweep at
//!   the limit finds only such files, it syncs them first (outside its lock) and closes
//!   them once they are clean. A file being written is never closed either.
//! - **A file about to be removed, renamed or renamed over is pinned open** for as long as
//!   someone holds it, so a reader holding a removed segment still reads the bytes it
//!   had, exactly as with a descriptor ([`FileCache::pin_path`]).
//! - **The limit is soft.** When nothing can be closed (every open file is pinned,
//!   being written or unsynced and failing to sync), a file opens anyway; the
//!   operating system's limit is the hard one.
//!
//! What a sync covers: the writes made through the file, and, for a file opened on an
//! existing one, whatever it held when opened (an earlier process may have left it
//! unsynced, and recovery syncs it before trusting it). A closed file is clean in
//! both senses, or `sync_data` opens it again. Writes made through *another*
//! [`CachedFile`] of the same path are not covered: sync through the file you wrote.
//!
//! Lock order: the cache's lock, then a file's. A file's lock is held only to read or
//! change its slot, never across a system call; evicted files close after both locks.
//! Dropping the last [`CachedFile`] takes the cache's lock, so a file upgraded from a
//! `Weak` under a lock is dropped only after it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, PoisonError, Weak};

/// The files of one process (or of one test), their limit and their clock.
#[derive(Debug)]
pub(crate) struct FileCache {
    /// Most files open at once before idle ones are closed; `u64::MAX`: no limit.
    limit: AtomicU64,
    /// Files open now (each [`OpenFile`] alive).
    open: AtomicU64,
    inner: Mutex<Inner>,
    /// `fdatasync` calls made, and how many of the next ones fail (fault injection).
    #[cfg(test)]
    syncs: AtomicU64,
    #[cfg(test)]
    fail_syncs: AtomicU64,
}

#[derive(Debug, Default)]
struct Inner {
    /// Every live [`CachedFile`] by path, for pinning before a remove or rename.
    by_path: HashMap<PathBuf, Vec<Weak<CachedFile>>>,
    /// Files that were open and closable when listed, in clock order, each at most
    /// once ([`Slot::listed`]). Entries for files dropped, closed or pinned since are
    /// skipped and dropped by the sweep.
    ring: VecDeque<Weak<CachedFile>>,
}

/// One open descriptor, counted in its cache for as long as it lives (an in-flight
/// read may keep an evicted one alive for a moment).
pub(crate) struct OpenFile {
    pub(crate) file: File,
    cache: Arc<FileCache>,
}

impl fmt::Debug for OpenFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.file.fmt(f)
    }
}

impl OpenFile {
    fn sync_data(&self) -> io::Result<()> {
        #[cfg(test)]
        {
            self.cache.syncs.fetch_add(1, Ordering::Relaxed);
            let fail =
                self.cache
                    .fail_syncs
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
            if fail.is_ok() {
                return Err(io::Error::other("injected fdatasync failure"));
            }
        }
        self.file.sync_data()
    }
}

impl Drop for OpenFile {
    fn drop(&mut self) {
        self.cache.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A file of the cache: its path, and its descriptor while it is open.
#[derive(Debug)]
pub(crate) struct CachedFile {
    path: PathBuf,
    cache: Arc<FileCache>,
    me: Weak<CachedFile>,
    /// Set by every use, cleared by the sweep (the clock's second chance).
    used: AtomicBool,
    slot: Mutex<Slot>,
}

#[derive(Debug, Default)]
struct Slot {
    file: Option<Arc<OpenFile>>,
    /// Writes (and length changes) finished through this file.
    written: u64,
    /// `written` as it stood when the last successful sync began.
    synced: u64,
    /// Writes under way: the file stays open until they finish.
    writing: u32,
    /// Never closed again (removed or renamed over while held).
    pinned: bool,
    /// Has an entry in the clock ring. Without it a file closed by the sweep's sync
    /// path and reopened before the sweep came round again got a second entry, and
    /// the ring grew with every such turn.
    listed: bool,
    /// Opened on an existing file and not synced since: it may hold writes nobody
    /// synced (an earlier process's), so a sync of it closed must open it again.
    inherited: bool,
    /// A failure the sweep's own sync met: the next `sync_data` reports it. Linux
    /// reports a failed write-back once per descriptor, so a later sync would
    /// succeed for the lost bytes.
    sync_error: Option<io::Error>,
}

impl Slot {
    fn closable(&self) -> bool {
        self.file.is_some() && !self.pinned && self.writing == 0 && self.written == self.synced
    }

    /// Takes the descriptor of a closable file, for the caller to drop after its
    /// locks (the only way a cached file closes before it is dropped).
    fn close(&mut self) -> Option<Arc<OpenFile>> {
        debug_assert!(self.closable(), "invariant: only clean idle files close");
        self.file.take()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves its data consistent before anything can panic.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// How a file is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Open {
    /// An existing file, for reading and writing.
    Existing,
    /// A new file, or an existing one truncated to empty.
    Create,
}

impl FileCache {
    /// A cache with no limit.
    pub(crate) fn new() -> Arc<FileCache> {
        Arc::new(FileCache {
            limit: AtomicU64::new(u64::MAX),
            open: AtomicU64::new(0),
            inner: Mutex::new(Inner::default()),
            #[cfg(test)]
            syncs: AtomicU64::new(0),
            #[cfg(test)]
            fail_syncs: AtomicU64::new(0),
        })
    }

    /// The process's cache, which [`crate::io::StdFs`] uses.
    pub(crate) fn global() -> &'static Arc<FileCache> {
        static GLOBAL: LazyLock<Arc<FileCache>> = LazyLock::new(FileCache::new);
        &GLOBAL
    }

    /// Sets the most files kept open at once (`None`: no limit). Takes effect at the
    /// next open; open files over a lowered limit are closed as others open.
    pub(crate) fn set_limit(&self, limit: Option<u64>) {
        self.limit
            .store(limit.unwrap_or(u64::MAX).max(1), Ordering::Relaxed);
    }

    /// The limit (`None`: none).
    pub(crate) fn limit(&self) -> Option<u64> {
        Some(self.limit.load(Ordering::Relaxed)).filter(|&l| l != u64::MAX)
    }

    /// Files open now.
    pub(crate) fn open_count(&self) -> u64 {
        self.open.load(Ordering::Relaxed)
    }

    /// Opens (or creates) `path` now, so a missing file is reported here, and keeps
    /// it in the cache from then on.
    pub(crate) fn open(self: &Arc<Self>, path: &Path, how: Open) -> io::Result<Arc<CachedFile>> {
        self.make_room();
        let file = self.open_file(path, how)?;
        let created = how == Open::Create;
        let cached = Arc::new_cyclic(|me| CachedFile {
            path: path.to_path_buf(),
            cache: self.clone(),
            me: me.clone(),
            used: AtomicBool::new(true),
            slot: Mutex::new(Slot {
                file: Some(file),
                // A created file (its truncation) is unsynced until its first sync.
                written: u64::from(created),
                listed: true,
                inherited: !created,
                ..Slot::default()
            }),
        });
        let mut inner = lock(&self.inner);
        inner
            .by_path
            .entry(cached.path.clone())
            .or_default()
            .push(cached.me.clone());
        let held = inner.list(&cached.me, self.open_count());

        drop(inner);
        drop(held);
        Ok(cached)
    }

    fn open_file(self: &Arc<Self>, path: &Path, how: Open) -> io::Result<Arc<OpenFile>> {
        let mut options = OpenOptions::new();
        options.read(true).write(true);
        if how == Open::Create {
            options.create(true).truncate(true);
        }
        let file = options.open(path)?;
        self.open.fetch_add(1, Ordering::Relaxed);
        Ok(Arc::new(OpenFile {
            file,
            cache: self.clone(),
        }))
    }

    /// Keeps every held file of `path` open from now on: it is about to be removed
    /// or replaced, and whoever holds it must keep reading what it had.
    pub(crate) fn pin_path(&self, path: &Path) -> io::Result<()> {
        let held: Vec<Arc<CachedFile>> = {
            let inner = lock(&self.inner);
            inner
                .by_path
                .get(path)
                .map(|files| files.iter().filter_map(Weak::upgrade).collect())
                .unwrap_or_default()
        };
        for file in held {
            file.pin()?;
        }
        Ok(())
    }

    /// Closes idle files until one more may open under the limit.
    fn make_room(&self) {
        let limit = self.limit.load(Ordering::Relaxed);
        if self.open_count() < limit {
            return;
        }
        let mut unsynced = Vec::new();
        let mut seen_unsynced = HashSet::new();
        // Files upgraded under the lock are dropped after it (dropping the last
        // handle of one takes the lock), and so are the descriptors closed.
        let mut held = Vec::new();
        let mut closed = Vec::new();
        {
            let mut inner = lock(&self.inner);
            // Two turns of the clock at most: the first may only clear use bits.
            let mut steps = inner.ring.len() * 2;
            // Descriptors taken here and closing when `closed` drops (none that an
            // in-flight read still holds).
            let mut freed = 0;
            while self.open_count().saturating_sub(freed) >= limit && steps > 0 {
                steps -= 1;
                let Some(entry) = inner.ring.pop_front() else {
                    break;
                };
                let Some(file) = entry.upgrade() else {
                    continue;
                };
                {
                    let mut slot = lock(&file.slot);
                    if slot.file.is_none() || slot.pinned {
                        // Listed again when it next opens; never again once pinned.
                        slot.listed = false;
                    } else if file.used.swap(false, Ordering::Relaxed) || slot.writing > 0 {
                        inner.ring.push_back(entry);
                    } else if slot.written != slot.synced {
                        inner.ring.push_back(entry);
                        if seen_unsynced.insert(Arc::as_ptr(&file).addr()) {
                            unsynced.push(file.clone());
                        }
                    } else {
                        slot.listed = false;
                        if let Some(open) = slot.close() {
                            // Only clones of the slot's are handed out, and no more
                            // can be taken now.
                            freed += u64::from(Arc::strong_count(&open) == 1);
                            closed.push(open);
                        }
                    }
                }
                held.push(file);
            }
        }
        drop(held);
        drop(closed);
        // Still at the limit with only unsynced files idle: sync them, then close
        // those still clean and idle. Only as many as are needed.
        for file in unsynced {
            if self.open_count() < limit {
                break;
            }
            match file.sync() {
                Ok(()) => {
                    let mut slot = lock(&file.slot);
                    if slot.closable() && !file.used.load(Ordering::Relaxed) {
                        // Stays listed: the sweep drops its entry, or it reopens.
                        let closed = slot.close();
                        drop(slot);
                        drop(closed);
                    }
                }
                Err(e) => {
                    let mut slot = lock(&file.slot);
                    slot.sync_error.get_or_insert(e);
                }
            }
        }
    }
}

impl Inner {
    /// Puts an open file on the clock (the caller has set its [`Slot::listed`]),
    /// dropping stale entries when they outnumber the open files (so the ring stays
    /// proportional to them). Returns the files it upgraded, for the caller to drop
    /// after the lock.
    #[must_use]
    fn list(&mut self, file: &Weak<CachedFile>, open: u64) -> Vec<Arc<CachedFile>> {
        self.ring.push_back(file.clone());
        let bound = usize::try_from(open).unwrap_or(usize::MAX);
        let mut held = Vec::new();
        if self.ring.len() > 64 + 2 * bound {
            self.ring.retain(|entry| {
                let Some(f) = entry.upgrade() else {
                    return false;
                };
                let mut slot = lock(&f.slot);
                let keep = slot.file.is_some() && !slot.pinned;
                slot.listed = keep;
                drop(slot);
                held.push(f);
                keep
            });
        }
        held
    }
}

impl CachedFile {
    /// The descriptor, opened again if it was closed; `write` counts a write under
    /// way, which [`CachedFile::wrote`] ends.
    fn descriptor(&self, write: bool) -> io::Result<Arc<OpenFile>> {
        self.used.store(true, Ordering::Relaxed);
        {
            let mut slot = lock(&self.slot);
            if let Some(file) = slot.file.clone() {
                slot.writing += u32::from(write);
                return Ok(file);
            }
        }
        self.cache.make_room();
        let fresh = self.cache.open_file(&self.path, Open::Existing)?;
        let mut slot = lock(&self.slot);
        slot.writing += u32::from(write);
        if let Some(file) = slot.file.clone() {
            // Opened meanwhile by another user: `fresh` closes.
            return Ok(file);
        }
        slot.file = Some(fresh.clone());
        // Still listed if the sweep has not come round since it closed it.
        let list = !slot.pinned && !slot.listed;
        slot.listed |= list;
        drop(slot);
        if list {
            let open = self.cache.open_count();
            let held = lock(&self.cache.inner).list(&self.me, open);
            drop(held);
        }
        Ok(fresh)
    }

    fn write<R>(&self, f: impl FnOnce(&File) -> io::Result<R>) -> io::Result<R> {
        let file = self.descriptor(true)?;
        let _wrote = Wrote(self);
        f(&file.file)
    }

    /// Reads (or stats) through the descriptor.
    pub(crate) fn read<R>(&self, f: impl FnOnce(&File) -> io::Result<R>) -> io::Result<R> {
        let file = self.descriptor(false)?;
        f(&file.file)
    }

    /// Writes (or changes the length) through the descriptor; the file stays open
    /// until a sync covers it.
    pub(crate) fn modify<R>(&self, f: impl FnOnce(&File) -> io::Result<R>) -> io::Result<R> {
        self.write(f)
    }

    /// `fdatasync` of every write finished before it was called (and, for a file
    /// opened on an existing one, of what it held). A closed file is clean (only
    /// clean files are closed), so it needs none unless it was never synced since it
    /// was opened on an existing file. A failure met by a sweep's sync of this file
    /// is reported here.
    pub(crate) fn sync_data(&self) -> io::Result<()> {
        if let Some(e) = lock(&self.slot).sync_error.take() {
            return Err(e);
        }
        self.sync()?;
        // A sweep's sync of the same descriptor may have failed meanwhile, and ours
        // then succeeded only because the failure was reported to the sweep.
        match lock(&self.slot).sync_error.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// [`CachedFile::sync_data`] without the failures stored for it.
    fn sync(&self) -> io::Result<()> {
        let slot = lock(&self.slot);
        let (file, upto) = match slot.file.clone() {
            Some(file) => {
                let upto = slot.written;
                drop(slot);
                (file, upto)
            }
            None if !slot.inherited => {
                debug_assert_eq!(slot.written, slot.synced, "invariant: closed is clean");
                return Ok(());
            }
            None => {
                drop(slot);
                // To sync what it held when opened.
                let file = self.descriptor(false)?;
                let upto = lock(&self.slot).written;
                (file, upto)
            }
        };
        file.sync_data()?;
        let mut slot = lock(&self.slot);
        slot.synced = slot.synced.max(upto);
        slot.inherited = false;
        Ok(())
    }

    /// Keeps the file open until dropped (see [`FileCache::pin_path`]).
    fn pin(&self) -> io::Result<()> {
        lock(&self.slot).pinned = true;
        // Opens it again if it was closed (before the remove or rename this precedes).
        self.descriptor(false).map(drop)
    }

    #[cfg(test)]
    fn is_open(&self) -> bool {
        lock(&self.slot).file.is_some()
    }
}

/// Ends a write begun by `descriptor(true)` when dropped: finished, failed (a failed
/// write may have written a prefix: it counts as unsynced too) or panicked (else the
/// file would count as being written, and stay open, for good).
struct Wrote<'a>(&'a CachedFile);

impl Drop for Wrote<'_> {
    fn drop(&mut self) {
        let mut slot = lock(&self.0.slot);
        slot.writing -= 1;
        slot.written += 1;
    }
}

impl Drop for CachedFile {
    fn drop(&mut self) {
        let mut inner = lock(&self.cache.inner);
        if let Some(files) = inner.by_path.get_mut(&self.path) {
            let me = std::ptr::from_ref::<CachedFile>(self);
            files.retain(|f| f.as_ptr() != me && f.strong_count() > 0);
            if files.is_empty() {
                inner.by_path.remove(&self.path);
            }
        }
    }
}

/// Entries of the clock ring, checking that none is listed twice (the tests').
#[cfg(test)]
fn ring_len(cache: &FileCache) -> usize {
    let mut held = Vec::new();
    let inner = lock(&cache.inner);
    let mut seen = HashSet::new();
    for entry in &inner.ring {
        if let Some(file) = entry.upgrade() {
            assert!(
                seen.insert(Arc::as_ptr(&file).addr()),
                "a file listed twice in a ring of {}",
                inner.ring.len()
            );
            held.push(file);
        }
    }
    let len = inner.ring.len();
    drop(inner);
    len
}

#[cfg(test)]
mod stress;

#[cfg(test)]
mod tests {
    use std::os::unix::fs::FileExt;

    use super::*;

    fn write_at(file: &CachedFile, pos: u64, bytes: &[u8]) {
        file.modify(|f| f.write_all_at(bytes, pos)).unwrap();
    }

    fn read_all(file: &CachedFile, len: usize) -> Vec<u8> {
        let mut buf = vec![0; len];
        file.read(|f| f.read_exact_at(&mut buf, 0)).unwrap();
        buf
    }

    /// At the limit, idle synced files close and reopen on their next use with the
    /// same bytes; the count never passes the limit while something can close.
    #[test]
    fn idle_files_close_at_the_limit_and_reopen_on_use() {
        let dir = tempfile::tempdir().unwrap();
        let cache = FileCache::new();
        cache.set_limit(Some(3));
        let files: Vec<_> = (0..10)
            .map(|i| {
                let f = cache
                    .open(&dir.path().join(format!("f{i}")), Open::Create)
                    .unwrap();
                write_at(&f, 0, format!("file {i}").as_bytes());
                f.sync_data().unwrap();
                assert!(cache.open_count() <= 3, "{} open", cache.open_count());
                f
            })
            .collect();
        assert!(!files[0].is_open(), "the oldest idle file was closed");
        for (i, f) in files.iter().enumerate() {
            assert_eq!(read_all(f, 6), format!("file {i}").as_bytes()[..6]);
            assert!(cache.open_count() <= 3);
        }
    }

    /// A file with an unsynced write stays open under the limit until a sync covers
    /// it, and the sweep syncs it when nothing else can close.
    #[test]
    fn unsynced_files_are_synced_before_they_close() {
        let dir = tempfile::tempdir().unwrap();
        let cache = FileCache::new();
        cache.set_limit(Some(2));
        let a = cache.open(&dir.path().join("a"), Open::Create).unwrap();
        write_at(&a, 0, b"unsynced");
        let b = cache.open(&dir.path().join("b"), Open::Create).unwrap();
        b.sync_data().unwrap();
        // Both idle (use bits cleared by a first turn); `b` is clean and goes first.
        a.used.store(false, Ordering::Relaxed);
        b.used.store(false, Ordering::Relaxed);
        let c = cache.open(&dir.path().join("c"), Open::Create).unwrap();
        assert!(a.is_open(), "the unsynced file stays open");
        assert!(!b.is_open());
        {
            let slot = lock(&a.slot);
            assert_ne!(slot.written, slot.synced);
        }
        // Now only unsynced idle files are left to close: `a` is synced, then closed.
        c.sync_data().unwrap();
        c.used.store(true, Ordering::Relaxed);
        a.used.store(false, Ordering::Relaxed);
        write_at(&c, 0, b"c");
        let _d = cache.open(&dir.path().join("d"), Open::Create).unwrap();
        assert!(!a.is_open(), "synced by the sweep, then closed");
        let slot = lock(&a.slot);
        assert_eq!(slot.written, slot.synced);
        drop(slot);
        assert_eq!(read_all(&a, 8), b"unsynced");
    }

    /// A held file removed or renamed over keeps the bytes it had, even if it had
    /// been closed by the cache before.
    #[test]
    fn pinned_files_keep_their_bytes_after_remove_and_rename() {
        let dir = tempfile::tempdir().unwrap();
        let cache = FileCache::new();
        cache.set_limit(Some(1));
        let gone = dir.path().join("gone");
        let replaced = dir.path().join("replaced");
        let a = cache.open(&gone, Open::Create).unwrap();
        write_at(&a, 0, b"old a");
        a.sync_data().unwrap();
        let b = cache.open(&replaced, Open::Create).unwrap();
        write_at(&b, 0, b"old b");
        b.sync_data().unwrap();
        a.used.store(false, Ordering::Relaxed);
        b.used.store(false, Ordering::Relaxed);
        let other = cache.open(&dir.path().join("other"), Open::Create).unwrap();
        other.sync_data().unwrap();
        assert!(!a.is_open() && !b.is_open(), "both closed at the limit");

        cache.pin_path(&gone).unwrap();
        std::fs::remove_file(&gone).unwrap();
        std::fs::write(dir.path().join("new"), b"new b").unwrap();
        cache.pin_path(&replaced).unwrap();
        std::fs::rename(dir.path().join("new"), &replaced).unwrap();
        // Pinned files are never closed, whatever the limit.
        other.used.store(false, Ordering::Relaxed);
        let _more = cache.open(&dir.path().join("more"), Open::Create).unwrap();
        assert_eq!(read_all(&a, 5), b"old a");
        assert_eq!(read_all(&b, 5), b"old b");
        assert!(a.is_open() && b.is_open());
    }

    /// A file being written is not closed under the writer, and the count returns
    /// to zero when every file is dropped; the path registry empties too.
    #[test]
    fn files_being_written_stay_open_and_drops_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        let cache = FileCache::new();
        cache.set_limit(Some(1));
        let a = cache.open(&dir.path().join("a"), Open::Create).unwrap();
        a.sync_data().unwrap();
        a.used.store(false, Ordering::Relaxed);
        let during = a.modify(|_| {
            // Mid-write: another file opening at the limit may not close `a`.
            let b = cache.open(&dir.path().join("b"), Open::Create).unwrap();
            Ok((a.is_open(), b))
        });
        let (open_during, b) = during.unwrap();
        assert!(open_during);
        drop((a, b));
        assert_eq!(cache.open_count(), 0);
        assert!(lock(&cache.inner).by_path.is_empty());
    }

    /// A failed `fdatasync` in the sweep reaches the owner's next `sync_data`: the
    /// kernel reports a failed write-back once per descriptor, so the owner's own
    /// sync would succeed for the lost bytes.
    #[test]
    fn a_sync_failure_met_by_the_sweep_is_reported_to_the_owner() {
        let dir = tempfile::tempdir().unwrap();
        let cache = FileCache::new();
        cache.set_limit(Some(1));
        let a = cache.open(&dir.path().join("a"), Open::Create).unwrap();
        write_at(&a, 0, b"lost?");
        a.used.store(false, Ordering::Relaxed);
        cache.fail_syncs.store(1, Ordering::Relaxed);
        let _b = cache.open(&dir.path().join("b"), Open::Create).unwrap();
        assert_eq!(
            cache.syncs.load(Ordering::Relaxed),
            1,
            "the sweep synced `a`"
        );
        assert!(a.is_open(), "a file whose sync failed stays open");
        let err = a.sync_data().unwrap_err();
        assert!(err.to_string().contains("injected"), "{err}");
        a.sync_data().unwrap();
    }

    /// A file opened on an existing one may hold bytes nobody synced (a killed
    /// process's); its first `sync_data` syncs them even if the cache closed it.
    #[test]
    fn a_file_opened_on_an_existing_one_is_synced_even_when_closed() {
        let dir = tempfile::tempdir().unwrap();
        let cache = FileCache::new();
        cache.set_limit(Some(1));
        let path = dir.path().join("left-by-a-killed-process");
        std::fs::write(&path, b"unsynced").unwrap();
        let a = cache.open(&path, Open::Existing).unwrap();
        a.used.store(false, Ordering::Relaxed);
        let b = cache.open(&dir.path().join("b"), Open::Create).unwrap();
        assert!(!a.is_open(), "clean of its own writes, so closed");
        b.sync_data().unwrap();
        b.used.store(false, Ordering::Relaxed);
        let syncs = || cache.syncs.load(Ordering::Relaxed);
        let before = syncs();
        a.sync_data().unwrap();
        assert_eq!(syncs(), before + 1, "synced all the same");
        // Once synced, a closed file needs no sync.
        a.used.store(false, Ordering::Relaxed);
        let c = cache.open(&dir.path().join("c"), Open::Create).unwrap();
        c.sync_data().unwrap();
        assert!(!a.is_open());
        let before = syncs();
        a.sync_data().unwrap();
        assert_eq!(syncs(), before);
        assert_eq!(read_all(&a, 8), b"unsynced");
    }

    /// A file the sweep syncs and closes keeps its ring entry; when it reopens
    /// before the sweep comes round, it must not get a second one (the ring grew by
    /// one per turn, and the compaction kept them all while the file was open).
    #[test]
    fn a_file_closed_by_the_sync_path_stays_listed_once() {
        let dir = tempfile::tempdir().unwrap();
        let cache = FileCache::new();
        cache.set_limit(Some(1));
        let a = cache.open(&dir.path().join("a"), Open::Create).unwrap();
        let mut other = None;
        for i in 0..30 {
            // Below the limit: `a` reopens without a sweep coming round first.
            drop(other.take());
            write_at(&a, 0, b"never synced by its owner");
            a.used.store(false, Ordering::Relaxed);
            // Only `a` is open and idle, unsynced: the sweep syncs and closes it.
            other = Some(cache.open(&dir.path().join(format!("o{i}")), Open::Create));
            assert!(!a.is_open());
            assert!(ring_len(&cache) <= 3, "ring of {}", ring_len(&cache));
        }
    }

    /// A write whose closure panics still ends, so the file can close afterwards.
    #[test]
    fn a_panicking_write_does_not_keep_the_file_open() {
        let dir = tempfile::tempdir().unwrap();
        let cache = FileCache::new();
        cache.set_limit(Some(1));
        let a = cache.open(&dir.path().join("a"), Open::Create).unwrap();
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            a.modify(|_| -> io::Result<()> { panic!("a write panicked") })
        }));
        assert!(panicked.is_err());
        a.sync_data().unwrap();
        a.used.store(false, Ordering::Relaxed);
        let _b = cache.open(&dir.path().join("b"), Open::Create).unwrap();
        assert!(!a.is_open(), "nothing is being written any more");
    }

    #[test]
    fn a_missing_file_fails_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let cache = FileCache::new();
        let err = cache
            .open(&dir.path().join("missing"), Open::Existing)
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert_eq!(cache.open_count(), 0);
    }
}
