//! A stream's directory: making it, opening its partitions' logs, finding the
//! streams at start and removing a deleted one (layout in the module above).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use weir_log::{LogConfig, LogStore, MessageLog as _};

use super::{StreamOptions, StreamRef};
use crate::broker::Broker;
use crate::clock::now_ms;
use crate::config::BrokerConfig;
use crate::error::{BrokerError, Result};
use crate::files::{io_error, write_durably};

/// The log settings of one partition: the broker's, with the stream's retention and
/// the broker's tail cache for streams.
fn partition_config(broker: &BrokerConfig, options: &StreamOptions) -> LogConfig {
    let mut config = broker.log.clone();
    config.tail_cache_bytes = broker.stream_tail_cache_bytes;
    config.retention_max_age_ms = options.max_age_ms;
    config.retention_max_bytes = options.max_bytes;
    if let Some(bytes) = options.segment_bytes {
        config.segment_bytes = bytes;
    }
    config
}

impl<S: LogStore> Broker<S> {
    fn streams_dir(&self) -> PathBuf {
        self.inner.config.data_dir.join("streams")
    }

    /// Makes the directory of a new stream (name, options) and opens its logs.
    pub(super) async fn make_stream(
        &self,
        name: &str,
        options: &StreamOptions,
    ) -> Result<StreamRef<S::Log>> {
        let id = self.next_queue_id()?;
        let dir = self.streams_dir().join(format!("@{id}"));
        weir_log::io::create_dir_all_durably(&dir).map_err(|e| io_error("create", &dir, e))?;
        let json =
            serde_json::to_vec_pretty(options).map_err(|e| BrokerError::internal(e.to_string()))?;
        for (file, bytes) in [("name", name.as_bytes()), ("stream.json", &json[..])] {
            let path = dir.join(file);
            write_durably(&path, bytes).map_err(|e| io_error("write", &path, e))?;
        }
        match self.open_partitions(name, &dir, options).await {
            Ok(stream) => Ok(stream),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                Err(e)
            }
        }
    }

    /// Adds partitions to a stream up to `options.partitions` (its other options as
    /// they are): writes the new options, opens the new logs, and puts the grown
    /// stream in place of the old (which readers holding it finish with).
    pub(super) async fn grow_stream(
        &self,
        name: &str,
        old: &StreamRef<S::Log>,
        options: &StreamOptions,
    ) -> Result<StreamRef<S::Log>> {
        let json =
            serde_json::to_vec_pretty(options).map_err(|e| BrokerError::internal(e.to_string()))?;
        let config = partition_config(&self.inner.config, options);
        let mut partitions = old.partitions.clone();
        for p in old.options.partitions..options.partitions {
            let path = old.dir.join(format!("p{p}"));
            let store = self.inner.store.clone();
            let config = config.clone();
            let (log, _) = tokio::task::spawn_blocking(move || store.open(&path, config))
                .await
                .map_err(|e| BrokerError::internal(format!("growing stream '{name}': {e}")))?
                .map_err(|source| BrokerError::storage(name.to_owned(), source))?;
            partitions.push(log);
        }
        // The logs exist before the options name them: a crash in between leaves
        // empty logs that the next growth reuses.
        let path = old.dir.join("stream.json");
        write_durably(&path, &json).map_err(|e| io_error("write", &path, e))?;
        Ok(StreamRef {
            options: options.clone(),
            dir: old.dir.clone(),
            partitions,
            round_robin: AtomicU64::new(0),
            groups: old.groups.clone(),
            appended: old.appended.clone(),
        })
    }

    /// Changes a stream's retention and segment size to `options`': writes them
    /// first (durably: a crash after this reopens the logs with them), then hands
    /// them to each partition's log, which applies the retention at once. The
    /// stream to put in place of `old`, with the first failure if a log failed
    /// (the others still take the new settings).
    pub(super) async fn reconfigure_stream(
        &self,
        name: &str,
        old: &StreamRef<S::Log>,
        options: &StreamOptions,
    ) -> Result<(StreamRef<S::Log>, Result<()>)> {
        let json =
            serde_json::to_vec_pretty(options).map_err(|e| BrokerError::internal(e.to_string()))?;
        let path = old.dir.join("stream.json");
        write_durably(&path, &json).map_err(|e| io_error("write", &path, e))?;
        let retention = partition_config(&self.inner.config, options).retention();
        let mut outcome = Ok(());
        for log in &old.partitions {
            if let Err(source) = log.reconfigure(retention).await {
                tracing::warn!(stream = name, error = %source, "a partition's log could not take new retention");
                if outcome.is_ok() {
                    outcome = Err(BrokerError::storage(name.to_owned(), source));
                }
            }
        }
        let stream = StreamRef {
            options: options.clone(),
            dir: old.dir.clone(),
            partitions: old.partitions.clone(),
            round_robin: AtomicU64::new(old.round_robin.load(Ordering::Relaxed)),
            groups: old.groups.clone(),
            appended: old.appended.clone(),
        };
        Ok((stream, outcome))
    }

    /// Opens (or creates) the partitions' logs of the stream in `dir`.
    pub(super) async fn open_partitions(
        &self,
        name: &str,
        dir: &Path,
        options: &StreamOptions,
    ) -> Result<StreamRef<S::Log>> {
        let config = partition_config(&self.inner.config, options);
        let mut partitions = Vec::with_capacity(options.partitions as usize);
        for p in 0..options.partitions {
            let path = dir.join(format!("p{p}"));
            let store = self.inner.store.clone();
            let config = config.clone();
            let (log, _) = tokio::task::spawn_blocking(move || store.open(&path, config))
                .await
                .map_err(|e| BrokerError::internal(format!("opening stream '{name}': {e}")))?
                .map_err(|source| BrokerError::storage(name.to_owned(), source))?;
            partitions.push(log);
        }
        let path = dir.join("groups");
        let store = self.inner.store.clone();
        let config = self.inner.config.log.clone();
        let (log, _) = tokio::task::spawn_blocking(move || store.open(&path, config))
            .await
            .map_err(|e| BrokerError::internal(format!("opening stream '{name}': {e}")))?
            .map_err(|source| BrokerError::storage(name.to_owned(), source))?;
        Ok(StreamRef {
            options: options.clone(),
            dir: dir.to_owned(),
            partitions,
            round_robin: AtomicU64::new(0),
            groups: std::sync::Arc::new(super::group_log::GroupStore::open(log).await?),
            appended: std::sync::Arc::new(tokio::sync::Notify::new()),
        })
    }

    /// Opens every stream under `streams/` (a start); removes deleted ones' and
    /// unfinished creations' leftovers. Returns how many.
    pub(crate) async fn recover_streams(&self) -> Result<usize> {
        let root = self.streams_dir();
        if !root.exists() {
            return Ok(0);
        }
        let mut count = 0;
        for entry in std::fs::read_dir(&root).map_err(|e| io_error("list", &root, e))? {
            let dir = entry.map_err(|e| io_error("list", &root, e))?.path();
            let file_name = dir.file_name().unwrap_or_default().to_string_lossy();
            let options_path = dir.join("stream.json");
            if file_name.starts_with(".trash-") || !options_path.exists() {
                // A deleted stream, or a creation that never finished (never answered).
                let _ = std::fs::remove_dir_all(&dir);
                continue;
            }
            let name_path = dir.join("name");
            let name = std::fs::read(&name_path).map_err(|e| io_error("read", &name_path, e))?;
            let name = String::from_utf8(name).map_err(|_| {
                BrokerError::internal(format!("{} is not UTF-8", name_path.display()))
            })?;
            let bytes =
                std::fs::read(&options_path).map_err(|e| io_error("read", &options_path, e))?;
            let options: StreamOptions = serde_json::from_slice(&bytes).map_err(|e| {
                BrokerError::internal(format!("{} does not parse: {e}", options_path.display()))
            })?;
            let stream = self.open_partitions(&name, &dir, &options).await?;
            crate::locks::write(&self.inner.streams).insert(name, std::sync::Arc::new(stream));
            count += 1;
        }
        Ok(count)
    }

    /// Moves a deleted stream's directory out of the way (durably), then removes it.
    pub(super) fn remove_stream_files(&self, dir: &Path) -> Result<()> {
        let root = self.streams_dir();
        let trash = root.join(format!(
            ".trash-{}-{}",
            dir.file_name().unwrap_or_default().to_string_lossy(),
            now_ms()
        ));
        std::fs::rename(dir, &trash).map_err(|e| io_error("rename", dir, e))?;
        File::open(&root)
            .and_then(|parent| parent.sync_all())
            .map_err(|e| io_error("sync", &root, e))?;
        if let Err(e) = std::fs::remove_dir_all(&trash) {
            tracing::warn!(path = %trash.display(), error = %e, "could not remove a deleted stream's files; they go at the next start");
        }
        Ok(())
    }
}
