//! [`CrashFs`]: an in-memory file system that remembers what a power cut would keep.
//!
//! Each file has a *live* image (what reads see) and a *durable* image (what survives a
//! crash), copied from live by `sync_data`. Directory entries are likewise live until
//! `sync_dir` makes them durable. A test can cut the power at the n-th sync
//! ([`CrashFs::crash_at_sync`]) or right now ([`CrashFs::crash`]); from then on every
//! operation fails, as if the process had died. [`CrashFs::after_crash`] then builds
//! the file system a reboot would find, including torn variants of the writes that had
//! not been synced ([`Torn`]). Everything is deterministic, so a test can sweep every
//! sync point of a workload.
//!
//! It can also run out of space ([`CrashFs::set_space_limit`]): a write that does not
//! fit writes what fits and fails with ENOSPC, like a real disk.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::io::{DirLock, FileIo, Fs};

/// How the unsynced part of each file looks after the crash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Torn {
    /// Only synced data and synced directory entries survive.
    Synced,
    /// Everything written survives, directory entries included: what a process crash
    /// (`kill -9`) leaves, since the page cache outlives the process.
    Everything,
    /// Synced data plus the first half of each file's unsynced bytes.
    HalfTail,
    /// Everything written, then this many bytes of garbage after each file that had
    /// unsynced bytes.
    TrailingGarbage(usize),
    /// Everything written, with one bit flipped in the middle of each file's unsynced
    /// bytes.
    FlippedBit,
    /// The files have their written length, but the unsynced bytes read as zeros (the
    /// size reached the disk, the data blocks did not).
    ZeroedTail,
    /// The first half of the unsynced bytes read as zeros while the second half landed:
    /// pages written back out of order, leaving a hole before data that looks valid.
    Hole,
}

impl Torn {
    /// Every variant, for sweeps.
    pub const ALL: [Torn; 7] = [
        Torn::Synced,
        Torn::Everything,
        Torn::HalfTail,
        Torn::TrailingGarbage(100),
        Torn::FlippedBit,
        Torn::ZeroedTail,
        Torn::Hole,
    ];
}

#[derive(Debug, Default, Clone)]
struct Inode {
    live: Vec<u8>,
    durable: Vec<u8>,
}

type InodeRef = Arc<Mutex<Inode>>;

#[derive(Debug, Default)]
struct State {
    live: HashMap<PathBuf, InodeRef>,
    durable: HashMap<PathBuf, InodeRef>,
    dirs: HashSet<PathBuf>,
    locks: HashSet<PathBuf>,
    syncs: u64,
    crash_at_sync: Option<u64>,
    crashed: bool,
    space_limit: Option<u64>,
    failing_syncs: u64,
    /// Whether a failing sync still makes the data durable (it may, on a real disk).
    failing_syncs_persist: bool,
    /// How long each file sync takes (before it makes anything durable).
    sync_delay: std::time::Duration,
}

impl State {
    fn check(&self) -> io::Result<()> {
        if self.crashed {
            Err(io::Error::other("power cut (CrashFs)"))
        } else {
            Ok(())
        }
    }

    /// Counts a sync. `Ok(true)`: it happens; `Ok(false)`: it fails with EIO after
    /// making the data durable anyway; `Err`: the power goes out or it fails outright.
    fn sync_point(&mut self) -> io::Result<bool> {
        self.check()?;
        self.syncs += 1;
        if self.crash_at_sync == Some(self.syncs) {
            self.crashed = true;
            return Err(io::Error::other("power cut (CrashFs) during a sync"));
        }
        if self.failing_syncs > 0 {
            self.failing_syncs -= 1;
            if self.failing_syncs_persist {
                return Ok(false);
            }
            return Err(io::Error::from_raw_os_error(5));
        }
        Ok(true)
    }

    fn used_bytes(&self) -> u64 {
        self.live
            .values()
            .map(|i| i.lock().expect("inode lock").live.len() as u64)
            .sum()
    }
}

/// The crash-simulating file system (see the module docs).
#[derive(Clone, Default)]
pub struct CrashFs {
    state: Arc<Mutex<State>>,
}

impl fmt::Debug for CrashFs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.lock();
        f.debug_struct("CrashFs")
            .field("files", &state.live.len())
            .field("syncs", &state.syncs)
            .field("crashed", &state.crashed)
            .finish()
    }
}

impl CrashFs {
    /// An empty file system.
    pub fn new() -> Self {
        CrashFs::default()
    }

    /// A shareable handle as the log takes it.
    pub fn shared(&self) -> Arc<dyn Fs> {
        Arc::new(self.clone())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .expect("invariant: CrashFs lock never poisoned")
    }

