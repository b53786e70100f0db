//! Hand-formatted output for people: aligned columns, escaped bodies, short sizes
//! and ages. Scripts use `--json` instead, so nothing here is a stable format.

use super::api::Delivery;

/// How a column lines up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Align {
    /// Text.
    Left,
    /// Numbers.
    Right,
}

/// Lays out `rows` under `columns`, two spaces apart. The last column is not padded,
/// so a long body does not push trailing blanks onto every line.
pub fn table(columns: &[(&str, Align)], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = columns
        .iter()
        .map(|(name, _)| name.chars().count())
        .collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = columns.iter().map(|(name, _)| (*name).to_owned()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, ((cell, width), (_, align))) in row.iter().zip(&widths).zip(columns).enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            let pad = width.saturating_sub(cell.chars().count());
            let last = i + 1 == columns.len();
            match align {
                Align::Right => {
                    line.extend(std::iter::repeat_n(' ', pad));
                    line.push_str(cell);
                }
                Align::Left => {
                    line.push_str(cell);
                    if !last {
                        line.extend(std::iter::repeat_n(' ', pad));
                    }
                }
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `text` on one line: control characters (newlines, tabs, escapes) are shown as
/// `\n`, `\t`, `\u{1b}`, so a body cannot break the table or the terminal.
pub fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// A message body for a table cell: the text, escaped, or `base64:…` for a body
/// that is not UTF-8.
pub fn body_cell(delivery: &Delivery) -> String {
    match (&delivery.body, &delivery.body_base64) {
        (Some(text), _) => printable(text),
        (None, Some(encoded)) => format!("base64:{encoded}"),
        (None, None) => String::new(),
    }
}

/// Headers as `k=v,k2=v2`, or `-`.
pub fn headers_cell(delivery: &Delivery) -> String {
    if delivery.headers.is_empty() {
        return "-".to_owned();
    }
    let pairs: Vec<String> = delivery
        .headers
        .iter()
        .map(|(k, v)| format!("{}={}", printable(k), printable(v)))
        .collect();
    pairs.join(",")
}

/// A byte count in B, KiB, MiB or GiB with one decimal.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    #[allow(clippy::cast_precision_loss)] // one decimal is shown
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// A duration in its largest whole unit: `850ms`, `12s`, `3m`, `2h`, `4d`.
pub fn age(ms: u64) -> String {
    match ms {
        0..1_000 => format!("{ms}ms"),
        1_000..60_000 => format!("{}s", ms / 1_000),
        60_000..3_600_000 => format!("{}m", ms / 60_000),
        3_600_000..86_400_000 => format!("{}h", ms / 3_600_000),
        _ => format!("{}d", ms / 86_400_000),
    }
}

/// An optional value, `-` when absent.
pub fn or_dash<T: ToString>(value: Option<T>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_and_the_last_is_not_padded() {
        let out = table(
            &[
                ("NAME", Align::Left),
                ("READY", Align::Right),
                ("BODY", Align::Left),
            ],
            &[
                vec!["a".into(), "1".into(), "x".into()],
                vec!["longer".into(), "100".into(), "y".into()],
            ],
        );
        assert_eq!(
            out,
            "NAME    READY  BODY\n\
             a           1  x\n\
             longer    100  y\n"
        );
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(printable("a\nb\tc\u{1b}"), "a\\nb\\tc\\u{1b}");
        assert_eq!(printable("héllo"), "héllo");
    }

    #[test]
    fn sizes_and_ages_are_short() {
        assert_eq!(bytes(10), "10 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(5 << 30), "5.0 GiB");
        assert_eq!(age(999), "999ms");
        assert_eq!(age(61_000), "1m");
        assert_eq!(age(90_000_000), "1d");
    }
}
