//! The booking API: accepts booking requests from API Gateway (HTTP API, payload 2.0).
//!
//! `POST /bookings` with `{"resource_id", "customer_id", "start", "end", "seats"}` answers
//! `201 {"booking_id", "status": "REQUESTED"}`; an invalid request answers `400 {code, message}`.
//! Keel wraps the handler: structured logs, EMF metrics (`BookingCreated`), and idempotency on
//! the `Idempotency-Key` header — a retried request gets the first answer back, marked
//! `Idempotent-Replayed: true`, and never books twice. Records go to `KEEL_IDEMPOTENCY_TABLE`
//! (DynamoDB) when it is set, else stay in memory.

mod booking;
mod metrics;

use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use keel_runtime::idempotency::Idempotency;
use keel_runtime::{service_fn, BoxError, Keel, LambdaEvent};

async fn handle(event: LambdaEvent<ApiGatewayV2httpRequest>) -> Result<ApiGatewayV2httpResponse, BoxError> {
    Ok(booking::route(&event.payload, &event.context.request_id))
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let idempotency = Idempotency::from_env()
        .await?
        .key_from_header("Idempotency-Key")
        .local_cache(1024);
    Keel::from_env("booking-api")
        .await?
        .metrics(|config| config.catalogue(metrics::CATALOGUE))
        .idempotency(idempotency)
        .run(service_fn(handle))
        .await
}