    /// Cuts the power during the `n`-th sync from now on (1 = the next one): that sync
    /// does not happen and every later operation fails.
    pub fn crash_at_sync(&self, n: u64) {
        let mut state = self.lock();
        let at = state.syncs + n;
        state.crash_at_sync = Some(at);
    }

    /// Cuts the power now.
    pub fn crash(&self) {
        self.lock().crashed = true;
    }

    /// Whether the power has been cut.
    pub fn crashed(&self) -> bool {
        self.lock().crashed
    }

    /// Syncs (file and directory) performed so far.
    pub fn sync_count(&self) -> u64 {
        self.lock().syncs
    }

    /// Makes writes fail with ENOSPC once the live files would hold more than `bytes`
    /// in total; `None` lifts the limit.
    pub fn set_space_limit(&self, bytes: Option<u64>) {
        self.lock().space_limit = bytes;
    }

    /// Makes every file sync take `delay` before it makes anything durable: a slow
    /// disk, so that what waits for a sync (and what must) shows.
    pub fn set_sync_delay(&self, delay: std::time::Duration) {
        self.lock().sync_delay = delay;
    }

    /// Makes the next `n` syncs fail with EIO (nothing becomes durable).
    pub fn fail_next_syncs(&self, n: u64) {
        let mut state = self.lock();
        state.failing_syncs = n;
        state.failing_syncs_persist = false;
    }

    /// Makes the next `n` syncs fail with EIO after making the data durable anyway: a
    /// disk may write part or all of what a failed flush covered.
    pub fn fail_next_syncs_after_persisting(&self, n: u64) {
        let mut state = self.lock();
        state.failing_syncs = n;
        state.failing_syncs_persist = true;
    }

    /// The file system a reboot finds, with unsynced bytes shaped by `torn`.
    #[must_use]
    pub fn after_crash(&self, torn: Torn) -> CrashFs {
        self.rebuild(torn == Torn::Everything, |_| torn)
    }

    /// Like [`CrashFs::after_crash`], with each file's unsynced bytes shaped by its own
    /// variant: e.g. a torn segment next to an index whose writes all landed, the case
    /// that shows whether index entries ever point past synced data. Directory entries
    /// are the durable ones.
    #[must_use]
    pub fn after_crash_per_file(&self, torn: impl Fn(&Path) -> Torn) -> CrashFs {
        self.rebuild(false, torn)
    }

    /// Like [`CrashFs::after_crash`], but every directory entry made so far survives
    /// while file contents are shaped by `torn`: a file system may commit its journal,
    /// names included, on its own, before the directory is synced.
    #[must_use]
    pub fn after_crash_names_landed(&self, torn: Torn) -> CrashFs {
        self.rebuild(true, |_| torn)
    }

    fn rebuild(&self, live_names: bool, torn: impl Fn(&Path) -> Torn) -> CrashFs {
        let state = self.lock();
        let names = if live_names {
            &state.live
        } else {
            &state.durable
        };
        let mut live = HashMap::new();
        for (path, inode) in names {
            let inode = inode.lock().expect("inode lock");
            let bytes = torn_image(&inode, torn(path));
            live.insert(
                path.clone(),
                Arc::new(Mutex::new(Inode {
                    live: bytes.clone(),
                    durable: bytes,
                })),
            );
        }
        let durable = live.clone();
        CrashFs {
            state: Arc::new(Mutex::new(State {
                live,
                durable,
                dirs: state.dirs.clone(),
                ..State::default()
            })),
        }
    }

    /// The live bytes of a file, for tests that inspect or damage files directly.
    pub fn file_bytes(&self, path: &Path) -> Option<Vec<u8>> {
        let state = self.lock();
        let inode = state.live.get(path)?;
        Some(inode.lock().expect("inode lock").live.clone())
    }

    /// Replaces a file's bytes, live and durable (simulated media damage).
    pub fn set_file_bytes(&self, path: &Path, bytes: Vec<u8>) {
        let state = self.lock();
        if let Some(inode) = state.live.get(path) {
            let mut inode = inode.lock().expect("inode lock");
            inode.live.clone_from(&bytes);
            inode.durable = bytes;
        }
    }
}

