//! The replay itself: a service's canary alarms (`alarms/<service>.json`) evaluated over the
//! EMF a version emitted, and the decision CodeDeploy would take.
//!
//! What a local run cannot produce is derived, and the replay says so in its notes: CloudWatch
//! publishes `AWS/Lambda` `Invocations`, `Errors` and `Duration` by `ExecutedVersion`; a local run
//! has the extension's `DurationMs` (one sample per `platform.report`) and `InvocationError`
//! (a report whose status is not `success`), both by `function_version`. When the input holds
//! no `AWS/Lambda` metric, each alarm's `AWS/Lambda` metric of version V is read from them:
//! `Invocations` = one per `DurationMs` sample, `Duration` = its values, `Errors` = the
//! `InvocationError` count, 0 in a period with invocations and none.
//!
//! The canary window starts at the first datapoint of the version under test (traffic starts
//! shifting to it when it is published; with no versioned metric at all, at the input's first)
//! and lasts `window` (five minutes for CodeDeploy's `Canary10Percent5Minutes`). Every canary
//! alarm is evaluated at the end of each of its periods from there to the end of the input (a
//! note says so when the input ends first), starting in `INSUFFICIENT_DATA` as a new alarm does;
//! the first alarm in `ALARM` inside the window rolls the release back. Operational alarms never
//! block a release: they are listed, not replayed.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::{json, Value};

use super::emf::{self, Observation};
use super::evaluate::{
    self, AlarmState, Comparison, LowSampleCount, Rule, Step, Threshold, TreatMissingData,
};
use super::series::{self, MetricId, Statistic};
use super::{chart, math, utc, Series};
use crate::alarms::EXECUTED_VERSION;
use crate::placeholders;

/// The namespace of Lambda's own metrics.
const LAMBDA_NAMESPACE: &str = "AWS/Lambda";

/// What a replay reads.
#[derive(Clone, Debug)]
pub struct Input<'a> {
    /// `alarms/<service>.json`, parsed.
    pub alarms: &'a Value,
    /// The outputs to read: EMF documents, one per line, mixed with any other output.
    pub emf: &'a [Source<'a>],
    /// The version under test (`function_version` of its metrics, `ExecutedVersion` of
    /// Lambda's).
    pub version: &'a str,
    /// How long the canary runs before all traffic shifts.
    pub window: Duration,
}

/// One output a replay reads: a run's standard output, a CloudWatch Logs export.
#[derive(Clone, Copy, Debug)]
pub struct Source<'a> {
    /// What it is called in notes (a file's path).
    pub name: &'a str,
    /// Its text.
    pub text: &'a str,
}

/// The replay could not run.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The alarms document is not what `keel-infra` writes.
    #[error("the alarms document: {0}")]
    Alarms(String),
    /// An alarm cannot be evaluated as written.
    #[error("alarm {alarm}: {reason}")]
    Alarm {
        /// Its logical id.
        alarm: String,
        /// Why.
        reason: String,
    },
    /// The input holds no EMF document.
    #[error("no EMF document in the input ({lines} lines read)")]
    NoMetrics {
        /// Lines read.
        lines: usize,
    },
    /// No metric of the input carries the version under test: replaying it would promote a
    /// version nothing was measured of.
    #[error(
        "no metric of {service} in the input carries version {version} (as `{}` or `ExecutedVersion`); versions in it: {}",
        keel_catalog::VERSION_DIMENSION,
        if seen.is_empty() { "none".to_owned() } else { seen.join(", ") }
    )]
    NoVersion {
        /// The service of the alarms.
        service: String,
        /// The version asked for.
        version: String,
        /// The versions the input holds.
        seen: Vec<String>,
    },
}

/// What CodeDeploy would do.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// No canary alarm went to `ALARM` inside the window.
    Promote,
    /// `alarm` went to `ALARM` at `at_ms`, because `reason`.
    Rollback {
        /// When (end of the period evaluated), milliseconds since the epoch.
        at_ms: i64,
        /// The alarm's logical id.
        alarm: String,
        /// The alarm's name.
        name: String,
        /// Why it fired.
        reason: String,
    },
}

/// One canary alarm, replayed.
#[derive(Clone, Debug)]
pub struct AlarmReplay {
    /// Its logical id.
    pub id: String,
    /// Its name (placeholders resolved).
    pub name: String,
    /// What it watches and how, in one line.
    pub summary: String,
    /// The unit of its values, for the picture.
    pub unit: &'static str,
    /// Its threshold.
    pub threshold: f64,
    /// The datapoints it was evaluated over.
    pub series: Series,
    /// Its evaluation at the end of each period.
    pub steps: Vec<Step>,
}

