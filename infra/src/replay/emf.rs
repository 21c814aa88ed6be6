//! Reading EMF documents out of a function's output, as CloudWatch Logs extracts them.
//!
//! The input is whatever a run printed: the stdout of a local load run (EMF documents between
//! JSON log lines and anything else) or an exported CloudWatch Logs file (each line an EMF
//! document, possibly behind a timestamp and request id, or a JSON event whose `message` is
//! one). A line is an EMF document when it holds a JSON object with an `_aws` member.
//!
//! Each metric of each dimension set becomes one [`Observation`], as CloudWatch stores it: a
//! canary-critical metric written with the dimension sets `[service]` and
//! `[service, function_version]` is two metrics. A metric's value is a number, an array of
//! numbers, or `{"Values": [...], "Counts": [...]}` (each value seen `Counts[i]` times). A
//! document CloudWatch would reject is skipped whole, with the reason — among them one over the
//! specification's limits (256 KB, 100 metrics a directive, 100 values a metric, 30 dimensions
//! a set), so that what a replay holds stays proportional to its input.

use serde_json::{Map, Value};

/// The longest log event CloudWatch Logs takes, so the longest EMF document: 256 KB.
const MAX_DOCUMENT_BYTES: usize = 256 * 1024;
/// The most metrics one directive declares.
const MAX_METRICS: usize = 100;
/// The most values one metric holds.
const MAX_VALUES: usize = 100;
/// The most dimensions in one dimension set.
const MAX_DIMENSIONS: usize = 30;
/// The most metrics (dimension sets × metrics) one document yields: more is refused, so that a
/// short line cannot expand into all the memory there is.
const MAX_OBSERVATIONS: usize = 1_000;

/// One metric's values of one EMF document under one dimension set.
#[derive(Clone, Debug, PartialEq)]
pub struct Observation {
    /// The metric's namespace.
    pub namespace: String,
    /// The metric's name.
    pub name: String,
    /// The dimension set's names with their values, sorted by name.
    pub dimensions: Vec<(String, String)>,
    /// The document's `_aws.Timestamp`, milliseconds since the epoch.
    pub timestamp_ms: i64,
    /// `(value, count)`: each value, seen `count` times.
    pub values: Vec<(f64, f64)>,
    /// The unit declared, if any.
    pub unit: Option<String>,
    /// `StorageResolution: 1`: stored to the second, not to the minute.
    pub high_resolution: bool,
}

/// A line that looked like an EMF document and was not read, with why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    /// Its line number, from 1.
    pub line: usize,
    /// Why it was skipped.
    pub reason: String,
}

/// What [`read`] found.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Reading {
    /// Every metric of every document read, in input order.
    pub observations: Vec<Observation>,
    /// Lines read.
    pub lines: usize,
    /// EMF documents read.
    pub documents: usize,
    /// Documents skipped.
    pub skipped: Vec<Skipped>,
}

/// Reads every EMF document of `text`, one per line.
///
/// ```
/// let text = r#"{"_aws":{"Timestamp":1764590400000,"CloudWatchMetrics":[{"Namespace":"Keel",
/// "Dimensions":[["service"]],"Metrics":[{"Name":"DurationMs","Unit":"Milliseconds"}]}]},
/// "service":"booking-api","DurationMs":[12.5,14.0]}"#.replace('\n', "");
/// let reading = keel_infra::replay::emf::read(&format!("a log line\n{text}\n"));
/// assert_eq!(reading.documents, 1);
/// assert_eq!(reading.observations[0].values, vec![(12.5, 1.0), (14.0, 1.0)]);
/// ```
pub fn read(text: &str) -> Reading {
    let mut reading = Reading::default();
    for (index, line) in text.lines().enumerate() {
        reading.lines += 1;
        if line.len() > MAX_DOCUMENT_BYTES {
            if line.contains("\"_aws\"") {
                reading.skipped.push(Skipped {
                    line: index + 1,
                    reason: format!("{} bytes: longer than a log event can be (256 KB)", line.len()),
                });
            }
            continue;
        }
        let Some(document) = document(line) else {
            continue;
        };
        match observations(&document) {
            Ok(found) => {
                reading.documents += 1;
                reading.observations.extend(found);
            }
            Err(reason) => reading.skipped.push(Skipped {
                line: index + 1,
                reason,
            }),
        }
    }
    reading
}

