//! Work queues: the sans-IO delivery state ([`state`]) over per-message entries
//! ([`entry`]), its log format ([`record`]), its ready messages in chunks ([`ready`]), recovery ([`replay`]), the
//! death history of dead letters ([`dlq`]) and the task that owns one queue ([`actor`]).

pub(crate) mod actor;
pub(crate) mod command;
pub(crate) mod counters;
pub(crate) mod dlq;
pub(crate) mod entry;
pub(crate) mod fresh;
pub(crate) mod host;
#[cfg(test)]
mod model_tests;
pub(crate) mod ready;
pub(crate) mod record;
#[cfg(test)]
mod regression_tests;
pub(crate) mod replay;
pub(crate) mod state;
