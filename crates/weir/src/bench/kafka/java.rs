//! The Java client's consumer in `weir bench kafka --java-jars DIR`: the records
//! the librdkafka producer sent are read a second time by Apache's kafka-clients
//! (the jars in DIR, as `./scripts/test` installs them), so that the consumer
//! figure is not one client's alone. A librdkafka consumer spends most of a core
//! per 1.5 M small records; the Java consumer decodes them in less.
//!
//! `WeirBenchRead.java` is compiled with `javac` into a temporary directory and
//! run with `java` (both from `PATH`), with the JVM settings of Kafka's own
//! `kafka-consumer-perf-test.sh` ([`JVM`]; `JAVA_TOOL_OPTIONS` adds to them). It
//! connects without TLS or SASL (the `-X` settings are librdkafka's).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context as _;
use serde::Deserialize;

const SOURCE: &str = include_str!("WeirBenchRead.java");
const CLASS: &str = "WeirBenchRead";

/// The heap and collector Kafka's `kafka-run-class.sh` gives its tools.
const JVM: [&str; 5] = [
    "-Xmx512M",
    "-server",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
];

/// What the Java consumer reports.
#[derive(Debug, Deserialize)]
pub(super) struct JavaRead {
    pub(super) records: u64,
    /// Bytes of the values.
    pub(super) bytes: u64,
    /// From the first record to the last.
    pub(super) seconds: f64,
    /// The JVM's CPU time over those seconds.
    pub(super) cpu_seconds: f64,
    /// Sequence numbers seen (each record once: `records` of them).
    pub(super) distinct: u64,
    pub(super) duplicates: u64,
    pub(super) unnumbered: u64,
}

impl JavaRead {
    /// Whether it read `expected` records, each once.
    pub(super) fn holds_exactly(&self, expected: u64) -> bool {
        self.records == expected
            && self.distinct == expected
            && self.duplicates == 0
            && self.unnumbered == 0
    }
}

/// A temporary directory, removed when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Reads `topic` from its first record with the Java consumer until `expected`
/// records came (or none for 10 s).
///
/// # Errors
/// No jars in `jars`, `javac` or `java` missing or failing, or an answer that
/// does not parse.
pub(super) fn read(
    jars: &Path,
    bootstrap: &str,
    topic: &str,
    expected: u64,
) -> anyhow::Result<JavaRead> {
    let mut path: Vec<PathBuf> = std::fs::read_dir(jars)
        .with_context(|| format!("--java-jars {}", jars.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "jar"))
        .collect();
    anyhow::ensure!(
        path.iter().any(|p| p
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("kafka-clients"))),
        "--java-jars {}: no kafka-clients jar there",
        jars.display()
    );
    path.sort();
    let scratch =
        Scratch(std::env::temp_dir().join(format!("weir-bench-java-{}", std::process::id())));
    std::fs::create_dir_all(&scratch.0).context("a temporary directory for the Java consumer")?;
    let source = scratch.0.join(format!("{CLASS}.java"));
    std::fs::write(&source, SOURCE).context("writing the Java consumer's source")?;
    path.push(scratch.0.clone());
    let class_path = std::env::join_paths(&path).context("the class path")?;
    let compiled = Command::new("javac")
        .arg("-nowarn")
        .arg("-cp")
        .arg(&class_path)
        .arg("-d")
        .arg(&scratch.0)
        .arg(&source)
        .output()
        .context("running javac: --java-jars needs a JDK (javac and java on PATH)")?;
    anyhow::ensure!(
        compiled.status.success(),
        "javac failed: {}",
        String::from_utf8_lossy(&compiled.stderr)
    );
    let ran = Command::new("java")
        .args(JVM)
        .arg("-cp")
        .arg(&class_path)
        .arg(CLASS)
        .args([bootstrap, topic, &expected.to_string()])
        .output()
        .context("running java")?;
    let stdout = String::from_utf8_lossy(&ran.stdout);
    anyhow::ensure!(
        ran.status.success(),
        "the Java consumer failed: {stdout}{}",
        String::from_utf8_lossy(&ran.stderr)
    );
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).with_context(|| format!("the Java consumer's answer: {stdout}"))
}
