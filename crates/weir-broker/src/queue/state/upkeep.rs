//! Housekeeping's decisions, asked for every half second: how far the queue's log
//! may be trimmed (the floor), which long-waiting messages are moved to the head of
//! the log first so old segments can go, how often a queue with a dedup window
//! trims, and what the checkpoint before a trim holds. The actor performs the
//! answer ([`Upkeep`]): the appends, the trim and the timers are its own.

use crate::queue::entry::{Entry, is_shared};

use super::QueueState;

/// A span of the log at least this long (in records) may have its few
/// long-waiting messages moved to the head so the old segments can go.
const MOVE_MIN_SPAN: u64 = 50_000;

/// What the actor knows of the queue's log for [`QueueState::upkeep`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct LogSpan {
    /// The log's first offset.
    pub(crate) first: u64,
    /// The log's next offset.
    pub(crate) next: u64,
    /// The lowest offset an append in flight may land at: its records may be in
    /// the log before the actor has heard back (the state does not know the
    /// messages, the counters do not have the delta).
    pub(crate) in_flight: Option<u64>,
    /// How long ago the log was last trimmed, in ms.
    pub(crate) since_trim_ms: u64,
}

/// What housekeeping does now ([`QueueState::upkeep`]).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Upkeep {
    /// Nothing.
    Nothing,
    /// Rewrite these delayed messages (each with its due time) at the head of the
    /// log, with `moved_from` set. They are in transit: report back with
    /// [`QueueState::finish_move`] (or [`QueueState::abort_move`]).
    Move(Vec<(Entry, i64)>),
    /// Write this checkpoint, then trim the log below its floor.
    Trim(Checkpoint),
}

/// What the checkpoint before a trim holds besides the counters of every record
/// below the trim point (which the actor keeps as appends land).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Checkpoint {
    /// The log is trimmed below this.
    pub(crate) floor: u64,
    /// Every shared message of this queue with a key under this is settled.
    pub(crate) shared_below: u64,
    /// The `sent` of shared messages under `shared_below` not yet in a checkpoint.
    pub(crate) shared_sent: u64,
    /// The ids inside the dedup window that only the trimmed part remembers.
    pub(crate) dedup_ids: Vec<(i64, String)>,
}

impl QueueState {
    /// What housekeeping does now: trim the log below the lowest held message,
    /// never above an append in flight nor above state records about shared
    /// messages still held; first move the few delayed messages that would
    /// otherwise pin old segments.
    pub(crate) fn upkeep(&mut self, log: LogSpan, now: i64) -> Upkeep {
        // Not above state records about shared messages still held (their batch's
        // mark): the shared log holds the messages, this log what happened to them.
        self.prune_batches();
        let shared_mark = self.shared_mark().unwrap_or(log.next);
        let floor = self
            .floor(log.next)
            .min(log.in_flight.unwrap_or(log.next))
            .min(shared_mark);
        // When the held span is long but fewer than 1/256 of its older half is
        // still held, those delayed messages are moved to the head.
        let span = log.next - floor;
        if span >= MOVE_MIN_SPAN {
            let mid = floor + span / 2;
            let limit = usize::try_from(span / 256).unwrap_or(usize::MAX).max(16);
            if self.held_below(mid, limit + 1) <= limit {
                let moved = self.take_delayed_below(mid, limit);
                if !moved.is_empty() {
                    return Upkeep::Move(moved);
                }
            }
        }
        if floor <= log.first {
            return Upkeep::Nothing;
        }
        // Each trim of a dedup queue rewrites the ids inside the window that only
        // the trimmed part remembers; trimming less often bounds that work.
        if let Some(window) = self.options.dedup_window_ms
            && log.since_trim_ms < (window / 8).clamp(5_000, 600_000)
        {
            return Upkeep::Nothing;
        }
        let shared_below = self.shared_below();
        Upkeep::Trim(Checkpoint {
            floor,
            shared_below,
            shared_sent: self.take_shared_sent(),
            dedup_ids: self.dedup_ids_below(floor, shared_below, now),
        })
    }

    /// The lowest own-log offset still held, or `next_offset` when none is. Ready
    /// messages are in arrival order, not offset order, so this walks everything
    /// held (housekeeping asks twice a second). Shared keys are all above any own
    /// offset and so never the minimum unless nothing own is held.
    pub(crate) fn floor(&self, next_offset: u64) -> u64 {
        self.held_entries()
            .map(|e| e.offset)
            .min()
            .filter(|o| !is_shared(*o))
            .unwrap_or(next_offset)
            .min(next_offset)
    }

    /// How many own messages are held below `offset` (counts up to `limit`).
    pub(crate) fn held_below(&self, offset: u64, limit: usize) -> usize {
        self.held_entries()
            .filter(|e| e.offset < offset)
            .take(limit)
            .count()
    }

    /// Ids inside the window whose send is durable and remembered only where the
    /// next replay will not look: in the queue log below `below` (about to be
    /// trimmed), or by a shared message under `shared_below` (replay skips those).
    /// For a dedup checkpoint.
    pub(crate) fn dedup_ids_below(
        &self,
        below: u64,
        shared_below: u64,
        now: i64,
    ) -> Vec<(i64, String)> {
        let forgotten = |o: u64| {
            if is_shared(o) {
                o < shared_below
            } else {
                o < below
            }
        };
        self.dedup
            .iter()
            .filter(|(_, s)| s.until > now && s.offset.is_some_and(forgotten))
            .map(|(id, s)| (s.until, id.clone()))
            .collect()
    }

    /// A dedup checkpoint at `offset` now remembers these ids.
    pub(crate) fn dedup_rewritten(&mut self, ids: &[(i64, String)], offset: u64) {
        for (_, id) in ids {
            if let Some(seen) = self.dedup.get_mut(id) {
                seen.offset = Some(offset);
            }
        }
    }
}
