//! The Telemetry API listener: platform records become metrics, timeouts and crashes become
//! routed envelopes carrying the last lines the function logged for that request.
//!
//! Lambda POSTs JSON arrays of `{time, type, record}` (schema `2022-12-13`), buffered and in no
//! guaranteed order. Records are read one by one, leniently: a record of an unknown type (such
//! as SnapStart's `platform.restore*`) or of an unexpected shape is skipped and the rest of the
//! batch is still read; a body that is not a JSON array is refused with a clear log line, and
//! the listener keeps running. State is kept per request id, bounded: a failure is routed once,
//! whichever of `platform.runtimeDone` and `platform.report` reports it first, with the lines
//! that arrived before it (those in the same batch included).
//!
//! A line belongs to the request it names (Keel's JSON lines carry `function_request_id`).
//! When the environment runs one invocation at a time (`AWS_LAMBDA_MAX_CONCURRENCY` unset or
//! 1), a line that names none (a panic's message, a crash's last words) belongs to the
//! invocation under way: the one whose `platform.start` came last and whose
//! `platform.runtimeDone` has not come yet.

use std::collections::VecDeque;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use hyper::{Method, StatusCode};
use keel_runtime::metrics::{catalog, MetricsLayer};
use keel_runtime::routing::{ErrorClass, ErrorRouting, Source};
use lru::LruCache;
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::http::Answer;
use crate::relay::Queue;

/// Requests whose state is kept (the oldest forgotten first).
const REQUESTS_KEPT: usize = 256;

/// Log lines kept per request for its envelope, by default.
pub const DEFAULT_LINES_PER_REQUEST: usize = 20;

/// What the extension remembers of one request.
#[derive(Debug, Default)]
struct RequestState {
    /// The newest lines the function logged for it.
    lines: VecDeque<Value>,
    /// Its failure has been routed.
    routed: bool,
    /// The runtime has finished it (`platform.runtimeDone` or `platform.report` seen).
    runtime_done: bool,
}

/// The requests remembered, and the invocation under way.
struct Requests {
    by_id: LruCache<String, RequestState>,
    /// The request between its `platform.start` and its `platform.runtimeDone`, when the
    /// environment runs one invocation at a time.
    current: Option<String>,
}

impl Requests {
    /// The state of `request_id`, remembered from now on if it was not.
    fn state(&mut self, request_id: &str) -> &mut RequestState {
        self.by_id
            .get_or_insert_mut_ref(request_id, RequestState::default)
    }
}

/// A failure seen in a platform record.
struct Failure {
    request_id: String,
    class: ErrorClass,
    error_type: String,
    message: String,
}

/// Reads telemetry batches; see the [module docs](self).
pub struct Telemetry {
    requests: Mutex<Requests>,
    lines_per_request: usize,
    one_at_a_time: bool,
    routing: Arc<ErrorRouting>,
    queue: Queue,
    metrics: MetricsLayer,
    /// Bumped after each batch is read: waiters look again.
    batches: watch::Sender<u64>,
}

/// What one batch held.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Read {
    /// Records read.
    pub records: usize,
    /// Records skipped (unknown type or unexpected shape).
    pub skipped: usize,
    /// Failures routed.
    pub routed: usize,
}

impl Telemetry {
    /// A reader routing failures through `queue` (envelopes built by `routing`) and writing
    /// metrics with `metrics`.
    pub fn new(routing: Arc<ErrorRouting>, queue: Queue, metrics: MetricsLayer) -> Self {
        Self {
            requests: Mutex::new(Requests {
                by_id: LruCache::new(NonZeroUsize::new(REQUESTS_KEPT).unwrap_or(NonZeroUsize::MIN)),
                current: None,
            }),
            lines_per_request: DEFAULT_LINES_PER_REQUEST,
            one_at_a_time: true,
            routing,
            queue,
            metrics,
            batches: watch::Sender::new(0),
        }
    }

    /// Keeps `lines` log lines per request (default [`DEFAULT_LINES_PER_REQUEST`]).
    pub fn lines_per_request(mut self, lines: usize) -> Self {
        self.lines_per_request = lines;
        self
    }

