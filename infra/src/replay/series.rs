//! A metric's observations aggregated into an alarm's periods, as CloudWatch computes a
//! statistic.
//!
//! Periods are aligned to the epoch (a 60 s period starts on the minute). A standard-resolution
//! metric is stored to the minute, so with a period under 60 s all of a minute's values land in
//! the minute's first period and the others have no data, as CloudWatch answers such a query.
//! Percentiles are nearest-rank over the values, each counted as often as it was seen.

use std::fmt;
use std::str::FromStr;

use super::emf::Observation;
use super::{Datapoint, Series};

/// A statistic of a period's values.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Statistic {
    /// How many values.
    SampleCount,
    /// Their mean.
    Average,
    /// Their sum.
    Sum,
    /// The smallest.
    Minimum,
    /// The largest.
    Maximum,
    /// `pNN`: the value below which NN percent of the values lie (0 to 100).
    Percentile(f64),
}

/// The name of a statistic that is not one, or a period CloudWatch does not offer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SeriesError {
    /// Not a statistic's name.
    #[error(
        "{0:?} is not a statistic: SampleCount, Average, Sum, Minimum, Maximum or a percentile pNN (p0 to p100)"
    )]
    Statistic(String),
    /// Not a period an alarm can have.
    #[error(
        "a period of {0} s: an alarm's period is 10, 20, 30 or a multiple of 60 seconds (1 and 5 for metrics)"
    )]
    Period(u32),
    /// The range holds more periods than a replay keeps in memory.
    #[error(
        "{periods} periods of {period_s} s from {from_ms} to {to_ms}: more than {} (is a timestamp far off?)",
        MAX_PERIODS
    )]
    TooManyPeriods {
        /// Periods the range holds.
        periods: i128,
        /// Seconds per period.
        period_s: u32,
        /// Start, milliseconds since the epoch.
        from_ms: i64,
        /// End, milliseconds since the epoch.
        to_ms: i64,
    },
    /// `to_ms` before `from_ms`.
    #[error("the range ends ({to_ms}) before it starts ({from_ms})")]
    Range {
        /// Start, milliseconds since the epoch.
        from_ms: i64,
        /// End, milliseconds since the epoch.
        to_ms: i64,
    },
}

impl FromStr for Statistic {
    type Err = SeriesError;

    fn from_str(name: &str) -> Result<Self, SeriesError> {
        Ok(match name {
            "SampleCount" => Self::SampleCount,
            "Average" => Self::Average,
            "Sum" => Self::Sum,
            "Minimum" => Self::Minimum,
            "Maximum" => Self::Maximum,
            _ => match name.strip_prefix('p').map(str::parse::<f64>) {
                Some(Ok(p)) if (0.0..=100.0).contains(&p) => Self::Percentile(p),
                _ => return Err(SeriesError::Statistic(name.to_owned())),
            },
        })
    }
}

impl fmt::Display for Statistic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::SampleCount => f.write_str("SampleCount"),
            Self::Average => f.write_str("Average"),
            Self::Sum => f.write_str("Sum"),
            Self::Minimum => f.write_str("Minimum"),
            Self::Maximum => f.write_str("Maximum"),
            Self::Percentile(p) => write!(f, "p{p}"),
        }
    }
}

/// A metric: its namespace, name and dimensions (sorted by name), as an alarm names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetricId {
    /// Namespace.
    pub namespace: String,
    /// Metric name.
    pub name: String,
    /// Dimensions, sorted by name.
    pub dimensions: Vec<(String, String)>,
}

impl MetricId {
    /// Whether `observation` is of this metric (same dimensions exactly, as CloudWatch matches).
    pub fn matches(&self, observation: &Observation) -> bool {
        observation.namespace == self.namespace
            && observation.name == self.name
            && observation.dimensions == self.dimensions
    }
}

/// The most periods one series holds: 100,000 (more than a day at 1 s, 69 days at 60 s), so a
/// stray timestamp cannot make a replay take all the memory there is.
pub const MAX_PERIODS: usize = 100_000;

/// The periods CloudWatch aggregates into: 1, 5, 10, 20, 30 seconds (high resolution) or whole
/// minutes.
fn check_period(period_s: u32) -> Result<(), SeriesError> {
    match period_s {
        1 | 5 | 10 | 20 | 30 => Ok(()),
        p if p > 0 && p % 60 == 0 => Ok(()),
        p => Err(SeriesError::Period(p)),
    }
}