/// The EMF document a line holds, if it holds one.
fn document(line: &str) -> Option<Map<String, Value>> {
    let start = line.find('{')?;
    let Ok(Value::Object(object)) = serde_json::from_str::<Value>(line[start..].trim_end()) else {
        return None;
    };
    if object.contains_key("_aws") {
        return Some(object);
    }
    // An exported log event: the document is its message.
    object.get("message").and_then(Value::as_str).and_then(document)
}

/// The observations of one document, or why CloudWatch would reject it.
fn observations(document: &Map<String, Value>) -> Result<Vec<Observation>, String> {
    let aws = &document["_aws"];
    let timestamp_ms = aws["Timestamp"]
        .as_i64()
        .ok_or("`_aws.Timestamp` is not a number of milliseconds")?;
    if !(0..super::TIMESTAMP_LIMIT_MS).contains(&timestamp_ms) {
        return Err(format!(
            "`_aws.Timestamp` {timestamp_ms} is not milliseconds since the epoch (1970 to 9999)"
        ));
    }
    let directives = aws["CloudWatchMetrics"]
        .as_array()
        .ok_or("`_aws.CloudWatchMetrics` is not a list")?;
    let mut found = Vec::new();
    for directive in directives {
        let namespace = directive["Namespace"]
            .as_str()
            .ok_or("a directive has no `Namespace`")?;
        let sets = dimension_sets(directive, document)?;
        let metrics = directive["Metrics"]
            .as_array()
            .ok_or("a directive has no `Metrics` list")?;
        if metrics.len() > MAX_METRICS {
            return Err(format!(
                "a directive declares {} metrics, more than {MAX_METRICS}",
                metrics.len()
            ));
        }
        if found.len() + sets.len() * metrics.len() > MAX_OBSERVATIONS {
            return Err(format!(
                "the document yields more than {MAX_OBSERVATIONS} metrics (dimension sets × metrics)"
            ));
        }
        for metric in metrics {
            let name = metric["Name"].as_str().ok_or("a metric has no `Name`")?;
            let values = values(document.get(name)).map_err(|why| format!("metric {name}: {why}"))?;
            let high_resolution = metric["StorageResolution"].as_u64() == Some(1);
            let unit = metric["Unit"].as_str().map(str::to_owned);
            for dimensions in &sets {
                found.push(Observation {
                    namespace: namespace.to_owned(),
                    name: name.to_owned(),
                    dimensions: dimensions.clone(),
                    timestamp_ms,
                    values: values.clone(),
                    unit: unit.clone(),
                    high_resolution,
                });
            }
        }
    }
    Ok(found)
}

/// A directive's dimension sets, each with its values from the document's root, sorted.
fn dimension_sets(
    directive: &Value,
    document: &Map<String, Value>,
) -> Result<Vec<Vec<(String, String)>>, String> {
    let Some(sets) = directive.get("Dimensions") else {
        return Ok(vec![Vec::new()]);
    };
    let sets = sets.as_array().ok_or("`Dimensions` is not a list of lists")?;
    sets.iter()
        .map(|set| {
            let names = set.as_array().ok_or("`Dimensions` is not a list of lists")?;
            if names.len() > MAX_DIMENSIONS {
                return Err(format!(
                    "a dimension set of {} dimensions, more than {MAX_DIMENSIONS}",
                    names.len()
                ));
            }
            let mut pairs = names
                .iter()
                .map(|name| {
                    let name = name.as_str().ok_or("a dimension name is not a string")?;
                    let value = document
                        .get(name)
                        .and_then(Value::as_str)
                        .ok_or_else(|| format!("dimension {name} has no string value at the root"))?;
                    Ok((name.to_owned(), value.to_owned()))
                })
                .collect::<Result<Vec<_>, String>>()?;
            pairs.sort();
            Ok(pairs)
        })
        .collect()
}

