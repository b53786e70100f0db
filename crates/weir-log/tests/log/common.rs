//! Helpers shared by the suites.

use std::future::Future;

/// Runs a future on a fresh multi-threaded runtime (the log's own threads do the I/O).
pub fn block_on<F: Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(future)
}
