//! The broker's std locks, taken so that a panic elsewhere never spreads.
//!
//! A std lock is *poisoned* when a thread panics while holding it, and every later
//! `lock().unwrap()` panics in turn: one bug would take every request that touches
//! the lock with it. The broker's std locks guard plain maps (queues by name,
//! queues being deleted, the shared log's writes in flight), the router and a
//! counter, and every change under them is a single insert, remove or assignment
//! (a routing change is made on a copy that then replaces the router; only the load
//! at start changes it in place, and a panic there fails the start anyway): a panic
//! cannot leave one half-changed. So poison is ignored here. (Nothing
//! `.await`s under these locks; see the house style.)

use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Locks `mutex`, poisoned or not.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Read-locks `lock`, poisoned or not.
pub(crate) fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

/// Write-locks `lock`, poisoned or not.
pub(crate) fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_under_a_lock_does_not_spread() {
        let map = std::sync::Arc::new(RwLock::new(vec![1]));
        let counter = std::sync::Arc::new(Mutex::new(0));
        let (m, c) = (map.clone(), counter.clone());
        let panicked = std::thread::spawn(move || {
            let _w = write(&m);
            let _l = lock(&c);
            panic!("a bug while holding both");
        })
        .join();
        assert!(panicked.is_err());
        assert!(map.is_poisoned() && counter.is_poisoned());
        write(&map).push(2);
        assert_eq!(*read(&map), vec![1, 2]);
        *lock(&counter) += 1;
        assert_eq!(*lock(&counter), 1);
    }
}
