//! A configuration file and `WEIR_*` variables loaded as `weir serve` loads them,
//! rendered as `weir config` renders them and loaded back (see
//! crates/weir/src/fuzzing.rs): `scripts/fuzz config SECONDS`. The binary crate has
//! no library, so its config module is compiled in here.
#![no_main]

#[allow(dead_code, unreachable_pub)]
#[path = "../../crates/weir/src/config.rs"]
mod config;
#[allow(dead_code)]
#[path = "../../crates/weir/src/fuzzing.rs"]
mod fuzzing;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    weir_fuzz::on_small_stack(|| fuzzing::config(data));
});
