//! What Keel's AWS clients share: the tables its stores need (for infrastructure generators and
//! tests), one SDK configuration with timeouts fit for a request path, and what an SDK failure
//! means for a store (throttled, unavailable or refused).

#[cfg(feature = "dynamodb")]
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

/// A DynamoDB table one of Keel's stores needs: for infrastructure generators and for tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableDefinition {
    /// The partition key (string).
    pub key_attribute: &'static str,
    /// The TTL attribute (epoch seconds).
    pub ttl_attribute: &'static str,
}

/// Time one attempt of an AWS call may take: the stores sit on the request path.
#[cfg(any(feature = "dynamodb", feature = "routing"))]
const ATTEMPT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// Time an AWS call may take with its retries.
#[cfg(any(feature = "dynamodb", feature = "routing"))]
const OPERATION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// The SDK configuration every Keel client is built from: region, credentials and endpoint
/// (`AWS_ENDPOINT_URL`) from the environment; standard retries (3 attempts, from 50 ms of
/// backoff); 1 s per attempt and 3 s per call.
///
/// It is loaded once per process, at the first call, from the environment as it is then (an
/// execution environment's variables do not change), and shared: the region and credentials
/// chains run once, and every Keel client and the function's own clients built from it share
/// one credentials cache. Each client still builds its own HTTP connector.
#[cfg(any(feature = "dynamodb", feature = "routing"))]
pub async fn config() -> aws_config::SdkConfig {
    static CONFIG: tokio::sync::OnceCell<aws_config::SdkConfig> = tokio::sync::OnceCell::const_new();
    CONFIG.get_or_init(load_config).await.clone()
}

#[cfg(any(feature = "dynamodb", feature = "routing"))]
async fn load_config() -> aws_config::SdkConfig {
    let timeouts = aws_config::timeout::TimeoutConfig::builder()
        .operation_attempt_timeout(ATTEMPT_TIMEOUT)
        .operation_timeout(OPERATION_TIMEOUT)
        .build();
    let retries = aws_config::retry::RetryConfig::standard()
        .with_max_attempts(3)
        .with_initial_backoff(std::time::Duration::from_millis(50));
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .timeout_config(timeouts)
        .retry_config(retries)
        .load()
        .await
}

/// The kind of an SDK failure.
#[cfg(feature = "dynamodb")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The service refused for capacity; retrying later may succeed.
    Throttled,
    /// The service could not be reached or answered with a server error.
    Unavailable,
    /// Any other refusal (missing table, access denied, invalid request).
    Rejected,
}

/// The kind of `error`, and its description with every cause.
#[cfg(feature = "dynamodb")]
pub(crate) fn failure<E, R>(error: &SdkError<E, R>) -> (Failure, String)
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let described = DisplayErrorContext(error).to_string();
    let kind = match error {
        SdkError::ServiceError(service) => match service.err().code() {
            Some(
                "ProvisionedThroughputExceededException"
                | "ThrottlingException"
                | "RequestLimitExceeded"
                | "LimitExceededException",
            ) => Failure::Throttled,
            Some("InternalServerError" | "ServiceUnavailable" | "InternalFailure") => Failure::Unavailable,
            _ => Failure::Rejected,
        },
        _ => Failure::Unavailable,
    };
    (kind, described)
}

/// Whether `error` is a failed condition of a conditional write.
#[cfg(feature = "dynamodb")]
pub(crate) fn is_condition_failure<E: ProvideErrorMetadata, R>(error: &SdkError<E, R>) -> bool {
    matches!(error, SdkError::ServiceError(service) if service.err().code() == Some("ConditionalCheckFailedException"))
}
