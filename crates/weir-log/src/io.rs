//! The file layer under the log: the only place that touches the operating system.
//!
//! [`FileIo`] is a file (positional reads and writes, length, truncate, `fdatasync`) and
//! [`Fs`] a directory of them (create, open, list, rename, remove, sync the directory,
//! lock). [`StdFs`] is the real thing, its files held open only while used (at most
//! [`set_open_files_limit`] at once; see `file_cache`). `testing::CrashFs` implements the same traits
//! with separate *live* and *durable* images, so crash tests can cut power at any sync
//! and replay torn writes deterministically (redb's and NATS's approach).
//!
//! Everything here blocks. The log calls it only from its own writer thread and from
//! the read pool, never from an async runtime's worker threads.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::file_cache::{CachedFile, FileCache, Open};

/// One open file.
#[allow(
    clippy::len_without_is_empty,
    reason = "a file's emptiness is never asked"
)]
pub trait FileIo: Send + Sync + fmt::Debug {
    /// Reads up to `buf.len()` bytes at `pos`; returns how many were read (0 at the end).
    fn read_at(&self, pos: u64, buf: &mut [u8]) -> io::Result<usize>;

    /// Writes all of `bufs`, in order, starting at `pos`. On error some prefix may have
    /// been written; the caller truncates it away.
    fn write_all_at(&self, pos: u64, bufs: &[&[u8]]) -> io::Result<()>;

    /// The current length.
    fn len(&self) -> io::Result<u64>;

    /// Truncates (or extends with zeros) to `len`.
    fn set_len(&self, len: u64) -> io::Result<()>;

    /// Makes the file's data and length durable (`fdatasync`).
    fn sync_data(&self) -> io::Result<()>;
}

/// A held directory lock; dropping it releases the lock.
pub type DirLock = Box<dyn Send + Sync>;

/// A file system: what the log needs of directories.
pub trait Fs: Send + Sync + fmt::Debug {
    /// Creates `dir` and its parents if missing, durably: each directory it creates
    /// is synced in its parent before it returns (a power cut cannot take away a
    /// directory whose files were synced).
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Opens an existing file for reading and writing.
    fn open(&self, path: &Path) -> io::Result<Arc<dyn FileIo>>;
    /// Creates a file, empty (an existing one is truncated).
    fn create(&self, path: &Path) -> io::Result<Arc<dyn FileIo>>;
    /// Names of the regular files in `dir`.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Removes a file.
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Renames a file, replacing `to` if it exists.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Makes creations, removals and renames in `dir` durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Takes the exclusive lock of `dir`, failing with `WouldBlock` if it is held.
    fn lock_dir(&self, dir: &Path) -> io::Result<DirLock>;
}

