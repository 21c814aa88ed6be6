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
use serde::Serialize;
use serde_json::value::RawValue;
use tower::Service;

/// A boxed error, as `lambda_runtime` uses.
pub type BoxError = lambda_runtime::Error;

/// An event as Keel's layers carry it: valid JSON text, parsed only where needed.
pub type RawEvent = Box<RawValue>;

/// A response as Keel's layers carry it: the handler's response serialized once, as JSON text
/// (see [`JsonResponse`]).
pub type RawResponse = Box<RawValue>;

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

/// `error_type` of a handler whose response does not serialize to JSON.
pub const UNSERIALIZABLE_RESPONSE: &str = "Keel.UnserializableResponse";

/// `error_type` of a handler that panicked.
pub const HANDLER_PANICKED: &str = "Keel.HandlerPanicked";

/// The handler panicked: the invocation fails with this error (class `crash` when routed)
/// instead of unwinding through the layers, so that it is logged once with its context,
/// counted, routed, and its idempotency key and concurrency slot are released.
#[derive(Debug, thiserror::Error)]
#[error("the handler panicked{}: {message}", location.as_deref().map(|l| format!(" at {l}")).unwrap_or_default())]
pub struct Panicked {
    /// The panic's message (`"Box<dyn Any>"` when it was not a string).
    pub message: String,
    /// Where it panicked (`file:line:column`), when Keel's panic hook saw it (see
    /// `Keel::init`).
    pub location: Option<String>,
}

impl crate::classify::Classify for Panicked {
    fn error_class(&self) -> crate::classify::ErrorClass {
        crate::classify::ErrorClass::Crash
    }
}

thread_local! {
    /// Set while this thread polls a handler: its panic is caught and reported by Keel.
    static IN_HANDLER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// Where the last panic on this thread happened, from the panic hook.
    static PANIC_LOCATION: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// Installs a panic hook that notes where a handler panicked (for [`Panicked`]) and leaves the
/// reporting of such panics to Keel — the message is logged with the invocation's context and
/// redacted, not printed raw on standard error. Other panics go to the hook installed before.
pub fn install_panic_hook() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(install_hook);
}

fn install_hook() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if IN_HANDLER.with(std::cell::Cell::get) {
            let location = info
                .location()
                .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()));
            PANIC_LOCATION.with(|cell| *cell.borrow_mut() = location);
        } else {
            // Lines held for this poll go out before the panic is reported, or the process ends.
            crate::output::write_out_held_lines();
            previous(info);
        }
    }));
}

/// Runs `poll` as a handler's: a panic inside becomes [`Panicked`].
fn catch_panic<T>(poll: impl FnOnce() -> T) -> Result<T, InvocationError> {
    // A location left by a panic the handler caught itself is not this one's.
    PANIC_LOCATION.with(|cell| cell.borrow_mut().take());
    let was_in_handler = IN_HANDLER.with(|flag| flag.replace(true));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(poll));
    IN_HANDLER.with(|flag| flag.set(was_in_handler));
    result.map_err(|payload| {
        let message = payload
            .downcast_ref::<&str>()
            .map(|m| (*m).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "Box<dyn Any>".to_owned());
        let location = PANIC_LOCATION.with(|cell| cell.borrow_mut().take());
        InvocationError::new(HANDLER_PANICKED, Panicked { message, location })
    })
}

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
        // What Lambda returns as `errorMessage`: masked by the process's redaction rules.
        let message = error.source.to_string();
        Diagnostic {
            error_message: crate::redact::Redactor::process()
                .redact_string(&message)
                .into_owned(),
            error_type: error.error_type.into_owned(),
        }
    }
}

/// The event did not match the handler's payload type.
///
/// It names where and what was expected, never the value found: serde's messages quote the
/// offending value (`invalid type: string "a@b.c", expected u32`), and this error reaches the
/// logs, routed envelopes and the `errorMessage` Lambda returns. Map keys in the path are kept
/// only when they look like field names (a letter or `_` first; 40 at most), else `?`.
#[derive(Debug, thiserror::Error)]
#[error("the event does not match the payload type `{expected}` at `{path}`: {message}")]
pub struct InvalidEvent {
    /// The payload type the handler expects.
    pub expected: &'static str,
    /// The JSON path where deserialization failed (`.` for the root).
    pub path: String,
    /// What serde reported, without the values it quoted.
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
#[derive(Debug)]
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
        let called = match parse::<T>(payload.get()) {
            Ok(payload) => catch_panic(|| self.inner.call(LambdaEvent::new(payload, context))),
            Err(invalid) => Err(InvocationError::new(INVALID_EVENT, invalid)),
        };
        match called {
            Ok(handler) => TypedFuture {
                handler: Some(handler),
                rejected: None,
            },
            Err(rejected) => TypedFuture {
                handler: None,
                rejected: Some(rejected),
            },
        }
    }
}

