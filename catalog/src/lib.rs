//! The metric catalogue: every metric a Keel function emits, described once — its name, unit,
//! kind, dimensions, resolution and meaning — so that the code emits a metric only through its
//! entry, and dashboards and alarms can be generated from the same entries and cannot drift.
//!
//! [`keel`] holds the metrics Keel itself emits; a function defines its own entries the same
//! way and hands them to `keel_runtime` (`MetricsConfig::catalogue`). The crate depends on the
//! `metrics` facade only, so a generator reads it without the runtime or the AWS SDK.
//!
//! ```
//! use keel_catalog::{Emitter, Kind, MetricDef, Resolution, Unit};
//!
//! /// A booking request accepted by the booking API.
//! pub static BOOKING_CREATED: MetricDef = MetricDef {
//!     name: "BookingCreated",
//!     unit: Unit::Count,
//!     kind: Kind::Counter,
//!     dimensions: &["service"],
//!     resolution: Resolution::Standard,
//!     description: "Booking requests accepted by the booking API",
//!     emitter: Emitter::Function,
//!     canary: false,
//! };
//!
//! BOOKING_CREATED.increment(1);
//! assert_eq!(keel_catalog::keel::find("ColdStart").unwrap().dimensions, &["service", "function_name"]);
//! keel_catalog::check(&[&BOOKING_CREATED]).unwrap();
//!
//! // A canary-critical metric is also published with the function's version.
//! let crash = keel_catalog::keel::find("RuntimeCrash").unwrap();
//! assert_eq!(crash.dimension_sets(), [vec!["service"], vec!["service", "function_version"]]);
//! ```
//!
//! # Canary-critical metrics
//!
//! An entry marked [`canary`](MetricDef::canary) is published with two dimension sets: its own,
//! and the same plus [`VERSION_DIMENSION`] (`function_version`, the function's
//! `AWS_LAMBDA_FUNCTION_VERSION`), so that during a canary deployment an alarm can watch the new
//! version alone while dashboards keep the totals of every version.
//! [`MetricDef::dimension_sets`] lists both, for generators that check dashboards and alarms.

pub mod keel;
mod unit;

pub use unit::{Resolution, Unit};

/// How a metric's values combine within one invocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Summed into one value per invocation.
    Counter,
    /// The last value set in the invocation.
    Gauge,
    /// Every value recorded, written as an EMF value array.
    Histogram,
}

/// Which part of Keel emits a metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Emitter {
    /// `keel-runtime`, inside the function.
    Runtime,
    /// The booking functions' own code.
    Function,
    /// The Keel extension, from the Telemetry API.
    Extension,
}

/// One catalogue entry.
#[derive(Debug, PartialEq, Eq)]
pub struct MetricDef {
    /// The CloudWatch metric name.
    pub name: &'static str,
    /// Its unit.
    pub unit: Unit,
    /// How values combine.
    pub kind: Kind,
    /// The dimension set it is published with; `service` is always first.
    pub dimensions: &'static [&'static str],
    /// Storage resolution.
    pub resolution: Resolution,
    /// What one unit of it means, for dashboards and alarm descriptions.
    pub description: &'static str,
    /// Who emits it.
    pub emitter: Emitter,
    /// Canary-critical: also published with the dimension `function_version` (the function's
    /// `AWS_LAMBDA_FUNCTION_VERSION`), so that an alarm can watch one version during a canary
    /// deployment.
    pub canary: bool,
}

/// The dimension that carries the function's version (`AWS_LAMBDA_FUNCTION_VERSION`: a
/// published version number, or `$LATEST`), added to the dimensions of a
/// [`canary`](MetricDef::canary) entry in a second dimension set. No entry lists it itself.
pub const VERSION_DIMENSION: &str = "function_version";

impl MetricDef {
    /// The labels (dimensions other than `service`) this metric needs.
    pub fn labels(&self) -> &'static [&'static str] {
        &self.dimensions[1..]
    }

    /// The dimension sets it is published with: its [`dimensions`](Self::dimensions), and, when
    /// it is [`canary`](Self::canary), the same followed by [`VERSION_DIMENSION`]. A dashboard
    /// or alarm names the metric with exactly one of them.
    pub fn dimension_sets(&self) -> Vec<Vec<&'static str>> {
        let mut sets = vec![self.dimensions.to_vec()];
        if self.canary {
            let mut versioned = self.dimensions.to_vec();
            versioned.push(VERSION_DIMENSION);
            sets.push(versioned);
        }
        sets
    }

    /// Adds `value` to a counter that has no dimension besides `service`.
    pub fn increment(&'static self, value: u64) {
        self.increment_with(value, &[]);
    }

    /// Adds `value` to a counter, with the values of its other dimensions in catalogue order.
    pub fn increment_with(&'static self, value: u64, dimension_values: &[&str]) {
        debug_assert_eq!(self.kind, Kind::Counter, "{} is not a counter", self.name);
        metrics::counter!(self.name, self.label_pairs(dimension_values)).increment(value);
    }

    /// Records one value of a histogram, with the values of its other dimensions.
    pub fn record_with(&'static self, value: f64, dimension_values: &[&str]) {
        debug_assert_eq!(self.kind, Kind::Histogram, "{} is not a histogram", self.name);
        metrics::histogram!(self.name, self.label_pairs(dimension_values)).record(value);
    }

    /// Sets a gauge, with the values of its other dimensions.
    pub fn set_with(&'static self, value: f64, dimension_values: &[&str]) {
        debug_assert_eq!(self.kind, Kind::Gauge, "{} is not a gauge", self.name);
        metrics::gauge!(self.name, self.label_pairs(dimension_values)).set(value);
    }

    fn label_pairs(&'static self, dimension_values: &[&str]) -> Vec<metrics::Label> {
        debug_assert_eq!(
            dimension_values.len(),
            self.labels().len(),
            "{} takes the dimensions {:?}",
            self.name,
            self.labels()
        );
        self.labels()
            .iter()
            .zip(dimension_values)
            .map(|(key, value)| metrics::Label::new(*key, (*value).to_owned()))
            .collect()
    }
}