    /// Whether the environment runs one invocation at a time (the default; Lambda's
    /// `AWS_LAMBDA_MAX_CONCURRENCY` unset or 1): then the lines that name no request belong to
    /// the invocation under way. With more at once, only the lines that name their request are
    /// kept.
    pub fn one_invocation_at_a_time(mut self, one: bool) -> Self {
        self.one_at_a_time = one;
        self
    }

    /// The listener's answer to a POSTed batch: `200` once read (bad records skipped), `400`
    /// when the body is not a JSON array.
    pub async fn answer(&self, method: Method, body: &[u8]) -> Answer {
        if method != Method::POST {
            return (StatusCode::METHOD_NOT_ALLOWED, "POST telemetry batches".into());
        }
        match self.read(body).await {
            Ok(read) => (
                StatusCode::OK,
                format!("{} records read, {} skipped", read.records, read.skipped),
            ),
            Err(reason) => {
                tracing::warn!(reason = %reason, bytes = body.len(), "a telemetry batch was refused");
                (StatusCode::BAD_REQUEST, reason)
            }
        }
    }

    /// Reads one batch.
    pub async fn read(&self, body: &[u8]) -> Result<Read, String> {
        let items: Vec<Value> = serde_json::from_slice(body)
            .map_err(|e| format!("the telemetry batch is not a JSON array: {e}"))?;
        let (read, failures) = self.metrics.collect(None, async { self.records(&items) }).await;
        let mut routed = 0;
        let mut finished = Vec::with_capacity(failures.len());
        for failure in failures {
            finished.push(failure.request_id.clone());
            routed += usize::from(self.route(failure));
        }
        // Only now are failed requests finished: a wait that ends on them also waits for their
        // envelopes.
        if !finished.is_empty() {
            let mut requests = self.lock();
            for request_id in finished {
                requests.state(&request_id).runtime_done = true;
            }
        }
        self.batches.send_modify(|n| *n += 1);
        Ok(Read { routed, ..read })
    }

    /// Waits until telemetry says the runtime has finished request `request_id` (its
    /// `platform.runtimeDone` or `platform.report`), or `deadline`; whether it has.
    pub async fn runtime_done(&self, request_id: &str, deadline: Instant) -> bool {
        let mut batches = self.batches.subscribe();
        let done = batches.wait_for(|_| {
            let mut requests = self.lock();
            requests
                .by_id
                .get(request_id)
                .is_some_and(|state| state.runtime_done)
        });
        let done = tokio::time::timeout_at(deadline.into(), done).await;
        matches!(done, Ok(Ok(_)))
    }

    fn lock(&self) -> MutexGuard<'_, Requests> {
        self.requests.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Applies each record; returns the failures to route.
    fn records(&self, items: &[Value]) -> (Read, Vec<Failure>) {
        let mut read = Read::default();
        let mut failures = Vec::new();
        for item in items {
            let record = &item["record"];
            let known = match item["type"].as_str() {
                Some("function") => self.function_line(record),
                Some("platform.start") => self.started(record),
                Some("platform.runtimeDone") => self.done(record, false, &mut failures),
                Some("platform.report") => self.done(record, true, &mut failures),
                Some("platform.logsDropped") => dropped(record),
                Some(other) if other.starts_with("platform.") || other == "extension" => true,
                _ => false,
            };
            read.records += 1;
            if !known {
                read.skipped += 1;
                tracing::debug!(record_type = ?item["type"], "a telemetry record was skipped");
            }
        }
        (read, failures)
    }

    /// A line the function logged: kept for the request it names (Keel's JSON lines carry
    /// `function_request_id`), or else for the invocation under way (one at a time).
    fn function_line(&self, record: &Value) -> bool {
        let line = match record {
            Value::String(text) => serde_json::from_str(text).unwrap_or_else(|_| record.clone()),
            other => other.clone(),
        };
        let named = ["function_request_id", "requestId", "AWSRequestId"]
            .iter()
            .find_map(|field| line[field].as_str());
        let mut guard = self.lock();
        let requests = &mut *guard;
        let request_id = match (named, &requests.current) {
            (Some(request_id), _) => request_id,
            (None, Some(current)) if self.one_at_a_time => current,
            (None, _) => return true,
        };
        let state = requests
            .by_id
            .get_or_insert_mut_ref(request_id, RequestState::default);
        if state.lines.len() == self.lines_per_request {
            state.lines.pop_front();
        }
        if self.lines_per_request > 0 {
            state.lines.push_back(line);
        }
        true
    }

