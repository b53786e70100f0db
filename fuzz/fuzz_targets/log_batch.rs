//! Arbitrary bytes as the batches of a weir-log segment (see
//! `weir_log::fuzzing::batch`): `scripts/fuzz log_batch SECONDS`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    weir_fuzz::on_small_stack(|| weir_log::fuzzing::batch(data));
});