/// The entry named `name` among `entries`.
pub fn find(entries: &[&'static MetricDef], name: &str) -> Option<&'static MetricDef> {
    entries.iter().copied().find(|def| def.name == name)
}

/// Why a catalogue cannot be published as it is.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CatalogueError {
    /// An entry's first dimension is not `service`.
    #[error("{0}: the first dimension must be `service`")]
    ServiceFirst(&'static str),
    /// An entry has more dimensions than CloudWatch accepts (30, `function_version` counted for
    /// a canary entry).
    #[error("{0}: more than 30 dimensions")]
    TooManyDimensions(&'static str),
    /// An entry has no description.
    #[error("{0}: no description")]
    NoDescription(&'static str),
    /// Two entries share a name.
    #[error("{0}: named twice")]
    Duplicate(&'static str),
    /// An entry lists `function_version` ([`VERSION_DIMENSION`]) among its dimensions: the
    /// version is added, in a second dimension set, to the entries marked `canary` only.
    #[error("{0}: `function_version` is not a dimension to list; mark the entry `canary` instead")]
    VersionDimension(&'static str),
}

/// Checks that `entries` can be published: `service` first, `function_version` not listed, at
/// most 30 dimensions (with `function_version`, for a canary entry), a description each, no
/// name twice.
pub fn check(entries: &[&'static MetricDef]) -> Result<(), CatalogueError> {
    for (i, def) in entries.iter().enumerate() {
        if def.dimensions.first() != Some(&"service") {
            return Err(CatalogueError::ServiceFirst(def.name));
        }
        if def.dimensions.contains(&VERSION_DIMENSION) {
            return Err(CatalogueError::VersionDimension(def.name));
        }
        if def.dimensions.len() + usize::from(def.canary) > 30 {
            return Err(CatalogueError::TooManyDimensions(def.name));
        }
        if def.description.is_empty() {
            return Err(CatalogueError::NoDescription(def.name));
        }
        if entries[i + 1..].iter().any(|other| other.name == def.name) {
            return Err(CatalogueError::Duplicate(def.name));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn entry(dimensions: &'static [&'static str], canary: bool) -> MetricDef {
        MetricDef {
            name: "Probe",
            unit: Unit::Count,
            kind: Kind::Counter,
            dimensions,
            resolution: Resolution::Standard,
            description: "A probe",
            emitter: Emitter::Function,
            canary,
        }
    }

    static PLAIN: MetricDef = entry(&["service", "route"], false);
    static CANARY: MetricDef = entry(&["service", "route"], true);
    static LISTS_THE_VERSION: MetricDef = entry(&["service", "function_version"], true);
    static LISTS_THE_VERSION_NOT_CANARY: MetricDef = entry(&["service", "function_version"], false);

    #[test]
    fn a_canary_entry_has_a_second_dimension_set_with_the_version() {
        assert_eq!(PLAIN.dimension_sets(), [vec!["service", "route"]]);
        assert_eq!(
            CANARY.dimension_sets(),
            [
                vec!["service", "route"],
                vec!["service", "route", "function_version"]
            ]
        );
    }

    #[test]
    fn an_entry_listing_the_version_dimension_is_refused() {
        assert_eq!(check(&[&CANARY]), Ok(()));
        assert_eq!(
            check(&[&LISTS_THE_VERSION]),
            Err(CatalogueError::VersionDimension("Probe"))
        );
        assert_eq!(
            check(&[&LISTS_THE_VERSION_NOT_CANARY]),
            Err(CatalogueError::VersionDimension("Probe"))
        );
    }

    #[test]
    fn the_version_counts_towards_the_dimension_limit_of_a_canary_entry() {
        static THIRTY: [&str; 30] = [
            "service", "d1", "d2", "d3", "d4", "d5", "d6", "d7", "d8", "d9", "d10", "d11", "d12", "d13",
            "d14", "d15", "d16", "d17", "d18", "d19", "d20", "d21", "d22", "d23", "d24", "d25", "d26", "d27",
            "d28", "d29",
        ];
        static PLAIN_30: MetricDef = entry(&THIRTY, false);
        static CANARY_30: MetricDef = entry(&THIRTY, true);
        assert_eq!(check(&[&PLAIN_30]), Ok(()));
        assert_eq!(
            check(&[&CANARY_30]),
            Err(CatalogueError::TooManyDimensions("Probe"))
        );
    }
}
