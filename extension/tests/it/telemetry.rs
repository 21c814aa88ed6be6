//! The Telemetry API listener, fed real-shaped batches (schema 2022-12-13) over HTTP as Lambda
//! POSTs them: platform metrics, a timeout and a crash routed once each with the function's last
//! lines, out-of-order and duplicate records, dropped records, malformed batches.

use std::sync::Arc;

use keel_extension::relay;
use keel_extension::telemetry::{Telemetry, MAX_LINE_BYTES};
use keel_runtime::classify::ErrorClass;
use keel_runtime::output::{CapturedLines, Output};
use keel_runtime::routing::{Envelope, ErrorRouting, Source};
use keel_runtime::{FunctionInfo, Keel};
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::support::{self, logs, parsed};

fn line(request_id: &str, message: &str) -> Value {
    json!({"time": "2026-11-21T10:00:00.000Z", "type": "function", "record": {
        "timestamp": "2026-11-21T10:00:00.000Z", "level": "INFO", "message": message,
        "service": "booking-api", "function_request_id": request_id
    }})
}

fn done(kind: &str, request_id: &str, status: &str, metrics: Value) -> Value {
    json!({"time": "2026-11-21T10:00:01.000Z", "type": kind, "record": {
        "requestId": request_id, "status": status, "metrics": metrics,
        "tracing": {"spanId": "s", "type": "X-Amzn-Trace-Id", "value": "Root=1-x"}
    }})
}

fn report(request_id: &str, status: &str) -> Value {
    done(
        "platform.report",
        request_id,
        status,
        json!({
            "durationMs": 3001.5, "billedDurationMs": 3002, "memorySizeMB": 128, "maxMemoryUsedMB": 41, "initDurationMs": 120.4
        }),
    )
}

struct Listener {
    url: String,
    /// What this listener's metrics wrote.
    metrics: CapturedLines,
    client: reqwest_like::Client,
}

/// The smallest HTTP client the tests need (`POST` a body, read the status).
mod reqwest_like {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use hyper_util::rt::TokioIo;

    pub(crate) struct Client;

    impl Client {
        pub(crate) async fn post(&self, url: &str, body: String) -> (u16, String) {
            let rest = url.trim_start_matches("http://");
            let (authority, path) = rest
                .split_once('/')
                .map_or((rest, "/".to_owned()), |(a, p)| (a, format!("/{p}")));
            let stream = tokio::net::TcpStream::connect(authority).await.unwrap();
            let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .unwrap();
            tokio::spawn(connection);
            let request = hyper::Request::post(path)
                .header(hyper::header::HOST, authority)
                .body(Full::new(Bytes::from(body)))
                .unwrap();
            let response = sender.send_request(request).await.unwrap();
            let status = response.status().as_u16();
            let text = response.into_body().collect().await.unwrap().to_bytes();
            (status, String::from_utf8_lossy(&text).into_owned())
        }
    }
}

/// A telemetry listener on 127.0.0.1 whose envelopes are published to the log (no sinks), with
/// everything it writes captured; it keeps 3 lines per request.
async fn listener() -> Listener {
    listener_with(|telemetry| telemetry).await
}

/// [`listener`], its reader set up by `configure`.
async fn listener_with(configure: impl FnOnce(Telemetry) -> Telemetry) -> Listener {
    logs();
    let (output, metrics) = Output::memory();
    let function = FunctionInfo {
        name: "booking-api".into(),
        version: "5".into(),
        memory_size: 128,
    };
    let keel = Keel::new("booking-api")
        .output(output)
        .metrics(|config| config.function(function));
    let routing = Arc::new(ErrorRouting::new("booking-api"));
    let (queue, publisher, _shutdown) = relay::queue(relay::Limits::envelopes(64), routing.clone());
    tokio::spawn(publisher.run());
    let telemetry = Telemetry::new(routing, queue, keel.metrics_layer()).lines_per_request(3);
    let telemetry = Arc::new(configure(telemetry));
    let socket = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", socket.local_addr().unwrap());
    tokio::spawn(keel_extension::http::serve(
        socket,
        keel_extension::telemetry::LISTENER,
        move |method, _path, body| {
            let telemetry = telemetry.clone();
            async move { telemetry.answer(method, &body).await }
        },
    ));
    Listener {
        url,
        metrics,
        client: reqwest_like::Client,
    }
}

