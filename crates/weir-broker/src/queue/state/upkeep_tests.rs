//! Unit tests of housekeeping's decisions ([`QueueState::upkeep`]), sans-IO
//! (offsets are made up): what it says to trim, move and checkpoint.

use crate::api::QueueOptions;
use crate::queue::entry::Entry;
use crate::queue::record::SHARED;
use crate::queue::state::tests::{self, QUEUE, T0};
use crate::queue::state::{Arrived, Checkpoint, LogSpan, QueueState, Upkeep};

fn entry(offset: u64) -> Entry {
    tests::entry(offset, 0, None, 1)
}

/// Admits and commits own messages at these offsets, each with its delay's end.
fn send(state: &mut QueueState, sent: &[(u64, i64)]) {
    tests::send(
        state,
        sent.iter().map(|(o, due)| (entry(*o), *due)).collect(),
        T0,
    );
}

fn span(first: u64, next: u64) -> LogSpan {
    LogSpan {
        first,
        next,
        in_flight: None,
        since_trim_ms: 0,
    }
}

fn trim(floor: u64) -> Upkeep {
    Upkeep::Trim(Checkpoint {
        floor,
        shared_below: SHARED,
        shared_sent: 0,
        dedup_ids: Vec::new(),
    })
}

#[test]
fn upkeep_trims_below_the_lowest_held_message_and_never_above_an_append_in_flight() {
    let mut state = QueueState::new(QueueOptions::default(), 1);
    send(&mut state, &[(6, 0), (5, 0)]);
    assert_eq!(state.upkeep(span(0, 10), T0), trim(5));
    assert_eq!(
        state.upkeep(span(5, 10), T0),
        Upkeep::Nothing,
        "trimmed that far already"
    );
    let in_flight = LogSpan {
        in_flight: Some(3),
        ..span(0, 10)
    };
    assert_eq!(state.upkeep(in_flight, T0), trim(3));
    state.purge();
    assert_eq!(state.upkeep(span(5, 10), T0), trim(10), "nothing held");
}

#[test]
fn upkeep_keeps_the_records_of_held_shared_messages_and_checkpoints_their_sent() {
    let mut state = QueueState::new(QueueOptions::default(), 1);
    let arrived = state.arrive(QUEUE, &[(entry(SHARED | 1), 0, "")], T0, 2, T0);
    assert!(matches!(arrived, Arrived::Taken { .. }), "{arrived:?}");
    assert_eq!(
        state.upkeep(span(0, 10), T0),
        Upkeep::Trim(Checkpoint {
            floor: 2,
            shared_below: SHARED | 1,
            shared_sent: 0,
            dedup_ids: Vec::new(),
        }),
        "not above the arrival's mark while it is held"
    );
    state.purge();
    let done = Upkeep::Trim(Checkpoint {
        floor: 10,
        shared_below: SHARED | 2,
        shared_sent: 1,
        dedup_ids: Vec::new(),
    });
    assert_eq!(state.upkeep(span(2, 10), T0), done);
    let Upkeep::Trim(again) = state.upkeep(span(2, 10), T0) else {
        panic!("a trim");
    };
    assert_eq!(again.shared_sent, 0, "counted in one checkpoint only");
}

#[test]
fn a_dedup_queue_trims_at_most_every_eighth_of_its_window_and_checkpoints_its_ids() {
    let options = QueueOptions {
        dedup_window_ms: Some(80_000),
        ..QueueOptions::default()
    };
    let mut state = QueueState::new(options, 1);
    state.admit(QUEUE, &[(Some("x"), 1)], T0).expect("admitted");
    state.confirm_ids([("x", 1)]);
    state.synced_below(2);
    state.commit(vec![(entry(1), 0)], true, T0);
    state.purge();
    let soon = LogSpan {
        since_trim_ms: 9_999,
        ..span(0, 10)
    };
    assert_eq!(state.upkeep(soon, T0), Upkeep::Nothing, "80 s / 8 = 10 s");
    let due = LogSpan {
        since_trim_ms: 10_000,
        ..span(0, 10)
    };
    assert_eq!(
        state.upkeep(due, T0),
        Upkeep::Trim(Checkpoint {
            floor: 10,
            shared_below: SHARED,
            shared_sent: 0,
            dedup_ids: vec![(T0 + 80_000, "x".to_owned())],
        }),
        "the id only the trimmed part remembers"
    );
    let short = QueueOptions {
        dedup_window_ms: Some(1_000),
        ..QueueOptions::default()
    };
    let mut state = QueueState::new(short, 1);
    let early = LogSpan {
        since_trim_ms: 4_999,
        ..span(0, 10)
    };
    assert_eq!(state.upkeep(early, T0), Upkeep::Nothing, "at least 5 s");
}

#[test]
fn upkeep_moves_the_few_delayed_messages_that_pin_the_old_half_of_a_long_log() {
    let mut state = QueueState::new(QueueOptions::default(), 1);
    let due = T0 + 1_000_000;
    send(&mut state, &[(0, due), (1, 0), (60_000, 0)]);
    let Upkeep::Move(moved) = state.upkeep(span(0, 60_001), T0) else {
        panic!("a move");
    };
    let moved: Vec<(u64, i64)> = moved.iter().map(|(e, due)| (e.offset, *due)).collect();
    assert_eq!(moved, [(0, due)], "the delayed one, with its due time");
    assert_eq!(
        state.upkeep(span(0, 60_001), T0),
        Upkeep::Nothing,
        "in transit (still held): no trim past it, nothing more to move"
    );
}

#[test]
fn upkeep_moves_nothing_while_much_of_the_old_half_is_held() {
    let mut state = QueueState::new(QueueOptions::default(), 1);
    let mut sent: Vec<(u64, i64)> = (1..=300).map(|o| (o, 0)).collect();
    sent.push((0, T0 + 1_000_000));
    send(&mut state, &sent);
    assert_eq!(
        state.upkeep(span(0, 60_001), T0),
        Upkeep::Nothing,
        "300 held below the middle: more than 1/256 of the span"
    );
    assert_eq!(
        state.upkeep(span(0, 40_000), T0),
        Upkeep::Nothing,
        "a short span"
    );
}
