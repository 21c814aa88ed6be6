//! [`DocumentWriter`]: one invocation's collected values written as EMF documents, with the
//! unit and resolution of each metric.

use std::collections::HashMap;
use std::sync::{LazyLock, PoisonError, RwLock};

use metrics::{Key, KeyName};

use super::catalog::{self, Kind, MetricDef, Resolution, Unit};
use super::collector::Entry;
use super::emf::{EmfWriter, Metric, Rejection};

/// Units given through `metrics::describe_*!`, for metrics that are not in the catalogue.
static DESCRIBED_UNITS: LazyLock<RwLock<HashMap<String, metrics::Unit>>> = LazyLock::new(Default::default);

pub(crate) fn described_unit(name: &str) -> Option<metrics::Unit> {
    let units = DESCRIBED_UNITS.read().unwrap_or_else(PoisonError::into_inner);
    units.get(name).copied()
}

pub(crate) fn describe(key: KeyName, unit: Option<metrics::Unit>) {
    if let Some(unit) = unit {
        let mut units = DESCRIBED_UNITS.write().unwrap_or_else(PoisonError::into_inner);
        units.insert(key.as_str().to_owned(), unit);
    }
}

/// A dimension set as (name, value) pairs, sorted by name, without `service`.
type Dimensions<'a> = Vec<(&'a str, &'a str)>;

/// Writes an invocation's collected values as EMF documents.
#[derive(Debug)]
pub(crate) struct DocumentWriter {
    pub writer: EmfWriter,
    /// The function's own catalogue entries, besides Keel's.
    pub catalogue: Vec<&'static MetricDef>,
    /// Metrics stored at one-second resolution besides those the catalogues mark.
    pub high_resolution: Vec<String>,
}

impl DocumentWriter {
    /// The catalogue entry named `name`: Keel's, else the function's.
    fn entry(&self, name: &str) -> Option<&'static MetricDef> {
        catalog::keel::find(name).or_else(|| catalog::find(&self.catalogue, name))
    }

    /// The resolution of `name`, whose catalogue entry is `entry`.
    fn resolution(&self, name: &str, entry: Option<&MetricDef>) -> Resolution {
        match entry {
            Some(def) => def.resolution,
            None if self.high_resolution.iter().any(|n| n == name) => Resolution::High,
            None => Resolution::Standard,
        }
    }
}

/// The unit of `name`, whose catalogue entry is `entry`: the catalogue's, else the one
/// described through the facade, else `Count` for counters and `None` for the rest.
fn unit(name: &str, kind: Kind, entry: Option<&MetricDef>) -> Result<Unit, String> {
    match entry {
        Some(def) => Ok(def.unit),
        None => unit_without_entry(name, kind),
    }
}

/// The unit of a metric without a catalogue entry.
fn unit_without_entry(name: &str, kind: Kind) -> Result<Unit, String> {
    match described_unit(name) {
        Some(unit) => Unit::from_facade(unit)
            .ok_or_else(|| format!("unit {} has no CloudWatch equivalent", unit.as_canonical_label())),
        None if kind == Kind::Counter => Ok(Unit::Count),
        None => Ok(Unit::None),
    }
}

