//! One run of the hook: every check of the target, each in a task of its own and within its
//! time, then exactly one report of the result to CodeDeploy — also when a check fails, times
//! out or panics.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use tracing::Instrument as _;

use crate::checks::{Check, CheckFailure, Invoked};
use crate::metrics::CANARY_CHECK_FAILED;

/// Time kept back from the invocation's deadline for the report (the CodeDeploy client gives
/// up after 5 s) and the answer.
const REPORT_RESERVE: Duration = Duration::from_millis(5_500);

/// The event CodeDeploy invokes a lifecycle hook with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct HookEvent {
    /// The deployment.
    pub(crate) deployment_id: String,
    /// This run of the hook, to report on.
    pub(crate) lifecycle_event_hook_execution_id: String,
}

/// The lifecycle hook's result, as CodeDeploy takes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Status {
    /// Every check passed: the deployment goes on.
    Succeeded,
    /// A check failed: the deployment stops and rolls back.
    Failed,
}

/// The function the checks invoke.
#[async_trait::async_trait]
pub(crate) trait Target: Send + Sync + 'static {
    /// Invokes the target with `event` (JSON) and waits for its answer; `Err` describes why it
    /// could not be invoked.
    async fn invoke(&self, event: Vec<u8>) -> Result<Invoked, String>;
}

/// Where the hook's result goes.
#[async_trait::async_trait]
pub(crate) trait Reporter: Send + Sync {
    /// Reports `status` for the hook run `event`; `Err` describes why it could not.
    async fn report(&self, event: &HookEvent, status: Status) -> Result<(), String>;
}

/// One check's result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct CheckReport {
    /// Which check.
    pub(crate) check: Check,
    /// Whether it passed.
    pub(crate) passed: bool,
    /// How long it took.
    pub(crate) latency_ms: u64,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) reason: Option<String>,
}

/// The hook's answer: the status reported and every check's result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Verdict {
    /// What was reported to CodeDeploy.
    pub(crate) status: Status,
    /// Each check, in the order they ran.
    pub(crate) checks: Vec<CheckReport>,
}

/// The result could not be reported: the invocation fails (and is routed to on-call), since
/// CodeDeploy would otherwise wait for the hook until its own timeout.
#[derive(Debug, thiserror::Error)]
#[error("could not report {status:?} to CodeDeploy for deployment {deployment_id}: {reason}")]
pub(crate) struct ReportFailed {
    status: Status,
    deployment_id: String,
    reason: String,
}

/// The hook: the target, where results go, and each check's time.
#[derive(Clone)]
pub(crate) struct Hook {
    target: Arc<dyn Target>,
    reporter: Arc<dyn Reporter>,
    check_timeout: Duration,
}

impl std::fmt::Debug for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hook")
            .field("check_timeout", &self.check_timeout)
            .finish_non_exhaustive()
    }
}

impl Hook {
    /// Checks `target`, reporting to `reporter`; each check has at most `check_timeout`.
    pub(crate) fn new(target: Arc<dyn Target>, reporter: Arc<dyn Reporter>, check_timeout: Duration) -> Self {
        Self {
            target,
            reporter,
            check_timeout,
        }
    }

    /// Runs every check for `event` and reports the result once; `deadline_ms` is the
    /// invocation's (epoch ms; 0 or past: unknown).
    pub(crate) async fn run(&self, event: &HookEvent, deadline_ms: u64) -> Result<Verdict, ReportFailed> {
        let mut checks = Vec::with_capacity(Check::ALL.len());
        for check in Check::ALL {
            checks.push(self.check(check, event, deadline_ms).await);
        }
        let status = match checks.iter().all(|check| check.passed) {
            true => Status::Succeeded,
            false => Status::Failed,
        };
        match self.reporter.report(event, status).await {
            Ok(()) => tracing::info!(status = ?status, "reported the hook's status to CodeDeploy"),
            Err(reason) => {
                return Err(ReportFailed {
                    status,
                    deployment_id: event.deployment_id.clone(),
                    reason,
                })
            }
        }
        Ok(Verdict { status, checks })
    }