impl Listener {
    async fn post(&self, batch: Value) -> (u16, String) {
        self.client.post(&self.url, batch.to_string()).await
    }

    /// Envelopes routed (to the log) for the requests whose ids start with `prefix`, once there
    /// are `expected` of them.
    async fn envelopes(&self, prefix: &str, expected: usize) -> Vec<Envelope> {
        support::wait_for_logged_envelopes(expected, |e| e.request_id.starts_with(prefix)).await
    }

    /// The documents holding `name`.
    fn documents_of(&self, name: &str) -> Vec<Value> {
        parsed(&self.metrics)
            .into_iter()
            .filter(|doc| doc.get("_aws").is_some() && doc.get(name).is_some())
            .collect()
    }

    fn metric_total(&self, name: &str) -> f64 {
        parsed(&self.metrics)
            .iter()
            .filter(|l| l.get("_aws").is_some())
            .filter_map(|doc| match &doc[name] {
                Value::Array(values) => Some(values.iter().filter_map(Value::as_f64).sum::<f64>()),
                value => value.as_f64(),
            })
            .sum()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telemetry_batches_become_metrics_and_failures_are_routed_once_with_their_last_lines() {
    let listener = listener().await;

    // A successful invocation: metrics only.
    let ok = json!([
        line("r-ok", "booking priced"),
        done(
            "platform.runtimeDone",
            "r-ok",
            "success",
            json!({"durationMs": 12.0})
        ),
        report("r-ok", "success")
    ]);
    assert_eq!(listener.post(ok).await.0, 200);
    assert_eq!(listener.metric_total("DurationMs"), 3001.5);
    assert_eq!(listener.metric_total("BilledDurationMs"), 3002.0);
    assert_eq!(listener.metric_total("MaxMemoryUsedMB"), 41.0);
    assert_eq!(listener.metric_total("InitDurationMs"), 120.4);

    // A timeout: its runtimeDone arrives before its last lines, in the same batch, and the
    // report repeats the status in a later batch.
    let timeout = json!([
        done(
            "platform.runtimeDone",
            "r-slow",
            "timeout",
            json!({"durationMs": 3000.0})
        ),
        line("r-slow", "calling the partner"),
        line("r-slow", "waiting"),
        line("r-slow", "still waiting"),
        line("r-slow", "giving up soon"),
    ]);
    assert_eq!(listener.post(timeout).await.0, 200);
    assert_eq!(listener.post(json!([report("r-slow", "timeout")])).await.0, 200);
    // A crash, reported by the report alone.
    let mut crash = report("r-crash", "failure");
    crash["record"]["errorType"] = json!("Runtime.ExitError");
    assert_eq!(
        listener
            .post(json!([line("r-crash", "loading"), crash.clone()]))
            .await
            .0,
        200
    );
    assert_eq!(listener.post(json!([crash])).await.0, 200, "a duplicate batch");
    // An error the function reported itself (and routed itself): not routed again.
    assert_eq!(
        listener
            .post(json!([done("platform.runtimeDone", "r-err", "error", json!({}))]))
            .await
            .0,
        200
    );

    let envelopes = listener.envelopes("r-", 2).await;
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let envelopes_now = listener.envelopes("r-", 2).await;
    assert_eq!(envelopes_now.len(), 2, "each failure routed once: {envelopes:?}");
    let slow = envelopes.iter().find(|e| e.request_id == "r-slow").unwrap();
    assert_eq!(slow.error_class, ErrorClass::Timeout);
    assert_eq!(slow.error_type, "Runtime.Timeout");
    assert_eq!(slow.source, Source::Extension);
    let last: Vec<&str> = slow.event["last_log_lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["message"].as_str().unwrap())
        .collect();
    assert_eq!(
        last,
        ["waiting", "still waiting", "giving up soon"],
        "the newest 3 lines"
    );
    let crashed = envelopes.iter().find(|e| e.request_id == "r-crash").unwrap();
    assert_eq!(
        (crashed.error_class, crashed.error_type.as_str()),
        (ErrorClass::Crash, "Runtime.ExitError")
    );
    assert_eq!(listener.metric_total("InvocationTimeout"), 1.0);
    assert_eq!(listener.metric_total("RuntimeCrash"), 1.0);
    // What AWS/Lambda Errors counts: each failed report, as each report's DurationMs counts
    // (the timeout's, and the crash's delivered twice above).
    assert_eq!(listener.metric_total("InvocationError"), 3.0);

    // Durations, failed invocations, timeouts and crashes are canary-critical: also published
    // for the function's version.
    for name in [
        "DurationMs",
        "InvocationError",
        "InvocationTimeout",
        "RuntimeCrash",
    ] {
        assert!(!listener.documents_of(name).is_empty(), "{name} published");
        for document in listener.documents_of(name) {
            assert_eq!(
                document["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
                json!([["service"], ["service", "function_version"]]),
                "{document}"
            );
            assert_eq!(document["function_version"], "5", "{document}");
            keel_tests::emf_spec::validate(&document).unwrap();
        }
    }
    for document in listener.documents_of("BilledDurationMs") {
        assert_eq!(
            document["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            json!([["service"]])
        );
        assert!(document.get("function_version").is_none(), "{document}");
    }
}

/// Set in the process that runs [`timeouts_and_crashes_carry_the_version_lambda_sets`] alone.
const ALONE: &str = "KEEL_EXTENSION_VERSION_TEST_ALONE";

/// The extension built as `main` builds it, from the variables Lambda sets in the execution
/// environment (the function's and the extension's alike): its timeout and crash counts carry
/// `AWS_LAMBDA_FUNCTION_VERSION`. Run in a process of its own, with those variables set.
#[test]
fn timeouts_and_crashes_carry_the_version_lambda_sets() {
    if std::env::var_os(ALONE).is_none() {
        let exe = std::env::current_exe().expect("the test binary");
        let output = std::process::Command::new(exe)
            .args([
                "--exact",
                "telemetry::timeouts_and_crashes_carry_the_version_lambda_sets",
                "--nocapture",
            ])
            .env(ALONE, "1")
            .env("AWS_LAMBDA_FUNCTION_NAME", "booking-api")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "14")
            .env_remove("KEEL_SERVICE")
            .output()
            .expect("the test binary runs");
        let printed = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success() && printed.contains("1 passed"),
            "the test failed in its own process:\n{printed}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (output, lines) = Output::memory();
        let keel = Keel::from_env("")
            .await
            .expect("the configuration")
            .output(output);
        let metrics = keel.init().expect("alone in its process");
        let routing = Arc::new(ErrorRouting::new("booking-api"));
        let (queue, publisher, _shutdown) = relay::queue(relay::Limits::envelopes(16), routing.clone());
        tokio::spawn(publisher.run());
        let telemetry = Telemetry::new(routing, queue, metrics);
        let batch = json!([
            done(
                "platform.runtimeDone",
                "v-slow",
                "timeout",
                json!({"durationMs": 3000.0})
            ),
            done(
                "platform.runtimeDone",
                "v-crash",
                "failure",
                json!({"durationMs": 10.0})
            ),
        ]);
        telemetry.read(batch.to_string().as_bytes()).await.unwrap();
        let documents: Vec<Value> = parsed(&lines)
            .into_iter()
            .filter(|l| l.get("InvocationTimeout").is_some() || l.get("RuntimeCrash").is_some())
            .collect();
        assert_eq!(documents.len(), 1, "{documents:#?}");
        let document = &documents[0];
        keel_tests::emf_spec::validate(document).unwrap();
        assert_eq!(
            document["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            json!([["service"], ["service", "function_version"]])
        );
        assert_eq!(
            (&document["service"], &document["function_version"]),
            (&json!("booking-api"), &json!("14"))
        );
        assert_eq!(
            (&document["InvocationTimeout"], &document["RuntimeCrash"]),
            (&json!(1), &json!(1))
        );
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_batches_are_refused_clearly_and_good_records_still_read() {
    let listener = listener().await;
    let not_json = "{not json: bad_batches_are_refused_clearly";
    let (status, answer) = listener.client.post(&listener.url, not_json.into()).await;
    assert_eq!(status, 400, "{answer}");
    // This test's own line: no other sends a batch of that length.
    assert!(parsed(logs()).iter().any(|l| l["level"] == "WARN"
        && l["message"] == "a telemetry batch was refused"
        && l["bytes"] == not_json.len()));

    let mixed = json!([
        {"time": "2026-11-21T10:00:00Z", "type": "platform.restoreStart", "record": {"runtimeVersion": "x"}},
        {"time": "2026-11-21T10:00:00Z", "type": "platform.report", "record": {"status": "success"}},
        {"time": "2026-11-21T10:00:00Z", "type": "platform.logsDropped", "record": {"reason": "bad batches: buffer full", "droppedRecords": 12, "droppedBytes": 4096}},
        "not a record",
        report("b-after", "success"),
    ]);
    let (status, answer) = listener.post(mixed).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer, "5 records read, 2 skipped");
    assert_eq!(
        listener.metric_total("DurationMs"),
        3001.5,
        "the good report was read"
    );
    assert_eq!(listener.metric_total("TelemetryDropped"), 12.0);
    assert!(parsed(logs()).iter().any(|l| l["level"] == "WARN"
        && l["dropped_records"] == 12
        && l["reason"] == "bad batches: buffer full"));
}

fn start(request_id: &str) -> Value {
    json!({"time": "2026-11-21T10:00:00.000Z", "type": "platform.start", "record": {
        "requestId": request_id, "version": "$LATEST",
        "tracing": {"spanId": "s", "type": "X-Amzn-Trace-Id", "value": "Root=1-x"}
    }})
}

/// A line the function printed that is not Keel JSON (Lambda delivers it as a string).
fn text(line: &str) -> Value {
    json!({"time": "2026-11-21T10:00:00.500Z", "type": "function", "record": line})
}

fn crash(request_id: &str) -> Value {
    let mut done = done(
        "platform.runtimeDone",
        request_id,
        "failure",
        json!({"durationMs": 4.0}),
    );
    done["record"]["errorType"] = json!("Runtime.ExitError");
    done
}

/// The lines of `envelope`'s `event.last_log_lines`.
fn last_lines(envelope: &Envelope) -> Vec<Value> {
    envelope.event["last_log_lines"]
        .as_array()
        .unwrap_or_else(|| panic!("no last_log_lines in {envelope:?}"))
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_carries_the_plain_lines_printed_between_its_start_and_its_end() {
    let listener = listener().await;
    let panic = [
        "thread 'main' panicked at src/main.rs:10:5:\ncalled `Option::unwrap()` on a `None` value",
        "note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace",
    ];
    let first = json!([
        text("a line of the previous invocation"),
        start("p-panic"),
        line("p-panic", "loading the booking"),
        text(panic[0]),
    ]);
    assert_eq!(listener.post(first).await.0, 200);
    let second = json!([text(panic[1]), crash("p-panic"), text("printed after the end")]);
    assert_eq!(listener.post(second).await.0, 200);

    let envelope = listener.envelopes("p-panic", 1).await.remove(0);
    assert_eq!(envelope.error_type, "Runtime.ExitError");
    let last = last_lines(&envelope);
    assert_eq!(
        last,
        [
            json!({"timestamp": "2026-11-21T10:00:00.000Z", "level": "INFO", "message": "loading the booking", "service": "booking-api", "function_request_id": "p-panic"}),
            json!(panic[0]),
            json!(panic[1]),
        ],
        "the lines between platform.start and platform.runtimeDone, in order"
    );

    // Several invocations at once: a line that names no request belongs to none.
    let concurrent = listener_with(|telemetry| telemetry.one_invocation_at_a_time(false)).await;
    let batch = json!([
        start("p-concurrent"),
        line("p-concurrent", "loading the booking"),
        text(panic[0]),
        crash("p-concurrent"),
    ]);
    assert_eq!(concurrent.post(batch).await.0, 200);
    let envelope = concurrent.envelopes("p-concurrent", 1).await.remove(0);
    let last = last_lines(&envelope);
    assert_eq!(last.len(), 1, "only the line that names its request: {last:?}");
    assert_eq!(last[0]["message"], "loading the booking");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_line_is_kept_cut_and_marked() {
    let listener = listener().await;
    let huge = "x".repeat(100_000);
    let batch = json!([
        start("h-huge"),
        line("h-huge", &huge),
        text(&huge),
        line("h-huge", "the last words"),
        crash("h-huge"),
    ]);
    assert_eq!(listener.post(batch).await.0, 200);
    let envelope = listener.envelopes("h-huge", 1).await.remove(0);
    let last = last_lines(&envelope);
    assert_eq!(last.len(), 3, "{last:?}");
    for cut in &last[..2] {
        assert_eq!(cut["keel_truncated"], true, "{cut}");
        let bytes = cut["bytes"].as_u64().unwrap_or(0);
        assert!(bytes >= 100_000, "the line's full size: {cut}");
        let kept = cut["text"].as_str().unwrap_or_default();
        assert!(
            !kept.is_empty() && kept.len() <= MAX_LINE_BYTES,
            "its start, no more than {MAX_LINE_BYTES} bytes: {} bytes",
            kept.len()
        );
    }
    assert_eq!(last[2]["message"], "the last words");

    // Escaping can make a line's kept start several times longer: the mark stays within bounds.
    let escaped = listener_with(|telemetry| telemetry.lines_per_request(3)).await;
    let quotes = "\"\u{1}".repeat(50_000);
    let batch = json!([start("h-escaped"), text(&quotes), crash("h-escaped")]);
    assert_eq!(escaped.post(batch).await.0, 200);
    let envelope = escaped.envelopes("h-escaped", 1).await.remove(0);
    let last = last_lines(&envelope);
    assert_eq!(last.len(), 1, "{last:?}");
    let written = last[0].to_string().len();
    assert!(written <= MAX_LINE_BYTES, "{written} bytes as JSON");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_printed_array_names_no_request() {
    let listener = listener().await;
    let batch = json!([
        start("a-array"),
        {"time": "2026-11-21T10:00:00.500Z", "type": "function", "record": ["GET", "/bookings", 200]},
        text(r#"["POST","/bookings",500]"#),
        crash("a-array"),
    ]);
    assert_eq!(listener.post(batch).await.0, 200);
    let envelope = listener.envelopes("a-array", 1).await.remove(0);
    assert_eq!(
        last_lines(&envelope).len(),
        2,
        "both lines belong to the invocation under way"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_known_record_of_a_bad_shape_is_skipped_and_the_next_in_its_batch_still_read() {
    let listener = listener().await;
    let record = |kind: &str, record: Value| json!({"time": "2026-11-21T10:00:00.000Z", "type": kind, "record": record});
    let mut lenient = report("k-lenient", "success");
    lenient["record"]["errorType"] = json!(7);
    lenient["record"]["metrics"] = json!({"durationMs": "12", "billedDurationMs": 13});
    let batch = json!([
        record("platform.start", json!({"requestId": 7})),
        start("k-crash"),
        text("the last words"),
        // A report with no status: skipped whole, its metrics with it.
        record(
            "platform.report",
            json!({"requestId": "k-crash", "metrics": {"durationMs": 500.0}})
        ),
        record("platform.report", json!(["k-crash", "failure"])),
        record(
            "platform.runtimeDone",
            json!({"requestId": "k-crash", "status": null})
        ),
        crash("k-crash"),
        report("k-crash", "failure"),
        // Of the right shape: its optional fields of another type read as absent.
        lenient,
    ]);
    let (status, answer) = listener.post(batch).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer, "9 records read, 4 skipped");

    let envelope = listener.envelopes("k-crash", 1).await.remove(0);
    assert_eq!(
        (envelope.error_class, envelope.error_type.as_str()),
        (ErrorClass::Crash, "Runtime.ExitError")
    );
    assert_eq!(last_lines(&envelope), [json!("the last words")]);
    assert_eq!(listener.metric_total("RuntimeCrash"), 1.0);
    assert_eq!(
        listener.metric_total("DurationMs"),
        3001.5,
        "the good report's alone"
    );
    assert_eq!(listener.metric_total("BilledDurationMs"), 3002.0 + 13.0);
}
