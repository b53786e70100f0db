//! Many threads on a cache of three files: writes, read-backs, syncs, truncations,
//! removes and renames over held files, drops and reopens of sixteen paths in seeded
//! random order. Every read is checked against a model of each file's bytes; the
//! cache checks on its own that only clean idle files close (`Slot::close`) and that
//! a closed file it skips the sync of is clean (`CachedFile::sync`). At the end the
//! count comes back to the limit, then to zero, and the registry and ring empty.

use std::os::unix::fs::FileExt;
use std::sync::mpsc;
use std::time::Duration;

use super::*;

const THREADS: usize = 6;
const PATHS: usize = 16;
const OPS: usize = 500;
const LIMIT: u64 = 3;
/// Files removed or renamed over while held, shared so that every thread reads them
/// (and drops the last handle of some).
const HELD: usize = 8;

/// One path: the handle the test keeps for it and the bytes its file holds.
#[derive(Default)]
struct Entry {
    handle: Option<Arc<CachedFile>>,
    /// `None`: no file at the path.
    bytes: Option<Vec<u8>>,
}

struct World {
    cache: Arc<FileCache>,
    dir: tempfile::TempDir,
    paths: Vec<Mutex<Entry>>,
    /// Removed or renamed-over files and the bytes they keep.
    held: Mutex<Vec<(Arc<CachedFile>, Vec<u8>)>>,
}

impl World {
    fn path(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("f{i:02}"))
    }

    /// The entry's handle, opened (or created, if no file is there) when it has none.
    fn handle(&self, i: usize, entry: &mut Entry) -> Arc<CachedFile> {
        if entry.handle.is_none() {
            let how = if entry.bytes.is_some() {
                Open::Existing
            } else {
                entry.bytes = Some(Vec::new());
                Open::Create
            };
            entry.handle = Some(self.cache.open(&self.path(i), how).unwrap());
        }
        entry.handle.clone().unwrap()
    }

    fn hold(&self, rng: &mut fastrand::Rng, file: Arc<CachedFile>, bytes: Vec<u8>) {
        let mut held = lock(&self.held);
        let len = held.len();
        let dropped = (len >= HELD).then(|| held.swap_remove(rng.usize(..len)));
        held.push((file, bytes));
        drop(held);
        drop(dropped);
    }
}

fn check(file: &CachedFile, want: &[u8]) {
    let len = file.read(|f| Ok(f.metadata()?.len())).unwrap();
    assert_eq!(len, want.len() as u64);
    let mut buf = vec![0; want.len()];
    file.read(|f| f.read_exact_at(&mut buf, 0)).unwrap();
    assert!(buf == want, "read back other bytes than written");
}

fn run(world: &World, thread: usize, rng: &mut fastrand::Rng) {
    let tmp = world.dir.path().join(format!("tmp{thread}"));
    for _ in 0..OPS {
        let i = rng.usize(..PATHS);
        let mut entry = lock(&world.paths[i]);
        let entry = &mut *entry;
        match rng.u8(..100) {
            0..30 => {
                let file = world.handle(i, entry);
                let bytes = entry.bytes.as_mut().unwrap();
                let pos = rng.usize(..=bytes.len());
                let data: Vec<u8> = (0..rng.usize(1..48)).map(|_| rng.u8(..)).collect();
                file.modify(|f| f.write_all_at(&data, pos as u64)).unwrap();
                bytes.resize(bytes.len().max(pos + data.len()), 0);
                bytes[pos..pos + data.len()].copy_from_slice(&data);
            }
            30..50 => {
                let file = world.handle(i, entry);
                check(&file, entry.bytes.as_ref().unwrap());
            }
            50..62 => {
                if let Some(file) = &entry.handle {
                    file.sync_data().unwrap();
                }
            }
            62..68 => {
                let file = world.handle(i, entry);
                let bytes = entry.bytes.as_mut().unwrap();
                let len = rng.usize(..=bytes.len() + 16);
                file.modify(|f| f.set_len(len as u64)).unwrap();
                bytes.resize(len, 0);
            }
            68..74 => {
                // Removed while held, as `StdFs::remove` does it.
                if let Some(file) = entry.handle.take() {
                    world.cache.pin_path(&world.path(i)).unwrap();
                    std::fs::remove_file(world.path(i)).unwrap();
                    let bytes = entry.bytes.take().unwrap();
                    world.hold(rng, file, bytes);
                }
            }
            74..80 => {
                // Renamed over while held, as `StdFs::rename` does it.
                let new: Vec<u8> = (0..rng.usize(..64)).map(|_| rng.u8(..)).collect();
                let fresh = world.cache.open(&tmp, Open::Create).unwrap();
                fresh.modify(|f| f.write_all_at(&new, 0)).unwrap();
                fresh.sync_data().unwrap();
                world.cache.pin_path(&tmp).unwrap();
                world.cache.pin_path(&world.path(i)).unwrap();
                std::fs::rename(&tmp, world.path(i)).unwrap();
                check(&fresh, &new);
                drop(fresh);
                if let Some(file) = entry.handle.take() {
                    let bytes = entry.bytes.take().unwrap();
                    world.hold(rng, file, bytes);
                }
                entry.bytes = Some(new);
            }
            80..88 => entry.handle = None,
            88..94 => {
                entry.handle = None;
                let file = world.handle(i, entry);
                check(&file, entry.bytes.as_ref().unwrap());
            }
            _ => {
                let one = {
                    let held = lock(&world.held);
                    (!held.is_empty()).then(|| held[rng.usize(..held.len())].clone())
                };
                if let Some((file, bytes)) = one {
                    check(&file, &bytes);
                }
            }
        }
    }
}

