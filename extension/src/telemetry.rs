//! The Telemetry API listener: platform records become metrics, timeouts and crashes become
//! routed envelopes carrying the last lines the function logged for that request.
//!
//! Lambda POSTs JSON arrays of `{time, type, record}` (schema `2022-12-13`), buffered and in no
//! guaranteed order. Records are read one by one, leniently: each is read as its `type` and its
//! `record` left unread, then the record as the typed shape of that type (`platform.start`,
//! `platform.runtimeDone`, `platform.report`, `platform.logsDropped`; a `function` line is kept
//! as JSON text). A record of an unknown type (such as SnapStart's `platform.restore*`) or of an
//! unexpected shape (not an object, `requestId` or `status` missing or not a string) is skipped
//! whole and the rest of the batch is still read; within a record of the right shape, an
//! optional field of another type (a metric that is not a number, an `errorType` that is not a
//! string) reads as absent. A body that is not a JSON array is refused with a clear log line,
//! and the listener keeps running. A failure is routed once, whichever of `platform.runtimeDone`
//! and `platform.report` reports it first, with the lines that arrived before it (those in the
//! same batch included).
//!
//! A line belongs to the request it names (Keel's JSON lines carry `function_request_id`).
//! When the environment runs one invocation at a time (`AWS_LAMBDA_MAX_CONCURRENCY` unset or
//! 1), a line that names none (a panic's message, a crash's last words) belongs to the
//! invocation under way: the one whose `platform.start` came last and whose
//! `platform.runtimeDone` has not come yet.
//!
//! Memory stays bounded whatever the function prints: a batch is read record by record (at
//! most [`MAX_BATCH_BYTES`]); a line is kept as JSON text, cut past [`MAX_LINE_BYTES`] (under
//! `{"keel_truncated": true, "bytes": <its size>, "text": <its start>}`); a request keeps its
//! newest lines within a count and 32 KiB; a request's lines are dropped as soon as it is over
//! (routed, or ended without a failure); and at most 256 requests are remembered.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use hyper::{Method, StatusCode};
use keel_runtime::classify::ErrorClass;
use keel_runtime::metrics::{catalog, MetricsLayer};
use keel_runtime::routing::{ErrorRouting, Source};
use lru::LruCache;
use serde::{Deserialize, Deserializer};
use serde_json::json;
use serde_json::value::RawValue;
use tokio::sync::watch;

use crate::http::Answer;
use crate::relay::Queue;

/// The largest batch the subscription asks Lambda for (`maxBytes`): 256 KiB of records.
pub const SUBSCRIBED_BATCH_BYTES: usize = 256 * 1024;

/// The largest batch the listener reads (`413` past it): four times what the subscription asks
/// for ([`SUBSCRIBED_BATCH_BYTES`] counts the records alone, not the framing Lambda adds around
/// each), so that a real batch is never refused.
pub const MAX_BATCH_BYTES: usize = 4 * SUBSCRIBED_BATCH_BYTES;

/// What the Telemetry API listener takes at once: a batch per request, two connections (Lambda
/// delivers one batch at a time).
pub const LISTENER: crate::http::Caps = crate::http::Caps {
    body_bytes: MAX_BATCH_BYTES,
    connections: 2,
};

/// Requests whose state is kept (the oldest forgotten first).
const REQUESTS_KEPT: usize = 256;

/// Log lines kept per request for its envelope, by default.
pub const DEFAULT_LINES_PER_REQUEST: usize = 20;

/// The longest line kept whole, as JSON text; a longer one keeps its start under a marker.
pub const MAX_LINE_BYTES: usize = 8 * 1024;

/// The lines kept for one request, as JSON text, at most: the oldest go first. With
/// [`REQUESTS_KEPT`], this bounds the lines kept to 8 MiB.
const MAX_LINE_BYTES_PER_REQUEST: usize = 32 * 1024;

/// What the extension remembers of one request.
#[derive(Debug, Default)]
struct RequestState {
    /// The newest lines the function logged for it, as JSON.
    lines: VecDeque<Box<RawValue>>,
    /// Their length, added up.
    line_bytes: usize,
    /// Its failure has been routed.
    routed: bool,
    /// The runtime has finished it (`platform.runtimeDone` or `platform.report` seen) and its
    /// failure, if any, is routed: its lines are no longer needed.
    runtime_done: bool,
}

