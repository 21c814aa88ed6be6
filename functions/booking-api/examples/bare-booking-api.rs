//! booking-api's start without Keel: the same SDK clients (DynamoDB and SNS, from one SDK
//! configuration loaded from the environment) on `lambda_runtime` alone, answering an API
//! Gateway HTTP API request with the service's metadata. It is the baseline of booking-api's
//! cold start (`scripts/cold-start.sh`): what booking-api's first `GET /metadata` costs beyond
//! this is Keel's.

use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use aws_lambda_events::encodings::Body;
use lambda_runtime::{service_fn, Error, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await;
    let bookings = aws_sdk_dynamodb::Client::new(&config);
    let events = aws_sdk_sns::Client::new(&config);
    let table = std::env::var("BOOKINGS_TABLE")?;
    let handler = service_fn(move |_: LambdaEvent<ApiGatewayV2httpRequest>| {
        // The clients stay alive as booking-api's do; the metadata needs no call.
        let _ = (&bookings, &events);
        let body = serde_json::json!({
            "service": "booking-api", "version": env!("CARGO_PKG_VERSION"), "table": table
        });
        let mut response = ApiGatewayV2httpResponse::default();
        response.status_code = 200;
        response.body = Some(Body::Text(body.to_string()));
        async move { Ok::<_, Error>(response) }
    });
    lambda_runtime::run(handler).await
}