/// A metric's values as `(value, count)` pairs.
fn values(member: Option<&Value>) -> Result<Vec<(f64, f64)>, String> {
    let number = |value: &Value| value.as_f64().ok_or_else(|| format!("{value} is not a number"));
    let too_many = |list: &Value| list.as_array().is_some_and(|items| items.len() > MAX_VALUES);
    if member.is_some_and(|m| too_many(m) || too_many(&m["Values"])) {
        return Err(format!("more than {MAX_VALUES} values"));
    }
    match member {
        None => Err("no root member holds its value".into()),
        Some(Value::Array(items)) => items.iter().map(|v| Ok((number(v)?, 1.0))).collect(),
        Some(Value::Object(set)) => {
            let list = |key: &str| {
                set.get(key)
                    .and_then(Value::as_array)
                    .ok_or_else(|| format!("`{key}` is not a list"))?
                    .iter()
                    .map(number)
                    .collect::<Result<Vec<f64>, String>>()
            };
            let (values, counts) = (list("Values")?, list("Counts")?);
            if values.len() != counts.len() {
                return Err(format!("{} Values and {} Counts", values.len(), counts.len()));
            }
            Ok(values.into_iter().zip(counts).collect())
        }
        Some(value) => Ok(vec![(number(value)?, 1.0)]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CANARY: &str = r#"{"_aws":{"Timestamp":1764590400123,"CloudWatchMetrics":[{"Namespace":"Keel","Dimensions":[["service"],["service","function_version"]],"Metrics":[{"Name":"HttpServerError","Unit":"Count","StorageResolution":1}]}]},"service":"booking-api","function_version":"7","HttpServerError":1}"#;

    #[test]
    fn each_dimension_set_is_a_metric_of_its_own() {
        let reading = read(CANARY);
        assert_eq!((reading.lines, reading.documents), (1, 1));
        let sets: Vec<_> = reading
            .observations
            .iter()
            .map(|o| o.dimensions.clone())
            .collect();
        assert_eq!(
            sets,
            vec![
                vec![("service".into(), "booking-api".into())],
                vec![
                    ("function_version".into(), "7".into()),
                    ("service".into(), "booking-api".into())
                ],
            ]
        );
        let first = &reading.observations[0];
        assert_eq!(
            (first.timestamp_ms, first.high_resolution, first.unit.as_deref()),
            (1_764_590_400_123, true, Some("Count"))
        );
        assert_eq!(first.values, vec![(1.0, 1.0)]);
    }

    #[test]
    fn values_and_counts_and_arrays() {
        let text = r#"{"_aws":{"Timestamp":1,"CloudWatchMetrics":[{"Namespace":"N","Dimensions":[[]],"Metrics":[{"Name":"A"},{"Name":"B"}]}]},"A":[1,2.5],"B":{"Values":[10,20],"Counts":[3,1]}}"#;
        let reading = read(text);
        assert_eq!(reading.observations[0].values, vec![(1.0, 1.0), (2.5, 1.0)]);
        assert_eq!(reading.observations[1].values, vec![(10.0, 3.0), (20.0, 1.0)]);
        assert!(reading
            .observations
            .iter()
            .all(|o| o.dimensions.is_empty() && !o.high_resolution));
    }

    #[test]
    fn other_lines_are_ignored_and_prefixes_and_log_events_are_read() {
        let event = serde_json::json!({"timestamp": 1, "message": CANARY}).to_string();
        let text = format!(
            "plain text\n{{\"level\":\"INFO\",\"message\":\"hello\"}}\n2026-12-01T00:00:00Z\tabc-123\t{CANARY}\n{event}\n"
        );
        let reading = read(&text);
        assert_eq!(
            (reading.lines, reading.documents, reading.observations.len()),
            (4, 2, 4)
        );
        assert!(reading.skipped.is_empty(), "{:?}", reading.skipped);
    }

    #[test]
    fn documents_cloudwatch_would_reject_are_skipped_with_the_reason() {
        let cases = [
            (
                r#"{"_aws":{"CloudWatchMetrics":[]}}"#,
                "`_aws.Timestamp` is not a number",
            ),
            (
                r#"{"_aws":{"Timestamp":-1,"CloudWatchMetrics":[]}}"#,
                "`_aws.Timestamp` -1 is not milliseconds since the epoch",
            ),
            (
                r#"{"_aws":{"Timestamp":253402300800000,"CloudWatchMetrics":[]}}"#,
                "is not milliseconds since the epoch (1970 to 9999)",
            ),
            (
                r#"{"_aws":{"Timestamp":1,"CloudWatchMetrics":[{"Namespace":"N","Dimensions":[["service"]],"Metrics":[{"Name":"A"}]}]},"A":1}"#,
                "dimension service has no string value",
            ),
            (
                r#"{"_aws":{"Timestamp":1,"CloudWatchMetrics":[{"Namespace":"N","Metrics":[{"Name":"A"}]}]}}"#,
                "metric A: no root member holds its value",
            ),
            (
                r#"{"_aws":{"Timestamp":1,"CloudWatchMetrics":[{"Namespace":"N","Metrics":[{"Name":"A"}]}]},"A":"x"}"#,
                "metric A: \"x\" is not a number",
            ),
            (
                r#"{"_aws":{"Timestamp":1,"CloudWatchMetrics":[{"Namespace":"N","Metrics":[{"Name":"A"}]}]},"A":{"Values":[1],"Counts":[]}}"#,
                "metric A: 1 Values and 0 Counts",
            ),
        ];
        let many_values = format!(
            r#"{{"_aws":{{"Timestamp":1,"CloudWatchMetrics":[{{"Namespace":"N","Metrics":[{{"Name":"A"}}]}}]}},"A":[{}]}}"#,
            vec!["1"; 101].join(",")
        );
        let many_metrics = format!(
            r#"{{"_aws":{{"Timestamp":1,"CloudWatchMetrics":[{{"Namespace":"N","Metrics":[{}]}}]}}}}"#,
            vec![r#"{"Name":"A"}"#; 101].join(",")
        );
        // A short line that would expand to 100 × 100 × 1000 values.
        let expanding = format!(
            r#"{{"_aws":{{"Timestamp":1,"CloudWatchMetrics":[{{"Namespace":"N","Dimensions":[{}],"Metrics":[{}]}}]}},"A":[{}]}}"#,
            vec!["[]"; 1000].join(","),
            vec![r#"{"Name":"A"}"#; 100].join(","),
            vec!["1"; 100].join(",")
        );
        let wide_set = format!(
            r#"{{"_aws":{{"Timestamp":1,"CloudWatchMetrics":[{{"Namespace":"N","Dimensions":[[{}]],"Metrics":[{{"Name":"A"}}]}}]}},"A":1}}"#,
            vec![r#""d""#; 31].join(",")
        );
        let long = format!(
            r#"{{"_aws":{{"Timestamp":1,"CloudWatchMetrics":[]}},"pad":"{}"}}"#,
            "x".repeat(MAX_DOCUMENT_BYTES)
        );
        let cases = cases.into_iter().chain([
            (many_values.as_str(), "metric A: more than 100 values"),
            (many_metrics.as_str(), "declares 101 metrics, more than 100"),
            (expanding.as_str(), "yields more than 1000 metrics"),
            (
                wide_set.as_str(),
                "a dimension set of 31 dimensions, more than 30",
            ),
            (long.as_str(), "longer than a log event can be (256 KB)"),
        ]);
        for (line, reason) in cases {
            let reading = read(line);
            assert_eq!(reading.documents, 0, "{line}");
            assert_eq!(reading.skipped.len(), 1, "{line}");
            assert!(
                reading.skipped[0].reason.contains(reason),
                "{line}: {:?}",
                reading.skipped
            );
        }
    }
}