/// A replay's result.
#[derive(Clone, Debug)]
pub struct Replay {
    /// The service.
    pub service: String,
    /// The version under test.
    pub version: String,
    /// Start and end of the canary window, milliseconds since the epoch.
    pub window_ms: (i64, i64),
    /// End of the input's last datapoint.
    pub end_ms: i64,
    /// EMF documents read.
    pub documents: usize,
    /// Lines read.
    pub lines: usize,
    /// What was derived or skipped, for the reader.
    pub notes: Vec<String>,
    /// The canary alarms, replayed.
    pub alarms: Vec<AlarmReplay>,
    /// The operational alarms' ids (not replayed).
    pub operational: Vec<String>,
    /// The decision.
    pub decision: Decision,
}

/// Replays `input`.
pub fn replay(input: &Input<'_>) -> Result<Replay, ReplayError> {
    let service = input.alarms["Service"]
        .as_str()
        .ok_or_else(|| ReplayError::Alarms("no `Service`".into()))?
        .to_owned();
    let entries = input.alarms["Alarms"]
        .as_array()
        .ok_or_else(|| ReplayError::Alarms("no `Alarms` list".into()))?;
    let mut notes = Vec::new();
    let (mut observations, mut lines, mut documents) = (Vec::new(), 0, 0);
    for source in input.emf {
        let reading = emf::read(source.text);
        notes.extend(reading.skipped.iter().map(|skipped| {
            format!(
                "{} line {}: skipped: {}",
                source.name, skipped.line, skipped.reason
            )
        }));
        observations.extend(reading.observations);
        lines += reading.lines;
        documents += reading.documents;
    }
    let (first_ms, last_ms) =
        series::observed_range(&observations).ok_or(ReplayError::NoMetrics { lines })?;
    // The service's versions: Keel's metrics of that service, and Lambda's.
    let versions = || {
        observations
            .iter()
            .filter(|o| {
                o.namespace == LAMBDA_NAMESPACE
                    || o.dimensions.iter().any(|(k, v)| k == "service" && *v == service)
            })
            .filter_map(|o| version_of(o).map(|version| (version, o.timestamp_ms)))
    };
    let first_of_version = versions()
        .filter(|(version, _)| *version == input.version)
        .map(|(_, at_ms)| at_ms)
        .min();
    let seen: BTreeSet<&str> = versions().map(|(version, _)| version).collect();
    let first_ms = match first_of_version {
        Some(first_ms) => first_ms,
        // Metrics without versions (alarms of one's own): the window starts with the input.
        None if seen.is_empty() => {
            notes.push(format!(
                "no metric of {service} carries a version: the canary window starts with the input"
            ));
            first_ms
        }
        None => {
            return Err(ReplayError::NoVersion {
                service: service.clone(),
                version: input.version.to_owned(),
                seen: seen.into_iter().map(str::to_owned).collect(),
            })
        }
    };
    let window_ms = (first_ms, first_ms.saturating_add(millis(input.window)));
    if last_ms < window_ms.1 {
        notes.push(format!(
            "the input ends at {}, before the canary window does: the alarms are replayed only as far as it goes",
            utc(last_ms)
        ));
    }

    let mut alarms = Vec::new();
    let mut operational = Vec::new();
    let mut derived = false;
    for entry in entries {
        let id = entry["LogicalId"].as_str().unwrap_or("(no LogicalId)").to_owned();
        if entry["Role"] != "canary" {
            operational.push(id);
            continue;
        }
        let alarm =
            resolve(&entry["PutMetricAlarm"], input.version).map_err(|reason| ReplayError::Alarm {
                alarm: id.clone(),
                reason,
            })?;
        if !derived && reads_lambda(&alarm) && !observations.iter().any(|o| o.namespace == LAMBDA_NAMESPACE) {
            let lambda = derive_lambda(&observations, &service, &alarm);
            notes.push(format!(
                "AWS/Lambda Invocations, Errors and Duration by version are derived from the extension's \
                 DurationMs and InvocationError (platform.report): {} invocations of version {}",
                lambda
                    .iter()
                    .filter(|o| o.name == "Invocations" && version_of(o) == Some(input.version))
                    .flat_map(|o| &o.values)
                    .map(|(_, count)| count)
                    .sum::<f64>(),
                input.version
            ));
            observations.extend(lambda);
            derived = true;
        }
        // From the start of the window's first minute: a standard-resolution datapoint is stored
        // at the start of its minute, whatever the period.
        let from_ms = first_ms - first_ms.rem_euclid(60_000);
        let replayed = replay_alarm(&id, &alarm, &observations, from_ms, last_ms).map_err(|reason| {
            ReplayError::Alarm {
                alarm: id.clone(),
                reason,
            }
        })?;
        alarms.push(replayed);
    }
    let end_ms = alarms
        .iter()
        .map(|a| a.series.start_ms + i64::from(a.series.period_s) * 1000 * a.series.points.len() as i64)
        .max()
        .unwrap_or(last_ms);
    let decision = decide(&alarms, window_ms.1);
    Ok(Replay {
        service,
        version: input.version.to_owned(),
        window_ms,
        end_ms,
        documents,
        lines,
        notes,
        alarms,
        operational,
        decision,
    })
}

