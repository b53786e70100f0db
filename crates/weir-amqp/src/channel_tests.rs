//! The channel machine, driven method by method with no session, broker or socket.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::*;
use crate::codes::NOT_IMPLEMENTED;

/// A machine whose deliveries are remembered by a number and publishes by a name.
type Machine = ChannelMachine<u32, &'static str>;

fn consumer(tag: &str) -> Arc<str> {
    Arc::from(tag)
}

fn tags<D>(settled: &Settled<D>) -> Vec<u64> {
    settled.deliveries.iter().map(|(t, _)| *t).collect()
}

fn now<D>(acked: Acked<D>) -> Settled<D> {
    match acked {
        Acked::Now(s) => s,
        Acked::Held => panic!("the ack was held"),
    }
}

#[test]
fn tags_follow_rabbitmqs_rules() {
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

#[test]
fn an_unknown_tag_is_a_406_and_names_the_tag() {
    let mut m = Machine::default();
    let e = m.settle(7, false).err().expect("unknown tag");
    assert_eq!((e.connection, e.code), (false, PRECONDITION_FAILED));
    assert_eq!(e.text, "unknown delivery tag 7");
    // A no-ack delivery is not waiting for an ack either.
    let tag = m.deliver_no_ack();
    assert_eq!(m.ack(tag, false).err().unwrap().code, PRECONDITION_FAILED);
}

#[test]
fn acks_give_credit_back_to_the_consumer_and_the_channel() {
    let mut m = Machine::default();
    assert_eq!(m.qos(2, false), Qos::NewConsumers);
    assert_eq!(m.qos(10, true), Qos::Shared(Some(10)));
    assert_eq!(
        m.consumer_credit(false),
        ConsumerCredit {
            own: Some(2),
            shared: true
        }
    );
    assert_eq!(
        m.consumer_credit(true),
        ConsumerCredit {
            own: None,
            shared: false
        },
        "a no-ack consumer takes no credit"
    );
    let a1 = m.deliver(Some(consumer("a")), 10);
    let a2 = m.deliver(Some(consumer("a")), 11);
    let got = m.deliver(None, 12);
    let b1 = m.deliver(Some(consumer("b")), 13);
    assert_eq!((a1, a2, got, b1), (1, 2, 3, 4));
    let s = now(m.ack(4, true).unwrap());
    assert_eq!(s.deliveries, vec![(1, 10), (2, 11), (3, 12), (4, 13)]);
    assert_eq!(
        s.credit,
        CreditBack {
            consumers: vec![(Arc::from("a"), 2), (Arc::from("b"), 1)],
            // basic.get holds no credit.
            shared: 3,
        }
    );
    // Without a global prefetch, nothing goes to the channel.
    assert_eq!(m.qos(0, true), Qos::Shared(None));
    m.deliver(Some(consumer("a")), 14);
    let s = now(m.ack(5, false).unwrap());
    assert_eq!(s.credit.shared, 0);
    assert_eq!(s.credit.consumers, vec![(Arc::from("a"), 1)]);
}

#[test]
fn undelivered_messages_give_back_what_they_took() {
    let mut m = Machine::default();
    m.qos(5, true);
    let a: Arc<str> = Arc::from("a");
    assert_eq!(
        m.undelivered(&a, false, 3),
        CreditBack {
            consumers: vec![(a.clone(), 3)],
            shared: 3
        }
    );
    assert_eq!(m.undelivered(&a, true, 3), CreditBack::default());
}

#[test]
fn recover_requeues_everything_and_refuses_requeue_false() {
    let mut m = Machine::default();
    m.deliver(Some(consumer("a")), 1);
    m.deliver(None, 2);
    let e = m.recover(false).err().unwrap();
    assert_eq!(e.code, NOT_IMPLEMENTED);
    assert_eq!(tags(&m.recover(true).unwrap()), vec![1, 2]);
    assert!(m.recover(true).unwrap().deliveries.is_empty());
    // Tags go on growing after a recover.
    assert_eq!(m.deliver(None, 3), 3);
}

#[test]
fn closing_hands_back_the_unacked_and_drops_the_transaction() {
    let mut m = Machine::default();
    m.deliver(Some(consumer("a")), 1);
    m.deliver(Some(consumer("a")), 2);
    now(m.ack(1, false).unwrap());
    m.tx_select().unwrap();
    assert_eq!(m.publish("p"), None);
    assert_eq!(m.close(), vec![(2, 2)]);
    assert!(m.oldest_unacked().is_none());
    let commit = m.tx_commit().unwrap();
    assert!(commit.publishes.is_empty());
}

#[test]
fn the_oldest_unacked_delivery_is_the_lowest_tag() {
    let mut m = Machine::default();
    assert!(m.oldest_unacked().is_none());
    m.deliver(None, 7);
    m.deliver(None, 8);
    assert_eq!(m.oldest_unacked(), Some(&7));
    now(m.ack(1, false).unwrap());
    assert_eq!(m.oldest_unacked(), Some(&8));
}

#[test]
fn confirm_mode_numbers_publishes_from_one() {
    let mut m = Machine::default();
    assert_eq!(m.publish_seq(), 0, "not in confirm mode");
    m.confirm_select().unwrap();
    assert_eq!((m.publish_seq(), m.publish_seq()), (1, 2));
    // Selecting again does not start over.
    m.confirm_select().unwrap();
    assert_eq!(m.publish_seq(), 3);
    assert_eq!(m.publish("p"), Some("p"), "confirmed publishes go at once");
}

#[test]
fn confirms_and_transactions_exclude_each_other() {
    let mut m = Machine::default();
    m.confirm_select().unwrap();
    let e = m.tx_select().err().unwrap();
    assert_eq!((e.connection, e.code), (false, PRECONDITION_FAILED));
    assert_eq!(
        e.text,
        "a channel in confirm mode cannot be made transactional"
    );
    let mut m = Machine::default();
    m.tx_select().unwrap();
    let e = m.confirm_select().err().unwrap();
    assert_eq!(e.code, PRECONDITION_FAILED);
    assert_eq!(
        e.text,
        "a transactional channel cannot be put in confirm mode"
    );
    assert_eq!(m.publish_seq(), 0);
}

#[test]
fn commit_and_rollback_need_tx_select() {
    let mut m = Machine::default();
    for e in [m.tx_commit().err().unwrap(), m.tx_rollback().err().unwrap()] {
        assert_eq!((e.connection, e.code), (false, PRECONDITION_FAILED));
        assert_eq!(e.text, "channel is not transactional");
    }
    m.confirm_select().unwrap();
    assert!(m.tx_commit().is_err(), "confirm mode is not a transaction");
}

#[test]
fn a_transaction_holds_publishes_and_acks_until_commit() {
    let mut m = Machine::default();
    m.deliver(Some(consumer("a")), 1);
    m.deliver(Some(consumer("a")), 2);
    m.deliver(Some(consumer("a")), 3);
    m.tx_select().unwrap();
    assert_eq!(m.publish("one"), None);
    assert_eq!(m.publish("two"), None);
    assert!(matches!(m.ack(1, false), Ok(Acked::Held)));
    // Held unchecked: the tag is checked when the commit settles it.
    assert!(matches!(m.ack(99, false), Ok(Acked::Held)));
    // A nack is not held.
    assert_eq!(tags(&m.settle(3, false).unwrap()), vec![3]);
    let commit = m.tx_commit().unwrap();
    assert_eq!(commit.publishes, vec!["one", "two"]);
    assert_eq!(commit.acks, vec![(1, false), (99, false)]);
    assert_eq!(tags(&m.settle(1, false).unwrap()), vec![1]);
    assert!(m.settle(99, false).is_err());
    // Still transactional, and empty after the commit.
    assert_eq!(m.publish("three"), None);
    m.tx_rollback().unwrap();
    let commit = m.tx_commit().unwrap();
    assert!(commit.publishes.is_empty() && commit.acks.is_empty());
    // tx.select again keeps what is held.
    assert_eq!(m.publish("four"), None);
    m.tx_select().unwrap();
    assert_eq!(m.tx_commit().unwrap().publishes, vec!["four"]);
}

#[test]
fn flow_starts_on() {
    let mut m = Machine::default();
    assert!(m.flow());
    m.set_flow(false);
    assert!(!m.flow());
    m.set_flow(true);
    assert!(m.flow());
}

#[test]
fn a_clean_batch_is_one_ack_multiple() {
    let one = |ack, tag, multiple| Confirm { ack, tag, multiple };
    assert_eq!(confirms(&[3, 4, 5], &[]), vec![one(true, 5, true)]);
    assert_eq!(
        confirms(&[3, 5], &[]),
        vec![one(true, 3, false), one(true, 5, false)]
    );
    assert_eq!(
        confirms(&[3, 5], &[4]),
        vec![
            one(true, 3, false),
            one(true, 5, false),
            one(false, 4, false)
        ]
    );
    assert_eq!(confirms(&[], &[4]), vec![one(false, 4, false)]);
    assert!(confirms(&[], &[]).is_empty());
}

/// One step of the acks model test.
#[derive(Clone, Debug)]
enum Op {
    /// A delivery, to a consumer (`Some`) or by `basic.get`, waiting for its ack
    /// unless `no_ack`.
    Deliver {
        consumer: Option<u8>,
        no_ack: bool,
    },
    Ack {
        tag: u64,
        multiple: bool,
    },
    Nack {
        tag: u64,
        multiple: bool,
    },
    Recover,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (proptest::option::of(0u8..3), any::<bool>())
            .prop_map(|(consumer, no_ack)| Op::Deliver { consumer, no_ack }),
        2 => (0u64..25, any::<bool>()).prop_map(|(tag, multiple)| Op::Ack { tag, multiple }),
        1 => (0u64..25, any::<bool>()).prop_map(|(tag, multiple)| Op::Nack { tag, multiple }),
        1 => Just(Op::Recover),
    ]
}

