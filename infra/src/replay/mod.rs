//! The canary replay: would this version have been rolled back?
//!
//! It reads what a version emitted under load (EMF documents: the function's own and the
//! extension's), aggregates it into each canary alarm's periods as CloudWatch would
//! ([`emf`], [`series`], [`math`]), evaluates the alarms of `alarms/<service>.json` with
//! CloudWatch's rules ([`evaluate`]) and tells the decision CodeDeploy would take, with one
//! picture per alarm ([`chart`]).

pub mod canary;
pub mod chart;
pub mod emf;
pub mod evaluate;
pub mod math;
pub mod series;

/// One period's value of a metric or of an expression, with the number of samples behind it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Datapoint {
    /// The statistic's (or the expression's) value.
    pub value: f64,
    /// How many samples the period held (a percentile on few samples may be ignored).
    pub samples: f64,
}

/// A metric's (or an expression's) datapoints over consecutive periods: `points[i]` covers
/// `[start_ms + i × period, start_ms + (i + 1) × period)`; `None` is a period without data.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// Start of the first period, milliseconds since the epoch, a multiple of the period.
    pub start_ms: i64,
    /// Seconds per period.
    pub period_s: u32,
    /// One entry per period, oldest first.
    pub points: Vec<Option<Datapoint>>,
}

/// The first millisecond an EMF timestamp cannot hold: the year 10000 (RFC 3339 times have four
/// digits of year).
pub const TIMESTAMP_LIMIT_MS: i64 = 253_402_300_800_000;

/// `ms` since the epoch as an RFC 3339 UTC time, to the second (times before the epoch as the
/// epoch, times from the year 10000 as its last second): `2026-12-01T12:00:00Z`.
pub fn utc(ms: i64) -> String {
    let ms = ms.clamp(0, TIMESTAMP_LIMIT_MS - 1000);
    let since_epoch = std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + since_epoch).to_string()
}

/// `value` with at most `decimals` decimals (no trailing zeros), in scientific notation when
/// very large or very small, `?` when not a number.
pub(crate) fn number(value: f64, decimals: usize) -> String {
    if !value.is_finite() {
        return "?".to_owned();
    }
    let magnitude = value.abs();
    if magnitude >= 1e9 || (magnitude > 0.0 && magnitude < 1e-6) {
        return format!("{value:.3e}");
    }
    let mut text = format!("{value:.decimals$}");
    if text.contains('.') {
        let kept = text.trim_end_matches('0').trim_end_matches('.').len();
        text.truncate(kept);
    }
    if text == "-0" {
        text = "0".to_owned();
    }
    text
}

/// `value` to about `digits` significant digits, as [`number`] writes it.
pub(crate) fn significant(value: f64, digits: i32) -> String {
    let magnitude = value.abs();
    let decimals = if magnitude > 0.0 && magnitude.is_finite() {
        // Between 0 and 9: the conversion is exact.
        (f64::from(digits - 1) - magnitude.log10().floor()).clamp(0.0, 9.0) as usize
    } else {
        0
    };
    number(value, decimals)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_never_panics() {
        assert_eq!(utc(1_764_590_400_000), "2025-12-01T12:00:00Z");
        assert_eq!(utc(-5), "1970-01-01T00:00:00Z");
        assert_eq!(utc(i64::MAX), "9999-12-31T23:59:59Z");
        assert_eq!(utc(i64::MIN), "1970-01-01T00:00:00Z");
    }
}
