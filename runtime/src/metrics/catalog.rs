//! The metric catalogue: every metric Keel and the booking functions emit.
//!
//! Dashboards and alarms are generated from this list, so a metric is emitted only through its
//! entry here (never by a name typed elsewhere):
//!
//! ```
//! use keel_runtime::metrics::catalog;
//!
//! catalog::BOOKING_CREATED.increment(1);
//! assert_eq!(catalog::find("ColdStart").unwrap().dimensions, &["service", "function_name"]);
//! ```

use super::unit::{Resolution, Unit};

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

/// Counted once per execution environment, on its first invocation, in a document of its own.
pub static COLD_START: MetricDef = MetricDef {
    name: "ColdStart",
    unit: Unit::Count,
    kind: Kind::Counter,
    dimensions: &["service", "function_name"],
    resolution: Resolution::Standard,
    description: "Invocations that started a new execution environment",
    emitter: Emitter::Runtime,
};

/// A booking request accepted by the booking API.
pub static BOOKING_CREATED: MetricDef = MetricDef {
    name: "BookingCreated",
    unit: Unit::Count,
    kind: Kind::Counter,
    dimensions: &["service"],
    resolution: Resolution::Standard,
    description: "Booking requests accepted by the booking API",
    emitter: Emitter::Function,
};

/// A duplicate answered with the stored response (the handler did not run).
pub static IDEMPOTENCY_REPLAY: MetricDef = MetricDef {
    name: "IdempotencyReplay",
    unit: Unit::Count,
    kind: Kind::Counter,
    dimensions: &["service"],
    resolution: Resolution::Standard,
    description: "Duplicate requests answered with the stored response",
    emitter: Emitter::Runtime,
};

/// A duplicate that arrived while the first request was still running.
pub static IDEMPOTENCY_IN_PROGRESS_CONFLICT: MetricDef = MetricDef {
    name: "IdempotencyInProgressConflict",
    unit: Unit::Count,
    kind: Kind::Counter,
    dimensions: &["service"],
    resolution: Resolution::Standard,
    description: "Duplicate requests refused because the first one was still running",
    emitter: Emitter::Runtime,
};

/// An idempotency key reused with a different payload.
pub static IDEMPOTENCY_KEY_REUSED: MetricDef = MetricDef {
    name: "IdempotencyKeyReused",
    unit: Unit::Count,
    kind: Kind::Counter,
    dimensions: &["service"],
    resolution: Resolution::Standard,
    description: "Requests refused because their idempotency key was used with another payload",
    emitter: Emitter::Runtime,
};

/// A failed operation of the idempotency store.
pub static IDEMPOTENCY_STORE_ERROR: MetricDef = MetricDef {
    name: "IdempotencyStoreError",
    unit: Unit::Count,
    kind: Kind::Counter,
    dimensions: &["service"],
    resolution: Resolution::Standard,
    description: "Idempotency store operations that failed (throttled, unreachable, refused)",
    emitter: Emitter::Runtime,
};

/// A routed error, counted once where it finally landed (`sns`, `dlq` or `log`): an envelope
/// handed to the Keel extension's relay is counted by the extension when it publishes it.
pub static ROUTED_ERROR: MetricDef = MetricDef {
    name: "RoutedError",
    unit: Unit::Count,
    kind: Kind::Counter,
    dimensions: &["service", "sink"],
    resolution: Resolution::Standard,
    description: "Failed invocations routed to on-call, by the sink that took the envelope (log = SNS and the DLQ both failed)",
    emitter: Emitter::Runtime,
};

/// An invocation took a concurrency slot.
pub static CONCURRENCY_ACQUIRED: MetricDef = MetricDef {
    name: "ConcurrencyAcquired",
    unit: Unit::Count,
    kind: Kind::Counter,
    dimensions: &["service"],
    resolution: Resolution::Standard,
    description: "Invocations that took a concurrency slot for their key",
    emitter: Emitter::Runtime,
};

/// An invocation found every slot of its key taken and was refused.
pub static CONCURRENCY_REJECTED: MetricDef = MetricDef {
    name: "ConcurrencyRejected",
    unit: Unit::Count,
    kind: Kind::Counter,
    dimensions: &["service"],
    resolution: Resolution::Standard,
    description: "Invocations refused because every concurrency slot of their key was taken (HTTP 429)",
    emitter: Emitter::Runtime,
};

/// How long an invocation waited for its concurrency slot.
pub static CONCURRENCY_WAIT_MS: MetricDef = MetricDef {
    name: "ConcurrencyWaitMs",
    unit: Unit::Milliseconds,
    kind: Kind::Histogram,
    dimensions: &["service"],
    resolution: Resolution::Standard,
    description: "Time from arrival to a concurrency slot being taken",
    emitter: Emitter::Runtime,
};

