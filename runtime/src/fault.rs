//! The fault switch: injected errors and latency, off by default, for the canary replay.
//!
//! A local canary replay runs a function under load with a small share of one version's
//! invocations failing or slowing down on purpose, to prove that the canary alarms roll that
//! version back (AWS FIS does the same for real deployments; this needs no account). The
//! switch is set with four variables, read by [`FaultInjection::from_env`] (and so by
//! `Keel::from_env`):
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `KEEL_FAULT_ERROR_RATE` | share of invocations (0–1) that fail with `error_type` [`INJECTED_FAULT`] (`Keel.InjectedFault`) instead of running the handler | `0` |
//! | `KEEL_FAULT_LATENCY_MS` | milliseconds (0 to 900000) added before the handler runs | `0` |
//! | `KEEL_FAULT_LATENCY_RATE` | share of invocations (0–1) delayed; only with `KEEL_FAULT_LATENCY_MS` | `1` |
//! | `KEEL_FAULT_VERSION` | faults apply only when `AWS_LAMBDA_FUNCTION_VERSION` is this (a version number or `$LATEST`), so only the canary misbehaves; only with `KEEL_FAULT_ERROR_RATE` or `KEEL_FAULT_LATENCY_MS` | every version |
//!
//! A malformed value (not a number, a rate outside 0–1, a negative or fractional latency, a
//! latency rate without a latency, a version that is an alias name, a version without a fault)
//! stops start-up with [`ConfigError::InvalidVariable`] naming the variable and its value.
//!
//! **Which invocations.** The choice is deterministic and evenly spread, not drawn at random,
//! so a replay and a test see the same share every time: the layer numbers the invocations it
//! serves (1, 2, 3, … per execution environment, shared by every clone of its service), and
//! invocation `n` is chosen for a rate `r` when `floor(n × r) > floor((n − 1) × r)`. Rate 0.1
//! chooses invocations 10, 20, 30, …: exactly 1 in 10, and `floor(N × r)` of any first `N`;
//! rate 0 none, rate 1 all. Rates count in billionths, in integers, so that no rounding of
//! `0.1 × n` moves a choice. Failures and delays follow the same numbering, each with its own
//! rate: with both at 0.1, invocation 10 is delayed, then fails.
//!
//! **Where it sits.** Innermost, between the concurrency guard and the typed handler
//! (`Keel::fault`): an injected failure is an ordinary handler error. The idempotency record is
//! released, not stored (the retry runs); routing routes it (class `transient`: another
//! invocation is likely not chosen), the logging layer writes its `invocation failed` line, and
//! Lambda reports the invocation failed with `errorType` `Keel.InjectedFault` — counted in
//! `AWS/Lambda` `Errors` of the executed version, which the canary alarms watch; behind API
//! Gateway the client gets a 500, as for any failed invocation. A delay holds the concurrency
//! slot and the idempotency record, as a slow handler would, and counts against the deadline: a
//! latency beyond the function's timeout makes the invocation time out.
//!
//! **Off costs nothing.** When no fault is set, or `KEEL_FAULT_VERSION` names another
//! version, the layer is built [disabled](FaultLayer::disabled): each call goes straight to the
//! handler, with no counter, clock or allocation. When on, [`FaultLayer::announce`] (which
//! `Keel::init` calls once the log subscriber is installed) writes a WARN line saying faults are
//! injected, with the rates.
//!
//! ```
//! use std::time::Duration;
//! use keel_runtime::fault::{FaultInjection, FaultLayer};
//!
//! // One invocation in ten fails and every one waits 200 ms, on version 7 only.
//! let faults = FaultInjection::new()
//!     .error_rate(0.1)
//!     .latency(Duration::from_millis(200))
//!     .version("7");
//! assert!(FaultLayer::for_version(faults.clone(), "7").is_active());
//! assert!(!FaultLayer::for_version(faults, "6").is_active());
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tower::{Layer, Service};

use crate::classify::{Classify, ErrorClass};
use crate::config::{parse_value, ConfigError};
use crate::function::FunctionInfo;
use crate::handler::InvocationError;

/// `error_type` of an invocation the fault switch chose to fail.
pub const INJECTED_FAULT: &str = "Keel.InjectedFault";

/// The longest latency `KEEL_FAULT_LATENCY_MS` accepts: 15 minutes, Lambda's longest timeout.
pub const MAX_LATENCY: Duration = Duration::from_secs(15 * 60);