    /// `platform.start`: the invocation under way, when they come one at a time.
    fn started(&self, record: &Value) -> bool {
        let Some(request_id) = record["requestId"].as_str() else {
            return false;
        };
        if self.one_at_a_time {
            self.lock().current = Some(request_id.to_owned());
        }
        true
    }

    /// `platform.runtimeDone` or `platform.report`: metrics from the report, a failure from a
    /// status other than success.
    fn done(&self, record: &Value, report: bool, failures: &mut Vec<Failure>) -> bool {
        let Some(request_id) = record["requestId"].as_str() else {
            return false;
        };
        let metrics = &record["metrics"];
        if report {
            let record_ms = |def: &'static keel_runtime::metrics::catalog::MetricDef, field: &str| {
                if let Some(value) = metrics[field].as_f64() {
                    def.record_with(value, &[]);
                }
            };
            record_ms(&catalog::INVOCATION_DURATION_MS, "durationMs");
            record_ms(&catalog::BILLED_DURATION_MS, "billedDurationMs");
            record_ms(&catalog::MAX_MEMORY_USED_MB, "maxMemoryUsedMB");
            record_ms(&catalog::INIT_DURATION_MS, "initDurationMs");
        }
        let Some(status) = record["status"].as_str() else {
            return false;
        };
        let mut requests = self.lock();
        if requests.current.as_deref() == Some(request_id) {
            requests.current = None;
        }
        let state = requests.state(request_id);
        let (class, metric) = match status {
            "timeout" => (ErrorClass::Timeout, &catalog::INVOCATION_TIMEOUT),
            "failure" => (ErrorClass::Crash, &catalog::RUNTIME_CRASH),
            // `success`, and `error` (the function reported its own error, and routed it).
            _ => {
                state.runtime_done = true;
                return true;
            }
        };
        if state.routed || failures.iter().any(|f| f.request_id == request_id) {
            return true;
        }
        metric.increment(1);
        let duration = metrics["durationMs"]
            .as_f64()
            .map(|ms| format!(" after {ms} ms"))
            .unwrap_or_default();
        let (error_type, message) = match class {
            ErrorClass::Timeout => (
                "Runtime.Timeout".to_owned(),
                format!("the invocation timed out{duration}"),
            ),
            _ => (
                record["errorType"]
                    .as_str()
                    .unwrap_or("Runtime.Failure")
                    .to_owned(),
                format!("the runtime failed{duration}"),
            ),
        };
        failures.push(Failure {
            request_id: request_id.to_owned(),
            class,
            error_type,
            message,
        });
        true
    }

    /// Builds and queues the envelope of `failure` (once per request); whether it was queued.
    fn route(&self, failure: Failure) -> bool {
        let lines = {
            let mut requests = self.lock();
            let state = requests.state(&failure.request_id);
            if state.routed {
                return false;
            }
            state.routed = true;
            state.lines.iter().cloned().collect::<Vec<_>>()
        };
        let envelope = self.routing.report(
            Source::Extension,
            &failure.request_id,
            &failure.error_type,
            failure.message,
            failure.class,
            json!({"last_log_lines": lines}),
        );
        if let Err(refused) = self.queue.push(envelope.clone()) {
            tracing::warn!(reason = %refused, "the relay's queue refused the extension's own envelope; it is logged");
            self.routing.write_to_log(&envelope);
        }
        true
    }
}

/// `platform.logsDropped`: Lambda dropped records before the extension read them.
fn dropped(record: &Value) -> bool {
    let records = record["droppedRecords"].as_u64().unwrap_or(0);
    tracing::warn!(
        dropped_records = records,
        dropped_bytes = record["droppedBytes"].as_u64().unwrap_or(0),
        reason = record["reason"].as_str().unwrap_or_default(),
        "Lambda dropped telemetry records before the extension could read them"
    );
    catalog::TELEMETRY_DROPPED.increment(records);
    true
}