/// The first canary alarm in `ALARM` at or before `until_ms`.
fn decide(alarms: &[AlarmReplay], until_ms: i64) -> Decision {
    alarms
        .iter()
        .filter_map(|alarm| {
            alarm
                .steps
                .iter()
                .find(|step| step.state() == AlarmState::Alarm && step.at_ms <= until_ms)
                .map(|step| (step.at_ms, alarm, step))
        })
        .min_by_key(|(at_ms, _, _)| *at_ms)
        .map_or(Decision::Promote, |(at_ms, alarm, step)| Decision::Rollback {
            at_ms,
            alarm: alarm.id.clone(),
            name: alarm.name.clone(),
            reason: step.evaluation.reason.clone(),
        })
}

/// `PutMetricAlarm` input with its placeholders resolved: the version's number as
/// `${<Function>.Version.Version}`, the stack's name as `<stack>`, every other placeholder as
/// its own name.
fn resolve(alarm: &Value, version: &str) -> Result<Value, String> {
    let text = placeholders::resolve(&alarm.to_string(), |name| {
        Some(if name.ends_with(".Version.Version") {
            // Pasted into JSON text: escaped as a JSON string's content.
            let quoted = Value::from(version).to_string();
            quoted[1..quoted.len() - 1].to_owned()
        } else if name == "AWS::StackName" {
            "<stack>".to_owned()
        } else {
            name.to_owned()
        })
    })
    .map_err(|e| e.to_string())?;
    serde_json::from_str(&text).map_err(|e| e.to_string())
}

/// The version an observation is of: its `function_version` (Keel's metrics) or
/// `ExecutedVersion` (Lambda's).
fn version_of(observation: &Observation) -> Option<&str> {
    observation
        .dimensions
        .iter()
        .find(|(name, _)| name == keel_catalog::VERSION_DIMENSION || name == EXECUTED_VERSION)
        .map(|(_, value)| value.as_str())
}

/// Whether an alarm reads a metric of `AWS/Lambda`.
fn reads_lambda(alarm: &Value) -> bool {
    alarm["Namespace"] == LAMBDA_NAMESPACE
        || alarm["Metrics"].as_array().is_some_and(|queries| {
            queries
                .iter()
                .any(|q| q["MetricStat"]["Metric"]["Namespace"] == LAMBDA_NAMESPACE)
        })
}

/// The `AWS/Lambda` dimensions the alarm reads (`FunctionName`, `Resource`, `ExecutedVersion`).
fn lambda_dimensions(alarm: &Value) -> Vec<(String, String)> {
    let metric = if alarm["Namespace"] == LAMBDA_NAMESPACE {
        alarm
    } else {
        alarm["Metrics"]
            .as_array()
            .and_then(|queries| {
                queries
                    .iter()
                    .map(|q| &q["MetricStat"]["Metric"])
                    .find(|m| m["Namespace"] == LAMBDA_NAMESPACE)
            })
            .unwrap_or(&Value::Null)
    };
    dimensions(&metric["Dimensions"])
}

