//! A Keel-wrapped function that logs what it is doing and then never answers: under Lambda, its
//! invocations time out. The extension's timeout handling is tested with it.

use std::time::Duration;

use keel_runtime::{service_fn, BoxError, Keel, LambdaEvent};
use serde_json::Value;

async fn handle(event: LambdaEvent<Value>) -> Result<Value, BoxError> {
    tracing::info!(booking_id = ?event.payload["booking_id"], "booking received");
    tracing::info!("calling the partner's inventory");
    tracing::warn!("the partner is slow to answer");
    tokio::time::sleep(Duration::from_secs(3600)).await;
    Ok(Value::Null)
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    Keel::from_env("sleepy").await?.run(service_fn(handle)).await
}
