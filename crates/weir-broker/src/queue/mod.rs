//! Work queues: the sans-IO delivery state ([`state`]), its log format
//! ([`record`]), its ready messages in chunks ([`ready`]), recovery ([`replay`]) and the task that owns one queue ([`actor`]).

pub(crate) mod actor;
pub(crate) mod counters;
#[cfg(test)]
mod model_tests;
pub(crate) mod ready;
pub(crate) mod record;
#[cfg(test)]
mod regression_tests;
pub(crate) mod replay;
#[cfg(test)]
mod shared_tests;
pub(crate) mod state;
