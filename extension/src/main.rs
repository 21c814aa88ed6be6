//! The `keel-extension` executable: an external Lambda extension (shipped in a layer as
//! `extensions/keel-extension`). See the library docs.
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `KEEL_EXTENSION_ADDR` | where the relay listens (127.0.0.1 only) | `127.0.0.1:9124` |
//! | `KEEL_TELEMETRY_ADDR` | where the Telemetry API listener listens, and the host Lambda sends to | `sandbox.localdomain:9125` |
//! | `KEEL_RELAY_CAPACITY` | envelopes the relay holds before it answers 503 | `1024` |
//! | `KEEL_RELAY_MAX_BYTES` | bytes of envelopes (as JSON) the relay holds before it answers 503 | `16777216` (16 MiB) |
//! | `KEEL_EXTENSION_FLUSH` | `end`: let Lambda freeze the environment after each invocation as soon as the function says it is over (its notice) and nothing was handed, or once what it handed is published; telemetry's `platform.runtimeDone` remains the fallback (functions without Keel's runtime, timeouts, crashes); `runtime-done`: wait for telemetry's `platform.runtimeDone` every time, then for the relay (the behaviour before notices); `lazy`: no wait, publish whenever the environment runs (see `keel_extension::flush`) | `end` |
//! | `KEEL_ERROR_TOPIC_ARN` / `KEEL_DLQ_URL` | where envelopes are published | log only |
//! | `AWS_LAMBDA_MAX_CONCURRENCY` | (set by Lambda) invocations at once: with more than 1, only the lines that name their request go into a crash's envelope | `1` |
//!
//! A malformed value stops the extension with an error naming the variable and what it expects.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use keel_extension::flush::{EndOfInvocation, FlushMode, Notices};
use keel_extension::http;
use keel_extension::relay::{self, Limits, ShutdownHandle};
use keel_extension::telemetry::{self, Telemetry, SUBSCRIBED_BATCH_BYTES};
use keel_runtime::clock;
use keel_runtime::routing::{ErrorRouting, DEFAULT_RELAY_ADDR, NOTICE_PATH};
use keel_runtime::{BoxError, ConfigError, Keel};
use lambda_extension::{service_fn, Extension, LambdaEvent, NextEvent};
use tokio::net::TcpListener;
use tokio::sync::Mutex;

const DEFAULT_TELEMETRY_ADDR: &str = "sandbox.localdomain:9125";

/// What the events processor needs.
struct Events {
    shutdown: Mutex<ShutdownHandle>,
    /// Set with [`FlushMode::End`] or [`FlushMode::RuntimeDone`] once telemetry is subscribed.
    end_of_invocation: OnceLock<EndOfInvocation>,
}