impl DocumentWriter {
    /// Writes `entries` as EMF (one document per distinct set of labels, and apart the
    /// canary-critical metrics, whose documents carry the version in a second dimension set)
    /// and logs, as a WARN line each, whatever could not be written validly.
    pub(crate) fn write(&self, mut entries: Vec<Entry>, request_id: Option<&str>) {
        if entries.is_empty() {
            return;
        }
        let timestamp_ms = crate::clock::now_ms();
        // One group per (labels, canary); an invocation has few, so a list beats a map.
        let mut groups: Vec<(Dimensions<'_>, bool, Vec<Metric<'_>>)> = Vec::new();
        let mut rejections = Vec::new();
        for Entry { key, kind, values } in &mut entries {
            let key: &Key = key;
            let name = key.name();
            let entry = self.entry(name);
            let unit = match unit(name, *kind, entry) {
                Ok(unit) => unit,
                Err(reason) => {
                    rejections.push(Rejection {
                        metric: name.to_owned(),
                        reason,
                    });
                    continue;
                }
            };
            let mut labels: Dimensions<'_> = key.labels().map(|l| (l.key(), l.value())).collect();
            labels.sort_unstable();
            let canary = entry.is_some_and(|def| def.canary);
            let metric = Metric {
                name,
                unit,
                resolution: self.resolution(name, entry),
                values: std::mem::take(values),
            };
            let group = groups
                .iter_mut()
                .find(|(dimensions, in_canary, _)| *in_canary == canary && *dimensions == labels);
            match group {
                Some((_, _, metrics)) => metrics.push(metric),
                None => groups.push((labels, canary, vec![metric])),
            }
        }
        for (dimensions, canary, metrics) in groups {
            rejections.extend(
                self.writer
                    .write(&dimensions, canary, metrics, request_id, timestamp_ms),
            );
        }
        for rejection in rejections {
            tracing::warn!(
                metric = %rejection.metric,
                reason = %rejection.reason,
                "metric not written: it cannot be valid CloudWatch EMF"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::Output;
    use catalog::Emitter;
    use serde_json::{json, Value};

    /// A function's own canary-critical entry, with a label.
    static CHECKOUT_FAILED: MetricDef = MetricDef {
        name: "CheckoutFailed",
        unit: Unit::Count,
        kind: Kind::Counter,
        dimensions: &["service", "route"],
        resolution: Resolution::High,
        description: "Checkouts that failed",
        emitter: Emitter::Function,
        canary: true,
    };

    fn entry(name: &'static str, labels: &[(&'static str, &'static str)], value: f64) -> Entry {
        let labels: Vec<metrics::Label> = labels.iter().map(|(k, v)| metrics::Label::new(*k, *v)).collect();
        Entry {
            key: Key::from_parts(name, labels),
            kind: Kind::Counter,
            values: vec![value],
        }
    }

    #[test]
    fn canary_metrics_are_written_apart_with_the_version_and_the_others_as_before() {
        let (output, lines) = Output::memory();
        let writer = DocumentWriter {
            writer: EmfWriter {
                namespace: "Keel".into(),
                service: "svc".into(),
                version: Some("7".into()),
                output,
            },
            catalogue: vec![&CHECKOUT_FAILED],
            high_resolution: Vec::new(),
        };
        writer.write(
            vec![
                entry("IdempotencyReplay", &[], 1.0),
                entry("HttpServerError", &[], 1.0),
                entry("Quotes", &[("route", "/b")], 3.0),
                entry("CheckoutFailed", &[("route", "/b")], 2.0),
                entry("RuntimeCrash", &[], 1.0),
            ],
            Some("r-1"),
        );
        let documents: Vec<Value> = lines
            .lines()
            .iter()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        let shape: Vec<(Value, Value, Value)> = documents
            .iter()
            .map(|d| {
                let directive = &d["_aws"]["CloudWatchMetrics"][0];
                let names: Vec<&Value> = directive["Metrics"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|m| &m["Name"])
                    .collect();
                (
                    directive["Dimensions"].clone(),
                    json!(names),
                    d["function_version"].clone(),
                )
            })
            .collect();
        assert_eq!(
            shape,
            [
                (json!([["service"]]), json!(["IdempotencyReplay"]), Value::Null),
                (
                    json!([["service"], ["service", "function_version"]]),
                    json!(["HttpServerError", "RuntimeCrash"]),
                    json!("7")
                ),
                (json!([["service", "route"]]), json!(["Quotes"]), Value::Null),
                (
                    json!([["service", "route"], ["service", "route", "function_version"]]),
                    json!(["CheckoutFailed"]),
                    json!("7")
                ),
            ]
        );
        assert_eq!(
            documents[3]["_aws"]["CloudWatchMetrics"][0]["Metrics"][0],
            json!({"Name": "CheckoutFailed", "Unit": "Count", "StorageResolution": 1})
        );
        assert_eq!(
            (&documents[3]["route"], &documents[3]["CheckoutFailed"]),
            (&json!("/b"), &json!(2))
        );
    }
}