/// `[{Name, Value}]` as sorted pairs.
fn dimensions(list: &Value) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = list
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|d| {
                    (
                        d["Name"].as_str().unwrap_or_default().to_owned(),
                        d["Value"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    pairs.sort();
    pairs
}

/// Lambda's `Invocations`, `Duration` and `Errors` of each version, from the extension's
/// `DurationMs` and `InvocationError` of `service` by `function_version`, with the dimensions
/// `alarm` reads (its `ExecutedVersion` replaced by each version's).
fn derive_lambda(observations: &[Observation], service: &str, alarm: &Value) -> Vec<Observation> {
    let template = lambda_dimensions(alarm);
    let of = |observation: &Observation, name: &str| -> Option<String> {
        let keel = observation.namespace == crate::alarms::KEEL_NAMESPACE && observation.name == name;
        let dims = &observation.dimensions;
        let service_matches = dims.iter().any(|(k, v)| k == "service" && v == service);
        let version = dims
            .iter()
            .find(|(k, _)| k == keel_catalog::VERSION_DIMENSION)
            .map(|(_, v)| v.clone());
        (keel && service_matches && dims.len() == 2)
            .then_some(version)
            .flatten()
    };
    let lambda = |observation: &Observation, name: &str, version: String, values: Vec<(f64, f64)>| {
        let mut dimensions: Vec<(String, String)> = template
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    if k == EXECUTED_VERSION {
                        version.clone()
                    } else {
                        v.clone()
                    },
                )
            })
            .collect();
        dimensions.sort();
        Observation {
            namespace: LAMBDA_NAMESPACE.to_owned(),
            name: name.to_owned(),
            dimensions,
            timestamp_ms: observation.timestamp_ms,
            values,
            unit: None,
            high_resolution: observation.high_resolution,
        }
    };
    let mut derived = Vec::new();
    for observation in observations {
        if let Some(version) = of(observation, keel_catalog::keel::INVOCATION_DURATION_MS.name) {
            let invocations: f64 = observation.values.iter().map(|(_, count)| count).sum();
            derived.push(lambda(
                observation,
                "Duration",
                version.clone(),
                observation.values.clone(),
            ));
            derived.push(lambda(
                observation,
                "Invocations",
                version.clone(),
                vec![(1.0, invocations)],
            ));
            // Lambda publishes Errors (0 when none failed) for every period with invocations.
            derived.push(lambda(observation, "Errors", version, vec![(0.0, invocations)]));
        } else if let Some(version) = of(observation, keel_catalog::keel::INVOCATION_ERROR.name) {
            derived.push(lambda(observation, "Errors", version, observation.values.clone()));
        }
    }
    derived
}

/// One canary alarm's datapoints and evaluation.
fn replay_alarm(
    id: &str,
    alarm: &Value,
    observations: &[Observation],
    from_ms: i64,
    to_ms: i64,
) -> Result<AlarmReplay, String> {
    let name = alarm["AlarmName"].as_str().unwrap_or(id).to_owned();
    let int = |key: &str| alarm[key].as_u64().and_then(|n| usize::try_from(n).ok());
    let evaluation_periods = int("EvaluationPeriods").ok_or("no EvaluationPeriods")?;
    let datapoints_to_alarm = int("DatapointsToAlarm").unwrap_or(evaluation_periods);
    let threshold = alarm["Threshold"]
        .as_f64()
        .ok_or("no Threshold (anomaly bands are not replayed)")?;
    let comparison: Comparison = text(alarm, "ComparisonOperator")?
        .parse()
        .map_err(|e| format!("{e}"))?;
    let treat_missing_data: TreatMissingData = alarm["TreatMissingData"]
        .as_str()
        .unwrap_or("missing")
        .parse()
        .map_err(|e| format!("{e}"))?;
    let low_sample_count: Option<LowSampleCount> = alarm["EvaluateLowSampleCountPercentile"]
        .as_str()
        .map(str::parse)
        .transpose()
        .map_err(|e| format!("{e}"))?;

    let aggregate = |metric: &MetricId, statistic, period| {
        series::aggregate(
            observations,
            metric,
            statistic,
            period,
            from_ms,
            to_ms.saturating_add(1),
        )
    };
    let (series, percentile, summary, unit) = if let Some(queries) = alarm["Metrics"].as_array() {
        let mut inputs = BTreeMap::new();
        let mut result = None;
        for query in queries {
            let query_id = text(query, "Id")?.to_owned();
            if let Some(expression) = query["Expression"].as_str() {
                if query["ReturnData"] != false {
                    result = Some((
                        expression.to_owned(),
                        query["Label"].as_str().unwrap_or(expression).to_owned(),
                    ));
                }
                continue;
            }
            let stat = &query["MetricStat"];
            let period = period(&stat["Period"])?;
            let statistic: Statistic = text(stat, "Stat")?.parse().map_err(|e| format!("{e}"))?;
            let metric = metric_id(&stat["Metric"])?;
            let series = aggregate(&metric, statistic, period).map_err(|e| format!("{query_id}: {e}"))?;
            inputs.insert(query_id, series);
        }
        let (expression, label) = result.ok_or("no expression returns data")?;
        let series = math::evaluate(&expression, &inputs).map_err(|e| format!("{expression}: {e}"))?;
        let unit = if label.contains('%') { "%" } else { "" };
        (series, None, format!("{label} = {expression}"), unit)
    } else {
        let metric = metric_id(alarm)?;
        let statistic: Statistic = alarm["Statistic"]
            .as_str()
            .or_else(|| alarm["ExtendedStatistic"].as_str())
            .ok_or("no Statistic or ExtendedStatistic")?
            .parse()
            .map_err(|e| format!("{e}"))?;
        let period = period(&alarm["Period"])?;
        let series = aggregate(&metric, statistic, period).map_err(|e| e.to_string())?;
        let percentile = match statistic {
            Statistic::Percentile(p) => Some(p),
            _ => None,
        };
        let unit = if metric.name.contains("Duration") {
            "ms"
        } else {
            "count"
        };
        (
            series,
            percentile,
            format!("{} {} ({statistic}, {period} s)", metric.namespace, metric.name),
            unit,
        )
    };
    check_range(evaluation_periods, &series)?;
    let mut rule = Rule::new(
        comparison,
        Threshold::Static(threshold),
        evaluation_periods,
        datapoints_to_alarm,
        treat_missing_data,
    )
    .map_err(|e| e.to_string())?;
    if let Some(percentile) = percentile {
        rule = rule
            .with_percentile(percentile, low_sample_count)
            .map_err(|e| e.to_string())?;
    }
    let steps =
        evaluate::timeline(&rule, &series, AlarmState::InsufficientData).map_err(|e| e.to_string())?;
    let summary = format!(
        "{summary} {} {threshold} in {datapoints_to_alarm} of {evaluation_periods}, missing data: {}",
        comparison.symbol(),
        treat_missing_data.as_str()
    );
    Ok(AlarmReplay {
        id: id.to_owned(),
        name,
        summary,
        unit,
        threshold,
        series,
        steps,
    })
}

