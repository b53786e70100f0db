//! What the AMQP front end knows across its connections, which the broker does not
//! model because they are AMQP's: which connection owns an exclusive queue, which
//! queues were declared auto-delete, and every AMQP consumer of every queue (for
//! exclusive consumers, single active consumer and auto-delete).
//!
//! One lock over plain maps: every operation is a few lookups, never held across
//! an `.await`. It lives as long as the listener; the flags themselves are stored
//! with the queue (`QueueOptions::exclusive`, `auto_delete`), so the broker deletes
//! exclusive queues at its next start and an auto-delete queue is known again as
//! soon as a consumer comes. Queues are keyed by their broker-wide names
//! (`weir_broker::vhost`), so the same name in two vhosts is two queues here too.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use tokio::sync::watch;

use crate::codes::{ACCESS_REFUSED, Exception, RESOURCE_LOCKED};

/// See the module doc.
#[derive(Default)]
pub(crate) struct Registry {
    state: Mutex<State>,
    next_connection: AtomicU64,
}

#[derive(Default)]
struct State {
    /// Exclusive queues and the connection that owns each.
    owners: HashMap<String, u64>,
    /// Auto-delete queues that have had a consumer: deleted when their last
    /// consumer goes.
    auto_delete: HashSet<String>,
    consumers: HashMap<String, QueueConsumers>,
}

/// The AMQP consumers of one queue, in the order they came.
struct QueueConsumers {
    single_active: bool,
    list: Vec<Entry>,
}

struct Entry {
    connection: u64,
    channel: u16,
    tag: String,
    exclusive: bool,
    /// Whether it may receive (false while it waits its turn on a
    /// single-active-consumer queue).
    active: watch::Sender<bool>,
}

/// How a consumer is known to the registry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ConsumerId {
    pub(crate) connection: u64,
    pub(crate) channel: u16,
    pub(crate) tag: String,
}