/// Rates are counted in billionths.
const BILLION: u64 = 1_000_000_000;

/// What the fault switch injects, and into which version; see the [module docs](self).
///
/// The default injects nothing. Rates given to the builder methods are clamped to 0–1 (NaN
/// counts as 0); from the environment, a value out of range is refused.
#[derive(Clone, Debug, PartialEq)]
pub struct FaultInjection {
    error_rate: f64,
    latency: Duration,
    latency_rate: f64,
    version: Option<String>,
}

impl Default for FaultInjection {
    fn default() -> Self {
        Self::new()
    }
}

impl FaultInjection {
    /// No fault: no error, no latency (latency rate 1, for when a latency is set), every version.
    pub fn new() -> Self {
        Self {
            error_rate: 0.0,
            latency: Duration::ZERO,
            latency_rate: 1.0,
            version: None,
        }
    }

    /// Reads `KEEL_FAULT_ERROR_RATE`, `KEEL_FAULT_LATENCY_MS`, `KEEL_FAULT_LATENCY_RATE` and
    /// `KEEL_FAULT_VERSION` (see the [module docs](self)); none set is [`FaultInjection::new`].
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(crate::function::var)
    }

    /// [`FaultInjection::from_env`] with the variables read by `var` (set and not blank).
    pub(crate) fn from_vars(var: impl Fn(&'static str) -> Option<String>) -> Result<Self, ConfigError> {
        const RATE: &str = "a number from 0 to 1";
        let rate = |v: &str| v.parse::<f64>().ok().filter(|r| (0.0..=1.0).contains(r));
        let error_rate = parse_value("KEEL_FAULT_ERROR_RATE", var("KEEL_FAULT_ERROR_RATE"), RATE, rate)?;
        let latency = parse_value(
            "KEEL_FAULT_LATENCY_MS",
            var("KEEL_FAULT_LATENCY_MS"),
            "a whole number of milliseconds from 0 to 900000",
            |v| {
                v.parse::<u64>()
                    .ok()
                    .map(Duration::from_millis)
                    .filter(|latency| *latency <= MAX_LATENCY)
            },
        )?;
        let latency_rate = match latency {
            Some(_) => RATE,
            None => "KEEL_FAULT_LATENCY_MS to be set with it (the share of invocations that latency delays)",
        };
        let latency_rate = parse_value(
            "KEEL_FAULT_LATENCY_RATE",
            var("KEEL_FAULT_LATENCY_RATE"),
            latency_rate,
            |v| latency.and(rate(v)),
        )?;
        let version = match (error_rate, latency) {
            (None, None) => {
                "KEEL_FAULT_ERROR_RATE or KEEL_FAULT_LATENCY_MS to be set with it (the faults it scopes)"
            }
            _ => "a published version number (1, 2, …) or $LATEST, as AWS_LAMBDA_FUNCTION_VERSION holds it",
        };
        let version = parse_value("KEEL_FAULT_VERSION", var("KEEL_FAULT_VERSION"), version, |v| {
            let scoped = error_rate.is_some() || latency.is_some();
            let version_like = v == "$LATEST" || v.bytes().all(|b| b.is_ascii_digit());
            (scoped && version_like).then(|| v.to_owned())
        })?;
        let mut faults = Self::new();
        faults.error_rate = error_rate.unwrap_or(0.0);
        faults.latency = latency.unwrap_or(Duration::ZERO);
        faults.latency_rate = latency_rate.unwrap_or(1.0);
        faults.version = version;
        Ok(faults)
    }

    /// Share of invocations that fail with [`INJECTED_FAULT`] (clamped to 0–1).
    #[must_use]
    pub fn error_rate(mut self, rate: f64) -> Self {
        self.error_rate = clamp_rate(rate);
        self
    }

    /// Latency added before the handler runs, to the share of invocations
    /// [`FaultInjection::latency_rate`] says (all, unless it is set).
    #[must_use]
    pub fn latency(mut self, latency: Duration) -> Self {
        self.latency = latency;
        self
    }

    /// Share of invocations delayed by [`FaultInjection::latency`] (clamped to 0–1).
    #[must_use]
    pub fn latency_rate(mut self, rate: f64) -> Self {
        self.latency_rate = clamp_rate(rate);
        self
    }

    /// Injects faults only into the function version `version` (as
    /// `AWS_LAMBDA_FUNCTION_VERSION` holds it: a number or `$LATEST`).
    #[must_use]
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.version = Some(version.into());
        self
    }

    /// Whether any fault is set, whatever the version.
    pub fn is_set(&self) -> bool {
        per_billion(self.error_rate) > 0 || self.delays()
    }

    /// Whether faults are injected into the function version `version`: a fault is set, and
    /// no version is named or `version` is the one named.
    pub fn applies_to(&self, version: &str) -> bool {
        self.is_set() && self.version.as_deref().is_none_or(|scoped| scoped == version)
    }

    /// Whether some invocations are delayed.
    fn delays(&self) -> bool {
        !self.latency.is_zero() && per_billion(self.latency_rate) > 0
    }

    /// What the switch does, as its variables would say it.
    fn describe(&self) -> String {
        let mut parts = vec![format!("KEEL_FAULT_ERROR_RATE={}", self.error_rate)];
        if !self.latency.is_zero() {
            parts.push(format!("KEEL_FAULT_LATENCY_MS={}", self.latency.as_millis()));
            parts.push(format!("KEEL_FAULT_LATENCY_RATE={}", self.latency_rate));
        }
        if let Some(version) = &self.version {
            parts.push(format!("KEEL_FAULT_VERSION={version}"));
        }
        parts.join(", ")
    }
}

