//! Keel's overhead on the request a booking API serves, measured the way a user's function
//! runs: an API Gateway HTTP API event (payload 2.0: headers, request context, a 1 KB JSON
//! body) and a handler that parses the body, validates it, logs two lines, records five metrics
//! and answers 201 with the booking.
//!
//! Every variant starts from the event's bytes, as the Runtime API hands them over, and ends
//! with the response's bytes, as `lambda_runtime` posts them: the bare handler is
//! `lambda_runtime`'s own path (the event deserialized into the handler's type, the response
//! serialized), Keel's is the same handler behind [`Keel::service`]. In one run, side by side:
//!
//! - `bare`: the handler alone (no subscriber, no recorder: its log and metric calls cost next
//!   to nothing);
//! - `logs_emf`: Keel's logs and EMF;
//! - `idempotency_first` / `idempotency_replay`: the same, and idempotency keyed by the
//!   `Idempotency-Key` header with records in memory — a fresh key on every request, or one key
//!   replayed;
//! - `guard`: the same (first requests), and a concurrency guard of 10 per resource in memory;
//! - `routing`: the same, and error routing (the handler succeeds: what every invocation pays).
//!
//! Log lines and EMF documents go to `/dev/null` (`*/null` benchmarks: a write per line, as on
//! Lambda) and to memory (`*/memory`: emptied every iteration, untimed). Every request but the
//! replays carries a fresh idempotency key (written outside the timed part); the in-memory
//! store is replaced, untimed, every `STORE_RECORDS` requests, so that it holds a busy
//! environment's worth.
//!
//! `KEEL_BENCH_PAIRED=<variant>[:<requests>[:null]]` measures one variant paired with the bare
//! handler instead, request by request (see [`paired`]): `cargo bench -p keel-runtime --bench
//! http_api` with it set prints the medians and what Keel adds.

use std::hint::black_box;
use std::time::{Duration, Instant};

use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use aws_lambda_events::encodings::Body;
use aws_lambda_events::http::header::{HeaderMap, HeaderValue, CONTENT_TYPE};
use criterion::{criterion_group, criterion_main, Criterion};
use keel_runtime::concurrency::ConcurrencyGuard;
use keel_runtime::idempotency::Idempotency;
use keel_runtime::output::{CapturedLines, Output};
use keel_runtime::routing::ErrorRouting;
use keel_runtime::{service_fn, BoxError, Keel, LambdaEvent, RawEvent};
use serde_json::json;
use tower::{Service, ServiceExt};
use tracing_subscriber::layer::SubscriberExt;

mod booking;

use booking::{booking_json, current_thread, live, Booking, STORE_RECORDS};

/// The idempotency key's placeholder in [`event_template`]: replaced by a fresh key of the
/// same length for every request.
const KEY_PLACEHOLDER: &str = "00000000-0000-4000-8000-000000000000";

/// An API Gateway HTTP API (payload 2.0) `POST /bookings` event, as Lambda delivers it.
fn event_template() -> String {
    json!({
        "version": "2.0",
        "routeKey": "POST /bookings",
        "rawPath": "/bookings",
        "rawQueryString": "",
        "cookies": ["session=2f9c4e"],
        "headers": {
            "accept": "application/json",
            "accept-encoding": "gzip, deflate, br",
            "authorization": "Bearer eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJjdXN0LTEyMzQ1Njc4OTAifQ.c2lnbmF0dXJl",
            "content-length": "1046",
            "content-type": "application/json",
            "host": "api.bookings.example.com",
            "idempotency-key": KEY_PLACEHOLDER,
            "user-agent": "bookings-web/4.2 (+https://bookings.example.com)",
            "x-amzn-trace-id": "Root=1-5bef4de7-ad49b0e87f6ef6c87fc2e700",
            "x-forwarded-for": "203.0.113.24",
            "x-forwarded-port": "443",
            "x-forwarded-proto": "https"
        },
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "a1b2c3d4e5",
            "authorizer": {"jwt": {
                "claims": {"sub": "cust-1234567890", "iss": "https://idp.example.com", "aud": "bookings"},
                "scopes": null
            }},
            "domainName": "api.bookings.example.com",
            "domainPrefix": "api",
            "http": {
                "method": "POST",
                "path": "/bookings",
                "protocol": "HTTP/1.1",
                "sourceIp": "203.0.113.24",
                "userAgent": "bookings-web/4.2 (+https://bookings.example.com)"
            },
            "requestId": "JKJaXmPLvHcESHA=",
            "routeKey": "POST /bookings",
            "stage": "$default",
            "time": "01/Dec/2026:10:00:00 +0000",
            "timeEpoch": 1_796_119_200_000u64
        },
        "body": booking_json(),
        "isBase64Encoded": false
    })
    .to_string()
}

/// An event whose idempotency key is rewritten in place for every request.
struct Events {
    bytes: Vec<u8>,
    key_at: usize,
    n: u64,
}

impl Events {
    fn new(template: &str) -> Self {
        Self {
            bytes: template.as_bytes().to_vec(),
            key_at: template.find(KEY_PLACEHOLDER).expect("the key's placeholder"),
            n: 0,
        }
    }

