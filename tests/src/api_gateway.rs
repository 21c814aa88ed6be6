//! [`ApiGateway`]: API Gateway's HTTP API stood in for, on 127.0.0.1. Each plain HTTP request
//! becomes the event API Gateway sends a Lambda proxy integration (payload format 2.0), an
//! invocation of the function the emulator serves, and the function's answer becomes the HTTP
//! response, as API Gateway maps it.
//!
//! Authorization: a request with `Authorization: Bearer <JWT>` is sent as API Gateway sends it
//! behind a JWT authorizer, with `requestContext.apiId` set and the token's claims in
//! `requestContext.authorizer.jwt.claims` — decoded, not verified: this is a local stand-in, not
//! a security boundary. An `Authorization` header that is not a bearer JWT is answered `401
//! {"message":"Unauthorized"}` without invoking the function, as the authorizer answers. A
//! request without the header is sent without `apiId`, as a local run or a direct invocation
//! is, which booking-api serves trusting the `customer_id` it is given.
//!
//! Telemetry: Lambda's Telemetry API sends an extension each invocation's
//! `platform.runtimeDone` and `platform.report`; the emulator sends none. Given the address of
//! a Telemetry API listener (the extension's `KEEL_TELEMETRY_ADDR`), the stand-in posts both
//! after each invocation, as one batch: the status (`success`, or `error` when the function
//! failed, `timeout` when the integration timed out) and the duration it measured around the
//! invocation (so that the extension's `DurationMs`, `BilledDurationMs` and `InvocationError`
//! reflect a local run). The request id is the stand-in's own (the emulator does not tell the
//! invocation's).
//!
//! Bounds: request bodies up to [`MAX_BODY_BYTES`] (larger: `413`), [`MAX_CONNECTIONS`]
//! connections at once (more wait to be accepted; a connection's next request headers are
//! awaited 30 s at most), 30 s per invocation (then `503`).

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::http::request::Parts;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Map, Value};

use crate::HarnessError;

/// The largest request body API Gateway's HTTP APIs accept (10 MB).
pub const MAX_BODY_BYTES: usize = 10 * 1024 * 1024;

/// How long API Gateway waits for an HTTP API integration (30 s), and this stand-in too.
const INTEGRATION_TIMEOUT: Duration = Duration::from_secs(30);

/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 64;

