//! The log against the machine's own limits, in one run:
//!
//! ```text
//! cargo bench -p weir-log --bench throughput
//! ```
//!
//! It measures `dd`'s bandwidth (`bs=1M count=1000 conv=fdatasync`) and sync rate
//! (`bs=4k count=2000 oflag=dsync`) in the same directory, then:
//! 1. durable appends, `fsync = always`, 64 concurrent appenders of 1 KiB records
//!    (batches of 64 records, and of 1 record);
//! 2. 100-byte records in batches of 1,000, `fsync = interval:200`;
//! 3. reading the log of (1) from offset 0 with a warm page cache;
//! 4. opening a 1 GiB log after its writer was killed with `kill -9`.
//!
//! Each measure runs `WEIR_BENCH_ROUNDS` times (default 3); durable appends are
//! bracketed by `dd` runs in every round and compared with their mean, and the table
//! shows medians. `WEIR_BENCH_DIR` picks the directory (default: the temp dir; use one
//! on the disk you want measured); `WEIR_BENCH_ONLY=durable,interval,read,recovery`
//! runs a subset.

// Benchmark code: numeric casts between counters and sizes are intended, and scenario
// functions read better whole than split to satisfy a line count.
#![allow(
    clippy::cast_possible_wrap,
    clippy::cast_precision_loss,
    clippy::cast_sign_loss,
    clippy::too_many_lines,
    clippy::needless_pass_by_value
)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use weir_log::{FileLog, FsyncPolicy, LogConfig, MessageLog, NewRecord, Offset, ReadLimits};

const CHILD_VAR: &str = "WEIR_BENCH_RECOVERY_CHILD";
const GIB: u64 = 1 << 30;

