//! The idempotency layer end to end in-process, with records in DynamoDB (a moto server,
//! through the real SDK client) and in memory: replays, refusals as HTTP answers, in-progress
//! duplicates, a crashed first attempt, store failures, and 50 simultaneous duplicates.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lambda_events::apigw::ApiGatewayV2httpResponse;
use aws_lambda_events::encodings::Body;
use keel_runtime::idempotency::{Idempotency, TABLE};
use keel_runtime::{service_fn, BoxError, Context, InvocationError, Keel, LambdaEvent, RawEvent};
use keel_tests::Moto;
use serde_json::{json, Value};
use tower::{Service, ServiceExt};

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

fn api_event(request_id: &str, key: Option<&str>, body: Value, deadline_ms: u64) -> LambdaEvent<RawEvent> {
    let mut headers = json!({"content-type": "application/json"});
    if let Some(key) = key {
        headers["Idempotency-Key"] = key.into();
    }
    let event = json!({
        "routeKey": "POST /bookings", "rawPath": "/bookings", "headers": headers,
        "requestContext": {"requestId": request_id, "http": {"method": "POST"}},
        "body": body.to_string(), "isBase64Encoded": false
    });
    let mut context = Context::default();
    context.request_id = request_id.to_owned();
    context.deadline = deadline_ms;
    LambdaEvent::new(serde_json::value::to_raw_value(&event).unwrap(), context)
}

fn booking(room: &str) -> Value {
    json!({"room": room, "seats": 2, "start": "2026-12-01T10:00:00Z"})
}

/// A booking handler that counts its runs and answers 201 with a fresh booking id.
#[derive(Clone, Default)]
struct Handler {
    runs: Arc<AtomicU32>,
    hold: Option<Arc<tokio::sync::Semaphore>>,
    fail_first: Option<Arc<AtomicU32>>,
    panic_first: Option<Arc<AtomicU32>>,
    delay: Duration,
    /// Statuses to answer with, in turn (201 once they are used up).
    statuses: Arc<std::sync::Mutex<Vec<i64>>>,
}

impl Handler {
    async fn handle(self, event: LambdaEvent<Value>) -> Result<ApiGatewayV2httpResponse, BoxError> {
        let run = self.runs.fetch_add(1, Ordering::SeqCst) + 1;
        if let Some(hold) = &self.hold {
            let _permit = hold.acquire().await?;
        }
        tokio::time::sleep(self.delay).await;
        if let Some(failures) = &self.fail_first {
            if failures.fetch_add(1, Ordering::SeqCst) == 0 {
                return Err("payment service timed out".into());
            }
        }
        if let Some(panics) = &self.panic_first {
            assert_ne!(panics.fetch_add(1, Ordering::SeqCst), 0, "bug in the handler");
        }
        let mut response = ApiGatewayV2httpResponse::default();
        let mut statuses = self.statuses.lock().unwrap();
        response.status_code = if statuses.is_empty() {
            201
        } else {
            statuses.remove(0)
        };
        drop(statuses);
        let booking_id = format!("bk-{run}-{}", event.context.request_id);
        response.body = Some(Body::Text(json!({"booking_id": booking_id}).to_string()));
        Ok(response)
    }

    fn runs(&self) -> u32 {
        self.runs.load(Ordering::SeqCst)
    }
}

impl Service<LambdaEvent<Value>> for Handler {
    type Response = ApiGatewayV2httpResponse;
    type Error = BoxError;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), BoxError>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, event: LambdaEvent<Value>) -> Self::Future {
        Box::pin(self.clone().handle(event))
    }
}

type Svc = keel_runtime::KeelService<Handler, Value>;

fn service(idempotency: Idempotency, handler: &Handler) -> Svc {
    Keel::new("bookings")
        .idempotency(idempotency)
        .service(handler.clone())
}

