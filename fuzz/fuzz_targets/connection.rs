//! Arbitrary client bytes into the AMQP connection machine (see
//! `weir_amqp::fuzzing`): `cargo fuzz run connection`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = weir_amqp::fuzzing::connection(data);
});
