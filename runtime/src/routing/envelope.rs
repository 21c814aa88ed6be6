//! The routed error envelope: what on-call receives for every failed invocation.
//!
//! Its fields, attributes and size limits: `docs/architecture.md`, "Routed-error envelope".

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::classify::ErrorClass;

/// Who routed an envelope.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The function itself (`keel-runtime`), for an error its handler returned.
    Runtime,
    /// The Keel extension, for a timeout or crash the function could not report.
    Extension,
}

/// One failed invocation, as on-call receives it: the SNS message, or
/// the SQS body, or the `envelope` of the `keel.routed_error` log line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// A new UUID per envelope: subscribers de-duplicate on it.
    pub id: String,
    /// When the error was routed (RFC 3339, milliseconds, UTC).
    pub time: String,
    /// The service (`KEEL_SERVICE`).
    pub service: String,
    /// The Lambda function's name.
    pub function_name: String,
    /// The function version that failed.
    pub function_version: String,
    /// The invocation's request id.
    pub request_id: String,
    /// The invocation's X-Ray trace header, when tracing is on.
    pub xray_trace_id: Option<String>,
    /// The stable error type (`InvocationError::error_type`).
    pub error_type: String,
    /// The error's message, with its causes after `: `.
    pub error_message: String,
    /// Whether a retry can help.
    pub error_class: ErrorClass,
    /// When a retry may succeed, in milliseconds, if the error said (a Keel addition to the
    /// contract; absent otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
    /// Which delivery of the event this was (an SQS record's receive count; 1 otherwise).
    pub attempt: u32,
    /// The event, with sensitive fields masked as in the logs.
    pub event: Value,
    /// Who routed it.
    pub source: Source,
}

impl Envelope {
    /// A fresh envelope id (a random UUID).
    pub fn new_id() -> String {
        uuid::Builder::from_random_bytes(fastrand::u128(..).to_le_bytes())
            .into_uuid()
            .to_string()
    }

    /// The current time as the envelope writes it.
    pub fn now() -> String {
        humantime::format_rfc3339_millis(SystemTime::now()).to_string()
    }
}

/// A retry hint as the envelope carries it, in milliseconds.
pub(crate) fn millis(retry_after: Option<Duration>) -> Option<u64> {
    retry_after.map(|d| d.as_millis().min(u128::from(u64::MAX)) as u64)
}
