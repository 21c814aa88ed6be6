//! A stand-in for the booking API that answers the canary hook's two checks as the contract
//! says, for testing the hook without the booking API. `CANARY_TARGET_MODE` chooses how:
//!
//! - `pass` (default): `GET /health` answers 200; `POST /bookings` answers 200
//!   `{"dry_run": true, …}` when the event asks for a dry run (`x-keel-dry-run: true`, no
//!   `idempotency-key`, no `requestContext.apiId`), else 201 as if it had booked;
//! - `fail`: `GET /health` answers 503 and `POST /bookings` books (201) whatever it is asked,
//!   like a version that is down and knows nothing of dry runs;
//! - `error`: every invocation fails (a function error);
//! - `hang`: no invocation is ever answered.

use keel_runtime::{service_fn, BoxError, Keel, LambdaEvent};
use serde_json::{json, Value};

/// How the stand-in answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Pass,
    Fail,
    Error,
    Hang,
}

fn response(status: u16, body: &Value) -> Value {
    json!({
        "statusCode": status,
        "headers": {"content-type": "application/json"},
        "body": body.to_string(),
        "isBase64Encoded": false
    })
}

fn header<'a>(event: &'a Value, name: &str) -> Option<&'a str> {
    let (_, value) = event["headers"]
        .as_object()?
        .iter()
        .find(|(key, _)| key.eq_ignore_ascii_case(name))?;
    value.as_str()
}

fn answer(mode: Mode, event: &Value) -> Value {
    let method = event["requestContext"]["http"]["method"]
        .as_str()
        .unwrap_or_default();
    let path = event["rawPath"].as_str().unwrap_or_default();
    let dry_run = header(event, "x-keel-dry-run") == Some("true")
        && header(event, "idempotency-key").is_none()
        && event["requestContext"].get("apiId").is_none();
    let booking = event["body"]
        .as_str()
        .and_then(|body| serde_json::from_str::<Value>(body).ok())
        .filter(|body| body["resource_id"].is_string() && body["start"].is_string());
    match (mode, method, path) {
        (Mode::Pass, "GET", "/health") => response(200, &json!({"status": "ok"})),
        (Mode::Fail, "GET", "/health") => response(503, &json!({"code": "Unavailable"})),
        (_, "POST", "/bookings") if booking.is_none() => response(400, &json!({"code": "InvalidRequest"})),
        (Mode::Pass, "POST", "/bookings") if dry_run => response(
            200,
            &json!({"dry_run": true, "booking_id": "bk-dry-run", "status": "PENDING"}),
        ),
        (_, "POST", "/bookings") => response(201, &json!({"booking_id": "bk-booked", "status": "PENDING"})),
        _ => response(404, &json!({"code": "NotFound"})),
    }
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let mode = match std::env::var("CANARY_TARGET_MODE").as_deref() {
        Ok("fail") => Mode::Fail,
        Ok("error") => Mode::Error,
        Ok("hang") => Mode::Hang,
        _ => Mode::Pass,
    };
    let handler = service_fn(move |event: LambdaEvent<Value>| async move {
        tracing::info!(event = %event.payload, "canary target invoked");
        match mode {
            Mode::Error => Err::<Value, BoxError>("the canary target fails on purpose".into()),
            Mode::Hang => std::future::pending().await,
            _ => Ok(answer(mode, &event.payload)),
        }
    });
    Keel::new("canary-target").run(handler).await
}
