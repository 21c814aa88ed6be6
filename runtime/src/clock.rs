//! Time as Keel's layers reckon it: epoch milliseconds (the unit of Lambda's deadlines and of
//! Keel's records), the time an invocation has left, and the margins kept back from it — named
//! once here, so that every layer keeps the same.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Time kept back from an invocation's deadline by whatever Keel waits for inside it
/// (publishing a routed error, a concurrency slot, a key in progress elsewhere), so that the
/// function still answers Lambda before the deadline.
pub const DEADLINE_MARGIN: Duration = Duration::from_millis(250);

/// Time the extension keeps back from an invocation's deadline while it waits for the
/// invocation to end and publishes what the function relayed: it writes no answer afterwards,
/// so it needs less than a function.
pub const EXTENSION_DEADLINE_MARGIN: Duration = Duration::from_millis(50);

/// Time the extension keeps back from the end of the shutdown phase: envelopes not published
/// by then are written whole to the log instead.
pub const SHUTDOWN_MARGIN: Duration = Duration::from_millis(300);

/// What an invocation's deadline is taken to be when it is unknown (the Lambda emulator reports
/// one in the past): Lambda's longest timeout from now. Leases and in-progress records then
/// hold their key no longer than any invocation can run.
pub const UNKNOWN_DEADLINE_TIMEOUT: Duration = Duration::from_secs(900);

/// The current time in epoch milliseconds (0 for a clock set before 1970).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
}

/// The time left before `deadline_ms` (epoch ms), less `margin` (zero when within it); `None`
/// when the deadline has passed or is unknown (zero, or in the past).
pub fn time_left(deadline_ms: u64, margin: Duration) -> Option<Duration> {
    let now = now_ms();
    (deadline_ms > now).then(|| Duration::from_millis(deadline_ms - now).saturating_sub(margin))
}

/// `deadline_ms` if it is still ahead of `now_ms`, else `now_ms` plus `fallback`: the deadline
/// a lease holds when the invocation's is unknown.
pub fn deadline_or(deadline_ms: u64, now_ms: u64, fallback: Duration) -> u64 {
    match deadline_ms > now_ms {
        true => deadline_ms,
        false => now_ms.saturating_add(u64::try_from(fallback.as_millis()).unwrap_or(u64::MAX)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_past_or_unknown_deadline_leaves_no_time_and_falls_back() {
        assert_eq!(time_left(0, DEADLINE_MARGIN), None);
        let soon = now_ms() + 100;
        assert_eq!(
            time_left(soon, DEADLINE_MARGIN),
            Some(Duration::ZERO),
            "within the margin"
        );
        let later = time_left(now_ms() + 10_000, DEADLINE_MARGIN).unwrap();
        assert!(later > Duration::from_secs(9) && later <= Duration::from_millis(9_750));
        assert_eq!(deadline_or(5_000, 1_000, UNKNOWN_DEADLINE_TIMEOUT), 5_000);
        assert_eq!(deadline_or(0, 1_000, Duration::from_secs(2)), 3_000);
        assert_eq!(deadline_or(0, u64::MAX, Duration::from_secs(2)), u64::MAX);
    }
}
