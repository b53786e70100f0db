//! Length limits and what leaves the queue for elsewhere: `max_length` /
//! `max_length_bytes` with their overflow policies, and dead letters in transit.

use crate::api::{DeadLetterReason, Overflow};
use crate::error::{BrokerError, Result};
use crate::queue::entry::Entry;
use crate::queue::record::{SettleReason, StateOp};

use super::{DEAD_LETTER_RETRY_MS, Effect, QueueState};

/// What becomes of a send [`QueueState::admit`] refused ([`QueueState::refuse_send`]).
#[derive(Debug)]
pub(crate) struct Refusal {
    /// What the sender is told: `Ok` means its messages are taken care of (each
    /// answered as no duplicate), and it must not send them again.
    pub(crate) answer: Result<()>,
    /// Copy the refused messages to the dead-letter queue with reason `maxlen`, at
    /// most once: nothing of them is kept here and nothing is reported back.
    pub(crate) dead_letter: bool,
}

impl QueueState {
    /// Whether messages refused with `error` go to the dead-letter queue: with
    /// `reject-publish-dlx`, when the queue is full and has a dead-letter queue or
    /// exchange, as RabbitMQ does.
    pub(super) fn dead_letters_refused(&self, error: &BrokerError) -> bool {
        self.refuses_to_dead_letters(error) && self.options.dead_letters()
    }

    fn refuses_to_dead_letters(&self, error: &BrokerError) -> bool {
        self.options.overflow == Overflow::RejectPublishDlx
            && matches!(error, BrokerError::QueueFull { .. })
    }

    /// How a send [`QueueState::admit`] refused with `error` is answered, and
    /// whether its messages are dead-lettered (`reject-publish-dlx`).
    /// `dead_letters_only`: every message of it is a dead letter. Those go on down
    /// the dead-letter chain, which answers for them: their sender (a queue
    /// dead-lettering them) must not retry, or it would copy them again.
    pub(crate) fn refuse_send(&self, error: BrokerError, dead_letters_only: bool) -> Refusal {
        let dead_letter = self.dead_letters_refused(&error);
        let answer = if dead_letters_only && self.refuses_to_dead_letters(&error) {
            Ok(())
        } else {
            Err(error)
        };
        Refusal {
            answer,
            dead_letter,
        }
    }

    pub(super) fn enforce_length(&mut self) -> Vec<Effect> {
        let mut dropped = Vec::new();
        let mut dead = Vec::new();
        if self.options.overflow.rejects() {
            return Vec::new();
        }
        // RabbitMQ dead-letters the dropped head (reason `maxlen`) when the queue
        // has a dead-letter exchange; weir's `dead-letter` policy does it for a
        // dead-letter queue too.
        let dead_letters = match self.options.overflow {
            Overflow::DeadLetter => self.options.dead_letters(),
            Overflow::DropHead => self.options.dead_letter_exchange.is_some(),
            Overflow::RejectPublish | Overflow::RejectPublishDlx => false,
        };
        loop {
            let over_count = self
                .options
                .max_length
                .is_some_and(|max| self.ready_count + self.parked_count > max);
            let over_bytes = self
                .options
                .max_length_bytes
                .is_some_and(|max| self.ready_bytes > max);
            if !(over_count || over_bytes) {
                break;
            }
            let Some(head) = self.pop_head() else { break };
            if dead_letters {
                dead.push((head, DeadLetterReason::Overflow));
            } else {
                self.let_go(&head);
                dropped.push(head.offset);
            }
        }
        let mut effects = Vec::new();
        if !dropped.is_empty() {
            self.totals.dropped += dropped.len() as u64;
            effects.push(Effect::Persist(StateOp::Settled(
                SettleReason::Dropped,
                dropped,
            )));
        }
        effects.extend(self.dead_letter_or_drop(dead));
        effects
    }

    /// Sends `items` to the dead-letter queue if the queue has one, else drops them
    /// (counting expiries as expired).
    pub(super) fn dead_letter_or_drop(
        &mut self,
        items: Vec<(Entry, DeadLetterReason)>,
    ) -> Vec<Effect> {
        if items.is_empty() {
            return Vec::new();
        }
        if self.options.dead_letters() {
            for (entry, reason) in &items {
                if *reason == DeadLetterReason::Expired {
                    self.totals.expired += 1;
                }
                self.in_transit
                    .insert(entry.offset, (*entry, Some(*reason)));
            }
            return vec![Effect::DeadLetter(items)];
        }
        let mut expired = Vec::new();
        let mut dropped = Vec::new();
        for (entry, reason) in items {
            self.let_go(&entry);
            if reason == DeadLetterReason::Expired {
                expired.push(entry.offset);
            } else {
                dropped.push(entry.offset);
            }
        }
        let mut effects = Vec::new();
        if !expired.is_empty() {
            self.totals.expired += expired.len() as u64;
            effects.push(Effect::Persist(StateOp::Settled(
                SettleReason::Expired,
                expired,
            )));
        }
        if !dropped.is_empty() {
            self.totals.dropped += dropped.len() as u64;
            effects.push(Effect::Persist(StateOp::Settled(
                SettleReason::Dropped,
                dropped,
            )));
        }
        effects
    }

    /// Messages copied elsewhere (dead-lettered, redriven, moved) are gone from
    /// here; returns the records to persist. Expired messages copied to the
    /// dead-letter queue are recorded apart (`ExpiredDeadLettered`), so replay
    /// counts them both expired and dead-lettered.
    pub(crate) fn finish_transit(&mut self, offsets: &[u64], reason: SettleReason) -> Vec<Effect> {
        if offsets.is_empty() {
            return Vec::new();
        }
        let mut settled = Vec::with_capacity(offsets.len());
        let mut expired = Vec::new();
        for offset in offsets {
            match self.in_transit.remove(offset) {
                Some((entry, why)) => {
                    self.let_go(&entry);
                    if reason == SettleReason::DeadLettered
                        && why == Some(DeadLetterReason::Expired)
                    {
                        expired.push(*offset);
                    } else {
                        settled.push(*offset);
                    }
                }
                None => settled.push(*offset),
            }
        }
        if matches!(
            reason,
            SettleReason::DeadLettered | SettleReason::ExpiredDeadLettered
        ) {
            self.totals.dead_lettered += offsets.len() as u64;
        }
        [
            (settled, reason),
            (expired, SettleReason::ExpiredDeadLettered),
        ]
        .into_iter()
        .filter(|(offsets, _)| !offsets.is_empty())
        .map(|(offsets, reason)| Effect::Persist(StateOp::Settled(reason, offsets)))
        .collect()
    }

    /// Copying failed. A redrive's messages are ready again here; dead letters
    /// try again after [`DEAD_LETTER_RETRY_MS`] (they are not deliverable: an
    /// expired message must not be delivered, a rejected one not retried), and
    /// their expiry is not counted again.
    pub(crate) fn abort_transit(&mut self, offsets: &[u64], now: i64) {
        for offset in offsets {
            match self.in_transit.remove(offset) {
                Some((entry, Some(reason))) => {
                    self.dead_letter_retry
                        .insert((now + DEAD_LETTER_RETRY_MS, entry.offset), (entry, reason));
                }
                Some((entry, None)) => self.push_ready(entry),
                None => {}
            }
        }
    }
}
