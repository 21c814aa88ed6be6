//! The AWS side of the hook: the target invoked through Lambda's `Invoke` API, and the result
//! reported with CodeDeploy's `PutLifecycleEventHookExecutionStatus`.

use std::time::Duration;

use aws_sdk_codedeploy::types::LifecycleEventStatus;
use aws_sdk_lambda::error::{DisplayErrorContext, SdkError};
use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::InvocationType;

use crate::checks::Invoked;
use crate::hook::{HookEvent, Reporter, Status, Target};

/// The SDK configuration of both clients: region, credentials and endpoints from the
/// environment (`AWS_ENDPOINT_URL_LAMBDA`, `AWS_ENDPOINT_URL_CODEDEPLOY` included).
pub(crate) async fn config() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await
}

/// The target function, invoked synchronously (`RequestResponse`).
#[derive(Clone, Debug)]
pub(crate) struct LambdaTarget {
    client: aws_sdk_lambda::Client,
    function: String,
}

impl LambdaTarget {
    /// `function` (a name, or a version's or alias's ARN), invoked with two attempts at most:
    /// a throttled invocation is tried once more; the check's own timeout bounds both.
    pub(crate) fn new(config: &aws_config::SdkConfig, function: impl Into<String>) -> Self {
        let retries = aws_config::retry::RetryConfig::standard().with_max_attempts(2);
        let config = aws_sdk_lambda::config::Builder::from(config)
            .retry_config(retries)
            .build();
        Self {
            client: aws_sdk_lambda::Client::from_conf(config),
            function: function.into(),
        }
    }
}

#[async_trait::async_trait]
impl Target for LambdaTarget {
    async fn invoke(&self, event: Vec<u8>) -> Result<Invoked, String> {
        let invoked = self
            .client
            .invoke()
            .function_name(&self.function)
            .invocation_type(InvocationType::RequestResponse)
            .payload(Blob::new(event))
            .send()
            .await;
        match invoked {
            Ok(output) => Ok(Invoked {
                payload: output.payload.map(Blob::into_inner).unwrap_or_default(),
                function_error: output.function_error,
            }),
            Err(error) => {
                function_error_document(&error).ok_or_else(|| DisplayErrorContext(&error).to_string())
            }
        }
    }
}

/// A failed invocation answered with a status other than 200 and the function's own error
/// document (`{"errorType", "errorMessage"}`), as the Lambda emulator answers one, read as
/// the function error it is.
fn function_error_document<E>(
    error: &SdkError<E, aws_sdk_lambda::config::http::HttpResponse>,
) -> Option<Invoked> {
    let SdkError::ServiceError(service) = error else {
        return None;
    };
    let payload = service.raw().body().bytes()?;
    let document: serde_json::Value = serde_json::from_slice(payload).ok()?;
    document.get("errorType")?;
    Some(Invoked {
        payload: payload.to_vec(),
        function_error: Some("Unhandled".to_owned()),
    })
}

/// CodeDeploy, told the lifecycle hook's status.
#[derive(Clone, Debug)]
pub(crate) struct CodeDeploy {
    client: aws_sdk_codedeploy::Client,
}

impl CodeDeploy {
    /// A client with standard retries (3 attempts), 2 s per attempt and 5 s in all.
    pub(crate) fn new(config: &aws_config::SdkConfig) -> Self {
        let timeouts = aws_config::timeout::TimeoutConfig::builder()
            .operation_attempt_timeout(Duration::from_secs(2))
            .operation_timeout(Duration::from_secs(5))
            .build();
        let config = aws_sdk_codedeploy::config::Builder::from(config)
            .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(3))
            .timeout_config(timeouts)
            .build();
        Self {
            client: aws_sdk_codedeploy::Client::from_conf(config),
        }
    }
}

#[async_trait::async_trait]
impl Reporter for CodeDeploy {
    async fn report(&self, event: &HookEvent, status: Status) -> Result<(), String> {
        let status = match status {
            Status::Succeeded => LifecycleEventStatus::Succeeded,
            Status::Failed => LifecycleEventStatus::Failed,
        };
        self.client
            .put_lifecycle_event_hook_execution_status()
            .deployment_id(&event.deployment_id)
            .lifecycle_event_hook_execution_id(&event.lifecycle_event_hook_execution_id)
            .status(status)
            .send()
            .await
            .map(drop)
            .map_err(|error| DisplayErrorContext(error).to_string())
    }
}
