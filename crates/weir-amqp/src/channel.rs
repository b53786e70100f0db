//! The protocol state of one channel, as a sans-IO state machine (house style
//! §2.2, like [`crate::connection`]): plain data whose methods take a client's
//! method (or a helper task's report) and return what the session must do. No
//! tokio, no broker, no socket, so every rule here is unit- and property-tested.
//!
//! It owns:
//! * **delivery tags** and the deliveries waiting for their ack, with RabbitMQ's
//!   rules for `basic.ack` / `nack` / `reject` (`multiple`, tag 0, an unknown tag
//!   is 406), `basic.recover`, and what a closing channel requeues;
//! * **prefetch credit** (`basic.qos`, per consumer and `global`): which credit a
//!   new consumer takes, and which credit each settled delivery gives back
//!   ([`CreditBack`]);
//! * **publisher confirms** (`confirm.select`, the sequence numbers, and how a
//!   batch's outcomes become `basic.ack` / `nack` frames: [`confirms`]);
//! * **transactions** (`tx.select` / `commit` / `rollback`, the publishes and acks
//!   a transaction holds, and the 406s RabbitMQ gives);
//! * **`channel.flow`**: whether the channel's consumers may receive.
//!
//! The session (`session/`) keeps one per channel and performs what it returns:
//! it gives credit back to the consumers' semaphores, hands settlements and
//! publishes to the channel's worker, and writes the frames. What the machine
//! keeps of a delivery (`D`: the queue and broker receipt) and of a publish (`P`)
//! is the session's business.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::codes::{Exception, NOT_IMPLEMENTED, PRECONDITION_FAILED};

/// Delivery tags of one channel: numbered from 1 in delivery order; `T` is what
/// the session needs to settle a delivery.
struct Tags<T> {
    next: u64,
    unacked: BTreeMap<u64, T>,
}

impl<T> Default for Tags<T> {
    fn default() -> Self {
        Tags {
            next: 1,
            unacked: BTreeMap::new(),
        }
    }
}

impl<T> Tags<T> {
    /// The next delivery's tag; it waits for its ack unless `pending` is `None`
    /// (no-ack deliveries and direct replies).
    fn track(&mut self, pending: Option<T>) -> u64 {
        let tag = self.next;
        self.next += 1;
        if let Some(p) = pending {
            self.unacked.insert(tag, p);
        }
        tag
    }

    /// What `basic.ack` / `nack` with `tag` and `multiple` settles: with
    /// `multiple`, every waiting delivery up to `tag` (all of them for tag 0);
    /// else that one, and an unknown tag is a channel error (406), as in RabbitMQ.
    fn take(&mut self, tag: u64, multiple: bool) -> Result<Vec<(u64, T)>, Exception> {
        if multiple {
            if tag == 0 || tag == u64::MAX {
                return Ok(self.take_all());
            }
            let rest = self.unacked.split_off(&(tag + 1));
            return Ok(std::mem::replace(&mut self.unacked, rest)
                .into_iter()
                .collect());
        }
        match self.unacked.remove(&tag) {
            Some(p) => Ok(vec![(tag, p)]),
            None => Err(Exception::channel(
                PRECONDITION_FAILED,
                format!("unknown delivery tag {tag}"),
            )),
        }
    }

    /// The delivery waiting longest (tags grow with time), if any.
    fn oldest(&self) -> Option<&T> {
        self.unacked.values().next()
    }

    /// Every delivery still waiting (recover, or the channel going).
    fn take_all(&mut self) -> Vec<(u64, T)> {
        std::mem::take(&mut self.unacked).into_iter().collect()
    }
}

/// A delivery waiting for its ack: the consumer it went to (none for
/// `basic.get`), whose credit it holds, and what the session keeps of it.
struct Pending<D> {
    consumer: Option<Arc<str>>,
    delivery: D,
}

/// Publisher confirms and transactions exclude each other (406 for the second).
enum Mode<P> {
    Plain,
    /// `confirm.select`: publishes are numbered from 1.
    Confirm {
        next_seq: u64,
    },
    /// `tx.select`: publishes and acks wait for `tx.commit`.
    Tx {
        publishes: Vec<P>,
        acks: Vec<(u64, bool)>,
    },
}

