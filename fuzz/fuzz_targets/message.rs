//! A message as the broker stored it (arbitrary bytes) or as a client published
//! it (an arbitrary content header), delivered as the AMQP session delivers it (see
//! `weir_amqp::fuzzing::message`): `scripts/fuzz message SECONDS`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    weir_fuzz::on_small_stack(|| weir_amqp::fuzzing::message(data));
});
