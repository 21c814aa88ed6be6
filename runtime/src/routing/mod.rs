//! Error routing: every failed invocation reaches on-call with enough context to act, and
//! nothing is lost.
//!
//! Behind an [`ErrorRoutingLayer`], a handler error becomes an [`Envelope`] (the error, its [class](ErrorClass), the invocation, and the event with
//! sensitive fields masked as in the logs) delivered through a chain that always ends
//! somewhere:
//!
//! 1. the Keel extension's relay (`KEEL_EXTENSION_ADDR`), which acknowledges at once and
//!    publishes after the response — the booking response never waits for SNS;
//! 2. otherwise the SNS topic (`KEEL_ERROR_TOPIC_ARN`), with the message attributes
//!    `error_class` and `service` for subscription filters;
//! 3. when that fails, the SQS dead-letter queue (`KEEL_DLQ_URL`), with the same attributes;
//! 4. when that fails too, an ERROR log line `keel.routed_error` holding the whole envelope.
//!
//! The relay is reached over one kept-alive connection ([`RelayClient`]), which also carries the
//! notice [`InvocationOverLayer`] sends after each response (`Keel::run` installs it when there
//! is a relay): the invocation is over, and this many envelopes were handed over for it, so the
//! extension can let Lambda freeze the environment without waiting for telemetry.
//!
//! Each envelope is counted where it landed, in `RoutedError{sink}`. Publishing stays within
//! the invocation's remaining time (half of it for the topic, the rest for the queue). The
//! handler's error is returned to Lambda unchanged, after routing.
//!
//! ```no_run
//! use keel_runtime::routing::ErrorRouting;
//!
//! # async fn example() -> Result<(), keel_runtime::ConfigError> {
//! let routing = ErrorRouting::from_env("booking-api").await?; // KEEL_ERROR_TOPIC_ARN, KEEL_DLQ_URL, …
//! # Ok(()) }
//! ```
//!
//! Errors are classified by [`Classify`] for the types registered with
//! [`ErrorRouting::classify`], by Keel for its own errors, and otherwise by default: throttling,
//! timeouts and unreachable dependencies are transient, everything else permanent. Back-pressure
//! is not a failure and is not routed: a duplicate refused because its first attempt is still
//! running (`Keel.Idempotency.InProgress`), or an invocation refused by a full concurrency guard
//! (`Keel.Concurrency.Rejected`).

mod deliver;
mod envelope;
mod invocation_over;
mod relay;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use lambda_runtime::{Context, LambdaEvent};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

pub use deliver::{Sink, MAX_ERROR_MESSAGE_BYTES, MAX_MESSAGE_BYTES};
pub use envelope::{Envelope, Source};
pub use invocation_over::{InvocationOverFuture, InvocationOverLayer, InvocationOverService};
pub use relay::{RelayClient, RelayError, ENVELOPES_PATH, HANDED_ENTRIES, NOTICE_PATH};

use crate::classify::{self, is_back_pressure, Classification, Classifier, Classify, ErrorClass};
use crate::clock;
use crate::config::{parse_var, ConfigError};
use crate::function::{service_name, var, FunctionInfo};
use crate::handler::{InvocationError, RawEvent};
use crate::redact::Redactor;
use deliver::Sinks;

/// Where the Keel extension listens for envelopes unless told otherwise.
pub const DEFAULT_RELAY_ADDR: &str = "127.0.0.1:9124";

/// How long the relay has to acknowledge (it is on the same host and answers at once).
const RELAY_TIMEOUT: Duration = Duration::from_millis(100);

/// Publishing time when the deadline is unknown (the Lambda emulator reports one in the past).
const DEFAULT_FALLBACK_BUDGET: Duration = Duration::from_secs(3);

/// Where routed errors go and how they are built; see the [module docs](self).
#[derive(Clone, Debug)]
pub struct ErrorRouting {
    service: String,
    function: FunctionInfo,
    sinks: Sinks,
    relay: Option<RelayClient>,
    redactor: Redactor,
    classifiers: Vec<Classifier>,
    fallback_budget: Duration,
}

impl ErrorRouting {
    /// Routing for `service` with no topic, queue or relay yet: envelopes go to the log until
    /// [`topic`](Self::topic) and [`dead_letter_queue`](Self::dead_letter_queue) say otherwise.
    pub fn new(service: impl Into<String>) -> Self {
        let function = FunctionInfo::from_env();
        Self {
            service: service_name(service.into(), &function),
            function,
            sinks: Sinks::default(),
            relay: None,
            redactor: Redactor::default(),
            classifiers: Vec::new(),
            fallback_budget: DEFAULT_FALLBACK_BUDGET,
        }
    }

