//! Reading a log in bounded chunks, and summing the counter deltas of a span of
//! it (to tell what a totals checkpoint does not cover).

use weir_log::{MessageLog, Offset, ReadLimits};

use crate::queue::record::{self, Decoded, Totals};

/// Reads a log from one offset to another in chunks of at most 64k records or 8 MB.
pub(super) struct Chunks<'a, L> {
    log: &'a L,
    /// Where the next chunk starts (after the last one: one past its last record).
    pub(super) next: Offset,
    end: Offset,
}

impl<'a, L: MessageLog> Chunks<'a, L> {
    pub(super) fn new(log: &'a L, from: Offset, end: Offset) -> Self {
        Chunks {
            log,
            next: from,
            end,
        }
    }

    /// The next chunk (records below `end` only), or `None` at the end.
    pub(super) async fn next(&mut self) -> weir_log::Result<Option<Vec<weir_log::Record>>> {
        if self.next >= self.end {
            return Ok(None);
        }
        let want = usize::try_from(self.end.0 - self.next.0).unwrap_or(usize::MAX);
        let mut records = self
            .log
            .read_from(self.next, ReadLimits::new(want.min(65_536), 8 << 20))
            .await?;
        let Some(last) = records.last() else {
            return Ok(None);
        };
        self.next = Offset(last.offset.0 + 1);
        records.retain(|r| r.offset < self.end);
        Ok(Some(records))
    }
}

/// The sum of the counter deltas of the records in `from..to`.
pub(super) async fn sum_deltas<L: MessageLog>(
    log: &L,
    from: Offset,
    to: Offset,
) -> weir_log::Result<Totals> {
    let mut sum = Totals::default();
    let mut chunks = Chunks::new(log, from, to);
    while let Some(records) = chunks.next().await? {
        for rec in records {
            match record::decode(rec.key.as_deref(), &rec.body) {
                Ok(Decoded::Message(meta)) => sum.add(&meta.delta()),
                Ok(Decoded::State(op)) => sum.add(&op.delta()),
                Ok(Decoded::Shared(..)) | Err(_) => {}
            }
        }
    }
    Ok(sum)
}

/// `a - b`, field by field (b is a part of a).
pub(super) fn minus(a: &Totals, b: &Totals) -> Totals {
    Totals {
        sent: a.sent - b.sent,
        duplicates: a.duplicates - b.duplicates,
        acked: a.acked - b.acked,
        redelivered: a.redelivered - b.redelivered,
        expired: a.expired - b.expired,
        dead_lettered: a.dead_lettered - b.dead_lettered,
        dropped: a.dropped - b.dropped,
        purged: a.purged - b.purged,
    }
}
