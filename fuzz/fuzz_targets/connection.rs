//! Arbitrary client bytes into the AMQP connection machine (see
//! `weir_amqp::fuzzing`): `scripts/fuzz connection SECONDS`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    weir_fuzz::on_small_stack(|| {
        let _ = weir_amqp::fuzzing::connection(data);
    });
});
