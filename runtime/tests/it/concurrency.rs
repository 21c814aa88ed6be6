//! The concurrency guard, in memory and in DynamoDB (a moto server through the real SDK
//! client): never more holders than the limit, refusals or waits for the others, slots freed on
//! success, error and panic, and a crashed holder's slot free again when its lease ends.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lambda_events::apigw::ApiGatewayV2httpResponse;
use keel_runtime::concurrency::{ConcurrencyGuard, SLOT_TABLE};
use keel_runtime::{
    service_fn, BoxError, Context, InvocationError, Keel, KeelService, LambdaEvent, RawEvent, RawResponse,
};
use keel_tests::Moto;
use serde_json::{json, Value};
use tower::{Service, ServiceExt};

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

fn event(request_id: &str, deadline_ms: u64) -> LambdaEvent<RawEvent> {
    let mut context = Context::default();
    context.request_id = request_id.to_owned();
    context.deadline = deadline_ms;
    let payload = json!({"resource_id": "partner-7", "seats": 2});
    LambdaEvent::new(serde_json::value::to_raw_value(&payload).unwrap(), context)
}

/// Counts the handlers inside at once, and the most ever seen.
#[derive(Clone, Default)]
struct Inside {
    now: Arc<AtomicU32>,
    most: Arc<AtomicU32>,
    runs: Arc<AtomicU32>,
}

impl Inside {
    fn handler(
        &self,
        hold: Duration,
    ) -> impl Service<LambdaEvent<Value>, Response = u32, Error = BoxError, Future = impl Send>
           + Clone
           + Send
           + 'static {
        let inside = self.clone();
        service_fn(move |_: LambdaEvent<Value>| {
            let inside = inside.clone();
            async move {
                let now = inside.now.fetch_add(1, Ordering::SeqCst) + 1;
                inside.most.fetch_max(now, Ordering::SeqCst);
                inside.runs.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(hold).await;
                inside.now.fetch_sub(1, Ordering::SeqCst);
                Ok::<u32, BoxError>(now)
            }
        })
    }
}

