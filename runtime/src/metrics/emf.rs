//! Rendering of CloudWatch Embedded Metric Format documents that are valid by construction.
//!
//! CloudWatch drops an invalid EMF document silently, so every limit of the specification is
//! enforced here before a line is written: a document holds at most 100 metrics and 100 values
//! per metric (more are split across documents), a dimension set at most 30 dimensions, names
//! and values stay within their lengths, units are CloudWatch's, values are finite. Whatever
//! cannot be made valid is returned as a [`Rejection`] for the caller to report, never written.
//!
//! Canary-critical metrics (see [`MetricDef::canary`](keel_catalog::MetricDef::canary)) are
//! written in documents of their own with two dimension sets, `[service, labels…]` and
//! `[service, labels…, function_version]`, and the root member `function_version`: one value,
//! aggregated by CloudWatch both across versions and per version.

use std::fmt::Write as _;

use super::{Resolution, Unit};
use crate::json;
use crate::output::Output;
use keel_catalog::VERSION_DIMENSION;

/// Metric definitions per document.
pub(crate) const MAX_METRICS_PER_DOCUMENT: usize = 100;
/// Values per metric per document.
pub(crate) const MAX_VALUES_PER_METRIC: usize = 100;
/// Dimensions per dimension set.
pub(crate) const MAX_DIMENSIONS: usize = 30;
/// Characters in a namespace, metric name or dimension name.
pub(crate) const MAX_NAME_LEN: usize = 255;
/// Characters in a dimension value.
pub(crate) const MAX_DIMENSION_VALUE_LEN: usize = 1024;
/// Bytes in one document: CloudWatch Logs' historical event limit, the safe bound everywhere.
pub(crate) const MAX_DOCUMENT_BYTES: usize = 256 * 1024;
/// Largest magnitude CloudWatch accepts for a value (2^360).
pub(crate) const MAX_MAGNITUDE: f64 = 2.348_542_582_773_833e108;

/// Root members Keel writes besides the labels and metrics (`service` aside): never a label's or
/// a metric's name.
pub(crate) const RESERVED_MEMBERS: [&str; 3] = ["_aws", "function_request_id", VERSION_DIMENSION];

/// One metric of an invocation, ready to be written.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Metric<'a> {
    pub name: &'a str,
    pub unit: Unit,
    pub resolution: Resolution,
    pub values: Vec<f64>,
}

/// Something that could not be written as valid EMF.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Rejection {
    /// The metric (or dimension) concerned.
    pub metric: String,
    /// Why it was not written.
    pub reason: String,
}

impl Rejection {
    fn new(metric: &str, reason: impl Into<String>) -> Self {
        Self {
            metric: metric.to_owned(),
            reason: reason.into(),
        }
    }
}

/// Why `name` cannot be a namespace, metric name or dimension name, if it cannot.
pub(crate) fn check_name(name: &str) -> Result<(), String> {
    if name.trim().is_empty() {
        return Err("the name is empty".into());
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!(
            "the name has {} characters (at most {MAX_NAME_LEN})",
            name.len()
        ));
    }
    if let Some(c) = name.chars().find(|c| !c.is_ascii() || c.is_ascii_control()) {
        return Err(format!("the name holds {c:?}: only printable ASCII is allowed"));
    }
    if name.starts_with(':') {
        return Err("the name starts with ':'".into());
    }
    Ok(())
}

/// Why `namespace` cannot be an EMF namespace, if it cannot.
pub(crate) fn check_namespace(namespace: &str) -> Result<(), String> {
    check_name(namespace)?;
    if let Some(c) = namespace
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || ".-_/#: ".contains(*c)))
    {
        return Err(format!(
            "the namespace holds {c:?}: use letters, digits and . - _ / # : space"
        ));
    }
    if namespace.starts_with("AWS/") {
        return Err("namespaces starting with AWS/ are reserved".into());
    }
    Ok(())
}

