//! [`TailReader`]: follow a log as it grows, as a stream consumer does.

use crate::error::Result;
use crate::message_log::MessageLog;
use crate::record::{Offset, ReadLimits, Record};

/// Reads a log from an offset on, waiting for new records once it has caught up.
/// New records become visible only once they are durable under the fsync policy, so a
/// tailing reader never sees an append that a crash could take back (policy `always`).
#[derive(Debug)]
pub struct TailReader<L> {
    log: L,
    next: Offset,
}

impl<L: MessageLog> TailReader<L> {
    /// A reader whose first record will be the one at `from`.
    pub fn new(log: L, from: Offset) -> Self {
        TailReader { log, next: from }
    }

    /// The offset the next record will have.
    pub fn position(&self) -> Offset {
        self.next
    }

    /// The next records (at least one), waiting until there are some.
    ///
    /// # Errors
    /// [`crate::LogError::OffsetOutOfRange`] if retention or a trim removed the
    /// reader's position (move it with [`TailReader::seek`]), and
    /// [`crate::LogError::Closed`] once the log is closed and fully read.
    pub async fn next(&mut self, limits: ReadLimits) -> Result<Vec<Record>> {
        loop {
            let records = self.log.read_from(self.next, limits).await?;
            if let Some(last) = records.last() {
                self.next = last.offset.next();
                return Ok(records);
            }
            self.log.wait_for(self.next).await?;
        }
    }

    /// Moves the reader.
    pub fn seek(&mut self, to: Offset) {
        self.next = to;
    }
}
