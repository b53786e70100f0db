//! What every fuzz target shares: each input runs on a thread with a small stack,
//! so unbounded recursion on hostile input overflows within `-max_len` bytes
//! (128 KiB, the AMQP `frame_max`) instead of hiding behind the main thread's 8 MiB.

/// The stack each input runs on. The broker's own threads have 2 MiB or more: an
/// input that needs more than this to be refused is a depth bug.
pub const STACK_BYTES: usize = 256 << 10;

/// Runs `f` on a fresh thread with [`STACK_BYTES`] of stack and waits for it. A panic
/// in `f` is a panic here (libFuzzer's crash); a stack overflow aborts the process,
/// which libFuzzer reports as a deadly signal.
pub fn on_small_stack<F: FnOnce() + Send>(f: F) {
    std::thread::scope(|scope| {
        let ran = std::thread::Builder::new()
            .name("fuzz-input".into())
            .stack_size(STACK_BYTES)
            .spawn_scoped(scope, f)
            .expect("spawn the input's thread")
            .join();
        if let Err(panic) = ran {
            std::panic::resume_unwind(panic);
        }
    });
}

/// A fresh data directory for a target that runs a broker: on `/dev/shm` when there
/// is one (a sync there costs nothing), named after the target and this process.
/// Directories that earlier runs of the target left (their process is gone) are
/// removed first: libFuzzer ends the process without running destructors.
pub fn scratch_dir(target: &str) -> std::path::PathBuf {
    let shm = std::path::Path::new("/dev/shm");
    let base = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    let prefix = format!("weir-fuzz-{target}-");
    if let Ok(entries) = std::fs::read_dir(&base) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(pid) = name.strip_prefix(&prefix) else {
                continue;
            };
            if !std::path::Path::new("/proc").join(pid).exists() {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    let dir = base.join(format!("{prefix}{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}