fn clamp_rate(rate: f64) -> f64 {
    if rate.is_nan() {
        0.0
    } else {
        rate.clamp(0.0, 1.0)
    }
}

/// `rate` (0–1) in billionths.
fn per_billion(rate: f64) -> u64 {
    // In range after clamping: the cast cannot saturate.
    (clamp_rate(rate) * BILLION as f64).round() as u64
}

/// Whether invocation `n` (from 1) is among the chosen at `per_billion`:
/// `floor(n × rate) > floor((n − 1) × rate)`, in integers.
fn chosen(n: u64, per_billion: u64) -> bool {
    let share = |n: u64| u128::from(n) * u128::from(per_billion) / u128::from(BILLION);
    n > 0 && share(n) > share(n - 1)
}

/// An invocation the fault switch failed on purpose; its `error_type` is [`INJECTED_FAULT`].
#[derive(Debug, thiserror::Error)]
#[error("injected fault (KEEL_FAULT_ERROR_RATE={rate})")]
pub struct InjectedFault {
    /// The error rate that chose it.
    pub rate: f64,
    /// Its number among the invocations the layer served (from 1).
    pub invocation: u64,
}

impl Classify for InjectedFault {
    /// `transient`: another invocation is most likely not chosen.
    fn error_class(&self) -> ErrorClass {
        ErrorClass::Transient
    }
}

impl From<InjectedFault> for InvocationError {
    fn from(fault: InjectedFault) -> Self {
        InvocationError::new(INJECTED_FAULT, fault)
    }
}

/// The faults of an active layer, shared by every clone of its service.
#[derive(Debug)]
struct Faults {
    injection: FaultInjection,
    version: String,
    error_per_billion: u64,
    latency_per_billion: u64,
    /// Invocations served so far.
    served: AtomicU64,
}

/// What happens to invocation `n`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Verdict {
    delay: Option<Duration>,
    fail: bool,
}

impl Faults {
    fn next(&self) -> (u64, Verdict) {
        let n = self.served.fetch_add(1, Ordering::Relaxed) + 1;
        let verdict = Verdict {
            delay: chosen(n, self.latency_per_billion).then_some(self.injection.latency),
            fail: chosen(n, self.error_per_billion),
        };
        (n, verdict)
    }
}

/// Tower layer of the fault switch; see the [module docs](self).
#[derive(Clone, Debug, Default)]
pub struct FaultLayer {
    faults: Option<Arc<Faults>>,
}

impl FaultLayer {
    /// Injects `injection`'s faults when they apply to this function's version
    /// (`AWS_LAMBDA_FUNCTION_VERSION`, `$LATEST` when unset); otherwise disabled.
    pub fn new(injection: FaultInjection) -> Self {
        Self::for_version(injection, &FunctionInfo::from_env().version)
    }

    /// Injects `injection`'s faults when they apply to the function version `version`;
    /// otherwise disabled.
    pub fn for_version(injection: FaultInjection, version: &str) -> Self {
        if !injection.applies_to(version) {
            return Self::disabled();
        }
        let latency_per_billion = match injection.latency.is_zero() {
            true => 0,
            false => per_billion(injection.latency_rate),
        };
        Self {
            faults: Some(Arc::new(Faults {
                error_per_billion: per_billion(injection.error_rate),
                latency_per_billion,
                version: version.to_owned(),
                injection,
                served: AtomicU64::new(0),
            })),
        }
    }