/// Why `value` cannot be a dimension value, if it cannot.
pub(crate) fn check_dimension_value(value: &str) -> Result<(), String> {
    if value.trim().is_empty() {
        return Err("the value is empty".into());
    }
    if value.chars().count() > MAX_DIMENSION_VALUE_LEN {
        return Err(format!(
            "the value is longer than {MAX_DIMENSION_VALUE_LEN} characters"
        ));
    }
    Ok(())
}

/// Checks a dimension set (without `service`, which the writer adds first, and
/// `function_version`, which it adds last for a canary metric).
pub(crate) fn check_dimensions(dimensions: &[(&str, &str)], canary: bool) -> Result<(), String> {
    let count = dimensions.len() + 1 + usize::from(canary);
    if count > MAX_DIMENSIONS {
        let with = if canary {
            "`service` and `function_version`"
        } else {
            "`service`"
        };
        return Err(format!(
            "{count} dimensions with {with} (at most {MAX_DIMENSIONS})"
        ));
    }
    for (i, (name, value)) in dimensions.iter().enumerate() {
        check_name(name).map_err(|e| format!("dimension {name:?}: {e}"))?;
        check_dimension_value(value).map_err(|e| format!("dimension {name:?}: {e}"))?;
        if *name == "service" || RESERVED_MEMBERS.contains(name) {
            return Err(format!("dimension {name:?} is reserved"));
        }
        if dimensions[..i].iter().any(|(other, _)| other == name) {
            return Err(format!("dimension {name:?} is given twice"));
        }
    }
    Ok(())
}

/// Writes EMF documents for one namespace, service and function version.
#[derive(Clone, Debug)]
pub(crate) struct EmfWriter {
    pub namespace: String,
    pub service: String,
    /// The `function_version` of canary metrics; `None` when the version cannot be a dimension
    /// value (empty), and canary metrics are then written with their one dimension set.
    pub version: Option<String>,
    pub output: Output,
}