/// Parses `json` as `T`; only when that fails is it parsed again, tracking the path, to say where.
fn parse<T: DeserializeOwned>(json: &str) -> Result<T, InvalidEvent> {
    serde_json::from_str(json).map_err(|_| {
        let tracked = serde_path_to_error::deserialize::<_, T>(&mut serde_json::Deserializer::from_str(json));
        let (path, message) = match tracked {
            Err(error) => (
                path_without_data(error.path()),
                without_values(&error.into_inner().to_string()),
            ),
            Ok(_) => (".".to_owned(), "the event could not be read".to_owned()),
        };
        InvalidEvent {
            expected: std::any::type_name::<T>(),
            path,
            message,
        }
    })
}

/// Whether a key or quoted word from the event may be shown: it looks like a field name (a
/// letter or `_` first, then letters, digits, `_`, `-`, `.`; 40 at most), not like data.
fn is_name_like(text: &str) -> bool {
    let bytes = text.as_bytes();
    (1..=40).contains(&bytes.len())
        && (bytes[0].is_ascii_alphabetic() || bytes[0] == b'_')
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// A deserialization path with the map keys that do not look like names shown as `?`.
fn path_without_data(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut shown = String::new();
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => {
                let _ = fmt::Write::write_fmt(&mut shown, format_args!("[{index}]"));
            }
            Segment::Map { key } | Segment::Enum { variant: key } => {
                shown.push('.');
                shown.push_str(if is_name_like(key) { key } else { "?" });
            }
            Segment::Unknown => shown.push_str(".?"),
        }
    }
    match shown.strip_prefix('.') {
        Some(rest) if !rest.is_empty() => rest.to_owned(),
        _ if shown.is_empty() => ".".to_owned(),
        _ => shown,
    }
}

/// serde's message without the values it quotes: `invalid type: string "a@b.c", expected u32`
/// becomes `invalid type: string, expected u32`, and `unknown variant `x`, expected …`
/// `unknown variant, expected …`. In any other message, quoted strings and quoted words that do
/// not look like names are masked.
fn without_values(message: &str) -> String {
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = message.strip_prefix(prefix) {
            // `<kind> <value>, expected <what>`: the value starts at its quote or backtick.
            let (unexpected, expected) = rest.rsplit_once(", expected ").unwrap_or((rest, ""));
            let kind = unexpected.split(['`', '"']).next().unwrap_or_default().trim_end();
            return format!("{prefix}{kind}, expected {}", mask_quoted(expected));
        }
    }
    if let Some(rest) = message.strip_prefix("unknown variant `") {
        let expected = rest.rsplit_once("`, expected").map_or("", |(_, e)| e);
        return format!("unknown variant, expected{}", mask_quoted(expected));
    }
    mask_quoted(message)
}

/// Masks `"…"` strings, and `` `…` `` words that do not look like names (field names stay).
fn mask_quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find(['"', '`']) {
        let quote = rest[open..].chars().next().unwrap_or('"');
        out.push_str(&rest[..=open]);
        let inner = &rest[open + 1..];
        let Some(close) = inner.find(quote) else {
            out.push_str(crate::redact::MASK);
            return out;
        };
        let word = &inner[..close];
        out.push_str(if quote == '`' && is_name_like(word) {
            word
        } else {
            crate::redact::MASK
        });
        out.push(quote);
        rest = &inner[close + 1..];
    }
    out.push_str(rest);
    out
}

