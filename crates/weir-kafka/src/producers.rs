//! The idempotent producer (librdkafka's and the Java client's default since
//! Kafka 3): InitProducerId hands out a producer id, and each batch carries the
//! producer's id, epoch and the sequence number of its first record per partition.
//! A batch whose sequences were appended already (a retry after a lost answer) is
//! answered with the offset it got the first time and not stored again; a gap in
//! the sequence is refused with `OUT_OF_ORDER_SEQUENCE_NUMBER`, an older epoch
//! with `INVALID_PRODUCER_EPOCH`.
//!
//! What lasts: a producer's batch is stored as it came, in Kafka's format, with
//! its producer id, epoch and first sequence in its header, in the same durable
//! append as its records. After a restart, the first idempotent batch for a
//! partition has the front end read the partition's newest records (up to
//! [`SCAN_RECORDS`]) to learn each producer's last sequences again, so a retry
//! through a restart is still found. (Batches stored before weir kept Kafka's
//! format carry the same fields in a [`PRODUCER_HEADER`] on their first record,
//! which is read too; headers named `x-weir-…` are the broker's and no reader
//! sees them.)
//!
//! Producer ids: the time in ms times 1024 plus a counter, so ids handed out after
//! a restart do not meet the ids of before (unless the clock went back).
//!
//! What is held is bounded, since any client may ask for producer ids: a producer
//! not heard from for `[kafka] producer_id_expiration_ms` (Kafka's
//! `producer.id.expiration.ms`, a day) is forgotten, and so is the least recently
//! heard of when `[kafka] max_producer_ids` are held. A forgotten producer that
//! comes back is taken as a new one, as Kafka takes a producer whose state expired:
//! its next batch is stored whatever its sequence, so only a retry of a batch it
//! sent before it was forgotten could be stored twice. The partitions known are
//! held within the same cap: those whose producers were all forgotten go first.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kafka_protocol::ResponseError;

/// The header of a producer's batch (a reserved `x-weir-` name).
pub(crate) const PRODUCER_HEADER: &str = "x-weir-kafka-producer";

/// Records read back from a partition's end to learn its producers after a start.
pub(crate) const SCAN_RECORDS: u64 = 50_000;

/// Batches remembered per producer and partition (Kafka's in-flight limit).
const REMEMBERED: usize = 5;

/// What to do with a producer's batch.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// New: append it.
    Append,
    /// Appended before at this offset: answer that.
    Duplicate(u64),
    /// Refused with this error.
    Refuse(i16),
}

/// A batch's producer fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Stamp {
    pub id: i64,
    pub epoch: i16,
    pub first: i32,
    pub last: i32,
}

impl Stamp {
    /// The stamp of a batch of `count` records from sequence `first` on.
    pub(crate) fn of(id: i64, epoch: i16, first: i32, count: u32) -> Stamp {
        // Sequences wrap at i32::MAX to 0, as Kafka's do.
        let last = i64::from(first) + i64::from(count) - 1;
        let last = i32::try_from(last.rem_euclid(i64::from(i32::MAX) + 1)).unwrap_or(0);
        Stamp {
            id,
            epoch,
            first,
            last,
        }
    }

    /// The header that kept it with the batch before batches were stored in
    /// Kafka's format (tests write old data with it).
    #[cfg(test)]
    pub(crate) fn header(self) -> weir_broker::stream::Header {
        let mut v = Vec::with_capacity(18);
        v.extend_from_slice(&self.id.to_be_bytes());
        v.extend_from_slice(&self.epoch.to_be_bytes());
        v.extend_from_slice(&self.first.to_be_bytes());
        v.extend_from_slice(&self.last.to_be_bytes());
        weir_broker::stream::Header::new(PRODUCER_HEADER, bytes::Bytes::from(v))
    }

    /// Read back from a header's value.
    pub(crate) fn parse(value: &[u8]) -> Option<Stamp> {
        if value.len() != 18 {
            return None;
        }
        let i = |r: std::ops::Range<usize>| value.get(r);
        Some(Stamp {
            id: i64::from_be_bytes(i(0..8)?.try_into().ok()?),
            epoch: i16::from_be_bytes(i(8..10)?.try_into().ok()?),
            first: i32::from_be_bytes(i(10..14)?.try_into().ok()?),
            last: i32::from_be_bytes(i(14..18)?.try_into().ok()?),
        })
    }
}

struct Producer {
    epoch: i16,
    /// Recent batches: first and last sequence, and the offset of the first record.
    recent: VecDeque<(i32, i32, u64)>,
    /// Its place in [`Table::by_use`]: when its last batch was stored, and the
    /// table's count of stored batches then.
    used: (Instant, u64),
}