/// `metric`'s `statistic` per period of `period_s` seconds over `[from_ms, to_ms)`: the series
/// starts at `from_ms` rounded down to a period and ends with the period holding `to_ms - 1`.
pub fn aggregate(
    observations: &[Observation],
    metric: &MetricId,
    statistic: Statistic,
    period_s: u32,
    from_ms: i64,
    to_ms: i64,
) -> Result<Series, SeriesError> {
    check_period(period_s)?;
    if to_ms < from_ms {
        return Err(SeriesError::Range { from_ms, to_ms });
    }
    let period_ms = i64::from(period_s) * 1000;
    let start_ms = from_ms.saturating_sub(from_ms.rem_euclid(period_ms));
    // In i128: no range of i64 milliseconds overflows it.
    let periods =
        (i128::from(to_ms) - i128::from(start_ms) + i128::from(period_ms) - 1) / i128::from(period_ms);
    let periods = usize::try_from(periods)
        .ok()
        .filter(|p| *p <= MAX_PERIODS)
        .ok_or(SeriesError::TooManyPeriods {
            periods,
            period_s,
            from_ms,
            to_ms,
        })?;
    let mut values: Vec<Vec<(f64, f64)>> = vec![Vec::new(); periods];
    for observation in observations.iter().filter(|o| metric.matches(o)) {
        let stored_ms = if observation.high_resolution {
            observation.timestamp_ms
        } else {
            observation
                .timestamp_ms
                .saturating_sub(observation.timestamp_ms.rem_euclid(60_000))
        };
        if stored_ms < start_ms {
            continue;
        }
        if let Some(period) = stored_ms
            .checked_sub(start_ms)
            .and_then(|offset| usize::try_from(offset / period_ms).ok())
            .and_then(|index| values.get_mut(index))
        {
            period.extend(observation.values.iter().filter(|(_, count)| *count > 0.0));
        }
    }
    let points = values
        .iter_mut()
        .map(|period| compute(statistic, period))
        .collect();
    Ok(Series {
        start_ms,
        period_s,
        points,
    })
}

/// `statistic` of `(value, count)` pairs; `None` when there are none.
fn compute(statistic: Statistic, values: &mut [(f64, f64)]) -> Option<Datapoint> {
    if values.is_empty() {
        return None;
    }
    let samples: f64 = values.iter().map(|(_, count)| count).sum();
    let sum: f64 = values.iter().map(|(value, count)| value * count).sum();
    let min = values
        .iter()
        .map(|(value, _)| *value)
        .fold(f64::INFINITY, f64::min);
    let max = values
        .iter()
        .map(|(value, _)| *value)
        .fold(f64::NEG_INFINITY, f64::max);
    let value = match statistic {
        Statistic::SampleCount => samples,
        Statistic::Average => sum / samples,
        Statistic::Sum => sum,
        Statistic::Minimum => min,
        Statistic::Maximum => max,
        Statistic::Percentile(p) => {
            values.sort_by(|a, b| a.0.total_cmp(&b.0));
            let rank = (p / 100.0 * samples).ceil().max(1.0);
            let mut seen = 0.0;
            values
                .iter()
                .find(|(_, count)| {
                    seen += count;
                    seen >= rank
                })
                .map_or(max, |(value, _)| *value)
        }
    };
    Some(Datapoint { value, samples })
}

