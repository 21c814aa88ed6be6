//! [`EmfRecorder`]: the `metrics` facade recorder that collects values per invocation.
//!
//! Each invocation runs with its own [`Collector`] in a tokio task-local, so values recorded
//! by concurrent invocations are never mixed. A value recorded outside any invocation (during
//! init, or in a task spawned without the invocation's scope) is written at once as a document
//! of its own.

use std::sync::Arc;

use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata, SharedString,
};

use super::catalog::Kind;
use super::collector::{record_current, Collector, Op};
use super::document::{describe, DocumentWriter};

/// The recorder to install as the `metrics` facade's global recorder.
///
/// Each invocation running behind a [`MetricsLayer`](super::MetricsLayer) collects its own values
/// (a tokio task-local holds its collector), so concurrent invocations never mix. A value
/// recorded outside any invocation — during init, or in a task spawned without the invocation's
/// scope — is written at once as a document of its own.
/// [`MetricsLayer::install_recorder`](super::MetricsLayer::install_recorder) installs it.
#[derive(Clone, Debug)]
pub struct EmfRecorder {
    outside_invocations: Arc<DocumentWriter>,
}

impl EmfRecorder {
    pub(crate) fn new(outside_invocations: Arc<DocumentWriter>) -> Self {
        Self { outside_invocations }
    }

    fn handle(&self, key: &Key, kind: Kind) -> Arc<Handle> {
        Arc::new(Handle {
            key: key.clone(),
            kind,
            outside_invocations: self.outside_invocations.clone(),
        })
    }
}

impl metrics::Recorder for EmfRecorder {
    fn describe_counter(&self, key: KeyName, unit: Option<metrics::Unit>, _description: SharedString) {
        describe(key, unit);
    }

    fn describe_gauge(&self, key: KeyName, unit: Option<metrics::Unit>, _description: SharedString) {
        describe(key, unit);
    }

    fn describe_histogram(&self, key: KeyName, unit: Option<metrics::Unit>, _description: SharedString) {
        describe(key, unit);
    }

    fn register_counter(&self, key: &Key, _metadata: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.handle(key, Kind::Counter))
    }

    fn register_gauge(&self, key: &Key, _metadata: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(self.handle(key, Kind::Gauge))
    }

    fn register_histogram(&self, key: &Key, _metadata: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(self.handle(key, Kind::Histogram))
    }
}

/// What a `Counter`, `Gauge` or `Histogram` from [`EmfRecorder`] holds.
struct Handle {
    key: Key,
    kind: Kind,
    outside_invocations: Arc<DocumentWriter>,
}

impl Handle {
    fn apply(&self, op: Op) {
        if !record_current(&self.key, self.kind, op) {
            let collector = Collector::default();
            collector.apply(&self.key, self.kind, op);
            self.outside_invocations.write(collector.take(), None);
        }
    }
}

impl CounterFn for Handle {
    fn increment(&self, value: u64) {
        self.apply(Op::Add(value as f64));
    }

    fn absolute(&self, value: u64) {
        self.apply(Op::Set(value as f64));
    }
}

impl GaugeFn for Handle {
    fn increment(&self, value: f64) {
        self.apply(Op::Add(value));
    }

    fn decrement(&self, value: f64) {
        self.apply(Op::Add(-value));
    }

    fn set(&self, value: f64) {
        self.apply(Op::Set(value));
    }
}

impl HistogramFn for Handle {
    fn record(&self, value: f64) {
        self.apply(Op::Push(value));
    }
}