fn var(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// The whole number in `name`, or `default` when it is unset.
fn whole_number(name: &'static str, expected: &'static str, default: usize) -> Result<usize, ConfigError> {
    match var(name) {
        None => Ok(default),
        Some(value) => value.parse().map_err(|_| ConfigError::InvalidVariable {
            variable: name,
            value,
            expected,
        }),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("keel-extension: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), BoxError> {
    // The function's service (`KEEL_SERVICE`, else the function's name): its dashboards show these too.
    let keel = Keel::from_env("").await?;
    let metrics = keel.init().unwrap_or_else(|error| {
        eprintln!("keel-extension: {error}");
        keel.metrics_layer()
    });
    // The extension publishes itself: its routing never relays.
    let routing = Arc::new(ErrorRouting::from_env("").await?.without_relay());
    let limits = Limits {
        envelopes: whole_number(
            "KEEL_RELAY_CAPACITY",
            "a whole number of envelopes",
            relay::DEFAULT_CAPACITY,
        )?,
        bytes: whole_number(
            "KEEL_RELAY_MAX_BYTES",
            "a whole number of bytes",
            relay::DEFAULT_MAX_BYTES,
        )?,
    };
    let flush: FlushMode = var("KEEL_EXTENSION_FLUSH").map_or(Ok(FlushMode::End), |v| v.parse())?;
    let (queue, publisher, shutdown) = relay::queue(limits, routing.clone());
    tokio::spawn(publisher.run());

    let relay_addr: SocketAddr = var("KEEL_EXTENSION_ADDR")
        .unwrap_or_else(|| DEFAULT_RELAY_ADDR.to_owned())
        .parse()
        .map_err(|e| format!("KEEL_EXTENSION_ADDR: {e}"))?;
    if !relay_addr.ip().is_loopback() {
        return Err(format!(
            "KEEL_EXTENSION_ADDR={relay_addr}: the relay listens on the loopback interface only"
        )
        .into());
    }
    let relay_listener = TcpListener::bind(relay_addr).await?;
    let relay_queue = queue.clone();
    // The function's end-of-invocation notices come to the relay's listener too.
    let notices = Arc::new(Notices::new());
    let relay_notices = notices.clone();
    tokio::spawn(http::serve(
        relay_listener,
        relay::LISTENER,
        move |method, path, body: Bytes| {
            let answer = match path == NOTICE_PATH {
                true => relay_notices.answer(method, &body),
                false => relay_queue.answer(method, &path, &body),
            };
            async move { answer }
        },
    ));

    let telemetry_addr = var("KEEL_TELEMETRY_ADDR").unwrap_or_else(|| DEFAULT_TELEMETRY_ADDR.to_owned());
    let one_at_a_time = matches!(var("AWS_LAMBDA_MAX_CONCURRENCY").as_deref(), None | Some("1"));
    let telemetry =
        Arc::new(Telemetry::new(routing, queue.clone(), metrics).one_invocation_at_a_time(one_at_a_time));
    let telemetry_listener = match TcpListener::bind(&telemetry_addr).await {
        Ok(listener) => {
            let telemetry = telemetry.clone();
            tokio::spawn(http::serve(
                listener,
                telemetry::LISTENER,
                move |method, _path, body: Bytes| {
                    let telemetry = telemetry.clone();
                    async move { telemetry.answer(method, &body).await }
                },
            ));
            true
        }
        Err(error) => {
            tracing::warn!(addr = %telemetry_addr, error = %error, "the telemetry listener could not start; no platform metrics");
            false
        }
    };

    let events = Arc::new(Events {
        shutdown: Mutex::new(shutdown),
        end_of_invocation: OnceLock::new(),
    });
    let processor = events.clone();
    let registered = Extension::new()
        .with_events(&["INVOKE", "SHUTDOWN"])
        .with_events_processor(service_fn(move |event: LambdaEvent| {
            let events = processor.clone();
            async move { events.on_event(event).await }
        }))
        .register()
        .await?;
    if telemetry_listener {
        match subscribe(&registered.extension_id, &telemetry_addr, flush).await {
            Ok(()) => {
                if let Some(end) = EndOfInvocation::for_mode(flush, telemetry, queue, notices) {
                    let _ = events.end_of_invocation.set(end);
                }
            }
            Err(error) => {
                tracing::warn!(error = %error, "the Telemetry API subscription failed; no platform metrics");
            }
        }
    }
    let ended = registered.run().await;
    // The Extensions API went away without a SHUTDOWN event (a local emulator stopping, say):
    // what is pending still goes out, within the shutdown budget (a no-op after a SHUTDOWN).
    if let Err(error) = &ended {
        tracing::warn!(error = %error, "the Extensions API stopped answering: draining the relay");
    }
    events
        .shutdown
        .lock()
        .await
        .drain(Instant::now() + Duration::from_secs(2))
        .await;
    ended
}

impl Events {
    async fn on_event(&self, event: LambdaEvent) -> Result<(), BoxError> {
        match event.next {
            NextEvent::Invoke(invoke) => {
                tracing::debug!(request_id = %invoke.request_id, "invoke event");
                // Under the emulator (no deadline, no telemetry) nothing is frozen: no wait.
                let left = clock::time_left(invoke.deadline_ms, clock::EXTENSION_DEADLINE_MARGIN);
                let (Some(end), Some(left)) = (self.end_of_invocation.get(), left) else {
                    return Ok(());
                };
                let deadline = Instant::now() + left;
                let ended = end.wait(&invoke.request_id, deadline).await;
                tracing::debug!(request_id = %invoke.request_id, notice = ended.notice, runtime_done = ended.runtime_done, settled = ended.settled, "invocation over");
            }
            NextEvent::Shutdown(event) => {
                // External extensions share 2 s.
                let left = clock::time_left(event.deadline_ms, Duration::ZERO)
                    .map_or(Duration::from_secs(2), |left| left.min(Duration::from_secs(2)));
                tracing::info!(reason = %event.shutdown_reason, left_ms = left.as_millis() as u64, "shutting down: draining the relay");
                self.shutdown.lock().await.drain(Instant::now() + left).await;
            }
        }
        Ok(())
    }
}

/// Subscribes to the Telemetry API (`platform` and `function` records, schema `2022-12-13`),
/// delivered to `listener` (`host:port`): every 25 ms (the shortest) when invocations may wait
/// for their `platform.runtimeDone`, else every 100 ms.
async fn subscribe(extension_id: &str, listener: &str, flush: FlushMode) -> Result<(), BoxError> {
    let timeout_ms = if flush == FlushMode::Lazy { 100 } else { 25 };
    let api = var("AWS_LAMBDA_RUNTIME_API").ok_or("AWS_LAMBDA_RUNTIME_API is not set")?;
    let api = api.trim_start_matches("http://").trim_end_matches('/');
    let body = serde_json::json!({
        "schemaVersion": "2022-12-13",
        "destination": {"protocol": "HTTP", "URI": format!("http://{listener}")},
        "types": ["platform", "function"],
        "buffering": {"maxItems": 1000, "maxBytes": SUBSCRIBED_BATCH_BYTES, "timeoutMs": timeout_ms},
    });
    let authority = api.split('/').next().unwrap_or(api).to_owned();
    let stream = tokio::net::TcpStream::connect(&authority).await?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let path = match api.split_once('/') {
        Some((_, prefix)) => format!("/{prefix}/2022-07-01/telemetry"),
        None => "/2022-07-01/telemetry".to_owned(),
    };
    let request = hyper::Request::put(path)
        .header(hyper::header::HOST, authority)
        .header("Lambda-Extension-Identifier", extension_id)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_string())))?;
    let response = sender.send_request(request).await?;
    if !response.status().is_success() {
        return Err(format!("the Telemetry API answered {}", response.status()).into());
    }
    Ok(())
}
