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

/// Writes the one line that says why a layer answered in place of the handler (`error_type`,
/// the HTTP status an HTTP request gets, and the reason), inside the invocation's span: at
/// ERROR when a store failed (status 503), at WARN otherwise.
pub(crate) fn log_refusal(error_type: &str, status: u16, reason: &dyn std::fmt::Display) {
    if status >= 500 {
        tracing::error!("error.type" = error_type, status, reason = %reason, "the request was refused before the handler ran");
    } else {
        tracing::warn!("error.type" = error_type, status, reason = %reason, "the request was refused before the handler ran");
    }
}
