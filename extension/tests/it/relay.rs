//! The relay: envelopes acknowledged at once and published to moto's SNS topic off the response
//! path, a full queue says so, and SHUTDOWN drains what is pending (or logs it when time is up).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::{Method, StatusCode};
use keel_extension::relay;
use keel_runtime::classify::ErrorClass;
use keel_runtime::routing::{ErrorRouting, Source};
use keel_tests::Moto;

use crate::support;

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
    let (queue, _publisher, _shutdown) = relay::queue(relay::Limits::envelopes(2), routing.clone());
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

#[tokio::test]
async fn the_relay_says_when_its_byte_budget_is_spent_and_takes_more_once_published() {
    let routing = Arc::new(ErrorRouting::new("svc"));
    // Every envelope here is as long as this one.
    let one = body(&envelope(&routing, 0)).len();
    let limits = relay::Limits {
        envelopes: 100,
        bytes: 2 * one + one / 2,
    };
    let (queue, publisher, _shutdown) = relay::queue(limits, routing.clone());
    for n in 0..2 {
        let (status, reason) = queue.answer(Method::POST, "/envelopes", &body(&envelope(&routing, n)));
        assert_eq!(status, StatusCode::ACCEPTED, "{reason}");
    }
    let (status, reason) = queue.answer(Method::POST, "/envelopes", &body(&envelope(&routing, 2)));
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{reason}");
    assert_eq!(
        reason,
        format!(
            "the relay's queue is full ({} bytes); publish directly",
            limits.bytes
        )
    );
    assert_eq!(
        queue.push(&envelope(&routing, 3)),
        Err(relay::Refused::OverBudget(limits.bytes)),
        "the extension's own envelopes count too"
    );

    // Published (to the log: no sinks), the bytes are free again.
    tokio::spawn(publisher.run());
    assert!(
        queue.settled(Instant::now() + Duration::from_secs(10)).await,
        "the publisher empties the queue"
    );
    for n in 4..6 {
        let (status, reason) = queue.answer(Method::POST, "/envelopes", &body(&envelope(&routing, n)));
        assert_eq!(status, StatusCode::ACCEPTED, "{reason}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relayed_envelopes_are_published_and_shutdown_drains_the_rest() {
    let moto = Moto::start().expect("moto starts");
    let (topic, on_call) = moto.subscribed_topic("keel-errors").await.unwrap();
    let routing = Arc::new(ErrorRouting::new("svc").topic(moto.sns(), &topic));

    let (queue, publisher, mut shutdown) = relay::queue(relay::Limits::envelopes(1024), routing.clone());
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
        queue.push(&envelope(&routing, 99)),
        Err(relay::Refused::Closed),
        "closed after SHUTDOWN"
    );
}

#[tokio::test]
async fn with_no_time_left_shutdown_logs_what_is_pending() {
    let routing = Arc::new(ErrorRouting::new("svc"));
    let (queue, publisher, mut shutdown) = relay::queue(relay::Limits::envelopes(16), routing.clone());
    for n in 0..10 {
        queue.push(&envelope(&routing, n)).unwrap();
    }
    // The SHUTDOWN request is made before the publisher first runs (one thread: in order).
    let drain = tokio::spawn(async move { shutdown.drain(Instant::now()).await });
    tokio::spawn(publisher.run());
    let drained = drain.await.unwrap();
    assert_eq!((drained.published, drained.logged), (0, 10));
}

/// An SNS endpoint on 127.0.0.1 that accepts connections and never answers: a publish to it
/// hangs until its budget runs out. `connections` counts the connections it has taken.
struct SilentSns {
    endpoint: String,
    connections: tokio::sync::watch::Receiver<usize>,
}

async fn silent_sns() -> SilentSns {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let (count, connections) = tokio::sync::watch::channel(0);
    tokio::spawn(async move {
        // Held open, never read nor answered.
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
            count.send_modify(|n| *n += 1);
        }
    });
    SilentSns {
        endpoint,
        connections,
    }
}

/// An SNS client for `endpoint`, with test credentials and no retries.
fn sns_client(endpoint: &str) -> aws_sdk_sns::Client {
    use aws_sdk_sns::config::{BehaviorVersion, Credentials, Region};
    let config = aws_sdk_sns::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "keel-tests"))
        .endpoint_url(endpoint)
        .retry_config(aws_sdk_sns::config::retry::RetryConfig::disabled())
        .build();
    aws_sdk_sns::Client::from_conf(config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_under_way_at_shutdown_ends_with_the_window_and_every_envelope_is_kept_once() {
    support::logs();
    let sns = silent_sns().await;
    // Publishing alone would take 5 s (half the fallback budget for the topic) before the
    // chain logged it.
    let routing = Arc::new(
        ErrorRouting::new("svc")
            .topic(
                sns_client(&sns.endpoint),
                "arn:aws:sns:us-east-1:000000000000:keel-errors",
            )
            .fallback_budget(Duration::from_secs(10)),
    );
    let (queue, publisher, mut shutdown) = relay::queue(relay::Limits::envelopes(16), routing.clone());
    tokio::spawn(publisher.run());
    let envelopes: Vec<_> = (0..5).map(|n| envelope(&routing, n)).collect();
    for envelope in &envelopes {
        queue.push(envelope).unwrap();
    }
    // The first publish is under way when SHUTDOWN arrives.
    let mut connections = sns.connections.clone();
    tokio::time::timeout(Duration::from_secs(10), connections.wait_for(|n| *n >= 1))
        .await
        .expect("the publisher connects to SNS")
        .unwrap();

    let window = Duration::from_secs(1);
    let started = Instant::now();
    let drained = shutdown.drain(started + window).await;
    let took = started.elapsed();
    assert!(
        took <= window + Duration::from_secs(1),
        "the drain took {took:?} for a {window:?} window ({drained:?})"
    );
    assert_eq!(
        drained,
        relay::Drained {
            published: 0,
            logged: 5
        },
        "SNS never answered: every envelope was logged, the one under way included"
    );
    let ids: Vec<&str> = envelopes.iter().map(|e| e.id.as_str()).collect();
    let logged = support::wait_for_logged_envelopes(5, |e| ids.contains(&e.id.as_str())).await;
    for envelope in &envelopes {
        let copies: Vec<_> = logged.iter().filter(|l| l.id == envelope.id).collect();
        assert_eq!(
            copies,
            [envelope],
            "envelope {} logged once, whole; all logged: {logged:?}",
            envelope.id
        );
    }
}
