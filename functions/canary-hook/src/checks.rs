//! The checks the hook makes of the target: the API Gateway HTTP API events (payload 2.0) it
//! invokes the target with, and what the target must answer.
//!
//! - `health`: `GET /health`; the answer must be status 200.
//! - `dry_run_booking`: `POST /bookings` with a valid booking and the header
//!   `x-keel-dry-run: true` (and no `Idempotency-Key`: the booking API refuses one on a dry run,
//!   whose answer Keel would otherwise replay to a real request); the answer must be status 200
//!   with a JSON body holding `"dry_run": true`. The booking API honours a dry run only for an
//!   event whose `requestContext` has no `apiId` (API Gateway always sets one, so no caller
//!   coming through API Gateway can ask for a dry run): these events carry none.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::hook::HookEvent;

/// The `user-agent` of the checks' requests.
const USER_AGENT: &str = "keel-canary-hook";

/// How much of a target's answer a failure quotes.
const QUOTED_BYTES: usize = 300;

/// One check of the target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Check {
    /// `GET /health` answers 200.
    Health,
    /// A dry-run `POST /bookings` answers 200 with `"dry_run": true`.
    DryRunBooking,
}

/// What a target answered to one invocation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Invoked {
    /// The response document (or, with `function_error`, the error document).
    pub(crate) payload: Vec<u8>,
    /// Lambda's `X-Amz-Function-Error` (`Unhandled`) when the function failed.
    pub(crate) function_error: Option<String>,
}

/// Why a check failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum CheckFailure {
    /// The target could not be invoked.
    #[error("the target could not be invoked: {0}")]
    Invoke(String),
    /// The target's invocation failed.
    #[error("the target failed ({kind}): {error}")]
    FunctionError {
        /// Lambda's function error kind.
        kind: String,
        /// The error document, cut.
        error: String,
    },
    /// The answer is not an API Gateway HTTP response.
    #[error("the answer is not an API Gateway HTTP response ({reason}): {answer}")]
    NotHttp {
        /// Why.
        reason: String,
        /// The answer, cut.
        answer: String,
    },
    /// Another status than expected.
    #[error("expected status {expected}, got {got}: {body}")]
    Status {
        /// The status the check wants.
        expected: u16,
        /// The status answered.
        got: u16,
        /// The answer's body, cut.
        body: String,
    },
    /// A 200 answer to the dry run without `"dry_run": true`: the target may have booked.
    #[error("the answer to the dry run does not say \"dry_run\": true: {body}")]
    NotDryRun {
        /// The answer's body, cut.
        body: String,
    },
    /// No answer within the check's time.
    #[error("no answer within {0:?}")]
    TimedOut(Duration),
    /// The check itself panicked.
    #[error("the check panicked: {0}")]
    Panicked(String),
}

/// An API Gateway HTTP API response, as far as the checks read it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct HttpAnswer {
    status_code: u16,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    is_base64_encoded: bool,
}

impl Check {
    /// Every check, in the order they run.
    pub(crate) const ALL: [Check; 2] = [Check::Health, Check::DryRunBooking];

