//! [`TelemetryStandIn`]: Lambda's Telemetry API stood in for, between a function and an
//! extension and the cargo-lambda emulator (which has no Telemetry API), on 127.0.0.1.
//!
//! Give the function and the extension its [`runtime_api`](TelemetryStandIn::runtime_api) as
//! `AWS_LAMBDA_RUNTIME_API`. It forwards every Runtime and Extensions API call to the emulator
//! (one emulator connection per client connection, kept alive as the client keeps its own), and:
//!
//! - answers the Telemetry API subscription (`PUT /2022-07-01/telemetry`) itself, `200`, and
//!   remembers the destination;
//! - notes when the runtime posts an invocation's response (or error), when the stand-in has
//!   answered that post, when the extension asks for its next event
//!   (`GET /2020-01-01/extension/event/next`), and which INVOKE event it was given;
//! - delivers to the destination, as Lambda does, a batch holding the invocation's
//!   `platform.runtimeDone` and `platform.report` (status `success`, or `error` after a posted
//!   error) a set delay after the response was posted, or when told ([`Delivery::Held`]);
//! - gives an INVOKE event without a deadline ahead (the emulator's `deadlineMs` may be 0 or
//!   past) one 30 s from now, as Lambda always sends one.
//!
//! The times are read on the stand-in's clock when each request arrives, so that they compare.

use std::convert::Infallible;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;

use crate::HarnessError;

/// When the stand-in delivers an invocation's `platform.runtimeDone`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// This long after the runtime posted the response (Lambda batches telemetry: 25 ms at
    /// best).
    After(Duration),
    /// Only when [`TelemetryStandIn::release`] says so.
    Held,
}

/// What the stand-in saw, or did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seen {
    /// The extension subscribed to the Telemetry API, for delivery to `destination`.
    Subscribed {
        /// The subscription's `destination.URI`.
        destination: String,
    },
    /// The runtime posted the response of `request_id` (`error`: its error).
    Response {
        /// The invocation.
        request_id: String,
        /// Whether it posted an error (`/error`) rather than a response.
        error: bool,
    },
    /// The stand-in answered that post (the emulator had taken it); its runtimeDone is
    /// scheduled, or held.
    ResponseAnswered {
        /// The invocation.
        request_id: String,
    },
    /// The extension asked for its next event.
    ExtensionNext,
    /// The extension was given the INVOKE event of `request_id`.
    Invoke {
        /// The invocation.
        request_id: String,
    },
    /// The stand-in began to deliver the `platform.runtimeDone` of `request_id`.
    RuntimeDone {
        /// The invocation.
        request_id: String,
    },
}

/// One thing seen, and when.
#[derive(Clone, Debug)]
pub struct Record {
    /// When (the stand-in's clock, as the request arrived).
    pub at: Instant,
    /// What.
    pub seen: Seen,
}

/// The times of one invocation, as the stand-in saw them.
#[derive(Clone, Copy, Debug)]
pub struct Times {
    /// The runtime posted the response (or error).
    pub response: Instant,
    /// The stand-in answered that post.
    pub answered: Option<Instant>,
    /// The extension's first `/next` call after the response.
    pub next: Option<Instant>,
    /// The stand-in began to deliver the invocation's `platform.runtimeDone`.
    pub runtime_done: Option<Instant>,
}

impl Times {
    /// From the response's post to the extension's next `/next` call.
    pub fn response_to_next(&self) -> Option<Duration> {
        Some(self.next?.saturating_duration_since(self.response))
    }

    /// From the answer to the response's post to the extension's next `/next` call.
    pub fn answered_to_next(&self) -> Option<Duration> {
        Some(self.next?.saturating_duration_since(self.answered?))
    }
}

