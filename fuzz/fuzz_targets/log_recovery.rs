//! Arbitrary bytes as the files of a weir-log directory, opened, read, appended to
//! and opened again (see `weir_log::fuzzing::recovery`): `scripts/fuzz log_recovery
//! SECONDS`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    weir_fuzz::on_small_stack(|| weir_log::fuzzing::recovery(data));
});