    /// The name in logs and in the `check` dimension of `CanaryCheckFailed`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Check::Health => "health",
            Check::DryRunBooking => "dry_run_booking",
        }
    }

    /// The event the target is invoked with, for the hook's `event`, at `now`.
    pub(crate) fn event(self, hook: &HookEvent, now: SystemTime) -> Value {
        let request_id = format!(
            "canary-{}-{}",
            hook.lifecycle_event_hook_execution_id,
            self.name()
        );
        match self {
            Check::Health => http_event("GET", "/health", json!({}), None, &request_id, now),
            Check::DryRunBooking => {
                let headers = json!({
                    "content-type": "application/json",
                    "x-keel-dry-run": "true",
                });
                let body = dry_run_booking(now).to_string();
                http_event("POST", "/bookings", headers, Some(body), &request_id, now)
            }
        }
    }

    /// Whether `answer` passes this check.
    pub(crate) fn verdict(self, answer: &Invoked) -> Result<(), CheckFailure> {
        if let Some(kind) = &answer.function_error {
            return Err(CheckFailure::FunctionError {
                kind: kind.clone(),
                error: quote(&String::from_utf8_lossy(&answer.payload)),
            });
        }
        let response: HttpAnswer =
            serde_json::from_slice(&answer.payload).map_err(|error| CheckFailure::NotHttp {
                reason: error.to_string(),
                answer: quote(&String::from_utf8_lossy(&answer.payload)),
            })?;
        let body = match (response.body, response.is_base64_encoded) {
            (None, _) => String::new(),
            (Some(body), false) => body,
            (Some(body), true) => base64::engine::general_purpose::STANDARD
                .decode(body.as_bytes())
                .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
                .map_err(|error| CheckFailure::NotHttp {
                    reason: format!("the body is not base64: {error}"),
                    answer: quote(&body),
                })?,
        };
        if response.status_code != 200 {
            return Err(CheckFailure::Status {
                expected: 200,
                got: response.status_code,
                body: quote(&body),
            });
        }
        if self == Check::DryRunBooking {
            let dry_run = serde_json::from_str::<Value>(&body)
                .is_ok_and(|body| body.get("dry_run") == Some(&Value::Bool(true)));
            if !dry_run {
                return Err(CheckFailure::NotDryRun { body: quote(&body) });
            }
        }
        Ok(())
    }
}

/// An API Gateway HTTP API (payload 2.0) event, without `requestContext.apiId`.
fn http_event(
    method: &str,
    path: &str,
    mut headers: Value,
    body: Option<String>,
    request_id: &str,
    now: SystemTime,
) -> Value {
    headers["user-agent"] = json!(USER_AGENT);
    let route_key = format!("{method} {path}");
    let time_epoch = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX));
    let mut event = json!({
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": path,
        "rawQueryString": "",
        "headers": headers,
        "requestContext": {
            "requestId": request_id,
            "routeKey": route_key,
            "stage": "$default",
            "timeEpoch": time_epoch,
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1",
                "userAgent": USER_AGENT,
            },
        },
        "isBase64Encoded": false,
    });
    if let Some(body) = body {
        event["body"] = json!(body);
    }
    event
}

/// The dry run's booking: one guest, 10:00 to 11:00 UTC on a day one to two weeks ahead. The
/// day changes once a week only, so that a rerun of the hook for the same deployment (the same
/// idempotency key) sends the same body and gets the first answer back rather than a refusal
/// of the key's reuse.
fn dry_run_booking(now: SystemTime) -> Value {
    const WEEK: u64 = 7 * 24 * 3600;
    let now_s = now.duration_since(UNIX_EPOCH).map_or(0, |t| t.as_secs());
    let start = (now_s / WEEK + 2) * WEEK + 10 * 3600;
    let at = |seconds: u64| {
        humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(seconds)).to_string()
    };
    json!({
        "resource_id": "canary",
        "customer_id": "canary",
        "start": at(start),
        "end": at(start + 3600),
        "guests": 1,
    })
}