    /// The event with a key never used before.
    fn fresh(&mut self) -> &[u8] {
        self.n += 1;
        let digits = &mut self.bytes[self.key_at + KEY_PLACEHOLDER.len() - 12..][..12];
        let mut n = self.n;
        for digit in digits.iter_mut().rev() {
            *digit = b'0' + (n % 10) as u8;
            n /= 10;
        }
        &self.bytes
    }
}

/// The booking API's handler: the body parsed and validated, two lines logged, five metrics
/// recorded, `201 Created` with the booking.
async fn create_booking(
    event: LambdaEvent<ApiGatewayV2httpRequest>,
) -> Result<ApiGatewayV2httpResponse, BoxError> {
    let body = event.payload.body.unwrap_or_default();
    let booking: Booking = serde_json::from_str(&body)?;
    if booking.seats == 0 || booking.end <= booking.start {
        return Err("invalid booking".into());
    }
    tracing::info!(booking_id = %booking.booking_id, seats = booking.seats, "booking received");
    metrics::counter!("BookingsReceived").increment(1);
    metrics::counter!("Seats").increment(u64::from(booking.seats));
    metrics::counter!("ByResource", "resource" => "room").increment(1);
    metrics::gauge!("Extras").set(booking.extras.len() as f64);
    metrics::histogram!("PriceCents")
        .record(booking.extras.iter().map(|e| e.price_cents as f64).sum::<f64>());
    tracing::info!(resource_id = %booking.resource_id, "booking created");
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let mut response = ApiGatewayV2httpResponse::default();
    response.status_code = 201;
    response.headers = headers;
    response.body = Some(Body::Text(body));
    Ok(response)
}

/// Which of Keel's layers a benchmark turns on, beyond logs and EMF.
#[derive(Clone, Copy)]
enum Layers {
    LogsAndEmf,
    Idempotency,
    Guard,
    Routing,
}

fn keel(layers: Layers, output: Output) -> Keel {
    let keel = booking::booking_api(output);
    let idempotent = || {
        keel.clone()
            .idempotency(Idempotency::memory().key_from_header("Idempotency-Key"))
    };
    match layers {
        Layers::LogsAndEmf => keel,
        Layers::Idempotency => idempotent(),
        Layers::Guard => {
            idempotent().concurrency(ConcurrencyGuard::per_pointer("/requestContext/http/path", 10))
        }
        Layers::Routing => idempotent()
            .concurrency(ConcurrencyGuard::per_pointer("/requestContext/http/path", 10))
            .error_routing(ErrorRouting::new("booking-api")),
    }
}

