//! A channel's delivery bookkeeping, as plain data (sans-IO, like
//! [`crate::connection`]): the delivery tags it hands out and the deliveries still
//! waiting for their ack, and the rules of `basic.ack` / `nack` / `reject` over them.
//! The session keeps one per channel and turns what it takes out into broker acks
//! and nacks.

use std::collections::BTreeMap;

use crate::codes::{Exception, PRECONDITION_FAILED};

/// Delivery tags of one channel: numbered from 1 in delivery order; `T` is what
/// the session needs to settle a delivery.
pub(crate) struct Tags<T> {
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
    pub(crate) fn track(&mut self, pending: Option<T>) -> u64 {
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
    pub(crate) fn take(&mut self, tag: u64, multiple: bool) -> Result<Vec<(u64, T)>, Exception> {
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
    pub(crate) fn oldest(&self) -> Option<&T> {
        self.unacked.values().next()
    }

    /// Every delivery still waiting (recover, or the channel going).
    pub(crate) fn take_all(&mut self) -> Vec<(u64, T)> {
        std::mem::take(&mut self.unacked).into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn acks_follow_rabbitmqs_rules() {
        let mut t = Tags::default();
        for i in 0..5 {
            assert_eq!(t.track(Some(i)), i + 1);
        }
        assert_eq!(t.track(None), 6, "no-ack deliveries take a tag too");
        assert_eq!(t.take(2, false).unwrap(), vec![(2, 1)]);
        assert_eq!(t.take(2, false).unwrap_err().code, PRECONDITION_FAILED);
        assert_eq!(t.take(6, false).unwrap_err().code, PRECONDITION_FAILED);
        assert_eq!(t.take(4, true).unwrap(), vec![(1, 0), (3, 2), (4, 3)]);
        // multiple with nothing left below is fine, and tag 0 means all.
        assert!(t.take(4, true).unwrap().is_empty());
        assert_eq!(t.take(0, true).unwrap(), vec![(5, 4)]);
        assert!(t.take_all().is_empty());
    }

    proptest! {
        /// Whatever the acks, each delivery is settled at most once, and every one
        /// is settled by the end.
        #[test]
        fn every_delivery_settles_once(
            ops in proptest::collection::vec((0u64..40, any::<bool>()), 0..60),
        ) {
            let mut t = Tags::default();
            for i in 0..30u64 {
                t.track(Some(i));
            }
            let mut settled = Vec::new();
            for (tag, multiple) in ops {
                if let Ok(taken) = t.take(tag, multiple) {
                    settled.extend(taken.into_iter().map(|(tag, _)| tag));
                }
            }
            settled.extend(t.take_all().into_iter().map(|(tag, _)| tag));
            settled.sort_unstable();
            prop_assert_eq!(settled, (1..=30).collect::<Vec<_>>());
        }
    }
}
