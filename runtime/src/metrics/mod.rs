//! CloudWatch Embedded Metric Format (EMF) through the `metrics` facade.
//!
//! Install the [`EmfRecorder`] once, wrap the handler in a [`MetricsLayer`], and every
//! `metrics::counter!`, `gauge!` or `histogram!` call made while an invocation runs is collected
//! for that invocation and written as EMF on the output when it ends — also when the handler
//! fails or panics. Labels become dimensions, next to the default dimension `service`.
//! Counters are summed per invocation, a gauge keeps its last value, histogram values are
//! written as an EMF value array.
//!
//! Units come from the [`catalog`] (Keel's entries and those given with
//! [`MetricsConfig::catalogue`]), else from `metrics::describe_*!`, else `Count` for counters
//! and `None` for the rest. Metrics named with [`MetricsConfig::high_resolution`] (or marked so
//! in the catalogue) are stored at one-second resolution.
//!
//! Metrics whose catalogue entry is canary-critical ([`catalog::MetricDef::canary`]) are also
//! published per function version: their documents have a second dimension set, the first
//! plus `function_version`, and the root member `function_version` (the version of
//! [`MetricsConfig::function`]), so that an alarm can watch one version during a canary
//! deployment. `function_version` is therefore no label's name.
//!
//! Every document is valid by construction (the specification's limits are enforced); what
//! cannot be valid (a bad name, an unknown unit, too many dimensions, a non-finite value) is
//! reported by a WARN log line and left out.
//!
//! ```
//! use keel_runtime::metrics::{MetricsConfig, MetricsLayer};
//!
//! let layer = MetricsLayer::new(MetricsConfig::new("booking-api").high_resolution("QuoteLatencyMs"));
//! let _ = layer.install_recorder(); // once per process
//! ```

mod collector;
mod document;
mod emf;
mod recorder;

pub use keel_catalog as catalog;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use lambda_runtime::LambdaEvent;
use pin_project_lite::pin_project;
use tokio::task::futures::TaskLocalFuture;
use tower::{Layer, Service};

pub use keel_catalog::{Resolution, Unit};
pub use recorder::EmfRecorder;

use crate::config::{parse_var, ConfigError};
use crate::function::{service_name, FunctionInfo};
use crate::output::Output;
use collector::Collector;
use document::DocumentWriter;

/// Default EMF namespace.
pub const DEFAULT_NAMESPACE: &str = "Keel";

/// How metrics are written.
///
/// | variable | meaning | default |
/// |---|---|---|
/// | `KEEL_SERVICE` | the `service` dimension | the name given to [`MetricsConfig::from_env`] |
/// | `KEEL_NAMESPACE` | the EMF namespace | `Keel` |
#[derive(Clone, Debug)]
pub struct MetricsConfig {
    namespace: String,
    service: String,
    output: Output,
    high_resolution: Vec<String>,
    catalogue: Vec<&'static catalog::MetricDef>,
    function: FunctionInfo,
}

impl MetricsConfig {
    /// Defaults for `service`: namespace `Keel`, standard output.
    pub fn new(service: impl Into<String>) -> Self {
        Self {
            namespace: DEFAULT_NAMESPACE.to_owned(),
            service: service.into(),
            output: Output::stdout(),
            high_resolution: Vec::new(),
            catalogue: Vec::new(),
            function: FunctionInfo::from_env(),
        }
    }

    /// Defaults overridden by `KEEL_SERVICE` and `KEEL_NAMESPACE`.
    pub fn from_env(service: impl Into<String>) -> Result<Self, ConfigError> {
        let mut config = Self::new(service);
        config.service = service_name(config.service, &config.function);
        if let Some(namespace) = parse_var(
            "KEEL_NAMESPACE",
            "1-255 characters of letters, digits and . - _ / # : space, not starting with AWS/",
            |v| emf::check_namespace(v).ok().map(|()| v.to_owned()),
        )? {
            config.namespace = namespace;
        }
        Ok(config)
    }

    /// The EMF namespace; refused if CloudWatch would refuse it.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Result<Self, ConfigError> {
        let namespace = namespace.into();
        emf::check_namespace(&namespace).map_err(|reason| ConfigError::InvalidSetting {
            setting: "namespace",
            reason,
        })?;
        self.namespace = namespace;
        Ok(self)
    }

    /// Stores the metric `name` at one-second resolution (`StorageResolution: 1`).
    #[must_use]
    pub fn high_resolution(mut self, name: impl Into<String>) -> Self {
        self.high_resolution.push(name.into());
        self
    }

    /// The function's own catalogue entries (see [`catalog`]): their units and resolutions
    /// are written with their values, as Keel's own entries' are.
    #[must_use]
    pub fn catalogue(mut self, entries: &[&'static catalog::MetricDef]) -> Self {
        self.catalogue.extend_from_slice(entries);
        self
    }

    /// Where documents go (standard output by default).
    #[must_use]
    pub fn output(mut self, output: Output) -> Self {
        self.output = output;
        self
    }

    /// The function whose name the `ColdStart` document carries, and whose version the
    /// canary-critical metrics' documents carry (from the environment by default:
    /// `AWS_LAMBDA_FUNCTION_NAME`, `AWS_LAMBDA_FUNCTION_VERSION`, `$LATEST` when it is not set).
    #[must_use]
    pub fn function(mut self, function: FunctionInfo) -> Self {
        self.function = function;
        self
    }
}

