//! A queue's options and log records, decoded, replayed as at a broker's start and
//! then delivered and settled (see `weir_broker::fuzzing::queue_record`):
//! `scripts/fuzz queue_record SECONDS`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    weir_fuzz::on_small_stack(|| weir_broker::fuzzing::queue_record(data));
});
