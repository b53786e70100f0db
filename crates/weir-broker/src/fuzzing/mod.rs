//! Entry points for the fuzz targets in `fuzz/` (cargo fuzz), and for the tests that
//! replay their corpora (`fuzz/corpus/queue_record`, `fuzz/corpus/routing`) on every
//! `cargo test`.
//!
//! * [`queue_record`]: a queue's log as recovery finds it: options as stored in
//!   `queue.json`, then records for the queue's own log and the shared log, each
//!   decoded (what decodes must encode and decode to the same), replayed into a
//!   queue state as the broker does at start, and then delivered, acked, nacked,
//!   released and expired.
//! * [`routing`]: exchanges and bindings declared, bound, unbound and deleted as the
//!   API allows, messages routed and checked against a brute-force model, and the
//!   durable part written as `meta/routing.json` and read back; or raw bytes read
//!   as `meta/routing.json`.
//!
//! Nothing here is used by the broker itself.
//!
//! One file per target, over the input cursor they share: `input`, `queue_logs`
//! ([`queue_record`] and its input format), `routes` ([`routing`] and its
//! brute-force model), and `tests` (the seeds and the corpus replay).

mod input;
mod queue_logs;
mod routes;
#[cfg(test)]
mod tests;

pub use queue_logs::{LogRecord, QueueInput, queue_record};
pub use routes::routing;
