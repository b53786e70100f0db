//! Work queues: the sans-IO delivery state ([`state`]), its log format
//! ([`record`]), recovery ([`replay`]) and the task that owns one queue ([`actor`]).

pub(crate) mod actor;
#[cfg(test)]
mod model_tests;
pub(crate) mod record;
pub(crate) mod replay;
pub(crate) mod state;