impl Registry {
    /// The state, even after a session panicked while holding it: each method
    /// changes it in steps that leave it usable, and one connection's panic must
    /// not take every other connection's declares and consumers with it.
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A number for a new connection.
    pub(crate) fn connection_id(&self) -> u64 {
        self.next_connection.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Refuses (405) a connection other than the owner of an exclusive queue.
    pub(crate) fn check_access(&self, queue: &str, connection: u64) -> Result<(), Exception> {
        match self.lock().owners.get(queue) {
            Some(owner) if *owner != connection => Err(locked(queue)),
            _ => Ok(()),
        }
    }

    /// Records a declaration by `connection`: `existed` says the queue was there
    /// before. An exclusive declaration of a queue someone else declared is
    /// refused (405), as in RabbitMQ.
    pub(crate) fn declared(
        &self,
        queue: &str,
        connection: u64,
        existed: bool,
        exclusive: bool,
    ) -> Result<(), Exception> {
        let mut state = self.lock();
        if !existed {
            // A new queue: whatever was known of an earlier one with this name
            // (deleted over HTTP or by x-expires, which the registry does not
            // hear of) is stale.
            state.owners.remove(queue);
            state.auto_delete.remove(queue);
        }
        match state.owners.get(queue) {
            Some(owner) if *owner != connection => return Err(locked(queue)),
            None if exclusive && existed => return Err(locked(queue)),
            _ => {}
        }
        if exclusive {
            state.owners.insert(queue.to_owned(), connection);
        }
        Ok(())
    }

    /// Adds a consumer of `queue`. Refused (403) when it asks to be exclusive and
    /// the queue has consumers, or the queue has an exclusive consumer. The answer
    /// says when it may receive: always, or on a single-active-consumer queue once
    /// the consumers before it are gone. `auto_delete` (the queue's stored flag)
    /// arms the queue's deletion for when its last consumer goes.
    pub(crate) fn add_consumer(
        &self,
        queue: &str,
        id: &ConsumerId,
        exclusive: bool,
        flags: QueueFlags,
    ) -> Result<watch::Receiver<bool>, Exception> {
        let mut state = self.lock();
        let single_active = flags.single_active;
        // Armed even if this consumer is refused: the queue then has one already.
        if flags.auto_delete {
            state.auto_delete.insert(queue.to_owned());
        }
        let consumers = state
            .consumers
            .entry(queue.to_owned())
            .or_insert_with(|| QueueConsumers {
                single_active,
                list: Vec::new(),
            });
        if consumers.list.iter().any(|e| e.exclusive) || (exclusive && !consumers.list.is_empty()) {
            return Err(Exception::channel(ACCESS_REFUSED, {
                let (vhost, queue) = weir_broker::vhost::split(queue);
                format!("queue '{queue}' in vhost '{vhost}' in exclusive use")
            }));
        }
        let active = !consumers.single_active || consumers.list.is_empty();
        let (tx, rx) = watch::channel(active);
        consumers.list.push(Entry {
            connection: id.connection,
            channel: id.channel,
            tag: id.tag.clone(),
            exclusive,
            active: tx,
        });
        Ok(rx)
    }

    /// Removes a consumer; on a single-active-consumer queue the next one takes
    /// over. Returns whether the queue should now be deleted (auto-delete, and this
    /// was its last consumer).
    pub(crate) fn remove_consumer(&self, queue: &str, id: &ConsumerId) -> bool {
        let mut state = self.lock();
        let Some(consumers) = state.consumers.get_mut(queue) else {
            return false;
        };
        let Some(at) = consumers.list.iter().position(|e| {
            e.connection == id.connection && e.channel == id.channel && e.tag == id.tag
        }) else {
            return false;
        };
        let gone = consumers.list.remove(at);
        if consumers.single_active
            && *gone.active.borrow()
            && let Some(next) = consumers.list.first()
        {
            next.active.send_replace(true);
        }
        if !consumers.list.is_empty() {
            return false;
        }
        state.consumers.remove(queue);
        state.auto_delete.remove(queue)
    }

    /// AMQP consumers of `queue`.
    pub(crate) fn consumer_count(&self, queue: &str) -> usize {
        self.lock().consumers.get(queue).map_or(0, |c| c.list.len())
    }

    /// A connection ended: its exclusive queues, to delete.
    pub(crate) fn release_connection(&self, connection: u64) -> Vec<String> {
        let mut state = self.lock();
        let mine: Vec<String> = state
            .owners
            .iter()
            .filter(|(_, owner)| **owner == connection)
            .map(|(q, _)| q.clone())
            .collect();
        for q in &mine {
            state.owners.remove(q);
            state.auto_delete.remove(q);
        }
        mine
    }

    /// A queue was deleted: forget its owner, flags and consumers. Dropping a
    /// consumer's entry closes its gate, so one waiting its turn learns it is gone
    /// (consumers polling learn it from the broker).
    pub(crate) fn forget_queue(&self, queue: &str) {
        let mut state = self.lock();
        state.owners.remove(queue);
        state.auto_delete.remove(queue);
        state.consumers.remove(queue);
    }
}

/// What the registry needs of a queue's stored options when a consumer comes.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct QueueFlags {
    /// `x-single-active-consumer`.
    pub(crate) single_active: bool,
    /// Declared auto-delete.
    pub(crate) auto_delete: bool,
}

