//! Figures as the dashboard shows them: counts with thousands separators, bytes
//! and durations in the largest unit that keeps them readable.

#![allow(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "shown rounded: a count or size past 2^52 loses nothing visible; rates are not negative"
)]

/// `1234567` as `1,234,567`.
pub(crate) fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A per-second rate: whole above 100, else one decimal.
pub(crate) fn rate(per_second: f64) -> String {
    if per_second >= 100.0 {
        count(per_second.round() as u64)
    } else {
        format!("{per_second:.1}")
    }
}

/// Bytes in B, KiB, MiB, GiB or TiB.
pub(crate) fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// A duration given in ms: ms, s, min, h or d.
pub(crate) fn age_ms(ms: u64) -> String {
    let s = ms as f64 / 1000.0;
    match ms {
        0..1_000 => format!("{ms} ms"),
        1_000..60_000 => format!("{s:.1} s"),
        60_000..3_600_000 => format!("{:.1} min", s / 60.0),
        3_600_000..86_400_000 => format!("{:.1} h", s / 3600.0),
        _ => format!("{:.1} d", s / 86400.0),
    }
}

/// A duration given in seconds, shown from microseconds up.
pub(crate) fn seconds(s: f64) -> String {
    if s < 0.001 {
        format!("{:.0} µs", s * 1e6)
    } else if s < 1.0 {
        format!("{:.1} ms", s * 1e3)
    } else {
        format!("{s:.2} s")
    }
}

/// A time in ms since the epoch as `YYYY-MM-DD HH:MM:SS` UTC.
pub(crate) fn time_ms(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Days to a civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// `YYYY-MM-DD HH:MM[:SS]` (UTC; a `T` may stand for the space) as ms since the
/// epoch, the inverse of [`time_ms`].
pub(crate) fn parse_time(text: &str) -> Option<i64> {
    let text = text.trim();
    let (date, time) = text.split_once([' ', 'T'])?;
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (year, month, day) = (d.next()??, d.next()??, d.next()??);
    let mut t = time.splitn(3, ':').map(|p| p.parse::<i64>().ok());
    let (hour, minute) = (t.next()??, t.next()??);
    let second = t.next().unwrap_or(Some(0))?;
    let valid = (1..=12).contains(&month)
        && (1..=31).contains(&day)
        && (0..24).contains(&hour)
        && (0..60).contains(&minute)
        && (0..60).contains(&second);
    if !valid {
        return None;
    }
    // A civil date to days since the epoch (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 24 + hour) * 60 + minute) * 60_000 + second * 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_read_as_people_write_them() {
        assert_eq!(count(0), "0");
        assert_eq!(count(1_234_567), "1,234,567");
        assert_eq!(count(100), "100");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(3 << 20), "3.0 MiB");
        assert_eq!(age_ms(999), "999 ms");
        assert_eq!(age_ms(90_000), "1.5 min");
        assert_eq!(rate(2.25), "2.2");
        assert_eq!(rate(1234.4), "1,234");
        assert_eq!(seconds(0.0005), "500 µs");
        assert_eq!(time_ms(0), "1970-01-01 00:00:00");
        assert_eq!(time_ms(1_765_000_000_123), "2025-12-06 05:46:40");
        assert_eq!(time_ms(951_782_400_000), "2000-02-29 00:00:00");
        for ms in [0, 951_782_400_000, 1_765_000_000_000] {
            assert_eq!(parse_time(&time_ms(ms)), Some(ms));
        }
        assert_eq!(
            parse_time("2025-12-06T05:46"),
            Some(1_765_000_000_000 - 40_000)
        );
        assert_eq!(parse_time("2025-13-01 00:00"), None);
        assert_eq!(parse_time("yesterday"), None);
    }
}
