//! Arbitrary client bytes on one HTTP connection, served as `weir serve` serves it,
//! against a broker on a scratch directory (see `weir_http::fuzzing`): `scripts/fuzz
//! http SECONDS`. One broker and one runtime (current-thread, clock paused so
//! timeouts and long polls pass instantly) serve every input; each input's queues
//! and exchanges are removed after it.
#![no_main]

use std::sync::OnceLock;

use weir_http::fuzzing::Harness;

struct Fuzz {
    runtime: tokio::runtime::Runtime,
    harness: Harness,
}

fn fuzz() -> &'static Fuzz {
    static FUZZ: OnceLock<Fuzz> = OnceLock::new();
    FUZZ.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .expect("a runtime");
        let dir = weir_fuzz::scratch_dir("http");
        let harness = runtime.block_on(Harness::open(&dir));
        Fuzz { runtime, harness }
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let fuzz = fuzz();
    weir_fuzz::on_small_stack(|| {
        fuzz.runtime.block_on(async {
            fuzz.harness.request(data).await;
            fuzz.harness.reset().await;
        });
    });
});
