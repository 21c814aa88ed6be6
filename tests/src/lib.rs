//! Keel's test harness: real local stand-ins for the AWS parts Keel talks to.
//!
//! - [`Moto`]: a moto server (DynamoDB, SNS, SQS, CloudWatch) on a free 127.0.0.1 port, with
//!   SDK clients pointed at it and helpers that create uniquely named tables, topics and queues;
//! - [`Emulator`]: the cargo-lambda Lambda emulator (Runtime and Extensions APIs) on a free port;
//! - [`FunctionProcess`]: a function binary running against the emulator, its stdout captured;
//! - [`ApiGateway`]: API Gateway's HTTP API on 127.0.0.1, turning plain HTTP requests into
//!   payload 2.0 events for a function under the emulator;
//! - [`SqsEventSource`]: Lambda's SQS event source mapping, feeding a queue's batches to a
//!   function;
//! - [`TelemetryStandIn`]: Lambda's Telemetry API, between a function and an extension and the
//!   emulator, delivering each invocation's `platform.runtimeDone` a set delay after its
//!   response, and noting when the runtime posted it and when the extension asked for its next
//!   event.
//!
//! Every process is started in its own process group, asked to stop when its guard is dropped
//! (also when a test fails) and killed by PID if it does not, and dies with the test process.
//! The tools come from the project virtualenv that `scripts/install-tools.sh` fills
//! (`.venv`, or `$KEEL_VENV`).
//!
//! [`emf_spec`] validates EMF documents against the CloudWatch specification.

#![warn(missing_docs)]

pub mod api_gateway;
pub mod emf_spec;
mod emulator;
mod event_source;
mod moto;
mod process;
pub mod telemetry_stand_in;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use api_gateway::ApiGateway;
pub use emulator::{Emulator, FunctionProcess, Invocation};
pub use event_source::{Delivery, SqsEventSource};
pub use moto::{BookingStack, CountRequests, Moto, BOOKING_QUEUE_MAX_RECEIVE_COUNT};
pub use process::Process;
pub use telemetry_stand_in::TelemetryStandIn;

/// What can go wrong while setting up the stand-ins.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// A tool is not installed.
    #[error("{0} not found: run scripts/install-tools.sh")]
    MissingTool(PathBuf),
    /// A process could not be started.
    #[error("could not start {name}: {source}")]
    Spawn {
        /// What was started.
        name: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// A process did not answer in time.
    #[error("{name} did not answer within {waited:?}; its output:\n{output}")]
    NotReady {
        /// What was waited for.
        name: String,
        /// How long.
        waited: Duration,
        /// What it printed.
        output: String,
    },
    /// Building a binary failed.
    #[error("cargo build of {0} failed")]
    Build(String),
    /// Resources on a stand-in could not be set up or read.
    #[error("{0}")]
    Setup(String),
    /// An HTTP exchange with a stand-in failed.
    #[error("HTTP request to {url} failed: {reason}")]
    Http {
        /// Where.
        url: String,
        /// Why.
        reason: String,
    },
}

/// The workspace root (where `Cargo.toml` and `.venv` are).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The virtualenv holding moto and cargo-lambda.
pub fn venv() -> PathBuf {
    std::env::var_os("KEEL_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".venv"))
}

fn tool(name: &str) -> Result<PathBuf, HarnessError> {
    let path = venv().join("bin").join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(HarnessError::MissingTool(path))
    }
}

/// A name no other test of this run uses: `prefix-<pid>-<n>`.
pub fn unique_name(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A free TCP port on 127.0.0.1 (bound and released; the caller binds it next).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("the loopback interface has free ports")
}

/// The binary `name` of the workspace (the caller's own profile and target directory),
/// built with the test build ([`build_workspace`]); returns its path.
pub fn build_binary(name: &str) -> Result<PathBuf, HarnessError> {
    Ok(build_workspace()?.join(name))
}