/// Prefetch credit to give back to the consumers' semaphores once deliveries are
/// settled (or could not be delivered).
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct CreditBack {
    /// Per consumer tag, for consumers with a prefetch of their own (the session
    /// ignores a consumer that is gone or has none).
    pub(crate) consumers: Vec<(Arc<str>, usize)>,
    /// For the channel's `global` prefetch, when it has one.
    pub(crate) shared: usize,
}

/// Deliveries a settling method took, with the credit they give back.
pub(crate) struct Settled<D> {
    pub(crate) deliveries: Vec<(u64, D)>,
    pub(crate) credit: CreditBack,
}

/// What `basic.ack` comes to.
pub(crate) enum Acked<D> {
    /// Settle these now.
    Now(Settled<D>),
    /// Held by the transaction until `tx.commit`.
    Held,
}

/// What `basic.qos` changes.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Qos {
    /// The prefetch of consumers started from now on (`global = false`).
    NewConsumers,
    /// The channel-wide credit is replaced: this many messages, or none
    /// (`global = true`, count 0: unlimited).
    Shared(Option<u16>),
}

/// The credit a new consumer takes.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ConsumerCredit {
    /// Its own prefetch (none: unlimited).
    pub(crate) own: Option<u16>,
    /// Whether it also takes the channel-wide credit.
    pub(crate) shared: bool,
}

/// What a `tx.commit` publishes and then acks, in that order.
pub(crate) struct Commit<P> {
    pub(crate) publishes: Vec<P>,
    pub(crate) acks: Vec<(u64, bool)>,
}

/// One confirm frame: `basic.ack` (or `basic.nack` with `requeue = false`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Confirm {
    pub(crate) ack: bool,
    pub(crate) tag: u64,
    pub(crate) multiple: bool,
}

/// One channel's protocol state; see the module doc. `D` is what the session keeps
/// of a delivery waiting for its ack, `P` of a publish a transaction holds.
pub(crate) struct ChannelMachine<D, P> {
    tags: Tags<Pending<D>>,
    mode: Mode<P>,
    /// `channel.flow`: the channel's consumers may receive.
    flow: bool,
    /// Prefetch of consumers started from now on (0: unlimited).
    prefetch: u16,
    /// Channel-wide prefetch shared by its consumers (0: none).
    global_prefetch: u16,
}

impl<D, P> Default for ChannelMachine<D, P> {
    fn default() -> Self {
        ChannelMachine {
            tags: Tags::default(),
            mode: Mode::Plain,
            flow: true,
            prefetch: 0,
            global_prefetch: 0,
        }
    }
}

fn not_transactional() -> Exception {
    Exception::channel(PRECONDITION_FAILED, "channel is not transactional")
}

impl<D, P> ChannelMachine<D, P> {
    // ---- deliveries and acks ----

    /// Numbers a delivery that waits for its ack; `consumer` (none for
    /// `basic.get`) gets its credit back once it is settled.
    pub(crate) fn deliver(&mut self, consumer: Option<Arc<str>>, delivery: D) -> u64 {
        self.tags.track(Some(Pending { consumer, delivery }))
    }

    /// Numbers a delivery that waits for nothing (no-ack, direct replies).
    pub(crate) fn deliver_no_ack(&mut self) -> u64 {
        self.tags.track(None)
    }

    /// `basic.ack`: settles now, or holds it in a transaction (where the tag is
    /// checked only at commit, as weir always did).
    ///
    /// # Errors
    /// 406 for an unknown tag (without `multiple`).
    pub(crate) fn ack(&mut self, tag: u64, multiple: bool) -> Result<Acked<D>, Exception> {
        if let Mode::Tx { acks, .. } = &mut self.mode {
            acks.push((tag, multiple));
            return Ok(Acked::Held);
        }
        self.settle(tag, multiple).map(Acked::Now)
    }

