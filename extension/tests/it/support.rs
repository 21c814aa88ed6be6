//! What the extension's tests share: the process's captured log lines (one global subscriber,
//! installed for every test of this binary by the first that asks) and the routed envelopes
//! found in them, and metrics layers that write to memory.

use std::sync::OnceLock;
use std::time::Duration;

use keel_runtime::metrics::MetricsLayer;
use keel_runtime::output::{CapturedLines, Output};
use keel_runtime::routing::Envelope;
use keel_runtime::Keel;
use serde_json::Value;
use tracing_subscriber::layer::SubscriberExt;

/// The process's log lines and its metrics recorder, installed once.
pub(crate) fn logs() -> &'static CapturedLines {
    static LOGS: OnceLock<CapturedLines> = OnceLock::new();
    LOGS.get_or_init(|| {
        let (output, lines) = Output::memory();
        let keel = Keel::new("booking-api").output(output);
        let subscriber = tracing_subscriber::registry().with(keel.log_layer());
        tracing::subscriber::set_global_default(subscriber).expect("the first subscriber");
        keel.metrics_layer()
            .install_recorder()
            .expect("the first recorder");
        lines
    })
}

/// A metrics layer whose documents are kept in memory and dropped: once [`logs`] has installed
/// the recorder (any test of this binary may have), what a layer collects is written out, and
/// standard output is no place for it.
pub(crate) fn metrics_layer() -> MetricsLayer {
    let (output, _dropped) = Output::memory();
    Keel::new("booking-api").output(output).metrics_layer()
}

/// Every line of `lines`, parsed.
pub(crate) fn parsed(lines: &CapturedLines) -> Vec<Value> {
    lines
        .lines()
        .iter()
        .map(|l| serde_json::from_str(l).expect("log lines are JSON"))
        .collect()
}

/// The envelopes written whole to the log (`keel.routed_error`) that `wanted` picks.
pub(crate) fn logged_envelopes(wanted: impl Fn(&Envelope) -> bool) -> Vec<Envelope> {
    parsed(logs())
        .iter()
        .filter(|l| l["message"] == "keel.routed_error")
        .filter_map(|l| match &l["envelope"] {
            Value::String(text) => serde_json::from_str::<Envelope>(text).ok(),
            object => serde_json::from_value::<Envelope>(object.clone()).ok(),
        })
        .filter(|e| wanted(e))
        .collect()
}

/// Waits (10 s at most) until the log holds at least `expected` envelopes that `wanted` picks;
/// returns them all.
pub(crate) async fn wait_for_logged_envelopes(
    expected: usize,
    wanted: impl Fn(&Envelope) -> bool,
) -> Vec<Envelope> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let found = logged_envelopes(&wanted);
        if found.len() >= expected {
            return found;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!(
                "expected {expected} envelopes, found {}: {found:?}\nthe log: {:?}",
                found.len(),
                logs().lines()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
