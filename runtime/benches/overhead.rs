//! Keel's overhead per invocation: a bare handler versus the same handler behind Keel's logging
//! and metrics layers, measured in one run.
//!
//! Both start from the raw event bytes, as the Lambda runtime hands them over: the bare handler
//! receives them deserialized into its payload type; behind Keel the runtime checks them into a
//! `RawEvent` and Keel deserializes that into the payload type.
//! The handler parses a ~1 KB booking document, logs two lines and records five metrics. The bare
//! handler runs with no subscriber and no recorder (its log and metric calls cost next to
//! nothing); behind Keel every line and EMF document is rendered and written to an in-memory
//! output, which each iteration empties.

use std::hint::black_box;

use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion};
use keel_runtime::output::Output;
use keel_runtime::{service_fn, BoxError, LambdaEvent, RawEvent};
use tower::{Service, ServiceExt};
use tracing_subscriber::layer::SubscriberExt;

mod booking;

use booking::{current_thread, live, Booking, STORE_RECORDS};

fn booking_json() -> Vec<u8> {
    booking::booking_json().into_bytes()
}

async fn handler(event: LambdaEvent<Booking>) -> Result<u32, BoxError> {
    let booking = event.payload;
    tracing::info!(booking_id = %booking.booking_id, seats = booking.seats, "booking received");
    metrics::counter!("BookingsReceived").increment(1);
    metrics::counter!("Seats").increment(u64::from(booking.seats));
    metrics::counter!("ByResource", "resource" => "room").increment(1);
    metrics::gauge!("Extras").set(booking.extras.len() as f64);
    metrics::histogram!("PriceCents")
        .record(booking.extras.iter().map(|e| e.price_cents as f64).sum::<f64>());
    tracing::info!(resource_id = %booking.resource_id, "booking priced");
    Ok(booking.seats)
}

/// The bare handler on the booking document, deserialized straight from its bytes.
fn bench_bare(group: &mut BenchmarkGroup<'_, WallTime>, runtime: &tokio::runtime::Runtime, bytes: &[u8]) {
    let mut bare = service_fn(handler);
    group.bench_function("bare_handler", |b| {
        b.iter(|| {
            let payload: Booking = serde_json::from_slice(black_box(bytes)).expect("valid");
            black_box(
                runtime
                    .block_on(bare.call(LambdaEvent::new(payload, live())))
                    .expect("ok"),
            )
        })
    });
}

fn overhead(c: &mut Criterion) {
    let bytes = booking_json();
    let runtime = current_thread();
    let mut group = c.benchmark_group("invocation");
    metrics::with_local_recorder(&metrics::NoopRecorder, || {
        bench_bare(&mut group, &runtime, &bytes)
    });

    let (output, captured) = Output::memory();
    let keel = booking::booking_api(output);
    keel.metrics_layer().install_recorder().expect("first recorder");
    let subscriber = tracing_subscriber::registry().with(keel.log_layer());
    let mut wrapped = keel.service(service_fn(handler));
    tracing::subscriber::with_default(subscriber, || {
        group.bench_function("keel_logging_and_metrics", |b| {
            b.iter(|| {
                let payload: RawEvent = serde_json::from_slice(black_box(&bytes)).expect("valid");
                let result = runtime.block_on(async {
                    let ready = wrapped.ready().await.expect("ready");
                    ready.call(LambdaEvent::new(payload, live())).await
                });
                captured.clear();
                black_box(result.expect("ok"))
            })
        });
    });
    group.finish();
}