    /// What an ack or nack of `tag` (with `multiple`) settles now, transaction or
    /// not: `basic.nack` and `basic.reject` (`multiple = false`) are not held by a
    /// transaction, and `tx.commit` settles its acks through here.
    ///
    /// # Errors
    /// 406 for an unknown tag (without `multiple`).
    pub(crate) fn settle(&mut self, tag: u64, multiple: bool) -> Result<Settled<D>, Exception> {
        let taken = self.tags.take(tag, multiple)?;
        Ok(self.settled(taken))
    }

    /// `basic.recover`: every waiting delivery goes back to its queue.
    ///
    /// # Errors
    /// 540 for `requeue = false`, which weir does not support.
    pub(crate) fn recover(&mut self, requeue: bool) -> Result<Settled<D>, Exception> {
        if !requeue {
            return Err(Exception::channel(
                NOT_IMPLEMENTED,
                "basic.recover with requeue=false is not supported",
            ));
        }
        let taken = self.tags.take_all();
        Ok(self.settled(taken))
    }

    /// The channel is closing: every waiting delivery, to requeue (its consumers
    /// stop, so no credit goes back), and the transaction's publishes are dropped.
    pub(crate) fn close(&mut self) -> Vec<(u64, D)> {
        if let Mode::Tx { publishes, acks } = &mut self.mode {
            publishes.clear();
            acks.clear();
        }
        strip(self.tags.take_all())
    }

    /// How many deliveries wait for their ack.
    pub(crate) fn unacked_count(&self) -> usize {
        self.tags.unacked.len()
    }

    /// Its prefetch: the channel-wide one if set, else that of new consumers (0:
    /// unlimited).
    pub(crate) fn prefetch(&self) -> u16 {
        if self.global_prefetch > 0 {
            self.global_prefetch
        } else {
            self.prefetch
        }
    }

    /// The delivery waiting longest for its ack (for the consumer timeout).
    pub(crate) fn oldest_unacked(&self) -> Option<&D> {
        self.tags.oldest().map(|p| &p.delivery)
    }

    fn settled(&self, taken: Vec<(u64, Pending<D>)>) -> Settled<D> {
        let mut credit = CreditBack::default();
        for (_, p) in &taken {
            if let Some(consumer) = &p.consumer {
                match credit.consumers.last_mut() {
                    Some((last, n)) if last == consumer => *n += 1,
                    _ => credit.consumers.push((consumer.clone(), 1)),
                }
                if self.global_prefetch > 0 {
                    credit.shared += 1;
                }
            }
        }
        Settled {
            deliveries: strip(taken),
            credit,
        }
    }

    // ---- prefetch credit ----

    /// `basic.qos`.
    pub(crate) fn qos(&mut self, prefetch_count: u16, global: bool) -> Qos {
        if global {
            self.global_prefetch = prefetch_count;
            Qos::Shared((prefetch_count > 0).then_some(prefetch_count))
        } else {
            self.prefetch = prefetch_count;
            Qos::NewConsumers
        }
    }

    /// The credit a consumer starting now takes: none with `no_ack`.
    pub(crate) fn consumer_credit(&self, no_ack: bool) -> ConsumerCredit {
        ConsumerCredit {
            own: (!no_ack && self.prefetch > 0).then_some(self.prefetch),
            shared: !no_ack && self.global_prefetch > 0,
        }
    }

    /// `count` deliveries a consumer took from its queue could not be delivered
    /// (its consumer or channel went, or flow is off): the credit they took.
    pub(crate) fn undelivered(
        &self,
        consumer: &Arc<str>,
        no_ack: bool,
        count: usize,
    ) -> CreditBack {
        if no_ack || count == 0 {
            return CreditBack::default();
        }
        CreditBack {
            consumers: vec![(consumer.clone(), count)],
            shared: if self.global_prefetch > 0 { count } else { 0 },
        }
    }

    // ---- flow ----

    /// `channel.flow`.
    pub(crate) fn set_flow(&mut self, active: bool) {
        self.flow = active;
    }

    /// Whether the channel's consumers may receive.
    pub(crate) fn flow(&self) -> bool {
        self.flow
    }

    // ---- publishes: confirms and transactions ----