    /// From the environment: the topic `KEEL_ERROR_TOPIC_ARN`, the queue `KEEL_DLQ_URL`, the
    /// relay `KEEL_EXTENSION_ADDR` (unset: publish directly; the extension listens on
    /// [`DEFAULT_RELAY_ADDR`] by default) and the fields `KEEL_REDACT_FIELDS` masks. The SNS and
    /// SQS clients come from the environment (`AWS_ENDPOINT_URL` included), with the timeouts and
    /// retries every Keel client gets (1 s per attempt, 3 s per call, 3 attempts).
    pub async fn from_env(service: impl Into<String>) -> Result<Self, ConfigError> {
        let relay = parse_var(
            "KEEL_EXTENSION_ADDR",
            "an address and port such as 127.0.0.1:9124",
            |v| v.parse::<SocketAddr>().ok(),
        )?;
        let mut routing = Self::new(service);
        routing.relay = relay.map(RelayClient::new);
        if let Some(fields) = var("KEEL_REDACT_FIELDS") {
            routing.redactor = Redactor::from_list(&fields);
        }
        let topic = var("KEEL_ERROR_TOPIC_ARN");
        let queue = var("KEEL_DLQ_URL");
        #[cfg(not(feature = "routing"))]
        if let Some(variable) = [("KEEL_ERROR_TOPIC_ARN", topic), ("KEEL_DLQ_URL", queue)]
            .into_iter()
            .find_map(|(name, value)| value.map(|_| name))
        {
            return Err(ConfigError::FeatureMissing {
                variable,
                feature: "routing",
            });
        }
        #[cfg(feature = "routing")]
        if topic.is_some() || queue.is_some() {
            let config = crate::aws::config().await;
            if let Some(arn) = topic {
                routing = routing.topic(aws_sdk_sns::Client::new(&config), arn);
            }
            if let Some(url) = queue {
                routing = routing.dead_letter_queue(aws_sdk_sqs::Client::new(&config), url);
            }
        }
        Ok(routing)
    }

    /// Publishes envelopes to the SNS topic `arn` first.
    #[cfg(feature = "routing")]
    #[must_use]
    pub fn topic(mut self, client: aws_sdk_sns::Client, arn: impl Into<String>) -> Self {
        self.sinks.topic = Some((client, arn.into()));
        self
    }

    /// Sends envelopes the topic did not take to the SQS queue `url`.
    #[cfg(feature = "routing")]
    #[must_use]
    pub fn dead_letter_queue(mut self, client: aws_sdk_sqs::Client, url: impl Into<String>) -> Self {
        self.sinks.dlq = Some((client, url.into()));
        self
    }

    /// Hands envelopes to the Keel extension listening on `addr` (publishing directly when it
    /// does not acknowledge), over one kept-alive connection (see [`RelayClient`]).
    #[must_use]
    pub fn relay(mut self, addr: SocketAddr) -> Self {
        self.relay = Some(RelayClient::new(addr));
        self
    }

    /// The client of the extension's relay, when one is configured: the
    /// [`InvocationOverLayer`] sends its notices through it.
    pub fn relay_client(&self) -> Option<&RelayClient> {
        self.relay.as_ref()
    }

    /// Publishes directly, without the extension's relay.
    #[must_use]
    pub fn without_relay(mut self) -> Self {
        self.relay = None;
        self
    }

    /// Masks these fields of the event in envelopes (the logging rules, by default).
    #[must_use]
    pub fn redact(mut self, redactor: Redactor) -> Self {
        self.redactor = redactor;
        self
    }