/// 30 invocations at once on separate tasks, each through its own service from `service`;
/// returns how many were refused.
async fn thirty_at_once<S>(service: impl Fn() -> S) -> u32
where
    S: Service<LambdaEvent<RawEvent>, Response = RawResponse, Error = InvocationError> + Send + 'static,
    S::Future: Send,
{
    let deadline = now_ms() + 60_000;
    let tasks: Vec<_> = (0..30)
        .map(|n| {
            let mut svc = service();
            tokio::spawn(async move {
                svc.ready()
                    .await
                    .unwrap()
                    .call(event(&format!("r{n}"), deadline))
                    .await
            })
        })
        .collect();
    let mut refused = 0;
    for task in tasks {
        match tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .unwrap()
            .unwrap()
        {
            Ok(_) => {}
            Err(error) => {
                assert_eq!(error.error_type(), "Keel.Concurrency.Rejected", "{error}");
                refused += 1;
            }
        }
    }
    refused
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn in_memory_never_more_than_the_limit_inside_and_the_others_refused_or_waiting() {
    for wait in [false, true] {
        let inside = Inside::default();
        let mut guard = ConcurrencyGuard::per_pointer("/resource_id", 3);
        if wait {
            guard = guard.wait_when_full(Duration::from_secs(20));
        }
        let keel = Keel::new("bookings").concurrency(guard);
        let shared: KeelService<_, Value> = keel.service(inside.handler(Duration::from_millis(50)));
        let refused = thirty_at_once(|| shared.clone()).await;
        assert_eq!(inside.most.load(Ordering::SeqCst), 3, "wait: {wait}");
        let runs = inside.runs.load(Ordering::SeqCst);
        assert_eq!(runs + refused, 30);
        if wait {
            assert_eq!(refused, 0, "waiting, everyone is admitted in turn");
        } else {
            assert!(refused >= 20, "{refused} refused");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn in_dynamodb_thirty_environments_share_the_limit() {
    let moto = Moto::start().expect("moto starts");
    let table = moto
        .create_table("keel-slots", Some(SLOT_TABLE.ttl_attribute))
        .await
        .unwrap();
    for wait in [false, true] {
        let inside = Inside::default();
        // One guard and one SDK client per "execution environment".
        let service = || {
            let mut guard =
                ConcurrencyGuard::per_pointer("/resource_id", 3).dynamodb(moto.dynamodb(), &table);
            if wait {
                guard = guard.wait_when_full(Duration::from_secs(30));
            }
            let service: KeelService<_, Value> = Keel::new("bookings")
                .concurrency(guard)
                .service(inside.handler(Duration::from_millis(100)));
            service
        };
        let refused = thirty_at_once(service).await;
        let most = inside.most.load(Ordering::SeqCst);
        assert!((1..=3).contains(&most), "at most 3 inside at once, saw {most}");
        assert_eq!(inside.runs.load(Ordering::SeqCst) + refused, 30);
        if wait {
            assert_eq!(refused, 0);
            assert_eq!(most, 3);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_holder_blocks_its_slot_only_until_its_lease_ends() {
    let moto = Moto::start().expect("moto starts");
    let table = moto
        .create_table("keel-slots", Some(SLOT_TABLE.ttl_attribute))
        .await
        .unwrap();
    let guard = || ConcurrencyGuard::global("partner", 1).dynamodb(moto.dynamodb(), &table);
    let lease_end = now_ms() + 1_500;

    // The holder "crashes": its future is leaked, so it never frees its slot.
    let crashed = Inside::default();
    let mut crashing: KeelService<_, Value> = Keel::new("b")
        .concurrency(guard())
        .service(crashed.handler(Duration::from_secs(3600)));
    let mut hung = Box::pin(async move {
        crashing
            .ready()
            .await
            .unwrap()
            .call(event("crashed", lease_end))
            .await
    });
    tokio::select! {
        _ = &mut hung => panic!("the holder must hang"),
        _ = async { while crashed.runs.load(Ordering::SeqCst) == 0 { tokio::time::sleep(Duration::from_millis(5)).await } } => {}
    }
    std::mem::forget(hung);

    let inside = Inside::default();
    let mut svc: KeelService<_, Value> = Keel::new("b")
        .concurrency(guard())
        .service(inside.handler(Duration::ZERO));
    let before = svc
        .ready()
        .await
        .unwrap()
        .call(event("before", now_ms() + 60_000))
        .await;
    assert_eq!(before.unwrap_err().error_type(), "Keel.Concurrency.Rejected");
    tokio::time::sleep(Duration::from_millis(lease_end.saturating_sub(now_ms()) + 50)).await;
    let after = svc
        .ready()
        .await
        .unwrap()
        .call(event("after", now_ms() + 60_000))
        .await;
    assert!(after.is_ok(), "the lease ended: {after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slots_are_freed_after_errors_and_panics_and_http_refusals_are_429() {
    let failures = Arc::new(AtomicU32::new(0));
    let count = failures.clone();
    let handler = service_fn(move |event: LambdaEvent<Value>| {
        let count = count.clone();
        async move {
            match event.payload["mode"].as_str() {
                Some("fail") => Err::<u32, BoxError>("partner refused".into()),
                Some("panic") => panic!("bug"),
                _ => Ok(count.fetch_add(1, Ordering::SeqCst)),
            }
        }
    });
    let svc: KeelService<_, Value> = Keel::new("b")
        .concurrency(ConcurrencyGuard::global("partner", 1))
        .service(handler);
    let call = |mode: &str| {
        let mut svc = svc.clone();
        let payload = serde_json::value::to_raw_value(&json!({"mode": mode})).unwrap();
        let mut context = Context::default();
        context.request_id = format!("r-{mode}");
        tokio::spawn(async move {
            svc.ready()
                .await
                .unwrap()
                .call(LambdaEvent::new(payload, context))
                .await
        })
    };
    assert!(call("fail").await.unwrap().is_err());
    assert!(call("ok").await.unwrap().is_ok(), "freed after an error");
    let panicked = call("panic")
        .await
        .expect("a panic is the invocation's error, not the task's");
    assert_eq!(panicked.unwrap_err().error_type(), "Keel.HandlerPanicked");
    assert!(call("ok").await.unwrap().is_ok(), "freed after a panic");

    // An HTTP event refused while the only slot is held: 429 with Retry-After.
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let entered = Arc::new(tokio::sync::Semaphore::new(0));
    let (held, inside) = (gate.clone(), entered.clone());
    let http: KeelService<_, Value> = Keel::new("b")
        .concurrency(ConcurrencyGuard::global("partner", 1))
        .service(service_fn(move |_: LambdaEvent<Value>| {
            let (held, inside) = (held.clone(), inside.clone());
            async move {
                inside.add_permits(1);
                let _permit = held.acquire().await?;
                Ok::<ApiGatewayV2httpResponse, BoxError>(ApiGatewayV2httpResponse::default())
            }
        }));
    let api_event = |id: &str| {
        let payload = json!({"routeKey": "POST /bookings", "rawPath": "/bookings", "requestContext": {"requestId": id}, "body": "{}"});
        let mut context = Context::default();
        context.request_id = id.to_owned();
        LambdaEvent::new(serde_json::value::to_raw_value(&payload).unwrap(), context)
    };
    let mut first = http.clone();
    let holder = tokio::spawn(async move { first.ready().await.unwrap().call(api_event("a")).await });
    // The first request holds the slot once its handler runs.
    let _inside = entered.acquire().await.unwrap();
    let mut second = http.clone();
    let refused = second.ready().await.unwrap().call(api_event("b")).await.unwrap();
    let refused: ApiGatewayV2httpResponse = crate::common::typed(&refused);
    assert_eq!(refused.status_code, 429);
    assert_eq!(refused.headers["retry-after"], "1");
    let body: Value = match refused.body {
        Some(aws_lambda_events::encodings::Body::Text(text)) => serde_json::from_str(&text).unwrap(),
        other => panic!("{other:?}"),
    };
    assert_eq!(body["code"], "ConcurrencyLimitReached");
    gate.add_permits(1);
    assert!(holder.await.unwrap().is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_take_retried_after_a_lost_answer_keeps_its_dynamodb_slot() {
    use keel_runtime::concurrency::{DynamoDbSlots, SlotStore};
    let moto = Moto::start().expect("moto starts");
    let table = moto
        .create_table("keel-slots", Some(SLOT_TABLE.ttl_attribute))
        .await
        .unwrap();
    let slots = DynamoDbSlots::new(moto.dynamodb(), &table);
    let lease = now_ms() + 60_000;
    assert!(slots
        .take("partner#0", "request-1", lease, now_ms())
        .await
        .unwrap());
    // The SDK sends the write again when its answer was lost: its own slot is taken, not refused.
    assert!(slots
        .take("partner#0", "request-1", lease, now_ms())
        .await
        .unwrap());
    assert!(!slots
        .take("partner#0", "request-2", lease, now_ms())
        .await
        .unwrap());
    slots.free("partner#0", "request-1").await.unwrap();
    assert!(slots
        .take("partner#0", "request-2", lease, now_ms())
        .await
        .unwrap());
}

/// A slot store that cannot be reached.
#[derive(Debug)]
struct Unreachable;

#[async_trait::async_trait]
impl keel_runtime::concurrency::SlotStore for Unreachable {
    async fn take(
        &self,
        _: &str,
        _: &str,
        _: u64,
        _: u64,
    ) -> Result<bool, keel_runtime::concurrency::SlotError> {
        Err(keel_runtime::concurrency::SlotError::Unavailable(
            "connection refused".into(),
        ))
    }

    async fn free(&self, _: &str, _: &str) -> Result<(), keel_runtime::concurrency::SlotError> {
        Err(keel_runtime::concurrency::SlotError::Unavailable(
            "connection refused".into(),
        ))
    }
}

#[test]
fn a_failed_slot_store_answers_503_counted_for_the_function_version() {
    let (keel, lines) = crate::common::keel();
    let keel = keel.concurrency(ConcurrencyGuard::global("partner", 1).with_store(Unreachable));
    let handler = service_fn(|_: LambdaEvent<Value>| async {
        Ok::<ApiGatewayV2httpResponse, BoxError>(ApiGatewayV2httpResponse::default())
    });
    let request = json!({"routeKey": "POST /bookings", "rawPath": "/bookings",
        "requestContext": {"requestId": "s-1", "http": {"method": "POST"}}, "body": "{}"});
    let mut event = crate::common::event("s-1", request);
    event.context.deadline = now_ms() + 60_000;
    let answers = crate::common::invoke(&keel, handler, vec![event]);
    assert_eq!(answers[0].as_ref().unwrap().status_code, 503);

    let counted: Vec<Value> = crate::common::emf(&lines)
        .into_iter()
        .filter(|d| d.get("HttpServerError").is_some())
        .collect();
    assert_eq!(counted.len(), 1, "{counted:#?}");
    let mut document = counted[0].clone();
    document["_aws"]["Timestamp"] = json!(0);
    assert_eq!(
        document,
        json!({
            "_aws": {"Timestamp": 0, "CloudWatchMetrics": [{
                "Namespace": "Keel",
                "Dimensions": [["service"], ["service", "function_version"]],
                "Metrics": [{"Name": "HttpServerError", "Unit": "Count"}]
            }]},
            "service": "svc",
            "function_version": "7",
            "function_request_id": "s-1",
            "HttpServerError": 1
        })
    );
}
