//! Booking requests: validation and the HTTP answers.

use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use aws_lambda_events::encodings::Body;
use aws_lambda_events::http::header::{HeaderValue, CONTENT_TYPE};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// A booking request as clients send it.
#[derive(Debug, Deserialize, Serialize)]
pub(crate) struct BookingRequest {
    pub resource_id: String,
    pub customer_id: String,
    pub start: String,
    pub end: String,
    #[serde(default = "one")]
    pub seats: u32,
    /// Contact details: logged only redacted.
    #[serde(default)]
    pub email: Option<String>,
}

fn one() -> u32 {
    1
}

/// Why a request was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum Rejected {
    #[error("no route for {0}")]
    NoRoute(String),
    #[error("the body is not a valid booking request: {0}")]
    InvalidBody(String),
    #[error("{0}")]
    Invalid(&'static str),
}

impl Rejected {
    fn status_and_code(&self) -> (i64, &'static str) {
        match self {
            Rejected::NoRoute(_) => (404, "NotFound"),
            Rejected::InvalidBody(_) | Rejected::Invalid(_) => (400, "InvalidRequest"),
        }
    }
}

/// Answers one API Gateway request.
pub(crate) fn route(request: &ApiGatewayV2httpRequest, request_id: &str) -> ApiGatewayV2httpResponse {
    let method = request.request_context.http.method.as_str();
    let path = request.raw_path.as_deref().unwrap_or("/");
    tracing::debug!(method, path, "routing request");
    let outcome = match (method, path) {
        ("POST", "/bookings") => create(request.body.as_deref(), request_id),
        _ => Err(Rejected::NoRoute(format!("{method} {path}"))),
    };
    match outcome {
        Ok(body) => respond(201, &body),
        Err(rejected) => {
            let (status, code) = rejected.status_and_code();
            tracing::warn!(status, code, reason = %rejected, "booking request refused");
            respond(status, &json!({"code": code, "message": rejected.to_string()}))
        }
    }
}

fn create(body: Option<&str>, request_id: &str) -> Result<serde_json::Value, Rejected> {
    let body = body.ok_or(Rejected::Invalid("the request has no body"))?;
    let booking: BookingRequest =
        serde_json::from_str(body).map_err(|e| Rejected::InvalidBody(e.to_string()))?;
    tracing::debug!(booking = %body, "booking request parsed");
    validate(&booking)?;
    let booking_id = format!("bk-{:016x}", fastrand::u64(..));
    crate::metrics::BOOKING_CREATED.increment(1);
    tracing::info!(
        booking_id,
        resource_id = %booking.resource_id,
        seats = booking.seats,
        request_id,
        "booking requested"
    );
    Ok(json!({"booking_id": booking_id, "status": "REQUESTED"}))
}

fn validate(booking: &BookingRequest) -> Result<(), Rejected> {
    if booking.resource_id.trim().is_empty() {
        return Err(Rejected::Invalid("resource_id is empty"));
    }
    if booking.customer_id.trim().is_empty() {
        return Err(Rejected::Invalid("customer_id is empty"));
    }
    if booking.seats == 0 || booking.seats > 20 {
        return Err(Rejected::Invalid("seats must be from 1 to 20"));
    }
    if booking.start >= booking.end {
        return Err(Rejected::Invalid("start must be before end"));
    }
    Ok(())
}

fn respond(status: i64, body: &serde_json::Value) -> ApiGatewayV2httpResponse {
    let mut response = ApiGatewayV2httpResponse::default();
    response.status_code = status;
    response
        .headers
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response.body = Some(Body::Text(body.to_string()));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: &str, path: &str, body: Option<&str>) -> ApiGatewayV2httpRequest {
        let mut request = ApiGatewayV2httpRequest::default();
        request.request_context.http.method = method.parse().unwrap();
        request.raw_path = Some(path.into());
        request.body = body.map(str::to_owned);
        request
    }

    #[test]
    fn creates_a_booking() {
        let body = r#"{"resource_id":"room-1","customer_id":"c-1","start":"2026-12-01T10:00","end":"2026-12-01T11:00"}"#;
        let response = route(&request("POST", "/bookings", Some(body)), "req");
        assert_eq!(response.status_code, 201);
    }

    #[test]
    fn refuses_bad_requests() {
        let cases = [
            (request("GET", "/nothing", None), 404),
            (request("POST", "/bookings", None), 400),
            (request("POST", "/bookings", Some("{")), 400),
            (
                request(
                    "POST",
                    "/bookings",
                    Some(r#"{"resource_id":"r","customer_id":"c","start":"b","end":"a"}"#),
                ),
                400,
            ),
        ];
        for (request, status) in cases {
            assert_eq!(route(&request, "req").status_code, status);
        }
    }
}
