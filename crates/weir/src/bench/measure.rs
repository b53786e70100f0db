//! What every `weir bench` shares: latency histograms and their percentiles, the
//! progress bar, the broker's CPU time and memory from `/proc`, and `--compare`
//! (the same workload against two brokers, side by side, as ratios). A leaf: the
//! benchmarks import it, it imports none of them.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use hdrhistogram::Histogram;
use serde_json::{Value, json};

use crate::client::table::{Align, table};

pub(crate) fn histogram() -> Histogram<u64> {
    // 1 µs to an hour at 3 significant figures: a few dozen KiB per histogram.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("invariant: constant bounds are valid")
}

pub(crate) fn add(total: &mut Histogram<u64>, part: &Histogram<u64>) {
    // Same bounds everywhere, so adding cannot fail; saturate rather than panic.
    let _ = total.add(part);
}

pub(crate) fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

#[allow(clippy::cast_precision_loss)] // microseconds of a benchmark fit an f64
pub(crate) fn seconds(us: u64) -> f64 {
    us as f64 / 1e6
}

/// The bar a run shows on stderr (on a terminal; hidden with `--json`): out of
/// `len` messages, or a spinner for a run of fixed duration.
pub(crate) fn progress_bar(json: bool, len: Option<u64>) -> indicatif::ProgressBar {
    if json {
        return indicatif::ProgressBar::hidden();
    }
    let (bar, template) = match len {
        Some(n) => (
            indicatif::ProgressBar::new(n),
            "{elapsed_precise} [{bar:40}] {pos}/{len} {msg}",
        ),
        None => (
            indicatif::ProgressBar::new_spinner(),
            "{spinner} {elapsed_precise} {msg}",
        ),
    };
    if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// `value` rounded to `decimals` places, so the JSON shows `1.5`, not
/// `1.5000000000000002`.
pub(crate) fn round(value: f64, decimals: i32) -> f64 {
    let scale = 10_f64.powi(decimals);
    (value * scale).round() / scale
}

/// Latency percentiles of one histogram, in milliseconds (to the microsecond).
pub(crate) fn percentiles(h: &Histogram<u64>) -> Value {
    if h.is_empty() {
        return Value::Null;
    }
    let ms = |us: u64| round(seconds(us) * 1e3, 3);
    json!({
        "count": h.len(),
        "p50": ms(h.value_at_quantile(0.50)),
        "p90": ms(h.value_at_quantile(0.90)),
        "p99": ms(h.value_at_quantile(0.99)),
        "p99_9": ms(h.value_at_quantile(0.999)),
        "max": ms(h.max()),
    })
}

pub(crate) fn exit_code(ok: bool) -> ExitCode {
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `--compare` and its companions, for `weir bench amqp` and `weir bench http`.
#[derive(clap::Args, Debug)]
pub struct CompareArgs {
    /// A second broker's URL (same protocol): the same workload runs against both,
    /// alternating (A B A B ...), and a side-by-side table gives the ratios A / B.
    #[arg(id = "compare", long = "compare", value_name = "URL")]
    pub(crate) url: Option<String>,
    /// The second broker's process id (with `--compare`).
    #[arg(
        id = "compare_pid",
        long = "compare-pid",
        value_name = "PID",
        requires = "compare"
    )]
    pub(crate) pid: Option<u32>,
    /// Runs against each broker with `--compare`.
    #[arg(long, default_value_t = 2, requires = "compare", value_parser = clap::value_parser!(u32).range(1..=20))]
    pub(crate) rounds: u32,
}

/// The runs of both brokers, and the ratio of their means per metric.
#[allow(clippy::cast_precision_loss)] // a handful of rounds
pub(crate) fn compare(
    a_url: &str,
    b_url: &str,
    rounds: &[(Value, Value)],
    compared: &[(&str, &str)],
) -> Value {
    let mean = |side: usize, pointer: &str| {
        let values: Vec<f64> = rounds
            .iter()
            .filter_map(|(a, b)| if side == 0 { a } else { b }.pointer(pointer)?.as_f64())
            .collect();
        (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
    };
    let mut ratios = serde_json::Map::new();
    for &(name, pointer) in compared {
        let ratio = match (mean(0, pointer), mean(1, pointer)) {
            (Some(a), Some(b)) if b > 0.0 => json!((a / b * 100.0).round() / 100.0),
            _ => Value::Null,
        };
        ratios.insert(name.to_owned(), ratio);
    }
    json!({
        "a": redact(a_url),
        "b": redact(b_url),
        "rounds": rounds.iter().map(|(a, b)| json!({"a": a, "b": b})).collect::<Vec<_>>(),
        "ratio_a_over_b": ratios,
    })
}

/// Shows a `--compare` run (the side-by-side table, or JSON with `json`) and
/// answers success only if no round of either broker failed its verification.
pub(crate) fn finish_comparison(
    json: bool,
    a_url: &str,
    b_url: &str,
    rounds: &[(Value, Value)],
    compared: &[(&str, &str)],
) -> ExitCode {
    let comparison = compare(a_url, b_url, rounds, compared);
    if json {
        println!("{comparison}");
    } else {
        print_comparison(&comparison, compared);
    }
    let verified = rounds
        .iter()
        .all(|(a, b)| a["verified"] != json!(false) && b["verified"] != json!(false));
    exit_code(verified)
}

pub(crate) fn print_comparison(c: &Value, compared: &[(&str, &str)]) {
    let runs = c["rounds"].as_array().cloned().unwrap_or_default();
    let cells = |side: &str, pointer: &str| {
        runs.iter()
            .map(|r| {
                r[side]
                    .pointer(pointer)
                    .map_or("-".to_owned(), Value::to_string)
            })
            .collect::<Vec<_>>()
            .join(" / ")
    };
    let mut rows: Vec<Vec<String>> = compared
        .iter()
        .map(|(name, pointer)| {
            vec![
                (*name).to_owned(),
                cells("a", pointer),
                cells("b", pointer),
                c["ratio_a_over_b"][*name].to_string(),
            ]
        })
        .collect();
    rows.push(vec![
        "verified".to_owned(),
        cells("a", "/verified"),
        cells("b", "/verified"),
        String::new(),
    ]);
    println!(
        "A = {}\nB = {}  (values per round, A B A B ...)",
        show(&c["a"]),
        show(&c["b"])
    );
    print!(
        "{}",
        table(
            &[
                ("measure", Align::Left),
                ("A", Align::Right),
                ("B", Align::Right),
                ("A / B", Align::Right),
            ],
            &rows,
        )
    );
}

pub(crate) fn show(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The URL without its password.
pub(crate) fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            let user = creds.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

/// utime + stime of a process, seconds.
#[allow(clippy::cast_precision_loss)] // clock ticks of a benchmark fit an f64
pub(crate) fn process_cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // The command name may hold spaces: fields start after its closing ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    Ok(ticks as f64 / USER_HZ)
}

/// The kernel's clock ticks per second in /proc (`USER_HZ`): 100 on every Linux.
const USER_HZ: f64 = 100.0;

/// Peak resident set size of a process (`VmHWM`), bytes.
pub(crate) fn peak_rss_bytes(pid: u32) -> anyhow::Result<u64> {
    status_bytes(pid, "VmHWM:")
}

/// A size field of `/proc/<pid>/status` (`VmRSS:`, `VmHWM:`), bytes.
pub(crate) fn status_bytes(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    Ok(kb * 1024)
}
