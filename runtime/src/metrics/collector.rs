//! [`Collector`]: the values one invocation records, held in a tokio task-local while it runs,
//! so that values recorded by concurrent invocations are never mixed.

use std::sync::{Arc, Mutex, PoisonError};

use metrics::Key;

use super::catalog::Kind;

tokio::task_local! {
    static CURRENT: Arc<Collector>;
}

/// Runs `future` with `collector` as the current invocation's collector.
pub(crate) fn scope<F: std::future::Future>(
    collector: Arc<Collector>,
    future: F,
) -> tokio::task::futures::TaskLocalFuture<Arc<Collector>, F> {
    CURRENT.scope(collector, future)
}

#[derive(Clone, Copy, Debug)]
pub(crate) enum Op {
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
    pub(crate) fn apply(&self, key: &Key, kind: Kind, op: Op) {
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
    pub(crate) fn increment(&self, key: &Key, value: u64) {
        self.apply(key, Kind::Counter, Op::Add(value as f64));
    }

    /// Removes and returns everything recorded so far.
    pub(crate) fn take(&self) -> Vec<Entry> {
        std::mem::take(&mut *self.entries.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// Records `op` in the current invocation's collector; `false` outside any invocation.
pub(crate) fn record_current(key: &Key, kind: Kind, op: Op) -> bool {
    CURRENT
        .try_with(|collector| collector.apply(key, kind, op))
        .is_ok()
}
