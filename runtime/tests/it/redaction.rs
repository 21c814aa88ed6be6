//! Nothing sensitive leaves through any output: a corpus of sensitive values, placed where they
//! occur in practice (headers, JSON bodies, base64 bodies, form bodies, `Debug` fields, error
//! messages, metric labels, text that only looks like JSON, values serde quotes in its errors),
//! run through a whole Keel stack; none may appear in the log lines (buffered DEBUG lines
//! included), the EMF documents, the routed envelopes, the `errorMessage` Lambda returns, or the
//! envelopes the extension builds from the function's last lines.

use crate::common::{event, invoke, keel};
use base64::Engine as _;
use keel_runtime::classify::ErrorClass;
use keel_runtime::logging::LogFormat;
use keel_runtime::redact::MASK;
use keel_runtime::routing::{ErrorRouting, Source};
use keel_runtime::{service_fn, BoxError, Context, InvocationError, LambdaEvent, RawEvent};
use lambda_runtime::Diagnostic;
use serde_json::{json, Value};

const EMAIL: &str = "alice@example.com";
const EMAIL_IN_FORM: &str = "alice%40example.com";
const PHONE: &str = "+1-555-0100";
const CARD: &str = "4111111111111111";
const PASSWORD: &str = "hunter2-SECRET";
const TOKEN: &str = "tok_live_SECRET";
const AUTHORIZATION: &str = "eyJhbGciOiJSECRET";
const COOKIE: &str = "SECRETCOOKIE";
const SECURITY_TOKEN: &str = "FwoGZXIvYXdzSECRET";

/// Every sensitive value of the corpus, and the base64 forms it is sent in.
fn secrets() -> Vec<String> {
    let mut secrets: Vec<String> = [
        EMAIL,
        EMAIL_IN_FORM,
        PHONE,
        CARD,
        PASSWORD,
        TOKEN,
        AUTHORIZATION,
        COOKIE,
        SECURITY_TOKEN,
    ]
    .map(str::to_owned)
    .to_vec();
    secrets.push(base64_body());
    secrets
}

fn base64_body() -> String {
    base64::engine::general_purpose::STANDARD.encode(json!({"email": EMAIL, "seats": 2}).to_string())
}

/// An API Gateway HTTP API event carrying `body`.
fn http_event(body: Value, base64: bool) -> Value {
    json!({
        "version": "2.0",
        "routeKey": "POST /bookings",
        "rawPath": "/bookings",
        "rawQueryString": "",
        "cookies": [format!("session={COOKIE}")],
        "headers": {
            "authorization": format!("Bearer {AUTHORIZATION}"),
            "cookie": format!("session={COOKIE}"),
            "x-amz-security-token": SECURITY_TOKEN,
            "content-type": "application/json",
        },
        "requestContext": {"http": {"method": "POST", "path": "/bookings"}, "requestId": "r"},
        "body": body,
        "isBase64Encoded": base64,
    })
}