impl EmfWriter {
    /// Writes `metrics` under one dimension set (`service` first, then `dimensions`) — and, when
    /// `canary`, a second one with `function_version` last — splitting them across as many
    /// documents as the limits need. Returns what it could not write.
    pub(crate) fn write(
        &self,
        dimensions: &[(&str, &str)],
        canary: bool,
        metrics: Vec<Metric<'_>>,
        request_id: Option<&str>,
        timestamp_ms: u64,
    ) -> Vec<Rejection> {
        let mut rejections = Vec::new();
        let version = self.version.as_deref().filter(|_| canary);
        if let Err(reason) = check_dimensions(dimensions, version.is_some()) {
            rejections.extend(metrics.iter().map(|m| Rejection::new(m.name, reason.clone())));
            return rejections;
        }
        let metrics = self.valid_metrics(dimensions, metrics, &mut rejections);
        let chunks = metrics
            .iter()
            .map(|m| m.values.len().div_ceil(MAX_VALUES_PER_METRIC))
            .max()
            .unwrap_or(0);
        let prefix = self.document_prefix(dimensions, version, request_id, timestamp_ms);
        for chunk in 0..chunks {
            let in_chunk: Vec<(&Metric<'_>, &[f64])> = metrics
                .iter()
                .filter_map(|m| m.values.chunks(MAX_VALUES_PER_METRIC).nth(chunk).map(|v| (m, v)))
                .collect();
            for batch in in_chunk.chunks(MAX_METRICS_PER_DOCUMENT) {
                self.write_batch(&prefix, batch);
            }
        }
        crate::output::recycle_line(prefix.head);
        crate::output::recycle_line(prefix.members);
        rejections
    }

    fn valid_metrics<'a>(
        &self,
        dimensions: &[(&str, &str)],
        metrics: Vec<Metric<'a>>,
        rejections: &mut Vec<Rejection>,
    ) -> Vec<Metric<'a>> {
        let mut valid: Vec<Metric<'a>> = Vec::with_capacity(metrics.len());
        for mut metric in metrics {
            if let Err(reason) = check_name(metric.name) {
                rejections.push(Rejection::new(
                    metric.name,
                    format!("invalid metric name: {reason}"),
                ));
                continue;
            }
            let collides = metric.name == "service"
                || RESERVED_MEMBERS.contains(&metric.name)
                || dimensions.iter().any(|(name, _)| *name == metric.name)
                || valid.iter().any(|m| m.name == metric.name);
            if collides {
                rejections.push(Rejection::new(
                    metric.name,
                    "the name is already used by a dimension, another metric or a reserved member",
                ));
                continue;
            }
            let before = metric.values.len();
            metric
                .values
                .retain(|v| v.is_finite() && v.abs() <= MAX_MAGNITUDE);
            if metric.values.len() < before {
                rejections.push(Rejection::new(
                    metric.name,
                    format!(
                        "{} value(s) dropped: not finite or beyond ±2^360",
                        before - metric.values.len()
                    ),
                ));
            }
            if !metric.values.is_empty() {
                valid.push(metric);
            }
        }
        valid
    }

    /// The directive up to its metrics, and the root members
    /// `"service":"…",<dimensions>,"function_version":"…","function_request_id":"…"` (the
    /// version with `version` only) — shared by every document.
    fn document_prefix(
        &self,
        dimensions: &[(&str, &str)],
        version: Option<&str>,
        request_id: Option<&str>,
        timestamp_ms: u64,
    ) -> Prefix {
        let mut head = crate::output::spare_line();
        head.push_str("{\"_aws\":{\"Timestamp\":");
        let _ = write!(head, "{timestamp_ms}");
        head.push_str(",\"CloudWatchMetrics\":[{\"Namespace\":");
        json::push_str(&mut head, &self.namespace);
        head.push_str(",\"Dimensions\":[");
        push_dimension_set(&mut head, dimensions, None);
        if version.is_some() {
            head.push(',');
            push_dimension_set(&mut head, dimensions, Some(VERSION_DIMENSION));
        }
        head.push_str("],\"Metrics\":[");

        let mut members = crate::output::spare_line();
        members.push('{');
        json::push_key(&mut members, "service");
        json::push_str(&mut members, &self.service);
        // A label named like a sensitive field (`email`, …) is a dimension, so its value would be
        // in every document: masked, as in the logs.
        let redactor = crate::redact::Redactor::process();
        for (name, value) in dimensions {
            json::push_key(&mut members, name);
            match redactor.is_sensitive(name) {
                true => json::push_str(&mut members, crate::redact::MASK),
                false => json::push_str(&mut members, value),
            }
        }
        if let Some(version) = version {
            json::push_key(&mut members, VERSION_DIMENSION);
            json::push_str(&mut members, version);
        }
        if let Some(id) = request_id {
            json::push_key(&mut members, "function_request_id");
            json::push_str(&mut members, id);
        }
        members.remove(0);
        Prefix { head, members }
    }

    fn write_batch(&self, prefix: &Prefix, batch: &[(&Metric<'_>, &[f64])]) {
        let document = render(prefix, batch);
        if document.len() <= MAX_DOCUMENT_BYTES || batch.len() == 1 {
            self.output.write_owned_line(document);
        } else {
            crate::output::recycle_line(document);
            let (first, second) = batch.split_at(batch.len() / 2);
            self.write_batch(prefix, first);
            self.write_batch(prefix, second);
        }
    }
}

/// `["service",<dimensions>,<last>]`.
fn push_dimension_set(out: &mut String, dimensions: &[(&str, &str)], last: Option<&str>) {
    out.push_str("[\"service\"");
    for name in dimensions.iter().map(|(name, _)| *name).chain(last) {
        out.push(',');
        json::push_str(out, name);
    }
    out.push(']');
}

struct Prefix {
    head: String,
    members: String,
}

fn render(prefix: &Prefix, batch: &[(&Metric<'_>, &[f64])]) -> String {
    let mut doc = crate::output::spare_line();
    doc.reserve(prefix.head.len() + prefix.members.len() + batch.len() * 64);
    doc.push_str(&prefix.head);
    for (i, (metric, _)) in batch.iter().enumerate() {
        if i > 0 {
            doc.push(',');
        }
        doc.push_str("{\"Name\":");
        json::push_str(&mut doc, metric.name);
        doc.push_str(",\"Unit\":\"");
        doc.push_str(metric.unit.as_str());
        doc.push('"');
        if metric.resolution == Resolution::High {
            doc.push_str(",\"StorageResolution\":1");
        }
        doc.push('}');
    }
    doc.push_str("]}]},");
    doc.push_str(&prefix.members);
    for (metric, values) in batch {
        json::push_key(&mut doc, metric.name);
        if let [single] = values {
            json::push_f64(&mut doc, *single);
        } else {
            doc.push('[');
            for (i, value) in values.iter().enumerate() {
                if i > 0 {
                    doc.push(',');
                }
                json::push_f64(&mut doc, *value);
            }
            doc.push(']');
        }
    }
    doc.push('}');
    doc
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn writer() -> (EmfWriter, crate::output::CapturedLines) {
        let (output, lines) = Output::memory();
        let writer = EmfWriter {
            namespace: "Keel".into(),
            service: "svc".into(),
            version: Some("42".into()),
            output,
        };
        (writer, lines)
    }

    fn metric(name: &str, values: Vec<f64>) -> Metric<'_> {
        Metric {
            name,
            unit: Unit::Count,
            resolution: Resolution::Standard,
            values,
        }
    }

    #[test]
    fn splits_values_and_metrics() {
        let (writer, lines) = writer();
        let names: Vec<String> = (0..150).map(|i| format!("m{i}")).collect();
        let mut metrics: Vec<Metric<'_>> = names.iter().map(|name| metric(name, vec![1.0])).collect();
        metrics.push(metric("big", (0..250).map(f64::from).collect()));
        let rejections = writer.write(&[("route", "/b")], false, metrics, Some("req-1"), 1);
        assert!(rejections.is_empty());
        let docs: Vec<Value> = lines
            .lines()
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        // chunk 0: 151 metrics -> 2 documents; chunks 1 and 2 hold only `big`.
        assert_eq!(docs.len(), 4);
        let total: usize = docs
            .iter()
            .map(|d| {
                d["_aws"]["CloudWatchMetrics"][0]["Metrics"]
                    .as_array()
                    .unwrap()
                    .len()
            })
            .sum();
        assert_eq!(total, 153);
        let big_values: usize = docs
            .iter()
            .filter_map(|d| d.get("big"))
            .map(|v| v.as_array().map_or(1, Vec::len))
            .sum();
        assert_eq!(big_values, 250);
        assert!(docs
            .iter()
            .all(|d| d["function_request_id"] == "req-1" && d["route"] == "/b"));
    }

    #[test]
    fn rejects_what_cannot_be_valid() {
        let (writer, lines) = writer();
        let metrics = vec![
            metric("", vec![1.0]),
            metric("route", vec![1.0]),
            metric("nan", vec![f64::NAN, 2.0]),
            metric("inf", vec![f64::INFINITY]),
            metric("ok", vec![3.0]),
        ];
        let rejections = writer.write(&[("route", "/b")], false, metrics, None, 1);
        let rejected: Vec<&str> = rejections.iter().map(|r| r.metric.as_str()).collect();
        assert_eq!(rejected, vec!["", "route", "nan", "inf"]);
        let doc: Value = serde_json::from_str(&lines.lines()[0]).unwrap();
        assert_eq!(doc["nan"], 2);
        assert_eq!(doc["ok"], 3);
        assert!(doc.get("inf").is_none());
    }

    #[test]
    fn too_many_dimensions_write_nothing() {
        let (writer, lines) = writer();
        let names: Vec<String> = (0..30).map(|i| format!("d{i}")).collect();
        let dims: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "v")).collect();
        let rejections = writer.write(&dims, false, vec![metric("m", vec![1.0])], None, 1);
        assert_eq!(rejections.len(), 1);
        assert!(lines.lines().is_empty());
    }

    #[test]
    fn a_non_canary_document_has_one_dimension_set_and_no_version() {
        let (writer, lines) = writer();
        let rejections = writer.write(
            &[("route", "/b")],
            false,
            vec![metric("Quotes", vec![2.0])],
            Some("r-1"),
            1,
        );
        assert!(rejections.is_empty());
        assert_eq!(
            lines.lines(),
            [concat!(
                r#"{"_aws":{"Timestamp":1,"CloudWatchMetrics":[{"Namespace":"Keel","#,
                r#""Dimensions":[["service","route"]],"Metrics":[{"Name":"Quotes","Unit":"Count"}]}]},"#,
                r#""service":"svc","route":"/b","function_request_id":"r-1","Quotes":2}"#
            )]
        );
    }

    #[test]
    fn a_canary_document_has_a_second_dimension_set_with_the_version() {
        let (writer, lines) = writer();
        let rejections = writer.write(&[], true, vec![metric("RuntimeCrash", vec![1.0])], Some("r-1"), 1);
        assert!(rejections.is_empty());
        assert_eq!(
            lines.lines(),
            [concat!(
                r#"{"_aws":{"Timestamp":1,"CloudWatchMetrics":[{"Namespace":"Keel","#,
                r#""Dimensions":[["service"],["service","function_version"]],"#,
                r#""Metrics":[{"Name":"RuntimeCrash","Unit":"Count"}]}]},"#,
                r#""service":"svc","function_version":"42","function_request_id":"r-1","RuntimeCrash":1}"#
            )]
        );

        lines.clear();
        let labelled = vec![metric("Failures", vec![1.0]), metric("Retries", vec![2.0])];
        assert!(writer
            .write(&[("route", "/b"), ("sink", "sns")], true, labelled, None, 1)
            .is_empty());
        assert_eq!(
            lines.lines(),
            [concat!(
                r#"{"_aws":{"Timestamp":1,"CloudWatchMetrics":[{"Namespace":"Keel","#,
                r#""Dimensions":[["service","route","sink"],["service","route","sink","function_version"]],"#,
                r#""Metrics":[{"Name":"Failures","Unit":"Count"},{"Name":"Retries","Unit":"Count"}]}]},"#,
                r#""service":"svc","route":"/b","sink":"sns","function_version":"42","Failures":1,"Retries":2}"#
            )]
        );
    }

    #[test]
    fn without_a_version_a_canary_metric_keeps_its_one_dimension_set() {
        let (mut writer, lines) = writer();
        writer.version = None;
        assert!(writer
            .write(&[], true, vec![metric("RuntimeCrash", vec![1.0])], None, 1)
            .is_empty());
        let doc: Value = serde_json::from_str(&lines.lines()[0]).unwrap();
        assert_eq!(
            doc["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            serde_json::json!([["service"]])
        );
        assert!(doc.get("function_version").is_none());
    }

    #[test]
    fn the_version_is_never_a_label_nor_a_metric_and_counts_towards_the_limit() {
        let (writer, lines) = writer();
        let rejections = writer.write(
            &[("function_version", "9")],
            false,
            vec![metric("m", vec![1.0])],
            None,
            1,
        );
        assert_eq!(rejections.len(), 1);
        assert!(rejections[0].reason.contains("reserved"), "{rejections:?}");
        let rejections = writer.write(&[], true, vec![metric("function_version", vec![1.0])], None, 1);
        assert_eq!(rejections.len(), 1);
        assert!(lines.lines().is_empty());

        // 28 labels: 29 dimensions with `service`, 30 with the version.
        let names: Vec<String> = (0..28).map(|i| format!("d{i}")).collect();
        let dims: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "v")).collect();
        assert!(writer
            .write(&dims, true, vec![metric("m", vec![1.0])], None, 1)
            .is_empty());
        let names: Vec<String> = (0..29).map(|i| format!("d{i}")).collect();
        let dims: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "v")).collect();
        assert!(writer
            .write(&dims, false, vec![metric("m", vec![1.0])], None, 1)
            .is_empty());
        assert_eq!(
            writer
                .write(&dims, true, vec![metric("m", vec![1.0])], None, 1)
                .len(),
            1
        );
        assert_eq!(lines.lines().len(), 2);
    }

    #[test]
    fn namespaces_are_checked() {
        assert!(check_namespace("Keel/Bookings").is_ok());
        assert!(check_namespace("AWS/Lambda").is_err());
        assert!(check_namespace("bad{ns}").is_err());
        assert!(check_namespace(" ").is_err());
    }
}