    /// Asks errors of type `E` (anywhere in an error's chain) for their class.
    #[must_use]
    pub fn classify<E: Classify + std::error::Error + 'static>(mut self) -> Self {
        self.classifiers.push(classify::classifier::<E>());
        self
    }

    /// The function details envelopes carry (from the Lambda environment by default).
    #[must_use]
    pub fn function(mut self, function: FunctionInfo) -> Self {
        self.function = function;
        self
    }

    /// How long publishing may take when the invocation's deadline is unknown (default 3 s).
    #[must_use]
    pub fn fallback_budget(mut self, budget: Duration) -> Self {
        self.fallback_budget = budget;
        self
    }

    /// Whether `error` is back-pressure (see [`Classify::is_back_pressure`]): not routed.
    pub(crate) fn is_back_pressure(&self, error: &InvocationError) -> bool {
        is_back_pressure(error, &self.classifiers)
    }

    /// The class of `error` (see [`Classify`]).
    pub fn classification(&self, error: &InvocationError) -> Classification {
        classify::classify(error, &self.classifiers)
    }

    /// The envelope of `error`, raised by the invocation `context` on `event` (its JSON text),
    /// the `attempt`-th delivery of that event.
    pub fn envelope(
        &self,
        error: &InvocationError,
        event: &str,
        context: &Context,
        attempt: u32,
    ) -> Envelope {
        let invocation = Invocation {
            request_id: context.request_id.clone(),
            xray_trace_id: context.xray_trace_id.clone(),
            deadline_ms: context.deadline,
        };
        self.envelope_of(error, event, &invocation, attempt)
    }

    fn envelope_of(
        &self,
        error: &InvocationError,
        event: &str,
        invocation: &Invocation,
        attempt: u32,
    ) -> Envelope {
        let classification = self.classification(error);
        let mut error_message = error.to_string();
        for cause in error.source_chain() {
            error_message.push_str(": ");
            error_message.push_str(&cause);
        }
        let error_message = self.message(&error_message);
        Envelope {
            id: Envelope::new_id(),
            time: Envelope::now(),
            service: self.service.clone(),
            function_name: self.function.name.clone(),
            function_version: self.function.version.clone(),
            request_id: invocation.request_id.clone(),
            xray_trace_id: invocation.xray_trace_id.clone(),
            error_type: error.error_type().to_owned(),
            error_message,
            error_class: classification.class,
            retry_after_ms: envelope::millis(classification.retry_after),
            attempt,
            event: deliver::event_value(event, &self.redactor),
            source: Source::Runtime,
        }
    }

    /// An error message as envelopes carry it: redacted, and cut to
    /// [`MAX_ERROR_MESSAGE_BYTES`].
    fn message(&self, message: &str) -> String {
        let redacted = self.redactor.redact_string(message);
        deliver::cut(&redacted, MAX_ERROR_MESSAGE_BYTES).unwrap_or_else(|| redacted.into_owned())
    }

    /// The envelope of a failure reported from outside the handler (the Keel extension reports
    /// timeouts and crashes it saw in the Telemetry API): `event` is whatever context it has
    /// (the function's last log lines, say), redacted like the events of the function's own
    /// envelopes.
    pub fn report(
        &self,
        source: Source,
        request_id: &str,
        error_type: &str,
        error_message: String,
        error_class: ErrorClass,
        mut event: serde_json::Value,
    ) -> Envelope {
        self.redactor.redact(&mut event);
        let error_message = self.message(&error_message);
        Envelope {
            id: Envelope::new_id(),
            time: Envelope::now(),
            service: self.service.clone(),
            function_name: self.function.name.clone(),
            function_version: self.function.version.clone(),
            request_id: request_id.to_owned(),
            xray_trace_id: None,
            error_type: error_type.to_owned(),
            error_message,
            error_class,
            retry_after_ms: None,
            attempt: 1,
            event,
            source,
        }
    }

    /// Writes `envelope` whole to the log as `keel.routed_error` (counted in
    /// `RoutedError{sink=log}`), without trying the topic or the queue: for envelopes left when
    /// there is no time to publish.
    pub fn write_to_log(&self, envelope: &Envelope) {
        deliver::write_to_log(&deliver::message_body(envelope));
        crate::metrics::catalog::keel::ROUTED_ERROR.increment_with(1, &[Sink::Log.as_str()]);
    }

    /// Delivers `envelope`: to the relay when one is configured and acknowledges, otherwise
    /// [published](Self::publish) within the time left before `deadline_ms`.
    ///
    /// `RoutedError{sink}` counts each envelope once, where it finally landed: an envelope the
    /// relay took is counted by the extension when it publishes it, not here.
    pub async fn route(&self, envelope: &Envelope, deadline_ms: u64) -> Sink {
        if let Some(relay) = &self.relay {
            let body = deliver::message_body(envelope);
            match relay.hand_over(&envelope.request_id, body, RELAY_TIMEOUT).await {
                Ok(()) => {
                    tracing::debug!(envelope_id = %envelope.id, "the routed error was handed to the extension's relay");
                    return Sink::Relay;
                }
                Err(reason) => tracing::warn!(
                    relay = %relay.addr(),
                    reason = %reason,
                    "the extension's relay did not take the routed error; publishing it directly"
                ),
            }
        }
        self.publish(envelope, deadline_ms).await
    }

    /// Publishes `envelope` through the topic, the queue and the log, within the time left
    /// before `deadline_ms` (epoch ms; a past or zero deadline means unknown).
    pub async fn publish(&self, envelope: &Envelope, deadline_ms: u64) -> Sink {
        self.sinks.publish(envelope, self.budget(deadline_ms)).await
    }

    /// The publishing time left before `deadline_ms`.
    fn budget(&self, deadline_ms: u64) -> Duration {
        clock::time_left(deadline_ms, clock::DEADLINE_MARGIN).unwrap_or(self.fallback_budget)
    }
}

