//! Error classification: whether retrying a failed invocation can help, and whether a failure
//! is back-pressure (an answer asking the caller to come back) rather than a fault.
//!
//! Every error type that knows its class implements [`Classify`]: Keel's own errors in their
//! modules, a handler's errors where they are defined (registered with
//! [`ErrorRouting::classify`](crate::routing::ErrorRouting::classify)). `classify` asks the
//! registered types first, then Keel's, then falls back to defaults.

use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::handler::InvocationError;

/// The class of a routed error, as the envelope's `error_class` and the SNS/SQS message
/// attribute of the same name carry it (subscribers filter on it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ErrorClass {
    /// Retrying the same request fails the same way (bad input, a refused booking).
    Permanent,
    /// Retrying later may succeed (throttling, a dependency timing out or unreachable).
    Transient,
    /// The invocation ran out of time (reported by the extension).
    Timeout,
    /// The runtime crashed (reported by the extension).
    Crash,
}

impl ErrorClass {
    /// The lowercase name: `permanent`, `transient`, `timeout` or `crash`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Permanent => "permanent",
            ErrorClass::Transient => "transient",
            ErrorClass::Timeout => "timeout",
            ErrorClass::Crash => "crash",
        }
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Implemented by error types that know their class. Register a handler error type with
/// [`ErrorRouting::classify`](crate::routing::ErrorRouting::classify) so that routing asks it:
///
/// ```
/// use std::time::Duration;
/// use keel_runtime::classify::{Classify, ErrorClass};
///
/// #[derive(Debug, thiserror::Error)]
/// enum BookingError {
///     #[error("the slot is taken")]
///     SlotTaken,
///     #[error("the payment provider is rate limiting us")]
///     PaymentThrottled,
/// }
///
/// impl Classify for BookingError {
///     fn error_class(&self) -> ErrorClass {
///         match self {
///             BookingError::SlotTaken => ErrorClass::Permanent,
///             BookingError::PaymentThrottled => ErrorClass::Transient,
///         }
///     }
///
///     fn retry_after(&self) -> Option<Duration> {
///         matches!(self, BookingError::PaymentThrottled).then(|| Duration::from_secs(30))
///     }
/// }
/// ```
pub trait Classify {
    /// The class of this error.
    fn error_class(&self) -> ErrorClass;

    /// When a retry may succeed, if the error knows (e.g. a `Retry-After` it was given).
    fn retry_after(&self) -> Option<Duration> {
        None
    }

    /// Whether the error is back-pressure: an answer asking the caller to come back shortly (a
    /// duplicate whose first attempt is still running, a full concurrency guard), not a fault.
    /// Routing leaves such errors out: on-call has nothing to act on.
    fn is_back_pressure(&self) -> bool {
        false
    }
}

/// What an error says of itself: its class, a retry hint, whether it is back-pressure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Classification {
    /// The class.
    pub class: ErrorClass,
    /// When a retry may succeed, if known.
    pub retry_after: Option<Duration>,
    /// Back-pressure, not a fault (see [`Classify::is_back_pressure`]).
    pub back_pressure: bool,
}

impl Classification {
    fn of(error: &dyn Classify) -> Self {
        Self {
            class: error.error_class(),
            retry_after: error.retry_after(),
            back_pressure: error.is_back_pressure(),
        }
    }
}

