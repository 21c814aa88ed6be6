//! The metrics Keel itself emits: the runtime's layers inside the function, and the extension
//! from the Telemetry API.
//!
//! The canary-critical ones ([`MetricDef::canary`]: `InvocationTimeout`, `RuntimeCrash`,
//! `HttpServerError`) are also published per function version, for the alarms that watch a
//! canary deployment.

use crate::{Emitter, Kind, MetricDef, Resolution, Unit};

/// Counted once per execution environment, on its first invocation, in a document of its own.
pub static COLD_START: MetricDef = MetricDef {
    name: "ColdStart",
    unit: Unit::Count,
    kind: Kind::Counter,
    dimensions: &["service", "function_name"],
    resolution: Resolution::Standard,
    description: "Invocations that started a new execution environment",
    emitter: Emitter::Runtime,
    canary: false,
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
    canary: false,
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
    canary: false,
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
    canary: false,
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
    canary: false,
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
    canary: false,
};

/// An HTTP answer with a 5xx status: one Keel gave in place of the handler (a failed
/// idempotency or concurrency-slot store), or one a function gave itself and counted through
/// this entry. Lambda counts neither as an error (the invocation succeeded), so
/// `AWS/Lambda Errors` never sees them; API Gateway's 5xx metrics do, but without the version.
pub static HTTP_SERVER_ERROR: MetricDef = MetricDef {
    name: "HttpServerError",
    unit: Unit::Count,
    kind: Kind::Counter,
    dimensions: &["service"],
    resolution: Resolution::Standard,
    description: "HTTP answers with a 5xx status given by Keel in place of the handler (idempotency or \
                  concurrency-slot store failure) or by the function itself: an API Gateway 5xx that \
                  AWS/Lambda Errors never counts",
    emitter: Emitter::Runtime,
    canary: true,
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
    canary: false,
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
    canary: false,
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
    canary: false,
};

/// How long the function ran for an invocation (platform.report).
pub static INVOCATION_DURATION_MS: MetricDef = MetricDef {
    name: "DurationMs",
    unit: Unit::Milliseconds,
    kind: Kind::Histogram,
    dimensions: &["service"],
    resolution: Resolution::Standard,
    description: "How long the function ran for an invocation (platform.report); by version too, \
                  so that the canary replay reads a version's invocations and duration from it",
    emitter: Emitter::Extension,
    canary: true,
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
    canary: false,
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
    canary: false,
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
    canary: false,
};

/// Invocations the runtime reported failed (platform.report status `error`, `timeout` or
/// `failure`): what `AWS/Lambda Errors` counts, seen from inside the execution environment.
/// Published by version too, so that the canary replay derives a version's `Errors` from it
/// where no CloudWatch is (a local run).
pub static INVOCATION_ERROR: MetricDef = MetricDef {
    name: "InvocationError",
    unit: Unit::Count,
    kind: Kind::Counter,
    dimensions: &["service"],
    resolution: Resolution::Standard,
    description: "Invocations the runtime reported failed (platform.report status error, timeout or \
                  failure): what AWS/Lambda Errors counts, by version",
    emitter: Emitter::Extension,
    canary: true,
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
    canary: true,
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
    canary: true,
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
    canary: false,
};

/// Every metric Keel itself emits.
pub static ALL: &[&MetricDef] = &[
    &COLD_START,
    &IDEMPOTENCY_REPLAY,
    &IDEMPOTENCY_IN_PROGRESS_CONFLICT,
    &IDEMPOTENCY_KEY_REUSED,
    &IDEMPOTENCY_STORE_ERROR,
    &HTTP_SERVER_ERROR,
    &ROUTED_ERROR,
    &CONCURRENCY_ACQUIRED,
    &CONCURRENCY_REJECTED,
    &CONCURRENCY_WAIT_MS,
    &INVOCATION_DURATION_MS,
    &BILLED_DURATION_MS,
    &MAX_MEMORY_USED_MB,
    &INIT_DURATION_MS,
    &INVOCATION_ERROR,
    &INVOCATION_TIMEOUT,
    &RUNTIME_CRASH,
    &TELEMETRY_DROPPED,
];

/// Keel's entry named `name`.
pub fn find(name: &str) -> Option<&'static MetricDef> {
    crate::find(ALL, name)
}

/// Checks that a function's own `entries` can be published beside Keel's: each well formed
/// (see [`crate::check`]) and none named as one of Keel's or as another of them.
pub fn check_beside(entries: &[&'static MetricDef]) -> Result<(), crate::CatalogueError> {
    let mut all = ALL.to_vec();
    all.extend_from_slice(entries);
    crate::check(&all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_unique_and_well_formed() {
        crate::check(ALL).unwrap();
    }

    #[test]
    fn the_canary_critical_entries() {
        let canary: Vec<&str> = ALL.iter().filter(|def| def.canary).map(|def| def.name).collect();
        assert_eq!(
            canary,
            [
                "HttpServerError",
                "DurationMs",
                "InvocationError",
                "InvocationTimeout",
                "RuntimeCrash"
            ]
        );
    }
}