#[derive(Default)]
struct Partition {
    loaded: bool,
    producers: HashMap<i64, Producer>,
}

/// Where a producer's batches go: a partition of a topic, and the number of the
/// stream behind the topic's name now. The state is kept by stream number: a
/// topic deleted and made anew (over HTTP or AMQP too, which this front end does
/// not see) has a new number, so what its producers did before is not taken for
/// what they do now: a retry of a batch the old topic held is stored, not
/// answered with the old offset.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Place<'a> {
    pub topic: &'a str,
    pub stream: u64,
    pub partition: u32,
}

impl Place<'_> {
    fn key(self) -> (u64, u32) {
        (self.stream, self.partition)
    }
}

/// How much producer state is held (`[kafka] max_producer_ids` and
/// `producer_id_expiration_ms`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Keep {
    /// Most producers held, every partition together.
    pub most: usize,
    /// A producer not heard from this long is forgotten.
    pub idle: Duration,
}

/// The state behind the lock.
#[derive(Default)]
struct Table {
    partitions: HashMap<(u64, u32), Partition>,
    /// Every producer held (once per partition), least recently used first: by
    /// its `used`, which is unique (the count goes up at every batch stored).
    by_use: BTreeMap<(Instant, u64), ((u64, u32), i64)>,
    /// Batches stored.
    count: u64,
}

impl Table {
    /// Forgets producers idle past `keep.idle`, then the least recently used
    /// while `keep.most` are held, so that one more fits.
    fn make_room(&mut self, keep: Keep, now: Instant) {
        while let Some((&(used, _), &(key, id))) = self.by_use.first_key_value() {
            let full = self.by_use.len() >= keep.most;
            if !full && now.saturating_duration_since(used) < keep.idle {
                break;
            }
            self.by_use.pop_first();
            if let Some(part) = self.partitions.get_mut(&key) {
                part.producers.remove(&id);
            }
        }
    }

    /// Records a stored batch of `s` at `offset` in the partition `key`.
    fn remember(&mut self, keep: Keep, key: (u64, u32), s: Stamp, offset: u64) {
        let now = Instant::now();
        self.count += 1;
        let used = (now, self.count);
        let held = self
            .partitions
            .get(&key)
            .and_then(|p| p.producers.get(&s.id))
            .map(|p| p.used);
        match held {
            Some(before) => {
                self.by_use.remove(&before);
            }
            None => self.make_room(keep, now),
        }
        self.by_use.insert(used, (key, s.id));
        let p = self
            .partitions
            .entry(key)
            .or_default()
            .producers
            .entry(s.id)
            .or_insert_with(|| Producer {
                epoch: s.epoch,
                recent: VecDeque::new(),
                used,
            });
        p.used = used;
        if s.epoch != p.epoch {
            p.epoch = s.epoch;
            p.recent.clear();
        }
        p.recent.push_back((s.first, s.last, offset));
        while p.recent.len() > REMEMBERED {
            p.recent.pop_front();
        }
    }
}

/// Every producer's state, per stream (by number) and partition.
pub(crate) struct Producers {
    table: Mutex<Table>,
    keep: Keep,
    counter: AtomicU64,
}

