//! # keel-extension
//!
//! The Keel Lambda extension: it sees what a function cannot see about itself and publishes what
//! the function hands over, after the response.
//!
//! - [`telemetry`]: `platform.report` becomes metrics (`DurationMs`, `BilledDurationMs`,
//!   `MaxMemoryUsedMB`, `InitDurationMs`, and `InvocationError` when its status is not
//!   `success`; `DurationMs` and `InvocationError` by version too); a `platform.runtimeDone`/`platform.report` with status
//!   `timeout` or `failure` becomes `InvocationTimeout`/`RuntimeCrash` and a routed envelope
//!   (`source: extension`) holding the last lines the function logged for that request (those
//!   that name no request too, when invocations come one at a time).
//! - [`relay`]: the function POSTs routed error envelopes to `KEEL_EXTENSION_ADDR` and gets
//!   `202` at once; a queue bounded in envelopes and bytes is published off the response path
//!   (SNS → DLQ → log, as in the function), and drained within the SHUTDOWN deadline: what
//!   cannot be published in time is written whole to the log.
//! - [`http`]: both listeners read bodies up to a cap, and answer `413` past it.
//! - [`flush`]: by default the extension lets Lambda freeze the environment as soon as the
//!   function says the invocation is over (Keel's runtime posts `/invocations/done` to the relay
//!   after the response) and handed nothing over, or once what it handed is published;
//!   telemetry's `platform.runtimeDone` remains the fallback (functions without Keel's runtime,
//!   timeouts, crashes).
//!
//! The binary registers for INVOKE and SHUTDOWN and subscribes to the Telemetry API
//! (`platform` and `function` records, schema `2022-12-13`).
//!
//! The library is the binary's parts, public for its integration tests and benchmarks; the
//! extension ships as a layer (`scripts/package-extension.sh`), not as a crate to depend on.

pub mod flush;
pub mod http;
pub mod relay;
pub mod telemetry;