/// A running front door; stops serving when dropped.
#[derive(Debug)]
pub struct ApiGateway {
    port: u16,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// What one request needs besides itself.
#[derive(Debug)]
struct Route {
    invoke_url: String,
    domain: String,
    agent: ureq::Agent,
    next_id: AtomicU64,
    /// Where each invocation's telemetry is posted.
    telemetry: Option<String>,
}

impl ApiGateway {
    /// Serves on `127.0.0.1:port` (0: a free port), sending every request to the function
    /// behind `invoke_url` (the Lambda `Invoke` URL of [`crate::Emulator::invoke_url`]) and,
    /// when `telemetry` names a Telemetry API listener (`host:port`), each invocation's
    /// `platform.runtimeDone` and `platform.report` to it.
    pub fn start(port: u16, invoke_url: &str, telemetry: Option<&str>) -> Result<Self, HarnessError> {
        let bind_failed = |source| HarnessError::Spawn {
            name: format!("the API Gateway stand-in on 127.0.0.1:{port}"),
            source,
        };
        let listener = std::net::TcpListener::bind(("127.0.0.1", port)).map_err(bind_failed)?;
        listener.set_nonblocking(true).map_err(bind_failed)?;
        let port = listener.local_addr().map_err(bind_failed)?.port();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(bind_failed)?;
        let route = Arc::new(Route {
            invoke_url: invoke_url.to_owned(),
            domain: format!("127.0.0.1:{port}"),
            agent: crate::http_agent(INTEGRATION_TIMEOUT),
            next_id: AtomicU64::new(0),
            telemetry: telemetry.map(|addr| format!("http://{addr}/")),
        });
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let thread = std::thread::spawn(move || {
            runtime.block_on(serve(listener, route, stopped));
            // Invocations still under way are abandoned, not waited for.
            runtime.shutdown_timeout(Duration::from_millis(100));
        });
        Ok(Self {
            port,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for ApiGateway {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn serve(
    listener: std::net::TcpListener,
    route: Arc<Route>,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
        return;
    };
    let connections = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let accepted = async {
            let permit = Arc::clone(&connections).acquire_owned().await;
            (permit, listener.accept().await)
        };
        let (permit, stream) = tokio::select! {
            _ = &mut stopped => return,
            (permit, accepted) = accepted => match (permit, accepted) {
                (Ok(permit), Ok((stream, _))) => (permit, stream),
                _ => {
                    // Out of file descriptors, say: wait rather than spin.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let route = Arc::clone(&route);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| answer(Arc::clone(&route), request));
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(INTEGRATION_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            drop(permit);
        });
    }
}

async fn answer(route: Arc<Route>, request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = request.into_parts();
    let Ok(body) = Limited::new(body, MAX_BODY_BYTES).collect().await else {
        return Ok(message(StatusCode::PAYLOAD_TOO_LARGE, "Request Entity Too Large"));
    };
    let started = SystemTime::now();
    let epoch_ms = started
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let request_id = format!(
        "local-{epoch_ms:x}-{}",
        route.next_id.fetch_add(1, Ordering::Relaxed)
    );
    let event = match event(&parts, &body.to_bytes(), &route.domain, &request_id, started) {
        Some(event) => event,
        None => return Ok(message(StatusCode::UNAUTHORIZED, "Unauthorized")),
    };
    let invoke = {
        let route = Arc::clone(&route);
        let request_id = request_id.clone();
        tokio::task::spawn_blocking(move || {
            let invoked = std::time::Instant::now();
            let outcome = route
                .agent
                .post(&route.invoke_url)
                .send(event.to_string())
                .and_then(|mut response| {
                    let status = response.status().as_u16();
                    Ok((status, response.body_mut().read_to_string()?))
                });
            if let Some(listener) = &route.telemetry {
                let status = match &outcome {
                    Ok((200, _)) => "success",
                    Err(ureq::Error::Timeout(_)) => "timeout",
                    _ => "error",
                };
                let batch = telemetry_batch(&request_id, status, invoked.elapsed(), SystemTime::now());
                // Best effort, as telemetry is: a listener that is gone loses the records.
                let _ = route.agent.post(listener).send(batch.to_string());
            }
            outcome
        })
    };
    let mut response = match invoke.await {
        Ok(Ok((200, text))) => response_of(&text),
        Ok(Err(ureq::Error::Timeout(_))) => message(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable"),
        // The function failed or could not be reached.
        _ => message(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error"),
    };
    if let Ok(id) = request_id.parse() {
        response.headers_mut().insert("apigw-requestid", id);
    }
    Ok(response)
}

/// The Telemetry API batch of one invocation that ended with `status` after `duration`:
/// its `platform.runtimeDone` and `platform.report` (billed duration rounded up to the
/// millisecond, memory as the emulator's functions are given).
pub fn telemetry_batch(request_id: &str, status: &str, duration: Duration, now: SystemTime) -> Value {
    let time = humantime::format_rfc3339_millis(now).to_string();
    let duration_ms = (duration.as_secs_f64() * 1_000_000.0).round() / 1_000.0;
    json!([
        {"time": time, "type": "platform.runtimeDone", "record": {
            "requestId": request_id, "status": status,
            "metrics": {"durationMs": duration_ms}}},
        {"time": time, "type": "platform.report", "record": {
            "requestId": request_id, "status": status,
            "metrics": {
                "durationMs": duration_ms,
                "billedDurationMs": duration_ms.ceil(),
                "memorySizeMB": 128,
            }}},
    ])
}

/// `{"message": text}` with `status`: API Gateway's own answers.
fn message(status: StatusCode, text: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(json!({ "message": text }).to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

/// The payload format 2.0 event of a request; `None` when it carries an `Authorization` header
/// that is not a bearer JWT (the authorizer refuses it).
pub fn event(parts: &Parts, body: &[u8], domain: &str, request_id: &str, now: SystemTime) -> Option<Value> {
    let mut headers = Map::new();
    let mut cookies = Vec::new();
    for (name, value) in &parts.headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        if name == hyper::header::COOKIE {
            cookies.extend(
                value
                    .split(';')
                    .map(|c| c.trim().to_owned())
                    .filter(|c| !c.is_empty()),
            );
            continue;
        }
        // Repeated headers are joined with commas, as API Gateway does.
        match headers.get_mut(name.as_str()) {
            Some(Value::String(joined)) => {
                joined.push(',');
                joined.push_str(&value);
            }
            _ => {
                headers.insert(name.as_str().to_owned(), Value::String(value));
            }
        }
    }
    let path = parts.uri.path();
    let raw_query = parts.uri.query().unwrap_or_default();
    let mut parameters = Map::new();
    for (name, value) in form_urlencoded::parse(raw_query.as_bytes()) {
        match parameters.get_mut(name.as_ref()) {
            Some(Value::String(joined)) => {
                joined.push(',');
                joined.push_str(&value);
            }
            _ => {
                parameters.insert(name.into_owned(), Value::String(value.into_owned()));
            }
        }
    }
    let epoch_ms = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let time = chrono::DateTime::<chrono::Utc>::from(now)
        .format("%d/%b/%Y:%H:%M:%S +0000")
        .to_string();
    let mut context = json!({
        "accountId": "123456789012",
        "domainName": domain,
        "domainPrefix": domain.split('.').next().unwrap_or(domain),
        "http": {
            "method": parts.method.as_str(),
            "path": path,
            "protocol": format!("{:?}", parts.version),
            "sourceIp": "127.0.0.1",
            "userAgent": headers.get("user-agent").cloned().unwrap_or(Value::String(String::new())),
        },
        "requestId": request_id,
        "routeKey": "$default",
        "stage": "$default",
        "time": time,
        "timeEpoch": epoch_ms,
    });
    if let Some(authorization) = headers.get("authorization").and_then(Value::as_str) {
        let claims = bearer_claims(authorization)?;
        context["apiId"] = json!("local");
        context["authorizer"] = json!({"jwt": {"claims": claims, "scopes": null}});
    }
    let text = std::str::from_utf8(body).ok().filter(|_| !is_binary(&headers));
    let (body, encoded) = match (body.is_empty(), text) {
        (true, _) => (Value::Null, false),
        (false, Some(text)) => (Value::String(text.to_owned()), false),
        (false, None) => (
            Value::String(base64::engine::general_purpose::STANDARD.encode(body)),
            true,
        ),
    };
    let mut event = json!({
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": raw_query,
        "headers": headers,
        "requestContext": context,
        "isBase64Encoded": encoded,
    });
    if !cookies.is_empty() {
        event["cookies"] = json!(cookies);
    }
    if !parameters.is_empty() {
        event["queryStringParameters"] = Value::Object(parameters);
    }
    if !body.is_null() {
        event["body"] = body;
    }
    Some(event)
}

/// Whether the body is sent base64-encoded: API Gateway encodes whatever is not text.
fn is_binary(headers: &Map<String, Value>) -> bool {
    let content_type = headers
        .get("content-type")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_ascii_lowercase();
    !(content_type.is_empty()
        || content_type.starts_with("text/")
        || content_type.contains("json")
        || content_type.contains("xml")
        || content_type.contains("x-www-form-urlencoded"))
}

/// The claims of a bearer JWT (its middle part, base64url JSON), unverified.
fn bearer_claims(authorization: &str) -> Option<Map<String, Value>> {
    let (scheme, token) = authorization.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = token.trim();
    let payload = token.split('.').nth(1)?;
    let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: Map<String, Value> = serde_json::from_slice(&decoded).ok()?;
    // API Gateway passes claim values as strings.
    Some(
        claims
            .into_iter()
            .map(|(name, value)| {
                let text = match value {
                    Value::String(text) => text,
                    other => other.to_string(),
                };
                (name, Value::String(text))
            })
            .collect(),
    )
}

/// The HTTP response of a function's answer, as API Gateway maps payload format 2.0: an
/// object with `statusCode` gives the status, headers, cookies and body (base64-decoded when
/// `isBase64Encoded`); any other JSON answer is a 200 `application/json` body; an answer that
/// is not JSON is a 500.
pub fn response_of(answer: &str) -> Response<Full<Bytes>> {
    let Ok(parsed) = serde_json::from_str::<Value>(answer) else {
        return message(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error");
    };
    let Some(proxy) = Some(parsed).filter(|v| v.get("statusCode").is_some()) else {
        let mut response = Response::new(Full::new(Bytes::from(answer.to_owned())));
        response.headers_mut().insert(
            "content-type",
            hyper::header::HeaderValue::from_static("application/json"),
        );
        return response;
    };
    let status = proxy["statusCode"]
        .as_u64()
        .and_then(|code| u16::try_from(code).ok())
        .and_then(|code| StatusCode::from_u16(code).ok());
    let Some(status) = status else {
        return message(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error");
    };
    let text = proxy["body"].as_str().unwrap_or_default();
    let body = if proxy["isBase64Encoded"] == true {
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .unwrap_or_default()
    } else {
        text.as_bytes().to_vec()
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    for (name, value) in proxy["headers"].as_object().into_iter().flatten() {
        let value = value.as_str().map_or_else(|| value.to_string(), str::to_owned);
        if let (Ok(name), Ok(value)) = (
            hyper::header::HeaderName::from_bytes(name.as_bytes()),
            hyper::header::HeaderValue::from_str(&value),
        ) {
            headers.insert(name, value);
        }
    }
    for cookie in proxy["cookies"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        if let Ok(value) = hyper::header::HeaderValue::from_str(cookie) {
            headers.append(hyper::header::SET_COOKIE, value);
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(request: Request<()>) -> Parts {
        request.into_parts().0
    }

    #[test]
    fn a_request_becomes_a_payload_2_event() {
        let request = Request::post("/bookings/bk-1/cancel?limit=5&tag=a&tag=b%20c")
            .header("Idempotency-Key", "k1")
            .header("Content-Type", "application/json")
            .header("Cookie", "a=1; b=2")
            .header("X-Many", "1")
            .header("X-Many", "2")
            .body(())
            .unwrap();
        let event = event(
            &parts(request),
            br#"{"x":1}"#,
            "127.0.0.1:9",
            "r-1",
            SystemTime::UNIX_EPOCH,
        )
        .unwrap();
        assert_eq!(event["version"], "2.0");
        assert_eq!(event["rawPath"], "/bookings/bk-1/cancel");
        assert_eq!(event["rawQueryString"], "limit=5&tag=a&tag=b%20c");
        assert_eq!(
            event["queryStringParameters"],
            json!({"limit": "5", "tag": "a,b c"})
        );
        assert_eq!(event["headers"]["idempotency-key"], "k1");
        assert_eq!(event["headers"]["x-many"], "1,2");
        assert_eq!(event["cookies"], json!(["a=1", "b=2"]));
        assert!(event["headers"].get("cookie").is_none());
        assert_eq!(event["body"], r#"{"x":1}"#);
        assert_eq!(event["isBase64Encoded"], false);
        assert_eq!(event["requestContext"]["http"]["method"], "POST");
        assert_eq!(event["requestContext"]["time"], "01/Jan/1970:00:00:00 +0000");
        assert!(
            event["requestContext"].get("apiId").is_none(),
            "no token: a local run"
        );
        let typed: aws_lambda_events::apigw::ApiGatewayV2httpRequest = serde_json::from_value(event).unwrap();
        assert_eq!(typed.raw_path.as_deref(), Some("/bookings/bk-1/cancel"));
    }

    #[test]
    fn a_bearer_token_becomes_the_authorizers_claims_and_binary_bodies_are_encoded() {
        let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"sub":"cust-7","exp":5}"#);
        let request = Request::post("/bookings")
            .header("Authorization", format!("Bearer e30.{claims}.sig"))
            .header("Content-Type", "application/octet-stream")
            .body(())
            .unwrap();
        let sent = event(&parts(request), &[0, 159, 146], "d", "r", SystemTime::UNIX_EPOCH).unwrap();
        assert_eq!(sent["requestContext"]["apiId"], "local");
        assert_eq!(
            sent["requestContext"]["authorizer"]["jwt"]["claims"],
            json!({"sub": "cust-7", "exp": "5"})
        );
        assert_eq!(sent["isBase64Encoded"], true);
        assert_eq!(sent["body"], "AJ+S");
        for refused in [
            "Basic dXNlcjpwYXNz",
            "Bearer not-a-jwt",
            "Bearer a.bm90IGpzb24.c",
            "bearer",
        ] {
            let request = Request::get("/bookings")
                .header("Authorization", refused)
                .body(())
                .unwrap();
            assert!(
                event(&parts(request), &[], "d", "r", SystemTime::UNIX_EPOCH).is_none(),
                "{refused} is refused"
            );
        }
        let lower = Request::get("/")
            .header("authorization", format!("bearer e30.{claims}.s"))
            .body(())
            .unwrap();
        assert!(event(&parts(lower), &[], "d", "r", SystemTime::UNIX_EPOCH).is_some());
    }

    #[test]
    fn answers_map_to_responses_as_api_gateway_maps_them() {
        let proxy = json!({
            "statusCode": 201, "headers": {"content-type": "application/json", "retry-after": "2"},
            "cookies": ["s=1", "t=2"], "body": "{\"ok\":true}", "isBase64Encoded": false
        });
        let response = response_of(&proxy.to_string());
        assert_eq!(response.status(), 201);
        assert_eq!(response.headers()["retry-after"], "2");
        assert_eq!(response.headers().get_all("set-cookie").iter().count(), 2);
        let encoded = response_of(r#"{"statusCode": 200, "body": "aGk=", "isBase64Encoded": true}"#);
        assert_eq!(encoded.status(), 200);
        let plain = response_of(r#"{"greeting": "hi"}"#);
        assert_eq!(
            (plain.status(), &plain.headers()["content-type"]),
            (
                StatusCode::OK,
                &"application/json".parse::<hyper::header::HeaderValue>().unwrap()
            )
        );
        assert_eq!(response_of(r#"{"statusCode": 99}"#).status(), 500);
        assert_eq!(response_of("not json").status(), 500);
    }
}
