//! The entry point of the `config` fuzz target in `fuzz/` (cargo fuzz), and the
//! test that replays its corpus (`fuzz/corpus/config`) on every `cargo test`.
//!
//! The binary has no library, so the fuzz crate compiles this file and `config.rs`
//! into itself (`#[path]` modules); here it is a test-only module.
//!
//! [`config`] loads a configuration as `weir serve` does: a file holding the
//! input's bytes, `WEIR_*` variables, then the checks `serve` runs before anything
//! starts. What loads must render as `weir config` renders it, and that text must
//! load back to the same configuration.

use std::path::PathBuf;

use crate::config::{Config, load};

/// Splits an input into the config file's bytes and the environment: the file
/// comes first, then (after a NUL byte) `NAME=value` lines.
pub fn split(data: &[u8]) -> (&[u8], Vec<(String, String)>) {
    let (file, env) = match data.iter().position(|b| *b == 0) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[][..]),
    };
    let vars = String::from_utf8_lossy(env)
        .lines()
        .filter_map(|line| {
            let (name, value) = line.split_once('=')?;
            Some((name.to_owned(), value.to_owned()))
        })
        .collect();
    (file, vars)
}

/// The file [`config`] writes its input to: one per process (and thread, for
/// tests running in parallel).
fn scratch_file() -> PathBuf {
    std::env::temp_dir().join(format!(
        "weir-fuzz-config-{}-{:?}.toml",
        std::process::id(),
        std::thread::current().id()
    ))
}