/// Tower layer that routes the errors of the service it wraps; see the [module docs](self).
#[derive(Clone, Debug)]
pub struct ErrorRoutingLayer {
    routing: Option<Arc<ErrorRouting>>,
}

impl ErrorRoutingLayer {
    /// Errors are routed as `routing` says.
    pub fn new(routing: ErrorRouting) -> Self {
        Self {
            routing: Some(Arc::new(routing)),
        }
    }

    /// A layer that routes nothing (routing not configured).
    pub fn disabled() -> Self {
        Self { routing: None }
    }

    /// The layer, for `lambda_runtime::Runtime::layer`, that tells the Keel extension each
    /// invocation is over through this routing's relay; a pass-through when there is none.
    pub fn invocation_over(&self) -> InvocationOverLayer {
        match self.routing.as_ref().and_then(|routing| routing.relay_client()) {
            Some(relay) => InvocationOverLayer::new(relay.clone()),
            None => InvocationOverLayer::disabled(),
        }
    }
}

impl<S> Layer<S> for ErrorRoutingLayer {
    type Service = ErrorRoutingService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ErrorRoutingService {
            inner,
            routing: self.routing.clone(),
        }
    }
}

/// The service of [`ErrorRoutingLayer`].
#[derive(Clone, Debug)]
pub struct ErrorRoutingService<S> {
    inner: S,
    routing: Option<Arc<ErrorRouting>>,
}

/// What an invocation keeps to build its envelope, should it fail.
struct Kept {
    routing: Arc<ErrorRouting>,
    event: RawEvent,
    invocation: Invocation,
}

/// The parts of the invocation's context an envelope needs.
struct Invocation {
    request_id: String,
    xray_trace_id: Option<String>,
    deadline_ms: u64,
}

impl<S, R> Service<LambdaEvent<RawEvent>> for ErrorRoutingService<S>
where
    S: Service<LambdaEvent<RawEvent>, Response = R, Error = InvocationError>,
    R: Send + 'static,
{
    type Response = R;
    type Error = InvocationError;
    type Future = ErrorRoutingFuture<S::Future, R>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, event: LambdaEvent<RawEvent>) -> Self::Future {
        let kept = self.routing.clone().map(|routing| Kept {
            routing,
            event: event.payload.clone(),
            invocation: Invocation {
                request_id: event.context.request_id.clone(),
                xray_trace_id: event.context.xray_trace_id.clone(),
                deadline_ms: event.context.deadline,
            },
        });
        ErrorRoutingFuture {
            state: RoutingState::Handler {
                handler: self.inner.call(event),
                kept,
            },
        }
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

pin_project! {
    /// The future of [`ErrorRoutingService`].
    pub struct ErrorRoutingFuture<F, R> {
        #[pin]
        state: RoutingState<F, R>,
    }
}

pin_project! {
    #[project = RoutingProjection]
    enum RoutingState<F, R> {
        // The handler runs.
        Handler { #[pin] handler: F, kept: Option<Kept> },
        // It failed: the error is being routed, then returned.
        Routing { routing: BoxFuture<Result<R, InvocationError>> },
    }
}

impl<F, R> Future for ErrorRoutingFuture<F, R>
where
    F: Future<Output = Result<R, InvocationError>>,
    R: Send + 'static,
{
    type Output = Result<R, InvocationError>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        loop {
            let next = match state.as_mut().project() {
                RoutingProjection::Handler { handler, kept } => {
                    let error = match std::task::ready!(handler.poll(cx)) {
                        Err(error) => error,
                        result => return Poll::Ready(result),
                    };
                    let Some(Kept {
                        routing,
                        event,
                        invocation,
                    }) = kept.take()
                    else {
                        return Poll::Ready(Err(error));
                    };
                    if routing.is_back_pressure(&error) {
                        return Poll::Ready(Err(error));
                    }
                    let envelope = routing.envelope_of(&error, event.get(), &invocation, 1);
                    RoutingState::Routing {
                        routing: Box::pin(async move {
                            routing.route(&envelope, invocation.deadline_ms).await;
                            Err(error)
                        }),
                    }
                }
                RoutingProjection::Routing { routing } => return routing.as_mut().poll(cx),
            };
            state.set(next);
        }
    }
}
