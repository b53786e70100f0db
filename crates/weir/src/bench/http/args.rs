//! The arguments of `weir bench http`. Their own file so that the load, the report
//! and the entry point can all read them without importing one another.

use crate::bench::measure::CompareArgs;
use crate::client::ServerArgs;

/// Arguments of `weir bench http`.
#[derive(clap::Args, Debug)]
pub struct HttpArgs {
    #[command(flatten)]
    pub(super) server: ServerArgs,
    /// The queue to use; created if missing (default `bench-<pid>`).
    #[arg(long)]
    pub(super) queue: Option<String>,
    /// Concurrent senders.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub(super) producers: u32,
    /// Concurrent receivers (0: only send).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(0..=1000))]
    pub(super) consumers: u32,
    /// Body size in bytes.
    #[arg(long, default_value_t = 1024, value_name = "BYTES")]
    pub(super) size: usize,
    /// Messages per send request, and most messages per receive.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub(super) batch: u32,
    /// Send this many messages, and receive them all [default: 100000].
    #[arg(long, conflicts_with = "duration")]
    pub(super) count: Option<u64>,
    /// Send and receive for this many seconds instead of a count.
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    pub(super) duration: Option<u64>,
    /// Send this many messages per second in all, in batches spread evenly over
    /// time and producers (0: as fast as the broker takes them).
    #[arg(long, default_value_t = 0, value_name = "MSGS")]
    pub(super) rate: u64,
    /// Keep the queue afterwards (by default a queue this run created is deleted).
    #[arg(long)]
    pub(super) keep: bool,
    /// The broker's process id: report its CPU time per message and peak memory.
    #[arg(long)]
    pub(super) pid: Option<u32>,
    /// Print one JSON object instead of a progress bar and a table.
    #[arg(long)]
    pub(super) json: bool,
    #[command(flatten)]
    pub(super) compare: CompareArgs,
}
