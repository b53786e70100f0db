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
