//! The per-segment index (`.idx`): where a read should start for a given offset or
//! timestamp, without scanning the segment.
//!
//! After the 32-byte file header (see `header`) come fixed 20-byte entries:
//!
//! ```text
//!  0  u32  relative_offset  offset of a batch's first record, minus the segment base
//!  4  u32  position         byte position of that batch in the segment file
//!  8  i64  max_ts_before    largest timestamp of any record before that offset in the
//!                           segment (i64::MIN when there is none)
//! 16  u32  crc              CRC32C of bytes 0..16 of this entry
//! ```
//!
//! One entry is added per `index_interval_bytes` of batches, so the index is sparse:
//! a lookup finds the nearest entry at or before the target and the read scans forward
//! from there. The offset index and the time index share the entries: everything before
//! `relative_offset` has a timestamp of at most `max_ts_before`, so the first record with
//! a timestamp of at least `t` lies after the last entry whose `max_ts_before < t`.
//! (decision record 0001 explains why one file instead of two).
//!
//! Entries are only ever written for data that has already been `fdatasync`ed. That is
//! what lets recovery start its tail scan at the last entry that checks out instead of
//! at the start of the segment. When a segment is sealed its index gets a final
//! *end entry*: relative offset one past the last record, position = segment length,
//! `max_ts_before` = the segment's newest timestamp.
//!
//! Entries carry their own CRC because index files are not synced on every append: after
//! a power cut their unsynced tail may be torn, zeroed or hold stale bytes. Loading
//! stops at the first entry that fails its CRC or breaks monotonicity.

/// Size of one entry.
pub(crate) const ENTRY_LEN: usize = 20;

/// One index entry (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct IndexEntry {
    pub(crate) rel_offset: u32,
    pub(crate) position: u32,
    pub(crate) max_ts_before: i64,
}

impl IndexEntry {
    pub(crate) fn encode(&self) -> [u8; ENTRY_LEN] {
        let mut out = [0u8; ENTRY_LEN];
        out[0..4].copy_from_slice(&self.rel_offset.to_le_bytes());
        out[4..8].copy_from_slice(&self.position.to_le_bytes());
        out[8..16].copy_from_slice(&self.max_ts_before.to_le_bytes());
        let crc = crc32c::crc32c(&out[0..16]);
        out[16..20].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// `None` if the entry fails its checksum.
    fn decode(bytes: &[u8]) -> Option<IndexEntry> {
        let crc = u32::from_le_bytes(bytes[16..20].try_into().ok()?);
        if crc != crc32c::crc32c(&bytes[0..16]) {
            return None;
        }
        Some(IndexEntry {
            rel_offset: u32::from_le_bytes(bytes[0..4].try_into().ok()?),
            position: u32::from_le_bytes(bytes[4..8].try_into().ok()?),
            max_ts_before: i64::from_le_bytes(bytes[8..16].try_into().ok()?),
        })
    }

    /// Whether `next` may follow `self`: nothing goes backwards.
    fn precedes(&self, next: &IndexEntry) -> bool {
        next.rel_offset >= self.rel_offset
            && next.position >= self.position
            && next.max_ts_before >= self.max_ts_before
    }
}

/// Decodes the entries in `bytes` (the file after its header) and keeps the longest
/// valid prefix: each entry passes its CRC, none goes backwards, and none points past
/// `max_position`. Returns the entries and whether anything was dropped.
pub(crate) fn decode_entries(bytes: &[u8], max_position: u64) -> (Vec<IndexEntry>, bool) {
    let mut entries = Vec::with_capacity(bytes.len() / ENTRY_LEN);
    for chunk in bytes.chunks(ENTRY_LEN) {
        if chunk.len() < ENTRY_LEN {
            return (entries, true);
        }
        let Some(entry) = IndexEntry::decode(chunk) else {
            return (entries, true);
        };
        let in_order = entries
            .last()
            .is_none_or(|prev: &IndexEntry| prev.precedes(&entry));
        if !in_order || u64::from(entry.position) > max_position {
            return (entries, true);
        }
        entries.push(entry);
    }
    (entries, false)
}

/// The in-memory copy of a segment's index.
#[derive(Clone, Debug, Default)]
pub(crate) struct Index {
    entries: Vec<IndexEntry>,
}

impl Index {
    pub(crate) fn from_entries(entries: Vec<IndexEntry>) -> Self {
        debug_assert!(entries.windows(2).all(|w| w[0].precedes(&w[1])));
        Index { entries }
    }

