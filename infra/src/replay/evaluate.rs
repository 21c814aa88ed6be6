//! CloudWatch alarm evaluation, as the CloudWatch User Guide documents it ("Alarm evaluation",
//! "Configuring how CloudWatch alarms treat missing data", "Percentile-based alarms and low
//! data samples").
//!
//! At the end of each period an alarm with `N` evaluation periods and `M` datapoints to alarm
//! retrieves its *evaluation range*, the last [`range_len`]`(N)` periods, and decides:
//!
//! 1. A percentile alarm with `EvaluateLowSampleCountPercentile: ignore` keeps its state when
//!    the newest period has fewer samples than [`Rule::min_samples`].
//! 2. At least `N` real datapoints in the range: the `N` most recent real ones are evaluated
//!    (missing ones in between are skipped, TreatMissingData is not needed). `ALARM` when `M`
//!    of them breach — not necessarily consecutive — otherwise `OK`.
//! 3. No real datapoint: `missing` → `INSUFFICIENT_DATA`, `ignore` → the current state,
//!    `breaching` → `ALARM`, `notBreaching` → `OK`.
//! 4. Between: every real datapoint is evaluated and the `N − r` most recent missing ones are
//!    filled. `breaching` / `notBreaching` count them as breaching / not breaching. `missing`
//!    and `ignore` count only the real ones: `ALARM` when `M` of them breach, otherwise `OK`
//!    when one of them does not breach. When every real one breaches (fewer than `M`), the
//!    documented rule against premature alarms applies: if the oldest is at least `M` periods
//!    old (the newest period being 1 period old) `missing` goes to `ALARM` and `ignore` keeps
//!    the current state; if it is more recent, both keep the current state ("does not go
//!    immediately into ALARM state", the next datapoint may not breach).
//!
//! Both tables of the documentation (M = N = 3 and M = 2 of N = 3, with a range of 5) are
//! reproduced row by row by this module's tests.

use std::fmt;
use std::str::FromStr;

use super::{significant, Datapoint, Series};