/// Tower layer that collects an invocation's metrics and writes them as EMF when it ends;
/// see the [module docs](self).
#[derive(Clone, Debug)]
pub struct MetricsLayer {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    documents: Arc<DocumentWriter>,
    cold_start_key: metrics::Key,
    /// Set by the first invocation: one layer serves one process.
    warm: AtomicBool,
}

impl MetricsLayer {
    /// A layer writing with `config`.
    pub fn new(config: MetricsConfig) -> Self {
        let cold_start_key = metrics::Key::from_parts(
            catalog::keel::COLD_START.name,
            vec![metrics::Label::new("function_name", config.function.name.clone())],
        );
        let documents = DocumentWriter {
            writer: emf::EmfWriter {
                namespace: config.namespace,
                service: config.service,
                version: Some(config.function.version).filter(|v| emf::check_dimension_value(v).is_ok()),
                output: config.output,
            },
            catalogue: config.catalogue,
            high_resolution: config.high_resolution,
        };
        Self {
            shared: Arc::new(Shared {
                documents: Arc::new(documents),
                cold_start_key,
                warm: AtomicBool::new(false),
            }),
        }
    }

    /// A recorder that writes with this layer's settings whatever is recorded outside an
    /// invocation (values recorded inside one always go to that invocation's layer).
    pub fn recorder(&self) -> EmfRecorder {
        EmfRecorder::new(self.shared.documents.clone())
    }

    /// Runs `future`, collecting every metric it records, and writes them as EMF when it ends
    /// (tagged with `request_id` when given) — for work outside an invocation's service, such
    /// as the Keel extension turning one telemetry report into metrics.
    pub async fn collect<F: Future>(&self, request_id: Option<&str>, future: F) -> F::Output {
        let collector = Arc::new(Collector::default());
        let output = collector::scope(collector.clone(), future).await;
        self.shared.documents.write(collector.take(), request_id);
        output
    }

    /// Installs [`Self::recorder`] as the `metrics` facade's global recorder. Fails if one is
    /// installed already (a process has one).
    pub fn install_recorder(&self) -> Result<(), metrics::SetRecorderError<EmfRecorder>> {
        metrics::set_global_recorder(self.recorder())
    }
}

impl<S> Layer<S> for MetricsLayer {
    type Service = MetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MetricsService {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// The service of [`MetricsLayer`].
#[derive(Clone, Debug)]
pub struct MetricsService<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S, P> Service<LambdaEvent<P>> for MetricsService<S>
where
    S: Service<LambdaEvent<P>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = MetricsFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, event: LambdaEvent<P>) -> Self::Future {
        let collector = Arc::new(Collector::default());
        if !self.shared.warm.swap(true, Ordering::Relaxed) {
            collector.increment(&self.shared.cold_start_key, 1);
        }
        let request_id = event.context.request_id.clone();
        MetricsFuture {
            inner: collector::scope(collector.clone(), self.inner.call(event)),
            pending: Some(Pending {
                collector,
                request_id,
                shared: self.shared.clone(),
            }),
        }
    }
}

/// What [`MetricsFuture`] writes when the invocation ends.
struct Pending {
    collector: Arc<Collector>,
    request_id: String,
    shared: Arc<Shared>,
}

impl Pending {
    fn write(self) {
        self.shared
            .documents
            .write(self.collector.take(), Some(&self.request_id));
    }
}

pin_project! {
    /// The future of [`MetricsService`]: runs the handler with its collector and writes the
    /// metrics when it completes, or when it is dropped unfinished (panic, cancellation).
    pub struct MetricsFuture<F> {
        #[pin]
        inner: TaskLocalFuture<Arc<Collector>, F>,
        pending: Option<Pending>,
    }

    impl<F> PinnedDrop for MetricsFuture<F> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(pending) = this.project().pending.take() {
                pending.write();
            }
        }
    }
}

impl<F: Future> Future for MetricsFuture<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let output = std::task::ready!(this.inner.poll(cx));
        if let Some(pending) = this.pending.take() {
            pending.write();
        }
        Poll::Ready(output)
    }
}
