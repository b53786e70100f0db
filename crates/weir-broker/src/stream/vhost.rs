//! Streams through the [`Vhost`] view: the client's names in and out, only the
//! vhost's own streams listed (see [`crate::vhost`]).

use weir_log::LogStore;

use super::{Placed, ReadFrom, StreamInfo, StreamOptions, StreamRead, StreamRecordIn};
use crate::api::Declared;
use crate::error::Result;
use crate::vhost::Vhost;

impl<S: LogStore> Vhost<S> {
    fn out_stream(&self, mut info: StreamInfo) -> StreamInfo {
        info.name = self.out(info.name);
        info
    }

    /// [`Broker::declare_stream`](crate::Broker::declare_stream).
    pub async fn declare_stream(&self, name: &str, options: StreamOptions) -> Result<Declared> {
        self.still_there()?;
        let full = self.full(name)?;
        let declared = self.broker.declare_stream(&full, options).await;
        declared.map_err(|e| self.out_error(e))
    }

    /// [`Broker::delete_stream`](crate::Broker::delete_stream).
    pub async fn delete_stream(&self, name: &str) -> Result<()> {
        let full = self.full(name)?;
        let deleted = self.broker.delete_stream(&full).await;
        deleted.map_err(|e| self.out_error(e))
    }

    /// [`Broker::stream_info`](crate::Broker::stream_info).
    pub fn stream_info(&self, name: &str) -> Result<StreamInfo> {
        let full = self.full(name)?;
        let info = self
            .broker
            .stream_info(&full)
            .map_err(|e| self.out_error(e))?;
        Ok(self.out_stream(info))
    }

    /// The streams of this vhost, by name.
    pub fn streams(&self) -> Vec<StreamInfo> {
        self.broker
            .streams_where(|full| self.owns(full))
            .into_iter()
            .map(|s| self.out_stream(s))
            .collect()
    }

    /// [`Broker::append`](crate::Broker::append).
    pub async fn append(&self, name: &str, records: Vec<StreamRecordIn>) -> Result<Vec<Placed>> {
        let full = self.full(name)?;
        let placed = self.broker.append(&full, records).await;
        placed.map_err(|e| self.out_error(e))
    }

    /// [`Broker::read_stream`](crate::Broker::read_stream).
    pub async fn read_stream(
        &self,
        name: &str,
        partition: u32,
        from: ReadFrom,
        max: u32,
        wait_ms: u64,
    ) -> Result<StreamRead> {
        let full = self.full(name)?;
        let read = self
            .broker
            .read_stream(&full, partition, from, max, wait_ms)
            .await;
        read.map_err(|e| self.out_error(e))
    }
}
