//! [`EmfRecorder`]: the `metrics` facade recorder that collects values per invocation.
//!
//! Each invocation runs with its own [`Collector`] in a tokio task-local, so values recorded
//! by concurrent invocations are never mixed. A value recorded outside any invocation (during
//! init, or in a task spawned without the invocation's scope) is written at once as a document
//! of its own.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, PoisonError, RwLock};

use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata, SharedString,
};

use super::catalog::Kind;
use super::flush::{flush, Flush};

tokio::task_local! {
    static CURRENT: Arc<Collector>;
}

/// Units given through `metrics::describe_*!`, for metrics that are not in the catalogue.
static DESCRIBED_UNITS: LazyLock<RwLock<HashMap<String, metrics::Unit>>> = LazyLock::new(Default::default);

pub(crate) fn described_unit(name: &str) -> Option<metrics::Unit> {
    let units = DESCRIBED_UNITS.read().unwrap_or_else(PoisonError::into_inner);
    units.get(name).copied()
}

/// Runs `future` with `collector` as the current invocation's collector.
pub(crate) fn scope<F: std::future::Future>(
    collector: Arc<Collector>,
    future: F,
) -> tokio::task::futures::TaskLocalFuture<Arc<Collector>, F> {
    CURRENT.scope(collector, future)
}

#[derive(Clone, Copy, Debug)]
enum Op {
    Add(f64),
    Set(f64),
    Push(f64),
}

/// The values recorded during one invocation.
#[derive(Debug, Default)]
pub(crate) struct Collector {
    entries: Mutex<Vec<Entry>>,
}

/// One metric (name + labels + kind) and its values so far.
#[derive(Debug)]
pub(crate) struct Entry {
    pub key: Key,
    pub kind: Kind,
    pub values: Vec<f64>,
}

impl Collector {
    fn apply(&self, key: &Key, kind: Kind, op: Op) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let index = match entries.iter().position(|e| e.kind == kind && e.key == *key) {
            Some(index) => index,
            None => {
                entries.push(Entry {
                    key: key.clone(),
                    kind,
                    values: Vec::with_capacity(1),
                });
                entries.len() - 1
            }
        };
        let values = &mut entries[index].values;
        match op {
            Op::Add(delta) => match values.first_mut() {
                Some(total) => *total += delta,
                None => values.push(delta),
            },
            Op::Set(value) => {
                values.clear();
                values.push(value);
            }
            Op::Push(value) => values.push(value),
        }
    }

    /// Adds `value` to a counter.
    pub fn increment(&self, key: &Key, value: u64) {
        self.apply(key, Kind::Counter, Op::Add(value as f64));
    }

    /// Removes and returns everything recorded so far.
    pub fn take(&self) -> Vec<Entry> {
        std::mem::take(&mut *self.entries.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// The recorder to install as the `metrics` facade's global recorder.
///
/// Each invocation running behind a [`MetricsLayer`](super::MetricsLayer) collects its own values
/// (a tokio task-local holds its collector), so concurrent invocations never mix. A value
/// recorded outside any invocation — during init, or in a task spawned without the invocation's
/// scope — is written at once as a document of its own.
/// [`MetricsLayer::install_recorder`](super::MetricsLayer::install_recorder) installs it.
#[derive(Clone, Debug)]
pub struct EmfRecorder {
    outside_invocations: Arc<Flush>,
}

impl EmfRecorder {
    pub(crate) fn new(outside_invocations: Arc<Flush>) -> Self {
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

fn describe(key: KeyName, unit: Option<metrics::Unit>) {
    if let Some(unit) = unit {
        let mut units = DESCRIBED_UNITS.write().unwrap_or_else(PoisonError::into_inner);
        units.insert(key.as_str().to_owned(), unit);
    }
}

/// What a `Counter`, `Gauge` or `Histogram` from [`EmfRecorder`] holds.
struct Handle {
    key: Key,
    kind: Kind,
    outside_invocations: Arc<Flush>,
}

impl Handle {
    fn apply(&self, op: Op) {
        let recorded = CURRENT.try_with(|collector| collector.apply(&self.key, self.kind, op));
        if recorded.is_err() {
            let collector = Collector::default();
            collector.apply(&self.key, self.kind, op);
            flush(&self.outside_invocations, collector.take(), None);
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