/// The example `name` (of any workspace crate), built with the test build
/// ([`build_workspace`]); returns its path.
pub fn build_example(name: &str) -> Result<PathBuf, HarnessError> {
    Ok(build_workspace()?.join("examples").join(name))
}

/// Builds every target of the workspace once per test process, exactly as the test build
/// (`cargo test --workspace --all-targets`) does, into the running test's own target directory;
/// returns that profile's directory. After the test build this finds everything fresh: a
/// narrower `cargo build --bin NAME` would resolve features without the dev-dependencies and
/// compile the workspace a second time.
pub fn build_workspace() -> Result<PathBuf, HarnessError> {
    static BUILT: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| cargo_build(&["--workspace", "--all-targets"], true).map_err(|e| e.to_string()))
        .clone()
        .map_err(HarnessError::Setup)
}

/// Builds just the binaries `names` (for a runner outside the test build, such as
/// `keel-local`), with the caller's profile (a release `keel-local` builds release functions)
/// and target directory, showing cargo's progress; returns that profile's directory.
pub fn build_binaries(names: &[&str]) -> Result<PathBuf, HarnessError> {
    let args: Vec<&str> = names.iter().flat_map(|name| ["--bin", name]).collect();
    cargo_build(&args, false)
}

fn cargo_build(what: &[&str], quiet: bool) -> Result<PathBuf, HarnessError> {
    let failed = || HarnessError::Build(what.join(" "));
    // Test executables live in <target>/<profile>/deps, binaries in <target>/<profile>.
    let profile_dir = std::env::current_exe()
        .ok()
        .and_then(|exe| {
            let dir = exe.parent()?;
            let dir = if dir.ends_with("deps") { dir.parent()? } else { dir };
            Some(dir.to_path_buf())
        })
        .ok_or_else(failed)?;
    let target_dir = profile_dir.parent().ok_or_else(failed)?;
    // The caller's own profile: `debug` is cargo's `dev`, any other directory its profile's name.
    let profile = match profile_dir.file_name().and_then(|name| name.to_str()) {
        Some("debug") | None => "dev",
        Some(name) => name,
    };
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = std::process::Command::new(cargo)
        .arg("build")
        .args(quiet.then_some("--quiet"))
        .args(["--profile", profile])
        .args(what)
        .arg("--target-dir")
        .arg(target_dir)
        .current_dir(workspace_root())
        .status()
        .map_err(|source| HarnessError::Spawn {
            name: format!("cargo build {}", what.join(" ")),
            source,
        })?;
    if !status.success() {
        return Err(failed());
    }
    Ok(profile_dir)
}

/// A single-threaded tokio runtime, for a runner (`keel-local`, `cold-start`) that sets up its
/// stand-ins with the async SDK clients between blocking steps.
pub fn runtime() -> Result<tokio::runtime::Runtime, HarnessError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| HarnessError::Spawn {
            name: "tokio runtime".into(),
            source,
        })
}

/// Polls `ready` every 50 ms until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if ready() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// POSTs `body` to `url` and returns the status and the answer's text (any status).
pub fn post(url: &str, body: &str, timeout: Duration) -> Result<(u16, String), HarnessError> {
    let failed = |reason: String| HarnessError::Http {
        url: url.to_owned(),
        reason,
    };
    let mut response = http_agent(timeout)
        .post(url)
        .send(body)
        .map_err(|e| failed(e.to_string()))?;
    let status = response.status().as_u16();
    let text = response
        .body_mut()
        .read_to_string()
        .map_err(|e| failed(e.to_string()))?;
    Ok((status, text))
}

pub(crate) fn http_agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .build()
        .into()
}

/// The date `days` from today (UTC), as `YYYY-MM-DD`: booking times in the future, as the
/// booking API requires, whenever the tests run.
pub fn future_date(days: u64) -> String {
    let when = std::time::SystemTime::now() + Duration::from_secs(days * 24 * 3600);
    humantime::format_rfc3339_seconds(when).to_string()[..10].to_owned()
}
