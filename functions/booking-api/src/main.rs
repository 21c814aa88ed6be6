//! The booking API (API Gateway HTTP API, payload 2.0), wrapped by Keel.
//!
//! Routes: `POST /bookings` (needs `Idempotency-Key`), `GET /bookings/{id}`,
//! `GET /bookings?customer_id=…&limit=…&cursor=…`, `POST /bookings/{id}/cancel`, `GET /health`,
//! `GET /metadata` and `POST /manager` (see the modules `api` and `manager`). Bookings live in
//! `BOOKINGS_TABLE` (see `store`), never two overlapping for a resource; each new one is
//! announced on `BOOKING_TOPIC_ARN` (see `events`). Keel adds structured logs, EMF metrics (this
//! function's own in `booking_metrics::api`; its 5xx answers counted in Keel's `HttpServerError`),
//! idempotency on the `Idempotency-Key` header (a retry gets the first answer back, marked
//! `Idempotent-Replayed: true`), a concurrency guard per `resource_id`, and error routing; their
//! settings come from the `KEEL_*` variables.

mod api;
mod events;
mod manager;
mod model;
mod store;

use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use booking_metrics::api as metrics;
use keel_runtime::concurrency::ConcurrencyGuard;
use keel_runtime::idempotency::Idempotency;
use keel_runtime::{service_fn, BoxError, Keel, LambdaEvent};

/// Invocations at once per `resource_id` unless `KEEL_CONCURRENCY_LIMIT` says otherwise.
const DEFAULT_CONCURRENCY_PER_RESOURCE: u32 = 10;

/// A variable the function cannot run without.
fn required(name: &'static str) -> Result<String, BoxError> {
    std::env::var(name)
        .ok()
        .filter(|value| !value.trim().is_empty())
        .ok_or_else(|| format!("{name} is not set: booking-api needs it").into())
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let config = keel_runtime::aws::config().await;
    let api = api::Api {
        bookings: store::Bookings::new(
            aws_sdk_dynamodb::Client::new(&config),
            required("BOOKINGS_TABLE")?,
        ),
        events: events::Events::new(aws_sdk_sns::Client::new(&config), required("BOOKING_TOPIC_ARN")?),
        service: "booking-api".to_owned(),
    };
    let idempotency = Idempotency::from_env()
        .await?
        .key_from_header(api::IDEMPOTENCY_KEY)
        .key_optional()
        .local_cache(1024);
    let guard = ConcurrencyGuard::per_key(api::resource_of_creation, DEFAULT_CONCURRENCY_PER_RESOURCE)
        .with_env()
        .await?;
    let handler = service_fn(move |event: LambdaEvent<ApiGatewayV2httpRequest>| {
        let api = api.clone();
        async move { Ok::<ApiGatewayV2httpResponse, BoxError>(api.handle(&event.payload).await) }
    });
    Keel::from_env("booking-api")
        .await?
        .metrics(|config| config.catalogue(metrics::CATALOGUE))
        .idempotency(idempotency)
        .concurrency(guard)
        .run(handler)
        .await
}