/// The scratch file, removed however [`config`] returns (tests run each seed on a
/// thread of its own, so every early return used to leave a file behind).
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Loads a configuration made of `data` (see the module doc).
///
/// # Panics
///
/// When a configuration that loaded does not render, or renders to text that
/// does not load back the same.
pub fn config(data: &[u8]) {
    let (file, vars) = split(data);
    let scratch = Scratch(scratch_file());
    let path = &scratch.0;
    if std::fs::write(path, file).is_err() {
        return;
    }
    let loaded = load(Some(path), vars, &[]);
    let Ok(config) = loaded else {
        return;
    };
    // What `weir serve` checks before it starts anything; what passes must not
    // break the server (a timeout past the clock's range panicked every HTTP
    // connection).
    let _ = config.amqp.to_config(config.limits.max_message_bytes);
    if config.http.problems().is_empty() {
        let http = &config.http;
        for ms in [
            http.header_read_timeout_ms,
            http.idle_timeout_ms,
            http.body_read_timeout_ms,
            http.write_timeout_ms,
            http.drain_timeout_ms,
        ] {
            assert!(
                std::time::Instant::now()
                    .checked_add(std::time::Duration::from_millis(ms))
                    .is_some(),
                "an [http] timeout of {ms} ms passes the checks"
            );
        }
    }
    let log = weir_log::LogConfig {
        fsync: config.fsync,
        segment_bytes: config.log.segment_bytes,
        ..weir_log::LogConfig::default()
    };
    let _ = log.validate();
    // `weir config` prints it; that text loads back to the same.
    let text = toml::to_string(&config).expect("a loaded configuration renders");
    std::fs::write(path, &text).expect("the scratch file is writable");
    let again: Config = load(Some(path), Vec::new(), &[])
        .unwrap_or_else(|e| panic!("`weir config` output does not load: {e:#}\n{text}"));
    assert_eq!(
        again, config,
        "`weir config` output loads differently:\n{text}"
    );
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// The stack the corpus runs on, as in `fuzz/`: deep recursion shows.
    const STACK: usize = 256 << 10;

    fn corpus() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/config")
    }

    fn seeds() -> Vec<(&'static str, Vec<u8>)> {
        let with_env = |file: &str, env: &str| {
            let mut out = file.as_bytes().to_vec();
            out.push(0);
            out.extend_from_slice(env.as_bytes());
            out
        };
        let full = toml::to_string(&Config::default()).unwrap();
        vec![
            ("empty", Vec::new()),
            ("defaults", full.clone().into_bytes()),
            (
                "top-level",
                b"data_dir = \"/var/lib/weir\"\nhttp_listen = \"0.0.0.0:8080\"\namqp_listen = \"[::]:5672\"\nfsync = \"interval:250\"\nlog_level = \"weir_broker=debug,info\"\n".to_vec(),
            ),
            (
                "sections",
                b"[limits]\nmax_queues = 5\nmax_message_bytes = 1048576\nmax_wait_ms = 1000\n\n[http]\nmax_connections = 8\nmax_long_polls = 2\nheader_read_timeout_ms = 1500\n\n[amqp]\nframe_max = 4096\nchannel_max = 16\nusers = [\"app:secret\", \"guest:guest\"]\nheartbeat_s = 0\n\n[log]\nsegment_bytes = 1048576\n".to_vec(),
            ),
            ("inline-tables", b"limits = { max_queues = 1 }\nhttp = { idle_timeout_ms = 5 }\n".to_vec()),
            ("unknown-key", b"data_dri = \"x\"\n".to_vec()),
            ("bad-types", b"fsync = 5\n[amqp]\nframe_max = \"big\"\n".to_vec()),
            ("bad-values", b"fsync = \"sometimes\"\n[amqp]\nframe_max = 1024\nusers = [\"nopassword\"]\n[http]\nmax_connections = 0\n".to_vec()),
            ("negative", b"[limits]\nmax_queues = -1\n".to_vec()),
            ("not-utf8", vec![b'd', b'a', 0xff, 0xfe, b'=']),
            (
                "env",
                with_env(
                    "[limits]\nmax_queues = 3\n",
                    "WEIR_LIMITS_MAX_QUEUES=7\nWEIR_FSYNC=never\nWEIR_HTTP_MAX_CONNECTIONS=9\nWEIR_AMQP_HEARTBEAT_S=0\nWEIR_DATA_DIR=/d\nWEIR_SERVER=ignored\n",
                ),
            ),
            ("env-section-not-table", with_env("limits = 5\n", "WEIR_LIMITS_MAX_QUEUES=1\n")),
            // Lists are file only (docs/configuration.md).
            ("env-list", with_env("", "WEIR_AMQP_USERS=x:y\n")),
            ("deep-arrays", format!("data_dir = {}{}\n", "[".repeat(200), "]".repeat(200)).into_bytes()),
            ("deep-tables", format!("x = {}{}\n", "{ a = ".repeat(100), "}".repeat(100)).into_bytes()),
        ]
    }

    fn on_small_stack(f: impl FnOnce() + Send) {
        std::thread::scope(|scope| {
            std::thread::Builder::new()
                .stack_size(STACK)
                .spawn_scoped(scope, f)
                .unwrap()
                .join()
                .expect("the input ran clean");
        });
    }

    #[test]
    fn seeds_load_or_fail_cleanly() {
        for (name, bytes) in seeds() {
            on_small_stack(|| config(&bytes));
            let (file, vars) = split(&bytes);
            let path = scratch_file();
            std::fs::write(&path, file).unwrap();
            let loaded = load(Some(&path), vars, &[]);
            let _ = std::fs::remove_file(&path);
            let should_load = matches!(
                name,
                "empty" | "defaults" | "top-level" | "sections" | "inline-tables" | "env"
            );
            assert_eq!(loaded.is_ok(), should_load, "{name}: {loaded:?}");
        }
    }

    /// Every file the fuzzer kept (and the seeds) runs clean on every `cargo test`.
    #[test]
    fn the_fuzz_corpus_replays() {
        let mut n = 0;
        for entry in std::fs::read_dir(corpus()).expect("fuzz/corpus/config exists") {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            on_small_stack(|| config(&bytes));
            n += 1;
        }
        assert!(n >= seeds().len(), "only {n} inputs");
    }

    /// Writes the seeds into the corpus: `cargo test -p weir --bin weir write_seeds
    /// -- --ignored`.
    #[test]
    #[ignore = "writes fuzz/corpus/config"]
    fn write_seeds() {
        std::fs::create_dir_all(corpus()).unwrap();
        for (name, bytes) in seeds() {
            std::fs::write(corpus().join(format!("seed-{name}")), bytes).unwrap();
        }
    }
}