#[test]
fn threads_at_a_limit_of_three_read_what_they_wrote() {
    // A deadlock fails the test instead of hanging it.
    let (done, finished) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        if finished.recv_timeout(Duration::from_secs(60)) == Err(mpsc::RecvTimeoutError::Timeout) {
            eprintln!("the file cache stress test is stuck: a deadlock");
            std::process::abort();
        }
    });
    let seed = std::env::var("WEIR_STRESS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_cafe_u64);
    // tmpfs where there is one: its fdatasync is free, and the test is about races.
    let dir = if Path::new("/dev/shm").is_dir() {
        tempfile::tempdir_in("/dev/shm")
    } else {
        tempfile::tempdir()
    };
    let world = World {
        cache: FileCache::new(),
        dir: dir.unwrap(),
        paths: (0..PATHS).map(|_| Mutex::default()).collect(),
        held: Mutex::default(),
    };
    world.cache.set_limit(Some(LIMIT));
    let finished = AtomicU64::new(0);
    std::thread::scope(|s| {
        for thread in 0..THREADS {
            let (world, finished) = (&world, &finished);
            s.spawn(move || {
                // Counted even if it panics, so the loop below ends.
                struct Finished<'a>(&'a AtomicU64);
                impl Drop for Finished<'_> {
                    fn drop(&mut self) {
                        self.0.fetch_add(1, Ordering::Relaxed);
                    }
                }
                let _finished = Finished(finished);
                let mut rng = fastrand::Rng::with_seed(seed + thread as u64);
                run(world, thread, &mut rng);
            });
        }
        // Meanwhile: the ring never lists a file twice and stays small.
        while finished.load(Ordering::Relaxed) < THREADS as u64 {
            let len = ring_len(&world.cache);
            assert!(len <= 64 + 2 * (PATHS + HELD + THREADS), "ring of {len}");
            std::thread::sleep(Duration::from_millis(1));
        }
    });

    // Quiet: with every file synced and idle, one more open brings the count to the
    // limit.
    drop(std::mem::take(&mut *lock(&world.held)));
    let handles: Vec<_> = world
        .paths
        .iter()
        .filter_map(|entry| lock(entry).handle.clone())
        .collect();
    for file in &handles {
        file.sync_data().unwrap();
        file.used.store(false, Ordering::Relaxed);
    }
    let extra = world
        .cache
        .open(&world.dir.path().join("extra"), Open::Create)
        .unwrap();
    assert!(
        world.cache.open_count() <= LIMIT,
        "{} open",
        world.cache.open_count()
    );
    // What is on disk is what the model says.
    for (i, entry) in world.paths.iter().enumerate() {
        let entry = lock(entry);
        if let Some(bytes) = &entry.bytes {
            assert!(
                std::fs::read(world.path(i)).unwrap() == *bytes,
                "f{i:02} on disk"
            );
            if let Some(file) = &entry.handle {
                check(file, bytes);
            }
        } else {
            assert!(!world.path(i).exists());
        }
    }
    // Dropped: nothing open, nothing registered, the ring small.
    drop((handles, extra));
    for entry in &world.paths {
        lock(entry).handle = None;
    }
    assert_eq!(world.cache.open_count(), 0);
    assert!(lock(&world.cache.inner).by_path.is_empty());
    assert!(ring_len(&world.cache) <= 64 + 2 * (PATHS + HELD + THREADS));
    done.send(()).unwrap();
}
