//! What an AWS SDK failure means for Keel's stores: throttled, unavailable or refused.

use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

/// The kind of an SDK failure.
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
pub(crate) fn is_condition_failure<E: ProvideErrorMetadata, R>(error: &SdkError<E, R>) -> bool {
    matches!(error, SdkError::ServiceError(service) if service.err().code() == Some("ConditionalCheckFailedException"))
}
