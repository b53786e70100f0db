//! What a run reports: throughput, latency percentiles and CPU time (the broker's
//! with `--pid`, and the load generator's own), as JSON and as a table.

use hdrhistogram::Histogram;
use serde_json::{Value, json};

use super::args::HttpArgs;
use super::bodies::NUMBERED_LEN;
use crate::bench::measure::{percentiles, round, seconds};
use crate::client::table::{Align, table};

/// CPU seconds of the run: the broker's (with its peak RSS, given `--pid`) and the
/// load generator's own.
pub(super) struct Cpu {
    broker: Option<(f64, u64)>,
    pub(super) client: f64,
}

impl Cpu {
    /// The CPU seconds used so far by the broker (given its pid) and by this process.
    pub(super) fn start(pid: Option<u32>) -> anyhow::Result<(Option<f64>, f64)> {
        use crate::bench::measure::process_cpu_seconds;
        Ok((
            pid.map(process_cpu_seconds).transpose()?,
            process_cpu_seconds(std::process::id())?,
        ))
    }

    /// What was used since `start`.
    pub(super) fn since(
        pid: Option<u32>,
        (broker, client): (Option<f64>, f64),
    ) -> anyhow::Result<Cpu> {
        use crate::bench::measure::{process_cpu_seconds, status_bytes};
        Ok(Cpu {
            broker: match (pid, broker) {
                (Some(pid), Some(before)) => Some((
                    process_cpu_seconds(pid)? - before,
                    status_bytes(pid, "VmHWM:")?,
                )),
                _ => None,
            },
            client: process_cpu_seconds(std::process::id())? - client,
        })
    }
}

/// The results.
pub(super) struct Report<'a> {
    pub(super) args: &'a HttpArgs,
    pub(super) queue: &'a str,
    /// See [`super::verification`].
    pub(super) verified: Option<bool>,
    /// Messages the consumers received, and how many of them twice (or not of
    /// this run).
    pub(super) received: u64,
    pub(super) duplicates: u64,
    pub(super) sent: u64,
    pub(super) acked: u64,
    /// From the start to the last send's answer.
    pub(super) send_seconds: f64,
    /// From the start to the last ack's answer.
    pub(super) receive_seconds: f64,
    pub(super) send_latency: Histogram<u64>,
    pub(super) ack_latency: Histogram<u64>,
    pub(super) end_to_end: Histogram<u64>,
    pub(super) interrupted: bool,
    pub(super) cpu: Cpu,
}

