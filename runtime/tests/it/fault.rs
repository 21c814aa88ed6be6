//! The fault switch inside Keel's stack: an injected failure is an ordinary handler error
//! (logged, not stored by idempotency, the concurrency slot freed, returned as the invocation's
//! error even for an HTTP event), scoped to one version, and nothing at all when off.

use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use aws_lambda_events::apigw::ApiGatewayV2httpResponse;
use keel_runtime::concurrency::ConcurrencyGuard;
use keel_runtime::fault::{FaultInjection, INJECTED_FAULT};
use keel_runtime::idempotency::Idempotency;
use keel_runtime::{service_fn, BoxError, LambdaEvent, RawEvent};
use serde_json::{json, Value};

use crate::common::{event, invoke, keel, logs, of_request};

/// An API Gateway HTTP API event with the idempotency key `key`.
fn api_event(request_id: &str, key: &str) -> LambdaEvent<RawEvent> {
    let mut event = event(
        request_id,
        json!({
            "version": "2.0",
            "routeKey": "POST /bookings",
            "rawPath": "/bookings",
            "headers": {"idempotency-key": key},
            "requestContext": {"requestId": request_id, "http": {"method": "POST", "path": "/bookings"}},
            "body": "{\"resource_id\":\"room-1\"}",
        }),
    );
    event.context.deadline = u64::MAX / 2;
    event
}

/// A handler answering 201 and counting its runs.
fn created(
    runs: &Arc<AtomicU32>,
) -> impl tower::Service<
    LambdaEvent<Value>,
    Response = ApiGatewayV2httpResponse,
    Error = BoxError,
    Future = impl Future<Output = Result<ApiGatewayV2httpResponse, BoxError>> + Send + 'static,
> + Clone
       + Send
       + 'static {
    let runs = runs.clone();
    service_fn(move |_: LambdaEvent<Value>| {
        let runs = runs.clone();
        async move {
            runs.fetch_add(1, Ordering::SeqCst);
            let mut response = ApiGatewayV2httpResponse::default();
            response.status_code = 201;
            Ok::<_, BoxError>(response)
        }
    })
}

#[test]
fn an_injected_failure_is_an_ordinary_handler_error() {
    let (keel, lines) = keel();
    let runs = Arc::new(AtomicU32::new(0));
    // Version 7 is the function's (see `common::keel`): every second invocation fails.
    let keel = keel
        .idempotency(Idempotency::memory().key_from_header("idempotency-key"))
        .concurrency(ConcurrencyGuard::global("partner", 1))
        .fault(FaultInjection::new().error_rate(0.5).version("7"));
    let results = invoke(
        &keel,
        created(&runs),
        vec![
            api_event("a", "k-1"),
            api_event("b", "k-2"),
            // The retry of the failed request runs: its failure was not stored.
            api_event("c", "k-2"),
            // And a duplicate of the first is answered from the store, without a fault.
            api_event("d", "k-1"),
        ],
    );
    assert_eq!(results[0].as_ref().unwrap().status_code, 201);
    // Not an HTTP answer: the invocation fails, as any handler error does (API Gateway answers
    // 500, and Lambda counts it in `Errors`).
    let error = results[1].as_ref().unwrap_err();
    assert_eq!(error.error_type(), INJECTED_FAULT);
    assert_eq!(error.to_string(), "injected fault (KEEL_FAULT_ERROR_RATE=0.5)");
    // Invocation 3 runs (the slot was freed); the replay of invocation 4 never reaches the
    // fault layer, so it is not counted.
    assert_eq!(results[2].as_ref().unwrap().status_code, 201);
    assert_eq!(results[3].as_ref().unwrap().status_code, 201);
    assert_eq!(runs.load(Ordering::SeqCst), 2);

    let logs = logs(&lines);
    let failed = of_request(&logs, "b");
    let line = failed
        .iter()
        .find(|l| l["message"] == "invocation failed")
        .unwrap_or_else(|| panic!("no failure line in {failed:?}"));
    assert_eq!(line["level"], "ERROR");
    assert_eq!(line["error.type"], "Keel.InjectedFault");
    assert_eq!(line["function_version"], "7");
}

#[test]
fn another_version_and_an_unset_switch_inject_nothing() {
    let (keel, _lines) = keel();
    for faults in [
        FaultInjection::new().error_rate(1.0).version("8"),
        FaultInjection::new(),
    ] {
        let runs = Arc::new(AtomicU32::new(0));
        let keel = keel.clone().fault(faults);
        let events = (0..20)
            .map(|n| api_event(&format!("r{n}"), &format!("k{n}")))
            .collect();
        let results = invoke(&keel, created(&runs), events);
        assert!(results.iter().all(Result::is_ok));
        assert_eq!(runs.load(Ordering::SeqCst), 20);
    }
}

#[test]
fn the_failure_of_a_non_http_event_is_the_invocations_error() {
    let (keel, _lines) = keel();
    let keel = keel.fault(FaultInjection::new().error_rate(1.0));
    let handler = service_fn(|_: LambdaEvent<Value>| async { Ok::<_, BoxError>(json!({"ok": true})) });
    let results = invoke(&keel, handler, vec![event("a", json!({"seats": 1}))]);
    let error = results[0].as_ref().unwrap_err();
    assert_eq!(error.error_type(), "Keel.InjectedFault");
    assert_eq!(error.to_string(), "injected fault (KEEL_FAULT_ERROR_RATE=1)");
}
