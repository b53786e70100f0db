//! Handing messages out: receives and long polls, leasing, and writing the
//! deferred `Delivered` records of leases when no other append took them along.

use tokio::sync::oneshot;
use weir_log::{LogStore, Record};

use crate::api::{Delivery, ReceiveRequest};
use crate::clock::now_ms;
use crate::error::Result;
use crate::queue::entry::Entry;
use crate::queue::record::MessageMeta;

use super::{Actor, Waiter, deliveries, instant_in, read_entries, release};

impl<S: LogStore> Actor<S> {
    pub(super) fn receive(
        &mut self,
        request: ReceiveRequest,
        reply: oneshot::Sender<Result<Vec<Delivery>>>,
    ) {
        let visibility_ms = request
            .visibility_timeout_ms
            .unwrap_or(self.state.options().visibility_timeout_ms);
        let max = request.max as usize;
        if self.waiters.is_empty() && self.state.has_ready() {
            let reply = self.lease_and_deliver(max, visibility_ms, reply);
            match reply {
                None => (),
                Some(reply) if request.wait_ms == 0 => {
                    let _ = reply.send(Ok(Vec::new()));
                }
                Some(reply) => self.wait(max, visibility_ms, request.wait_ms, reply),
            }
        } else if request.wait_ms == 0 {
            let _ = reply.send(Ok(Vec::new()));
        } else {
            self.wait(max, visibility_ms, request.wait_ms, reply);
        }
    }

    pub(super) fn wait(
        &mut self,
        max: usize,
        visibility_ms: u64,
        wait_ms: u64,
        reply: oneshot::Sender<Result<Vec<Delivery>>>,
    ) {
        self.waiters.push_back(Waiter {
            max,
            visibility_ms,
            deadline: instant_in(wait_ms),
            reply,
        });
    }

    /// Leases up to `max` and starts their delivery; gives the reply back if nothing
    /// could be leased.
    pub(super) fn lease_and_deliver(
        &mut self,
        max: usize,
        visibility_ms: u64,
        reply: oneshot::Sender<Result<Vec<Delivery>>>,
    ) -> Option<oneshot::Sender<Result<Vec<Delivery>>>> {
        let (leased, effects) = self.state.lease(max, visibility_ms, now_ms());
        self.perform(effects);
        if leased.is_empty() {
            return Some(reply);
        }
        // Bodies written lately come from memory; the others are read.
        let mut found: Vec<Option<(MessageMeta, Record)>> = leased
            .iter()
            .map(|(entry, _)| self.fresh.take(entry.offset))
            .collect();
        let events = self.internal_tx.clone();
        if found.iter().all(Option::is_some) {
            if reply.send(Ok(deliveries(found, &leased))).is_err() {
                let _ = events.send(release(&leased));
            }
            return None;
        }
        let log = self.log.clone();
        let bodies = self.bodies.clone();
        let queue = self.name.clone();
        let missing: Vec<Entry> = leased
            .iter()
            .zip(&found)
            .filter(|(_, f)| f.is_none())
            .map(|((e, _), _)| *e)
            .collect();
        self.tasks.spawn(async move {
            let result = read_entries(&log, &bodies, &queue, &missing)
                .await
                .map(|records| {
                    let mut records = records.into_iter();
                    for slot in found.iter_mut().filter(|f| f.is_none()) {
                        *slot = records.next();
                    }
                    deliveries(found, &leased)
                });
            let failed = result.is_err();
            if reply.send(result).is_err() || failed {
                let _ = events.send(release(&leased));
            }
        });
        None
    }

    pub(super) fn serve_waiters(&mut self) {
        while self.state.has_ready() {
            let Some(waiter) = self.waiters.pop_front() else {
                break;
            };
            if waiter.reply.is_closed() {
                continue;
            }
            if let Some(reply) =
                self.lease_and_deliver(waiter.max, waiter.visibility_ms, waiter.reply)
            {
                // Everything ready was parked or expired: keep waiting.
                self.waiters.push_front(Waiter { reply, ..waiter });
                break;
            }
        }
    }

    /// Writes the deliveries not recorded yet, on their own.
    pub(super) fn record_deliveries(&mut self) {
        if self.state.has_deferred() {
            let done = self.persist(Vec::new());
            let queue = self.name.clone();
            self.tasks.spawn(async move {
                if let Err(e) = done.await {
                    tracing::warn!(%queue, error = %e, "recording deliveries failed");
                }
            });
        }
        self.record_due = None;
    }
}
