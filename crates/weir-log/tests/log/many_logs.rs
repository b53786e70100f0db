//! Many logs in one process (issue 19): the threads they cost, and a by-hand
//! measurement of threads and memory with 10,000 open logs.

use std::path::Path;

use weir_log::{FileLog, FsyncPolicy, LogConfig, MessageLog, NewRecord, Offset, ReadLimits};

use crate::common::block_on;

/// Threads of this process, from `/proc/self/task`.
fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(0, Iterator::count)
}

/// Resident memory of this process in KiB, from `/proc/self/status`.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn always() -> LogConfig {
    LogConfig {
        fsync: FsyncPolicy::Always,
        ..LogConfig::default()
    }
}

/// Opens `n` logs under `root` and gives each a staged and a plain append.
fn open_and_append(root: &Path, n: usize) -> Vec<FileLog> {
    let logs: Vec<FileLog> = (0..n)
        .map(|i| {
            FileLog::open(root.join(format!("q{i}")), always())
                .expect("the log opens")
                .0
        })
        .collect();
    block_on(async {
        let mut durable = Vec::with_capacity(n);
        for (i, log) in logs.iter().enumerate() {
            let (written, synced) = log.submit_batch_staged(&[NewRecord::new(format!("s{i}"))]);
            written.await.expect("written");
            durable.push(synced);
        }
        for synced in durable {
            synced.await.expect("synced");
        }
        for (i, log) in logs.iter().enumerate() {
            let appended = log
                .append_batch(&[NewRecord::new(format!("p{i}"))])
                .await
                .expect("a plain append");
            assert_eq!(appended.first, Offset(1));
        }
    });
    logs
}

/// Issue 19: the log's threads are a pool sized by the machine, not one writer and
/// one sync thread per log.
#[test]
fn two_thousand_logs_run_on_a_bounded_number_of_threads() {
    let root = tempfile::tempdir().expect("a temporary directory");
    // Starts the pools (and the read pool) before the baseline is taken.
    drop(open_and_append(&root.path().join("warm-up"), 1));
    let before = threads();
    let logs = open_and_append(root.path(), 2_000);
    let during = threads();
    assert!(
        during < before + 64,
        "{during} threads with 2,000 logs open, {before} before"
    );
    block_on(async {
        for (i, log) in logs.iter().enumerate() {
            let records = log
                .read_from(Offset(0), ReadLimits::records(10))
                .await
                .expect("read");
            assert_eq!(records.len(), 2);
            assert_eq!(records[1].body, format!("p{i}").as_bytes());
            log.close().await.expect("close");
        }
    });
}

/// Threads and resident memory with 10,000 open logs (`fsync = always`, one small
/// staged append each), or `WEIR_MEASURE_LOGS` of them. By hand, with enough file
/// descriptors (three per log while it is open):
///
/// ```text
/// ulimit -n 100000; WEIR_MEASURE_LOGS=10000 cargo test -p weir-log --release \
///     --test log -- many_logs::measure_ten_thousand_logs --ignored --nocapture
/// ```
#[test]
#[ignore = "a measurement: run by hand"]
fn measure_ten_thousand_logs() {
    let n: usize = std::env::var("WEIR_MEASURE_LOGS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(10_000);
    let root = tempfile::tempdir().expect("a temporary directory");
    let (threads_before, rss_before) = (threads(), rss_kib());
    let started = std::time::Instant::now();
    let logs: Vec<FileLog> = (0..n)
        .map(|i| {
            FileLog::open(root.path().join(format!("q{i}")), always())
                .expect("the log opens")
                .0
        })
        .collect();
    block_on(async {
        let mut durable = Vec::with_capacity(logs.len());
        for (i, log) in logs.iter().enumerate() {
            let (written, synced) = log.submit_batch_staged(&[NewRecord::new(format!("m{i}"))]);
            written.await.expect("written");
            durable.push(synced);
        }
        for synced in durable {
            synced.await.expect("synced");
        }
    });
    let elapsed = started.elapsed();
    println!(
        "{n} logs: threads {threads_before} -> {}, VmRSS {rss_before} KiB -> {} KiB, open files {}, opened and appended in {:.1} s",
        threads(),
        rss_kib(),
        weir_log::io::open_files(),
        elapsed.as_secs_f64()
    );
    block_on(async {
        for log in &logs {
            log.close().await.expect("close");
        }
    });
}
