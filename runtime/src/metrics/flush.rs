//! Turning one invocation's collected values into EMF documents.

use std::time::{SystemTime, UNIX_EPOCH};

use metrics::Key;

use super::catalog::{self, Kind};
use super::emf::{EmfWriter, Metric, Rejection};
use super::recorder::{described_unit, Entry};
use super::unit::{Resolution, Unit};

/// A dimension set as (name, value) pairs, sorted by name, without `service`.
type Dimensions<'a> = Vec<(&'a str, &'a str)>;

/// Everything needed to write an invocation's metrics.
#[derive(Debug)]
pub(crate) struct Flush {
    pub writer: EmfWriter,
    /// Metrics stored at one-second resolution besides those the catalogue marks.
    pub high_resolution: Vec<String>,
}

impl Flush {
    fn resolution(&self, name: &str) -> Resolution {
        match catalog::find(name) {
            Some(def) => def.resolution,
            None if self.high_resolution.iter().any(|n| n == name) => Resolution::High,
            None => Resolution::Standard,
        }
    }
}

/// The unit of `name`: the catalogue's, else the one described through the facade, else
/// `Count` for counters and `None` for the rest.
fn unit(name: &str, kind: Kind) -> Result<Unit, String> {
    if let Some(def) = catalog::find(name) {
        return Ok(def.unit);
    }
    match described_unit(name) {
        Some(unit) => Unit::from_facade(unit)
            .ok_or_else(|| format!("unit {} has no CloudWatch equivalent", unit.as_canonical_label())),
        None if kind == Kind::Counter => Ok(Unit::Count),
        None => Ok(Unit::None),
    }
}

/// Writes `entries` as EMF (one dimension set per distinct set of labels) and logs, as a WARN
/// line each, whatever could not be written validly.
pub(crate) fn flush(flush: &Flush, mut entries: Vec<Entry>, request_id: Option<&str>) {
    if entries.is_empty() {
        return;
    }
    let timestamp_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default();
    // One group per dimension set; an invocation has few, so a list beats a map.
    let mut groups: Vec<(Dimensions<'_>, Vec<Metric<'_>>)> = Vec::new();
    let mut rejections = Vec::new();
    for Entry { key, kind, values } in &mut entries {
        let key: &Key = key;
        let name = key.name();
        let unit = match unit(name, *kind) {
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
            resolution: flush.resolution(name),
            values: std::mem::take(values),
        };
        match groups.iter_mut().find(|(dimensions, _)| *dimensions == labels) {
            Some((_, metrics)) => metrics.push(metric),
            None => groups.push((labels, vec![metric])),
        }
    }
    for (dimensions, metrics) in groups {
        rejections.extend(flush.writer.write(&dimensions, metrics, request_id, timestamp_ms));
    }
    for rejection in rejections {
        tracing::warn!(
            metric = %rejection.metric,
            reason = %rejection.reason,
            "metric not written: it cannot be valid CloudWatch EMF"
        );
    }
}