/// The most evaluations × periods in their ranges one alarm's replay computes (each evaluation
/// keeps its range): ten million, some hundreds of megabytes at most.
const MAX_EVALUATED_PERIODS: usize = 10_000_000;

/// Refuses what CloudWatch refuses (`EvaluationPeriods` × `Period` over a day, or seven days
/// with periods of an hour or more) and a replay too long to hold.
fn check_range(evaluation_periods: usize, series: &Series) -> Result<(), String> {
    let period = u64::from(series.period_s);
    let limit = if period < 3600 { 86_400 } else { 604_800 };
    let total = u64::try_from(evaluation_periods)
        .unwrap_or(u64::MAX)
        .saturating_mul(period);
    if total > limit {
        return Err(format!(
            "EvaluationPeriods × Period is {total} s: CloudWatch allows at most {limit} s{}",
            if period < 3600 {
                " with periods under an hour"
            } else {
                ""
            }
        ));
    }
    let evaluated = series
        .points
        .len()
        .saturating_mul(evaluate::range_len(evaluation_periods));
    if evaluated > MAX_EVALUATED_PERIODS {
        return Err(format!(
            "{} periods of {} s, each evaluated over {} periods, is more than the replay computes ({MAX_EVALUATED_PERIODS}): \
             replay a shorter input",
            series.points.len(),
            series.period_s,
            evaluate::range_len(evaluation_periods)
        ));
    }
    Ok(())
}

/// A string member.
fn text<'v>(value: &'v Value, key: &str) -> Result<&'v str, String> {
    value[key].as_str().ok_or_else(|| format!("no {key}"))
}

/// A period in seconds.
fn period(value: &Value) -> Result<u32, String> {
    value
        .as_u64()
        .and_then(|p| u32::try_from(p).ok())
        .ok_or_else(|| format!("the period {value} is not a number of seconds"))
}

/// `{Namespace, MetricName, Dimensions}` as a metric id.
fn metric_id(metric: &Value) -> Result<MetricId, String> {
    Ok(MetricId {
        namespace: text(metric, "Namespace")?.to_owned(),
        name: text(metric, "MetricName")?.to_owned(),
        dimensions: dimensions(&metric["Dimensions"]),
    })
}

/// Milliseconds of a duration, saturating.
fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

