//! The booking API: accepts booking requests from API Gateway (HTTP API, payload 2.0).
//!
//! `POST /bookings` with `{"resource_id", "customer_id", "start", "end", "seats"}` answers
//! `201 {"booking_id", "status": "REQUESTED"}`; an invalid request answers `400 {code, message}`.
//! Keel wraps the handler: structured logs, EMF metrics (`BookingCreated`).

mod booking;

use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use keel_runtime::{service_fn, BoxError, Keel, LambdaEvent};

async fn handle(event: LambdaEvent<ApiGatewayV2httpRequest>) -> Result<ApiGatewayV2httpResponse, BoxError> {
    Ok(booking::route(&event.payload, &event.context.request_id))
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    Keel::from_env("booking-api").await?.run(service_fn(handle)).await
}
