//! The queue between async callers and the log's threads: a `VecDeque` under a mutex,
//! and a condition variable the receiving thread sleeps on.
//!
//! Why not a channel crate: crossbeam's (and std's, which is a port of it) receive
//! spins and then calls `sched_yield` a few times before it sleeps. On a small machine
//! five log threads doing that on every idle moment took a core's worth of time slices
//! from the async runtime's workers at a steady 5,000 messages a second, and gave the
//! end-to-end latency a tail of tens of milliseconds (profile in
//! `docs/benchmarks.md`). Here a receiver that finds the queue empty goes straight to
//! sleep, and a sender wakes it only when one sleeps.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

struct State<T> {
    items: VecDeque<T>,
    senders: usize,
    receivers: usize,
    /// Receivers asleep on `ready`.
    sleeping: usize,
}

struct Shared<T> {
    state: Mutex<State<T>>,
    ready: Condvar,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // No code runs user callbacks under this lock, so a poisoned lock only means a
        // thread panicked between two plain field updates: the state is still whole.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A new mailbox: its sending and receiving ends.
pub(crate) fn mailbox<T>() -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            items: VecDeque::new(),
            senders: 1,
            receivers: 1,
            sleeping: 0,
        }),
        ready: Condvar::new(),
    });
    (
        Sender {
            shared: shared.clone(),
        },
        Receiver { shared },
    )
}

pub(crate) struct Sender<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Sender<T> {
    /// Queues `item`; gives it back when every receiver is gone.
    pub(crate) fn send(&self, item: T) -> Result<(), T> {
        let mut state = self.shared.lock();
        if state.receivers == 0 {
            return Err(item);
        }
        state.items.push_back(item);
        let wake = state.sleeping > 0;
        drop(state);
        if wake {
            self.shared.ready.notify_one();
        }
        Ok(())
    }
}

impl<T> std::fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender").finish_non_exhaustive()
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.shared.lock().senders += 1;
        Sender {
            shared: self.shared.clone(),
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.senders -= 1;
        if state.senders == 0 {
            drop(state);
            self.shared.ready.notify_all();
        }
    }
}

/// Why nothing was received.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Empty {
    /// The deadline passed.
    Timeout,
    /// Every sender is gone and nothing is left.
    Disconnected,
}

pub(crate) struct Receiver<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Receiver<T> {
    /// Waits for an item until `deadline` (forever with `None`).
    pub(crate) fn recv_until(&self, deadline: Option<Instant>) -> Result<T, Empty> {
        let mut state = self.shared.lock();
        loop {
            if let Some(item) = state.items.pop_front() {
                return Ok(item);
            }
            if state.senders == 0 {
                return Err(Empty::Disconnected);
            }
            state.sleeping += 1;
            state = match deadline {
                None => self
                    .shared
                    .ready
                    .wait(state)
                    .unwrap_or_else(std::sync::PoisonError::into_inner),
                Some(deadline) => {
                    let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                        state.sleeping -= 1;
                        return Err(Empty::Timeout);
                    };
                    self.shared
                        .ready
                        .wait_timeout(state, left)
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .0
                }
            };
            state.sleeping -= 1;
        }
    }

    /// The items as they come, until every sender is gone.
    pub(crate) fn iter(&self) -> impl Iterator<Item = T> + '_ {
        std::iter::from_fn(|| self.recv_until(None).ok())
    }

    /// The next queued item, without waiting.
    pub(crate) fn try_recv(&self) -> Option<T> {
        self.shared.lock().items.pop_front()
    }
}

impl<T> Clone for Receiver<T> {
    fn clone(&self) -> Self {
        self.shared.lock().receivers += 1;
        Receiver {
            shared: self.shared.clone(),
        }
    }
}

impl<T> Drop for Receiver<T> {
    /// The last receiver drops what is still queued, so whoever waits on an item
    /// (a reply channel inside it) hears that it will never be handled.
    fn drop(&mut self) {
        let left = {
            let mut state = self.shared.lock();
            state.receivers -= 1;
            if state.receivers == 0 {
                std::mem::take(&mut state.items)
            } else {
                VecDeque::new()
            }
        };
        drop(left);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn items_arrive_in_order_and_the_end_is_seen_once_senders_are_gone() {
        let (tx, rx) = mailbox();
        let tx2 = tx.clone();
        let t = std::thread::spawn(move || {
            for i in 0..1000 {
                tx2.send(i).unwrap();
            }
        });
        drop(tx);
        let got: Vec<i32> = rx.iter().collect();
        t.join().unwrap();
        assert_eq!(got, (0..1000).collect::<Vec<_>>());
    }

    #[test]
    fn a_deadline_ends_the_wait_and_try_recv_takes_what_is_queued() {
        let (tx, rx) = mailbox();
        let until = Instant::now() + Duration::from_millis(20);
        assert_eq!(rx.recv_until(Some(until)).unwrap_err(), Empty::Timeout);
        assert!(Instant::now() >= until);
        for i in 0..5 {
            tx.send(i).unwrap();
        }
        let got: Vec<i32> = std::iter::from_fn(|| rx.try_recv()).collect();
        assert_eq!(got, [0, 1, 2, 3, 4]);
        assert_eq!(rx.try_recv(), None);
    }

    #[test]
    fn sending_fails_once_receivers_are_gone() {
        let (tx, rx) = mailbox();
        drop(rx);
        assert_eq!(tx.send(7), Err(7));
    }

    /// What was queued when the last receiver went away is dropped then, not kept
    /// for as long as a sender lives: a reply channel inside it must close.
    #[test]
    fn the_last_receiver_drops_what_is_still_queued() {
        let (tx, rx) = mailbox();
        let (reply, answer) = std::sync::mpsc::channel::<()>();
        tx.send(reply).unwrap();
        drop(rx);
        assert!(
            answer.recv().is_err(),
            "the queued reply channel was dropped"
        );
    }

    #[test]
    fn sleeping_receivers_are_woken_by_a_send_from_another_thread() {
        let (tx, rx) = mailbox::<u32>();
        let receivers: Vec<_> = (0..4)
            .map(|_| {
                let rx = rx.clone();
                std::thread::spawn(move || rx.iter().count())
            })
            .collect();
        std::thread::sleep(Duration::from_millis(20));
        for i in 0..400 {
            tx.send(i).unwrap();
        }
        drop(tx);
        let total: usize = receivers.into_iter().map(|r| r.join().unwrap()).sum();
        assert_eq!(total, 400);
    }
}

#[cfg(test)]
mod stress {
    use std::time::Duration;

    use super::*;

    /// Round trips from several senders through four receivers, each answered on
    /// its own channel: none may get stuck.
    #[test]
    fn round_trips_never_get_stuck() {
        let (tx, rx) = mailbox::<std::sync::mpsc::Sender<u32>>();
        let workers: Vec<_> = (0..4)
            .map(|_| {
                let rx = rx.clone();
                std::thread::spawn(move || {
                    for reply in rx.iter() {
                        let _ = reply.send(1);
                    }
                })
            })
            .collect();
        drop(rx);
        let senders: Vec<_> = (0..3)
            .map(|_| {
                let tx = tx.clone();
                std::thread::spawn(move || {
                    for _ in 0..20_000 {
                        let (reply, answer) = std::sync::mpsc::channel();
                        tx.send(reply).unwrap();
                        answer
                            .recv_timeout(Duration::from_secs(10))
                            .expect("answered");
                    }
                })
            })
            .collect();
        for s in senders {
            s.join().unwrap();
        }
        drop(tx);
        for w in workers {
            w.join().unwrap();
        }
    }
}