impl RequestState {
    /// Keeps `line`, the newest of at most `max_lines`, dropping the oldest past the caps.
    fn keep(&mut self, line: Box<RawValue>, max_lines: usize) {
        if self.runtime_done || max_lines == 0 {
            return;
        }
        let bytes = line.get().len();
        while !self.lines.is_empty()
            && (self.lines.len() >= max_lines || self.line_bytes + bytes > MAX_LINE_BYTES_PER_REQUEST)
        {
            if let Some(oldest) = self.lines.pop_front() {
                self.line_bytes -= oldest.get().len();
            }
        }
        self.line_bytes += bytes;
        self.lines.push_back(line);
    }

    /// Its lines, taken away.
    fn take_lines(&mut self) -> VecDeque<Box<RawValue>> {
        self.line_bytes = 0;
        std::mem::take(&mut self.lines)
    }

    /// It is over: its lines are dropped, and later ones are not kept.
    fn finish(&mut self) {
        self.runtime_done = true;
        self.take_lines();
    }
}

/// The requests remembered, and the invocation under way.
#[derive(Debug)]
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

/// The failures a batch reports, each request once.
#[derive(Default)]
struct Failures {
    found: Vec<Failure>,
    seen: std::collections::HashSet<String>,
}

/// A failure seen in a platform record.
struct Failure {
    request_id: String,
    class: ErrorClass,
    error_type: String,
    message: String,
}

/// Reads telemetry batches; see the [module docs](self).
#[derive(Debug)]
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

/// One record of a batch, its `record` left unread until its type is known.
#[derive(Deserialize)]
struct Item<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    record: Option<&'a RawValue>,
}

/// The record of `platform.start`: the fields read.
#[derive(Deserialize)]
struct Start<'a> {
    /// The invocation starting.
    #[serde(rename = "requestId", borrow)]
    request_id: Cow<'a, str>,
}

/// How the runtime finished an invocation: the `status` of `platform.runtimeDone` and
/// `platform.report`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Status {
    /// The function answered.
    Success,
    /// The function answered with an error it reported (and routed) itself.
    Error,
    /// The runtime failed: it crashed or exited.
    Failure,
    /// The invocation ran out of time.
    Timeout,
    /// A status not listed above: read as the end of the invocation, without a failure.
    #[serde(other)]
    Other,
}

/// The record of `platform.runtimeDone` and `platform.report`: the fields read.
#[derive(Deserialize)]
struct Done<'a> {
    /// The invocation finished.
    #[serde(rename = "requestId", borrow)]
    request_id: Cow<'a, str>,
    /// How it finished.
    status: Status,
    /// What failed, on a failure (`Runtime.ExitError`, ...).
    #[serde(rename = "errorType", default)]
    error_type: Lenient<String>,
    /// Its metrics; anything but an object reads as none.
    #[serde(default, deserialize_with = "lenient_object")]
    metrics: Metrics,
}

/// The `metrics` of `platform.runtimeDone` and `platform.report`: the fields read, each kept
/// when it is a number. (`platform.runtimeDone` carries `durationMs` and `producedBytes`,
/// `platform.report` the rest.)
#[derive(Default, Deserialize)]
struct Metrics {
    #[serde(rename = "durationMs", default)]
    duration_ms: Lenient<f64>,
    #[serde(rename = "billedDurationMs", default)]
    billed_duration_ms: Lenient<f64>,
    #[serde(rename = "maxMemoryUsedMB", default)]
    max_memory_used_mb: Lenient<f64>,
    /// Present on a cold start's report only.
    #[serde(rename = "initDurationMs", default)]
    init_duration_ms: Lenient<f64>,
}

/// The record of `platform.logsDropped`: the fields read, each kept when it is of its type.
#[derive(Default, Deserialize)]
struct LogsDropped {
    #[serde(rename = "droppedRecords", default)]
    dropped_records: Lenient<u64>,
    #[serde(rename = "droppedBytes", default)]
    dropped_bytes: Lenient<u64>,
    #[serde(default)]
    reason: Lenient<String>,
}

/// The fields of a JSON line that name its request (the first that is a string wins).
#[derive(Deserialize)]
struct Named {
    #[serde(default)]
    function_request_id: Lenient<String>,
    #[serde(rename = "requestId", default)]
    request_id: Lenient<String>,
    #[serde(rename = "AWSRequestId", default)]
    aws_request_id: Lenient<String>,
}