/// 405 for a queue another connection owns, or whose exclusive flag differs from
/// the one asked (RabbitMQ's `check_exclusive_access`).
pub(crate) fn locked(queue: &str) -> Exception {
    let (vhost, queue) = weir_broker::vhost::split(queue);
    Exception::channel(
        RESOURCE_LOCKED,
        format!(
            "cannot obtain exclusive access to locked queue '{queue}' in vhost '{vhost}': it was \
             declared exclusive by another connection"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAIN: QueueFlags = QueueFlags {
        single_active: false,
        auto_delete: false,
    };
    const SAC: QueueFlags = QueueFlags {
        single_active: true,
        auto_delete: false,
    };
    const AUTO_DELETE: QueueFlags = QueueFlags {
        single_active: false,
        auto_delete: true,
    };

    fn id(connection: u64, tag: &str) -> ConsumerId {
        ConsumerId {
            connection,
            channel: 1,
            tag: tag.into(),
        }
    }

    #[test]
    fn exclusive_queues_belong_to_one_connection() {
        let r = Registry::default();
        r.declared("q", 1, false, true).unwrap();
        assert!(r.check_access("q", 1).is_ok());
        assert_eq!(r.check_access("q", 2).unwrap_err().code, RESOURCE_LOCKED);
        assert_eq!(
            r.declared("q", 2, true, false).unwrap_err().code,
            RESOURCE_LOCKED
        );
        // A queue declared before cannot be claimed as exclusive.
        r.declared("shared", 2, false, false).unwrap();
        assert_eq!(
            r.declared("shared", 1, true, true).unwrap_err().code,
            RESOURCE_LOCKED
        );
        assert_eq!(r.release_connection(1), vec!["q".to_owned()]);
        assert!(r.check_access("q", 2).is_ok());
        // Deleted behind the registry's back (over HTTP) and declared anew: the
        // old owner's claim is stale.
        r.declared("gone", 1, false, true).unwrap();
        r.declared("gone", 2, false, false).unwrap();
        assert!(r.check_access("gone", 2).is_ok());
        assert!(r.release_connection(1).is_empty());
    }

    #[test]
    fn an_exclusive_consumer_is_alone() {
        let r = Registry::default();
        r.add_consumer("q", &id(1, "a"), false, PLAIN).unwrap();
        assert_eq!(
            r.add_consumer("q", &id(2, "b"), true, PLAIN)
                .unwrap_err()
                .code,
            ACCESS_REFUSED
        );
        r.remove_consumer("q", &id(1, "a"));
        r.add_consumer("q", &id(2, "b"), true, PLAIN).unwrap();
        assert_eq!(
            r.add_consumer("q", &id(1, "c"), false, PLAIN)
                .unwrap_err()
                .code,
            ACCESS_REFUSED
        );
    }

    #[test]
    fn single_active_consumers_take_turns_in_order() {
        let r = Registry::default();
        let a = r.add_consumer("q", &id(1, "a"), false, SAC).unwrap();
        let b = r.add_consumer("q", &id(2, "b"), false, SAC).unwrap();
        let c = r.add_consumer("q", &id(3, "c"), false, SAC).unwrap();
        assert_eq!(
            (*a.borrow(), *b.borrow(), *c.borrow()),
            (true, false, false)
        );
        // A waiting consumer leaving changes nothing.
        r.remove_consumer("q", &id(3, "c"));
        assert!(!*b.borrow());
        r.remove_consumer("q", &id(1, "a"));
        assert!(*b.borrow());
        assert_eq!(r.consumer_count("q"), 1);
    }

    #[test]
    fn auto_delete_fires_when_the_last_consumer_goes() {
        let r = Registry::default();
        r.add_consumer("q", &id(1, "a"), false, AUTO_DELETE)
            .unwrap();
        r.add_consumer("q", &id(2, "b"), false, AUTO_DELETE)
            .unwrap();
        assert!(!r.remove_consumer("q", &id(1, "a")));
        assert!(r.remove_consumer("q", &id(2, "b")));
        // Not auto-delete: never.
        r.add_consumer("p", &id(1, "a"), false, PLAIN).unwrap();
        assert!(!r.remove_consumer("p", &id(1, "a")));
    }

    #[test]
    fn a_deleted_queue_lets_go_of_its_consumers() {
        let r = Registry::default();
        let _active = r.add_consumer("q", &id(1, "a"), true, SAC).unwrap();
        let mut waiting = r.add_consumer("q", &id(2, "b"), false, SAC);
        assert!(waiting.is_err(), "an exclusive consumer is alone");
        r.forget_queue("q");
        waiting = r.add_consumer("q", &id(2, "b"), true, SAC);
        let waiting = waiting.expect("the re-declared queue has no consumers");
        assert!(*waiting.borrow());
        r.forget_queue("q");
        assert!(waiting.has_changed().is_err(), "its gate is closed");
    }
}