proptest! {
    /// Acks, nacks and recovers against a naive model (a map of waiting tags): the
    /// same deliveries settle, an unknown tag fails exactly when the model says
    /// so, each settled delivery gives back one credit to its consumer, and
    /// whatever is left comes back on close.
    #[test]
    fn acks_match_a_model(ops in proptest::collection::vec(op(), 0..80), global in any::<bool>()) {
        let mut m: ChannelMachine<u64, ()> = ChannelMachine::default();
        m.qos(if global { 3 } else { 0 }, true);
        let mut waiting: BTreeMap<u64, Option<u8>> = BTreeMap::new();
        let mut next = 1u64;
        let mut settled_once = BTreeSet::new();
        for op in ops {
            let (expected, got) = match op {
                Op::Deliver { consumer, no_ack } => {
                    let tag = if no_ack {
                        m.deliver_no_ack()
                    } else {
                        let c = consumer.map(|c| Arc::from(c.to_string()));
                        m.deliver(c, next)
                    };
                    prop_assert_eq!(tag, next);
                    if !no_ack {
                        waiting.insert(tag, consumer);
                    }
                    next += 1;
                    continue;
                }
                Op::Ack { tag, multiple } | Op::Nack { tag, multiple } => {
                    let expected: Option<Vec<u64>> = if multiple {
                        Some(waiting.keys().copied().filter(|t| tag == 0 || *t <= tag).collect())
                    } else {
                        waiting.contains_key(&tag).then(|| vec![tag])
                    };
                    let got = match op {
                        Op::Ack { .. } => m.ack(tag, multiple).map(now),
                        _ => m.settle(tag, multiple),
                    };
                    (expected, got)
                }
                Op::Recover => (Some(waiting.keys().copied().collect()), m.recover(true)),
            };
            match (expected, got) {
                (None, Err(e)) => prop_assert_eq!(e.code, PRECONDITION_FAILED),
                (Some(want), Ok(s)) => {
                    prop_assert_eq!(tags(&s), want.clone());
                    // Each delivery carries what was given to it.
                    for (tag, d) in &s.deliveries {
                        prop_assert_eq!(tag, d);
                        prop_assert!(settled_once.insert(*tag), "settled twice");
                    }
                    let mut per_consumer: BTreeMap<String, usize> = BTreeMap::new();
                    for t in &want {
                        if let Some(c) = waiting.remove(t).expect("waiting") {
                            *per_consumer.entry(c.to_string()).or_default() += 1;
                        }
                    }
                    let mut credit: BTreeMap<String, usize> = BTreeMap::new();
                    for (c, n) in &s.credit.consumers {
                        *credit.entry(c.to_string()).or_default() += n;
                    }
                    let shared: usize = per_consumer.values().sum();
                    prop_assert_eq!(credit, per_consumer);
                    prop_assert_eq!(s.credit.shared, if global { shared } else { 0 });
                }
                (want, got) => prop_assert!(false, "model {:?}, machine {:?}", want, got.map(|s| tags(&s))),
            }
        }
        let left: Vec<u64> = m.close().into_iter().map(|(t, _)| t).collect();
        prop_assert_eq!(left, waiting.keys().copied().collect::<Vec<_>>());
    }

    /// Publishes numbered 1..=n are answered in batches, in order, some refused:
    /// a client that applies the confirm frames to its set of unconfirmed
    /// publishes (an ack `multiple` confirms everything up to its tag) sees each
    /// publish confirmed exactly once, acked exactly when it was not refused.
    #[test]
    fn confirm_frames_confirm_each_publish_once(
        publishes in proptest::collection::vec((any::<bool>(), any::<bool>()), 1..80),
    ) {
        let mut m: ChannelMachine<(), ()> = ChannelMachine::default();
        m.confirm_select().unwrap();
        let mut unconfirmed = BTreeSet::new();
        let mut seen: BTreeMap<u64, bool> = BTreeMap::new();
        let mut expected = BTreeMap::new();
        let mut batch = (Vec::new(), Vec::new());
        let count = publishes.len();
        for (i, (refused, ends_batch)) in publishes.into_iter().enumerate() {
            let seq = m.publish_seq();
            unconfirmed.insert(seq);
            expected.insert(seq, !refused);
            if refused { batch.1.push(seq) } else { batch.0.push(seq) }
            if ends_batch || i + 1 == count {
                for c in confirms(&batch.0, &batch.1) {
                    let covered: Vec<u64> = if c.multiple {
                        unconfirmed.range(..=c.tag).copied().collect()
                    } else {
                        prop_assert!(unconfirmed.contains(&c.tag), "confirmed twice: {}", c.tag);
                        vec![c.tag]
                    };
                    for t in covered {
                        unconfirmed.remove(&t);
                        prop_assert!(seen.insert(t, c.ack).is_none());
                    }
                }
                batch = (Vec::new(), Vec::new());
            }
        }
        prop_assert!(unconfirmed.is_empty());
        prop_assert_eq!(seen, expected);
    }
}