/// An enum of names AWS spells in one way: `ALL`, `as_str`, [`FromStr`] and [`fmt::Display`].
macro_rules! named {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $count:literal,
     [$($(#[$vdoc:meta])* $variant:ident = $text:literal,)+]) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum $name {
            $($(#[$vdoc])* $variant,)+
        }

        impl $name {
            /// Every value, in the documentation's order.
            pub const ALL: [$name; $count] = [$($name::$variant,)+];

            /// The name AWS uses in templates and API calls.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl FromStr for $name {
            type Err = EvaluateError;

            fn from_str(name: &str) -> Result<Self, EvaluateError> {
                Self::ALL.into_iter().find(|v| v.as_str() == name).ok_or_else(|| {
                    EvaluateError::UnknownName {
                        kind: $kind,
                        name: name.to_owned(),
                        valid: Self::ALL.map(Self::as_str).join(", "),
                    }
                })
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

named!(
    /// An alarm's `ComparisonOperator`.
    Comparison, "comparison operator", 7, [
    /// `value >= threshold`.
    GreaterThanOrEqualToThreshold = "GreaterThanOrEqualToThreshold",
    /// `value > threshold`.
    GreaterThanThreshold = "GreaterThanThreshold",
    /// `value < threshold`.
    LessThanThreshold = "LessThanThreshold",
    /// `value <= threshold`.
    LessThanOrEqualToThreshold = "LessThanOrEqualToThreshold",
    /// Outside the band: `value < lower || value > upper`.
    LessThanLowerOrGreaterThanUpperThreshold = "LessThanLowerOrGreaterThanUpperThreshold",
    /// Below the band: `value < lower`.
    LessThanLowerThreshold = "LessThanLowerThreshold",
    /// Above the band: `value > upper`.
    GreaterThanUpperThreshold = "GreaterThanUpperThreshold",
]);

named!(
    /// An alarm's `TreatMissingData`.
    TreatMissingData, "TreatMissingData", 4, [
    /// Missing datapoints are missing; all missing → `INSUFFICIENT_DATA` (the default).
    Missing = "missing",
    /// Missing datapoints are within the threshold.
    NotBreaching = "notBreaching",
    /// Missing datapoints breach the threshold.
    Breaching = "breaching",
    /// The current state is kept when there is not enough data.
    Ignore = "ignore",
]);

named!(
    /// A percentile alarm's `EvaluateLowSampleCountPercentile`.
    LowSampleCount, "EvaluateLowSampleCountPercentile", 2, [
    /// Periods with few samples are evaluated like any other (the default).
    Evaluate = "evaluate",
    /// A period with too few samples keeps the current state.
    Ignore = "ignore",
]);

named!(
    /// An alarm's state.
    AlarmState, "alarm state", 3, [
    /// Within the threshold.
    Ok = "OK",
    /// Breaching.
    Alarm = "ALARM",
    /// Not enough data to tell.
    InsufficientData = "INSUFFICIENT_DATA",
]);

impl Comparison {
    /// Whether the operator compares with a band (anomaly detection) rather than a number.
    pub fn needs_band(self) -> bool {
        matches!(
            self,
            Comparison::LessThanLowerOrGreaterThanUpperThreshold
                | Comparison::LessThanLowerThreshold
                | Comparison::GreaterThanUpperThreshold
        )
    }

    /// The operator as a symbol (`>=`, `>`, `<`, `<=`); a band operator by its name.
    pub fn symbol(self) -> &'static str {
        match self {
            Comparison::GreaterThanOrEqualToThreshold => ">=",
            Comparison::GreaterThanThreshold => ">",
            Comparison::LessThanThreshold => "<",
            Comparison::LessThanOrEqualToThreshold => "<=",
            _ => self.as_str(),
        }
    }
}

/// What a datapoint is compared with.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Threshold {
    /// A number, for the four static operators.
    Static(f64),
    /// A band, for the three band operators.
    Band {
        /// The band's lower bound.
        lower: f64,
        /// The band's upper bound.
        upper: f64,
    },
}

/// An alarm definition was invalid or a name unknown.
#[derive(Debug, thiserror::Error)]
pub enum EvaluateError {
    /// A name is not one AWS defines.
    #[error("unknown {kind} {name:?}: expected one of {valid}")]
    UnknownName {
        /// What was named ("comparison operator", "TreatMissingData", ...).
        kind: &'static str,
        /// The name given.
        name: String,
        /// The valid names, comma separated.
        valid: String,
    },
    /// `EvaluationPeriods` (N) is 0.
    #[error("EvaluationPeriods must be at least 1")]
    NoEvaluationPeriods,
    /// `DatapointsToAlarm` (M) is 0.
    #[error("DatapointsToAlarm must be at least 1")]
    NoDatapointsToAlarm,
    /// `DatapointsToAlarm` (M) exceeds `EvaluationPeriods` (N).
    #[error("DatapointsToAlarm ({datapoints_to_alarm}) exceeds EvaluationPeriods ({evaluation_periods})")]
    TooManyDatapointsToAlarm {
        /// M.
        datapoints_to_alarm: usize,
        /// N.
        evaluation_periods: usize,
    },
    /// A band operator with a static threshold or the reverse.
    #[error("{comparison} needs {needed}")]
    ThresholdKind {
        /// The operator.
        comparison: Comparison,
        /// The kind of threshold it needs.
        needed: &'static str,
    },
    /// A threshold that is not a number, or a band whose lower bound exceeds its upper one.
    #[error("invalid threshold: {0}")]
    InvalidThreshold(String),
    /// A percentile outside 0–100.
    #[error("percentile {0} is outside 0–100 (p99 is 99)")]
    Percentile(f64),
    /// A series whose period is 0 seconds.
    #[error("the series' period is 0 seconds")]
    ZeroPeriod,
    /// A period's end does not fit a millisecond timestamp.
    #[error("the end of period {0} is beyond the range of millisecond timestamps")]
    TimeOverflow(usize),
}

/// An alarm's evaluation settings.
#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    /// `ComparisonOperator`.
    pub comparison: Comparison,
    /// `Threshold`, or the band of a band operator.
    pub threshold: Threshold,
    /// `EvaluationPeriods` (N).
    pub evaluation_periods: usize,
    /// `DatapointsToAlarm` (M).
    pub datapoints_to_alarm: usize,
    /// `TreatMissingData`.
    pub treat_missing_data: TreatMissingData,
    /// The statistic's percentile (99 for p99), if it is one.
    pub percentile: Option<f64>,
    /// `EvaluateLowSampleCountPercentile` (`None` behaves as `evaluate`).
    pub low_sample_count: Option<LowSampleCount>,
}

impl Rule {
    /// An alarm comparing with `threshold`, `ALARM` when `datapoints_to_alarm` (M) of
    /// `evaluation_periods` (N) breach; fails on M or N zero, M > N, a threshold kind that does
    /// not fit the operator, or a threshold that is not a number.
    pub fn new(
        comparison: Comparison,
        threshold: Threshold,
        evaluation_periods: usize,
        datapoints_to_alarm: usize,
        treat_missing_data: TreatMissingData,
    ) -> Result<Rule, EvaluateError> {
        if evaluation_periods == 0 {
            return Err(EvaluateError::NoEvaluationPeriods);
        }
        if datapoints_to_alarm == 0 {
            return Err(EvaluateError::NoDatapointsToAlarm);
        }
        if datapoints_to_alarm > evaluation_periods {
            return Err(EvaluateError::TooManyDatapointsToAlarm {
                datapoints_to_alarm,
                evaluation_periods,
            });
        }
        match (comparison.needs_band(), threshold) {
            (true, Threshold::Static(_)) => {
                let needed = "a band threshold (lower and upper), not a static one";
                return Err(EvaluateError::ThresholdKind { comparison, needed });
            }
            (false, Threshold::Band { .. }) => {
                let needed = "a static threshold, not a band";
                return Err(EvaluateError::ThresholdKind { comparison, needed });
            }
            (_, Threshold::Static(t)) if !t.is_finite() => {
                return Err(EvaluateError::InvalidThreshold(format!(
                    "{t} is not a finite number"
                )));
            }
            (_, Threshold::Band { lower, upper })
                if !(lower <= upper && lower.is_finite() && upper.is_finite()) =>
            {
                let why = format!("the band [{lower}, {upper}] is not two finite numbers, lower first");
                return Err(EvaluateError::InvalidThreshold(why));
            }
            _ => {}
        }
        Ok(Rule {
            comparison,
            threshold,
            evaluation_periods,
            datapoints_to_alarm,
            treat_missing_data,
            percentile: None,
            low_sample_count: None,
        })
    }

    /// The same alarm on the statistic pNN (`percentile` = NN, 0–100), with its
    /// `EvaluateLowSampleCountPercentile` (`None`: `evaluate`).
    pub fn with_percentile(
        self,
        percentile: f64,
        low_sample_count: Option<LowSampleCount>,
    ) -> Result<Rule, EvaluateError> {
        if !(0.0..=100.0).contains(&percentile) {
            return Err(EvaluateError::Percentile(percentile));
        }
        Ok(Rule {
            percentile: Some(percentile),
            low_sample_count,
            ..self
        })
    }

    /// The fewest samples a period needs for pNN (`percentile` = NN) to be evaluated when
    /// low sample counts are ignored. "Percentile-based alarms and low data samples": for
    /// percentiles from 0.5 (inclusive) to 1.00 (exclusive) the setting applies below
    /// 10/(1 − percentile) samples (1,000 for p99), for percentiles between 0 and 0.5 below
    /// 10/percentile. p0 and p100 fall in neither range: 0. Rounded to a millionth, so that
    /// p99.9 needs 10,000 rather than 10,000.0000000006.
    pub fn min_samples(percentile: f64) -> f64 {
        let min = if (50.0..100.0).contains(&percentile) {
            1000.0 / (100.0 - percentile)
        } else if percentile > 0.0 && percentile < 50.0 {
            1000.0 / percentile
        } else {
            0.0
        };
        (min * 1e6).round() / 1e6
    }

    /// Whether one value breaches the threshold (a static threshold is a band of width zero;
    /// NaN never breaches).
    pub fn breaches(&self, value: f64) -> bool {
        let (lower, upper) = self.bounds();
        match self.comparison {
            Comparison::GreaterThanOrEqualToThreshold => value >= upper,
            Comparison::GreaterThanThreshold | Comparison::GreaterThanUpperThreshold => value > upper,
            Comparison::LessThanThreshold | Comparison::LessThanLowerThreshold => value < lower,
            Comparison::LessThanOrEqualToThreshold => value <= lower,
            Comparison::LessThanLowerOrGreaterThanUpperThreshold => value < lower || value > upper,
        }
    }

    fn bounds(&self) -> (f64, f64) {
        match self.threshold {
            Threshold::Static(t) => (t, t),
            Threshold::Band { lower, upper } => (lower, upper),
        }
    }

    /// What breaching means, for reasons: "> 1", "outside [1, 2]".
    fn condition(&self) -> String {
        let (lower, upper) = self.bounds();
        let (lower, upper) = (significant(lower, 6), significant(upper, 6));
        let symbol = self.comparison.symbol();
        match self.comparison {
            Comparison::GreaterThanOrEqualToThreshold | Comparison::GreaterThanThreshold => {
                format!("{symbol} {upper}")
            }
            Comparison::LessThanThreshold | Comparison::LessThanOrEqualToThreshold => {
                format!("{symbol} {lower}")
            }
            Comparison::LessThanLowerOrGreaterThanUpperThreshold => format!("outside [{lower}, {upper}]"),
            Comparison::LessThanLowerThreshold => format!("< {lower}, the band's lower bound"),
            Comparison::GreaterThanUpperThreshold => format!("> {upper}, the band's upper bound"),
        }
    }

    /// The minimum of samples when a low count keeps the state, if it does.
    fn ignored_below(&self) -> Option<f64> {
        match (self.percentile, self.low_sample_count) {
            (Some(p), Some(LowSampleCount::Ignore)) => Some(Rule::min_samples(p)),
            _ => None,
        }
    }
}

/// How many of the most recent periods an evaluation retrieves (the documentation's
/// *evaluation range*): N + 2. The documentation gives no formula ("depends on period and
/// resolution"); its examples use 5 for N = 3, which N + 2 reproduces.
pub fn range_len(evaluation_periods: usize) -> usize {
    evaluation_periods.saturating_add(2)
}

/// How a period of the evaluation range took part in an evaluation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// A real datapoint, evaluated.
    Evaluated,
    /// A missing datapoint filled according to TreatMissingData.
    Filled,
    /// Not needed (older than those evaluated), or the evaluation was skipped.
    Unused,
}

/// One period of an evaluation range.
#[derive(Clone, Debug, PartialEq)]
pub struct Evaluated {
    /// The period's index in the points evaluated (the series' index, in a [`timeline`]).
    pub period_index: usize,
    /// The datapoint's value (`None`: missing).
    pub value: Option<f64>,
    /// The datapoint's samples (`None`: missing).
    pub samples: Option<f64>,
    /// Whether the datapoint breaches (`None`: missing).
    pub breaching: Option<bool>,
    /// Whether a percentile alarm ignoring low sample counts finds too few samples here.
    pub low_samples: bool,
    /// How the period took part.
    pub role: Role,
}

/// The outcome of one evaluation.
#[derive(Clone, Debug, PartialEq)]
pub struct Evaluation {
    /// The alarm's state after the evaluation.
    pub state: AlarmState,
    /// The evaluation range's periods that exist among the points given, oldest first.
    pub points: Vec<Evaluated>,
    /// How many missing datapoints were filled according to TreatMissingData (the
    /// documentation's "points to fill"): N minus the real datapoints, at least 0.
    pub filled: usize,
    /// Why, in a sentence.
    pub reason: String,
}

impl Evaluation {
    /// Whether the newest period's datapoint breaches (false when it is missing).
    pub fn newest_breaching(&self) -> bool {
        self.points.last().and_then(|p| p.breaching) == Some(true)
    }
}

/// Evaluates `rule` at the end of the last of `points` (consecutive periods, oldest first; only
/// the last [`range_len`] matter, periods before the first are missing) in state `current`.
pub fn evaluate(rule: &Rule, points: &[Option<Datapoint>], current: AlarmState) -> Evaluation {
    let start = points.len().saturating_sub(range_len(rule.evaluation_periods));
    let min_samples = rule.ignored_below();
    let mut range: Vec<Evaluated> = points[start..]
        .iter()
        .enumerate()
        .map(|(k, point)| Evaluated {
            period_index: start + k,
            value: point.map(|d| d.value),
            samples: point.map(|d| d.samples),
            breaching: point.map(|d| rule.breaches(d.value)),
            low_samples: matches!((point, min_samples), (Some(d), Some(min)) if d.samples < min),
            role: Role::Unused,
        })
        .collect();
    let (state, filled, reason) = decide(rule, &mut range, current);
    Evaluation {
        state,
        points: range,
        filled,
        reason,
    }
}

/// The rules of the module documentation, marking each period's role.
fn decide(rule: &Rule, range: &mut [Evaluated], current: AlarmState) -> (AlarmState, usize, String) {
    let (n, m) = (rule.evaluation_periods, rule.datapoints_to_alarm);
    let condition = rule.condition();
    if let Some(newest) = range.last().filter(|p| p.low_samples) {
        let samples = significant(newest.samples.unwrap_or(0.0), 6);
        let (p, min) = (
            rule.percentile.unwrap_or(0.0),
            rule.ignored_below().unwrap_or(0.0),
        );
        let reason = format!(
            "the newest datapoint has {samples} samples, fewer than the {} p{} needs; low sample count ignored, the state is kept: {current}",
            significant(min, 6),
            significant(p, 6)
        );
        return (current, 0, reason);
    }
    // The real datapoints, newest first.
    let real: Vec<usize> = (0..range.len())
        .rev()
        .filter(|&k| range[k].breaching.is_some())
        .collect();
    let breach_count = |ks: &[usize]| ks.iter().filter(|&&k| range[k].breaching == Some(true)).count();
    let alarm_if = |breached: usize| {
        if breached >= m {
            AlarmState::Alarm
        } else {
            AlarmState::Ok
        }
    };
    // The values, oldest first; of many, the newest ten.
    let values = |ks: &[usize]| {
        let shown: Vec<String> = ks
            .iter()
            .take(10)
            .rev()
            .filter_map(|&k| range[k].value)
            .map(|v| significant(v, 6))
            .collect();
        let earlier = ks.len().saturating_sub(10);
        let prefix = if earlier > 0 {
            format!("{earlier} earlier, ")
        } else {
            String::new()
        };
        format!("{prefix}{}", shown.join(", "))
    };
    if real.len() >= n {
        let used = &real[..n];
        let breached = breach_count(used);
        let state = alarm_if(breached);
        let reason = format!(
            "{breached} of the last {n} datapoints [{}] breached ({condition}; {m} needed): {state}",
            values(used)
        );
        for &k in used {
            range[k].role = Role::Evaluated;
        }
        return (state, 0, reason);
    }
    let filled = n - real.len();
    let breached = breach_count(&real);
    let have = if real.is_empty() {
        format!(
            "all {} datapoints of the evaluation range are missing",
            range_len(n)
        )
    } else {
        format!(
            "{} of the {n} datapoints needed exist [{}], {breached} breaching ({condition}, {m} needed); {filled} missing",
            real.len(),
            values(&real)
        )
    };
    let treatment = rule.treat_missing_data;
    let counted = |count: usize| {
        (
            alarm_if(count),
            format!("treated as {treatment}: {count} of {n} breached"),
        )
    };
    let (state, why) = match treatment {
        TreatMissingData::Breaching => counted(breached + filled),
        TreatMissingData::NotBreaching => counted(breached),
        TreatMissingData::Missing if real.is_empty() => {
            (AlarmState::InsufficientData, "treated as missing".into())
        }
        TreatMissingData::Ignore if real.is_empty() => (current, "ignored, the state is kept".into()),
        // Enough breach, or one does not: the datapoints that exist decide.
        _ if breached >= m || breached < real.len() => counted(breached),
        _ => {
            // Every real datapoint breaches, fewer than M: the rule against premature alarms.
            let age = real.last().map_or(0, |&oldest| range.len() - oldest);
            let why = format!("treated as {treatment}, all breached and the oldest is {age} periods old");
            match (treatment, age >= m) {
                (TreatMissingData::Missing, true) => {
                    (AlarmState::Alarm, format!("{why} (premature-alarm rule)"))
                }
                (_, true) => (
                    current,
                    format!("{why} (premature-alarm rule), the state is kept"),
                ),
                (_, false) => (current, format!("{why}, too recent to alarm: the state is kept")),
            }
        }
    };
    let missing: Vec<usize> = (0..range.len())
        .rev()
        .filter(|&k| range[k].breaching.is_none())
        .take(filled)
        .collect();
    for k in missing {
        range[k].role = Role::Filled;
    }
    for &k in &real {
        range[k].role = Role::Evaluated;
    }
    (state, filled, format!("{have}; {why}: {state}"))
}

/// One evaluation of a [`timeline`].
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    /// The period evaluated at its end.
    pub period_index: usize,
    /// The end of that period, milliseconds since the epoch.
    pub at_ms: i64,
    /// Whether the state differs from the previous step's (or the initial state).
    pub changed: bool,
    /// The evaluation.
    pub evaluation: Evaluation,
}

impl Step {
    /// The state after this step.
    pub fn state(&self) -> AlarmState {
        self.evaluation.state
    }
}

/// Evaluates `rule` at the end of every period of `series`, starting in state `initial` and
/// carrying the state from each step to the next.
pub fn timeline(rule: &Rule, series: &Series, initial: AlarmState) -> Result<Vec<Step>, EvaluateError> {
    if series.period_s == 0 {
        return Err(EvaluateError::ZeroPeriod);
    }
    let period_ms = i64::from(series.period_s) * 1000;
    let mut state = initial;
    let mut steps = Vec::with_capacity(series.points.len());
    for period_index in 0..series.points.len() {
        let at_ms = i64::try_from(period_index + 1)
            .ok()
            .and_then(|periods| periods.checked_mul(period_ms))
            .and_then(|offset| series.start_ms.checked_add(offset))
            .ok_or(EvaluateError::TimeOverflow(period_index))?;
        let evaluation = evaluate(rule, &series.points[..=period_index], state);
        let changed = evaluation.state != state;
        state = evaluation.state;
        steps.push(Step {
            period_index,
            at_ms,
            changed,
            evaluation,
        });
    }
    Ok(steps)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(value: f64) -> Option<Datapoint> {
        Some(Datapoint { value, samples: 1.0 })
    }

    /// The documentation's notation: `0` not breaching, `X` breaching, `-` missing; newest last.
    fn pattern(text: &str) -> Vec<Option<Datapoint>> {
        text.split_whitespace()
            .map(|c| match c {
                "X" => point(2.0),
                "0" => point(0.0),
                _ => None,
            })
            .collect()
    }

    fn rule(n: usize, m: usize, treat: TreatMissingData) -> Rule {
        Rule::new(
            Comparison::GreaterThanThreshold,
            Threshold::Static(1.0),
            n,
            m,
            treat,
        )
        .expect("a valid rule")
    }

    /// The tables' columns, in their order.
    const COLUMNS: [TreatMissingData; 4] = [
        TreatMissingData::Missing,
        TreatMissingData::Ignore,
        TreatMissingData::Breaching,
        TreatMissingData::NotBreaching,
    ];

    /// Each row from every initial state: "retain" must keep it, any other outcome must not
    /// depend on it.
    fn check_table(m: usize, rows: &[(&str, usize, [&str; 4])]) {
        for (text, fill, outcomes) in rows {
            for (treat, outcome) in COLUMNS.into_iter().zip(outcomes) {
                for current in AlarmState::ALL {
                    let got = evaluate(&rule(3, m, treat), &pattern(text), current);
                    let want = match *outcome {
                        "retain" => current,
                        state => state.parse().expect("a state"),
                    };
                    assert_eq!(got.state, want, "{text}, {treat}, from {current}: {}", got.reason);
                    assert_eq!(got.filled, *fill, "{text}, {treat}: points to fill");
                }
            }
        }
    }

    #[test]
    fn documented_table_3_of_3() {
        check_table(
            3,
            &[
                ("0 - X - X", 0, ["OK", "OK", "OK", "OK"]),
                ("0 - - - -", 2, ["OK", "OK", "OK", "OK"]),
                ("- - - - -", 3, ["INSUFFICIENT_DATA", "retain", "ALARM", "OK"]),
                ("0 X X - X", 0, ["ALARM", "ALARM", "ALARM", "ALARM"]),
                ("- - X - -", 2, ["ALARM", "retain", "ALARM", "OK"]),
            ],
        );
    }

    #[test]
    fn documented_table_2_of_3() {
        check_table(
            2,
            &[
                ("0 - X - X", 0, ["ALARM", "ALARM", "ALARM", "ALARM"]),
                ("0 0 X 0 X", 0, ["ALARM", "ALARM", "ALARM", "ALARM"]),
                ("0 - X - -", 1, ["OK", "OK", "ALARM", "OK"]),
                ("- - - - 0", 2, ["OK", "OK", "ALARM", "OK"]),
                ("- - - X -", 2, ["ALARM", "retain", "ALARM", "OK"]),
            ],
        );
    }

    #[test]
    fn no_premature_alarm_on_a_recent_breach() {
        // The documentation's examples: with M = 3, `- - - - X` and `- - - X -` do not alarm
        // (the state is kept), and the next non-breaching datapoint gives OK.
        for treat in [TreatMissingData::Missing, TreatMissingData::Ignore] {
            for current in [AlarmState::Ok, AlarmState::InsufficientData] {
                for text in ["- - - - X", "- - - X -"] {
                    let got = evaluate(&rule(3, 3, treat), &pattern(text), current);
                    assert_eq!(got.state, current, "{text}, {treat}: {}", got.reason);
                }
            }
            for text in ["- - - X 0", "- - X - 0"] {
                let got = evaluate(&rule(3, 3, treat), &pattern(text), AlarmState::Alarm);
                assert_eq!(got.state, AlarmState::Ok, "{text}, {treat}: {}", got.reason);
            }
        }
    }

    #[test]
    fn missing_at_the_start_and_the_end() {
        let missing = rule(3, 3, TreatMissingData::Missing);
        // Fewer periods than the range: the earlier ones are missing, the fills lie before them.
        let got = evaluate(&missing, &pattern("X"), InsufficientData);
        assert_eq!(
            (got.state, got.filled, got.points.len()),
            (InsufficientData, 2, 1)
        );
        assert_eq!(evaluate(&missing, &[], AlarmState::Ok).state, InsufficientData);
        // Only the last 5 periods count; the 3 most recent real datapoints are evaluated.
        let got = evaluate(&missing, &pattern("0 0 0 X X - X -"), AlarmState::Ok);
        assert_eq!(got.state, Alarm, "{}", got.reason);
        assert_eq!(got.points.first().map(|p| p.period_index), Some(3));
        let roles: Vec<Role> = got.points.iter().map(|p| p.role).collect();
        use Role::{Evaluated as E, Unused as U};
        assert_eq!(roles, [E, E, U, E, U]);
        // After a breach the metric stops: ALARM until the breaches leave the range.
        let after = ["X X X - -", "X X - - -", "X - - - -", "- - - - -"];
        let states = after.map(|text| evaluate(&missing, &pattern(text), Alarm).state);
        use AlarmState::{Alarm, InsufficientData};
        assert_eq!(states, [Alarm, Alarm, Alarm, InsufficientData]);
        let not_breaching = rule(3, 3, TreatMissingData::NotBreaching);
        let got = evaluate(&not_breaching, &pattern("X X X X -"), Alarm);
        assert_eq!(got.state, Alarm, "3 real datapoints exist: {}", got.reason);
        let got = evaluate(&not_breaching, &pattern("X X - - -"), Alarm);
        assert_eq!((got.state, got.filled), (AlarmState::Ok, 1));
        assert_eq!(
            got.points
                .iter()
                .filter(|p| p.role == Role::Filled)
                .map(|p| p.period_index)
                .collect::<Vec<_>>(),
            [4]
        );
    }

    #[test]
    fn ignore_keeps_the_state_across_steps() {
        let series = Series {
            start_ms: 0,
            period_s: 60,
            points: pattern("X X X - - - - - -"),
        };
        let steps = timeline(
            &rule(3, 3, TreatMissingData::Ignore),
            &series,
            AlarmState::InsufficientData,
        )
        .expect("a timeline");
        let states: Vec<AlarmState> = steps.iter().map(Step::state).collect();
        use AlarmState::{Alarm, InsufficientData as Insufficient, Ok};
        assert_eq!(
            states,
            [
                Insufficient,
                Insufficient,
                Alarm,
                Alarm,
                Alarm,
                Alarm,
                Alarm,
                Alarm,
                Alarm
            ]
        );
        assert!(
            steps[6].evaluation.reason.contains("premature"),
            "{}",
            steps[6].evaluation.reason
        );
        assert!(
            steps[7].evaluation.reason.contains("ignored, the state is kept"),
            "{}",
            steps[7].evaluation.reason
        );
        let quiet = Series {
            start_ms: 0,
            period_s: 60,
            points: pattern("- - - - - - -"),
        };
        let steps = timeline(&rule(2, 1, TreatMissingData::Ignore), &quiet, Ok).expect("a timeline");
        assert!(steps.iter().all(|s| s.state() == Ok && !s.changed));
    }

    #[test]
    fn percentile_with_a_low_sample_count() {
        let samples = |samples| Some(Datapoint { value: 2.0, samples });
        let points = [samples(2000.0), samples(1000.0), samples(999.0)];
        let p99 = |low| {
            rule(3, 3, TreatMissingData::Missing)
                .with_percentile(99.0, low)
                .expect("a percentile")
        };
        let got = evaluate(&p99(Some(LowSampleCount::Ignore)), &points, AlarmState::Ok);
        assert_eq!(got.state, AlarmState::Ok);
        assert!(
            got.reason.contains("999 samples, fewer than the 1000 p99 needs"),
            "{}",
            got.reason
        );
        assert!(got.points[2].low_samples && !got.points[1].low_samples);
        for low in [Some(LowSampleCount::Evaluate), None] {
            assert_eq!(
                evaluate(&p99(low), &points, AlarmState::Ok).state,
                AlarmState::Alarm
            );
        }
        // Only the newest period's count matters: an earlier low one is evaluated.
        let later = [samples(10.0), samples(1000.0), samples(5000.0)];
        assert_eq!(
            evaluate(&p99(Some(LowSampleCount::Ignore)), &later, AlarmState::Ok).state,
            AlarmState::Alarm
        );
        let mins = [99.0, 99.9, 95.0, 90.0, 50.0, 25.0, 10.0, 100.0, 0.0].map(Rule::min_samples);
        assert_eq!(mins, [1000.0, 10000.0, 200.0, 100.0, 20.0, 40.0, 100.0, 0.0, 0.0]);
    }

    #[test]
    fn every_comparison() {
        use Comparison as C;
        let band = Threshold::Band {
            lower: 1.0,
            upper: 3.0,
        };
        let cases = [
            (
                C::GreaterThanOrEqualToThreshold,
                Threshold::Static(2.0),
                [false, true, true],
            ),
            (
                C::GreaterThanThreshold,
                Threshold::Static(2.0),
                [false, false, true],
            ),
            (C::LessThanThreshold, Threshold::Static(2.0), [true, false, false]),
            (
                C::LessThanOrEqualToThreshold,
                Threshold::Static(2.0),
                [true, true, false],
            ),
        ];
        for (comparison, threshold, want) in cases {
            let rule = Rule::new(comparison, threshold, 1, 1, TreatMissingData::Missing).expect("a rule");
            assert_eq!([1.0, 2.0, 3.0].map(|v| rule.breaches(v)), want, "{comparison}");
            assert!(!rule.breaches(f64::NAN));
        }
        let cases = [
            (
                C::LessThanLowerOrGreaterThanUpperThreshold,
                [true, false, false, false, true],
            ),
            (C::LessThanLowerThreshold, [true, false, false, false, false]),
            (C::GreaterThanUpperThreshold, [false, false, false, false, true]),
        ];
        for (comparison, want) in cases {
            let rule = Rule::new(comparison, band, 1, 1, TreatMissingData::Missing).expect("a rule");
            assert_eq!(
                [0.5, 1.0, 2.0, 3.0, 3.5].map(|v| rule.breaches(v)),
                want,
                "{comparison}"
            );
        }
    }

    #[test]
    fn names() {
        for c in Comparison::ALL {
            assert_eq!(c.as_str().parse::<Comparison>().ok(), Some(c));
        }
        for t in TreatMissingData::ALL {
            assert_eq!(t.as_str().parse::<TreatMissingData>().ok(), Some(t));
        }
        for s in AlarmState::ALL {
            assert_eq!(s.as_str().parse::<AlarmState>().ok(), Some(s));
        }
        assert_eq!(
            "ignore".parse::<LowSampleCount>().ok(),
            Some(LowSampleCount::Ignore)
        );
        let error = "GreaterThan"
            .parse::<Comparison>()
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("unknown comparison operator \"GreaterThan\": expected one of GreaterThanOrEqualToThreshold, "), "{error}");
        let error = "NotBreaching"
            .parse::<TreatMissingData>()
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert_eq!(error, "unknown TreatMissingData \"NotBreaching\": expected one of missing, notBreaching, breaching, ignore");
    }

    #[test]
    fn invalid_rules() {
        use Comparison as C;
        use TreatMissingData::Missing;
        let band = Threshold::Band {
            lower: 1.0,
            upper: 3.0,
        };
        let error = |r: Result<Rule, EvaluateError>| r.map(|_| ()).unwrap_err().to_string();
        let static1 = Threshold::Static(1.0);
        assert_eq!(
            error(Rule::new(C::GreaterThanThreshold, static1, 0, 1, Missing)),
            "EvaluationPeriods must be at least 1"
        );
        assert_eq!(
            error(Rule::new(C::GreaterThanThreshold, static1, 3, 0, Missing)),
            "DatapointsToAlarm must be at least 1"
        );
        assert_eq!(
            error(Rule::new(C::GreaterThanThreshold, static1, 2, 3, Missing)),
            "DatapointsToAlarm (3) exceeds EvaluationPeriods (2)"
        );
        assert_eq!(
            error(Rule::new(C::GreaterThanUpperThreshold, static1, 1, 1, Missing)),
            "GreaterThanUpperThreshold needs a band threshold (lower and upper), not a static one"
        );
        assert_eq!(
            error(Rule::new(C::LessThanThreshold, band, 1, 1, Missing)),
            "LessThanThreshold needs a static threshold, not a band"
        );
        let reversed = Threshold::Band {
            lower: 3.0,
            upper: 1.0,
        };
        assert!(error(Rule::new(C::LessThanLowerThreshold, reversed, 1, 1, Missing)).contains("lower first"));
        assert!(error(Rule::new(
            C::LessThanThreshold,
            Threshold::Static(f64::NAN),
            1,
            1,
            Missing
        ))
        .contains("not a finite"));
        for p in [-1.0, 100.5, f64::NAN] {
            let percentile = Rule::new(C::LessThanThreshold, static1, 1, 1, Missing)
                .and_then(|r| r.with_percentile(p, None));
            assert!(error(percentile).contains("is outside 0–100"));
        }
        let zero = Series {
            start_ms: 0,
            period_s: 0,
            points: pattern("X"),
        };
        assert!(matches!(
            timeline(&rule(1, 1, Missing), &zero, AlarmState::Ok),
            Err(EvaluateError::ZeroPeriod)
        ));
    }

    #[test]
    fn timeline_transitions() {
        let series = Series {
            start_ms: 600_000,
            period_s: 60,
            points: pattern("0 0 X X 0 - 0 0"),
        };
        let steps = timeline(
            &rule(3, 2, TreatMissingData::Missing),
            &series,
            AlarmState::InsufficientData,
        )
        .expect("a timeline");
        use AlarmState::{Alarm, Ok};
        let got: Vec<(usize, i64, AlarmState, bool, bool)> = steps
            .iter()
            .map(|s| {
                (
                    s.period_index,
                    s.at_ms,
                    s.state(),
                    s.changed,
                    s.evaluation.newest_breaching(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (0, 660_000, Ok, true, false),
                (1, 720_000, Ok, false, false),
                (2, 780_000, Ok, false, true),
                (3, 840_000, Alarm, true, true),
                (4, 900_000, Alarm, false, false),
                (5, 960_000, Alarm, false, false),
                (6, 1_020_000, Ok, true, false),
                (7, 1_080_000, Ok, false, false),
            ]
        );
        assert_eq!(
            steps[3].evaluation.reason,
            "2 of the last 3 datapoints [0, 2, 2] breached (> 1; 2 needed): ALARM"
        );
        let overflow = Series {
            start_ms: i64::MAX - 1,
            ..series
        };
        assert!(matches!(
            timeline(&rule(1, 1, TreatMissingData::Missing), &overflow, Ok),
            Err(EvaluateError::TimeOverflow(0))
        ));
    }
}
