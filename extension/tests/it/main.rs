//! keel-extension's integration tests, in one test binary: the listeners' body cap ([`http`]),
//! the relay ([`relay`]), the Telemetry API listener ([`telemetry`]) and the end of an
//! invocation ([`flush`]).
//!
//! One process runs them all, so what is global to a process is shared: [`support::logs`]
//! installs the tracing subscriber and the metrics recorder once, for every test. A test that
//! reads the captured log picks out its own lines (by request id or envelope id, which no other
//! test uses, or by values only it logs), and a test's metrics layer writes to memory, never
//! to standard output.

mod flush;
mod http;
mod relay;
mod support;
mod telemetry;
