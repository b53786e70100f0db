//! A small pool of threads for blocking reads, so an async caller's runtime workers
//! never wait on the disk. (The log cannot use tokio's `spawn_blocking`: it must not
//! depend on a runtime.) Each read returns a whole batch of records, so the hop of a
//! channel and a wake-up (a few microseconds) is paid per read, not per record.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::OnceLock;

use crate::mailbox::{Sender, mailbox};
use tokio::sync::oneshot;

type Job = Box<dyn FnOnce() + Send>;

/// Threads in the shared pool: enough to overlap a few cold reads, few enough to stay
/// out of the way on a small machine.
const THREADS: usize = 4;

pub(crate) struct IoPool {
    jobs: Sender<Job>,
}

impl IoPool {
    /// The process-wide pool, started on first use.
    pub(crate) fn global() -> &'static IoPool {
        static POOL: OnceLock<IoPool> = OnceLock::new();
        POOL.get_or_init(|| IoPool::new(THREADS))
    }

    fn new(threads: usize) -> IoPool {
        let (jobs, queue) = mailbox::<Job>();
        for i in 0..threads {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("weir-log-read-{i}"))
                .spawn(move || {
                    for job in queue.iter() {
                        // A panicking job drops its reply sender, which the caller
                        // sees; the thread itself stays available.
                        let _ = catch_unwind(AssertUnwindSafe(job));
                    }
                })
                .expect("invariant: the OS can start the log's read threads");
        }
        IoPool { jobs }
    }

    /// Runs `f` on a pool thread and waits for its result without blocking.
    pub(crate) async fn run<R: Send + 'static>(&self, f: impl FnOnce() -> R + Send + 'static) -> R {
        let (reply, result) = oneshot::channel();
        self.jobs
            .send(Box::new(move || {
                let _ = reply.send(f());
            }))
            .unwrap_or_else(|_| {
                unreachable!("invariant: pool threads live as long as the process")
            });
        result
            .await
            .expect("a log read panicked on its pool thread")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_jobs_off_the_caller_thread_and_survives_panics() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let pool = IoPool::new(1);
        let caller = std::thread::current().id();
        let ran_on = rt.block_on(pool.run(move || std::thread::current().id()));
        assert_ne!(ran_on, caller);
        let panicked = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            rt.block_on(IoPool::global().run(|| panic!("boom")));
        })
        .join();
        assert!(panicked.is_err());
        assert_eq!(rt.block_on(pool.run(|| 7)), 7);
    }
}