    pub(crate) fn push(&mut self, entry: IndexEntry) {
        debug_assert!(self.entries.last().is_none_or(|p| p.precedes(&entry)));
        self.entries.push(entry);
    }

    pub(crate) fn last(&self) -> Option<&IndexEntry> {
        self.entries.last()
    }

    /// The last entry at or before relative offset `rel`.
    pub(crate) fn floor_offset(&self, rel: u64) -> Option<IndexEntry> {
        let after = self
            .entries
            .partition_point(|e| u64::from(e.rel_offset) <= rel);
        after.checked_sub(1).map(|i| self.entries[i])
    }

    /// The last entry before which every record is older than `timestamp_ms`.
    pub(crate) fn floor_time(&self, timestamp_ms: i64) -> Option<IndexEntry> {
        let after = self
            .entries
            .partition_point(|e| e.max_ts_before < timestamp_ms);
        after.checked_sub(1).map(|i| self.entries[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(rel: u32, pos: u32, ts: i64) -> IndexEntry {
        IndexEntry {
            rel_offset: rel,
            position: pos,
            max_ts_before: ts,
        }
    }

    fn encode_all(entries: &[IndexEntry]) -> Vec<u8> {
        entries.iter().flat_map(IndexEntry::encode).collect()
    }

    #[test]
    fn entries_round_trip() {
        let entries = vec![
            entry(0, 32, i64::MIN),
            entry(10, 4000, 5),
            entry(25, 9000, 5),
        ];
        let (decoded, dropped) = decode_entries(&encode_all(&entries), 10_000);
        assert_eq!(decoded, entries);
        assert!(!dropped);
    }

    #[test]
    fn decoding_stops_at_torn_zeroed_flipped_or_backward_entries() {
        let good = vec![entry(0, 32, 1), entry(10, 4000, 5)];
        let mut bytes = encode_all(&good);

        let mut torn = bytes.clone();
        torn.extend_from_slice(&entry(20, 8000, 6).encode()[..7]);
        assert_eq!(decode_entries(&torn, 10_000), (good.clone(), true));

        let mut zeroed = bytes.clone();
        zeroed.extend_from_slice(&[0; ENTRY_LEN]);
        zeroed.extend_from_slice(&entry(30, 9000, 7).encode());
        assert_eq!(decode_entries(&zeroed, 10_000), (good.clone(), true));

        let mut flipped = bytes.clone();
        let mut e = entry(20, 8000, 6).encode();
        e[5] ^= 0x10;
        flipped.extend_from_slice(&e);
        assert_eq!(decode_entries(&flipped, 10_000), (good.clone(), true));

        bytes.extend_from_slice(&entry(5, 9000, 6).encode());
        assert_eq!(decode_entries(&bytes, 10_000), (good.clone(), true));

        let beyond = encode_all(&[entry(0, 32, 1), entry(10, 4000, 5)]);
        assert_eq!(decode_entries(&beyond, 3999).0, vec![entry(0, 32, 1)]);
    }

    #[test]
    fn lookups_find_the_floor() {
        let index = Index::from_entries(vec![
            entry(0, 32, i64::MIN),
            entry(10, 4000, 100),
            entry(20, 8000, 200),
        ]);
        assert_eq!(index.floor_offset(0).unwrap().rel_offset, 0);
        assert_eq!(index.floor_offset(9).unwrap().rel_offset, 0);
        assert_eq!(index.floor_offset(10).unwrap().rel_offset, 10);
        assert_eq!(index.floor_offset(1_000).unwrap().rel_offset, 20);
        assert_eq!(Index::default().floor_offset(5), None);

        // Everything before rel 10 is at most 100: a search for 101 may start at 10.
        assert_eq!(index.floor_time(101).unwrap().rel_offset, 10);
        assert_eq!(index.floor_time(100).unwrap().rel_offset, 0);
        assert_eq!(index.floor_time(i64::MAX).unwrap().rel_offset, 20);
        assert_eq!(index.floor_time(i64::MIN), None);
    }
}
