//! What a batch is once checked, whichever of the two stored formats it is in
//! (weir's, `batch.rs`; Kafka's, `kafka_batch.rs`): its fixed fields, the check's
//! verdict, and where a record's parts lie. Both format modules use these; the
//! walk that branches between them is in `batch.rs`.

use crate::error::Corruption;

/// The largest batch the format allows, whatever the configuration says, so a lowered
/// `max_batch_bytes` never makes existing data unreadable.
pub(crate) const FORMAT_MAX_BATCH_LEN: u32 = 1 << 30;

/// The fixed fields of a batch that passed `batch::check`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BatchHeader {
    pub(crate) base_offset: u64,
    pub(crate) len: u32,
    pub(crate) count: u32,
    pub(crate) max_timestamp_ms: i64,
    pub(crate) format: Format,
}

/// Which of the two stored formats a batch is in (byte 16 tells).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    /// weir's own, version 1 (`batch.rs`).
    Weir,
    /// Kafka's record batch, magic 2 (`kafka_batch.rs`).
    Kafka(KafkaFields),
}

impl BatchHeader {
    /// One past the batch's last offset (`batch::check` refuses a batch for which
    /// that would overflow).
    pub(crate) fn next_offset(&self) -> u64 {
        self.base_offset + u64::from(self.count)
    }
}

/// What `batch::check` found at the start of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Check {
    /// A whole batch with a good checksum.
    Complete(BatchHeader),
    /// The buffer holds fewer than `need` bytes; `need` is the header size or, once
    /// the header is readable, the whole batch length.
    Incomplete { need: usize },
    /// Not a valid batch.
    Invalid(Corruption),
}

/// Where a record's parts are in its batch (`RecordRef::layout`).
pub(crate) struct Layout {
    pub(crate) key: Option<std::ops::Range<usize>>,
    pub(crate) headers: Vec<(std::ops::Range<usize>, std::ops::Range<usize>)>,
    pub(crate) body: std::ops::Range<usize>,
}

/// What a stored Kafka batch's records need to be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct KafkaFields {
    /// 0 for none, else Kafka's codec number.
    pub(crate) codec: u8,
    /// Set: every record's timestamp is the batch's `max_timestamp`.
    pub(crate) log_append_time: bool,
    pub(crate) base_timestamp_ms: i64,
}