async fn call(
    service: &mut Svc,
    event: LambdaEvent<RawEvent>,
) -> Result<ApiGatewayV2httpResponse, InvocationError> {
    let response = service.ready().await.unwrap().call(event).await?;
    Ok(serde_json::from_str(response.get()).expect("an HTTP response"))
}

fn body(response: &ApiGatewayV2httpResponse) -> Value {
    match &response.body {
        Some(Body::Text(text)) => serde_json::from_str(text).unwrap(),
        other => panic!("unexpected body {other:?}"),
    }
}

fn header<'a>(response: &'a ApiGatewayV2httpResponse, name: &str) -> Option<&'a str> {
    response.headers.get(name).and_then(|v| v.to_str().ok())
}

async fn table(moto: &Moto) -> String {
    moto.create_table("idempotency", Some(TABLE.ttl_attribute))
        .await
        .unwrap()
}

fn on_table(moto: &Moto, table: &str) -> Idempotency {
    Idempotency::dynamodb(moto.dynamodb(), table).key_from_header("Idempotency-Key")
}

async fn dynamodb(moto: &Moto) -> Idempotency {
    on_table(moto, &table(moto).await)
}

fn in_memory() -> Idempotency {
    Idempotency::memory().key_from_header("Idempotency-Key")
}

async fn replays_and_refusals(idempotency: Idempotency) {
    let handler = Handler::default();
    let mut svc = service(idempotency, &handler);
    let deadline = now_ms() + 30_000;

    let first = call(&mut svc, api_event("r1", Some("k1"), booking("a"), deadline))
        .await
        .unwrap();
    assert_eq!(first.status_code, 201);
    assert_eq!(header(&first, "idempotent-replayed"), None);

    // Same key, same body with its keys in another order: the stored response, marked.
    let retry_body = json!({"start": "2026-12-01T10:00:00Z", "seats": 2, "room": "a"});
    let retry = call(&mut svc, api_event("r2", Some("k1"), retry_body, deadline))
        .await
        .unwrap();
    assert_eq!(retry.status_code, 201);
    assert_eq!(body(&retry), body(&first));
    assert_eq!(header(&retry, "idempotent-replayed"), Some("true"));
    assert_eq!(handler.runs(), 1);

    let reused = call(&mut svc, api_event("r3", Some("k1"), booking("b"), deadline))
        .await
        .unwrap();
    assert_eq!(reused.status_code, 422);
    assert_eq!(body(&reused)["code"], "IdempotencyKeyReused");

    let missing = call(&mut svc, api_event("r4", None, booking("a"), deadline))
        .await
        .unwrap();
    assert_eq!(missing.status_code, 400);
    assert_eq!(body(&missing)["code"], "IdempotencyKeyMissing");
    assert!(body(&missing)["message"]
        .as_str()
        .unwrap()
        .contains("Idempotency-Key"));
    assert_eq!(handler.runs(), 1, "refused requests never reach the handler");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_are_replayed_and_misuse_refused_with_http_answers() {
    replays_and_refusals(in_memory()).await;
    let moto = Moto::start().expect("moto starts");
    replays_and_refusals(dynamodb(&moto).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_http_events_get_typed_errors_and_pass_through_is_opt_in() {
    let handler = Handler::default();
    let plain = |key: Option<&str>| {
        let mut event = json!({"detail": {"seats": 2}});
        if let Some(key) = key {
            event["detail"]["order"] = key.into();
        }
        let mut context = Context::default();
        context.request_id = "r".into();
        LambdaEvent::new(serde_json::value::to_raw_value(&event).unwrap(), context)
    };
    let mut strict = service(Idempotency::memory().key_from_pointer("/detail/order"), &handler);
    let error = call(&mut strict, plain(None)).await.unwrap_err();
    assert_eq!(error.error_type(), "Keel.Idempotency.MissingKey");
    assert!(error.to_string().contains("/detail/order"), "{error}");

    let mut lenient = service(
        Idempotency::memory()
            .key_from_pointer("/detail/order")
            .pass_through_without_key(),
        &handler,
    );
    call(&mut lenient, plain(None)).await.unwrap();
    call(&mut lenient, plain(None)).await.unwrap();
    assert_eq!(handler.runs(), 2, "without a key every request runs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_attempt_releases_its_key_so_the_retry_runs() {
    let moto = Moto::start().expect("moto starts");
    for idempotency in [in_memory(), dynamodb(&moto).await] {
        let handler = Handler {
            fail_first: Some(Arc::default()),
            ..Handler::default()
        };
        let mut svc = service(idempotency, &handler);
        let deadline = now_ms() + 30_000;
        let error = call(&mut svc, api_event("r1", Some("k"), booking("a"), deadline))
            .await
            .unwrap_err();
        assert_eq!(error.to_string(), "payment service timed out");
        let retry = call(&mut svc, api_event("r2", Some("k"), booking("a"), deadline))
            .await
            .unwrap();
        assert_eq!(retry.status_code, 201);
        assert_eq!(handler.runs(), 2);
    }
}

async fn started(handler: &Handler, runs: u32) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while handler.runs() < runs {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the handler did not start"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_progress_duplicates_get_409_or_wait_for_the_response() {
    let moto = Moto::start().expect("moto starts");
    for (wait, in_memory_store) in [(false, true), (true, true), (false, false), (true, false)] {
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let handler = Handler {
            hold: Some(gate.clone()),
            ..Handler::default()
        };
        let mut idempotency = match in_memory_store {
            true => in_memory(),
            false => dynamodb(&moto).await,
        };
        if wait {
            idempotency = idempotency.wait_while_in_progress();
        }
        let svc = service(idempotency, &handler);
        let deadline = now_ms() + 20_000;
        let mut first_svc = svc.clone();
        let first = tokio::spawn(async move {
            call(&mut first_svc, api_event("r1", Some("k"), booking("a"), deadline)).await
        });
        started(&handler, 1).await;

        let mut duplicate_svc = svc.clone();
        let duplicate = tokio::spawn(async move {
            call(
                &mut duplicate_svc,
                api_event("r2", Some("k"), booking("a"), deadline),
            )
            .await
        });
        if wait {
            tokio::time::sleep(Duration::from_millis(200)).await;
            assert!(!duplicate.is_finished(), "the duplicate waits");
            gate.add_permits(1);
            let first = first.await.unwrap().unwrap();
            let duplicate = duplicate.await.unwrap().unwrap();
            assert_eq!(body(&duplicate), body(&first));
            assert_eq!(header(&duplicate, "idempotent-replayed"), Some("true"));
        } else {
            let duplicate = duplicate.await.unwrap().unwrap();
            assert_eq!(duplicate.status_code, 409);
            assert_eq!(body(&duplicate)["code"], "IdempotencyKeyInProgress");
            let retry_after: u64 = header(&duplicate, "retry-after").unwrap().parse().unwrap();
            assert!((1..=20).contains(&retry_after), "{retry_after}");
            gate.add_permits(1);
            assert_eq!(first.await.unwrap().unwrap().status_code, 201);
        }
        assert_eq!(handler.runs(), 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_attempt_holds_its_key_only_until_its_deadline() {
    let moto = Moto::start().expect("moto starts");
    let table = table(&moto).await;
    let deadline = now_ms() + 1_500;

    // The first attempt acquires the key and "crashes": its future is leaked, so nothing of it
    // runs again (no completion, no release), as when Lambda kills the environment.
    let crashing = Handler {
        hold: Some(Arc::new(tokio::sync::Semaphore::new(0))),
        ..Handler::default()
    };
    let mut crashed_svc = service(on_table(&moto, &table), &crashing);
    let event = api_event("r1", Some("k"), booking("a"), deadline);
    let mut crashed = Box::pin(async move { call(&mut crashed_svc, event).await });
    tokio::select! {
        _ = &mut crashed => panic!("the first attempt must hang"),
        _ = started(&crashing, 1) => {}
    }
    std::mem::forget(crashed);

    let handler = Handler::default();
    let mut svc = service(on_table(&moto, &table), &handler);
    let before = call(
        &mut svc,
        api_event("r2", Some("k"), booking("a"), now_ms() + 30_000),
    )
    .await
    .unwrap();
    assert_eq!(before.status_code, 409, "before the deadline the key is held");
    tokio::time::sleep(Duration::from_millis(deadline.saturating_sub(now_ms()) + 50)).await;
    let after = call(
        &mut svc,
        api_event("r3", Some("k"), booking("a"), now_ms() + 30_000),
    )
    .await
    .unwrap();
    assert_eq!(
        after.status_code, 201,
        "after the deadline a retry runs the handler once more"
    );
    let again = call(
        &mut svc,
        api_event("r4", Some("k"), booking("a"), now_ms() + 30_000),
    )
    .await
    .unwrap();
    assert_eq!(body(&again), body(&after));
    assert_eq!((crashing.runs(), handler.runs()), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_or_cancelled_handler_releases_its_key_at_once() {
    let moto = Moto::start().expect("moto starts");
    let table = table(&moto).await;
    let deadline = now_ms() + 60_000;

    // A panic fails the invocation (Keel catches it): the key is released before the answer.
    let panicking = service_fn(|_: LambdaEvent<Value>| async {
        if true {
            panic!("bug in the handler");
        }
        Ok::<ApiGatewayV2httpResponse, BoxError>(ApiGatewayV2httpResponse::default())
    });
    let mut svc = Keel::new("bookings")
        .idempotency(on_table(&moto, &table))
        .service(panicking);
    let event = api_event("r1", Some("k"), booking("a"), deadline);
    let caught = tokio::spawn(async move { svc.ready().await.unwrap().call(event).await }).await;
    let failed = caught.expect("the panic is the invocation's error, not the task's");
    assert_eq!(failed.unwrap_err().error_type(), "Keel.HandlerPanicked");
    let handler = Handler::default();
    let mut retry_svc = service(on_table(&moto, &table), &handler);
    let retry = call(&mut retry_svc, api_event("r2", Some("k"), booking("a"), deadline))
        .await
        .unwrap();
    assert_eq!(retry.status_code, 201, "released at once");
    assert_eq!(handler.runs(), 1);

    // A cancelled invocation (its future dropped) releases the key on the runtime shortly
    // after; the retry does not wait for the deadline.
    // The hanging handler says when it runs: it holds the key from then on.
    let entered = Arc::new(tokio::sync::Semaphore::new(0));
    let inside = entered.clone();
    let hanging = service_fn(move |_: LambdaEvent<Value>| {
        inside.add_permits(1);
        std::future::pending::<Result<ApiGatewayV2httpResponse, BoxError>>()
    });
    let mut svc = Keel::new("bookings")
        .idempotency(on_table(&moto, &table))
        .service(hanging);
    let event = api_event("r3", Some("k2"), booking("a"), deadline);
    let running = tokio::spawn(async move { svc.ready().await.unwrap().call(event).await });
    tokio::time::timeout(Duration::from_secs(60), entered.acquire())
        .await
        .expect("the hanging handler runs")
        .unwrap()
        .forget();
    let mut probe = service(on_table(&moto, &table), &handler);
    let claimed = call(&mut probe, api_event("r4", Some("k2"), booking("a"), deadline))
        .await
        .unwrap();
    assert_eq!(claimed.status_code, 409, "the hanging invocation holds the key");
    running.abort();
    let released = wait_for_status(&mut probe, "k2", 201).await;
    assert_eq!(released, 201, "the key was released after the cancellation");
    assert_eq!(handler.runs(), 2);
}

/// Sends `POST /bookings` with the key `key` until it is answered `status` (or 60 s pass);
/// returns the last status.
async fn wait_for_status(service: &mut Svc, key: &str, status: u16) -> i64 {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let event = api_event(
            &keel_tests::unique_name("probe"),
            Some(key),
            booking("a"),
            now_ms() + 60_000,
        );
        let answer = call(service, event).await.unwrap().status_code;
        if answer == i64::from(status) || std::time::Instant::now() >= deadline {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_releases_an_in_memory_key_before_it_answers() {
    let handler = Handler {
        panic_first: Some(Arc::default()),
        ..Handler::default()
    };
    let svc = service(in_memory(), &handler);
    let deadline = now_ms() + 60_000;
    let mut first = svc.clone();
    let event = api_event("r1", Some("k"), booking("a"), deadline);
    let caught = tokio::spawn(async move { call(&mut first, event).await }).await;
    let failed = caught.expect("the panic is the invocation's error, not the task's");
    assert_eq!(failed.unwrap_err().error_type(), "Keel.HandlerPanicked");
    // In memory, the release happens as the handler fails: no wait at all.
    let mut retry = svc.clone();
    let answer = call(&mut retry, api_event("r2", Some("k"), booking("a"), deadline))
        .await
        .unwrap();
    assert_eq!(answer.status_code, 201);
    assert_eq!(handler.runs(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_failures_fail_closed_by_default_or_open_on_request() {
    let moto = Moto::start().expect("moto starts");
    let mut unreachable = moto.sdk_config().into_builder();
    unreachable.set_endpoint_url(Some("http://127.0.0.1:9".into()));
    let client = aws_sdk_dynamodb::Client::new(&unreachable.build());
    let deadline = now_ms() + 30_000;

    let handler = Handler::default();
    let closed = Idempotency::dynamodb(client.clone(), "t").key_from_header("Idempotency-Key");
    let refused = call(
        &mut service(closed, &handler),
        api_event("r1", Some("k"), booking("a"), deadline),
    )
    .await
    .unwrap();
    assert_eq!(refused.status_code, 503);
    assert_eq!(body(&refused)["code"], "IdempotencyStoreUnavailable");
    assert_eq!(handler.runs(), 0);

    let open = Idempotency::dynamodb(client, "t")
        .key_from_header("Idempotency-Key")
        .fail_open();
    let served = call(
        &mut service(open, &handler),
        api_event("r2", Some("k"), booking("a"), deadline),
    )
    .await
    .unwrap();
    assert_eq!(served.status_code, 201);
    assert_eq!(handler.runs(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_too_large_to_store_is_returned_but_never_replayed() {
    let moto = Moto::start().expect("moto starts");
    let handler = Handler::default();
    let mut svc = service(dynamodb(&moto).await.max_response_bytes(16), &handler);
    let deadline = now_ms() + 30_000;
    let first = call(&mut svc, api_event("r1", Some("k"), booking("a"), deadline))
        .await
        .unwrap();
    assert_eq!(first.status_code, 201);
    let duplicate = call(&mut svc, api_event("r2", Some("k"), booking("a"), deadline))
        .await
        .unwrap();
    assert_eq!(duplicate.status_code, 409);
    assert_eq!(body(&duplicate)["code"], "IdempotentResponseUnavailable");
    assert_eq!(handler.runs(), 1, "no silent re-execution");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trips_two_for_a_first_request_one_for_a_duplicate_none_from_the_cache() {
    let moto = Moto::start().expect("moto starts");
    let table = table(&moto).await;
    let deadline = now_ms() + 30_000;
    for (cache, duplicate_cost) in [(0, 1), (100, 0)] {
        let (client, requests) = moto.dynamodb_counted();
        let idempotency = Idempotency::dynamodb(client, table.clone())
            .key_from_header("Idempotency-Key")
            .local_cache(cache);
        let handler = Handler::default();
        let mut svc = service(idempotency, &handler);
        let key = format!("round-trips-{cache}");
        call(&mut svc, api_event("r1", Some(&key), booking("a"), deadline))
            .await
            .unwrap();
        assert_eq!(requests.get(), 2, "first request: acquire + complete");
        call(&mut svc, api_event("r2", Some(&key), booking("a"), deadline))
            .await
            .unwrap();
        assert_eq!(requests.get(), 2 + duplicate_cost, "duplicate with cache {cache}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_simultaneous_duplicates_run_the_handler_exactly_once_per_round() {
    const ENVIRONMENTS: usize = 50;
    const ROUNDS: usize = 20;
    let moto = Moto::start().expect("moto starts");
    let table = table(&moto).await;
    let handler = Handler {
        delay: Duration::from_millis(20),
        ..Handler::default()
    };
    // One service, SDK client and store per simulated execution environment.
    let services: Vec<Svc> = (0..ENVIRONMENTS)
        .map(|_| {
            let client = aws_sdk_dynamodb::Client::new(&moto.sdk_config());
            let idempotency = Idempotency::dynamodb(client, table.clone()).key_from_header("Idempotency-Key");
            service(idempotency, &handler)
        })
        .collect();

    let run = async move {
        for round in 0..ROUNDS {
            let before = handler.runs();
            let key = format!("round-{round}");
            let barrier = Arc::new(tokio::sync::Barrier::new(ENVIRONMENTS));
            let tasks: Vec<_> = services
                .iter()
                .enumerate()
                .map(|(i, svc)| {
                    let mut svc = svc.clone();
                    let barrier = barrier.clone();
                    let event = api_event(
                        &format!("r{round}-{i}"),
                        Some(&key),
                        booking("a"),
                        now_ms() + 30_000,
                    );
                    tokio::spawn(async move {
                        barrier.wait().await;
                        call(&mut svc, event).await
                    })
                })
                .collect();
            let mut created = 0;
            for task in tasks {
                let response = task.await.unwrap().expect("every request is answered");
                match response.status_code {
                    201 => created += 1,
                    409 => assert_eq!(body(&response)["code"], "IdempotencyKeyInProgress"),
                    other => panic!("round {round}: unexpected status {other}"),
                }
            }
            assert_eq!(
                handler.runs() - before,
                1,
                "round {round}: the handler ran more than once"
            );
            assert!(created >= 1, "round {round}");
        }
    };
    tokio::time::timeout(Duration::from_secs(240), run)
        .await
        .expect("the rounds finish in time");
}

/// An HTTP API event for `method path?query` with `body`, from the caller `sub` (a JWT
/// authorizer's claim) when given, without an idempotency key.
fn request(
    method: &str,
    path: &str,
    query: &str,
    body: Option<Value>,
    sub: Option<&str>,
) -> LambdaEvent<RawEvent> {
    let mut context_json =
        json!({"requestId": keel_tests::unique_name("r"), "http": {"method": method, "path": path}});
    if let Some(sub) = sub {
        context_json["authorizer"] = json!({"jwt": {"claims": {"sub": sub, "iat": now_ms()}, "scopes": []}});
    }
    let mut event = json!({
        "version": "2.0", "routeKey": format!("{method} /bookings"), "rawPath": path, "rawQueryString": query,
        "headers": {"x-request-time": now_ms().to_string()}, "requestContext": context_json, "isBase64Encoded": false,
    });
    if let Some(body) = body {
        event["body"] = body.to_string().into();
    }
    let mut context = Context::default();
    context.request_id = keel_tests::unique_name("request");
    context.deadline = now_ms() + 60_000;
    LambdaEvent::new(serde_json::value::to_raw_value(&event).unwrap(), context)
}

#[tokio::test]
async fn the_default_key_identifies_the_http_request_and_its_caller() {
    let handler = Handler::default();
    let mut svc = service(Idempotency::memory(), &handler);
    let get = |path: &str, query: &str| request("GET", path, query, None, None);
    let one = call(&mut svc, get("/bookings/1", "")).await.unwrap();
    let two = call(&mut svc, get("/bookings/2", "")).await.unwrap();
    assert_eq!(handler.runs(), 2, "two paths, two requests");
    assert_ne!(body(&one), body(&two));
    let again = call(&mut svc, get("/bookings/1", "")).await.unwrap();
    assert_eq!(body(&again), body(&one), "the same request is replayed");
    assert_eq!(header(&again, "idempotent-replayed"), Some("true"));
    call(&mut svc, get("/bookings/1", "view=full")).await.unwrap();
    assert_eq!(handler.runs(), 3, "another query, another request");

    let post = |sub| request("POST", "/bookings", "", Some(booking("a")), Some(sub));
    let alice = call(&mut svc, post("alice")).await.unwrap();
    let bob = call(&mut svc, post("bob")).await.unwrap();
    assert_eq!(
        handler.runs(),
        5,
        "two callers posting the same body are two requests"
    );
    assert_ne!(body(&alice), body(&bob), "neither gets the other's answer");
    let alice_again = call(&mut svc, post("alice")).await.unwrap();
    assert_eq!(
        body(&alice_again),
        body(&alice),
        "a retry with a fresh token is replayed"
    );
    let delete = call(
        &mut svc,
        request("DELETE", "/bookings", "", Some(booking("a")), Some("alice")),
    )
    .await
    .unwrap();
    assert_eq!(
        (delete.status_code, handler.runs()),
        (201, 6),
        "another method, another request"
    );
}

#[tokio::test]
async fn a_key_from_a_header_is_scoped_to_its_caller() {
    let handler = Handler::default();
    let mut svc = service(in_memory(), &handler);
    let keyed = |sub: &str| {
        let mut event: Value = serde_json::from_str(
            request("POST", "/bookings", "", Some(booking("a")), Some(sub))
                .payload
                .get(),
        )
        .unwrap();
        event["headers"]["Idempotency-Key"] = "order-1".into();
        let mut context = Context::default();
        context.request_id = keel_tests::unique_name("request");
        context.deadline = now_ms() + 60_000;
        LambdaEvent::new(serde_json::value::to_raw_value(&event).unwrap(), context)
    };
    let alice = call(&mut svc, keyed("alice")).await.unwrap();
    let bob = call(&mut svc, keyed("bob")).await.unwrap();
    assert_eq!((alice.status_code, bob.status_code), (201, 201));
    assert_eq!(handler.runs(), 2, "the same key from two callers: two requests");
    assert_eq!(body(&call(&mut svc, keyed("alice")).await.unwrap()), body(&alice));
}

#[tokio::test]
async fn retry_later_answers_are_not_stored_but_others_are() {
    for store in ["memory", "remote"] {
        let handler = Handler::default();
        *handler.statuses.lock().unwrap() = vec![503, 429, 201, 404];
        let idempotency = match store {
            "memory" => in_memory(),
            _ => Idempotency::with_store(keel_runtime::idempotency::MemoryStore::new())
                .key_from_header("Idempotency-Key"),
        };
        let mut svc = service(idempotency, &handler);
        let deadline = now_ms() + 60_000;
        let mut statuses = Vec::new();
        for n in 0..4 {
            let answer = call(
                &mut svc,
                api_event(&format!("r{n}"), Some("k"), booking("a"), deadline),
            )
            .await
            .unwrap();
            statuses.push((
                answer.status_code,
                header(&answer, "idempotent-replayed").is_some(),
            ));
        }
        assert_eq!(
            statuses,
            [(503, false), (429, false), (201, false), (201, true)],
            "{store}: 503 and 429 are retried, 201 replayed"
        );
        let not_found = call(&mut svc, api_event("r5", Some("k404"), booking("a"), deadline))
            .await
            .unwrap();
        let again = call(&mut svc, api_event("r6", Some("k404"), booking("a"), deadline))
            .await
            .unwrap();
        assert_eq!((not_found.status_code, again.status_code), (404, 404));
        assert_eq!(
            header(&again, "idempotent-replayed"),
            Some("true"),
            "{store}: a 404 is replayed"
        );
        assert_eq!(handler.runs(), 4, "{store}");
    }
}

#[tokio::test]
async fn a_full_guards_refusal_is_not_replayed() {
    use keel_runtime::concurrency::{ConcurrencyGuard, SlotStore};
    let handler = Handler::default();
    let slots = Arc::new(keel_runtime::concurrency::MemorySlots::new());
    let mut svc: Svc = Keel::new("bookings")
        .idempotency(in_memory())
        .concurrency(ConcurrencyGuard::global("partner", 1).with_store(slots.clone()))
        .service(handler.clone());
    let deadline = now_ms() + 60_000;
    // Another environment holds the only slot.
    assert!(slots
        .take("partner#0", "elsewhere", deadline, now_ms())
        .await
        .unwrap());
    let refused = call(&mut svc, api_event("r1", Some("k"), booking("a"), deadline))
        .await
        .unwrap();
    assert_eq!(refused.status_code, 429);
    slots.free("partner#0", "elsewhere").await.unwrap();
    let retry = call(&mut svc, api_event("r2", Some("k"), booking("a"), deadline))
        .await
        .unwrap();
    assert_eq!(
        retry.status_code, 201,
        "the retry runs: the refusal was not stored"
    );
    assert_eq!(header(&retry, "idempotent-replayed"), None);
    let replayed = call(&mut svc, api_event("r3", Some("k"), booking("a"), deadline))
        .await
        .unwrap();
    assert_eq!(header(&replayed, "idempotent-replayed"), Some("true"));
    assert_eq!(handler.runs(), 1);
}

/// A store whose first acquire reaches the table but loses its answer, so that it is sent
/// again — as the SDK retries a write whose response did not arrive.
#[derive(Debug)]
struct LostAnswer<S>(S);

#[async_trait::async_trait]
impl<S: keel_runtime::idempotency::IdempotencyStore> keel_runtime::idempotency::IdempotencyStore
    for LostAnswer<S>
{
    async fn acquire(
        &self,
        record: &keel_runtime::idempotency::Record,
        now: keel_runtime::idempotency::Now,
    ) -> Result<keel_runtime::idempotency::Acquire, keel_runtime::idempotency::StoreError> {
        self.0.acquire(record, now).await?;
        self.0.acquire(record, now).await
    }

    async fn complete(
        &self,
        id: &str,
        owner: &str,
        data: Option<Arc<str>>,
        expiration: u64,
    ) -> Result<(), keel_runtime::idempotency::StoreError> {
        self.0.complete(id, owner, data, expiration).await
    }

    async fn release(&self, id: &str, owner: &str) -> Result<(), keel_runtime::idempotency::StoreError> {
        self.0.release(id, owner).await
    }

    async fn get(
        &self,
        id: &str,
    ) -> Result<Option<keel_runtime::idempotency::Record>, keel_runtime::idempotency::StoreError> {
        self.0.get(id).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acquire_retried_after_a_lost_answer_finds_its_own_record() {
    let moto = Moto::start().expect("moto starts");
    let table = table(&moto).await;
    let stores = [
        Idempotency::with_store(LostAnswer(keel_runtime::idempotency::MemoryStore::new())),
        Idempotency::with_store(LostAnswer(keel_runtime::idempotency::DynamoDbStore::new(
            moto.dynamodb(),
            &table,
        ))),
    ];
    for idempotency in stores {
        let handler = Handler::default();
        let mut svc = service(idempotency.key_from_header("Idempotency-Key"), &handler);
        let deadline = now_ms() + 60_000;
        let first = call(&mut svc, api_event("r1", Some("k"), booking("a"), deadline))
            .await
            .unwrap();
        assert_eq!(first.status_code, 201, "its own record does not hold it back");
        let other = call(&mut svc, api_event("r2", Some("k"), booking("a"), deadline))
            .await
            .unwrap();
        assert_eq!(header(&other, "idempotent-replayed"), Some("true"));
        assert_eq!(handler.runs(), 1);
    }
}
