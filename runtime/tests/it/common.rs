//! Shared helpers: a Keel stack writing to memory, invoked in-process.

#![allow(dead_code)]

use std::sync::OnceLock;

use keel_runtime::output::{CapturedLines, Output};
use keel_runtime::{Context, FunctionInfo, InvocationError, Keel, LambdaEvent, RawEvent};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use tower::{Service, ServiceExt};
use tracing_subscriber::layer::SubscriberExt;

/// The process-wide metrics recorder, installed once; what it writes outside invocations.
pub(crate) fn outside_invocations() -> &'static CapturedLines {
    static OUTSIDE: OnceLock<CapturedLines> = OnceLock::new();
    OUTSIDE.get_or_init(|| {
        let (output, lines) = Output::memory();
        let _ = Keel::new("outside")
            .output(output)
            .metrics_layer()
            .install_recorder();
        lines
    })
}

/// A Keel stack for service `svc` of function `fn` (version 7, 256 MB) writing to memory.
pub(crate) fn keel() -> (Keel, CapturedLines) {
    outside_invocations();
    let (output, lines) = Output::memory();
    let function = FunctionInfo {
        name: "fn".into(),
        version: "7".into(),
        memory_size: 256,
    };
    let keel = Keel::new("svc")
        .output(output)
        .logs(|l| l.function(function.clone()))
        .metrics(|m| m.function(function));
    (keel, lines)
}

/// An event with request id `request_id`.
pub(crate) fn event(request_id: &str, payload: Value) -> LambdaEvent<RawEvent> {
    let mut context = Context::default();
    context.request_id = request_id.to_owned();
    context.xray_trace_id = Some(format!("Root=1-{request_id}"));
    LambdaEvent::new(
        serde_json::value::to_raw_value(&payload).expect("serializable"),
        context,
    )
}

/// Runs `events` one after another through `handler` wrapped by `keel`, with Keel's log
/// subscriber installed for this thread.
pub(crate) fn invoke<H, T>(
    keel: &Keel,
    handler: H,
    events: Vec<LambdaEvent<RawEvent>>,
) -> Vec<Result<H::Response, InvocationError>>
where
    H: Service<LambdaEvent<T>> + Clone + Send + 'static,
    H::Future: Send + 'static,
    H::Error: Into<keel_runtime::BoxError> + 'static,
    H::Response: Serialize + DeserializeOwned + Send + 'static,
    T: DeserializeOwned + 'static,
{
    let subscriber = tracing_subscriber::registry().with(keel.log_layer());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    tracing::subscriber::with_default(subscriber, || {
        runtime.block_on(async {
            let mut service = keel.service(handler);
            let mut results = Vec::new();
            for event in events {
                let ready = service.ready().await.expect("Keel services are always ready");
                results.push(ready.call(event).await.map(|raw| typed(&raw)));
            }
            results
        })
    })
}

/// A response Keel's layers carry (JSON text) as the handler's response type.
pub(crate) fn typed<R: DeserializeOwned>(raw: &keel_runtime::RawResponse) -> R {
    serde_json::from_str(raw.get()).expect("a response Keel carried reads as the handler's type")
}

/// The captured lines that are log records (not EMF), parsed.
pub(crate) fn logs(lines: &CapturedLines) -> Vec<Value> {
    parsed(lines)
        .into_iter()
        .filter(|v| v.get("_aws").is_none())
        .collect()
}

/// The captured EMF documents, each validated against the specification.
pub(crate) fn emf(lines: &CapturedLines) -> Vec<Value> {
    lines
        .lines()
        .iter()
        .filter(|l| keel_tests::emf_spec::is_emf(l))
        .map(|l| keel_tests::emf_spec::validate_line(l).unwrap_or_else(|e| panic!("invalid EMF {l}: {e:?}")))
        .collect()
}

/// Every captured line, parsed as JSON.
pub(crate) fn parsed(lines: &CapturedLines) -> Vec<Value> {
    lines
        .lines()
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// Log records of one invocation.
pub(crate) fn of_request<'a>(logs: &'a [Value], request_id: &str) -> Vec<&'a Value> {
    logs.iter()
        .filter(|l| l["function_request_id"] == request_id)
        .collect()
}