/// Serializes a handler's responses into the [`RawResponse`] Keel's layers carry, once: the
/// idempotency layer stores that text as it is, replays it as it is, and `lambda_runtime` posts
/// it as it is (where it would otherwise serialize the handler's response type again). The
/// handler's error keeps its type (see [`InvocationError::from_handler`]).
///
/// ```
/// use keel_runtime::handler::JsonResponse;
/// use lambda_runtime::{service_fn, LambdaEvent};
/// use tower::{Service, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let mut handler = JsonResponse::new(service_fn(|e: LambdaEvent<u32>| async move {
///     Ok::<_, lambda_runtime::Error>(serde_json::json!({"seats": e.payload}))
/// }));
/// let response = handler.ready().await.unwrap().call(LambdaEvent::new(2, Default::default())).await.unwrap();
/// assert_eq!(response.get(), r#"{"seats":2}"#);
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct JsonResponse<H> {
    inner: H,
}

impl<H> JsonResponse<H> {
    /// Wraps `inner`, a handler whose response serializes.
    pub fn new(inner: H) -> Self {
        Self { inner }
    }
}

impl<H, T> Service<LambdaEvent<T>> for JsonResponse<H>
where
    H: Service<LambdaEvent<T>>,
    H::Response: Serialize,
    H::Error: Into<BoxError> + 'static,
{
    type Response = RawResponse;
    type Error = InvocationError;
    type Future = JsonFuture<H::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(InvocationError::from_handler)
    }

    fn call(&mut self, event: LambdaEvent<T>) -> Self::Future {
        JsonFuture {
            handler: self.inner.call(event),
        }
    }
}

pin_project! {
    /// The future of [`JsonResponse`].
    pub struct JsonFuture<F> {
        #[pin]
        handler: F,
    }
}

impl<F, R, E> Future for JsonFuture<F>
where
    F: Future<Output = Result<R, E>>,
    R: Serialize,
    E: Into<BoxError> + 'static,
{
    type Output = Result<RawResponse, InvocationError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let response =
            std::task::ready!(self.project().handler.poll(cx)).map_err(InvocationError::from_handler)?;
        Poll::Ready(
            serde_json::value::to_raw_value(&response)
                .map_err(|error| InvocationError::new(UNSERIALIZABLE_RESPONSE, error)),
        )
    }
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
        let mut this = self.project();
        match this.handler.as_mut().as_pin_mut() {
            Some(handler) => match catch_panic(|| handler.poll(cx)) {
                Ok(polled) => polled.map_err(InvocationError::from_handler),
                Err(panicked) => {
                    // A future that panicked is never polled again.
                    this.handler.set(None);
                    Poll::Ready(Err(panicked))
                }
            },
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

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Booking {
        seats: u32,
        guests: std::collections::HashMap<String, u32>,
        kind: Option<Kind>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    enum Kind {
        Room,
        Desk,
    }

    #[test]
    fn invalid_events_are_explained_without_their_values() {
        let error = |json: &str| parse::<Booking>(json).unwrap_err().to_string();
        let cases = [
            (
                r#"{"seats": "alice@example.com"}"#,
                "at `seats`: invalid type: string, expected u32",
            ),
            (
                r#"{"seats": 5551234567890}"#,
                "at `seats`: invalid value: integer, expected u32",
            ),
            (
                r#"{"seats": 1, "guests": {"bob@example.com": "x"}}"#,
                "at `guests.?`: invalid type: string, expected u32",
            ),
            (
                r#"{"seats": 1, "guests": {}, "kind": "carol@example.com"}"#,
                "at `kind`: unknown variant, expected `Room` or `Desk`",
            ),
            (
                r#"{"seats": 1, "guests": {}, "dave@example.com": 1}"#,
                "unknown field `***`",
            ),
            (
                r#"{"seats": 1, "guests": {}, "notes": 1}"#,
                "unknown field `notes`",
            ),
            (r#"{"guests": {}}"#, "missing field `seats`"),
        ];
        for (json, expected) in cases {
            let message = error(json);
            assert!(message.contains(expected), "{json}: {message}");
            assert!(
                !message.contains("example.com") && !message.contains("5551234"),
                "{message}"
            );
        }
    }

    #[test]
    fn diagnostic_carries_the_stable_type() {
        let diagnostic: Diagnostic = InvocationError::from_handler(SlotTaken).into();
        assert_eq!(diagnostic.error_type, "SlotTaken");
        assert_eq!(diagnostic.error_message, "slot taken");
    }
}
