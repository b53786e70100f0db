//! Arbitrary client bytes on one Kafka connection to `weir_kafka::serve_listeners`,
//! over loopback, against a broker on a scratch directory (see
//! `weir_kafka::fuzzing::SessionHarness`): `scripts/fuzz kafka_session SECONDS`.
//! One broker and one current-thread runtime serve every input, so the session's
//! own task runs on the input's small stack; each input's streams are removed
//! after it.
#![no_main]

use std::sync::OnceLock;

use weir_kafka::fuzzing::SessionHarness;

struct Fuzz {
    runtime: tokio::runtime::Runtime,
    harness: SessionHarness,
}

fn fuzz() -> &'static Fuzz {
    static FUZZ: OnceLock<Fuzz> = OnceLock::new();
    FUZZ.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let dir = weir_fuzz::scratch_dir("kafka_session");
        let harness = runtime.block_on(SessionHarness::open(&dir));
        Fuzz { runtime, harness }
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let fuzz = fuzz();
    weir_fuzz::on_small_stack(|| {
        fuzz.runtime.block_on(async {
            fuzz.harness.session(data).await;
            fuzz.harness.reset().await;
        });
    });
});
