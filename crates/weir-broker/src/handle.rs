//! [`QueueRef`]: the broker's handle on one running queue (its command channel, its
//! number, its options, its task) and the use count behind `expires_ms`
//! ([`Usage`], [`UseGuard`]). Below the broker: the broker and the shared-log
//! dispatcher both hold these, and this module imports neither.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::{Mutex, mpsc};

use crate::api::QueueOptions;
use crate::clock::now_ms;
use crate::queue::command::Command;

#[derive(Clone)]
pub(crate) struct QueueRef {
    pub(crate) commands: mpsc::Sender<Command>,
    /// The queue's number (shared records name their destinations by it).
    pub(crate) id: u32,
    /// Shared, so looking a queue up per request copies no option strings.
    pub(crate) options: Arc<QueueOptions>,
    pub(crate) task: Arc<Mutex<Option<tokio::task::JoinHandle<()>>>>,
    /// When it was last used, and by how many now (for `expires_ms`).
    pub(crate) usage: Arc<Usage>,
}

/// Use of a queue, for `expires_ms`: receives in progress and consumers holding a
/// [`UseGuard`] keep it alive; the last use ends the clock's reset.
#[derive(Debug)]
pub(crate) struct Usage {
    /// Uses in progress.
    holds: std::sync::atomic::AtomicU64,
    /// When the last use began or ended (ms since the epoch).
    last_ms: std::sync::atomic::AtomicI64,
}

impl Usage {
    pub(crate) fn new() -> Usage {
        Usage {
            holds: std::sync::atomic::AtomicU64::new(0),
            last_ms: std::sync::atomic::AtomicI64::new(now_ms()),
        }
    }

    pub(crate) fn touch(&self) {
        self.last_ms.store(now_ms(), Ordering::Release);
    }

    pub(crate) fn hold(self: &Arc<Usage>) -> UseGuard {
        self.holds.fetch_add(1, Ordering::AcqRel);
        self.touch();
        UseGuard {
            usage: self.clone(),
        }
    }

    /// Unused for at least `ms`.
    pub(crate) fn idle_for(&self, ms: u64) -> bool {
        self.holds.load(Ordering::Acquire) == 0
            && now_ms().saturating_sub(self.last_ms.load(Ordering::Acquire))
                >= i64::try_from(ms).unwrap_or(i64::MAX)
    }
}

/// A use of a queue that keeps it from expiring while held (an AMQP consumer holds
/// one for its life). See [`crate::Broker::hold`].
#[derive(Debug)]
pub struct UseGuard {
    usage: Arc<Usage>,
}

impl Drop for UseGuard {
    fn drop(&mut self) {
        self.usage.touch();
        self.usage.holds.fetch_sub(1, Ordering::AcqRel);
    }
}