impl Named {
    fn request_id(self) -> Option<String> {
        [self.function_request_id, self.request_id, self.aws_request_id]
            .into_iter()
            .find_map(|id| id.0)
    }
}

/// An optional field read leniently: a `T` when it holds one; absent when it holds anything
/// else (another type, `null`) or, with `#[serde(default)]`, is missing.
///
/// It reads the field as raw JSON first, so it only works under `serde_json`.
#[derive(Debug)]
struct Lenient<T>(Option<T>);

impl<T> Default for Lenient<T> {
    fn default() -> Self {
        Self(None)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Lenient<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = <&'de RawValue>::deserialize(deserializer)?;
        Ok(Self(serde_json::from_str(raw.get()).ok()))
    }
}

/// A field read with [`object`], its default when it does not fit.
fn lenient_object<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    let raw = <&'de RawValue>::deserialize(deserializer)?;
    Ok(object(raw).unwrap_or_default())
}

/// `raw` read as a `T` when it is a JSON object of that shape. (A serde struct also reads a
/// JSON array, field by field in order: a record is never read that way.)
fn object<'a, T: Deserialize<'a>>(raw: &'a RawValue) -> Option<T> {
    let json = raw.get();
    if !json.trim_start().starts_with('{') {
        return None;
    }
    serde_json::from_str(json).ok()
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
    #[must_use]
    pub fn lines_per_request(mut self, lines: usize) -> Self {
        self.lines_per_request = lines;
        self
    }

    /// Whether the environment runs one invocation at a time (the default; Lambda's
    /// `AWS_LAMBDA_MAX_CONCURRENCY` unset or 1): then the lines that name no request belong to
    /// the invocation under way. With more at once, only the lines that name their request are
    /// kept.
    #[must_use]
    pub fn one_invocation_at_a_time(mut self, one: bool) -> Self {
        self.one_at_a_time = one;
        self
    }

    /// The listener's answer to a POSTed batch: `200` once read (bad records skipped), `400`
    /// when the body is not a JSON array. (The listener answers `413` to a batch over
    /// [`MAX_BATCH_BYTES`].)
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
        // Each record is read on its own: the batch is never held as a tree of values.
        let items: Vec<&RawValue> = serde_json::from_slice(body)
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
                requests.state(&request_id).finish();
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
    fn records(&self, items: &[&RawValue]) -> (Read, Vec<Failure>) {
        let mut read = Read::default();
        let mut failures = Failures::default();
        for item in items {
            let item = serde_json::from_str::<Item<'_>>(item.get()).ok();
            let known = item.as_ref().is_some_and(|item| self.record(item, &mut failures));
            read.records += 1;
            if !known {
                read.skipped += 1;
                let record_type = item.as_ref().and_then(|item| item.kind.as_deref());
                tracing::debug!(record_type = ?record_type, "a telemetry record was skipped");
            }
        }
        (read, failures.found)
    }

    /// Applies one record; whether it was of a known type and shape.
    fn record(&self, item: &Item<'_>, failures: &mut Failures) -> bool {
        let Some(kind) = item.kind.as_deref() else {
            return false;
        };
        let record = item.record;
        match kind {
            "function" => record.is_some_and(|record| self.function_line(record)),
            "platform.start" => record
                .and_then(object::<Start<'_>>)
                .map(|start| self.started(&start))
                .is_some(),
            "platform.runtimeDone" => record
                .and_then(object::<Done<'_>>)
                .map(|done| self.done(&done, false, failures))
                .is_some(),
            "platform.report" => record
                .and_then(object::<Done<'_>>)
                .map(|done| self.done(&done, true, failures))
                .is_some(),
            // Any record of this type is read: its fields, when they are not what they should
            // be, count as zero.
            "platform.logsDropped" => record
                .map(|record| dropped(&object::<LogsDropped>(record).unwrap_or_default()))
                .is_some(),
            other => other.starts_with("platform.") || other == "extension",
        }
    }

    /// A line the function logged: kept for the request it names, or else for the invocation
    /// under way (one at a time).
    fn function_line(&self, record: &RawValue) -> bool {
        let Some((request_id, line)) = line(record) else {
            return false;
        };
        let mut guard = self.lock();
        let requests = &mut *guard;
        let request_id = match (&request_id, &requests.current) {
            (Some(request_id), _) => request_id,
            (None, Some(current)) if self.one_at_a_time => current,
            (None, _) => return true,
        };
        let state = requests
            .by_id
            .get_or_insert_mut_ref(request_id, RequestState::default);
        state.keep(line, self.lines_per_request);
        true
    }

    /// `platform.start`: the invocation under way, when they come one at a time.
    fn started(&self, start: &Start<'_>) {
        if self.one_at_a_time {
            self.lock().current = Some(start.request_id.clone().into_owned());
        }
    }

    /// `platform.runtimeDone` or `platform.report`: metrics from the report, a failure from a
    /// status other than success.
    fn done(&self, done: &Done<'_>, report: bool, failures: &mut Failures) {
        let request_id = &*done.request_id;
        let metrics = &done.metrics;
        if report {
            let record_ms = |def: &'static catalog::MetricDef, value: &Lenient<f64>| {
                if let Some(value) = value.0 {
                    def.record_with(value, &[]);
                }
            };
            record_ms(&catalog::keel::INVOCATION_DURATION_MS, &metrics.duration_ms);
            record_ms(&catalog::keel::BILLED_DURATION_MS, &metrics.billed_duration_ms);
            record_ms(&catalog::keel::MAX_MEMORY_USED_MB, &metrics.max_memory_used_mb);
            record_ms(&catalog::keel::INIT_DURATION_MS, &metrics.init_duration_ms);
            if !matches!(done.status, Status::Success | Status::Other) {
                catalog::keel::INVOCATION_ERROR.increment(1);
            }
        }
        let mut requests = self.lock();
        // The invocation under way ends here: a line printed after names no request.
        if requests.current.as_deref() == Some(request_id) {
            requests.current = None;
        }
        let (class, metric) = match done.status {
            Status::Timeout => (ErrorClass::Timeout, &catalog::keel::INVOCATION_TIMEOUT),
            Status::Failure => (ErrorClass::Crash, &catalog::keel::RUNTIME_CRASH),
            // `error`: the function reported its own error, and routed it.
            Status::Success | Status::Error | Status::Other => {
                requests.state(request_id).finish();
                return;
            }
        };
        if requests.state(request_id).routed || !failures.seen.insert(request_id.to_owned()) {
            return;
        }
        metric.increment(1);
        let duration = metrics
            .duration_ms
            .0
            .map(|ms| format!(" after {ms} ms"))
            .unwrap_or_default();
        let (error_type, message) = match class {
            ErrorClass::Timeout => (
                "Runtime.Timeout".to_owned(),
                format!("the invocation timed out{duration}"),
            ),
            _ => (
                done.error_type
                    .0
                    .clone()
                    .unwrap_or_else(|| "Runtime.Failure".to_owned()),
                format!("the runtime failed{duration}"),
            ),
        };
        failures.found.push(Failure {
            request_id: request_id.to_owned(),
            class,
            error_type,
            message,
        });
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
            state.take_lines()
        };
        let envelope = self.routing.report(
            Source::Extension,
            &failure.request_id,
            &failure.error_type,
            failure.message,
            failure.class,
            json!({"last_log_lines": lines}),
        );
        if let Err(refused) = self.queue.push(&envelope) {
            tracing::warn!(reason = %refused, "the relay's queue refused the extension's own envelope; it is logged");
            self.routing.write_to_log(&envelope);
        }
        true
    }
}

/// A `function` record as kept: the request it names, if any, and the line as JSON, cut past
/// [`MAX_LINE_BYTES`]. Lambda sends a line as a JSON object (log format JSON) or as a string
/// (log format Text); a string holding a JSON object (Keel's own lines, printed) is kept as
/// that object.
fn line(record: &RawValue) -> Option<(Option<String>, Box<RawValue>)> {
    // Only a JSON object names a request (an array would fill `Named` by position).
    let named = |json: &str| {
        json.trim_start()
            .starts_with('{')
            .then(|| serde_json::from_str::<Named>(json).ok())
            .flatten()
    };
    match serde_json::from_str::<String>(record.get()) {
        Ok(text) => match named(&text) {
            Some(named) => Some((
                named.request_id(),
                bounded(RawValue::from_string(text).ok()?, None)?,
            )),
            None => Some((None, bounded(record.to_owned(), Some(&text))?)),
        },
        Err(_) => {
            let request_id = named(record.get()).and_then(Named::request_id);
            Some((request_id, bounded(record.to_owned(), None)?))
        }
    }
}

/// `json`, a line as JSON, when it is at most [`MAX_LINE_BYTES`] long; else the start of its
/// content (`text`, or the JSON itself) under a marker: `{"keel_truncated": true, "bytes":
/// <the content's length>, "text": <its first MAX_LINE_BYTES>}`.
fn bounded(json: Box<RawValue>, text: Option<&str>) -> Option<Box<RawValue>> {
    if json.get().len() <= MAX_LINE_BYTES {
        return Some(json);
    }
    let text = text.unwrap_or(json.get());
    let mut end = MAX_LINE_BYTES.min(text.len());
    // Escaping can make the kept text several times longer: cut until the marker fits.
    loop {
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let marker = json!({"keel_truncated": true, "bytes": text.len(), "text": &text[..end]});
        let marker = serde_json::value::to_raw_value(&marker).ok()?;
        let over = marker.get().len().saturating_sub(MAX_LINE_BYTES);
        if over == 0 || end == 0 {
            return Some(marker);
        }
        end = end.saturating_sub(over.max(16));
    }
}

/// `platform.logsDropped`: Lambda dropped records before the extension read them.
fn dropped(record: &LogsDropped) {
    let records = record.dropped_records.0.unwrap_or(0);
    tracing::warn!(
        dropped_records = records,
        dropped_bytes = record.dropped_bytes.0.unwrap_or(0),
        reason = record.reason.0.as_deref().unwrap_or_default(),
        "Lambda dropped telemetry records before the extension could read them"
    );
    catalog::keel::TELEMETRY_DROPPED.increment(records);
}

#[cfg(test)]
mod tests {
    use keel_runtime::output::Output;
    use keel_runtime::Keel;
    use serde_json::Value;

    use super::*;
    use crate::relay;

    fn telemetry() -> Telemetry {
        let routing = Arc::new(ErrorRouting::new("svc"));
        let (queue, _publisher, _shutdown) = relay::queue(relay::Limits::envelopes(16), routing.clone());
        let (output, _metrics) = Output::memory();
        Telemetry::new(routing, queue, Keel::new("svc").output(output).metrics_layer())
    }

    /// Requests remembered, and lines kept for them all.
    fn kept(telemetry: &Telemetry) -> (usize, usize) {
        let requests = telemetry.lock();
        let lines = requests.by_id.iter().map(|(_, state)| state.lines.len()).sum();
        (requests.by_id.len(), lines)
    }

    /// One successful invocation as Lambda reports it: its start, three lines, its end.
    fn invocation(request_id: &str) -> Vec<Value> {
        let line = |message: &str| {
            json!({"time": "2026-11-21T10:00:00.100Z", "type": "function", "record": {
                "level": "INFO", "message": message, "function_request_id": request_id
            }})
        };
        let metrics =
            json!({"durationMs": 12.0, "billedDurationMs": 13, "memorySizeMB": 128, "maxMemoryUsedMB": 30});
        vec![
            json!({"time": "2026-11-21T10:00:00.000Z", "type": "platform.start", "record": {"requestId": request_id}}),
            line("booking requested"),
            line("booking priced"),
            line("booking created"),
            json!({"time": "2026-11-21T10:00:00.200Z", "type": "platform.runtimeDone", "record": {
                "requestId": request_id, "status": "success", "metrics": {"durationMs": 12.0}}}),
            json!({"time": "2026-11-21T10:00:00.201Z", "type": "platform.report", "record": {
                "requestId": request_id, "status": "success", "metrics": metrics}}),
        ]
    }

    #[tokio::test]
    async fn a_successful_requests_lines_are_dropped_at_once_and_requests_stay_bounded() {
        let telemetry = telemetry();
        telemetry
            .read(&serde_json::to_vec(&invocation("ok-0")).unwrap())
            .await
            .unwrap();
        assert_eq!(kept(&telemetry), (1, 0), "nothing kept of a successful request");
        let late = json!([{"time": "2026-11-21T10:00:00.300Z", "type": "function", "record": {
            "level": "INFO", "message": "late", "function_request_id": "ok-0"}}]);
        telemetry.read(late.to_string().as_bytes()).await.unwrap();
        assert_eq!(
            kept(&telemetry),
            (1, 0),
            "nor of its lines that come after its end"
        );

        for batch in 0..100 {
            let records: Vec<Value> = (0..100)
                .flat_map(|n| invocation(&format!("ok-{batch}-{n}")))
                .collect();
            telemetry
                .read(&serde_json::to_vec(&records).unwrap())
                .await
                .unwrap();
        }
        let (requests, lines) = kept(&telemetry);
        assert!(requests <= REQUESTS_KEPT, "{requests} requests remembered");
        assert_eq!(lines, 0, "lines kept after 10,000 successful requests");
    }

    #[tokio::test]
    async fn a_request_under_way_keeps_its_newest_lines_within_its_byte_cap() {
        let telemetry = telemetry();
        let long = "x".repeat(7_000);
        let lines: Vec<Value> = (0..20)
            .map(|n| {
                json!({"time": "2026-11-21T10:00:00.100Z", "type": "function", "record": {
                    "message": format!("{n} {long}"), "function_request_id": "busy"
                }})
            })
            .collect();
        telemetry
            .read(&serde_json::to_vec(&lines).unwrap())
            .await
            .unwrap();
        let requests = telemetry.lock();
        let state = requests.by_id.peek("busy").expect("the request is remembered");
        let kept: Vec<&str> = state.lines.iter().map(|line| line.get()).collect();
        let bytes: usize = kept.iter().map(|line| line.len()).sum();
        assert!(
            bytes <= MAX_LINE_BYTES_PER_REQUEST && bytes == state.line_bytes,
            "{} lines, {bytes} bytes kept (counted {})",
            kept.len(),
            state.line_bytes
        );
        assert!(
            kept.len() >= 4 && kept.last().is_some_and(|line| line.contains("\"19 x")),
            "the newest lines are kept: {} of them, the last {:?}",
            kept.len(),
            kept.last().map(|line| &line[..40])
        );
    }

    /// The state of `request_id`: whether it was routed, whether the runtime is done with it.
    fn state_of(telemetry: &Telemetry, request_id: &str) -> Option<(bool, bool)> {
        let requests = telemetry.lock();
        let state = requests.by_id.peek(request_id)?;
        Some((state.routed, state.runtime_done))
    }

    #[tokio::test]
    async fn a_known_record_of_a_bad_shape_is_skipped_and_the_next_one_is_read() {
        let telemetry = telemetry();
        let record = |kind: &str, record: Value| json!({"time": "2026-11-21T10:00:00.000Z", "type": kind, "record": record});
        let batch = json!([
            record("platform.start", json!({"requestId": 7})),
            record("platform.start", json!(["s-array"])),
            record(
                "platform.start",
                json!({"requestId": "s-1", "version": "$LATEST"})
            ),
            record("function", json!("printed by the crashing invocation")),
            record("platform.runtimeDone", json!({"requestId": "s-1", "status": 3})),
            record(
                "platform.runtimeDone",
                json!({"requestId": "s-1", "metrics": {"durationMs": 4.0}})
            ),
            record("platform.report", json!(["s-1", "failure"])),
            record("platform.report", Value::Null),
            // Of the right shape; its optional fields of the wrong type read as absent.
            record(
                "platform.runtimeDone",
                json!({
                    "requestId": "s-1", "status": "failure", "errorType": 5, "metrics": [1, 2]
                })
            ),
        ]);
        let read = telemetry.read(batch.to_string().as_bytes()).await.unwrap();
        assert_eq!(
            read,
            Read {
                records: 9,
                skipped: 6,
                routed: 1
            }
        );
        assert_eq!(state_of(&telemetry, "s-1"), Some((true, true)), "routed and done");
        assert_eq!(state_of(&telemetry, "s-array"), None, "an array is not a record");
        assert_eq!(telemetry.lock().current, None, "s-1 is over");

        // A status this version does not know ends the invocation without a failure.
        let unknown = json!([
            record("platform.start", json!({"requestId": "s-2"})),
            record(
                "platform.runtimeDone",
                json!({"requestId": "s-2", "status": "throttled"})
            ),
        ]);
        let read = telemetry.read(unknown.to_string().as_bytes()).await.unwrap();
        assert_eq!(
            read,
            Read {
                records: 2,
                skipped: 0,
                routed: 0
            }
        );
        assert_eq!(state_of(&telemetry, "s-2"), Some((false, true)));
    }
}
