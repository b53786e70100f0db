//! Exchanges and bindings changed and routed through, checked against a model and
//! a reload of `meta/routing.json`, or raw bytes read as that file (see
//! `weir_broker::fuzzing::routing`): `scripts/fuzz routing SECONDS`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    weir_fuzz::on_small_stack(|| weir_broker::fuzzing::routing(data));
});
