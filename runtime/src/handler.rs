//! The bridge between Keel's layers and a user's typed handler.
//!
//! Keel's layers see every invocation as `LambdaEvent<RawEvent>`: the event's JSON text, checked
//! but not parsed into a tree. An event that does not match the handler's payload type still
//! reaches every layer, so it is logged, counted and answered with a clear error instead of being
//! rejected by the runtime first; and the payload is parsed once, straight into the handler's
//! type. [`TypedHandler`] does that parsing (reporting the JSON path that failed) and turns the
//! handler's error into an [`InvocationError`] with a stable `error_type`.

use std::borrow::Cow;
use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

use lambda_runtime::{Diagnostic, LambdaEvent};
use pin_project_lite::pin_project;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use tower::Service;

/// A boxed error, as `lambda_runtime` uses.
pub type BoxError = lambda_runtime::Error;

/// An event as Keel's layers carry it: valid JSON text, parsed only where needed.
pub type RawEvent = Box<RawValue>;

/// The error type every Keel layer sees: a stable `error_type` and the error that caused it.
///
/// `error_type` is what Lambda reports as `errorType`, what the logs carry as `error.type` and
/// what error routing classifies; it is stable across releases, unlike a Rust type path.
/// Create one yourself to choose the type a handler error is reported with:
///
/// ```
/// use keel_runtime::InvocationError;
///
/// let error = InvocationError::new("Booking.Conflict", "resource already booked for that slot");
/// assert_eq!(error.error_type(), "Booking.Conflict");
/// assert_eq!(error.to_string(), "resource already booked for that slot");
/// ```
///
/// Its `Debug` output holds only the type and the message (the runtime logs errors with
/// `Debug`), never the fields of the underlying error.
pub struct InvocationError {
    error_type: Cow<'static, str>,
    source: BoxError,
}

/// `error_type` of an event that does not match the handler's payload type.
pub const INVALID_EVENT: &str = "Keel.InvalidEvent";

impl InvocationError {
    /// An error reported with the given `error_type`.
    pub fn new(error_type: impl Into<Cow<'static, str>>, source: impl Into<BoxError>) -> Self {
        Self {
            error_type: error_type.into(),
            source: source.into(),
        }
    }

    /// Wraps a handler's error. An `InvocationError` inside keeps its type; any other error is
    /// reported under the last segment of its Rust type name (`BookingError`), or `Error` for
    /// opaque boxed errors.
    pub fn from_handler<E: Into<BoxError> + 'static>(error: E) -> Self {
        let error_type = short_type_name(std::any::type_name::<E>());
        match error.into().downcast::<InvocationError>() {
            Ok(already) => *already,
            Err(other) => Self::new(error_type, other),
        }
    }

    /// The stable error type, e.g. `Keel.InvalidEvent` or `BookingError`.
    pub fn error_type(&self) -> &str {
        &self.error_type
    }

    /// The error that caused this one.
    pub fn inner(&self) -> &(dyn StdError + Send + Sync + 'static) {
        &*self.source
    }

    /// The messages of the causes below the top-level error, outermost first.
    pub fn source_chain(&self) -> impl Iterator<Item = String> + '_ {
        std::iter::successors(self.source.source(), |&e| e.source()).map(|e| e.to_string())
    }
}

/// `my_crate::module::BookingError<T>` → `BookingError`; boxed trait objects → `Error`.
fn short_type_name(full: &'static str) -> Cow<'static, str> {
    if full.contains("dyn ") || full.ends_with("::Error") {
        return Cow::Borrowed("Error");
    }
    let without_generics = full.split('<').next().unwrap_or(full);
    Cow::Borrowed(without_generics.rsplit("::").next().unwrap_or(without_generics))
}

impl fmt::Display for InvocationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.source, f)
    }
}

impl fmt::Debug for InvocationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InvocationError")
            .field("error_type", &self.error_type)
            .field("message", &self.source.to_string())
            .finish()
    }
}

impl StdError for InvocationError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source.source()
    }
}

impl From<InvocationError> for Diagnostic {
    fn from(error: InvocationError) -> Self {
        Diagnostic {
            error_message: error.source.to_string(),
            error_type: error.error_type.into_owned(),
        }
    }
}

/// The event did not match the handler's payload type.
#[derive(Debug, thiserror::Error)]
#[error("the event does not match the payload type `{expected}` at `{path}`: {message}")]
pub struct InvalidEvent {
    /// The payload type the handler expects.
    pub expected: &'static str,
    /// The JSON path where deserialization failed (`.` for the root).
    pub path: String,
    /// What serde reported.
    pub message: String,
}

