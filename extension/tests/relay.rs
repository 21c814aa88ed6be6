//! The relay: envelopes acknowledged at once and published to moto's SNS topic off the response
//! path, a full queue says so, and SHUTDOWN drains what is pending (or logs it when time is up).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::{Method, StatusCode};
use keel_extension::relay;
use keel_runtime::routing::{ErrorClass, ErrorRouting, Source};
use keel_tests::Moto;

fn envelope(routing: &ErrorRouting, n: usize) -> keel_runtime::routing::Envelope {
    routing.report(
        Source::Runtime,
        &format!("req-{n}"),
        "Booking.Failed",
        format!("failure {n}"),
        ErrorClass::Permanent,
        serde_json::json!({"n": n}),
    )
}

fn body(envelope: &keel_runtime::routing::Envelope) -> Bytes {
    Bytes::from(serde_json::to_vec(envelope).unwrap())
}

#[tokio::test]
async fn the_relay_acknowledges_at_once_and_says_when_it_is_full() {
    let routing = Arc::new(ErrorRouting::new("svc"));
    // No publisher running: the queue fills.
    let (queue, _publisher, _shutdown) = relay::queue(2, routing.clone());
    for n in 0..2 {
        let (status, _) = queue.answer(Method::POST, "/envelopes", &body(&envelope(&routing, n)));
        assert_eq!(status, StatusCode::ACCEPTED);
    }
    let (status, reason) = queue.answer(Method::POST, "/envelopes", &body(&envelope(&routing, 3)));
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(reason.contains("full"), "{reason}");
    let (status, _) = queue.answer(
        Method::POST,
        "/envelopes",
        &Bytes::from_static(b"{\"not\":\"an envelope\"}"),
    );
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = queue.answer(Method::GET, "/envelopes", &Bytes::new());
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relayed_envelopes_are_published_and_shutdown_drains_the_rest() {
    let moto = Moto::start().expect("moto starts");
    let (topic, on_call) = moto.subscribed_topic("keel-errors").await.unwrap();
    let routing = Arc::new(ErrorRouting::new("svc").topic(moto.sns(), &topic));

    let (queue, publisher, mut shutdown) = relay::queue(1024, routing.clone());
    tokio::spawn(publisher.run());
    for n in 0..50 {
        assert_eq!(
            queue
                .answer(Method::POST, "/envelopes", &body(&envelope(&routing, n)))
                .0,
            StatusCode::ACCEPTED
        );
    }
    let started = Instant::now();
    let drained = shutdown.drain(Instant::now() + Duration::from_secs(2)).await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "drained within the deadline"
    );
    assert_eq!(drained.logged, 0);
    let received = moto
        .wait_for_messages(&on_call, 50, Duration::from_secs(120))
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(received.len(), 50, "every pending envelope reached the topic");
    assert_eq!(
        queue.push(envelope(&routing, 99)),
        Err(relay::Refused::Closed),
        "closed after SHUTDOWN"
    );
}

#[tokio::test]
async fn with_no_time_left_shutdown_logs_what_is_pending() {
    let routing = Arc::new(ErrorRouting::new("svc"));
    let (queue, publisher, mut shutdown) = relay::queue(16, routing.clone());
    for n in 0..10 {
        queue.push(envelope(&routing, n)).unwrap();
    }
    // The SHUTDOWN request is made before the publisher first runs (one thread: in order).
    let drain = tokio::spawn(async move { shutdown.drain(Instant::now()).await });
    tokio::spawn(publisher.run());
    let drained = drain.await.unwrap();
    assert_eq!((drained.published, drained.logged), (0, 10));
}
