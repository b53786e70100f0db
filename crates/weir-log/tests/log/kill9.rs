//! The real thing: a child process appends with `fsync = always` and prints every
//! acknowledged offset; the parent `kill -9`s it at a random moment, reopens the
//! directory, and checks every printed offset reads back with the right content.
//! Three rounds on the same directory, so recovery also runs on a recovered log.
//!
//! The child is this test binary itself, re-run with a filter that selects only
//! [`child_appends_until_killed`] (ignored in normal runs).

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use weir_log::{FileLog, LogConfig, MessageLog, NewRecord, Offset, ReadLimits};

use crate::common::block_on;

const DIR_VAR: &str = "WEIR_LOG_KILL9_DIR";
const ROUND_VAR: &str = "WEIR_LOG_KILL9_ROUND";

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 256 * 1024,
        index_interval_bytes: 1024,
        ..LogConfig::default()
    }
}

fn body(round: u64, task: u64, seq: u64, i: u64) -> String {
    let pad = "0123456789".repeat(((round * 7 + task * 3 + seq) % 30) as usize);
    format!("r{round} t{task} s{seq} i{i} {pad}")
}

/// Runs only as the child: appends from 8 tasks until killed.
#[test]
#[ignore = "child process of kill9::acknowledged_appends_survive_kill_9"]
fn child_appends_until_killed() {
    let Ok(dir) = std::env::var(DIR_VAR) else {
        return;
    };
    let round: u64 = std::env::var(ROUND_VAR).unwrap().parse().unwrap();
    let (log, _) = FileLog::open(&dir, config()).unwrap();
    block_on(async {
        let mut tasks = Vec::new();
        for task in 0..8u64 {
            let log = log.clone();
            tasks.push(tokio::spawn(async move {
                // Bounded, so an orphaned child cannot run forever.
                for seq in 0..200_000u64 {
                    let batch: Vec<_> = (0..=seq % 3)
                        .map(|i| NewRecord::new(body(round, task, seq, i)))
                        .collect();
                    let appended = log.append_batch(&batch).await.unwrap();
                    let mut out = String::new();
                    for (i, offset) in appended.offsets().enumerate() {
                        writeln!(out, "ACK {} {round} {task} {seq} {i}", offset.0).unwrap();
                    }
                    print!("{out}");
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
    });
}

#[test]
fn acknowledged_appends_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let seed = fastrand::u64(..);
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut acked: BTreeMap<u64, String> = BTreeMap::new();
    for round in 0..3u64 {
        let kill_after = rng.usize(200..4000);
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "kill9::child_appends_until_killed",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(DIR_VAR, dir.path())
            .env(ROUND_VAR, round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut seen = 0;
        for line in lines.by_ref() {
            if record_ack(&line.unwrap(), &mut acked) {
                seen += 1;
                if seen == kill_after {
                    break;
                }
            }
        }
        assert_eq!(seen, kill_after, "seed {seed}: the child stopped early");
        child.kill().unwrap(); // SIGKILL
        // Lines the child printed before it died were acknowledged too.
        for line in lines {
            let Ok(line) = line else { break };
            record_ack(&line, &mut acked);
        }
        child.wait().unwrap();

        let (log, report) = FileLog::open(dir.path(), config())
            .unwrap_or_else(|e| panic!("seed {seed}, round {round}: recovery failed: {e}"));
        let records = block_on(log.read_from(Offset(0), ReadLimits::records(usize::MAX))).unwrap();
        let by_offset: BTreeMap<u64, String> = records
            .iter()
            .map(|r| (r.offset.0, String::from_utf8(r.body.to_vec()).unwrap()))
            .collect();
        for (offset, expected) in &acked {
            assert_eq!(
                by_offset.get(offset),
                Some(expected),
                "seed {seed}, round {round}: acknowledged offset {offset} ({report:?})"
            );
        }
        // Nothing invented, nothing twice.
        let mut bodies = HashSet::new();
        for (offset, text) in &by_offset {
            let mut parts = text.split(' ');
            let fields: Vec<u64> = (0..4)
                .map(|_| parts.next().unwrap()[1..].parse().unwrap())
                .collect();
            assert_eq!(
                text,
                &body(fields[0], fields[1], fields[2], fields[3]),
                "seed {seed}: offset {offset}"
            );
            assert!(bodies.insert(text.clone()), "seed {seed}: {text} twice");
        }
        println!(
            "round {round}: killed after {kill_after} acks, {} acknowledged in all, {} records, report {report:?}",
            acked.len(),
            records.len()
        );
        block_on(log.close()).unwrap();
    }
}

/// Parses `ACK offset round task seq i` into the expected body at that offset.
fn record_ack(line: &str, acked: &mut BTreeMap<u64, String>) -> bool {
    let Some(rest) = line.strip_prefix("ACK ") else {
        return false;
    };
    // The kill can cut the last line anywhere: only whole lines count.
    let Ok(fields) = rest
        .split(' ')
        .map(str::parse)
        .collect::<Result<Vec<u64>, _>>()
    else {
        return false;
    };
    let [offset, round, task, seq, i] = fields[..] else {
        return false;
    };
    acked.insert(offset, body(round, task, seq, i));
    true
}