/// Reads exactly `buf.len()` bytes at `pos`, or fails with `UnexpectedEof`.
pub(crate) fn read_exact_at(file: &dyn FileIo, mut pos: u64, mut buf: &mut [u8]) -> io::Result<()> {
    while !buf.is_empty() {
        match file.read_at(pos, buf) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => {
                pos += n as u64;
                buf = &mut buf[n..];
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The real file system. Its segment and index files stay open only while used: at
/// most the limit of its file cache at once (the process's, [`set_open_files_limit`],
/// unless made with [`StdFs::with_open_files_limit`]).
#[derive(Debug, Clone)]
pub struct StdFs {
    cache: Arc<FileCache>,
}

impl Default for StdFs {
    /// Over the process's file cache.
    fn default() -> Self {
        StdFs {
            cache: FileCache::global().clone(),
        }
    }
}

impl StdFs {
    /// A shareable handle over the process's file cache, the form the log takes.
    pub fn shared() -> Arc<dyn Fs> {
        Arc::new(StdFs::default())
    }

    /// A file system with a file cache of its own, keeping at most `limit` files open
    /// (for tests that close files often without touching the rest of the process).
    pub fn with_open_files_limit(limit: u64) -> StdFs {
        let cache = FileCache::new();
        cache.set_limit(Some(limit));
        StdFs { cache }
    }

    /// Segment and index files this file system has open now.
    pub fn open_files(&self) -> u64 {
        self.cache.open_count()
    }
}

/// `LOCK` files held by the logs of this process (the others are in the file cache).
static LOCKS_HELD: AtomicU64 = AtomicU64::new(0);

/// How many files the logs of this process hold open (see [`StdFs`]): the segment and
/// index files the file cache has open now, and each log's `LOCK` (unless
/// [`crate::LogConfig::lock_dir`] is off). The broker reports it.
pub fn open_files() -> u64 {
    FileCache::global().open_count() + LOCKS_HELD.load(Ordering::Relaxed)
}

/// Sets the most segment and index files [`StdFs`] keeps open at once in this process
/// (`None`, the default: no limit). Past it, files not used lately are closed and
/// opened again on their next use; a file with writes not yet synced is synced before
/// it is closed, and files being written, or removed while held, stay open. The limit
/// is soft: when nothing can be closed a file opens anyway. `weir serve` sets it from
/// `RLIMIT_NOFILE` (docs/configuration.md).
pub fn set_open_files_limit(limit: Option<u64>) {
    FileCache::global().set_limit(limit);
}

/// The limit [`set_open_files_limit`] set.
pub fn open_files_limit() -> Option<u64> {
    FileCache::global().limit()
}

/// One file counted in a counter for as long as it lives.
#[derive(Debug)]
struct Counted(&'static AtomicU64);

impl Counted {
    fn new(counter: &'static AtomicU64) -> Counted {
        counter.fetch_add(1, Ordering::Relaxed);
        Counted(counter)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A file of [`StdFs`]: a path in its file cache, open while it is used.
#[derive(Debug)]
struct StdFile(Arc<CachedFile>);

/// A log's held `LOCK`, counted in [`LOCKS_HELD`].
struct StdLock {
    _file: File,
    _open: Counted,
}

impl FileIo for StdFile {
    fn read_at(&self, pos: u64, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(|file| FileExt::read_at(file, buf, pos))
    }

    fn write_all_at(&self, pos: u64, bufs: &[&[u8]]) -> io::Result<()> {
        self.0.modify(|file| write_all_at(file, pos, bufs))
    }

    fn len(&self) -> io::Result<u64> {
        self.0.read(|file| Ok(file.metadata()?.len()))
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.modify(|file| file.set_len(len))
    }

    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }
}

/// Writes `bufs` in order at `pos`: one `pwrite`, or one `writev` for several.
fn write_all_at(mut file: &File, pos: u64, bufs: &[&[u8]]) -> io::Result<()> {
    if let [one] = bufs {
        return FileExt::write_all_at(file, one, pos);
    }
    // Only the log's writer thread writes a file, so moving the shared file cursor
    // here races with nothing (readers use pread).
    file.seek(SeekFrom::Start(pos))?;
    let mut slices: Vec<IoSlice<'_>> = bufs.iter().map(|b| IoSlice::new(b)).collect();
    let mut rest = &mut slices[..];
    while !rest.is_empty() {
        match file.write_vectored(rest) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut rest, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Creates `dir` and its missing parents, each synced in its parent after it is
/// made (`mkdir`, then `fsync` of the parent directory), so the new entries are as
/// durable as the files later written in them. An existing directory costs one
/// `stat`. For the log's directories ([`StdFs`]) and the broker's.
///
/// # Errors
/// The failed `mkdir` or `fsync`; a path that exists but is not a directory.
pub fn create_dir_all_durably(dir: &Path) -> io::Result<()> {
    create_dirs(
        dir,
        &mut |d| d.is_dir(),
        &mut |d| std::fs::create_dir(d),
        &mut |d| File::open(d)?.sync_all(),
    )
}

/// [`create_dir_all_durably`] over the three operations it needs (a test records
/// them).
fn create_dirs(
    dir: &Path,
    is_dir: &mut dyn FnMut(&Path) -> bool,
    mkdir: &mut dyn FnMut(&Path) -> io::Result<()>,
    sync: &mut dyn FnMut(&Path) -> io::Result<()>,
) -> io::Result<()> {
    // The missing directories, nearest first.
    let mut missing = Vec::new();
    let mut at = dir;
    while !at.as_os_str().is_empty() && !is_dir(at) {
        missing.push(at);
        match at.parent() {
            Some(parent) => at = parent,
            None => break,
        }
    }
    for d in missing.into_iter().rev() {
        match mkdir(d) {
            Ok(()) => {}
            // Made meanwhile by someone else, who may not have synced it yet.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && is_dir(d) => {}
            Err(e) => return Err(e),
        }
        let parent = d
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        sync(parent)?;
    }
    Ok(())
}

impl Fs for StdFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        create_dir_all_durably(dir)
    }

    fn open(&self, path: &Path) -> io::Result<Arc<dyn FileIo>> {
        let file = self.cache.open(path, Open::Existing)?;
        Ok(Arc::new(StdFile(file)))
    }

    fn create(&self, path: &Path) -> io::Result<Arc<dyn FileIo>> {
        // No pin: truncating keeps the inode, so a held file of the same path sees
        // the truncation whether its descriptor is open or opened again.
        let file = self.cache.open(path, Open::Create)?;
        Ok(Arc::new(StdFile(file)))
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_type()?.is_file()
                && let Some(name) = entry.file_name().to_str()
            {
                names.push(name.to_owned());
            }
        }
        Ok(names)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        // Whoever still holds the file reads on from its descriptor, as without a cache.
        self.cache.pin_path(path)?;
        std::fs::remove_file(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.cache.pin_path(from)?;
        self.cache.pin_path(to)?;
        std::fs::rename(from, to)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn lock_dir(&self, dir: &Path) -> io::Result<DirLock> {
        let path: PathBuf = dir.join(LOCK_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        match file.try_lock() {
            Ok(()) => Ok(Box::new(StdLock {
                _file: file,
                _open: Counted::new(&LOCKS_HELD),
            })),
            Err(std::fs::TryLockError::WouldBlock) => Err(io::ErrorKind::WouldBlock.into()),
            Err(std::fs::TryLockError::Error(e)) => Err(e),
        }
    }
}

/// Name of the lock file in a log directory. The lock is an advisory `flock`, released
/// by the kernel when the process dies, so a `kill -9` never leaves a stale lock.
pub(crate) const LOCK_FILE: &str = "LOCK";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectored_write_lands_in_order_at_position() {
        let dir = tempfile::tempdir().unwrap();
        let fs = StdFs::default();
        let file = fs.create(&dir.path().join("f")).unwrap();
        file.write_all_at(0, &[b"hello"]).unwrap();
        file.write_all_at(5, &[b", ", b"wor", b"ld"]).unwrap();
        let mut buf = vec![0; 12];
        read_exact_at(&*file, 0, &mut buf).unwrap();
        assert_eq!(&buf, b"hello, world");
        assert_eq!(file.len().unwrap(), 12);
        let err = read_exact_at(&*file, 10, &mut [0; 4]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    /// Each directory made is synced in its parent, after it is made and before the
    /// next one goes in it; existing ones are left alone.
    #[test]
    fn new_directories_are_synced_in_their_parents() {
        let root = tempfile::tempdir().unwrap();
        let target = root.path().join("a").join("b").join("c");
        let ops = std::cell::RefCell::new(Vec::new());
        create_dirs(
            &target,
            &mut |d| d.is_dir(),
            &mut |d| {
                ops.borrow_mut().push(format!("mkdir {}", d.display()));
                std::fs::create_dir(d)
            },
            &mut |d| {
                ops.borrow_mut().push(format!("sync {}", d.display()));
                Ok(())
            },
        )
        .unwrap();
        assert!(target.is_dir());
        let (a, b) = (root.path().join("a"), root.path().join("a").join("b"));
        let want = [
            format!("mkdir {}", a.display()),
            format!("sync {}", root.path().display()),
            format!("mkdir {}", b.display()),
            format!("sync {}", a.display()),
            format!("mkdir {}", target.display()),
            format!("sync {}", b.display()),
        ];
        assert_eq!(ops.borrow().as_slice(), want);
        // Nothing to do the second time; a file in the way is an error.
        ops.borrow_mut().clear();
        create_dir_all_durably(&target).unwrap();
        std::fs::write(root.path().join("f"), b"x").unwrap();
        assert!(create_dir_all_durably(&root.path().join("f").join("g")).is_err());
        assert!(create_dir_all_durably(&root.path().join("f")).is_err());
    }

    /// A counted file is counted while it lives, whoever drops it.
    #[test]
    fn counted_files_leave_the_count_when_dropped() {
        static COUNT: AtomicU64 = AtomicU64::new(0);
        let files: Vec<Counted> = (0..3).map(|_| Counted::new(&COUNT)).collect();
        assert_eq!(COUNT.load(Ordering::Relaxed), 3);
        let moved = std::thread::spawn(move || drop(files));
        moved.join().unwrap();
        assert_eq!(COUNT.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn directory_lock_is_exclusive_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let lock = StdFs::default().lock_dir(dir.path()).unwrap();
        let err = StdFs::default().lock_dir(dir.path()).err().unwrap();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        drop(lock);
        StdFs::default().lock_dir(dir.path()).unwrap();
    }
}