impl Producers {
    pub(crate) fn new(keep: Keep) -> Producers {
        Producers {
            table: Mutex::new(Table::default()),
            keep,
            counter: AtomicU64::new(0),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Table) -> T) -> T {
        f(&mut self
            .table
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// A new producer id.
    pub(crate) fn new_id(&self) -> i64 {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(0));
        let n = self.counter.fetch_add(1, Ordering::Relaxed) % 1024;
        i64::try_from(ms.saturating_mul(1024) + n).unwrap_or(i64::MAX)
    }

    /// Whether `place` was read back since the start.
    pub(crate) fn loaded(&self, place: Place<'_>) -> bool {
        self.with(|t| t.partitions.get(&place.key()).is_some_and(|p| p.loaded))
    }

    /// Learns the producers of `partition` from its newest records' stamps (in
    /// offset order), unless already known.
    pub(crate) fn load(&self, place: Place<'_>, stamps: &[(u64, Stamp)]) {
        let keep = self.keep;
        self.with(|t| {
            if !t.partitions.contains_key(&place.key()) && t.partitions.len() >= keep.most {
                // Partitions whose producers were all forgotten (or that had none,
                // deleted streams' among them) go, so that they stay within the
                // cap too; one of them is read back again at its next batch.
                t.partitions.retain(|_, p| !p.producers.is_empty());
            }
            let part = t.partitions.entry(place.key()).or_default();
            if part.loaded {
                return;
            }
            part.loaded = true;
            for (offset, s) in stamps {
                t.remember(keep, place.key(), *s, *offset);
            }
        });
    }

    /// Forgets a stream's producers (it was deleted).
    pub(crate) fn forget(&self, stream: u64) {
        self.with(|t| {
            t.partitions.retain(|(s, _), _| *s != stream);
            t.by_use.retain(|_, ((s, _), _)| *s != stream);
        });
    }

    /// How many producers are held, every partition together.
    #[cfg(test)]
    fn held(&self) -> usize {
        self.with(|t| {
            let n = t.partitions.values().map(|p| p.producers.len()).sum();
            assert_eq!(n, t.by_use.len(), "one entry in use order per producer");
            n
        })
    }

    /// Judges a batch of `stamp`.
    pub(crate) fn check(&self, place: Place<'_>, stamp: Stamp) -> Verdict {
        self.with(|t| {
            let Some(p) = t
                .partitions
                .get(&place.key())
                .and_then(|part| part.producers.get(&stamp.id))
            else {
                // Unknown (new, forgotten, or its batches are older than what was
                // read back): any first sequence starts it.
                return Verdict::Append;
            };
            if stamp.epoch < p.epoch {
                return Verdict::Refuse(ResponseError::InvalidProducerEpoch.code());
            }
            if stamp.epoch > p.epoch {
                return if stamp.first == 0 {
                    Verdict::Append
                } else {
                    Verdict::Refuse(ResponseError::OutOfOrderSequenceNumber.code())
                };
            }
            if let Some((_, _, offset)) = p
                .recent
                .iter()
                .find(|(f, l, _)| *f == stamp.first && *l == stamp.last)
            {
                return Verdict::Duplicate(*offset);
            }
            let last = p.recent.back().map_or(-1, |(_, l, _)| *l);
            let expected = if last == i32::MAX { 0 } else { last + 1 };
            if stamp.first == expected {
                Verdict::Append
            } else {
                Verdict::Refuse(ResponseError::OutOfOrderSequenceNumber.code())
            }
        })
    }

    /// Records an appended batch.
    pub(crate) fn appended(&self, place: Place<'_>, stamp: Stamp, offset: u64) {
        let keep = self.keep;
        self.with(|t| t.remember(keep, place.key(), stamp, offset));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEEP: Keep = Keep {
        most: 1000,
        idle: Duration::from_secs(3600),
    };

    fn at(partition: u32) -> Place<'static> {
        Place {
            topic: "t",
            stream: 1,
            partition,
        }
    }

    fn stamp(epoch: i16, first: i32, last: i32) -> Stamp {
        Stamp {
            id: 7,
            epoch,
            first,
            last,
        }
    }

    #[test]
    fn retries_are_found_and_gaps_refused() {
        let p = Producers::new(KEEP);
        assert_eq!(p.check(at(0), stamp(0, 0, 9)), Verdict::Append);
        p.appended(at(0), stamp(0, 0, 9), 100);
        assert_eq!(p.check(at(0), stamp(0, 0, 9)), Verdict::Duplicate(100));
        assert_eq!(
            p.check(at(0), stamp(0, 12, 13)),
            Verdict::Refuse(ResponseError::OutOfOrderSequenceNumber.code())
        );
        assert_eq!(p.check(at(0), stamp(0, 10, 19)), Verdict::Append);
        assert_eq!(
            p.check(at(1), stamp(0, 5, 6)),
            Verdict::Append,
            "partitions are apart"
        );
        assert_eq!(
            p.check(at(0), stamp(1, 0, 0)),
            Verdict::Append,
            "a new epoch starts at 0"
        );
        p.appended(at(0), stamp(1, 0, 0), 120);
        assert_eq!(
            p.check(at(0), stamp(0, 20, 21)),
            Verdict::Refuse(ResponseError::InvalidProducerEpoch.code())
        );
    }

    #[test]
    fn stamps_read_back_restore_the_state() {
        let s = stamp(3, 40, 49);
        assert_eq!(Stamp::parse(&s.header().value), Some(s));
        assert_eq!(Stamp::parse(b"short"), None);
        let p = Producers::new(KEEP);
        assert!(!p.loaded(at(0)));
        p.load(at(0), &[(10, stamp(3, 30, 39)), (20, s)]);
        assert!(p.loaded(at(0)));
        assert_eq!(p.check(at(0), s), Verdict::Duplicate(20));
        assert_eq!(p.check(at(0), stamp(3, 50, 50)), Verdict::Append);
        assert!(p.new_id() > 0);
    }

    #[test]
    fn a_topic_made_anew_under_its_name_starts_its_producers_anew() {
        let p = Producers::new(KEEP);
        p.load(at(0), &[]);
        p.appended(at(0), stamp(0, 0, 9), 100);
        assert_eq!(p.check(at(0), stamp(0, 0, 9)), Verdict::Duplicate(100));
        let anew = Place { stream: 2, ..at(0) };
        assert!(!p.loaded(anew), "the new stream is read back first");
        assert_eq!(
            p.check(anew, stamp(0, 0, 9)),
            Verdict::Append,
            "the batch the old stream held is stored in the new one"
        );
        p.appended(anew, stamp(0, 0, 9), 0);
        assert_eq!(p.check(anew, stamp(0, 0, 9)), Verdict::Duplicate(0));
    }

    #[test]
    fn a_deleted_stream_leaves_nothing_behind() {
        let p = Producers::new(KEEP);
        let other = Place { stream: 2, ..at(0) };
        p.load(at(0), &[]);
        p.load(other, &[]);
        p.forget(1);
        assert!(!p.loaded(at(0)));
        assert!(p.loaded(other));
    }

    fn of(id: i64, first: i32) -> Stamp {
        Stamp {
            id,
            ..stamp(0, first, first)
        }
    }

    #[test]
    fn the_least_recently_heard_of_producer_is_forgotten_when_the_most_are_held() {
        let p = Producers::new(Keep { most: 3, ..KEEP });
        p.load(at(0), &[]);
        for id in 1..=3 {
            p.appended(at(0), of(id, 0), 0);
        }
        // 1 is heard from again: 2 is now the least recently heard of.
        p.appended(at(0), of(1, 1), 1);
        p.appended(at(1), of(4, 0), 0);
        assert_eq!(p.held(), 3);
        assert_eq!(p.check(at(0), of(1, 1)), Verdict::Duplicate(1), "1 is kept");
        assert_eq!(p.check(at(0), of(3, 0)), Verdict::Duplicate(0), "3 is kept");
        assert_eq!(
            p.check(at(0), of(2, 7)),
            Verdict::Append,
            "2 is forgotten: any sequence starts it again"
        );
        for id in 10..100 {
            p.appended(at(2), of(id, 0), 0);
            assert!(p.held() <= 3);
        }
        p.forget(1);
        assert_eq!(
            p.held(),
            0,
            "a deleted stream's producers leave the use order too"
        );
    }

    #[test]
    fn the_producers_are_forgotten_in_the_order_they_were_last_heard_of() {
        let p = Producers::new(Keep { most: 3, ..KEEP });
        p.load(at(0), &[]);
        for id in 1..=3 {
            p.appended(at(0), of(id, 0), 0);
        }
        // Heard of again in reverse: 3, 2, 1; 3 is now the least recently.
        for id in (1..=3).rev() {
            p.appended(at(0), of(id, 1), 1);
        }
        p.appended(at(0), of(4, 0), 0);
        assert_eq!(p.check(at(0), of(3, 9)), Verdict::Append, "3 is forgotten");
        for id in [1, 2, 4] {
            assert!(
                matches!(p.check(at(0), of(id, 9)), Verdict::Refuse(_)),
                "{id} is kept"
            );
        }
        p.appended(at(0), of(5, 0), 0);
        assert_eq!(p.check(at(0), of(2, 9)), Verdict::Append, "then 2");
    }

    #[test]
    fn partitions_without_producers_stay_within_the_cap() {
        let p = Producers::new(Keep { most: 2, ..KEEP });
        for partition in 0..50 {
            p.load(at(partition), &[]);
            p.appended(at(partition), of(7, 0), 0);
            let held = p.with(|t| t.partitions.len());
            assert!(held <= 3, "{held} partitions held");
        }
        assert!(p.loaded(at(49)) && !p.loaded(at(0)), "the newest are kept");
        assert_eq!(p.check(at(49), of(7, 0)), Verdict::Duplicate(0));
    }

    #[test]
    fn a_producer_idle_past_the_expiration_is_forgotten() {
        let p = Producers::new(Keep {
            idle: Duration::ZERO,
            ..KEEP
        });
        p.load(at(0), &[]);
        p.appended(at(0), of(1, 0), 0);
        p.appended(at(0), of(2, 0), 5);
        assert_eq!(p.held(), 1, "1 expired when 2 came");
        assert_eq!(p.check(at(0), of(2, 0)), Verdict::Duplicate(5));
        assert_eq!(p.check(at(0), of(1, 9)), Verdict::Append);
        let kept = Producers::new(KEEP);
        kept.appended(at(0), of(1, 0), 0);
        kept.appended(at(0), of(2, 0), 5);
        assert_eq!(kept.held(), 2, "within the expiration both are held");
    }
}