#[derive(Debug)]
struct State {
    /// The emulator's `host:port`.
    upstream: String,
    delivery: Delivery,
    records: Mutex<Vec<Record>>,
    /// The Telemetry API destination, once subscribed.
    destination: Mutex<Option<String>>,
    /// Invocations whose runtimeDone is held: request id, status.
    held: Mutex<Vec<(String, &'static str)>>,
}

/// A running stand-in; stops serving when dropped.
#[derive(Debug)]
pub struct TelemetryStandIn {
    port: u16,
    prefix: String,
    state: Arc<State>,
    handle: tokio::runtime::Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TelemetryStandIn {
    /// Serves on a free 127.0.0.1 port, forwarding to the emulator whose Runtime API is
    /// `runtime_api` ([`crate::Emulator::runtime_api`]), delivering `platform.runtimeDone` as
    /// `delivery` says.
    pub fn start(runtime_api: &str, delivery: Delivery) -> Result<Self, HarnessError> {
        let failed = |source| HarnessError::Spawn {
            name: "the Telemetry API stand-in".into(),
            source,
        };
        let api = runtime_api.trim_start_matches("http://").trim_end_matches('/');
        let (upstream, prefix) = match api.split_once('/') {
            Some((authority, prefix)) => (authority.to_owned(), format!("/{prefix}")),
            None => (api.to_owned(), String::new()),
        };
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).map_err(failed)?;
        listener.set_nonblocking(true).map_err(failed)?;
        let port = listener.local_addr().map_err(failed)?.port();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(failed)?;
        let state = Arc::new(State {
            upstream,
            delivery,
            records: Mutex::new(Vec::new()),
            destination: Mutex::new(None),
            held: Mutex::new(Vec::new()),
        });
        let handle = runtime.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let serving = state.clone();
        let thread = std::thread::spawn(move || {
            runtime.block_on(serve(listener, serving, stopped));
            runtime.shutdown_timeout(Duration::from_millis(100));
        });
        Ok(Self {
            port,
            prefix,
            state,
            handle,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The value of `AWS_LAMBDA_RUNTIME_API` for the function and the extension.
    pub fn runtime_api(&self) -> String {
        format!("http://127.0.0.1:{}{}", self.port, self.prefix)
    }

    /// Everything seen so far, in order.
    pub fn records(&self) -> Vec<Record> {
        lock(&self.state.records).clone()
    }

    /// Where telemetry goes, once the extension has subscribed.
    pub fn destination(&self) -> Option<String> {
        lock(&self.state.destination).clone()
    }

    /// Delivers every `platform.runtimeDone` held so far ([`Delivery::Held`]), from the
    /// stand-in's own tasks (each noted as [`Seen::RuntimeDone`] as it begins).
    pub fn release(&self) {
        let held = std::mem::take(&mut *lock(&self.state.held));
        let state = self.state.clone();
        self.handle.spawn(async move {
            for (request_id, status) in held {
                deliver(&state, &request_id, status).await;
            }
        });
    }

    /// Waits up to `timeout` until the records satisfy `ready` (which may call the stand-in's
    /// other methods: it is given a copy).
    pub fn wait_for(&self, timeout: Duration, ready: impl Fn(&[Record]) -> bool) -> bool {
        crate::wait_until(timeout, || ready(&self.records()))
    }

    /// The request id of the last INVOKE event the extension was given.
    pub fn last_invoke(&self) -> Option<String> {
        lock(&self.state.records)
            .iter()
            .rev()
            .find_map(|record| match &record.seen {
                Seen::Invoke { request_id } => Some(request_id.clone()),
                _ => None,
            })
    }

    /// The request id of the last response (or error) the runtime posted.
    pub fn last_response(&self) -> Option<String> {
        lock(&self.state.records)
            .iter()
            .rev()
            .find_map(|record| match &record.seen {
                Seen::Response { request_id, .. } => Some(request_id.clone()),
                _ => None,
            })
    }

    /// The times of invocation `request_id`, once its response was posted.
    pub fn times(&self, request_id: &str) -> Option<Times> {
        times(&lock(&self.state.records), request_id)
    }
}

/// The times of `request_id` in `records`, once its response was posted.
pub fn times(records: &[Record], request_id: &str) -> Option<Times> {
    let is = |id: &String| id == request_id;
    let response = records
        .iter()
        .position(|r| matches!(&r.seen, Seen::Response { request_id, .. } if is(request_id)))?;
    let after = &records[response..];
    let first = |wanted: &dyn Fn(&Seen) -> bool| after.iter().find(|r| wanted(&r.seen)).map(|r| r.at);
    Some(Times {
        response: records[response].at,
        answered: first(&|s| matches!(s, Seen::ResponseAnswered { request_id } if is(request_id))),
        next: first(&|s| matches!(s, Seen::ExtensionNext)),
        runtime_done: first(&|s| matches!(s, Seen::RuntimeDone { request_id } if is(request_id))),
    })
}

impl Drop for TelemetryStandIn {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn note(state: &State, at: Instant, seen: Seen) {
    lock(&state.records).push(Record { at, seen });
}

async fn serve(
    listener: std::net::TcpListener,
    state: Arc<State>,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
        return;
    };
    loop {
        let stream = tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        tokio::spawn(async move {
            // This client's own connection to the emulator, kept as long as it is open.
            let upstream = Arc::new(tokio::sync::Mutex::new(None));
            let service =
                hyper::service::service_fn(move |request| answer(state.clone(), upstream.clone(), request));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

type Upstream = Arc<tokio::sync::Mutex<Option<SendRequest<Full<Bytes>>>>>;

async fn answer(
    state: Arc<State>,
    upstream: Upstream,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let arrived = Instant::now();
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_owned();
    let body = match body.collect().await {
        Ok(body) => body.to_bytes(),
        Err(error) => return Ok(plain(StatusCode::BAD_REQUEST, &error.to_string())),
    };
    if parts.method == Method::PUT && path.ends_with("/2022-07-01/telemetry") {
        let subscription: Value = serde_json::from_slice(&body).unwrap_or_default();
        let destination = subscription["destination"]["URI"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        *lock(&state.destination) = Some(destination.clone());
        note(&state, arrived, Seen::Subscribed { destination });
        return Ok(plain(StatusCode::OK, "OK"));
    }
    let posted = parts.method == Method::POST
        && path.contains("/2018-06-01/runtime/invocation/")
        && (path.ends_with("/response") || path.ends_with("/error"));
    let posted = posted.then(|| {
        let request_id = path.rsplit('/').nth(1).unwrap_or_default().to_owned();
        let error = path.ends_with("/error");
        note(
            &state,
            arrived,
            Seen::Response {
                request_id: request_id.clone(),
                error,
            },
        );
        (request_id, error)
    });
    let extension_next = parts.method == Method::GET && path.ends_with("/2020-01-01/extension/event/next");
    if extension_next {
        note(&state, arrived, Seen::ExtensionNext);
    }

    let forwarded = forward(&state, &upstream, parts, body).await;
    let (parts, mut body) = match forwarded {
        Ok(response) => response,
        Err(error) => return Ok(plain(StatusCode::BAD_GATEWAY, &error)),
    };
    if extension_next {
        invoke_with_deadline(&state, &mut body);
    }
    let response = Response::from_parts(parts, Full::new(body));
    if let Some((request_id, error)) = posted {
        let answered = Instant::now();
        let status = if error { "error" } else { "success" };
        match state.delivery {
            Delivery::Held => lock(&state.held).push((request_id.clone(), status)),
            Delivery::After(delay) => {
                let state = state.clone();
                let request_id = request_id.clone();
                tokio::spawn(async move {
                    tokio::time::sleep_until((arrived + delay).into()).await;
                    deliver(&state, &request_id, status).await;
                });
            }
        }
        // Once noted, a held runtimeDone is there to release.
        note(&state, answered, Seen::ResponseAnswered { request_id });
    }
    Ok(response)
}

/// The request sent on to the emulator (on this client's connection), and its answer.
async fn forward(
    state: &State,
    upstream: &Upstream,
    parts: hyper::http::request::Parts,
    body: Bytes,
) -> Result<(hyper::http::response::Parts, Bytes), String> {
    let mut connection = upstream.lock().await;
    if connection.as_ref().is_none_or(SendRequest::is_closed) {
        *connection = Some(connect(&state.upstream).await?);
    }
    let Some(sender) = connection.as_mut() else {
        return Err("no connection to the emulator".into());
    };
    let mut request = Request::new(Full::new(body));
    *request.method_mut() = parts.method;
    *request.uri_mut() = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .parse()
        .map_err(|e: hyper::http::uri::InvalidUri| e.to_string())?;
    *request.headers_mut() = parts.headers;
    request.headers_mut().remove(hyper::header::CONTENT_LENGTH);
    request.headers_mut().remove(hyper::header::TRANSFER_ENCODING);
    if let Ok(host) = state.upstream.parse() {
        request.headers_mut().insert(hyper::header::HOST, host);
    }
    sender.ready().await.map_err(|e| e.to_string())?;
    let response = match sender.send_request(request).await {
        Ok(response) => response,
        Err(error) => {
            *connection = None;
            return Err(error.to_string());
        }
    };
    let (mut parts, body) = response.into_parts();
    let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
    parts.headers.remove(hyper::header::CONTENT_LENGTH);
    parts.headers.remove(hyper::header::TRANSFER_ENCODING);
    Ok((parts, body))
}

async fn connect(upstream: &str) -> Result<SendRequest<Full<Bytes>>, String> {
    let stream = tokio::net::TcpStream::connect(upstream)
        .await
        .map_err(|e| format!("connecting to the emulator at {upstream}: {e}"))?;
    let _ = stream.set_nodelay(true);
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    Ok(sender)
}

/// An INVOKE event for the extension noted, with a deadline 30 s ahead when it has none ahead.
fn invoke_with_deadline(state: &State, body: &mut Bytes) {
    let Ok(mut event) = serde_json::from_slice::<Value>(body) else {
        return;
    };
    if event["eventType"] != "INVOKE" {
        return;
    }
    let request_id = event["requestId"].as_str().unwrap_or_default().to_owned();
    note(state, Instant::now(), Seen::Invoke { request_id });
    let now_ms = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    if event["deadlineMs"].as_u64().unwrap_or(0) <= now_ms + 1_000 {
        event["deadlineMs"] = Value::from(now_ms + 30_000);
        *body = Bytes::from(event.to_string());
    }
}

/// POSTs the batch with `request_id`'s `platform.runtimeDone` and `platform.report` to the
/// subscription's destination.
async fn deliver(state: &State, request_id: &str, status: &str) {
    note(
        state,
        Instant::now(),
        Seen::RuntimeDone {
            request_id: request_id.to_owned(),
        },
    );
    let Some(destination) = lock(&state.destination).clone() else {
        return;
    };
    let batch =
        crate::api_gateway::telemetry_batch(request_id, status, Duration::from_millis(1), SystemTime::now());
    let authority = destination
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    let Ok(mut sender) = connect(&authority).await else {
        return;
    };
    let Ok(request) = Request::post("/")
        .header(hyper::header::HOST, authority)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(batch.to_string())))
    else {
        return;
    };
    if let Ok(response) = sender.send_request(request).await {
        let _ = response.into_body().collect().await;
    }
}

fn plain(status: StatusCode, text: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(text.to_owned())));
    *response.status_mut() = status;
    response
}
