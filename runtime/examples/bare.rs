//! The `hello` example without Keel: the same handler on `lambda_runtime` alone. It is the
//! baseline Keel's cold start and binary size are measured against (`scripts/cold-start.sh`).

use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde::Deserialize;

#[derive(Deserialize)]
struct Greeting {
    name: String,
}

async fn handler(event: LambdaEvent<Greeting>) -> Result<String, Error> {
    Ok(format!("hello, {}", event.payload.name))
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::run(service_fn(handler)).await
}
