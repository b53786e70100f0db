//! Arbitrary bytes as a Kafka request frame and as a Produce record set (see
//! `weir_kafka::fuzzing::request`): `scripts/fuzz kafka_request SECONDS`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    weir_fuzz::on_small_stack(|| weir_kafka::fuzzing::request(data));
});
