//! Answers to HTTP events (API Gateway REST and HTTP APIs, ALB, function URLs) that a layer
//! gives instead of running the handler.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::json;

/// An HTTP response with the JSON body `{code, message}` (and `Retry-After`, in whole seconds
/// and at least 1, when given), as the handler's response type `R` — `None` when `R` is not an
/// HTTP response type.
pub(crate) fn error_response<R: DeserializeOwned>(
    status: u16,
    code: &str,
    message: &str,
    retry_after: Option<Duration>,
) -> Option<R> {
    let mut headers = serde_json::Map::new();
    headers.insert("content-type".into(), "application/json".into());
    if let Some(retry_after) = retry_after {
        headers.insert(
            "retry-after".into(),
            retry_after.as_secs().max(1).to_string().into(),
        );
    }
    // The members every HTTP response type of aws_lambda_events accepts: unknown ones are
    // ignored by the others.
    let response = json!({
        "statusCode": status,
        "headers": headers,
        "multiValueHeaders": {},
        "body": json!({"code": code, "message": message}).to_string(),
        "isBase64Encoded": false,
        "cookies": [],
    });
    serde_json::from_value(response).ok()
}

/// The answer a layer gives in place of the handler to an HTTP request ([`error_response`]),
/// with the one line that says why (`error.type`, the status and the reason, in the
/// invocation's context: ERROR for a 5xx, WARN otherwise); a 5xx is counted in
/// `HttpServerError` (canary-critical: Lambda counts the invocation a success). `None`, and no
/// line or count, when `R` is not an HTTP response type: the error is returned, and the logging
/// layer writes its line.
pub(crate) fn refusal<R: DeserializeOwned>(
    error_type: &str,
    status: u16,
    code: &str,
    reason: &dyn std::fmt::Display,
    retry_after: Option<Duration>,
) -> Option<R> {
    let reason = reason.to_string();
    let response = error_response(status, code, &reason, retry_after)?;
    if status >= 500 {
        crate::metrics::catalog::keel::HTTP_SERVER_ERROR.increment(1);
        tracing::error!("error.type" = error_type, status, reason = %reason, "answered in place of the handler");
    } else {
        tracing::warn!("error.type" = error_type, status, reason = %reason, "answered in place of the handler");
    }
    Some(response)
}