/// Adapts a handler of `LambdaEvent<T>` to the `LambdaEvent<RawEvent>` that Keel's layers carry.
///
/// ```
/// use keel_runtime::{handler::TypedHandler, InvocationError};
/// use lambda_runtime::{service_fn, LambdaEvent};
/// use tower::{Service, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// #[derive(serde::Deserialize)]
/// struct Booking { seats: u32 }
///
/// let mut handler = TypedHandler::new(service_fn(|e: LambdaEvent<Booking>| async move {
///     Ok::<_, lambda_runtime::Error>(e.payload.seats)
/// }));
/// let raw = serde_json::value::to_raw_value(&serde_json::json!({"seats": "two"})).unwrap();
/// let bad = LambdaEvent::new(raw, Default::default());
/// let error: InvocationError = handler.ready().await.unwrap().call(bad).await.unwrap_err();
/// assert_eq!(error.error_type(), "Keel.InvalidEvent");
/// # }
/// ```
pub struct TypedHandler<H, T> {
    inner: H,
    _payload: PhantomData<fn(T)>,
}

impl<H, T> TypedHandler<H, T> {
    /// Wraps `inner`, a service of `LambdaEvent<T>`.
    pub fn new(inner: H) -> Self {
        Self {
            inner,
            _payload: PhantomData,
        }
    }
}

impl<H: Clone, T> Clone for TypedHandler<H, T> {
    fn clone(&self) -> Self {
        Self::new(self.inner.clone())
    }
}

impl<H, T> Service<LambdaEvent<RawEvent>> for TypedHandler<H, T>
where
    H: Service<LambdaEvent<T>>,
    H::Error: Into<BoxError> + 'static,
    T: DeserializeOwned,
{
    type Response = H::Response;
    type Error = InvocationError;
    type Future = TypedFuture<H::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(InvocationError::from_handler)
    }

    fn call(&mut self, event: LambdaEvent<RawEvent>) -> Self::Future {
        let (payload, context) = event.into_parts();
        match parse::<T>(payload.get()) {
            Ok(payload) => TypedFuture {
                handler: Some(self.inner.call(LambdaEvent::new(payload, context))),
                rejected: None,
            },
            Err(invalid) => TypedFuture {
                handler: None,
                rejected: Some(InvocationError::new(INVALID_EVENT, invalid)),
            },
        }
    }
}

/// Parses `json` as `T`; only when that fails is it parsed again, tracking the path, to say where.
fn parse<T: DeserializeOwned>(json: &str) -> Result<T, InvalidEvent> {
    serde_json::from_str(json).map_err(|_| {
        let tracked = serde_path_to_error::deserialize::<_, T>(&mut serde_json::Deserializer::from_str(json));
        let (path, message) = match tracked {
            Err(error) => (error.path().to_string(), error.into_inner().to_string()),
            Ok(_) => (".".to_owned(), "the event could not be read".to_owned()),
        };
        InvalidEvent {
            expected: std::any::type_name::<T>(),
            path,
            message,
        }
    })
}

pin_project! {
    /// The future of [`TypedHandler`]: the handler's, or the error for an invalid event.
    pub struct TypedFuture<F> {
        #[pin]
        handler: Option<F>,
        rejected: Option<InvocationError>,
    }
}

impl<F, R, E> Future for TypedFuture<F>
where
    F: Future<Output = Result<R, E>>,
    E: Into<BoxError> + 'static,
{
    type Output = Result<R, InvocationError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.handler.as_pin_mut() {
            Some(handler) => handler.poll(cx).map_err(InvocationError::from_handler),
            None => match this.rejected.take() {
                Some(error) => Poll::Ready(Err(error)),
                None => panic!("TypedFuture polled after completion"),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("slot taken")]
    struct SlotTaken;

    #[test]
    fn handler_errors_get_short_stable_types() {
        assert_eq!(InvocationError::from_handler(SlotTaken).error_type(), "SlotTaken");
        let boxed: BoxError = "boom".into();
        assert_eq!(InvocationError::from_handler(boxed).error_type(), "Error");
        let own = InvocationError::new("Booking.Conflict", "taken");
        let boxed: BoxError = Box::new(own);
        assert_eq!(
            InvocationError::from_handler(boxed).error_type(),
            "Booking.Conflict"
        );
    }

    #[test]
    fn diagnostic_carries_the_stable_type() {
        let diagnostic: Diagnostic = InvocationError::from_handler(SlotTaken).into();
        assert_eq!(diagnostic.error_type, "SlotTaken");
        assert_eq!(diagnostic.error_message, "slot taken");
    }
}
