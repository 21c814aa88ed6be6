//! The `keel-extension` executable: an external Lambda extension (shipped in a layer as
//! `extensions/keel-extension`). See the library docs.
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `KEEL_EXTENSION_ADDR` | where the relay listens (127.0.0.1 only) | `127.0.0.1:9124` |
//! | `KEEL_TELEMETRY_ADDR` | where the Telemetry API listener listens, and the host Lambda sends to | `sandbox.localdomain:9125` |
//! | `KEEL_RELAY_CAPACITY` | envelopes the relay holds before it answers 503 | `1024` |
//! | `KEEL_ERROR_TOPIC_ARN` / `KEEL_DLQ_URL` | where envelopes are published | log only |

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use keel_extension::http;
use keel_extension::relay::{self, ShutdownHandle};
use keel_extension::telemetry::Telemetry;
use keel_runtime::routing::{ErrorRouting, DEFAULT_RELAY_ADDR};
use keel_runtime::{BoxError, Keel};
use lambda_extension::{service_fn, Extension, LambdaEvent, NextEvent};
use tokio::net::TcpListener;
use tokio::sync::Mutex;

const DEFAULT_TELEMETRY_ADDR: &str = "sandbox.localdomain:9125";

fn var(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    // The function's service (`KEEL_SERVICE`, else the function's name): its dashboards show these too.
    let keel = Keel::from_env("").await?;
    let metrics = keel.init().unwrap_or_else(|error| {
        eprintln!("keel-extension: {error}");
        keel.metrics_layer()
    });
    // The extension publishes itself: its routing never relays.
    let routing = Arc::new(ErrorRouting::from_env("").await?.without_relay());
    let capacity = match var("KEEL_RELAY_CAPACITY") {
        Some(value) => value
            .parse()
            .map_err(|_| format!("KEEL_RELAY_CAPACITY={value:?} is not a whole number"))?,
        None => relay::DEFAULT_CAPACITY,
    };
    let (queue, publisher, shutdown) = relay::queue(capacity, routing.clone());
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
    tokio::spawn(http::serve(relay_listener, move |method, path, body: Bytes| {
        let answer = relay_queue.answer(method, &path, &body);
        async move { answer }
    }));

    let telemetry_addr = var("KEEL_TELEMETRY_ADDR").unwrap_or_else(|| DEFAULT_TELEMETRY_ADDR.to_owned());
    let telemetry = Arc::new(Telemetry::new(routing, queue, metrics));
    let telemetry_listener = match TcpListener::bind(&telemetry_addr).await {
        Ok(listener) => {
            let telemetry = telemetry.clone();
            tokio::spawn(http::serve(listener, move |method, _path, body: Bytes| {
                let telemetry = telemetry.clone();
                async move { telemetry.answer(method, &body).await }
            }));
            true
        }
        Err(error) => {
            tracing::warn!(addr = %telemetry_addr, error = %error, "the telemetry listener could not start; no platform metrics");
            false
        }
    };

    let shutdown = Arc::new(Mutex::new(shutdown));
    let on_shutdown = shutdown.clone();
    let events = service_fn(move |event: LambdaEvent| {
        let shutdown = on_shutdown.clone();
        async move { on_event(event, &shutdown).await }
    });
    let registered = Extension::new()
        .with_events(&["INVOKE", "SHUTDOWN"])
        .with_events_processor(events)
        .register()
        .await?;
    if telemetry_listener {
        if let Err(error) = subscribe(&registered.extension_id, &telemetry_addr).await {
            tracing::warn!(error = %error, "the Telemetry API subscription failed; no platform metrics");
        }
    }
    let ended = registered.run().await;
    // The Extensions API went away without a SHUTDOWN event (a local emulator stopping, say):
    // what is pending still goes out, within the shutdown budget (a no-op after a SHUTDOWN).
    if let Err(error) = &ended {
        tracing::warn!(error = %error, "the Extensions API stopped answering: draining the relay");
    }
    shutdown
        .lock()
        .await
        .drain(Instant::now() + Duration::from_secs(2))
        .await;
    ended
}

async fn on_event(event: LambdaEvent, shutdown: &Mutex<ShutdownHandle>) -> Result<(), BoxError> {
    if let NextEvent::Invoke(invoke) = &event.next {
        tracing::debug!(request_id = %invoke.request_id, "invoke event");
    }
    if let NextEvent::Shutdown(event) = event.next {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        // External extensions share 2 s; a deadline in the past (the emulator's) means unknown.
        let left = match event.deadline_ms.checked_sub(now_ms) {
            Some(left) if left > 0 => Duration::from_millis(left).min(Duration::from_secs(2)),
            _ => Duration::from_secs(2),
        };
        tracing::info!(reason = %event.shutdown_reason, left_ms = left.as_millis() as u64, "shutting down: draining the relay");
        shutdown.lock().await.drain(Instant::now() + left).await;
    }
    Ok(())
}

/// Subscribes to the Telemetry API (`platform` and `function` records, schema `2022-12-13`),
/// delivered to `listener` (`host:port`).
async fn subscribe(extension_id: &str, listener: &str) -> Result<(), BoxError> {
    let api = var("AWS_LAMBDA_RUNTIME_API").ok_or("AWS_LAMBDA_RUNTIME_API is not set")?;
    let api = api.trim_start_matches("http://").trim_end_matches('/');
    let body = serde_json::json!({
        "schemaVersion": "2022-12-13",
        "destination": {"protocol": "HTTP", "URI": format!("http://{listener}")},
        "types": ["platform", "function"],
        "buffering": {"maxItems": 1000, "maxBytes": 262_144, "timeoutMs": 100},
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