/// The events of the corpus, as JSON text (some are not valid for `serde_json::Value`).
fn corpus() -> Vec<(&'static str, String)> {
    let json_body = json!({
        "email": EMAIL, "phone": PHONE, "card_number": CARD, "password": PASSWORD,
        "token": TOKEN, "seats": 2,
    })
    .to_string();
    let deep = format!("{}{{\"email\":\"{EMAIL}\"}}{}", "[".repeat(200), "]".repeat(200));
    vec![
        ("http, JSON body", http_event(json_body.into(), false).to_string()),
        (
            "http, base64 body",
            http_event(base64_body().into(), true).to_string(),
        ),
        (
            "http, form body",
            http_event(
                format!("email={EMAIL_IN_FORM}&password={PASSWORD}&seats=2").into(),
                false,
            )
            .to_string(),
        ),
        (
            "lone surrogate",
            format!(r#"{{"email":"{EMAIL}","bad":"\ud800"}}"#),
        ),
        (
            "number out of range",
            format!(r#"{{"email":"{EMAIL}","n":1e400}}"#),
        ),
        ("nested past 128", deep),
    ]
}

fn raw_event(request_id: &str, text: &str) -> LambdaEvent<RawEvent> {
    let mut context = Context::default();
    context.request_id = request_id.to_owned();
    let raw: RawEvent = serde_json::from_str(text).expect("the runtime accepts it as JSON text");
    LambdaEvent::new(raw, context)
}

#[derive(Debug)]
#[allow(dead_code)]
struct Guest {
    email: String,
    phone: String,
    card: Card,
}

#[derive(Debug)]
#[allow(dead_code)]
struct Card {
    card_number: String,
}

/// A handler that leaks everything it can, then fails.
async fn leaky(event: LambdaEvent<Value>) -> Result<Value, BoxError> {
    let guest = Guest {
        email: EMAIL.into(),
        phone: PHONE.into(),
        card: Card {
            card_number: CARD.into(),
        },
    };
    tracing::info!(guest = ?guest, "guest");
    tracing::debug!(event = %event.payload, "the event, buffered until the failure");
    tracing::info!(password = PASSWORD, "login");
    tracing::warn!(form = %format!("email={EMAIL_IN_FORM}&token={TOKEN}"), "a form");
    tracing::info!("headers: authorization: Bearer {AUTHORIZATION}");
    metrics::counter!("Logins", "email" => EMAIL).increment(1);
    Err(InvocationError::new(
        "Booking.Failed",
        format!("no booking for email: {EMAIL}, phone={PHONE}"),
    )
    .into())
}

#[derive(Debug, serde::Deserialize)]
#[allow(dead_code)]
struct Booking {
    seats: u32,
}

async fn typed(_: LambdaEvent<Booking>) -> Result<Value, BoxError> {
    Ok(json!({}))
}

fn assert_clean(what: &str, outputs: &[String]) {
    for secret in secrets() {
        for output in outputs {
            assert!(
                !output.contains(&secret),
                "{what}: `{secret}` leaked in\n{output}"
            );
        }
    }
}

#[test]
fn no_output_holds_a_sensitive_value() {
    for (what, text) in corpus() {
        let (stack, lines) = keel();
        // Routing without sinks writes the whole envelope to the log.
        let stack = stack.log_events().error_routing(ErrorRouting::new("svc"));
        let results = invoke(&stack, service_fn(leaky), vec![raw_event("r-1", &text)]);
        let error = results.into_iter().next().unwrap().unwrap_err();
        let diagnostic: Diagnostic = error.into();
        let mut outputs = lines.lines();
        outputs.push(diagnostic.error_message);
        assert_clean(what, &outputs);
        let text = outputs.join("\n");
        assert!(
            text.contains("keel.routed_error"),
            "{what}: the envelope is in the log\n{text}"
        );
        // Events that are not JSON `serde_json` reads never reach the handler.
        if what.starts_with("http") {
            assert!(
                text.contains("\"email\":\"***\""),
                "{what}: the EMF label is masked\n{text}"
            );
        }
    }
}

#[test]
fn serde_errors_name_the_place_not_the_value() {
    let (stack, lines) = keel();
    let stack = stack.error_routing(ErrorRouting::new("svc"));
    // `seats` is no sensitive name: the event keeps the value (redaction goes by names), the
    // messages about it do not.
    let results = invoke(
        &stack,
        service_fn(typed),
        vec![event("r-2", json!({"seats": EMAIL}))],
    );
    let error = results.into_iter().next().unwrap().unwrap_err();
    assert_eq!(error.error_type(), "Keel.InvalidEvent");
    let diagnostic: Diagnostic = error.into();
    assert!(
        diagnostic
            .error_message
            .contains("at `seats`: invalid type: string, expected u32"),
        "{}",
        diagnostic.error_message
    );
    let logs = crate::common::logs(&lines);
    let mut messages = vec![diagnostic.error_message];
    for line in &logs {
        for field in ["error.message", "message"] {
            if let Some(text) = line[field].as_str() {
                messages.push(text.to_owned());
            }
        }
        if let Some(text) = line["envelope"]["error_message"].as_str() {
            messages.push(text.to_owned());
        }
    }
    assert!(messages.len() >= 3, "{logs:?}");
    assert_clean("a serde error", &messages);
}

#[test]
fn the_extensions_envelopes_are_redacted() {
    let routing = ErrorRouting::new("svc");
    let lines = json!([
        format!("thread 'main' panicked at src/main.rs:10:5: no guest for email: {EMAIL}"),
        format!("Guest {{ email: \"{EMAIL}\", card_number: \"{CARD}\" }}"),
        {"level": "INFO", "message": "ok", "password": PASSWORD},
        format!(r#"{{"token":"{TOKEN}","bad":"\ud800"}}"#),
    ]);
    let envelope = routing.report(
        Source::Extension,
        "r-3",
        "Runtime.ExitError",
        format!("the runtime failed for phone={PHONE}"),
        ErrorClass::Crash,
        json!({"last_log_lines": lines}),
    );
    let text = serde_json::to_string(&envelope).unwrap();
    assert_clean("an extension envelope", &[text]);
    assert_eq!(envelope.event["last_log_lines"][2]["password"], MASK);
}

#[test]
fn text_logs_cannot_forge_a_line() {
    let (stack, lines) = keel();
    let stack = stack.logs(|l| l.format(LogFormat::Text));
    let forged = "x\n2026-01-01T00:00:00.000Z ERROR forged line\r\u{1b}[31m";
    let handler = service_fn(move |_: LambdaEvent<Value>| async move {
        tracing::info!(note = forged, "a note: {forged}");
        Ok::<_, BoxError>(json!({}))
    });
    invoke(&stack, handler, vec![event("r-4", json!({}))]);
    let logged: Vec<String> = lines
        .lines()
        .into_iter()
        .filter(|l| !l.starts_with("{\"_aws\""))
        .collect();
    assert_eq!(logged.len(), 1, "{logged:?}");
    assert!(!logged[0].contains('\n') && !logged[0].contains('\r') && !logged[0].contains('\u{1b}'));
    assert!(logged[0].contains("x\\n2026-01-01"), "{}", logged[0]);
}
