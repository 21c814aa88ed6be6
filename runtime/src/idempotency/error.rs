//! Why a request was not run or replayed, and how each reason is classified and answered.

use std::time::Duration;

use super::StoreError;
use crate::classify::{Classify, ErrorClass};

/// Why a request was not run or replayed.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdempotencyError {
    /// The event has no idempotency key (and requests without one are refused).
    #[error("no idempotency key: {0}")]
    MissingKey(String),
    /// Another invocation is running the request with this key.
    #[error("a request with this idempotency key is still in progress; retry after {}s", retry_after.as_secs())]
    InProgress {
        /// When the running invocation's deadline passes, at the latest.
        retry_after: Duration,
    },
    /// The key was used before with a different payload.
    #[error("this idempotency key was already used with a different payload")]
    KeyReused,
    /// The request ran, but its response was too large to store, so it cannot be replayed.
    #[error(
        "this request was already processed, but its response was too large to keep and cannot be replayed"
    )]
    ResponseNotStored,
    /// The stored response cannot be read back as the handler's response type.
    #[error("the stored response cannot be replayed: {0}")]
    CorruptResponse(String),
    /// The store failed and requests fail closed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl IdempotencyError {
    /// The stable `error_type` reported to Lambda and in logs.
    pub fn error_type(&self) -> &'static str {
        match self {
            IdempotencyError::MissingKey(_) => "Keel.Idempotency.MissingKey",
            IdempotencyError::InProgress { .. } => "Keel.Idempotency.InProgress",
            IdempotencyError::KeyReused => "Keel.Idempotency.KeyReused",
            IdempotencyError::ResponseNotStored => "Keel.Idempotency.ResponseNotStored",
            IdempotencyError::CorruptResponse(_) => "Keel.Idempotency.CorruptResponse",
            IdempotencyError::Store(_) => "Keel.Idempotency.StoreUnavailable",
        }
    }

    /// The HTTP status and the `code` of the JSON body for HTTP events.
    pub fn http_status(&self) -> (u16, &'static str) {
        match self {
            IdempotencyError::MissingKey(_) => (400, "IdempotencyKeyMissing"),
            IdempotencyError::InProgress { .. } => (409, "IdempotencyKeyInProgress"),
            IdempotencyError::KeyReused => (422, "IdempotencyKeyReused"),
            IdempotencyError::ResponseNotStored => (409, "IdempotentResponseUnavailable"),
            IdempotencyError::CorruptResponse(_) => (500, "IdempotentResponseCorrupt"),
            IdempotencyError::Store(_) => (503, "IdempotencyStoreUnavailable"),
        }
    }
}

/// Why [`Idempotency::once`](super::Idempotency::once) did not return a result.
#[derive(Debug, thiserror::Error)]
pub enum OnceError<E> {
    /// The idempotency rules refused (in progress, key reused, store failure).
    #[error(transparent)]
    Idempotency(IdempotencyError),
    /// The work itself failed (its record was released, so a retry runs it again).
    #[error("{0}")]
    Work(E),
}

impl Classify for StoreError {
    fn error_class(&self) -> ErrorClass {
        match self {
            StoreError::Throttled(_) | StoreError::Unavailable(_) => ErrorClass::Transient,
            StoreError::NotOwner | StoreError::Malformed(_) | StoreError::Rejected(_) => {
                ErrorClass::Permanent
            }
        }
    }
}

impl Classify for IdempotencyError {
    fn error_class(&self) -> ErrorClass {
        match self {
            IdempotencyError::InProgress { .. } => ErrorClass::Transient,
            IdempotencyError::Store(store) => store.error_class(),
            _ => ErrorClass::Permanent,
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            IdempotencyError::InProgress { retry_after } => Some(*retry_after),
            _ => None,
        }
    }

    fn is_back_pressure(&self) -> bool {
        matches!(self, IdempotencyError::InProgress { .. })
    }
}
