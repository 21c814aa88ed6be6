//! Idempotency inside Keel's stack, in-process with the in-memory store: the metrics it emits
//! and the function-level API for units of work.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use crate::common::{emf, event, keel, logs};
use keel_runtime::idempotency::{Idempotency, IdempotencyError, OnceError};
use keel_runtime::{service_fn, BoxError, LambdaEvent};
use serde_json::{json, Value};

fn count(documents: &[Value], metric: &str) -> u64 {
    documents
        .iter()
        .filter_map(|d| d.get(metric))
        .map(|v| v.as_u64().unwrap())
        .sum()
}

#[test]
fn replays_and_refusals_are_counted_in_the_catalogue_metrics() {
    let (keel, lines) = keel();
    let runs = Arc::new(AtomicU32::new(0));
    let counter = runs.clone();
    let handler = service_fn(move |_: LambdaEvent<Value>| {
        let counter = counter.clone();
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            Ok::<_, BoxError>(json!({"booked": true}))
        }
    });
    let keel = keel.idempotency(Idempotency::memory().key_from_pointer("/order"));
    let future_deadline = |id: &str, payload: Value| {
        let mut event = event(id, payload);
        event.context.deadline = u64::MAX / 2;
        event
    };
    let results = crate::common::invoke(
        &keel,
        handler,
        vec![
            future_deadline("a", json!({"order": 1, "seats": 2})),
            future_deadline("b", json!({"seats": 2, "order": 1})),
            future_deadline("c", json!({"order": 1, "seats": 3})),
            future_deadline("d", json!({"seats": 3})),
        ],
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(results[1].as_ref().unwrap(), &json!({"booked": true}));
    assert_eq!(
        results[2].as_ref().unwrap_err().error_type(),
        "Keel.Idempotency.KeyReused"
    );
    assert_eq!(
        results[3].as_ref().unwrap_err().error_type(),
        "Keel.Idempotency.MissingKey"
    );
    let documents = emf(&lines);
    assert_eq!(count(&documents, "IdempotencyReplay"), 1);
    assert_eq!(count(&documents, "IdempotencyKeyReused"), 1);
}

#[tokio::test]
async fn units_of_work_run_once_per_key() {
    let idempotency = Idempotency::memory().prefix("worker");
    let runs = AtomicU32::new(0);
    let deadline = u64::MAX / 2;
    let work = || async {
        runs.fetch_add(1, Ordering::SeqCst);
        Ok::<_, String>(format!("confirmed #{}", runs.load(Ordering::SeqCst)))
    };
    let payload = json!({"booking": "bk-1"});
    let first = idempotency
        .once(&json!("msg-1"), &payload, "req-1", deadline, work)
        .await
        .unwrap();
    let again = idempotency
        .once(&json!("msg-1"), &payload, "req-2", deadline, work)
        .await
        .unwrap();
    assert_eq!((first.as_str(), again.as_str()), ("confirmed #1", "confirmed #1"));
    assert_eq!(runs.load(Ordering::SeqCst), 1);

    let other = json!({"booking": "bk-2"});
    let reused = idempotency
        .once(&json!("msg-1"), &other, "req-3", deadline, work)
        .await;
    assert!(matches!(
        reused,
        Err(OnceError::Idempotency(IdempotencyError::KeyReused))
    ));

    // A failed unit releases its key: the retry runs.
    let failing = || async { Err::<String, _>("inventory unavailable") };
    let failed = idempotency
        .once(&json!("msg-2"), &payload, "req-4", deadline, failing)
        .await;
    assert!(matches!(failed, Err(OnceError::Work("inventory unavailable"))));
    let retried = idempotency
        .once(&json!("msg-2"), &payload, "req-5", deadline, work)
        .await
        .unwrap();
    assert_eq!(retried, "confirmed #2");
}

