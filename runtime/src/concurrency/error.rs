//! Why an invocation did not get a slot, and how each reason is classified and answered.

use std::time::Duration;

use super::SlotError;
use crate::classify::{Classify, ErrorClass};
use crate::handler::InvocationError;

/// Why an invocation did not get a slot.
#[derive(Debug, thiserror::Error)]
pub enum ConcurrencyError {
    /// Every slot of the key is taken (HTTP 429).
    #[error("every one of the {limit} concurrency slots for `{key}` is taken; retry later")]
    Rejected {
        /// The key.
        key: String,
        /// Its limit.
        limit: u32,
        /// When to retry.
        retry_after: Duration,
    },
    /// The slot store failed and the guard fails closed (HTTP 503).
    #[error(transparent)]
    Store(#[from] SlotError),
}

impl ConcurrencyError {
    /// The stable error type Lambda reports.
    pub fn error_type(&self) -> &'static str {
        match self {
            ConcurrencyError::Rejected { .. } => "Keel.Concurrency.Rejected",
            ConcurrencyError::Store(_) => "Keel.Concurrency.StoreUnavailable",
        }
    }
}

impl Classify for ConcurrencyError {
    fn error_class(&self) -> ErrorClass {
        match self {
            ConcurrencyError::Rejected { .. } => ErrorClass::Transient,
            ConcurrencyError::Store(SlotError::Rejected(_)) => ErrorClass::Permanent,
            ConcurrencyError::Store(_) => ErrorClass::Transient,
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            ConcurrencyError::Rejected { retry_after, .. } => Some(*retry_after),
            ConcurrencyError::Store(_) => None,
        }
    }

    fn is_back_pressure(&self) -> bool {
        matches!(self, ConcurrencyError::Rejected { .. })
    }
}

impl From<ConcurrencyError> for InvocationError {
    fn from(error: ConcurrencyError) -> Self {
        InvocationError::new(error.error_type(), error)
    }
}
