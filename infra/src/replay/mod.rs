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

/// `ms` since the epoch as an RFC 3339 UTC time, to the second (times before the epoch as the
/// epoch): `2026-12-01T12:00:00Z`.
pub fn utc(ms: i64) -> String {
    let since_epoch = std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + since_epoch).to_string()
}
