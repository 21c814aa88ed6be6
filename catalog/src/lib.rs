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
//! };
//!
//! BOOKING_CREATED.increment(1);
//! assert_eq!(keel_catalog::keel::find("ColdStart").unwrap().dimensions, &["service", "function_name"]);
//! keel_catalog::check(&[&BOOKING_CREATED]).unwrap();
//! ```

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
}

impl MetricDef {
    /// The labels (dimensions other than `service`) this metric needs.
    pub fn labels(&self) -> &'static [&'static str] {
        &self.dimensions[1..]
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
    /// An entry has more dimensions than CloudWatch accepts (30).
    #[error("{0}: more than 30 dimensions")]
    TooManyDimensions(&'static str),
    /// An entry has no description.
    #[error("{0}: no description")]
    NoDescription(&'static str),
    /// Two entries share a name.
    #[error("{0}: named twice")]
    Duplicate(&'static str),
}

/// Checks that `entries` can be published: `service` first, at most 30 dimensions, a
/// description each, no name twice.
pub fn check(entries: &[&'static MetricDef]) -> Result<(), CatalogueError> {
    for (i, def) in entries.iter().enumerate() {
        if def.dimensions.first() != Some(&"service") {
            return Err(CatalogueError::ServiceFirst(def.name));
        }
        if def.dimensions.len() > 30 {
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