    /// Runs one check in a task of its own (a panic fails the check, not the hook), within its
    /// time; logs and counts its result.
    async fn check(&self, check: Check, event: &HookEvent, deadline_ms: u64) -> CheckReport {
        let timeout = self.timeout(deadline_ms);
        let target = self.target.clone();
        let hook = event.clone();
        let started = Instant::now();
        let task = tokio::spawn(
            async move {
                let payload = check.event(&hook, SystemTime::now()).to_string().into_bytes();
                match tokio::time::timeout(timeout, target.invoke(payload)).await {
                    Err(_) => Err(CheckFailure::TimedOut(timeout)),
                    Ok(Err(reason)) => Err(CheckFailure::Invoke(reason)),
                    Ok(Ok(answer)) => check.verdict(&answer),
                }
            }
            .in_current_span(),
        );
        let outcome = match task.await {
            Ok(outcome) => outcome,
            Err(error) => Err(CheckFailure::Panicked(match error.try_into_panic() {
                Ok(panic) => panic
                    .downcast_ref::<&str>()
                    .map(|m| (*m).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic without a message".to_owned()),
                Err(error) => error.to_string(),
            })),
        };
        let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        match &outcome {
            Ok(()) => tracing::info!(check = check.name(), latency_ms, "canary check passed"),
            Err(failure) => {
                CANARY_CHECK_FAILED.increment_with(1, &[check.name()]);
                tracing::warn!(check = check.name(), latency_ms, reason = %failure, "canary check failed");
            }
        }
        CheckReport {
            check,
            passed: outcome.is_ok(),
            latency_ms,
            reason: outcome.err().map(|failure| failure.to_string()),
        }
    }

    /// A check's time: its own, or less when the invocation's deadline (less the time the
    /// report needs) comes sooner.
    fn timeout(&self, deadline_ms: u64) -> Duration {
        keel_runtime::clock::time_left(deadline_ms, REPORT_RESERVE)
            .map_or(self.check_timeout, |left| left.min(self.check_timeout))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use serde_json::{json, Value};

    use super::*;

    /// A target answering with `answer` for each check's path.
    struct FakeTarget(fn(&Value) -> Result<Invoked, String>);

    #[async_trait::async_trait]
    impl Target for FakeTarget {
        async fn invoke(&self, event: Vec<u8>) -> Result<Invoked, String> {
            let event: Value = serde_json::from_slice(&event).map_err(|e| e.to_string())?;
            (self.0)(&event)
        }
    }

    #[derive(Default)]
    struct Recorder(Mutex<Vec<(HookEvent, Status)>>);

    #[async_trait::async_trait]
    impl Reporter for Recorder {
        async fn report(&self, event: &HookEvent, status: Status) -> Result<(), String> {
            self.0.lock().unwrap().push((event.clone(), status));
            Ok(())
        }
    }

    fn http(status: u16, body: Value) -> Result<Invoked, String> {
        Ok(Invoked {
            payload: json!({"statusCode": status, "body": body.to_string()})
                .to_string()
                .into_bytes(),
            function_error: None,
        })
    }

    fn passing(event: &Value) -> Result<Invoked, String> {
        match event["rawPath"].as_str() {
            Some("/health") => http(200, json!({"status": "ok"})),
            _ => http(200, json!({"dry_run": true})),
        }
    }

    fn event() -> HookEvent {
        HookEvent {
            deployment_id: "d-1".into(),
            lifecycle_event_hook_execution_id: "e-1".into(),
        }
    }

    async fn run(target: FakeTarget, timeout: Duration) -> (Verdict, Vec<(HookEvent, Status)>) {
        let reporter = Arc::new(Recorder::default());
        let hook = Hook::new(Arc::new(target), reporter.clone(), timeout);
        let verdict = hook.run(&event(), 0).await.unwrap();
        let reports = reporter.0.lock().unwrap().clone();
        (verdict, reports)
    }

    #[tokio::test]
    async fn reports_succeeded_once_when_every_check_passes() {
        let (verdict, reports) = run(FakeTarget(passing), Duration::from_secs(5)).await;
        assert_eq!(verdict.status, Status::Succeeded);
        assert!(verdict.checks.iter().all(|c| c.passed), "{verdict:?}");
        assert_eq!(reports, vec![(event(), Status::Succeeded)]);
    }

    #[tokio::test]
    async fn reports_failed_once_when_a_check_fails_errs_or_panics() {
        fn unhealthy(event: &Value) -> Result<Invoked, String> {
            match event["rawPath"].as_str() {
                Some("/health") => http(503, json!({"code": "Unavailable"})),
                _ => passing(event),
            }
        }
        fn unreachable_target(_: &Value) -> Result<Invoked, String> {
            Err("connection refused".into())
        }
        fn panicking(event: &Value) -> Result<Invoked, String> {
            match event["rawPath"].as_str() {
                Some("/health") => panic!("the check broke"),
                _ => passing(event),
            }
        }
        let failing: [(FakeTarget, &str); 3] = [
            (FakeTarget(unhealthy), "expected status 200, got 503"),
            (FakeTarget(unreachable_target), "connection refused"),
            (FakeTarget(panicking), "the check panicked: the check broke"),
        ];
        for (target, reason) in failing {
            let (verdict, reports) = run(target, Duration::from_secs(5)).await;
            assert_eq!(verdict.status, Status::Failed, "{reason}");
            assert_eq!(reports, vec![(event(), Status::Failed)], "{reason}");
            let health = &verdict.checks[0];
            assert!(!health.passed);
            assert!(
                health.reason.as_deref().is_some_and(|r| r.contains(reason)),
                "{reason}: {health:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_check_that_gets_no_answer_fails_in_its_time() {
        struct Hanging;
        #[async_trait::async_trait]
        impl Target for Hanging {
            async fn invoke(&self, _: Vec<u8>) -> Result<Invoked, String> {
                std::future::pending().await
            }
        }
        let reporter = Arc::new(Recorder::default());
        let hook = Hook::new(Arc::new(Hanging), reporter.clone(), Duration::from_millis(50));
        let started = Instant::now();
        let verdict = hook.run(&event(), 0).await.unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(verdict.status, Status::Failed);
        assert!(verdict
            .checks
            .iter()
            .all(|c| c.reason.as_deref() == Some("no answer within 50ms")));
        assert_eq!(reporter.0.lock().unwrap().len(), 1);
    }

    #[test]
    fn a_check_gets_less_time_when_the_deadline_is_near() {
        struct Never;
        #[async_trait::async_trait]
        impl Target for Never {
            async fn invoke(&self, _: Vec<u8>) -> Result<Invoked, String> {
                Err("never invoked".into())
            }
        }
        let hook = Hook::new(
            Arc::new(Never),
            Arc::new(Recorder::default()),
            Duration::from_secs(10),
        );
        assert_eq!(hook.timeout(0), Duration::from_secs(10), "unknown deadline");
        let soon = keel_runtime::clock::now_ms() + 7_500;
        let left = hook.timeout(soon);
        assert!(
            left <= Duration::from_secs(2) && left > Duration::from_millis(1_500),
            "{left:?}"
        );
        let within_reserve = keel_runtime::clock::now_ms() + 1_000;
        assert_eq!(hook.timeout(within_reserve), Duration::ZERO);
    }
}
