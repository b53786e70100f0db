//! The values that go into and come out of a log.

use std::fmt;

use bytes::Bytes;

/// A record's position in its log. Offsets are dense: every append gets the next ones,
/// and trimming moves the first offset forward without renumbering anything.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Offset(pub u64);

impl Offset {
    /// The offset as a number.
    pub const fn value(self) -> u64 {
        self.0
    }

    /// The offset after this one.
    #[must_use]
    pub const fn next(self) -> Offset {
        Offset(self.0 + 1)
    }
}

impl fmt::Display for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl From<u64> for Offset {
    fn from(value: u64) -> Self {
        Offset(value)
    }
}

/// One header of a record: an opaque name and value (the broker stores message
/// properties here).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// At most 65,535 bytes.
    pub name: Bytes,
    /// Any length the record limit allows.
    pub value: Bytes,
}

impl Header {
    /// A header from anything that converts to bytes.
    pub fn new(name: impl Into<Bytes>, value: impl Into<Bytes>) -> Self {
        Header {
            name: name.into(),
            value: value.into(),
        }
    }
}

/// A record to append. The log assigns its offset.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NewRecord {
    /// Milliseconds since the Unix epoch; `None` stamps it with the append time.
    pub timestamp_ms: Option<i64>,
    /// Optional key (streams partition and compact by it; the log only stores it).
    pub key: Option<Bytes>,
    /// Headers in order; duplicates are kept.
    pub headers: Vec<Header>,
    /// The payload.
    pub body: Bytes,
}

impl NewRecord {
    /// A record with only a body.
    pub fn new(body: impl Into<Bytes>) -> Self {
        NewRecord {
            body: body.into(),
            ..NewRecord::default()
        }
    }

    /// Sets the key.
    #[must_use]
    pub fn with_key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Adds a header.
    #[must_use]
    pub fn with_header(mut self, name: impl Into<Bytes>, value: impl Into<Bytes>) -> Self {
        self.headers.push(Header::new(name, value));
        self
    }

    /// Sets an explicit timestamp instead of the append time.
    #[must_use]
    pub fn with_timestamp(mut self, timestamp_ms: i64) -> Self {
        self.timestamp_ms = Some(timestamp_ms);
        self
    }
}

/// A record read back from a log. Key, header and body bytes are slices of the buffer
/// the read filled, so reading does not copy payloads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Where it is in the log.
    pub offset: Offset,
    /// Its timestamp (given at append, or the append time).
    pub timestamp_ms: i64,
    /// Its key, if it had one.
    pub key: Option<Bytes>,
    /// Its headers, in append order.
    pub headers: Vec<Header>,
    /// Its payload.
    pub body: Bytes,
}

/// The offsets an append received: `first..next`, one per record, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Appended {
    /// Offset of the batch's first record.
    pub first: Offset,
    /// One past the last record's offset.
    pub next: Offset,
}

impl Appended {
    /// How many records were appended.
    pub fn count(&self) -> u64 {
        self.next.0 - self.first.0
    }

    /// Every offset of the append, in record order.
    pub fn offsets(&self) -> impl Iterator<Item = Offset> + use<> {
        (self.first.0..self.next.0).map(Offset)
    }
}

/// Bounds on one read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadLimits {
    /// At most this many records.
    pub max_records: usize,
    /// At most this many encoded record bytes, except that a read always returns at
    /// least one record when one is available, so a record larger than the limit can
    /// still be read.
    pub max_bytes: usize,
}

impl ReadLimits {
    /// Limits with both bounds.
    pub const fn new(max_records: usize, max_bytes: usize) -> Self {
        ReadLimits {
            max_records,
            max_bytes,
        }
    }

    /// Only a record-count bound.
    pub const fn records(max_records: usize) -> Self {
        ReadLimits {
            max_records,
            max_bytes: usize::MAX,
        }
    }
}

/// Header names that start with this are weir's own (an AMQP publish's
/// properties, for one): an appender's batch with one is marked
/// ([`crate::IncomingBatch::has_reserved_header`]) as it is checked, so the broker
/// can refuse it without walking the records again.
pub const RESERVED_HEADER_PREFIX: &str = "x-weir-";
