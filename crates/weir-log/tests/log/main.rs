//! Integration tests of weir-log: one binary, one module per suite (house style §2.1).

mod common;
mod conformance;
mod crash;
mod faults;
mod kill9;
mod model;
mod retention;
