//! The end of an invocation (`KEEL_EXTENSION_FLUSH=end`): the extension waits for telemetry to
//! say the runtime is done and for the relay to publish what it was handed, within a deadline.

use std::sync::Arc;
use std::time::{Duration, Instant};

use keel_extension::flush::{EndOfInvocation, Ended, FlushMode};
use keel_extension::relay;
use keel_extension::telemetry::Telemetry;
use keel_runtime::classify::ErrorClass;
use keel_runtime::routing::{ErrorRouting, Source};
use keel_tests::Moto;
use serde_json::json;

use crate::support;

fn runtime_done(request_id: &str) -> Vec<u8> {
    runtime_done_with(request_id, "error")
}

fn runtime_done_with(request_id: &str, status: &str) -> Vec<u8> {
    json!([{"time": "2026-11-21T10:00:01.000Z", "type": "platform.runtimeDone", "record": {
        "requestId": request_id, "status": status, "metrics": {"durationMs": 12.5, "producedBytes": 180}
    }}])
    .to_string()
    .into_bytes()
}

/// An extension's publishing side against moto: the relay's queue with its publisher running,
/// the telemetry reader, and the end of invocations they tell.
struct Published {
    moto: Moto,
    on_call: String,
    routing: Arc<ErrorRouting>,
    queue: relay::Queue,
    telemetry: Arc<Telemetry>,
    end: Arc<EndOfInvocation>,
}

async fn published() -> Published {
    let moto = Moto::start().expect("moto starts");
    let (topic, on_call) = moto.subscribed_topic("keel-errors").await.unwrap();
    let routing = Arc::new(ErrorRouting::new("booking-api").topic(moto.sns(), &topic));
    let (queue, publisher, _shutdown) = relay::queue(relay::Limits::envelopes(16), routing.clone());
    tokio::spawn(publisher.run());
    let telemetry = Arc::new(Telemetry::new(
        routing.clone(),
        queue.clone(),
        support::metrics_layer(),
    ));
    let end = Arc::new(EndOfInvocation::new(telemetry.clone(), queue.clone()));
    Published {
        moto,
        on_call,
        routing,
        queue,
        telemetry,
        end,
    }
}

/// INVOKE of `request_id` arrives: the extension waits (10 s at most).
fn invoke(end: &Arc<EndOfInvocation>, request_id: &'static str) -> tokio::task::JoinHandle<Ended> {
    let end = end.clone();
    tokio::spawn(async move {
        end.wait(request_id, Instant::now() + Duration::from_secs(10))
            .await
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_invocation_ends_once_the_runtime_is_done_and_its_envelope_is_published() {
    let setup = published().await;
    let waiting = invoke(&setup.end, "req-1");
    // The function fails and relays its envelope, then answers.
    let envelope = setup.routing.report(
        Source::Runtime,
        "req-1",
        "Booking.PartnerDown",
        "the partner is down".into(),
        ErrorClass::Transient,
        json!({"booking_id": "bk-1"}),
    );
    setup.queue.push(&envelope).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiting.is_finished(), "no runtimeDone yet: still waiting");

    // Telemetry reports the runtime done (another request's record first).
    setup.telemetry.read(&runtime_done("req-0")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !waiting.is_finished(),
        "another request's runtimeDone does not end this one"
    );
    setup.telemetry.read(&runtime_done("req-1")).await.unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the wait ends")
        .unwrap();
    assert_eq!(
        ended,
        Ended {
            runtime_done: true,
            settled: true
        }
    );

    // Published before the environment could be frozen.
    let received = setup.moto.receive_available(&setup.on_call).await.unwrap();
    assert_eq!(received.len(), 1);
    assert!(received[0].body().unwrap().contains(&envelope.id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_invocation_ends_once_the_extensions_own_envelope_is_published() {
    let setup = published().await;
    let waiting = invoke(&setup.end, "req-t");
    setup
        .telemetry
        .read(&runtime_done_with("req-t", "timeout"))
        .await
        .unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the wait ends")
        .unwrap();
    assert!(ended.runtime_done && ended.settled, "{ended:?}");
    let received = setup.moto.receive_available(&setup.on_call).await.unwrap();
    assert_eq!(
        received.len(),
        1,
        "the timeout's envelope went out before the wait ended"
    );
    assert!(received[0].body().unwrap().contains("Runtime.Timeout"));
}

#[tokio::test]
async fn without_a_runtime_done_the_wait_ends_at_the_deadline() {
    let routing = Arc::new(ErrorRouting::new("booking-api"));
    let (queue, _publisher, _shutdown) = relay::queue(relay::Limits::envelopes(16), routing.clone());
    let telemetry = Arc::new(Telemetry::new(routing, queue.clone(), support::metrics_layer()));
    let end = EndOfInvocation::new(telemetry.clone(), queue);
    let started = Instant::now();
    let ended = end.wait("req-9", started + Duration::from_millis(300)).await;
    assert_eq!(
        ended,
        Ended {
            runtime_done: false,
            settled: false
        }
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(290) && waited < Duration::from_secs(2),
        "{waited:?}"
    );

    // Done already (the records came before INVOKE was read): no wait at all.
    telemetry.read(&runtime_done("req-10")).await.unwrap();
    let started = Instant::now();
    let ended = end.wait("req-10", started + Duration::from_secs(5)).await;
    assert!(ended.runtime_done && ended.settled);
    assert!(started.elapsed() < Duration::from_millis(200));
}

#[test]
fn the_flush_setting_reads_end_or_lazy() {
    assert_eq!("end".parse::<FlushMode>().unwrap(), FlushMode::End);
    assert_eq!(" lazy ".parse::<FlushMode>().unwrap(), FlushMode::Lazy);
    assert_eq!(FlushMode::default(), FlushMode::End);
    let error = "eager".parse::<FlushMode>().unwrap_err().to_string();
    assert_eq!(error, "KEEL_EXTENSION_FLUSH=\"eager\": expected `end` or `lazy`");
}
