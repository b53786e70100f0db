//! The Prometheus text exposition format, version 0.0.4: what `GET /metrics`
//! answers (decision 0010 says why weir writes it itself).
//!
//! A family is a `# HELP` and a `# TYPE` line, then its samples, one per line:
//! `name{label="value",...} value`. Label values escape `\`, `"` and newlines;
//! help texts escape `\` and newlines. A histogram's samples are its cumulative
//! `_bucket{le="..."}` counts, ending with `le="+Inf"`, then `_sum` and `_count`.

use std::fmt::Write as _;

use weir_broker::metrics::HistogramSnapshot;

/// A family's type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// The text being written, with a filter on family names.
pub(crate) struct Text<'a> {
    out: String,
    /// Families this answer shows (all when `None`).
    keep: Option<&'a regex::Regex>,
    /// Whether the family being written is shown.
    showing: bool,
}

impl<'a> Text<'a> {
    pub(crate) fn new(keep: Option<&'a regex::Regex>) -> Text<'a> {
        Text {
            out: String::with_capacity(16 << 10),
            keep,
            showing: true,
        }
    }

    /// Starts family `name`; its samples follow.
    pub(crate) fn family(&mut self, name: &str, kind: Kind, help: &str) {
        self.showing = self.keep.is_none_or(|keep| keep.is_match(name));
        if !self.showing {
            return;
        }
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        };
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    /// Whether the family being written is shown (its samples may be skipped).
    pub(crate) fn showing(&self) -> bool {
        self.showing
    }

    /// One sample of the family being written.
    pub(crate) fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        if !self.showing {
            return;
        }
        self.out.push_str(name);
        self.labels(labels, None);
        self.out.push(' ');
        push_value(&mut self.out, value);
        self.out.push('\n');
    }

    /// A family of one sample without labels.
    pub(crate) fn single(&mut self, name: &str, kind: Kind, help: &str, value: f64) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }

    /// A histogram family's samples, for `labels`.
    pub(crate) fn histogram(&mut self, name: &str, labels: &[(&str, &str)], h: &HistogramSnapshot) {
        if !self.showing {
            return;
        }
        let mut le = String::new();
        for (bound, count) in &h.buckets {
            le.clear();
            push_value(&mut le, *bound);
            let _ = write!(self.out, "{name}_bucket");
            self.labels(labels, Some(&le));
            let _ = writeln!(self.out, " {count}");
        }
        let _ = write!(self.out, "{name}_bucket");
        self.labels(labels, Some("+Inf"));
        let _ = writeln!(self.out, " {}", h.count);
        let _ = write!(self.out, "{name}_sum");
        self.labels(labels, None);
        self.out.push(' ');
        push_value(&mut self.out, h.sum);
        let _ = write!(self.out, "\n{name}_count");
        self.labels(labels, None);
        let _ = writeln!(self.out, " {}", h.count);
    }

    fn labels(&mut self, labels: &[(&str, &str)], le: Option<&str>) {
        if labels.is_empty() && le.is_none() {
            return;
        }
        self.out.push('{');
        let mut first = true;
        let all = labels.iter().copied().chain(le.map(|le| ("le", le)));
        for (name, value) in all {
            if !first {
                self.out.push(',');
            }
            first = false;
            self.out.push_str(name);
            self.out.push_str("=\"");
            for c in value.chars() {
                match c {
                    '\\' => self.out.push_str("\\\\"),
                    '"' => self.out.push_str("\\\""),
                    '\n' => self.out.push_str("\\n"),
                    c => self.out.push(c),
                }
            }
            self.out.push('"');
        }
        self.out.push('}');
    }

    pub(crate) fn finish(self) -> String {
        self.out
    }
}

/// A sample value as Prometheus parses it: integers without a fraction, `+Inf`,
/// `-Inf` and `NaN` spelled its way.
fn push_value(out: &mut String, value: f64) {
    if value.is_nan() {
        out.push_str("NaN");
    } else if value.is_infinite() {
        out.push_str(if value > 0.0 { "+Inf" } else { "-Inf" });
    } else if value.fract() == 0.0 && value.abs() < 1e15 {
        let _ = write!(out, "{}", value as i64);
    } else {
        let _ = write!(out, "{value}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_samples_and_histograms_in_the_text_format() {
        let mut t = Text::new(None);
        t.family("weir_x", Kind::Gauge, "an \\ odd\nhelp");
        t.sample("weir_x", &[("queue", "a\"b\\c\nd")], 1.5);
        t.single("weir_y_total", Kind::Counter, "y", 3.0);
        t.family("weir_h", Kind::Histogram, "h");
        let h = HistogramSnapshot {
            buckets: vec![(0.001, 1), (0.01, 3)],
            count: 4,
            sum: 0.25,
        };
        t.histogram("weir_h", &[("kind", "data")], &h);
        assert_eq!(
            t.finish(),
            "# HELP weir_x an \\\\ odd\\nhelp\n# TYPE weir_x gauge\n\
             weir_x{queue=\"a\\\"b\\\\c\\nd\"} 1.5\n\
             # HELP weir_y_total y\n# TYPE weir_y_total counter\nweir_y_total 3\n\
             # HELP weir_h h\n# TYPE weir_h histogram\n\
             weir_h_bucket{kind=\"data\",le=\"0.001\"} 1\n\
             weir_h_bucket{kind=\"data\",le=\"0.01\"} 3\n\
             weir_h_bucket{kind=\"data\",le=\"+Inf\"} 4\n\
             weir_h_sum{kind=\"data\"} 0.25\nweir_h_count{kind=\"data\"} 4\n"
        );
    }

    #[test]
    fn a_family_filter_leaves_other_families_out() {
        let keep = regex::Regex::new("^(?:weir_y.*)$").unwrap();
        let mut t = Text::new(Some(&keep));
        t.single("weir_x", Kind::Gauge, "x", 1.0);
        t.single("weir_y", Kind::Gauge, "y", 2.0);
        assert_eq!(
            t.finish(),
            "# HELP weir_y y\n# TYPE weir_y gauge\nweir_y 2\n"
        );
    }
}