fn main() {
    if let Ok(dir) = std::env::var(CHILD_VAR) {
        recovery_child(Path::new(&dir));
        return;
    }
    let base = std::env::var("WEIR_BENCH_DIR").map_or_else(|_| std::env::temp_dir(), PathBuf::from);
    let rounds: usize = std::env::var("WEIR_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    let work = tempfile::tempdir_in(&base).expect("a work directory");
    println!(
        "# weir-log throughput, {rounds} rounds, directory {}",
        work.path().display()
    );
    println!("machine: {}", machine());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    let only = std::env::var("WEIR_BENCH_ONLY").unwrap_or_default();
    let run = |name: &str| only.is_empty() || only.split(',').any(|o| o == name);
    let mut rows = Vec::new();
    if run("durable") {
        // Each round is bracketed by dd runs and compared with their mean: this disk's
        // speed drifts by 2-5x from minute to minute, so only neighbours compare.
        let (mut ratios, mut ours, mut dds, mut sync_ratios, mut singles, mut syncs) =
            (vec![], vec![], vec![], vec![], vec![], vec![]);
        let mut per_sync = Vec::new();
        for round in 0..rounds {
            let before = dd_bandwidth(work.path());
            let dir = work.path().join(format!("durable-{round}"));
            let batched = runtime.block_on(durable_appends(&dir, 64, 64, GIB));
            std::fs::remove_dir_all(&dir).unwrap();
            let after = dd_bandwidth(work.path());
            let dd_mean = f64::midpoint(before, after);
            ratios.push(batched.mb_per_s / dd_mean);
            ours.push(batched.mb_per_s);
            dds.push(dd_mean);

            let sync_before = dd_sync_rate(work.path());
            let dir = work.path().join(format!("single-{round}"));
            let single = runtime.block_on(durable_appends(&dir, 64, 1, 128 << 20));
            std::fs::remove_dir_all(&dir).unwrap();
            let sync_after = dd_sync_rate(work.path());
            let sync_mean = f64::midpoint(sync_before, sync_after);
            sync_ratios.push(single.appends_per_s / sync_mean);
            singles.push(single.appends_per_s);
            per_sync.push(single.appends_per_sync);
            syncs.push(sync_mean);
            eprintln!(
                "round {}: {:.0} MB/s vs dd {before:.0}/{after:.0} MB/s; {:.0} single appends/s vs dd {sync_mean:.0} syncs/s",
                round + 1,
                batched.mb_per_s,
                single.appends_per_s
            );
        }
        rows.push(row(
            "durable appends, fsync=always, 64 appenders x 64 x 1 KiB records per append",
            format!("{:.0} MB/s", median(&ours)),
            format!("dd {:.0} MB/s", median(&dds)),
            format!(
                "{:.0}% (median of per-round ratios)",
                100.0 * median(&ratios)
            ),
            ">= 70% of dd",
        ));
        rows.push(row(
            "durable appends, fsync=always, 64 appenders x 1 x 1 KiB record per append",
            format!(
                "{:.0} appends/s ({:.0} MB/s)",
                median(&singles),
                median(&singles) * 1024.0 / 1e6
            ),
            format!("dd {:.0} syncs/s of 4 KiB", median(&syncs)),
            format!(
                "{:.1}x dd's sync rate; {:.1} appends per fdatasync",
                median(&sync_ratios),
                median(&per_sync)
            ),
            "(group commit)",
        ));
    }
    if run("interval") {
        let mut rates = Vec::new();
        for round in 0..rounds {
            let dir = work.path().join(format!("interval-{round}"));
            rates.push(runtime.block_on(interval_appends(&dir)));
            std::fs::remove_dir_all(&dir).unwrap();
        }
        rows.push(row(
            "100 B records in batches of 1,000, fsync=interval:200",
            format!("{:.2} M records/s", median(&rates) / 1e6),
            "-".into(),
            "-".into(),
            ">= 2 M records/s",
        ));
    }
    if run("read") {
        let dir = work.path().join("read");
        runtime.block_on(durable_appends(&dir, 64, 64, GIB));
        let reads: Vec<f64> = (0..rounds)
            .map(|_| runtime.block_on(warm_read(&dir)))
            .collect();
        std::fs::remove_dir_all(&dir).unwrap();
        rows.push(row(
            "read 1 GiB of 1 KiB records from offset 0, warm page cache",
            format!("{:.2} GB/s", median(&reads)),
            "-".into(),
            "-".into(),
            ">= 1 GB/s",
        ));
    }
    if run("recovery") {
        let recovery = recovery_after_kill(work.path());
        rows.push(row(
            "open a 1 GiB log after kill -9 of its writer",
            format!(
                "{:.1} ms (scanned {} KiB, {} segments)",
                recovery.elapsed.as_secs_f64() * 1000.0,
                recovery.scanned / 1024,
                recovery.segments
            ),
            "-".into(),
            "-".into(),
            "< 1 s",
        ));
        if let Some(cold) = recovery.cold {
            rows.push(row(
                "the same, page cache dropped first (cold)",
                format!("{:.1} ms", cold.as_secs_f64() * 1000.0),
                "-".into(),
                "-".into(),
                "< 1 s",
            ));
        }
    }

    println!();
    println!("| measure | weir-log | machine limit | ratio | target |");
    println!("|---|---|---|---|---|");
    for r in rows {
        println!("{r}");
    }
}

fn row(measure: &str, value: String, limit: String, ratio: String, target: &str) -> String {
    format!("| {measure} | {value} | {limit} | {ratio} | {target} |")
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    format!("{cores} cores ({cpu})")
}

/// Runs dd and returns bytes/s as MB/s (10^6).
fn dd(args: &[&str], dir: &Path, file: &str) -> f64 {
    let path = dir.join(file);
    let out = Command::new("dd")
        .args(args)
        .arg(format!("of={}", path.display()))
        .stderr(Stdio::piped())
        .output()
        .expect("dd runs");
    std::fs::remove_file(&path).ok();
    let text = String::from_utf8_lossy(&out.stderr);
    // "1048576000 bytes (1.0 GB, 1000 MiB) copied, 0.45 s, 2.3 GB/s"
    let line = text
        .lines()
        .find(|l| l.contains("copied"))
        .expect("dd summary line");
    let bytes: f64 = line.split(' ').next().unwrap().parse().unwrap();
    let secs: f64 = line
        .split(", ")
        .find(|p| p.ends_with(" s"))
        .and_then(|p| p.trim_end_matches(" s").parse().ok())
        .expect("dd seconds");
    bytes / secs / 1e6
}

fn dd_bandwidth(dir: &Path) -> f64 {
    dd(
        &["if=/dev/zero", "bs=1M", "count=1000", "conv=fdatasync"],
        dir,
        "dd-bw",
    )
}

/// dd's synced 4 KiB writes per second.
fn dd_sync_rate(dir: &Path) -> f64 {
    let mb_per_s = dd(
        &["if=/dev/zero", "bs=4k", "count=2000", "oflag=dsync"],
        dir,
        "dd-sync",
    );
    mb_per_s * 1e6 / 4096.0
}

struct AppendResult {
    mb_per_s: f64,
    appends_per_s: f64,
    appends_per_sync: f64,
}

/// `appenders` tasks append batches of `per_append` 1 KiB records until `total`
/// bytes of records are durable.
async fn durable_appends(
    dir: &Path,
    appenders: usize,
    per_append: usize,
    total: u64,
) -> AppendResult {
    let (log, _) = FileLog::open(dir, LogConfig::default()).unwrap();
    let body = Bytes::from(vec![b'x'; 1024]);
    let batch: Arc<Vec<NewRecord>> = Arc::new(
        (0..per_append)
            .map(|_| NewRecord::new(body.clone()))
            .collect(),
    );
    let budget = Arc::new(AtomicU64::new(total / (1024 * per_append as u64)));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..appenders {
        let (log, batch, budget) = (log.clone(), batch.clone(), budget.clone());
        tasks.push(tokio::spawn(async move {
            let mut appends = 0u64;
            while budget
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| b.checked_sub(1))
                .is_ok()
            {
                log.append_batch(&batch).await.unwrap();
                appends += 1;
            }
            appends
        }));
    }
    let mut appends = 0;
    for t in tasks {
        appends += t.await.unwrap();
    }
    let secs = started.elapsed().as_secs_f64();
    let stats = log.stats();
    log.close().await.unwrap();
    let bytes = appends * per_append as u64 * 1024;
    AppendResult {
        mb_per_s: bytes as f64 / secs / 1e6,
        appends_per_s: appends as f64 / secs,
        appends_per_sync: stats.appends as f64 / stats.data_syncs.max(1) as f64,
    }
}