/// How long the function ran for an invocation (platform.report).
pub static INVOCATION_DURATION_MS: MetricDef = MetricDef {
    name: "DurationMs",
    unit: Unit::Milliseconds,
    kind: Kind::Histogram,
    dimensions: &["service"],
    resolution: Resolution::Standard,
    description: "How long the function ran for an invocation (platform.report)",
    emitter: Emitter::Extension,
};

/// The duration Lambda billed for an invocation (platform.report).
pub static BILLED_DURATION_MS: MetricDef = MetricDef {
    name: "BilledDurationMs",
    unit: Unit::Milliseconds,
    kind: Kind::Histogram,
    dimensions: &["service"],
    resolution: Resolution::Standard,
    description: "The duration Lambda billed for an invocation (platform.report)",
    emitter: Emitter::Extension,
};

/// The most memory the execution environment used up to an invocation (platform.report).
pub static MAX_MEMORY_USED_MB: MetricDef = MetricDef {
    name: "MaxMemoryUsedMB",
    unit: Unit::Megabytes,
    kind: Kind::Histogram,
    dimensions: &["service"],
    resolution: Resolution::Standard,
    description: "The most memory the execution environment used up to an invocation (platform.report)",
    emitter: Emitter::Extension,
};

/// How long the execution environment took to start, on cold starts (platform.report).
pub static INIT_DURATION_MS: MetricDef = MetricDef {
    name: "InitDurationMs",
    unit: Unit::Milliseconds,
    kind: Kind::Histogram,
    dimensions: &["service"],
    resolution: Resolution::Standard,
    description: "How long the execution environment took to start, on cold starts (platform.report)",
    emitter: Emitter::Extension,
};

/// Invocations that ran out of time (platform.runtimeDone status timeout).
pub static INVOCATION_TIMEOUT: MetricDef = MetricDef {
    name: "InvocationTimeout",
    unit: Unit::Count,
    kind: Kind::Counter,
    dimensions: &["service"],
    resolution: Resolution::Standard,
    description: "Invocations that ran out of time (platform.runtimeDone status timeout)",
    emitter: Emitter::Extension,
};

/// Invocations whose runtime crashed or was killed (platform.runtimeDone status failure).
pub static RUNTIME_CRASH: MetricDef = MetricDef {
    name: "RuntimeCrash",
    unit: Unit::Count,
    kind: Kind::Counter,
    dimensions: &["service"],
    resolution: Resolution::Standard,
    description: "Invocations whose runtime crashed or was killed (platform.runtimeDone status failure)",
    emitter: Emitter::Extension,
};

/// Telemetry records Lambda dropped before the extension could read them (platform.logsDropped).
pub static TELEMETRY_DROPPED: MetricDef = MetricDef {
    name: "TelemetryDropped",
    unit: Unit::Count,
    kind: Kind::Counter,
    dimensions: &["service"],
    resolution: Resolution::Standard,
    description:
        "Telemetry records Lambda dropped before the extension could read them (platform.logsDropped)",
    emitter: Emitter::Extension,
};

/// Every catalogue entry.
pub static ALL: &[&MetricDef] = &[
    &COLD_START,
    &BOOKING_CREATED,
    &IDEMPOTENCY_REPLAY,
    &IDEMPOTENCY_IN_PROGRESS_CONFLICT,
    &IDEMPOTENCY_KEY_REUSED,
    &IDEMPOTENCY_STORE_ERROR,
    &ROUTED_ERROR,
    &CONCURRENCY_ACQUIRED,
    &CONCURRENCY_REJECTED,
    &CONCURRENCY_WAIT_MS,
    &INVOCATION_DURATION_MS,
    &BILLED_DURATION_MS,
    &MAX_MEMORY_USED_MB,
    &INIT_DURATION_MS,
    &INVOCATION_TIMEOUT,
    &RUNTIME_CRASH,
    &TELEMETRY_DROPPED,
];

/// The entry named `name`.
pub fn find(name: &str) -> Option<&'static MetricDef> {
    ALL.iter().copied().find(|def| def.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_unique_and_well_formed() {
        for (i, def) in ALL.iter().enumerate() {
            assert_eq!(def.dimensions.first(), Some(&"service"), "{}", def.name);
            assert!(def.dimensions.len() <= 30, "{}", def.name);
            assert!(!def.description.is_empty(), "{}", def.name);
            assert!(
                ALL[i + 1..].iter().all(|other| other.name != def.name),
                "{} twice",
                def.name
            );
        }
    }
}