    /// A layer that injects nothing: each call goes straight to the service it wraps.
    pub fn disabled() -> Self {
        Self { faults: None }
    }

    /// Whether faults are injected.
    pub fn is_active(&self) -> bool {
        self.faults.is_some()
    }

    /// Writes the WARN line saying faults are injected, with the rates (nothing when
    /// disabled). `Keel::init` calls it once its log subscriber is installed.
    pub fn announce(&self) {
        if let Some(faults) = &self.faults {
            let injection = &faults.injection;
            tracing::warn!(
                "fault.error_rate" = injection.error_rate,
                "fault.latency_ms" = injection.latency.as_millis() as u64,
                "fault.latency_rate" = if injection.latency.is_zero() { 0.0 } else { injection.latency_rate },
                "fault.version" = %faults.version,
                "FAULT INJECTION ON: invocations of version {} fail ({}) or are delayed on purpose ({}); \
                 for canary replays only",
                faults.version,
                INJECTED_FAULT,
                injection.describe(),
            );
        }
    }
}

/// Logs at start what the switch does to the function version `version`: the WARN line when
/// it injects faults, an INFO line when faults are set for another version only.
pub(crate) fn announce(injection: &FaultInjection, version: &str) {
    let layer = FaultLayer::for_version(injection.clone(), version);
    if layer.is_active() {
        layer.announce();
    } else if injection.is_set() {
        tracing::info!(
            "fault.version" = injection.version.as_deref().unwrap_or_default(),
            "fault injection is set for another version ({}); this is version {version}: no fault injected",
            injection.describe(),
        );
    }
}

impl<S> Layer<S> for FaultLayer {
    type Service = FaultService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        FaultService {
            inner,
            faults: self.faults.clone(),
        }
    }
}

/// The service of [`FaultLayer`].
#[derive(Clone, Debug)]
pub struct FaultService<S> {
    inner: S,
    faults: Option<Arc<Faults>>,
}

impl<S, Req> Service<Req> for FaultService<S>
where
    S: Service<Req, Error = InvocationError> + Clone,
{
    type Response = S::Response;
    type Error = InvocationError;
    type Future = FaultFuture<S, Req, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        let Some(faults) = &self.faults else {
            return FaultFuture::handler(self.inner.call(request));
        };
        let (n, verdict) = faults.next();
        let error = verdict.fail.then(|| {
            InvocationError::from(InjectedFault {
                rate: faults.injection.error_rate,
                invocation: n,
            })
        });
        match (verdict.delay, error) {
            (None, None) => FaultFuture::handler(self.inner.call(request)),
            (None, Some(error)) => FaultFuture {
                state: State::Failed { error: Some(error) },
            },
            (Some(delay), error) => {
                tracing::debug!("fault.latency_ms" = delay.as_millis() as u64, "injected latency");
                // The handler is called after the delay: the ready service goes with the
                // future, a fresh clone takes its place (tower's rule).
                let next = match error {
                    Some(_) => None,
                    None => {
                        let ready = self.inner.clone();
                        Some((std::mem::replace(&mut self.inner, ready), request))
                    }
                };
                FaultFuture {
                    state: State::Delayed {
                        delayed: Box::pin(Delayed {
                            sleep: tokio::time::sleep(delay),
                            next,
                            error,
                        }),
                    },
                }
            }
        }
    }
}

