//! Structured JSON logs for every invocation.
//!
//! Two pieces work together:
//! - [`StructuredLogLayer`], a `tracing-subscriber` layer that writes each `tracing` event as one
//!   JSON line (or text, with `AWS_LAMBDA_LOG_FORMAT=Text`) carrying `timestamp`, `level`,
//!   `message`, `service`, `function_name`, `function_version`, `function_memory_size`, the
//!   invocation's context and the event's own fields, with sensitive fields masked;
//! - [`LoggingLayer`], a tower layer that opens the invocation span (`function_request_id`,
//!   `xray_trace_id`, `cold_start`, `correlation_id`) around the handler and logs its failure
//!   with `error.type`, `error.message` and `error.source_chain`.
//!
//! DEBUG lines of an invocation are held in a bounded buffer and written only if the invocation
//! logs an error or fails; a share of invocations (`KEEL_LOG_SAMPLE_RATE`) is logged at DEBUG
//! from the start.

mod config;
mod subscriber;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use lambda_runtime::LambdaEvent;
use pin_project_lite::pin_project;
use serde_json::Value;
use tower::{Layer, Service};
use tracing::{field, Span};

pub use config::{LogConfig, LogFormat, DEFAULT_DEBUG_BUFFER};
pub use subscriber::StructuredLogLayer;

use crate::handler::{InvocationError, RawEvent};
use crate::json::reader;

/// Name of the span that [`LoggingService`] opens around each invocation.
pub const INVOCATION_SPAN: &str = "lambda_invocation";
/// Target of that span (this module's path).
const INVOCATION_TARGET: &str = module_path!();

/// Where the correlation id of an invocation is found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CorrelationId {
    /// A header of an API Gateway, ALB or function URL event (matched case-insensitively).
    Header(String),
    /// A JSON pointer into the event, e.g. `/requestContext/requestId`.
    Pointer(String),
}

impl CorrelationId {
    /// Finds the id in the JSON text of an event; `Err` says why it is not there.
    pub fn find(&self, event: &str) -> Result<String, String> {
        let found = match self {
            CorrelationId::Header(name) => {
                let members = reader::members(event).ok_or_else(|| not_an_object(event))?;
                crate::event::header(Some(&members), name)
                    .map_err(|_| format!("the event has no header `{name}`"))?
            }
            CorrelationId::Pointer(pointer) => match reader::pointer(event, pointer) {
                Some(found) => found,
                None if reader::members(event).is_none() => return Err(not_an_object(event)),
                None => return Err(format!("the event has nothing at `{pointer}`")),
            },
        };
        Ok(crate::event::text_of(found).into_owned())
    }
}

/// Says what kind of JSON value `event` is, for an event that is not an object.
fn not_an_object(event: &str) -> String {
    let kind = match serde_json::from_str::<Value>(event) {
        Ok(Value::Null) => "null",
        Ok(Value::Bool(_)) => "boolean",
        Ok(Value::Number(_)) => "number",
        Ok(Value::String(_)) => "string",
        Ok(Value::Array(_)) => "array",
        Ok(Value::Object(_)) | Err(_) => "text that is not valid JSON",
    };
    format!("the event is a JSON {kind}, not an object")
}

/// Tower layer that runs each invocation inside its logging span; see the [module docs](self).
///
/// ```
/// use keel_runtime::logging::{CorrelationId, LoggingLayer};
///
/// let layer = LoggingLayer::new().correlation_id(CorrelationId::Header("x-correlation-id".into()));
/// ```
#[derive(Clone, Debug, Default)]
pub struct LoggingLayer {
    settings: Settings,
}

#[derive(Clone, Debug, Default)]
struct Settings {
    correlation_id: Option<CorrelationId>,
    log_event: bool,
    /// Set by the first invocation through any service of this layer: one layer serves one
    /// process, so that invocation is the cold start.
    warm: Arc<AtomicBool>,
}

impl LoggingLayer {
    /// No correlation id, events not logged.
    pub fn new() -> Self {
        Self::default()
    }