/// A bare handler versus the same handler behind `IdempotencyLayer` with a `MemoryStore`: a
/// first request (a new key every iteration: hash, acquire, run, store the response) and a
/// duplicate answered from the local cache (in front of a store taken as remote). Each pairs
/// with a bare run that prepares its payload the same way (a fresh key written into the 1 KB
/// document, or the document as it is). The store holds up to [`STORE_RECORDS`] records,
/// whatever the speed of the code measured: a new store replaces it, untimed, every that many
/// first requests. No subscriber, no recorder: only idempotency is measured.
fn idempotency(c: &mut Criterion) {
    use keel_runtime::handler::TypedHandler;
    use keel_runtime::idempotency::{Idempotency, IdempotencyLayer, MemoryStore};
    use std::time::{Duration, Instant};
    use tower::Layer;

    let bytes = booking_json();
    let text = String::from_utf8(bytes.clone()).expect("utf-8");
    let key_at = text.find("bk-").expect("a booking id");
    let fresh = |n: u64| {
        let mut text = text.clone();
        text.replace_range(key_at..key_at + 19, &format!("bk-{n:016}"));
        text
    };
    let runtime = current_thread();
    let mut group = c.benchmark_group("idempotency");

    metrics::with_local_recorder(&metrics::NoopRecorder, || {
        let mut bare = service_fn(handler);
        let mut n = 0u64;
        group.bench_function("bare_handler_fresh_payload", |b| {
            b.iter(|| {
                n += 1;
                let payload: Booking = serde_json::from_str(&fresh(n)).expect("valid");
                black_box(
                    runtime
                        .block_on(bare.call(LambdaEvent::new(payload, live())))
                        .expect("ok"),
                )
            })
        });
        // The default key (the whole request, which is also what replays are checked against),
        // then a key taken from a field, with the whole request validated separately.
        for (name, key_from_field) in [("first_request", false), ("first_request_key_from_field", true)] {
            let configure = || match key_from_field {
                false => Idempotency::memory(),
                true => Idempotency::memory().key_from_pointer("/booking_id"),
            };
            group.bench_function(name, |b| {
                b.iter_custom(|iterations| {
                    let mut timed = Duration::ZERO;
                    let mut done = 0;
                    while done < iterations {
                        // A new store, set up (and dropped) outside the timed part.
                        let mut guarded =
                            IdempotencyLayer::new(configure()).layer(TypedHandler::new(service_fn(handler)));
                        let batch = (iterations - done).min(STORE_RECORDS);
                        let start = Instant::now();
                        for _ in 0..batch {
                            n += 1;
                            let payload: RawEvent = serde_json::from_str(&fresh(n)).expect("valid");
                            runtime.block_on(async {
                                let ready = guarded.ready().await.expect("ready");
                                black_box(ready.call(LambdaEvent::new(payload, live())).await.expect("ok"))
                            });
                        }
                        timed += start.elapsed();
                        done += batch;
                    }
                    timed
                })
            });
        }

        bench_bare(&mut group, &runtime, &bytes);
        // The local cache sits in front of a remote store (the in-memory store needs none): here
        // a `MemoryStore` taken as any store, so that replays come from the cache as they do in
        // front of DynamoDB.
        let idempotency = Idempotency::with_store(MemoryStore::new()).local_cache(1024);
        let mut guarded = IdempotencyLayer::new(idempotency).layer(TypedHandler::new(service_fn(handler)));
        group.bench_function("cached_replay", |b| {
            b.iter(|| {
                let payload: RawEvent = serde_json::from_slice(black_box(&bytes)).expect("valid");
                runtime.block_on(async {
                    let ready = guarded.ready().await.expect("ready");
                    black_box(ready.call(LambdaEvent::new(payload, live())).await.expect("ok"))
                })
            })
        });
    });
    group.finish();
}

/// A bare handler versus the same handler behind `ErrorRoutingLayer` and `ConcurrencyGuardLayer`
/// (slots in memory, keyed by the booking's `resource_id`), when the handler succeeds: what
/// every invocation pays for routing and the guard. No subscriber, no recorder.
fn routing_and_guard(c: &mut Criterion) {
    use keel_runtime::concurrency::{ConcurrencyGuard, ConcurrencyGuardLayer};
    use keel_runtime::handler::TypedHandler;
    use keel_runtime::routing::{ErrorRouting, ErrorRoutingLayer};
    use tower::Layer;

    let bytes = booking_json();
    let runtime = current_thread();
    let mut group = c.benchmark_group("routing_and_guard");
    metrics::with_local_recorder(&metrics::NoopRecorder, || {
        bench_bare(&mut group, &runtime, &bytes);
        let guard = ConcurrencyGuard::per_pointer("/resource_id", 10);
        let mut wrapped = ErrorRoutingLayer::new(ErrorRouting::new("booking-api"))
            .layer(ConcurrencyGuardLayer::new(guard).layer(TypedHandler::new(service_fn(handler))));
        group.bench_function("routed_and_guarded", |b| {
            b.iter(|| {
                let payload: RawEvent = serde_json::from_slice(black_box(&bytes)).expect("valid");
                runtime.block_on(async {
                    let ready = wrapped.ready().await.expect("ready");
                    black_box(ready.call(LambdaEvent::new(payload, live())).await.expect("ok"))
                })
            })
        });
    });
    group.finish();
}

criterion_group!(benches, overhead, idempotency, routing_and_guard);
criterion_main!(benches);
