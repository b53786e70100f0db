//! The broker's clock: milliseconds since the epoch, for lease deadlines, TTLs,
//! delays, de-duplication windows and the times stored in records.
//!
//! It is the wall clock as first read, moved on by tokio's monotonic clock. So a
//! step of the system clock (an operator or NTP setting it) does not make every
//! lease expire at once or never, and a test that pauses tokio's time
//! (`#[tokio::test(start_paused = true)]`) moves the broker's clock with it: a
//! 30 s visibility timeout passes in no real time. A leaf module: it imports
//! nothing of the crate.

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

/// Milliseconds since the epoch, now.
pub(crate) fn now_ms() -> i64 {
    static BASE: OnceLock<(i64, Instant)> = OnceLock::new();
    let (wall_ms, at) = *BASE.get_or_init(|| {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        // The real instant, not a paused runtime's: tests that pause and advance
        // their clock must not hold back the clock of the others.
        (wall, Instant::from_std(std::time::Instant::now()))
    });
    let since = Instant::now().saturating_duration_since(at).as_millis();
    wall_ms.saturating_add(i64::try_from(since).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn paused_time_moves_the_clock() {
        let before = now_ms();
        tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
        let after = now_ms();
        assert!((after - before) >= 3_600_000, "{before} -> {after}");
    }

    #[test]
    fn it_starts_at_the_wall_clock() {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("after 1970")
            .as_millis();
        let ours = u128::try_from(now_ms()).expect("positive");
        // Other tests in this process may have paused and advanced tokio's clock
        // of their own runtime; this thread's clock is the real one.
        assert!(ours.abs_diff(wall) < 5_000, "{ours} vs {wall}");
    }
}