    /// Where each invocation's `correlation_id` comes from.
    #[must_use]
    pub fn correlation_id(mut self, source: CorrelationId) -> Self {
        self.settings.correlation_id = Some(source);
        self
    }

    /// Logs every incoming event at DEBUG (redacted by the log layer like any JSON field), so
    /// that it is among the buffered lines written when the invocation fails.
    #[must_use]
    pub fn log_event(mut self) -> Self {
        self.settings.log_event = true;
        self
    }
}

impl<S> Layer<S> for LoggingLayer {
    type Service = LoggingService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        LoggingService {
            inner,
            settings: Arc::new(self.settings.clone()),
        }
    }
}

/// The service of [`LoggingLayer`].
#[derive(Clone, Debug)]
pub struct LoggingService<S> {
    inner: S,
    settings: Arc<Settings>,
}

impl<S> Service<LambdaEvent<RawEvent>> for LoggingService<S>
where
    S: Service<LambdaEvent<RawEvent>, Error = InvocationError>,
{
    type Response = S::Response;
    type Error = InvocationError;
    type Future = LoggingFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, event: LambdaEvent<RawEvent>) -> Self::Future {
        let cold_start = !self.settings.warm.swap(true, Ordering::Relaxed);
        let context = &event.context;
        // Every field known now is given at once: a span's fields are rendered as they are
        // recorded, and each later record renders again.
        let span = tracing::info_span!(
            INVOCATION_SPAN,
            function_request_id = %context.request_id,
            xray_trace_id = context.xray_trace_id.as_deref(),
            cold_start,
            correlation_id = field::Empty,
        );
        {
            let _entered = span.enter();
            if let Some(source) = &self.settings.correlation_id {
                match source.find(event.payload.get()) {
                    Ok(id) => {
                        span.record("correlation_id", id.as_str());
                    }
                    Err(reason) => tracing::warn!("no correlation id for this invocation: {reason}"),
                }
            }
            if self.settings.log_event && tracing::enabled!(tracing::Level::DEBUG) {
                // The event is valid JSON (the runtime checked it): the log layer parses and
                // redacts it like any JSON field.
                tracing::debug!(event = event.payload.get(), "incoming event");
            }
        }
        let inner = self.inner.call(event);
        LoggingFuture {
            inner,
            span,
            finished: false,
        }
    }
}

pin_project! {
    /// The future of [`LoggingService`]: polls the handler inside the invocation span and logs
    /// its failure, or its panic or cancellation when dropped before it finished.
    pub struct LoggingFuture<F> {
        #[pin]
        inner: F,
        span: Span,
        finished: bool,
    }

    impl<F> PinnedDrop for LoggingFuture<F> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if !*this.finished {
                let _entered = this.span.enter();
                tracing::error!(
                    "error.type" = "Keel.InvocationAborted",
                    "invocation ended without a result: the handler panicked or was cancelled"
                );
            }
        }
    }
}

impl<F, R> Future for LoggingFuture<F>
where
    F: Future<Output = Result<R, InvocationError>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // The lines of this poll are written together when it ends.
        crate::output::holding_lines(|| self.poll_held(cx))
    }
}

impl<F, R> LoggingFuture<F>
where
    F: Future<Output = Result<R, InvocationError>>,
{
    fn poll_held(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<R, InvocationError>> {
        let this = self.project();
        let _entered = this.span.enter();
        let result = std::task::ready!(this.inner.poll(cx));
        *this.finished = true;
        if let Err(error) = &result {
            let chain = Value::Array(error.source_chain().map(Value::String).collect());
            if chain.as_array().is_some_and(Vec::is_empty) {
                tracing::error!(
                    "error.type" = error.error_type(),
                    "error.message" = %error,
                    "invocation failed"
                );
            } else {
                tracing::error!(
                    "error.type" = error.error_type(),
                    "error.message" = %error,
                    "error.source_chain" = %chain,
                    "invocation failed"
                );
            }
        }
        Poll::Ready(result)
    }
}
