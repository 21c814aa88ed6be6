//! # keel-runtime
//!
//! Keel wraps an AWS Lambda handler written for [`lambda_runtime`] with the layers on-call and
//! release engineering need, as [tower] middleware:
//!
//! - [`logging`]: one JSON line per log event with the Lambda context (`function_request_id`,
//!   `xray_trace_id`, `cold_start`, `correlation_id`, …), DEBUG lines buffered until an error,
//!   per-invocation debug sampling, redaction of sensitive fields;
//! - [`metrics`]: every `metrics::counter!/gauge!/histogram!` call of an invocation written as
//!   CloudWatch Embedded Metric Format when it ends, valid by construction, from a
//!   [catalogue](metrics::catalog) that dashboards and alarms can be generated from.
//!
//! ```no_run
//! use keel_runtime::{Keel, LambdaEvent};
//!
//! #[derive(serde::Deserialize)]
//! struct Booking { resource_id: String }
//!
//! async fn handler(event: LambdaEvent<Booking>) -> Result<String, keel_runtime::BoxError> {
//!     tracing::info!(resource_id = %event.payload.resource_id, "booking received");
//!     metrics::counter!("BookingsSeen").increment(1);
//!     Ok("ok".into())
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), keel_runtime::BoxError> {
//!     Keel::from_env("booking-api").await?.run(keel_runtime::service_fn(handler)).await
//! }
//! ```
//!
//! - [`idempotency`]: each request runs at most once per key, with records in DynamoDB (or in
//!   memory), duplicates answered with the stored response;
//! - [`routing`]: every handler error delivered to on-call as an envelope (SNS topic, else the
//!   dead-letter queue, else the log), through the Keel extension when it runs;
//! - [`concurrency`]: at most N invocations at once per key, across execution environments;
//! - [`batch`]: SQS batches processed record by record, reporting exactly the failed records;
//! - [`fault`]: the fault switch, off by default: a share of one version's invocations failing
//!   (`Keel.InjectedFault`) or slowed down, for canary replays (`KEEL_FAULT_*`).
//!
//! Layers run in this order, outermost first: logging (the invocation span) → metrics (flushed
//! after every invocation) → error routing → idempotency (a replayed duplicate never reaches
//! the handler, nor takes a slot) → concurrency guard → the fault switch (an injected failure
//! is an ordinary handler error; a pass-through when off) → the typed handler (the event is
//! deserialized inside Keel, so a bad event is logged and answered with a clear
//! `Keel.InvalidEvent` error). Each layer can also be used alone: see
//! [`logging::LoggingLayer`], [`metrics::MetricsLayer`], [`routing::ErrorRoutingLayer`],
//! [`idempotency::IdempotencyLayer`], [`concurrency::ConcurrencyGuardLayer`] and
//! [`fault::FaultLayer`].
//! A handler's response is serialized once, as the handler returns it ([`handler::JsonResponse`]):
//! the layers carry that JSON text, the idempotency layer stores and replays it as it is, and
//! the runtime posts it as it is.
//!
//! What the layers share has a module of its own: [`classify`] (error classes and
//! back-pressure), [`redact`] (masking for every output), [`clock`] (epoch milliseconds,
//! deadlines and the margins kept from them), [`aws`] (the tables the stores need, one SDK
//! configuration), and, inside the crate, the JSON reader and canonical writer and the event
//! lookups every layer uses. `docs/architecture.md` in the repository describes the layers,
//! one invocation's data flow and every contract.
//!
//! # Features
//!
//! - `dynamodb` (default): [`idempotency::DynamoDbStore`] and [`concurrency::DynamoDbSlots`].
//! - `routing` (default): routed errors published to SNS and an SQS dead-letter queue.
//!
//! Without them no AWS SDK is compiled or linked: logs, metrics, the in-memory stores and
//! routing through the extension's relay (or to the log) still work, and a variable that needs
//! a missing feature (`KEEL_IDEMPOTENCY_TABLE`, `KEEL_CONCURRENCY_TABLE`, `KEEL_ERROR_TOPIC_ARN`,
//! `KEEL_DLQ_URL`) stops start-up with [`ConfigError::FeatureMissing`].

pub mod aws;
pub mod batch;
pub mod classify;
pub mod clock;
pub mod concurrency;
mod config;
mod event;
pub mod fault;
mod function;
pub mod handler;
mod hash;
mod http;
pub mod idempotency;
mod json;
pub mod logging;
pub mod metrics;
pub mod output;
mod ready;
pub mod redact;
pub mod routing;

use std::fmt;

use lambda_runtime::Runtime;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tower::{Layer, Service};
use tracing_subscriber::layer::SubscriberExt;

pub use config::ConfigError;
pub use function::FunctionInfo;
pub use handler::{BoxError, InvocationError, RawEvent, RawResponse};
pub use lambda_runtime::{service_fn, Context, LambdaEvent};

use concurrency::{ConcurrencyGuard, ConcurrencyGuardLayer, ConcurrencyGuardService};
use fault::{FaultInjection, FaultLayer, FaultService};
use handler::{JsonResponse, TypedHandler};
use idempotency::{Idempotency, IdempotencyLayer, IdempotencyService};
use logging::{CorrelationId, LogConfig, LoggingLayer, LoggingService, StructuredLogLayer};
use metrics::{MetricsConfig, MetricsLayer, MetricsService};
use output::Output;
use routing::{ErrorRouting, ErrorRoutingLayer, ErrorRoutingService};

/// Keel's own error types, each classified by its module (see [`classify::Classify`]): routing
/// asks them after the types a handler registered.
pub(crate) static KEEL_ERRORS: [classify::Classifier; 5] = [
    classify::classification_of::<idempotency::IdempotencyError>,
    classify::classification_of::<idempotency::StoreError>,
    classify::classification_of::<concurrency::ConcurrencyError>,
    classify::classification_of::<handler::Panicked>,
    classify::classification_of::<fault::InjectedFault>,
];

/// A handler wrapped in every Keel layer, as [`Keel::service`] builds it: events in and
/// responses out as JSON text ([`RawEvent`], [`RawResponse`]), each parsed or serialized once.
pub type KeelService<H, T> = LoggingService<
    MetricsService<
        ErrorRoutingService<
            IdempotencyService<ConcurrencyGuardService<FaultService<TypedHandler<JsonResponse<H>, T>>>>,
        >,
    >,
>;

/// The Keel builder: configuration for every layer, read from `KEEL_*` variables and adjusted
/// with its methods, then [`Keel::run`] to serve invocations.
#[derive(Clone, Debug)]
pub struct Keel {
    log: LogConfig,
    logging: LoggingLayer,
    metrics: MetricsConfig,
    routing: ErrorRoutingLayer,
    idempotency: IdempotencyLayer,
    concurrency: ConcurrencyGuardLayer,
    fault: FaultInjection,
}

impl Keel {
    /// Defaults for `service`, ignoring `KEEL_*` variables (the function's own details still come
    /// from the Lambda environment).
    pub fn new(service: impl Into<String>) -> Self {
        let service = service.into();
        Self {
            log: LogConfig::new(service.clone()),
            logging: LoggingLayer::new(),
            metrics: MetricsConfig::new(service),
            routing: ErrorRoutingLayer::disabled(),
            idempotency: IdempotencyLayer::disabled(),
            concurrency: ConcurrencyGuardLayer::disabled(),
            fault: FaultInjection::new(),
        }
    }

    /// Reads the configuration for `service` from the environment.
    ///
    /// Besides the variables of [`LogConfig`] and [`MetricsConfig`]:
    /// `KEEL_CORRELATION_ID_HEADER` (a header name) or `KEEL_CORRELATION_ID_POINTER` (a JSON
    /// pointer) says where the correlation id is; `KEEL_LOG_EVENT=true` logs each event at DEBUG.
    /// Errors are routed (see [`routing`]) when `KEEL_ERROR_TOPIC_ARN`, `KEEL_DLQ_URL` or
    /// `KEEL_EXTENSION_ADDR` is set. Idempotency is turned on in code, with
    /// [`Keel::idempotency`] (its settings can come from [`Idempotency::from_env`]). The fault
    /// switch reads `KEEL_FAULT_ERROR_RATE`, `KEEL_FAULT_LATENCY_MS`, `KEEL_FAULT_LATENCY_RATE`
    /// and `KEEL_FAULT_VERSION` (see [`fault`]); unset, it is off.
    pub async fn from_env(service: impl Into<String>) -> Result<Self, ConfigError> {
        let service = service.into();
        let routed = ["KEEL_ERROR_TOPIC_ARN", "KEEL_DLQ_URL", "KEEL_EXTENSION_ADDR"]
            .into_iter()
            .any(|name| function::var(name).is_some());
        let routing = match routed {
            true => Some(ErrorRouting::from_env(service.clone()).await?),
            false => None,
        };
        let log = LogConfig::from_env(service.clone())?;
        let metrics = MetricsConfig::from_env(service)?;
        let fault = FaultInjection::from_env()?;
        let mut logging = LoggingLayer::new();
        if let Some(header) = function::var("KEEL_CORRELATION_ID_HEADER") {
            logging = logging.correlation_id(CorrelationId::Header(header));
        } else if let Some(pointer) = function::var("KEEL_CORRELATION_ID_POINTER") {
            logging = logging.correlation_id(CorrelationId::Pointer(pointer));
        }
        let log_event = config::parse_var("KEEL_LOG_EVENT", "true or false", |v| v.parse::<bool>().ok())?;
        if log_event == Some(true) {
            logging = logging.log_event();
        }
        let keel = Self {
            log,
            logging,
            metrics,
            routing: ErrorRoutingLayer::disabled(),
            idempotency: IdempotencyLayer::disabled(),
            concurrency: ConcurrencyGuardLayer::disabled(),
            fault,
        };
        Ok(match routing {
            Some(routing) => keel.error_routing(routing),
            None => keel,
        })
    }

    /// Routes handler errors to on-call (see [`routing`]); the event in envelopes is masked by
    /// the same rules as the logs.
    #[must_use]
    pub fn error_routing(mut self, routing: ErrorRouting) -> Self {
        let routing = routing.redact(self.log.redactor.clone());
        self.routing = ErrorRoutingLayer::new(routing);
        self
    }

    /// Runs each request at most once per idempotency key (see [`idempotency`]).
    #[must_use]
    pub fn idempotency(mut self, idempotency: Idempotency) -> Self {
        self.idempotency = IdempotencyLayer::new(idempotency);
        self
    }

    /// Holds invocations to a number at once per key (see [`concurrency`]). Duplicates answered
    /// by idempotency never take a slot.
    #[must_use]
    pub fn concurrency(mut self, guard: ConcurrencyGuard) -> Self {
        self.concurrency = ConcurrencyGuardLayer::new(guard);
        self
    }

    /// Injects errors and latency into a share of invocations, for canary replays (see
    /// [`fault`]): innermost, around the typed handler, so an injected failure is an ordinary
    /// handler error. Faults scoped to a version apply only when the function's version (as the
    /// log configuration has it) is that one; otherwise, or with [`FaultInjection::new`], the
    /// layer is a pass-through.
    #[must_use]
    pub fn fault(mut self, injection: FaultInjection) -> Self {
        self.fault = injection;
        self
    }

    /// Where each invocation's `correlation_id` comes from.
    #[must_use]
    pub fn correlation_id(mut self, source: CorrelationId) -> Self {
        self.logging = self.logging.correlation_id(source);
        self
    }

    /// Logs each incoming event at DEBUG, redacted: it is then among the buffered lines written
    /// when an invocation fails.
    #[must_use]
    pub fn log_events(mut self) -> Self {
        self.logging = self.logging.log_event();
        self
    }

    /// Adjusts the log configuration.
    #[must_use]
    pub fn logs(mut self, adjust: impl FnOnce(LogConfig) -> LogConfig) -> Self {
        self.log = adjust(self.log);
        self
    }

    /// Adjusts the metrics configuration.
    #[must_use]
    pub fn metrics(mut self, adjust: impl FnOnce(MetricsConfig) -> MetricsConfig) -> Self {
        self.metrics = adjust(self.metrics);
        self
    }

    /// Sends log lines and EMF documents to `output` (standard output by default).
    #[must_use]
    pub fn output(mut self, output: Output) -> Self {
        self.log = self.log.output(output.clone());
        self.metrics = self.metrics.output(output);
        self
    }

    /// The `tracing-subscriber` layer that writes the logs; [`Keel::run`] installs it.
    pub fn log_layer(&self) -> StructuredLogLayer {
        StructuredLogLayer::new(self.log.clone())
    }

    /// The metrics layer; [`Keel::run`] installs its recorder.
    pub fn metrics_layer(&self) -> MetricsLayer {
        MetricsLayer::new(self.metrics.clone())
    }

    /// `handler` wrapped in every layer, without installing anything global (for tests).
    pub fn service<H, T>(&self, handler: H) -> KeelService<H, T> {
        self.wrap(&self.metrics_layer(), handler)
    }

    /// The fault switch's layer for this function's version.
    fn fault_layer(&self) -> FaultLayer {
        FaultLayer::for_version(self.fault.clone(), &self.log.function.version)
    }

    fn wrap<H, T>(&self, metrics: &MetricsLayer, handler: H) -> KeelService<H, T> {
        let faulty = self
            .fault_layer()
            .layer(TypedHandler::new(JsonResponse::new(handler)));
        let guarded = self.concurrency.layer(faulty);
        let routed = self.routing.layer(self.idempotency.layer(guarded));
        self.logging.layer(metrics.layer(routed))
    }

    /// Installs the log subscriber and the metrics recorder for the whole process, the
    /// redaction rules for outputs no configuration reaches (the `errorMessage` Lambda returns),
    /// and a panic hook that leaves the report of a handler's panic to Keel (it fails the
    /// invocation as `Keel.HandlerPanicked`, logged with its context and location and routed as
    /// a `crash`). When the fault switch injects faults into this version, says so in a WARN
    /// line (see [`fault`]). Returns an error naming what was installed already, if anything was.
    pub fn init(&self) -> Result<MetricsLayer, InitError> {
        if !self.log.redactor.install() {
            eprintln!("keel: the process's redaction rules were set before Keel::init; error messages and EMF labels keep them");
        }
        handler::install_panic_hook();
        let subscriber = tracing_subscriber::registry().with(self.log_layer());
        let logs = tracing::subscriber::set_global_default(subscriber).is_ok();
        fault::announce(&self.fault, &self.log.function.version);
        let metrics = self.metrics_layer();
        let recorder = metrics.install_recorder().is_ok();
        if logs && recorder {
            Ok(metrics)
        } else {
            Err(InitError { logs, recorder })
        }
    }

    /// Serves invocations from the Lambda Runtime API with `handler` wrapped in every layer,
    /// concurrently when `AWS_LAMBDA_MAX_CONCURRENCY` asks for it.
    ///
    /// # Panics
    ///
    /// Like `lambda_runtime`, when the variables Lambda sets (`AWS_LAMBDA_RUNTIME_API`,
    /// `AWS_LAMBDA_FUNCTION_NAME`, …) are missing.
    pub async fn run<H, T>(self, handler: H) -> Result<(), BoxError>
    where
        H: Service<LambdaEvent<T>> + Clone + Send + 'static,
        H::Future: Send + 'static,
        H::Error: Into<BoxError> + 'static,
        H::Response: Serialize + Send + 'static,
        T: DeserializeOwned + Send + 'static,
    {
        let metrics = match self.init() {
            Ok(metrics) => metrics,
            Err(error) => {
                eprintln!("keel: {error}");
                self.metrics_layer()
            }
        };
        let service: KeelService<H, T> = self.wrap(&metrics, handler);
        // After each response is posted, the extension is told the invocation is over.
        Runtime::new(service)
            .layer(self.routing.invocation_over())
            .run_concurrent()
            .await
    }
}

/// Something global was installed before [`Keel::init`].
#[derive(Debug, thiserror::Error)]
pub struct InitError {
    logs: bool,
    recorder: bool,
}

impl fmt::Display for InitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut taken = Vec::new();
        if !self.logs {
            taken.push("a global tracing subscriber");
        }
        if !self.recorder {
            taken.push("a global metrics recorder");
        }
        write!(f, "{} was installed already; Keel kept it", taken.join(" and "))
    }
}
