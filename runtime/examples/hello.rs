//! The smallest Keel function: structured logs and EMF metrics around a typed handler.
//!
//! Run it under the Lambda emulator (`cargo lambda watch`) or deploy it as a `provided.al2023`
//! function; invoke it with `{"name": "Ada"}`.

use keel_runtime::{service_fn, BoxError, Keel, LambdaEvent};
use serde::Deserialize;

#[derive(Deserialize)]
struct Greeting {
    name: String,
}

async fn handler(event: LambdaEvent<Greeting>) -> Result<String, BoxError> {
    tracing::info!(name = %event.payload.name, "greeting");
    metrics::counter!("Greetings").increment(1);
    Ok(format!("hello, {}", event.payload.name))
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    Keel::from_env("hello").await?.run(service_fn(handler)).await
}