impl Replay {
    /// The decision in one line: `PROMOTE`, or `ROLLBACK at <time>: <alarm> (<why>)`.
    pub fn verdict(&self) -> String {
        match &self.decision {
            Decision::Promote => format!(
                "PROMOTE: no canary alarm of {} went to ALARM in the canary window ({} to {})",
                self.service,
                utc(self.window_ms.0),
                utc(self.window_ms.1)
            ),
            Decision::Rollback {
                at_ms, name, reason, ..
            } => format!("ROLLBACK at {}: {name} ({reason})", utc(*at_ms)),
        }
    }

    /// What a person reads: the input, the notes, each alarm's states per period, the
    /// decision.
    pub fn text(&self) -> String {
        let mut out = format!(
            "canary replay of {} version {}: {} EMF documents in {} lines, {} to {}; canary window until {}\n",
            self.service,
            self.version,
            self.documents,
            self.lines,
            utc(self.window_ms.0),
            utc(self.end_ms),
            utc(self.window_ms.1)
        );
        for note in &self.notes {
            out.push_str(&format!("note: {note}\n"));
        }
        for alarm in &self.alarms {
            out.push_str(&format!("\n{} ({})\n  {}\n", alarm.id, alarm.name, alarm.summary));
            for (step, point) in alarm.steps.iter().zip(&alarm.series.points) {
                let value = point.map_or_else(|| "-".to_owned(), |p| format!("{}", round(p.value)));
                out.push_str(&format!(
                    "  {}  {:>10}  {:<17} {}\n",
                    utc(step.at_ms),
                    value,
                    step.state().as_str(),
                    step.evaluation.reason
                ));
            }
        }
        if !self.operational.is_empty() {
            out.push_str(&format!(
                "\noperational alarms (notify on-call, never block a release; not replayed): {}\n",
                self.operational.join(", ")
            ));
        }
        out.push_str(&format!("\n{}\n", self.verdict()));
        out
    }

    /// The same, for CI.
    pub fn json(&self) -> Value {
        let (decision, rollback) = match &self.decision {
            Decision::Promote => ("PROMOTE", Value::Null),
            Decision::Rollback {
                at_ms,
                alarm,
                name,
                reason,
            } => (
                "ROLLBACK",
                json!({"at": utc(*at_ms), "at_ms": at_ms, "alarm": alarm, "alarm_name": name, "reason": reason}),
            ),
        };
        json!({
            "service": self.service,
            "version": self.version,
            "decision": decision,
            "rollback": rollback,
            "verdict": self.verdict(),
            "window": {"start": utc(self.window_ms.0), "end": utc(self.window_ms.1)},
            "documents": self.documents,
            "notes": self.notes,
            "operational_alarms_not_replayed": self.operational,
            "alarms": self.alarms.iter().map(|alarm| json!({
                "id": alarm.id,
                "name": alarm.name,
                "summary": alarm.summary,
                "threshold": alarm.threshold,
                "period_s": alarm.series.period_s,
                "periods": alarm.steps.iter().zip(&alarm.series.points).map(|(step, point)| json!({
                    "at": utc(step.at_ms),
                    "value": point.map(|p| round(p.value)),
                    "samples": point.map(|p| p.samples),
                    "state": step.state().as_str(),
                    "reason": step.evaluation.reason,
                })).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        })
    }

    /// One picture per canary alarm: `(logical id, SVG)`.
    pub fn charts(&self) -> Vec<(String, String)> {
        self.alarms
            .iter()
            .map(|alarm| {
                let states: Vec<&str> = alarm.steps.iter().map(|s| s.state().as_str()).collect();
                let breaching: Vec<bool> = alarm
                    .steps
                    .iter()
                    .map(|s| s.evaluation.newest_breaching())
                    .collect();
                let label;
                let decision = match &self.decision {
                    Decision::Rollback { at_ms, alarm: id, .. } if *id == alarm.id => {
                        label = format!("ROLLBACK at {}", utc(*at_ms));
                        alarm
                            .steps
                            .iter()
                            .position(|s| s.at_ms == *at_ms)
                            .map(|period_index| chart::Decision {
                                period_index,
                                label: &label,
                            })
                    }
                    _ => None,
                };
                let svg = chart::render(&chart::Chart {
                    title: &alarm.name,
                    subtitle: &alarm.summary,
                    unit: alarm.unit,
                    series: &alarm.series,
                    threshold: alarm.threshold,
                    breaching: &breaching,
                    states: &states,
                    decision,
                    window_end_ms: Some(self.window_ms.1),
                });
                (alarm.id.clone(), svg)
            })
            .collect()
    }
}

/// `value` to three decimals.
fn round(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}