impl Report<'_> {
    fn verdict(&self) -> String {
        match self.verified {
            Some(true) => "yes".to_owned(),
            Some(false) => format!(
                "NO: {} sent, {} received, {} twice or not of this run",
                self.sent, self.received, self.duplicates
            ),
            None if self.args.consumers == 0 => "not checked (no consumers)".to_owned(),
            None => {
                format!("not checked (bodies under {NUMBERED_LEN} bytes carry no sequence number)")
            }
        }
    }

    /// CPU µs per message handled (each sent message, and each acked one, counts
    /// once).
    #[allow(clippy::cast_precision_loss)] // counts of a benchmark fit an f64
    fn per_message_us(&self, cpu_s: f64) -> f64 {
        let messages = self.sent + self.acked;
        if messages == 0 {
            0.0
        } else {
            round(cpu_s * 1e6 / messages as f64, 2)
        }
    }

    /// Messages and megabytes (10^6 bytes) per second.
    #[allow(clippy::cast_precision_loss)] // rates are shown with a few digits
    fn rates(&self, messages: u64, secs: f64) -> (f64, f64) {
        if secs <= 0.0 {
            return (0.0, 0.0);
        }
        let per_sec = messages as f64 / secs;
        (per_sec, per_sec * self.args.size as f64 / 1e6)
    }

    pub(super) fn json(&self) -> Value {
        let phase = |messages: u64, secs: f64, latency: &Histogram<u64>| {
            let (per_sec, mb) = self.rates(messages, secs);
            json!({
                "messages": messages,
                "seconds": round(secs, 3),
                "msgs_per_sec": round(per_sec, 1),
                "mb_per_sec": round(mb, 3),
                "latency_ms": percentiles(latency),
            })
        };
        json!({
            "queue": self.queue,
            "producers": self.args.producers,
            "consumers": self.args.consumers,
            "size": self.args.size,
            "batch": self.args.batch,
            "interrupted": self.interrupted,
            "verified": self.verified,
            "received": self.received,
            "duplicates": self.duplicates,
            "send": phase(self.sent, self.send_seconds, &self.send_latency),
            "receive_ack": phase(self.acked, self.receive_seconds, &self.ack_latency),
            "end_to_end_latency_ms": percentiles(&self.end_to_end),
            "broker_cpu_seconds": self.cpu.broker.map(|(s, _)| round(s, 2)),
            "broker_cpu_us_per_message": self.cpu.broker.map(|(s, _)| self.per_message_us(s)),
            "broker_peak_rss_bytes": self.cpu.broker.map(|(_, rss)| rss),
            "client_cpu_us_per_message": self.per_message_us(self.cpu.client),
        })
    }

    #[allow(clippy::cast_precision_loss)] // megabytes are shown with one decimal
    pub(super) fn human(&self) -> String {
        use std::fmt::Write as _;
        let ms = |us: u64| format!("{:.2}", seconds(us) * 1e3);
        let latency_cells = |h: &Histogram<u64>| -> Vec<String> {
            if h.is_empty() {
                return vec!["-".into(); 5];
            }
            vec![
                ms(h.value_at_quantile(0.50)),
                ms(h.value_at_quantile(0.90)),
                ms(h.value_at_quantile(0.99)),
                ms(h.value_at_quantile(0.999)),
                ms(h.max()),
            ]
        };
        let row = |name: &str, messages: u64, secs: f64, h: &Histogram<u64>| {
            let (per_sec, mb) = self.rates(messages, secs);
            let mut cells = vec![
                name.to_owned(),
                messages.to_string(),
                format!("{secs:.2}"),
                format!("{per_sec:.0}"),
                format!("{mb:.2}"),
            ];
            cells.extend(latency_cells(h));
            cells
        };
        let mut rows = vec![row(
            "send",
            self.sent,
            self.send_seconds,
            &self.send_latency,
        )];
        if self.args.consumers > 0 {
            rows.push(row(
                "receive+ack",
                self.acked,
                self.receive_seconds,
                &self.ack_latency,
            ));
            let mut e2e = vec![
                "end-to-end".to_owned(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
            ];
            e2e.extend(latency_cells(&self.end_to_end));
            rows.push(e2e);
        }
        let columns = [
            ("", Align::Left),
            ("MESSAGES", Align::Right),
            ("SECONDS", Align::Right),
            ("MSG/S", Align::Right),
            ("MB/S", Align::Right),
            ("P50 MS", Align::Right),
            ("P90 MS", Align::Right),
            ("P99 MS", Align::Right),
            ("P99.9 MS", Align::Right),
            ("MAX MS", Align::Right),
        ];
        let a = self.args;
        let mut out = format!(
            "weir bench http: queue {}, {} producers, {} consumers, {} B bodies, batches of {}{}\n",
            self.queue,
            a.producers,
            a.consumers,
            a.size,
            a.batch,
            if self.interrupted {
                " (interrupted)"
            } else {
                ""
            },
        );
        out.push_str(&table(&columns, &rows));
        let _ = writeln!(out, "verified (each once, in full): {}", self.verdict());
        if let Some((cpu_s, rss)) = self.cpu.broker {
            let _ = writeln!(
                out,
                "broker: {cpu_s:.2} CPU-s ({:.2} µs per message sent or acked), peak RSS {:.1} MB",
                self.per_message_us(cpu_s),
                rss as f64 / 1e6
            );
        }
        let _ = writeln!(
            out,
            "load generator: {:.2} CPU-µs per message sent or acked",
            self.per_message_us(self.cpu.client)
        );
        out.push_str(
            "latency: send = one batch request; receive+ack = receive request to ack answer; \
             end-to-end = send request to receipt\n",
        );
        out
    }
}