#[tokio::test]
async fn an_unreachable_store_is_counted_and_fails_open_on_request() {
    let (output, lines) = keel_runtime::output::Output::memory();
    crate::common::outside_invocations();
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
        .region(aws_sdk_dynamodb::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "t", "t", None, None, "test",
        ))
        .endpoint_url("http://127.0.0.1:9")
        .build();
    let idempotency = Idempotency::dynamodb(aws_sdk_dynamodb::Client::from_conf(config), "t")
        .key_from_pointer("/order")
        .fail_open();
    let keel = keel_runtime::Keel::new("svc")
        .output(output)
        .idempotency(idempotency);
    let mut service = keel.service(service_fn(|_: LambdaEvent<Value>| async { Ok::<_, BoxError>(7) }));
    let mut event = event("r", json!({"order": 5}));
    event.context.deadline = u64::MAX / 2;
    let answer = tower::ServiceExt::ready(&mut service).await.unwrap();
    let answer = tower::Service::call(answer, event).await.unwrap();
    assert_eq!(answer.get(), "7", "the handler ran without idempotency");
    assert_eq!(count(&emf(&lines), "IdempotencyStoreError"), 1);
}

#[tokio::test]
async fn a_unit_of_work_that_panics_releases_its_key() {
    let idempotency = Arc::new(Idempotency::memory().prefix("worker"));
    let deadline = u64::MAX / 2;
    let payload = json!({"booking": "bk-1"});
    let panicking = {
        let (idempotency, payload) = (idempotency.clone(), payload.clone());
        tokio::spawn(async move {
            idempotency
                .once(&json!("msg-1"), &payload, "req-1", deadline, || async {
                    if true {
                        panic!("bug in the worker");
                    }
                    Ok::<u32, String>(1)
                })
                .await
        })
    };
    assert!(panicking.await.unwrap_err().is_panic());
    let retried = idempotency
        .once(&json!("msg-1"), &payload, "req-2", deadline, || async {
            Ok::<u32, String>(2)
        })
        .await;
    assert_eq!(retried.unwrap(), 2, "the key was released: the retry runs");
}

#[tokio::test]
async fn a_huge_ttl_does_not_overflow() {
    let idempotency = Idempotency::memory().ttl(std::time::Duration::MAX);
    let once = || async { Ok::<u32, String>(1) };
    let deadline = u64::MAX / 2;
    let first = idempotency
        .once(&json!("k"), &json!({}), "req-1", deadline, once)
        .await;
    let replay = idempotency
        .once(&json!("k"), &json!({}), "req-2", deadline, once)
        .await;
    assert_eq!((first.unwrap(), replay.unwrap()), (1, 1));
}

#[test]
fn every_refusal_writes_one_line_with_its_context() {
    let (keel, lines) = keel();
    let keel = keel.idempotency(Idempotency::memory().key_from_pointer("/order"));
    let handler = service_fn(|_: LambdaEvent<Value>| async { Ok::<_, BoxError>(json!({"booked": true})) });
    let with_deadline = |id: &str, payload: Value| {
        let mut event = event(id, payload);
        event.context.deadline = u64::MAX / 2;
        event
    };
    let http = |id: &str| {
        let request = json!({"routeKey": "POST /bookings", "rawPath": "/bookings", "headers": {},
            "requestContext": {"requestId": id, "http": {"method": "POST"}}, "body": "{}"});
        with_deadline(id, request)
    };
    let results = crate::common::invoke(
        &keel,
        handler,
        vec![
            with_deadline("no-key", json!({"seats": 2})),
            with_deadline("first", json!({"order": 1, "seats": 2})),
            with_deadline("reused", json!({"order": 1, "seats": 3})),
            http("http-no-key"),
        ],
    );
    assert_eq!(
        results[3].as_ref().unwrap()["statusCode"],
        400,
        "answered in place of the handler"
    );
    let logs = logs(&lines);
    for (request, error_type, level) in [
        ("no-key", "Keel.Idempotency.MissingKey", "ERROR"),
        ("reused", "Keel.Idempotency.KeyReused", "ERROR"),
        ("http-no-key", "Keel.Idempotency.MissingKey", "WARN"),
    ] {
        let said: Vec<&Value> = crate::common::of_request(&logs, request)
            .into_iter()
            .filter(|l| l["level"] == "WARN" || l["level"] == "ERROR")
            .collect();
        assert_eq!(said.len(), 1, "{request}: one line\n{said:?}");
        assert_eq!(
            (&said[0]["error.type"], &said[0]["level"]),
            (&json!(error_type), &json!(level))
        );
    }
    let answered = &crate::common::of_request(&logs, "http-no-key")[0];
    assert_eq!(answered["status"], 400);
    assert!(
        answered["reason"]
            .as_str()
            .is_some_and(|r| r.contains("Idempotency-Key") || r.contains("/order")),
        "{answered}"
    );
}
