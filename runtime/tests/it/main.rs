//! `keel-runtime`'s integration tests, in one binary: each module tests one layer (or one
//! concern across layers) through the public API; `common` builds a Keel stack writing to
//! memory. Tests that need AWS stand-ins start a moto server through `keel-tests`.

mod allocations;
mod batch;
mod common;
mod concurrency;
mod config;
mod fault;
mod idempotency;
mod logging;
mod metrics;
mod redaction;
mod relay_client;
mod routing;
