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

    fn resolution(&self, name: &str) -> Resolution {
        match self.entry(name) {
            Some(def) => def.resolution,
            None if self.high_resolution.iter().any(|n| n == name) => Resolution::High,
            None => Resolution::Standard,
        }
    }

    /// The unit of `name`: the catalogue's, else the one described through the facade, else
    /// `Count` for counters and `None` for the rest.
    fn unit(&self, name: &str, kind: Kind) -> Result<Unit, String> {
        if let Some(def) = self.entry(name) {
            return Ok(def.unit);
        }
        unit_without_entry(name, kind)
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
    /// Writes `entries` as EMF (one dimension set per distinct set of labels) and logs, as a WARN
    /// line each, whatever could not be written validly.
    pub(crate) fn write(&self, mut entries: Vec<Entry>, request_id: Option<&str>) {
        if entries.is_empty() {
            return;
        }
        let timestamp_ms = crate::clock::now_ms();
        // One group per dimension set; an invocation has few, so a list beats a map.
        let mut groups: Vec<(Dimensions<'_>, Vec<Metric<'_>>)> = Vec::new();
        let mut rejections = Vec::new();
        for Entry { key, kind, values } in &mut entries {
            let key: &Key = key;
            let name = key.name();
            let unit = match self.unit(name, *kind) {
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
            let metric = Metric {
                name,
                unit,
                resolution: self.resolution(name),
                values: std::mem::take(values),
            };
            match groups.iter_mut().find(|(dimensions, _)| *dimensions == labels) {
                Some((_, metrics)) => metrics.push(metric),
                None => groups.push((labels, vec![metric])),
            }
        }
        for (dimensions, metrics) in groups {
            rejections.extend(self.writer.write(&dimensions, metrics, request_id, timestamp_ms));
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