/// The bytes a crash leaves of one file.
fn torn_image(inode: &Inode, torn: Torn) -> Vec<u8> {
    let (live, durable) = (&inode.live, &inode.durable);
    let common = live
        .iter()
        .zip(durable.iter())
        .take_while(|(a, b)| a == b)
        .count();
    let unsynced = live.len() != durable.len() || common != live.len();
    if !unsynced {
        return live.clone();
    }
    match torn {
        Torn::Synced => durable.clone(),
        Torn::Everything => live.clone(),
        Torn::HalfTail => {
            let mut out = live[..common].to_vec();
            out.extend_from_slice(&live[common..common + (live.len() - common) / 2]);
            out
        }
        Torn::TrailingGarbage(n) => {
            let mut out = live.clone();
            out.extend((0..n).map(|i| (i as u8).wrapping_mul(31) ^ 0xA5));
            out
        }
        Torn::FlippedBit => {
            let mut out = live.clone();
            if live.len() > common {
                let at = common + (live.len() - common) / 2;
                out[at] ^= 0x08;
            }
            out
        }
        Torn::ZeroedTail => {
            let mut out = live[..common].to_vec();
            out.resize(live.len(), 0);
            out
        }
        Torn::Hole => {
            let mut out = live.clone();
            let hole_end = common + (live.len() - common) / 2;
            out[common..hole_end].fill(0);
            out
        }
    }
}

#[derive(Debug)]
struct Handle {
    state: Arc<Mutex<State>>,
    inode: InodeRef,
}

impl Handle {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .expect("invariant: CrashFs lock never poisoned")
    }
}

impl FileIo for Handle {
    fn read_at(&self, pos: u64, buf: &mut [u8]) -> io::Result<usize> {
        self.state().check()?;
        let inode = self.inode.lock().expect("inode lock");
        let Ok(pos) = usize::try_from(pos) else {
            return Ok(0);
        };
        if pos >= inode.live.len() {
            return Ok(0);
        }
        let n = buf.len().min(inode.live.len() - pos);
        buf[..n].copy_from_slice(&inode.live[pos..pos + n]);
        Ok(n)
    }

    fn write_all_at(&self, pos: u64, bufs: &[&[u8]]) -> io::Result<()> {
        let state = self.state();
        state.check()?;
        let used = state.used_bytes();
        let mut inode = self.inode.lock().expect("inode lock");
        let mut at = usize::try_from(pos).map_err(io::Error::other)?;
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        let growth = (at + total).saturating_sub(inode.live.len()) as u64;
        let room = state
            .space_limit
            .map_or(u64::MAX, |limit| limit.saturating_sub(used));
        let fits = if growth > room {
            // Write what fits, as a real disk does, then report ENOSPC.
            (inode.live.len() as u64 + room).saturating_sub(at as u64) as usize
        } else {
            total
        };
        let mut left = fits;
        for buf in bufs {
            let n = buf.len().min(left);
            if inode.live.len() < at + n {
                inode.live.resize(at + n, 0);
            }
            inode.live[at..at + n].copy_from_slice(&buf[..n]);
            at += n;
            left -= n;
        }
        if fits < total {
            return Err(io::Error::from_raw_os_error(28));
        }
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        self.state().check()?;
        Ok(self.inode.lock().expect("inode lock").live.len() as u64)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.state().check()?;
        let len = usize::try_from(len).map_err(io::Error::other)?;
        self.inode.lock().expect("inode lock").live.resize(len, 0);
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        let delay = self.state().sync_delay;
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
        let happened = self.state().sync_point()?;
        let mut guard = self.inode.lock().expect("inode lock");
        let inode = &mut *guard;
        inode.durable.clone_from(&inode.live);
        if happened {
            Ok(())
        } else {
            Err(io::Error::from_raw_os_error(5))
        }
    }
}

struct LockGuard {
    state: Arc<Mutex<State>>,
    dir: PathBuf,
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if let Ok(mut state) = self.state.lock() {
            state.locks.remove(&self.dir);
        }
    }
}

