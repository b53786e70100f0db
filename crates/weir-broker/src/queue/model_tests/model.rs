//! The naive model: every committed message in one `Vec` with the one place it
//! is in, every question answered by scanning it.

use std::cmp::Reverse;
use std::collections::HashMap;

use crate::api::{Backoff, DeadLetterReason, Overflow, QueueOptions};
use crate::queue::record::Totals;

use super::{How, Outcome};

// ---------------------------------------------------------------------------
// The model.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Place {
    Ready { parked: bool },
    Delayed { due: i64 },
    Leased { lease_id: u64, deadline: i64 },
    Acked,
    Removed(How),
}

#[derive(Clone, Debug)]
pub(super) struct Msg {
    pub(super) offset: u64,
    pub(super) priority: u8,
    pub(super) group: u64,
    pub(super) expires_at: i64,
    pub(super) enqueued_at: i64,
    pub(super) size: u32,
    pub(super) attempts: u32,
    pub(super) place: Place,
}

impl Msg {
    pub(super) fn expired(&self, now: i64) -> bool {
        self.expires_at != 0 && self.expires_at <= now
    }
    pub(super) fn held(&self) -> bool {
        matches!(
            self.place,
            Place::Ready { .. } | Place::Delayed { .. } | Place::Leased { .. }
        )
    }
    pub(super) fn ready(&self) -> bool {
        matches!(self.place, Place::Ready { .. })
    }
}

pub(super) struct Model {
    pub(super) options: QueueOptions,
    /// Every committed message, by offset.
    pub(super) msgs: Vec<Msg>,
    /// Id → until when it counts as seen.
    pub(super) dedup: HashMap<String, i64>,
    pub(super) totals: Totals,
    /// Expiries counted in `totals.expired` that went to the dead-letter queue since
    /// the last restart: replay cannot tell them from other dead letters.
    pub(super) expired_to_dlq: u64,
    /// Every receipt ever handed out, as (offset, lease id).
    pub(super) receipts: Vec<(u64, u64)>,
}

impl Model {
    pub(super) fn new(options: QueueOptions) -> Model {
        Model {
            options,
            msgs: Vec::new(),
            dedup: HashMap::new(),
            totals: Totals::default(),
            expired_to_dlq: 0,
            receipts: Vec::new(),
        }
    }

    pub(super) fn index(&self, offset: u64) -> Option<usize> {
        self.msgs.iter().position(|m| m.offset == offset)
    }

    /// A group is busy while one of its messages is leased or waits for a retry.
    pub(super) fn busy(&self, group: u64) -> bool {
        group != 0
            && self.msgs.iter().any(|m| {
                m.group == group
                    && match m.place {
                        Place::Leased { .. } => true,
                        Place::Delayed { .. } => m.attempts > 0,
                        _ => false,
                    }
            })
    }

    /// Parked messages whose group is no longer busy are ready again.
    pub(super) fn unpark(&mut self) {
        let free: Vec<usize> = (0..self.msgs.len())
            .filter(|&i| {
                self.msgs[i].place == Place::Ready { parked: true }
                    && !self.busy(self.msgs[i].group)
            })
            .collect();
        for i in free {
            self.msgs[i].place = Place::Ready { parked: false };
        }
    }

