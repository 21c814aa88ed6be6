//! Heap allocations Keel adds to a warm invocation, counted with a counting global allocator.
//! The bound guards against regressions on the hot path; the exact figures are printed
//! (`cargo test -p keel-runtime --test it allocations -- --nocapture`). Only the allocations of
//! the thread that asks are counted, so the other tests of this binary may run beside it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use crate::common::{event, keel};
use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use aws_lambda_events::encodings::Body;
use keel_runtime::idempotency::Idempotency;
use keel_runtime::{service_fn, BoxError, Context, LambdaEvent};
use serde_json::{json, Value};
use tower::{Service, ServiceExt};
use tracing_subscriber::layer::SubscriberExt;

struct Counting;

thread_local! {
    /// Allocations made by this thread so far (a constant initializer: reading it never
    /// allocates).
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

fn count_one() {
    // During a thread's teardown the counter may be gone: that allocation is not counted.
    let _ = ALLOCATIONS.try_with(|count| count.set(count.get() + 1));
}

/// This thread's allocations so far.
fn allocations() -> usize {
    ALLOCATIONS.with(Cell::get)
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_one();
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_one();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations Keel may add to an invocation that logs two lines and records five metrics.
const BUDGET: usize = 42;

/// Allocations Keel may add to the booking API's first request (logs, EMF and idempotency keyed
/// by the `Idempotency-Key` header, records in memory).
const HTTP_FIRST_BUDGET: usize = 50;

/// Allocations a replay of that request may make in all: it runs no handler, so fewer than the
/// bare handler's own.
const HTTP_REPLAY_ALLOCATIONS: usize = 32;

async fn handler(event: LambdaEvent<Value>) -> Result<u64, BoxError> {
    let seats = event.payload["seats"].as_u64().unwrap_or(1);
    tracing::info!(seats, "booking received");
    metrics::counter!("BookingsReceived").increment(1);
    metrics::counter!("Seats").increment(seats);
    metrics::counter!("ByResource", "resource" => "room").increment(1);
    metrics::gauge!("Extras").set(2.0);
    metrics::histogram!("PriceCents").record(1250.0);
    tracing::info!(seats, "booking priced");
    Ok(seats)
}

/// The allocations of the second of two runs (the first warms up: cold start, registrations).
fn counted(run: &mut dyn FnMut()) -> usize {
    run();
    let before = allocations();
    run();
    allocations() - before
}

#[test]
fn a_warm_invocation_stays_within_its_allocation_budget() {
    let (keel, lines) = keel();
    let subscriber = tracing_subscriber::registry().with(keel.log_layer());
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let payload = json!({"seats": 2, "resource_id": "room-1"});

    let mut bare = service_fn(handler);
    let bare_allocations = metrics::with_local_recorder(&metrics::NoopRecorder, || {
        counted(&mut || {
            let event = event("r", payload.clone());
            let typed: Value = serde_json::from_str(event.payload.get()).unwrap();
            runtime
                .block_on(bare.call(LambdaEvent::new(typed, event.context)))
                .unwrap();
        })
    });

    let mut wrapped = keel.service(service_fn(handler));
    let keel_allocations = tracing::subscriber::with_default(subscriber, || {
        counted(&mut || {
            let event = event("r", payload.clone());
            runtime.block_on(async { wrapped.ready().await.unwrap().call(event).await.unwrap() });
            lines.clear();
        })
    });

    let added = keel_allocations.saturating_sub(bare_allocations);
    println!("allocations per warm invocation: bare {bare_allocations}, with Keel {keel_allocations}, added {added}");
    assert!(
        added <= BUDGET,
        "Keel added {added} allocations (budget {BUDGET})"
    );
}

/// The booking API's request: an API Gateway HTTP API event (payload 2.0) with headers, a
/// request context and a JSON body of about 1 KB.
fn http_event(key: &str) -> Vec<u8> {
    let body = json!({
        "resource_id": "room-042",
        "seats": 4,
        "notes": "Window seat if possible; arriving by train, may be 10 minutes late. ".repeat(12),
    })
    .to_string();
    json!({
        "version": "2.0",
        "routeKey": "POST /bookings",
        "rawPath": "/bookings",
        "rawQueryString": "",
        "headers": {
            "content-type": "application/json",
            "host": "api.bookings.example.com",
            "idempotency-key": key,
            "user-agent": "bookings-web/4.2",
            "x-forwarded-for": "203.0.113.24"
        },
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "a1b2c3d4e5",
            "authorizer": {"jwt": {"claims": {"sub": "cust-1"}, "scopes": null}},
            "domainName": "api.bookings.example.com",
            "http": {"method": "POST", "path": "/bookings", "protocol": "HTTP/1.1", "sourceIp": "203.0.113.24", "userAgent": "bookings-web/4.2"},
            "requestId": "JKJaXmPLvHcESHA=",
            "routeKey": "POST /bookings",
            "stage": "$default",
            "time": "01/Dec/2026:10:00:00 +0000",
            "timeEpoch": 1_796_119_200_000u64
        },
        "body": body,
        "isBase64Encoded": false
    })
    .to_string()
    .into_bytes()
}

#[derive(serde::Deserialize)]
struct Booking {
    resource_id: String,
    seats: u64,
}

async fn create_booking(
    event: LambdaEvent<ApiGatewayV2httpRequest>,
) -> Result<ApiGatewayV2httpResponse, BoxError> {
    let body = event.payload.body.unwrap_or_default();
    let booking: Booking = serde_json::from_str(&body)?;
    tracing::info!(resource_id = %booking.resource_id, "booking received");
    metrics::counter!("BookingsReceived").increment(1);
    metrics::counter!("Seats").increment(booking.seats);
    metrics::counter!("ByResource", "resource" => "room").increment(1);
    metrics::gauge!("Extras").set(2.0);
    metrics::histogram!("PriceCents").record(1250.0);
    tracing::info!(seats = booking.seats, "booking created");
    let mut response = ApiGatewayV2httpResponse::default();
    response.status_code = 201;
    response.body = Some(Body::Text(body));
    Ok(response)
}

#[test]
fn the_booking_apis_first_request_and_replay_stay_within_their_allocation_budgets() {
    let (keel, lines) = keel();
    let keel = keel.idempotency(Idempotency::memory().key_from_header("Idempotency-Key"));
    let subscriber = tracing_subscriber::registry().with(keel.log_layer());
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let mut n = 0;
    let mut fresh = || {
        n += 1;
        http_event(&format!("key-{n}"))
    };

    // `lambda_runtime`'s own path: the event read into the handler's type, the response written.
    let mut bare = service_fn(create_booking);
    let bare_allocations = metrics::with_local_recorder(&metrics::NoopRecorder, || {
        counted(&mut || {
            let event: ApiGatewayV2httpRequest = serde_json::from_slice(&fresh()).unwrap();
            let response = runtime
                .block_on(bare.call(LambdaEvent::new(event, Context::default())))
                .unwrap();
            serde_json::to_vec(&response).unwrap();
        })
    });

    let mut wrapped = keel.service(service_fn(create_booking));
    let mut invoke = |bytes: &[u8]| {
        let mut context = Context::default();
        context.request_id = "r".into();
        context.deadline = u64::MAX / 2;
        let event = LambdaEvent::new(serde_json::from_slice(bytes).unwrap(), context);
        let response = runtime.block_on(async { wrapped.ready().await.unwrap().call(event).await.unwrap() });
        serde_json::to_vec(&response).unwrap();
        lines.clear();
    };
    let (first, replay) = tracing::subscriber::with_default(subscriber, || {
        let first = counted(&mut || invoke(&fresh()));
        let replayed = http_event("replayed");
        let replay = counted(&mut || invoke(&replayed));
        (first, replay)
    });

    let added = |keel: usize| keel.saturating_sub(bare_allocations);
    println!(
        "allocations per warm invocation of the booking API: bare {bare_allocations}, first request {first} (added {}), replay {replay} (added {})",
        added(first),
        added(replay)
    );
    assert!(
        added(first) <= HTTP_FIRST_BUDGET,
        "a first request added {} allocations (budget {HTTP_FIRST_BUDGET})",
        added(first)
    );
    assert!(
        replay <= HTTP_REPLAY_ALLOCATIONS.min(bare_allocations),
        "a replay made {replay} allocations (at most {HTTP_REPLAY_ALLOCATIONS}, and fewer than the bare handler's {bare_allocations})"
    );
}
