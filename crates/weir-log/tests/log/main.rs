//! Integration tests of weir-log: one binary, one module per suite (house style §2.1).

// Test code: numeric casts between counters and sizes are intended, and scenario
// functions read better whole than split to satisfy a line count.
#![allow(
    clippy::cast_possible_wrap,
    clippy::cast_precision_loss,
    clippy::cast_sign_loss,
    clippy::too_many_lines,
    clippy::needless_pass_by_value
)]

mod bad_files;
mod common;
mod conformance;
mod crash;
mod faults;
mod file_limit;
mod fixtures;
mod kill9;
mod many_logs;
mod model;
mod no_space;
mod retention;