/// The first and last timestamp of `observations`.
pub fn observed_range(observations: &[Observation]) -> Option<(i64, i64)> {
    let first = observations.iter().map(|o| o.timestamp_ms).min()?;
    let last = observations.iter().map(|o| o.timestamp_ms).max()?;
    Some((first, last))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metric() -> MetricId {
        MetricId {
            namespace: "Keel".into(),
            name: "DurationMs".into(),
            dimensions: vec![("service".into(), "api".into())],
        }
    }

    fn observation(timestamp_ms: i64, values: &[(f64, f64)], high_resolution: bool) -> Observation {
        let metric = metric();
        Observation {
            namespace: metric.namespace,
            name: metric.name,
            dimensions: metric.dimensions,
            timestamp_ms,
            values: values.to_vec(),
            unit: None,
            high_resolution,
        }
    }

    fn values(series: &Series) -> Vec<Option<f64>> {
        series.points.iter().map(|p| p.map(|p| p.value)).collect()
    }

    #[test]
    fn statistics_parse_and_print() {
        for name in [
            "SampleCount",
            "Average",
            "Sum",
            "Minimum",
            "Maximum",
            "p99",
            "p99.9",
            "p0",
            "p100",
        ] {
            let statistic: Statistic = name.parse().unwrap();
            assert_eq!(statistic.to_string(), name);
        }
        for bad in ["sum", "p101", "p", "pxx", "tm99"] {
            let error = bad.parse::<Statistic>().unwrap_err();
            assert!(error.to_string().contains("SampleCount, Average"), "{error}");
        }
    }

    #[test]
    fn every_statistic_over_values_and_counts() {
        let obs = [observation(0, &[(10.0, 3.0), (40.0, 1.0)], false)];
        let stat = |s: &str| {
            let series = aggregate(&obs, &metric(), s.parse().unwrap(), 60, 0, 60_000).unwrap();
            series.points[0].unwrap()
        };
        assert_eq!(stat("SampleCount").value, 4.0);
        assert_eq!(stat("Sum").value, 70.0);
        assert_eq!(stat("Average").value, 17.5);
        assert_eq!(stat("Minimum").value, 10.0);
        assert_eq!(stat("Maximum").value, 40.0);
        assert_eq!(stat("p50").value, 10.0);
        assert_eq!(stat("p75").value, 10.0);
        assert_eq!(stat("p76").value, 40.0);
        assert_eq!(stat("p99").samples, 4.0);
    }

    #[test]
    fn p99_is_nearest_rank() {
        let samples: Vec<(f64, f64)> = (1..=200).map(|v| (f64::from(v), 1.0)).collect();
        let obs = [observation(5_000, &samples, false)];
        let series = aggregate(&obs, &metric(), Statistic::Percentile(99.0), 60, 0, 60_000).unwrap();
        assert_eq!(values(&series), vec![Some(198.0)]);
    }

    #[test]
    fn periods_are_aligned_and_empty_ones_have_no_data() {
        let obs = [
            observation(61_000, &[(1.0, 1.0)], false),
            observation(119_999, &[(2.0, 1.0)], false),
            observation(250_000, &[(5.0, 1.0)], false),
            observation(1_000_000, &[(9.0, 1.0)], false),
        ];
        let series = aggregate(&obs, &metric(), Statistic::Sum, 60, 70_000, 250_001).unwrap();
        assert_eq!((series.start_ms, series.period_s), (60_000, 60));
        assert_eq!(values(&series), vec![Some(3.0), None, None, Some(5.0)]);
    }

    #[test]
    fn high_resolution_at_ten_seconds_standard_resolution_on_the_minute() {
        let high = [
            observation(3_000, &[(1.0, 1.0)], true),
            observation(25_000, &[(1.0, 1.0)], true),
        ];
        let series = aggregate(&high, &metric(), Statistic::Sum, 10, 0, 30_000).unwrap();
        assert_eq!(values(&series), vec![Some(1.0), None, Some(1.0)]);
        let standard = [
            observation(25_000, &[(1.0, 1.0)], false),
            observation(65_000, &[(1.0, 1.0)], false),
        ];
        let series = aggregate(&standard, &metric(), Statistic::Sum, 10, 0, 70_000).unwrap();
        assert_eq!(
            values(&series),
            vec![Some(1.0), None, None, None, None, None, Some(1.0)]
        );
    }

    #[test]
    fn other_metrics_and_dimension_sets_are_not_mixed_in() {
        let mut other = observation(0, &[(7.0, 1.0)], false);
        other.dimensions.push(("function_version".into(), "2".into()));
        other.dimensions.sort();
        let obs = [other, observation(0, &[(1.0, 1.0)], false)];
        let series = aggregate(&obs, &metric(), Statistic::Sum, 60, 0, 60_000).unwrap();
        assert_eq!(values(&series), vec![Some(1.0)]);
    }

    #[test]
    fn periods_and_ranges_cloudwatch_does_not_offer_are_refused() {
        for period in [0, 7, 45, 90] {
            let error = aggregate(&[], &metric(), Statistic::Sum, period, 0, 1).unwrap_err();
            assert_eq!(error, SeriesError::Period(period));
        }
        assert!(aggregate(&[], &metric(), Statistic::Sum, 60, 10, 5).is_err());
        let far = aggregate(&[], &metric(), Statistic::Sum, 1, 0, i64::MAX).unwrap_err();
        assert!(
            matches!(far, SeriesError::TooManyPeriods { period_s: 1, .. }),
            "{far}"
        );
        assert!(far.to_string().contains("more than 100000"), "{far}");
        let most = aggregate(&[], &metric(), Statistic::Sum, 1, 0, 100_000_000).unwrap();
        assert_eq!(most.points.len(), MAX_PERIODS);
        assert_eq!(observed_range(&[]), None);
        let obs = [observation(9, &[], false), observation(3, &[], false)];
        assert_eq!(observed_range(&obs), Some((3, 9)));
    }
}