/// Asks one registered error type for its class.
pub(crate) type Classifier = fn(&(dyn StdError + 'static)) -> Option<Classification>;

/// The [`Classifier`] of `E`.
pub(crate) fn classifier<E: Classify + StdError + 'static>() -> Classifier {
    classification_of::<E>
}

/// Words in an error's type or message that mean "try again later", as AWS services and common
/// clients spell them (lowercase).
const TRANSIENT_WORDS: &[&str] = &[
    "throttl",
    "too many requests",
    "toomanyrequests",
    "rate exceeded",
    "ratelimit",
    "rate limit",
    "provisionedthroughputexceeded",
    "requestlimitexceeded",
    "slowdown",
    "timed out",
    "timeout",
    "serviceunavailable",
    "service unavailable",
    "temporarily unavailable",
    "connection refused",
    "connection reset",
    "dispatch failure",
];

/// Classifies `error`: the registered types first (outermost error first, then its causes),
/// then Keel's own errors, then the defaults — AWS throttling, timeouts and unreachable
/// dependencies are transient, everything else permanent.
pub(crate) fn classify(error: &InvocationError, registered: &[Classifier]) -> Classification {
    if let Some(found) = own_classification(error, registered) {
        return found;
    }
    let top: &(dyn StdError + 'static) = error.inner();
    let chain = || std::iter::successors(Some(top), |&e| e.source());
    let transient_io = chain().any(|link| {
        link.downcast_ref::<std::io::Error>().is_some_and(|io| {
            use std::io::ErrorKind::*;
            matches!(
                io.kind(),
                TimedOut | ConnectionRefused | ConnectionReset | ConnectionAborted | BrokenPipe | Interrupted
            )
        }) || link.is::<tokio::time::error::Elapsed>()
    });
    let transient_words = std::iter::once(error.error_type().to_owned())
        .chain(chain().map(|link| link.to_string()))
        .any(|text| {
            let text = text.to_ascii_lowercase();
            TRANSIENT_WORDS.iter().any(|word| text.contains(word))
        });
    Classification {
        class: if transient_io || transient_words {
            ErrorClass::Transient
        } else {
            ErrorClass::Permanent
        },
        retry_after: None,
        back_pressure: false,
    }
}

/// The classification `error` gives itself, if it is an `E`: the [`Classifier`] of `E`.
pub(crate) fn classification_of<E: Classify + StdError + 'static>(
    error: &(dyn StdError + 'static),
) -> Option<Classification> {
    error.downcast_ref::<E>().map(|e| Classification::of(e))
}

/// The classification of the first error along `error`'s chain that knows its own: a
/// `registered` type, else one of Keel's (the crate root lists them: `KEEL_ERRORS`).
fn own_classification(error: &InvocationError, registered: &[Classifier]) -> Option<Classification> {
    let top: &(dyn StdError + 'static) = error.inner();
    std::iter::successors(Some(top), |&e| e.source()).find_map(|link| {
        registered
            .iter()
            .chain(crate::KEEL_ERRORS.iter())
            .find_map(|classify| classify(link))
    })
}

/// Whether `error` is back-pressure (answered "come back shortly"), not a fault to route.
pub(crate) fn is_back_pressure(error: &InvocationError, registered: &[Classifier]) -> bool {
    own_classification(error, registered).is_some_and(|found| found.back_pressure)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::idempotency::{IdempotencyError, StoreError};

    #[derive(Debug, thiserror::Error)]
    #[error("slot taken")]
    struct SlotTaken;

    impl Classify for SlotTaken {
        fn error_class(&self) -> ErrorClass {
            ErrorClass::Transient
        }
        fn retry_after(&self) -> Option<Duration> {
            Some(Duration::from_secs(5))
        }
    }

    fn class_of(error: InvocationError) -> ErrorClass {
        classify(&error, &[]).class
    }

    #[test]
    fn throttling_and_timeouts_are_transient_by_default() {
        let throttled = InvocationError::new("ThrottlingException", "Rate exceeded");
        assert_eq!(class_of(throttled), ErrorClass::Transient);
        let timed_out = std::io::Error::new(std::io::ErrorKind::TimedOut, "read");
        assert_eq!(
            class_of(InvocationError::new("Io", timed_out)),
            ErrorClass::Transient
        );
        let ddb = InvocationError::new("Error", "ProvisionedThroughputExceededException: slow down");
        assert_eq!(class_of(ddb), ErrorClass::Transient);
        let invalid = InvocationError::new(crate::handler::INVALID_EVENT, "missing field `seats`");
        assert_eq!(class_of(invalid), ErrorClass::Permanent);
    }

    #[test]
    fn registered_types_and_keel_errors_know_their_class() {
        let registered = [classifier::<SlotTaken>()];
        let found = classify(&InvocationError::from_handler(SlotTaken), &registered);
        assert_eq!(found.class, ErrorClass::Transient);
        assert_eq!(found.retry_after, Some(Duration::from_secs(5)));
        // Unregistered, the same error falls back to the defaults.
        assert_eq!(
            class_of(InvocationError::from_handler(SlotTaken)),
            ErrorClass::Permanent
        );
        let store = IdempotencyError::Store(StoreError::Throttled("busy".into()));
        assert_eq!(class_of(InvocationError::from(store)), ErrorClass::Transient);
        assert_eq!(
            class_of(InvocationError::from(IdempotencyError::KeyReused)),
            ErrorClass::Permanent
        );
    }
}
