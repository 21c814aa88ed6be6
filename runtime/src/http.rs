//! Answers to HTTP events (API Gateway REST and HTTP APIs, ALB, function URLs) that a layer
//! gives instead of running the handler.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::json;

/// An HTTP response with the JSON body `{code, message}` (and `Retry-After`, in whole seconds
/// and at least 1, when given), as the handler's response type `R` — `None` when `R` is not an
/// HTTP response type. Behind [`Keel`](crate::Keel) `R` is the response's JSON text, so every
/// HTTP event gets it.
pub(crate) fn error_response<R: DeserializeOwned>(
    status: u16,
    code: &str,
    message: &str,
    retry_after: Option<Duration>,
    cookies: bool,
) -> Option<R> {
    let mut headers = serde_json::Map::new();
    headers.insert("content-type".into(), "application/json".into());
    if let Some(retry_after) = retry_after {
        headers.insert(
            "retry-after".into(),
            retry_after.as_secs().max(1).to_string().into(),
        );
    }
    // The members every HTTP response type of aws_lambda_events reads; `cookies` only for the
    // events whose responses may carry them (see `event::takes_cookies`).
    let mut response = json!({
        "statusCode": status,
        "headers": headers,
        "multiValueHeaders": {},
        "body": json!({"code": code, "message": message}).to_string(),
        "isBase64Encoded": false,
    });
    if let (true, Some(object)) = (cookies, response.as_object_mut()) {
        object.insert("cookies".into(), json!([]));
    }
    serde_json::from_value(response).ok()
}

/// The answer a layer gives in place of the handler to an HTTP request ([`error_response`]),
/// with the one line that says why (`error.type`, the status and the reason, in the
/// invocation's context: ERROR for a 5xx, WARN otherwise); a 5xx is counted in
/// `HttpServerError` (canary-critical: Lambda counts the invocation a success). `None`, and no
/// line or count, when `R` is not an HTTP response type (never behind [`Keel`](crate::Keel),
/// whose layers carry JSON text): the error is returned, and the logging layer writes its line.
pub(crate) fn refusal<R: DeserializeOwned>(
    error_type: &str,
    status: u16,
    code: &str,
    reason: &dyn std::fmt::Display,
    retry_after: Option<Duration>,
    cookies: bool,
) -> Option<R> {
    let reason = reason.to_string();
    let response = error_response(status, code, &reason, retry_after, cookies)?;
    if status >= 500 {
        crate::metrics::catalog::keel::HTTP_SERVER_ERROR.increment(1);
        tracing::error!("error.type" = error_type, status, reason = %reason, "answered in place of the handler");
    } else {
        tracing::warn!("error.type" = error_type, status, reason = %reason, "answered in place of the handler");
    }
    Some(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_has_the_members_its_integration_accepts() {
        let members = |cookies| {
            let response: serde_json::Value = error_response(
                429,
                "ConcurrencyLimitReached",
                "busy",
                Some(Duration::from_millis(1500)),
                cookies,
            )
            .unwrap();
            assert_eq!(response["headers"]["retry-after"], "1");
            let mut members: Vec<String> = response.as_object().unwrap().keys().cloned().collect();
            members.sort_unstable();
            members
        };
        // REST APIs and ALB: no `cookies` (a REST API answers 502 to them).
        assert_eq!(
            members(false),
            [
                "body",
                "headers",
                "isBase64Encoded",
                "multiValueHeaders",
                "statusCode"
            ]
        );
        assert_eq!(
            members(true),
            [
                "body",
                "cookies",
                "headers",
                "isBase64Encoded",
                "multiValueHeaders",
                "statusCode"
            ]
        );
        // Typed HTTP responses read them.
        let v1: Option<aws_lambda_events::apigw::ApiGatewayProxyResponse> =
            error_response(409, "c", "m", None, false);
        let v2: Option<aws_lambda_events::apigw::ApiGatewayV2httpResponse> =
            error_response(409, "c", "m", None, true);
        assert_eq!(v1.map(|r| r.status_code), Some(409));
        assert_eq!(v2.map(|r| r.status_code), Some(409));
        assert!(error_response::<u32>(409, "c", "m", None, true).is_none());
    }
}