    /// Ready, unparked messages: highest priority first, then by offset.
    pub(super) fn delivery_order(&self) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.msgs.len())
            .filter(|&i| self.msgs[i].place == Place::Ready { parked: false })
            .collect();
        order.sort_by_key(|&i| (Reverse(self.msgs[i].priority), self.msgs[i].offset));
        order
    }

    pub(super) fn count(&self, f: impl Fn(&Msg) -> bool) -> u64 {
        self.msgs.iter().filter(|m| f(m)).count() as u64
    }

    pub(super) fn ready_bytes(&self) -> u64 {
        self.msgs
            .iter()
            .filter(|m| m.ready())
            .map(|m| u64::from(m.size))
            .sum()
    }

    /// A message leaves without an ack: dead-lettered if the queue has a dead-letter
    /// queue, else expired or dropped.
    pub(super) fn remove(&mut self, i: usize, reason: DeadLetterReason, out: &mut Outcome) {
        let how = if self.options.dead_letter_queue.is_some() {
            self.totals.dead_lettered += 1;
            if reason == DeadLetterReason::Expired {
                self.totals.expired += 1;
                self.expired_to_dlq += 1;
            }
            out.dead_attempts
                .push((self.msgs[i].offset, self.msgs[i].attempts));
            How::DeadLetter(reason.into())
        } else if reason == DeadLetterReason::Expired {
            self.totals.expired += 1;
            How::Expired
        } else {
            self.totals.dropped += 1;
            How::Dropped
        };
        self.msgs[i].place = Place::Removed(how);
        out.removed.push((self.msgs[i].offset, how));
    }

    /// The retry delay after `attempts` deliveries, by doubling.
    pub(super) fn backoff(&self, attempts: u32) -> u64 {
        let base = self.options.retry_delay_ms;
        match self.options.retry_backoff {
            Backoff::Fixed => base,
            Backoff::Exponential => {
                let cap = self.options.retry_delay_max_ms.max(base);
                let mut delay = base;
                for _ in 1..attempts {
                    if delay >= cap {
                        break;
                    }
                    delay *= 2;
                }
                delay.min(cap)
            }
        }
    }

    /// Which of `items` (id, size) are duplicates, or `Err` if reject-publish
    /// refuses the send.
    pub(super) fn admit(&mut self, items: &[(String, u32)], now: i64) -> Result<Vec<bool>, ()> {
        let mut duplicate = vec![false; items.len()];
        if self.options.dedup_window_ms.is_some() {
            let mut seen: Vec<&str> = Vec::new();
            for (i, (id, _)) in items.iter().enumerate() {
                duplicate[i] = self.dedup.get(id).is_some_and(|until| *until > now)
                    || seen.contains(&id.as_str());
                seen.push(id);
            }
        }
        let new_count = duplicate.iter().filter(|d| !**d).count() as u64;
        let new_bytes: u64 = items
            .iter()
            .zip(&duplicate)
            .filter(|(_, d)| !**d)
            .map(|((_, s), _)| u64::from(*s))
            .sum();
        if self.options.overflow == Overflow::RejectPublish && new_count > 0 {
            let ready = self.count(Msg::ready);
            if self
                .options
                .max_length
                .is_some_and(|max| ready + new_count > max)
            {
                return Err(());
            }
            if self
                .options
                .max_length_bytes
                .is_some_and(|max| self.ready_bytes() + new_bytes > max)
            {
                return Err(());
            }
        }
        if let Some(window) = self.options.dedup_window_ms {
            for ((id, _), dup) in items.iter().zip(&duplicate) {
                if !dup {
                    self.dedup.insert(id.clone(), now + window as i64);
                }
            }
        }
        self.totals.duplicates += items.len() as u64 - new_count;
        Ok(duplicate)
    }

    pub(super) fn commit(&mut self, msgs: Vec<Msg>) -> Outcome {
        let mut out = Outcome::default();
        self.totals.sent += msgs.len() as u64;
        self.msgs.extend(msgs);
        if self.options.overflow == Overflow::RejectPublish {
            return out;
        }
        loop {
            let over_count = self
                .options
                .max_length
                .is_some_and(|max| self.count(Msg::ready) > max);
            let over_bytes = self
                .options
                .max_length_bytes
                .is_some_and(|max| self.ready_bytes() > max);
            if !(over_count || over_bytes) {
                break;
            }
            let Some(&head) = self.delivery_order().first() else {
                break;
            };
            if self.options.overflow == Overflow::DeadLetter {
                self.remove(head, DeadLetterReason::Overflow, &mut out);
            } else {
                self.totals.dropped += 1;
                self.msgs[head].place = Place::Removed(How::Dropped);
                out.removed.push((self.msgs[head].offset, How::Dropped));
            }
        }
        out.normalised()
    }

    /// Leases (lease ids are filled in by the caller from what the state handed out);
    /// returns the leases in order, and the outcome.
    pub(super) fn lease(
        &mut self,
        max: usize,
        visibility: u64,
        now: i64,
    ) -> (Vec<(u64, u32)>, Outcome) {
        let mut out = Outcome::default();
        let deadline = now + visibility as i64;
        for i in self.delivery_order() {
            if out.delivered.len() >= max {
                break;
            }
            if self.msgs[i].expired(now) {
                self.remove(i, DeadLetterReason::Expired, &mut out);
                continue;
            }
            if self.busy(self.msgs[i].group) {
                self.msgs[i].place = Place::Ready { parked: true };
                continue;
            }
            let m = &mut self.msgs[i];
            if m.attempts > 0 {
                self.totals.redelivered += 1;
            }
            m.attempts += 1;
            m.place = Place::Leased {
                lease_id: 0,
                deadline,
            };
            out.delivered.push((m.offset, m.attempts));
        }
        (out.delivered.clone(), out.normalised())
    }

    /// The index of the message currently leased under this receipt.
    pub(super) fn current(&self, offset: u64, lease_id: u64) -> Option<usize> {
        self.index(offset).filter(
            |&i| matches!(self.msgs[i].place, Place::Leased { lease_id: l, .. } if l == lease_id),
        )
    }

    pub(super) fn give_back(
        &mut self,
        i: usize,
        requeue: bool,
        delay: Option<u64>,
        now: i64,
        out: &mut Outcome,
    ) {
        if !requeue {
            self.remove(i, DeadLetterReason::Rejected, out);
        } else if self
            .options
            .max_deliveries
            .is_some_and(|max| self.msgs[i].attempts >= max)
        {
            self.remove(i, DeadLetterReason::MaxDeliveries, out);
        } else {
            let delay = delay.unwrap_or_else(|| self.backoff(self.msgs[i].attempts));
            let m = &mut self.msgs[i];
            if delay == 0 {
                m.place = Place::Ready { parked: false };
            } else {
                let due = now + delay as i64;
                m.place = Place::Delayed { due };
                out.retries.push((m.offset, m.attempts, due));
            }
        }
        self.unpark();
    }

    pub(super) fn tick(&mut self, now: i64) -> Outcome {
        let mut out = Outcome::default();
        // Delays that passed, by (due, offset).
        let mut due: Vec<(i64, u64, usize)> = (0..self.msgs.len())
            .filter_map(|i| match self.msgs[i].place {
                Place::Delayed { due } if due <= now => Some((due, self.msgs[i].offset, i)),
                _ => None,
            })
            .collect();
        due.sort_unstable();
        for (_, _, i) in due {
            if self.msgs[i].expired(now) {
                self.remove(i, DeadLetterReason::Expired, &mut out);
            } else {
                self.msgs[i].place = Place::Ready { parked: false };
            }
        }
        self.unpark();
        // Leases that ran out, by (deadline, offset).
        let mut lapsed: Vec<(i64, u64, usize)> = (0..self.msgs.len())
            .filter_map(|i| match self.msgs[i].place {
                Place::Leased { deadline, .. } if deadline <= now => {
                    Some((deadline, self.msgs[i].offset, i))
                }
                _ => None,
            })
            .collect();
        lapsed.sort_unstable();
        for (_, _, i) in lapsed {
            self.give_back(i, true, None, now, &mut out);
        }
        // Expired messages at the head of each priority.
        for priority in 0..=self.options.max_priority {
            loop {
                let head = (0..self.msgs.len())
                    .filter(|&i| {
                        self.msgs[i].place == Place::Ready { parked: false }
                            && self.msgs[i].priority == priority
                    })
                    .min_by_key(|&i| self.msgs[i].offset);
                match head {
                    Some(i) if self.msgs[i].expired(now) => {
                        self.remove(i, DeadLetterReason::Expired, &mut out);
                    }
                    _ => break,
                }
            }
        }
        out.normalised()
    }

    /// What replay must rebuild: leases are gone (the messages ready, their
    /// deliveries counted), passed delays are ready, groups waiting for a retry
    /// still park their other ready messages. Every counter is carried by a record
    /// (duplicates too), so all of them survive.
    pub(super) fn restart(&mut self, now: i64) {
        for m in &mut self.msgs {
            match m.place {
                Place::Leased { .. } => m.place = Place::Ready { parked: false },
                Place::Delayed { due } if due <= now => m.place = Place::Ready { parked: false },
                _ => {}
            }
        }
        for i in 0..self.msgs.len() {
            if self.msgs[i].ready() {
                let parked = self.busy(self.msgs[i].group);
                self.msgs[i].place = Place::Ready { parked };
            }
        }
    }
}