/// Where log lines and EMF documents go: `/dev/null`, or memory (emptied every iteration).
fn outputs() -> [(&'static str, Output, Option<CapturedLines>); 2] {
    let null = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/null")
        .expect("/dev/null");
    let (memory, captured) = Output::memory();
    [
        ("null", Output::file(null), None),
        ("memory", memory, Some(captured)),
    ]
}

fn http_api(c: &mut Criterion) {
    let template = event_template();
    let runtime = current_thread();
    let mut group = c.benchmark_group("http_api");
    let mut events = Events::new(&template);
    if let Ok(spec) = std::env::var("KEEL_BENCH_PAIRED") {
        return paired(&spec, &template, &runtime);
    }

    metrics::with_local_recorder(&metrics::NoopRecorder, || {
        let mut bare = service_fn(create_booking);
        group.bench_function("bare", |b| {
            b.iter_custom(|iterations| {
                let mut timed = Duration::ZERO;
                for _ in 0..iterations {
                    let bytes = events.fresh();
                    let start = Instant::now();
                    let payload: ApiGatewayV2httpRequest = serde_json::from_slice(bytes).expect("valid");
                    let response = runtime
                        .block_on(bare.call(LambdaEvent::new(payload, live())))
                        .expect("ok");
                    black_box(serde_json::to_vec(&response).expect("serializes"));
                    timed += start.elapsed();
                }
                timed
            })
        });
    });

    // The recorder only collects; each service writes to its own output.
    keel(Layers::LogsAndEmf, Output::memory().0)
        .metrics_layer()
        .install_recorder()
        .expect("the first recorder");
    for (output_name, output, captured) in outputs() {
        let variants = [
            ("logs_emf", Layers::LogsAndEmf, true),
            ("idempotency_first", Layers::Idempotency, true),
            ("idempotency_replay", Layers::Idempotency, false),
            ("guard", Layers::Guard, true),
            ("routing", Layers::Routing, true),
        ];
        for (name, layers, fresh) in variants {
            let subscriber = tracing_subscriber::registry().with(keel(layers, output.clone()).log_layer());
            let replayed = template.clone().into_bytes();
            tracing::subscriber::with_default(subscriber, || {
                group.bench_function(format!("{name}/{output_name}"), |b| {
                    b.iter_custom(|iterations| {
                        let mut timed = Duration::ZERO;
                        let mut done = 0;
                        while done < iterations {
                            // A new store (and service), set up outside the timed part.
                            let mut service =
                                keel(layers, output.clone()).service(service_fn(create_booking));
                            let batch = (iterations - done).min(STORE_RECORDS);
                            // The first answer, stored for the replays.
                            invoke(&runtime, &mut service, &replayed);
                            for _ in 0..batch {
                                let bytes = match fresh {
                                    true => events.fresh(),
                                    false => &replayed,
                                };
                                let start = Instant::now();
                                black_box(invoke(&runtime, &mut service, bytes));
                                timed += start.elapsed();
                                if let Some(captured) = &captured {
                                    captured.clear();
                                }
                            }
                            done += batch;
                        }
                        timed
                    })
                });
            });
        }
    }
    group.finish();
}

/// The paired measurement (`KEEL_BENCH_PAIRED=<variant>[:<requests>[:null]]`, e.g.
/// `idempotency_first:10000:null`; at most `STORE_RECORDS` requests, output in memory unless
/// `null`): each request is served by the bare handler, then by Keel,
/// in turn, and the medians of both and of their difference are printed. A machine whose speed
/// drifts (a shared virtual machine) moves both alike, so what Keel adds holds steadier than
/// between benchmarks run one after the other.
fn paired(spec: &str, template: &str, runtime: &tokio::runtime::Runtime) {
    let mut parts = spec.split(':');
    let variant = parts.next().unwrap_or_default();
    let requests: usize = parts
        .next()
        .map_or(10_000, |n| n.parse().expect("a number of requests"))
        .clamp(1, STORE_RECORDS as usize);
    let (layers, fresh) = match variant {
        "logs_emf" => (Layers::LogsAndEmf, true),
        "idempotency_first" => (Layers::Idempotency, true),
        "idempotency_replay" => (Layers::Idempotency, false),
        "guard" => (Layers::Guard, true),
        "routing" => (Layers::Routing, true),
        other => {
            panic!("no variant {other:?}: logs_emf, idempotency_first, idempotency_replay, guard or routing")
        }
    };
    let [null, memory] = outputs();
    let (_, output, captured) = match parts.next() {
        Some("null") => null,
        _ => memory,
    };
    keel(Layers::LogsAndEmf, Output::memory().0)
        .metrics_layer()
        .install_recorder()
        .expect("the first recorder");
    let subscriber = tracing_subscriber::registry().with(keel(layers, output.clone()).log_layer());
    let (mut events, mut bare_events) = (Events::new(template), Events::new(template));
    let replayed = template.as_bytes().to_vec();
    let mut bare = service_fn(create_booking);
    let mut service = keel(layers, output).service(service_fn(create_booking));
    let (mut bare_times, mut keel_times, mut added) = (Vec::new(), Vec::new(), Vec::new());
    tracing::subscriber::with_default(subscriber, || {
        invoke(runtime, &mut service, &replayed);
        for _ in 0..requests {
            let start = Instant::now();
            metrics::with_local_recorder(&metrics::NoopRecorder, || {
                tracing::subscriber::with_default(tracing::subscriber::NoSubscriber::default(), || {
                    let payload: ApiGatewayV2httpRequest =
                        serde_json::from_slice(bare_events.fresh()).expect("valid");
                    let response = runtime
                        .block_on(bare.call(LambdaEvent::new(payload, live())))
                        .expect("ok");
                    black_box(serde_json::to_vec(&response).expect("serializes"));
                })
            });
            let bare_time = start.elapsed();
            let bytes = if fresh { events.fresh() } else { &replayed };
            let start = Instant::now();
            black_box(invoke(runtime, &mut service, bytes));
            let keel_time = start.elapsed();
            if let Some(captured) = &captured {
                captured.clear();
            }
            let nanos = |time: Duration| time.as_nanos() as i64;
            bare_times.push(nanos(bare_time));
            keel_times.push(nanos(keel_time));
            added.push(nanos(keel_time) - nanos(bare_time));
        }
    });
    let median = |times: &mut Vec<i64>| {
        times.sort_unstable();
        times[times.len() / 2] as f64 / 1000.0
    };
    println!(
        "{spec}: bare {:.2} µs, Keel {:.2} µs, added {:.2} µs (medians over {} requests)",
        median(&mut bare_times),
        median(&mut keel_times),
        median(&mut added),
        added.len()
    );
}

/// One invocation through `service`, from the event's bytes to the response's.
fn invoke<S>(runtime: &tokio::runtime::Runtime, service: &mut S, bytes: &[u8]) -> Vec<u8>
where
    S: Service<LambdaEvent<RawEvent>>,
    S::Response: serde::Serialize,
    S::Error: std::fmt::Debug,
{
    let payload: RawEvent = serde_json::from_slice(bytes).expect("valid");
    let response = runtime
        .block_on(async {
            let ready = service.ready().await.expect("ready");
            ready.call(LambdaEvent::new(payload, live())).await
        })
        .expect("ok");
    serde_json::to_vec(&response).expect("serializes")
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(50).measurement_time(Duration::from_secs(4));
    targets = http_api
}
criterion_main!(benches);
