//! What routing one error adds to an invocation's response: handed to the extension's relay
//! versus published to SNS directly, side by side in one run. Both against real local
//! stand-ins: a moto server (started here) for SNS, and the relay served in-process by the
//! extension's own listener and queue (its publisher publishing to the same topic).
//!
//! Run with `cargo bench -p keel-extension` (needs `scripts/install-tools.sh` for moto).

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use keel_extension::relay;
use keel_runtime::classify::ErrorClass;
use keel_runtime::routing::{ErrorRouting, Source};
use keel_tests::Moto;
use tokio::net::TcpListener;

fn route_one_error(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let moto = Moto::start().expect("moto starts");
    let topic = runtime
        .block_on(moto.create_topic("bench-errors"))
        .expect("topic");
    let direct = ErrorRouting::new("bench").topic(moto.sns(), &topic);
    let relay_addr = runtime.block_on(async {
        let publishing = Arc::new(ErrorRouting::new("bench").topic(moto.sns(), &topic));
        // Unbounded in bytes: the benchmark measures the relay's answer, never a refusal.
        let limits = relay::Limits {
            envelopes: 100_000,
            bytes: usize::MAX,
        };
        let (queue, publisher, _shutdown) = relay::queue(limits, publishing);
        tokio::spawn(publisher.run());
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
        let addr = listener.local_addr().expect("bound");
        tokio::spawn(keel_extension::http::serve(
            listener,
            relay::LISTENER,
            move |method, path, body| {
                let answer = queue.answer(method, &path, &body);
                async move { answer }
            },
        ));
        addr
    });
    let relayed = ErrorRouting::new("bench").relay(relay_addr);
    let envelope = direct.report(
        Source::Runtime,
        "bench-request",
        "Booking.Failed",
        "the partner refused the booking".into(),
        ErrorClass::Permanent,
        serde_json::json!({"booking_id": "bk-1", "seats": 2}),
    );
    let mut group = c.benchmark_group("route_one_error");
    group.sample_size(30);
    group.bench_function("through_the_relay", |b| {
        b.iter(|| runtime.block_on(relayed.route(&envelope, 0)))
    });
    group.bench_function("published_directly", |b| {
        b.iter(|| runtime.block_on(direct.route(&envelope, 0)))
    });
    group.finish();
}

criterion_group!(benches, route_one_error);
criterion_main!(benches);