/// Records per second: 100 B records in batches of 1,000, `fsync = interval:200`.
async fn interval_appends(dir: &Path) -> f64 {
    let config = LogConfig {
        fsync: FsyncPolicy::Interval(Duration::from_millis(200)),
        ..LogConfig::default()
    };
    let (log, _) = FileLog::open(dir, config).unwrap();
    let body = Bytes::from(vec![b'r'; 100]);
    let batch: Arc<Vec<NewRecord>> =
        Arc::new((0..1000).map(|_| NewRecord::new(body.clone())).collect());
    let batches_each = 2_500u64;
    let appenders = 4u64;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..appenders {
        let (log, batch) = (log.clone(), batch.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..batches_each {
                log.append_batch(&batch).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let secs = started.elapsed().as_secs_f64();
    log.close().await.unwrap();
    (appenders * batches_each * 1000) as f64 / secs
}

/// GB/s of record bytes read from offset 0 to the end, 1 MiB per read.
async fn warm_read(dir: &Path) -> f64 {
    let (log, _) = FileLog::open(dir, LogConfig::default()).unwrap();
    // A first pass makes sure the page cache holds the log.
    for pass in 0..2 {
        let started = Instant::now();
        let mut from = Offset(0);
        let mut bytes = 0u64;
        let end = log.next_offset();
        while from < end {
            let records = log
                .read_from(from, ReadLimits::new(usize::MAX, 1 << 20))
                .await
                .unwrap();
            bytes += records
                .iter()
                .map(|r| r.body.len() as u64 + 18)
                .sum::<u64>();
            from = records.last().unwrap().offset.next();
        }
        if pass == 1 {
            log.close().await.unwrap();
            return bytes as f64 / started.elapsed().as_secs_f64() / 1e9;
        }
    }
    unreachable!()
}

struct Recovery {
    elapsed: Duration,
    cold: Option<Duration>,
    scanned: u64,
    segments: usize,
}

/// Child mode: append 64 KiB batches from 16 tasks until killed.
fn recovery_child(dir: &Path) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (log, _) = FileLog::open(dir, LogConfig::default()).unwrap();
        let body = Bytes::from(vec![b'k'; 1024]);
        let batch: Arc<Vec<NewRecord>> =
            Arc::new((0..64).map(|_| NewRecord::new(body.clone())).collect());
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let (log, batch) = (log.clone(), batch.clone());
            tasks.push(tokio::spawn(async move {
                for _ in 0..1_000_000 {
                    log.append_batch(&batch).await.unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir).map_or(0, |d| {
        d.filter_map(|e| e.ok()?.metadata().ok())
            .map(|m| m.len())
            .sum()
    })
}

fn recovery_after_kill(work: &Path) -> Recovery {
    let dir = work.join("recovery");
    std::fs::create_dir_all(&dir).unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env(CHILD_VAR, &dir)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    while dir_bytes(&dir) < GIB + (GIB >> 4) {
        std::thread::sleep(Duration::from_millis(20));
        assert!(
            child.try_wait().unwrap().is_none(),
            "the writer child exited"
        );
    }
    child.kill().unwrap(); // SIGKILL, mid-append
    child.wait().unwrap();
    let started = Instant::now();
    let (log, report) = FileLog::open(&dir, LogConfig::default()).unwrap();
    let elapsed = started.elapsed();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(log.close()).unwrap();
    // A cold open needs the page cache dropped, which needs root.
    let cold = std::fs::write("/proc/sys/vm/drop_caches", "3")
        .ok()
        .map(|()| {
            let started = Instant::now();
            let (log, _) = FileLog::open(&dir, LogConfig::default()).unwrap();
            let elapsed = started.elapsed();
            runtime.block_on(log.close()).unwrap();
            elapsed
        });
    Recovery {
        elapsed,
        cold,
        scanned: report.scanned_bytes,
        segments: report.segments,
    }
}