pin_project! {
    /// The future of [`FaultService`]: the handler's, or an injected failure, after an
    /// injected delay when there is one.
    pub struct FaultFuture<S, Req, F> {
        #[pin]
        state: State<S, Req, F>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, Req, F> {
        Handler { #[pin] handler: F },
        Delayed { delayed: Pin<Box<Delayed<S, Req>>> },
        Failed { error: Option<InvocationError> },
    }
}

pin_project! {
    /// An invocation waiting out its injected delay (boxed: only delayed invocations pay for it).
    struct Delayed<S, Req> {
        #[pin]
        sleep: Sleep,
        // The service and request to call after the delay; `None` when the invocation fails.
        next: Option<(S, Req)>,
        error: Option<InvocationError>,
    }
}

impl<S, Req, F> FaultFuture<S, Req, F> {
    fn handler(handler: F) -> Self {
        Self {
            state: State::Handler { handler },
        }
    }
}

impl<S, Req, F, R> Future for FaultFuture<S, Req, F>
where
    S: Service<Req, Response = R, Error = InvocationError, Future = F>,
    F: Future<Output = Result<R, InvocationError>>,
{
    type Output = Result<R, InvocationError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            let handler = match this.state.as_mut().project() {
                StateProj::Handler { handler } => return handler.poll(cx),
                StateProj::Failed { error } => {
                    return Poll::Ready(Err(error.take().expect("FaultFuture polled after completion")))
                }
                StateProj::Delayed { delayed } => {
                    let delayed = delayed.as_mut().project();
                    if delayed.sleep.poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    match delayed.next.take() {
                        Some((mut service, request)) => service.call(request),
                        None => {
                            let error = delayed.error.take();
                            return Poll::Ready(Err(error.expect("FaultFuture polled after completion")));
                        }
                    }
                }
            };
            this.state.set(State::Handler { handler });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handler::TypedHandler;
    use crate::output::Output;
    use lambda_runtime::{service_fn, LambdaEvent};
    use serde_json::Value;
    use std::sync::atomic::AtomicU32;
    use tokio::time::Instant;
    use tower::ServiceExt;
    use tracing_subscriber::layer::SubscriberExt;

    fn from(vars: &[(&'static str, &str)]) -> Result<FaultInjection, ConfigError> {
        let vars: Vec<(&'static str, String)> = vars.iter().map(|(k, v)| (*k, v.to_string())).collect();
        FaultInjection::from_vars(move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        })
    }

    #[test]
    fn valid_variables_are_read() {
        assert_eq!(from(&[]).unwrap(), FaultInjection::new());
        assert!(!from(&[]).unwrap().is_set());
        let faults = from(&[
            ("KEEL_FAULT_ERROR_RATE", "0.1"),
            ("KEEL_FAULT_LATENCY_MS", "250"),
            ("KEEL_FAULT_LATENCY_RATE", " 0.5 "),
            ("KEEL_FAULT_VERSION", "7"),
        ])
        .unwrap();
        assert_eq!(
            faults,
            FaultInjection::new()
                .error_rate(0.1)
                .latency(Duration::from_millis(250))
                .latency_rate(0.5)
                .version("7")
        );
        // The latency rate is 1 unless set.
        let latency = from(&[("KEEL_FAULT_LATENCY_MS", "900000")]).unwrap();
        assert_eq!(latency.latency_rate, 1.0);
        assert_eq!(latency.latency, MAX_LATENCY);
        assert!(latency.applies_to("$LATEST") && latency.applies_to("3"));
        let latest = from(&[("KEEL_FAULT_ERROR_RATE", "1"), ("KEEL_FAULT_VERSION", "$LATEST")]).unwrap();
        assert!(latest.applies_to("$LATEST") && !latest.applies_to("1"));
        // Set to zero: valid, and off.
        let zero = from(&[("KEEL_FAULT_ERROR_RATE", "0"), ("KEEL_FAULT_LATENCY_MS", "0")]).unwrap();
        assert!(!zero.is_set());
        // Blank is unset.
        assert_eq!(
            from(&[("KEEL_FAULT_ERROR_RATE", "  ")]).unwrap(),
            FaultInjection::new()
        );
    }

    /// Variables set, the variable refused, what it should have been.
    type Refusal = (
        &'static [(&'static str, &'static str)],
        &'static str,
        &'static str,
    );

    #[test]
    fn malformed_variables_are_refused_by_name_and_value() {
        let cases: &[Refusal] = &[
            (
                &[("KEEL_FAULT_ERROR_RATE", "often")],
                "KEEL_FAULT_ERROR_RATE",
                "a number from 0 to 1",
            ),
            (
                &[("KEEL_FAULT_ERROR_RATE", "1.5")],
                "KEEL_FAULT_ERROR_RATE",
                "a number from 0 to 1",
            ),
            (
                &[("KEEL_FAULT_ERROR_RATE", "-0.1")],
                "KEEL_FAULT_ERROR_RATE",
                "a number from 0 to 1",
            ),
            (
                &[("KEEL_FAULT_ERROR_RATE", "NaN")],
                "KEEL_FAULT_ERROR_RATE",
                "a number from 0 to 1",
            ),
            (
                &[("KEEL_FAULT_ERROR_RATE", "10%")],
                "KEEL_FAULT_ERROR_RATE",
                "a number from 0 to 1",
            ),
            (
                &[("KEEL_FAULT_LATENCY_MS", "-5")],
                "KEEL_FAULT_LATENCY_MS",
                "a whole number of milliseconds from 0 to 900000",
            ),
            (
                &[("KEEL_FAULT_LATENCY_MS", "1.5")],
                "KEEL_FAULT_LATENCY_MS",
                "a whole number of milliseconds",
            ),
            (
                &[("KEEL_FAULT_LATENCY_MS", "200ms")],
                "KEEL_FAULT_LATENCY_MS",
                "a whole number of milliseconds",
            ),
            (
                &[("KEEL_FAULT_LATENCY_MS", "900001")],
                "KEEL_FAULT_LATENCY_MS",
                "from 0 to 900000",
            ),
            (
                &[("KEEL_FAULT_LATENCY_MS", "100"), ("KEEL_FAULT_LATENCY_RATE", "2")],
                "KEEL_FAULT_LATENCY_RATE",
                "a number from 0 to 1",
            ),
            (
                &[
                    ("KEEL_FAULT_ERROR_RATE", "0.1"),
                    ("KEEL_FAULT_LATENCY_RATE", "0.5"),
                ],
                "KEEL_FAULT_LATENCY_RATE",
                "KEEL_FAULT_LATENCY_MS to be set with it",
            ),
            (
                &[("KEEL_FAULT_VERSION", "7")],
                "KEEL_FAULT_VERSION",
                "KEEL_FAULT_ERROR_RATE or KEEL_FAULT_LATENCY_MS to be set with it",
            ),
            (
                &[("KEEL_FAULT_ERROR_RATE", "0.1"), ("KEEL_FAULT_VERSION", "live")],
                "KEEL_FAULT_VERSION",
                "a published version number (1, 2, …) or $LATEST",
            ),
        ];
        for (vars, variable, expected) in cases {
            let error = from(vars).unwrap_err();
            let (name, value) = vars.iter().find(|(k, _)| k == variable).unwrap();
            match &error {
                ConfigError::InvalidVariable {
                    variable: refused,
                    value: held,
                    ..
                } => {
                    assert_eq!((refused, held.as_str()), (name, *value), "{vars:?}")
                }
                other => panic!("{vars:?}: {other:?}"),
            }
            let message = error.to_string();
            assert!(
                message.starts_with(&format!("{name}=\"{value}\" is not valid: expected")),
                "{message}"
            );
            assert!(message.contains(expected), "{vars:?}: {message}");
        }
    }

    #[test]
    fn builder_rates_are_clamped() {
        let faults = FaultInjection::new().error_rate(1.5).latency_rate(f64::NAN);
        assert_eq!((faults.error_rate, faults.latency_rate), (1.0, 0.0));
        assert_eq!(FaultInjection::new().error_rate(-1.0), FaultInjection::new());
    }

    #[test]
    fn choices_are_evenly_spread() {
        let failures = |rate: f64, calls: u64| {
            let p = per_billion(rate);
            (1..=calls).filter(|n| chosen(*n, p)).collect::<Vec<_>>()
        };
        assert_eq!(failures(0.1, 100), vec![10, 20, 30, 40, 50, 60, 70, 80, 90, 100]);
        assert!(failures(0.0, 1000).is_empty());
        assert_eq!(failures(1.0, 100).len(), 100);
        assert_eq!(failures(0.25, 12), vec![4, 8, 12]);
        assert_eq!(failures(0.5, 6), vec![2, 4, 6]);
        // Any first N calls hold floor(N × rate) of them, in every window of 1/rate calls one.
        for rate in [0.01, 0.05, 0.1, 0.3, 0.7, 0.9, 0.999] {
            for calls in [1, 7, 10, 99, 100, 1000, 12345] {
                let expected =
                    (u128::from(calls) * u128::from(per_billion(rate)) / u128::from(BILLION)) as usize;
                assert_eq!(failures(rate, calls).len(), expected, "{rate} over {calls}");
            }
        }
        assert_eq!(failures(0.3, 1000).len(), 300);
        assert_eq!(failures(0.7, 1000).len(), 700);
    }

    /// A handler counting its runs, behind the fault layer, as Keel stacks it.
    fn stack(
        layer: &FaultLayer,
        runs: &Arc<AtomicU32>,
    ) -> impl Service<LambdaEvent<crate::RawEvent>, Response = u32, Error = InvocationError> + Clone {
        let runs = runs.clone();
        let handler = service_fn(move |_: LambdaEvent<Value>| {
            let runs = runs.clone();
            async move { Ok::<_, lambda_runtime::Error>(runs.fetch_add(1, Ordering::SeqCst) + 1) }
        });
        layer.layer(TypedHandler::new(handler))
    }

    fn event() -> LambdaEvent<crate::RawEvent> {
        LambdaEvent::new(
            serde_json::value::to_raw_value(&serde_json::json!({"seats": 2})).unwrap(),
            Default::default(),
        )
    }

    async fn call<S>(service: &mut S) -> Result<u32, InvocationError>
    where
        S: Service<LambdaEvent<crate::RawEvent>, Response = u32, Error = InvocationError>,
    {
        service.ready().await?.call(event()).await
    }

    #[tokio::test]
    async fn a_rate_of_one_in_ten_fails_exactly_ten_of_a_hundred() {
        for (rate, expected) in [(0.1, 10), (0.0, 0), (1.0, 100), (0.05, 5)] {
            let runs = Arc::new(AtomicU32::new(0));
            let layer = FaultLayer::for_version(FaultInjection::new().error_rate(rate), "7");
            assert_eq!(layer.is_active(), rate > 0.0);
            let mut service = stack(&layer, &runs);
            let mut failed = Vec::new();
            for n in 1..=100 {
                // Clones share the numbering, as run_concurrent's do.
                let mut clone = service.clone();
                let target = if n % 2 == 0 { &mut service } else { &mut clone };
                if let Err(error) = call(target).await {
                    assert_eq!(error.error_type(), INJECTED_FAULT);
                    failed.push(n);
                }
            }
            assert_eq!(failed.len(), expected, "rate {rate}");
            assert_eq!(
                usize::try_from(runs.load(Ordering::SeqCst)).unwrap(),
                100 - expected,
                "a failed invocation skips the handler"
            );
            if rate == 0.1 {
                assert_eq!(failed, vec![10, 20, 30, 40, 50, 60, 70, 80, 90, 100]);
            }
        }
    }

    #[tokio::test]
    async fn the_injected_error_has_its_type_message_and_class() {
        let runs = Arc::new(AtomicU32::new(0));
        let layer = FaultLayer::for_version(FaultInjection::new().error_rate(1.0), "$LATEST");
        let error = call(&mut stack(&layer, &runs)).await.unwrap_err();
        assert_eq!(error.error_type(), "Keel.InjectedFault");
        assert_eq!(error.to_string(), "injected fault (KEEL_FAULT_ERROR_RATE=1)");
        let fault = error.inner().downcast_ref::<InjectedFault>().unwrap();
        assert_eq!(fault.invocation, 1);
        let classified = crate::classify::classify(&error, &[]);
        assert_eq!(classified.class, ErrorClass::Transient);
        assert!(!classified.back_pressure, "routed like any failure");
        let diagnostic: lambda_runtime::Diagnostic = error.into();
        assert_eq!(diagnostic.error_type, "Keel.InjectedFault");
        assert_eq!(
            diagnostic.error_message,
            "injected fault (KEEL_FAULT_ERROR_RATE=1)"
        );

        let layer = FaultLayer::for_version(FaultInjection::new().error_rate(0.1), "$LATEST");
        let mut service = stack(&layer, &runs);
        for _ in 0..9 {
            call(&mut service).await.unwrap();
        }
        let error = call(&mut service).await.unwrap_err();
        assert_eq!(error.to_string(), "injected fault (KEEL_FAULT_ERROR_RATE=0.1)");
    }

    #[tokio::test]
    async fn another_version_gets_no_fault() {
        let faults = FaultInjection::new()
            .error_rate(1.0)
            .latency(Duration::from_secs(5))
            .version("8");
        assert!(faults.applies_to("8"));
        for version in ["7", "$LATEST", "80"] {
            assert!(!faults.applies_to(version));
            let layer = FaultLayer::for_version(faults.clone(), version);
            assert!(!layer.is_active(), "{version}");
            let runs = Arc::new(AtomicU32::new(0));
            let mut service = stack(&layer, &runs);
            let started = Instant::now();
            for _ in 0..10 {
                call(&mut service).await.unwrap();
            }
            assert!(started.elapsed() < Duration::from_secs(1));
            assert_eq!(runs.load(Ordering::SeqCst), 10);
        }
        assert!(FaultLayer::for_version(faults, "8").is_active());
    }

    #[tokio::test]
    async fn off_is_a_pass_through() {
        assert!(!FaultLayer::new(FaultInjection::new()).is_active());
        assert!(!FaultLayer::default().is_active());
        // A latency with rate 0, or an error rate of 0: nothing to inject.
        let idle = FaultInjection::new()
            .latency(Duration::from_secs(1))
            .latency_rate(0.0);
        assert!(!idle.is_set() && !FaultLayer::for_version(idle, "1").is_active());
        let runs = Arc::new(AtomicU32::new(0));
        let mut service = stack(&FaultLayer::disabled(), &runs);
        for n in 1..=5 {
            assert_eq!(call(&mut service).await.unwrap(), n);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn latency_is_added_before_the_handler_runs() {
        let runs = Arc::new(AtomicU32::new(0));
        let faults = FaultInjection::new().latency(Duration::from_millis(200));
        let mut service = stack(&FaultLayer::for_version(faults, "1"), &runs);
        let started = Instant::now();
        let mut pending = Box::pin(async { call(&mut service).await });
        // Not run before its delay is over.
        assert!(futures_poll_once(pending.as_mut()).await.is_none());
        assert_eq!(runs.load(Ordering::SeqCst), 0);
        assert_eq!(pending.await.unwrap(), 1);
        assert_eq!(started.elapsed(), Duration::from_millis(200));

        // Half the invocations delayed, one in four failing after its delay.
        let faults = FaultInjection::new()
            .latency(Duration::from_millis(100))
            .latency_rate(0.5)
            .error_rate(0.25);
        let runs = Arc::new(AtomicU32::new(0));
        let mut service = stack(&FaultLayer::for_version(faults, "1"), &runs);
        let mut outcomes = Vec::new();
        for _ in 0..8 {
            let started = Instant::now();
            let result = call(&mut service).await;
            outcomes.push((started.elapsed().as_millis(), result.is_ok()));
        }
        assert_eq!(
            outcomes,
            vec![
                (0, true),
                (100, true),
                (0, true),
                (100, false),
                (0, true),
                (100, true),
                (0, true),
                (100, false)
            ]
        );
        assert_eq!(runs.load(Ordering::SeqCst), 6);
    }

    /// Polls `future` once: its output if it was ready.
    async fn futures_poll_once<F: Future + Unpin>(mut future: F) -> Option<F::Output> {
        std::future::poll_fn(|cx| {
            Poll::Ready(match Pin::new(&mut future).poll(cx) {
                Poll::Ready(output) => Some(output),
                Poll::Pending => None,
            })
        })
        .await
    }

    #[test]
    fn the_start_line_is_a_warning_with_the_rates() {
        let (output, lines) = Output::memory();
        let log = crate::logging::LogConfig::new("svc").output(output);
        let subscriber = tracing_subscriber::registry().with(crate::logging::StructuredLogLayer::new(log));
        tracing::subscriber::with_default(subscriber, || {
            let faults = FaultInjection::new()
                .error_rate(0.1)
                .latency(Duration::from_millis(250))
                .version("7");
            announce(&faults, "7");
            announce(&faults, "6");
            announce(&FaultInjection::new(), "7");
        });
        let lines: Vec<Value> = lines
            .lines()
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{lines:?}");
        let on = &lines[0];
        assert_eq!(on["level"], "WARN");
        let message = on["message"].as_str().unwrap();
        assert!(message.starts_with("FAULT INJECTION ON"), "{message}");
        for expected in [
            "Keel.InjectedFault",
            "KEEL_FAULT_ERROR_RATE=0.1",
            "KEEL_FAULT_LATENCY_MS=250",
            "KEEL_FAULT_LATENCY_RATE=1",
            "KEEL_FAULT_VERSION=7",
        ] {
            assert!(message.contains(expected), "{expected} not in {message}");
        }
        assert_eq!(on["fault.error_rate"], 0.1);
        assert_eq!(on["fault.latency_ms"], 250);
        assert_eq!(on["fault.latency_rate"], 1.0);
        assert_eq!(on["fault.version"], "7");
        let other = &lines[1];
        assert_eq!(other["level"], "INFO");
        assert!(
            other["message"].as_str().unwrap().contains("no fault injected"),
            "{other}"
        );
    }
}
