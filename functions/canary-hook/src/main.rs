//! The canary hook: a CodeDeploy `PreTraffic` lifecycle hook that checks a new version of the
//! booking API before any traffic is shifted to it.
//!
//! CodeDeploy invokes it with `{"DeploymentId", "LifecycleEventHookExecutionId"}`. It invokes
//! the target (Lambda `Invoke`, `RequestResponse`) with two API Gateway HTTP API events, one
//! after the other, each within its time:
//!
//! - `health`: `GET /health` must answer 200;
//! - `dry_run_booking`: `POST /bookings` with a valid booking and the header
//!   `x-keel-dry-run: true` (no `Idempotency-Key`: a dry run takes none) must answer 200 with a
//!   JSON body holding `"dry_run": true` (the events carry no `requestContext.apiId`: the
//!   booking API honours a dry run only without one, so no caller through API Gateway can ask
//!   for it).
//!
//! A function error, another status, a body without `"dry_run": true`, no answer in time or a
//! check that panics fails that check. The hook then reports `Succeeded` (every check passed) or
//! `Failed` with `PutLifecycleEventHookExecutionStatus`, exactly once per run. Each check's
//! result is logged with its latency; a failed check is counted in
//! `CanaryCheckFailed{check}`. If the report itself fails, the invocation fails (and is routed
//! to on-call): CodeDeploy would otherwise wait for the hook until its own timeout. Every line
//! carries the deployment id as `correlation_id`.
//!
//! Configuration:
//!
//! - `TARGET_FUNCTION` (required): the function to check — a name, or a version's or alias's
//!   ARN (the version being deployed);
//! - `CANARY_CHECK_TIMEOUT_MS`: each check's time, from 1 to 900000 (default 10000); less when
//!   the invocation's deadline is nearer, keeping 5.5 s for the report;
//! - Keel's `KEEL_*` variables (logs, metrics, error routing);
//! - the standard AWS variables for the Lambda and CodeDeploy clients (`AWS_REGION`,
//!   `AWS_ENDPOINT_URL_LAMBDA`, `AWS_ENDPOINT_URL_CODEDEPLOY`, …).

mod aws;
mod checks;
mod hook;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use booking_metrics::hook as metrics;
use keel_runtime::logging::CorrelationId;
use keel_runtime::{service_fn, Keel, LambdaEvent};

use hook::{Hook, HookEvent};

/// The service name in logs, metrics and envelopes.
const SERVICE: &str = "canary-hook";

/// Each check's time unless `CANARY_CHECK_TIMEOUT_MS` says otherwise.
const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// What stops the hook from starting.
#[derive(Debug, thiserror::Error)]
enum StartError {
    #[error("TARGET_FUNCTION is not set: the hook needs the function to check (a name, or a version's or alias's ARN)")]
    NoTarget,
    #[error(
        "CANARY_CHECK_TIMEOUT_MS={0} is not valid: expected a whole number of milliseconds from 1 to 900000"
    )]
    CheckTimeout(String),
    #[error(transparent)]
    Keel(#[from] keel_runtime::ConfigError),
}

/// A variable's value, when set and not blank.
fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|value| !value.trim().is_empty())
}

/// Each check's time, from `CANARY_CHECK_TIMEOUT_MS`.
fn check_timeout() -> Result<Duration, StartError> {
    let Some(value) = var("CANARY_CHECK_TIMEOUT_MS") else {
        return Ok(DEFAULT_CHECK_TIMEOUT);
    };
    value
        .trim()
        .parse::<u64>()
        .ok()
        .filter(|ms| (1..=900_000).contains(ms))
        .map(Duration::from_millis)
        .ok_or(StartError::CheckTimeout(value))
}

async fn start() -> Result<(Keel, Hook), StartError> {
    let target = var("TARGET_FUNCTION").ok_or(StartError::NoTarget)?;
    let timeout = check_timeout()?;
    let keel = Keel::from_env(SERVICE)
        .await?
        .correlation_id(CorrelationId::Pointer("/DeploymentId".into()))
        .metrics(|config| config.catalogue(metrics::CATALOGUE));
    let config = aws::config().await;
    let hook = Hook::new(
        Arc::new(aws::LambdaTarget::new(&config, target)),
        Arc::new(aws::CodeDeploy::new(&config)),
        timeout,
    );
    Ok((keel, hook))
}

#[tokio::main]
async fn main() -> ExitCode {
    let (keel, hook) = match start().await {
        Ok(started) => started,
        Err(error) => {
            eprintln!("{SERVICE}: {error}");
            return ExitCode::FAILURE;
        }
    };
    let handler = service_fn(move |event: LambdaEvent<HookEvent>| {
        let hook = hook.clone();
        async move { hook.run(&event.payload, event.context.deadline).await }
    });
    match keel.run(handler).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{SERVICE}: {error}");
            ExitCode::FAILURE
        }
    }
}