/// `text`, cut to [`QUOTED_BYTES`] at a character boundary.
fn quote(text: &str) -> String {
    if text.len() <= QUOTED_BYTES {
        return text.to_owned();
    }
    let mut end = QUOTED_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… [{} bytes in all]", &text[..end], text.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook() -> HookEvent {
        HookEvent {
            deployment_id: "d-ABC123".into(),
            lifecycle_event_hook_execution_id: "exec-1".into(),
        }
    }

    fn answer(value: Value) -> Invoked {
        Invoked {
            payload: value.to_string().into_bytes(),
            function_error: None,
        }
    }

    #[test]
    fn the_dry_run_event_asks_for_a_dry_run_and_carries_no_api_id() {
        let now = UNIX_EPOCH + Duration::from_secs(1_796_029_200);
        let event = Check::DryRunBooking.event(&hook(), now);
        assert_eq!(event["requestContext"]["http"]["method"], "POST");
        assert_eq!(event["rawPath"], "/bookings");
        assert!(event["requestContext"].get("apiId").is_none());
        assert!(
            event["headers"].get("idempotency-key").is_none(),
            "a dry run takes no key"
        );
        assert_eq!(event["headers"]["x-keel-dry-run"], "true");
        let body: Value = serde_json::from_str(event["body"].as_str().unwrap()).unwrap();
        assert_eq!(body["guests"], 1);
        let start = humantime::parse_rfc3339(body["start"].as_str().unwrap()).unwrap();
        let end = humantime::parse_rfc3339(body["end"].as_str().unwrap()).unwrap();
        assert!(start > now + Duration::from_secs(7 * 24 * 3600), "well ahead");
        assert_eq!(end.duration_since(start).unwrap(), Duration::from_secs(3600));
        let a_minute_later = Check::DryRunBooking.event(&hook(), now + Duration::from_secs(60));
        assert_eq!(
            a_minute_later["body"], event["body"],
            "a rerun sends the same body"
        );
        let health = Check::Health.event(&hook(), now);
        assert_eq!(health["routeKey"], "GET /health");
        assert!(health.get("body").is_none());
        assert!(health["requestContext"].get("apiId").is_none());
    }

    #[test]
    fn verdicts() {
        let ok = answer(json!({"statusCode": 200, "body": "{\"status\":\"ok\"}"}));
        assert_eq!(Check::Health.verdict(&ok), Ok(()));
        assert!(matches!(
            Check::DryRunBooking.verdict(&ok),
            Err(CheckFailure::NotDryRun { .. })
        ));
        let dry_run =
            answer(json!({"statusCode": 200, "body": "{\"dry_run\":true,\"booking_id\":\"bk-1\"}"}));
        assert_eq!(Check::DryRunBooking.verdict(&dry_run), Ok(()));
        let encoded = base64::engine::general_purpose::STANDARD.encode("{\"dry_run\":true}");
        let dry_run_base64 = answer(json!({"statusCode": 200, "body": encoded, "isBase64Encoded": true}));
        assert_eq!(Check::DryRunBooking.verdict(&dry_run_base64), Ok(()));
        let booked = answer(json!({"statusCode": 201, "body": "{\"booking_id\":\"bk-1\"}"}));
        assert!(matches!(
            Check::DryRunBooking.verdict(&booked),
            Err(CheckFailure::Status {
                expected: 200,
                got: 201,
                ..
            })
        ));
        let dry_run_false = answer(json!({"statusCode": 200, "body": "{\"dry_run\":\"true\"}"}));
        assert!(Check::DryRunBooking.verdict(&dry_run_false).is_err());
        let unhealthy = answer(json!({"statusCode": 503}));
        assert!(matches!(
            Check::Health.verdict(&unhealthy),
            Err(CheckFailure::Status { got: 503, .. })
        ));
        let failed = Invoked {
            payload: br#"{"errorType":"Boom","errorMessage":"no"}"#.to_vec(),
            function_error: Some("Unhandled".into()),
        };
        assert!(matches!(
            Check::Health.verdict(&failed),
            Err(CheckFailure::FunctionError { kind, .. }) if kind == "Unhandled"
        ));
        assert!(matches!(
            Check::Health.verdict(&answer(json!("hello"))),
            Err(CheckFailure::NotHttp { .. })
        ));
    }

    #[test]
    fn long_answers_are_cut_at_a_character_boundary() {
        let long = "é".repeat(400);
        let quoted = quote(&long);
        assert!(quoted.len() < 400, "{}", quoted.len());
        assert!(quoted.ends_with("[800 bytes in all]"));
    }
}