    /// `confirm.select`.
    ///
    /// # Errors
    /// 406 on a transactional channel.
    pub(crate) fn confirm_select(&mut self) -> Result<(), Exception> {
        match self.mode {
            Mode::Tx { .. } => Err(Exception::channel(
                PRECONDITION_FAILED,
                "a transactional channel cannot be put in confirm mode",
            )),
            Mode::Confirm { .. } => Ok(()),
            Mode::Plain => {
                self.mode = Mode::Confirm { next_seq: 1 };
                Ok(())
            }
        }
    }

    /// A publish's confirm sequence number, from 1 (0: not in confirm mode).
    pub(crate) fn publish_seq(&mut self) -> u64 {
        match &mut self.mode {
            Mode::Confirm { next_seq } => {
                *next_seq += 1;
                *next_seq - 1
            }
            _ => 0,
        }
    }

    /// A publish: back to go now, or held by the transaction.
    pub(crate) fn publish(&mut self, publish: P) -> Option<P> {
        match &mut self.mode {
            Mode::Tx { publishes, .. } => {
                publishes.push(publish);
                None
            }
            _ => Some(publish),
        }
    }

    /// `tx.select` (again: nothing changes).
    ///
    /// # Errors
    /// 406 on a channel in confirm mode.
    pub(crate) fn tx_select(&mut self) -> Result<(), Exception> {
        match self.mode {
            Mode::Confirm { .. } => Err(Exception::channel(
                PRECONDITION_FAILED,
                "a channel in confirm mode cannot be made transactional",
            )),
            Mode::Tx { .. } => Ok(()),
            Mode::Plain => {
                self.mode = Mode::Tx {
                    publishes: Vec::new(),
                    acks: Vec::new(),
                };
                Ok(())
            }
        }
    }

    /// `tx.commit`: what the transaction held; the channel stays transactional.
    /// The session publishes, then settles the acks with [`Self::settle`].
    ///
    /// # Errors
    /// 406 on a channel that is not transactional.
    pub(crate) fn tx_commit(&mut self) -> Result<Commit<P>, Exception> {
        match &mut self.mode {
            Mode::Tx { publishes, acks } => Ok(Commit {
                publishes: std::mem::take(publishes),
                acks: std::mem::take(acks),
            }),
            _ => Err(not_transactional()),
        }
    }

    /// `tx.rollback`: drops what the transaction held.
    ///
    /// # Errors
    /// 406 on a channel that is not transactional.
    pub(crate) fn tx_rollback(&mut self) -> Result<(), Exception> {
        match &mut self.mode {
            Mode::Tx { publishes, acks } => {
                publishes.clear();
                acks.clear();
                Ok(())
            }
            _ => Err(not_transactional()),
        }
    }
}

fn strip<D>(taken: Vec<(u64, Pending<D>)>) -> Vec<(u64, D)> {
    taken.into_iter().map(|(t, p)| (t, p.delivery)).collect()
}

/// The confirm frames for one batch of publishes, answered together: `acks` are
/// the sequence numbers the broker took, `nacks` those it refused, each in order.
/// Batches are answered in order and a batch all at once, so when nothing in it
/// was refused and its acks are contiguous, one `basic.ack multiple` up to the last
/// covers it (everything before was confirmed by earlier batches). Otherwise each
/// is acked alone, then each refused one is nacked alone.
pub(crate) fn confirms(acks: &[u64], nacks: &[u64]) -> Vec<Confirm> {
    let mut out = Vec::new();
    if let Some(&last) = acks.last() {
        let contiguous = acks.windows(2).all(|w| w[1] == w[0] + 1);
        if contiguous && nacks.is_empty() {
            out.push(Confirm {
                ack: true,
                tag: last,
                multiple: true,
            });
        } else {
            out.extend(acks.iter().map(|&tag| Confirm {
                ack: true,
                tag,
                multiple: false,
            }));
        }
    }
    out.extend(nacks.iter().map(|&tag| Confirm {
        ack: false,
        tag,
        multiple: false,
    }));
    out
}

#[cfg(test)]
#[path = "channel_tests.rs"]
mod tests;