impl Fs for CrashFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.lock();
        state.check()?;
        // Directories themselves are treated as durable at once; the log's crash
        // windows are about the files in them.
        state.dirs.insert(dir.to_path_buf());
        Ok(())
    }

    fn open(&self, path: &Path) -> io::Result<Arc<dyn FileIo>> {
        let state = self.lock();
        state.check()?;
        let inode = state
            .live
            .get(path)
            .cloned()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        Ok(Arc::new(Handle {
            state: self.state.clone(),
            inode,
        }))
    }

    fn create(&self, path: &Path) -> io::Result<Arc<dyn FileIo>> {
        let mut state = self.lock();
        state.check()?;
        let inode = if let Some(existing) = state.live.get(path) {
            // O_TRUNC: same inode, emptied.
            existing.lock().expect("inode lock").live.clear();
            existing.clone()
        } else {
            let inode = InodeRef::default();
            state.live.insert(path.to_path_buf(), inode.clone());
            inode
        };
        Ok(Arc::new(Handle {
            state: self.state.clone(),
            inode,
        }))
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let state = self.lock();
        state.check()?;
        Ok(state
            .live
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name()?.to_str().map(str::to_owned))
            .collect())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut state = self.lock();
        state.check()?;
        state
            .live
            .remove(path)
            .map(drop)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut state = self.lock();
        state.check()?;
        let inode = state
            .live
            .remove(from)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        state.live.insert(to.to_path_buf(), inode);
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.lock();
        let happened = state.sync_point()?;
        state.durable.retain(|p, _| p.parent() != Some(dir));
        let entries: Vec<_> = state
            .live
            .iter()
            .filter(|(p, _)| p.parent() == Some(dir))
            .map(|(p, i)| (p.clone(), i.clone()))
            .collect();
        state.durable.extend(entries);
        if happened {
            Ok(())
        } else {
            Err(io::Error::from_raw_os_error(5))
        }
    }

    fn lock_dir(&self, dir: &Path) -> io::Result<DirLock> {
        let mut state = self.lock();
        state.check()?;
        if !state.locks.insert(dir.to_path_buf()) {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(Box::new(LockGuard {
            state: self.state.clone(),
            dir: dir.to_path_buf(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(fs: &CrashFs, path: &Path) -> Vec<u8> {
        fs.file_bytes(path).unwrap_or_default()
    }

    #[test]
    fn only_synced_data_and_entries_survive_a_crash() {
        let fs = CrashFs::new();
        let dir = Path::new("/d");
        fs.create_dir_all(dir).unwrap();
        let a = fs.create(&dir.join("a")).unwrap();
        a.write_all_at(0, &[b"synced"]).unwrap();
        a.sync_data().unwrap();
        fs.sync_dir(dir).unwrap();
        a.write_all_at(6, &[b"-lost"]).unwrap();
        let b = fs.create(&dir.join("b")).unwrap();
        b.write_all_at(0, &[b"never named durably"]).unwrap();
        b.sync_data().unwrap();
        fs.crash();
        assert!(
            a.write_all_at(0, &[b"x"]).is_err(),
            "a dead machine writes nothing"
        );

        let after = fs.after_crash(Torn::Synced);
        assert_eq!(read_all(&after, &dir.join("a")), b"synced");
        assert!(after.open(&dir.join("b")).is_err());

        let everything = fs.after_crash(Torn::Everything);
        assert_eq!(read_all(&everything, &dir.join("a")), b"synced-lost");
        assert_eq!(
            read_all(&everything, &dir.join("b")),
            b"never named durably"
        );

        assert_eq!(
            read_all(&fs.after_crash(Torn::HalfTail), &dir.join("a")),
            b"synced-l"
        );
        assert_eq!(
            read_all(&fs.after_crash(Torn::ZeroedTail), &dir.join("a")),
            b"synced\0\0\0\0\0"
        );
        let flipped = read_all(&fs.after_crash(Torn::FlippedBit), &dir.join("a"));
        assert_eq!(&flipped[..6], b"synced");
        assert_ne!(&flipped[6..], b"-lost");
        assert_eq!(
            read_all(&fs.after_crash(Torn::TrailingGarbage(3)), &dir.join("a")).len(),
            11 + 3
        );
        assert_eq!(
            read_all(&fs.after_crash(Torn::Hole), &dir.join("a")),
            b"synced\0\0ost"
        );
    }

    #[test]
    fn crash_at_sync_cuts_power_at_that_sync() {
        let fs = CrashFs::new();
        let f = fs.create(Path::new("/f")).unwrap();
        fs.crash_at_sync(2);
        f.write_all_at(0, &[b"one"]).unwrap();
        f.sync_data().unwrap();
        f.write_all_at(3, &[b"two"]).unwrap();
        assert!(f.sync_data().is_err());
        assert!(fs.crashed());
        assert_eq!(
            fs.after_crash(Torn::Synced).lock().live.len(),
            0,
            "name never synced"
        );
        let everything = fs.after_crash(Torn::Everything);
        assert_eq!(read_all(&everything, Path::new("/f")), b"onetwo");
    }

    #[test]
    fn a_full_disk_writes_what_fits_then_fails_with_enospc() {
        let fs = CrashFs::new();
        let f = fs.create(Path::new("/f")).unwrap();
        fs.set_space_limit(Some(10));
        f.write_all_at(0, &[b"12345678"]).unwrap();
        let err = f.write_all_at(8, &[b"abcd"]).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(28));
        assert_eq!(f.len().unwrap(), 10);
        fs.set_space_limit(None);
        f.write_all_at(10, &[b"cd"]).unwrap();
    }
}
