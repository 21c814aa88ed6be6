//! The end of an invocation (`KEEL_EXTENSION_FLUSH=end` and `runtime-done`): the extension waits
//! for the function's notice or telemetry's `platform.runtimeDone`, and for the relay to publish
//! what it was handed, within a deadline.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::{Method, StatusCode};
use keel_extension::flush::{EndOfInvocation, Ended, FlushMode, Notices, KEPT_NOTICES};
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

/// An extension's publishing side against moto: the relay's queue (with its publisher running,
/// unless held), the telemetry reader, the function's notices, and the end of invocations they
/// tell in a flush mode.
struct Published {
    moto: Moto,
    on_call: String,
    routing: Arc<ErrorRouting>,
    queue: relay::Queue,
    telemetry: Arc<Telemetry>,
    notices: Arc<Notices>,
    end: Arc<EndOfInvocation>,
    /// The publisher, when it was held back.
    publisher: Option<relay::Publisher>,
}

/// The default mode (`end`), the publisher running.
async fn published() -> Published {
    published_in(FlushMode::End, true).await
}

async fn published_in(mode: FlushMode, publishing: bool) -> Published {
    let moto = Moto::start().expect("moto starts");
    let (topic, on_call) = moto.subscribed_topic("keel-errors").await.unwrap();
    let routing = Arc::new(ErrorRouting::new("booking-api").topic(moto.sns(), &topic));
    let (queue, publisher, _shutdown) = relay::queue(relay::Limits::envelopes(16), routing.clone());
    let publisher = match publishing {
        true => {
            tokio::spawn(publisher.run());
            None
        }
        false => Some(publisher),
    };
    let telemetry = Arc::new(Telemetry::new(
        routing.clone(),
        queue.clone(),
        support::metrics_layer(),
    ));
    let notices = Arc::new(Notices::new());
    let end = EndOfInvocation::for_mode(mode, telemetry.clone(), queue.clone(), notices.clone())
        .expect("this mode waits");
    Published {
        moto,
        on_call,
        routing,
        queue,
        telemetry,
        notices,
        end: Arc::new(end),
        publisher,
    }
}

/// The function's notice, as the relay's listener reads it: `204`.
fn notice(notices: &Notices, request_id: &str, handed: u32) {
    let body = json!({"request_id": request_id, "handed": handed}).to_string();
    let (status, text) = notices.answer(Method::POST, &Bytes::from(body));
    assert_eq!(status, StatusCode::NO_CONTENT, "{text}");
}

/// The wait's outcome, within 10 s.
async fn ended(waiting: tokio::task::JoinHandle<Ended>) -> Ended {
    tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the wait ends")
        .expect("the wait does not panic")
}

/// INVOKE of `request_id` arrives: the extension waits (10 s at most).
/// Invokes `request_id`, has telemetry say it succeeded, and returns how the wait ended.
async fn ended_after_success(setup: &Published, request_id: &'static str) -> Ended {
    let waiting = invoke(&setup.end, request_id);
    setup
        .telemetry
        .read(&runtime_done_with(request_id, "success"))
        .await
        .unwrap();
    ended(waiting).await
}

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
            notice: false,
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
    assert_eq!(ended, Ended::default());
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
fn the_flush_setting_reads_end_runtime_done_or_lazy() {
    assert_eq!("end".parse::<FlushMode>().unwrap(), FlushMode::End);
    assert_eq!(" lazy ".parse::<FlushMode>().unwrap(), FlushMode::Lazy);
    assert_eq!(
        "runtime-done".parse::<FlushMode>().unwrap(),
        FlushMode::RuntimeDone
    );
    assert_eq!(FlushMode::default(), FlushMode::End);
    let error = "eager".parse::<FlushMode>().unwrap_err().to_string();
    assert_eq!(
        error,
        "KEEL_EXTENSION_FLUSH=\"eager\": expected `end`, `runtime-done` or `lazy`"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notice_that_handed_nothing_ends_the_wait_without_telemetry() {
    let setup = published_in(FlushMode::End, false).await;
    let waiting = invoke(&setup.end, "req-n0");
    notice(&setup.notices, "req-n0", 0);
    assert_eq!(
        ended(waiting).await,
        Ended {
            notice: true,
            runtime_done: false,
            settled: true
        },
        "no runtimeDone came, and the publisher is not even running"
    );
    assert!(setup.notices.is_empty(), "the wait took its notice");
}

/// Waits (10 s at most) until the wait has taken every notice.
async fn taken(notices: &Notices) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !notices.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} notices still kept",
            notices.len()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notice_that_handed_an_envelope_ends_the_wait_once_it_is_published() {
    let mut setup = published_in(FlushMode::End, false).await;
    // The function hands its envelope over (the relay answered 202), answers, and says so.
    let envelope = setup.routing.report(
        Source::Runtime,
        "req-n1",
        "Booking.PartnerDown",
        "the partner is down".into(),
        ErrorClass::Transient,
        json!({"booking_id": "bk-n1"}),
    );
    setup.queue.push(&envelope).unwrap();
    let waiting = invoke(&setup.end, "req-n1");
    notice(&setup.notices, "req-n1", 1);
    taken(&setup.notices).await;
    assert!(
        !waiting.is_finished(),
        "the notice is read, but the envelope is not published (no publisher yet)"
    );

    tokio::spawn(setup.publisher.take().unwrap().run());
    assert_eq!(
        ended(waiting).await,
        Ended {
            notice: true,
            runtime_done: false,
            settled: true
        }
    );
    let received = setup.moto.receive_available(&setup.on_call).await.unwrap();
    assert_eq!(received.len(), 1, "published before the wait ended: {received:?}");
    assert!(received[0].body().unwrap().contains(&envelope.id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notice_that_came_before_the_invoke_event_is_used() {
    let setup = published_in(FlushMode::End, false).await;
    notice(&setup.notices, "req-early", 0);
    assert_eq!(setup.notices.len(), 1);
    let ended = ended(invoke(&setup.end, "req-early")).await;
    assert!(ended.notice && ended.settled && !ended.runtime_done, "{ended:?}");
    assert!(setup.notices.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_runtime_done_mode_notices_are_ignored() {
    let setup = published_in(FlushMode::RuntimeDone, true).await;
    // Already there when the wait starts: the default mode would end at once.
    notice(&setup.notices, "req-rd", 0);
    assert_eq!(
        ended_after_success(&setup, "req-rd").await,
        Ended {
            notice: false,
            runtime_done: true,
            settled: true
        },
        "telemetry ended it"
    );
    assert_eq!(setup.notices.len(), 1, "the notice was never read");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_notice_runtime_done_still_ends_the_wait() {
    // A function that does not run Keel's runtime sends no notice.
    let setup = published().await;
    assert_eq!(
        ended_after_success(&setup, "req-nn").await,
        Ended {
            notice: false,
            runtime_done: true,
            settled: true
        }
    );
    // A late notice is harmless: kept (bounded), never waited for.
    notice(&setup.notices, "req-nn", 0);
    assert_eq!(setup.notices.len(), 1);
}

#[test]
fn the_notices_kept_are_bounded_and_malformed_ones_refused() {
    let notices = Notices::new();
    for n in 0..KEPT_NOTICES + 10 {
        notices.record(&format!("req-{n}"), 0);
    }
    assert_eq!(notices.len(), KEPT_NOTICES);
    assert_eq!(notices.take("req-0"), None, "the oldest was dropped");
    let last = format!("req-{}", KEPT_NOTICES + 9);
    assert_eq!(notices.take(&last), Some(0));
    // The same request twice: kept once, the last count.
    notices.record("req-twice", 1);
    notices.record("req-twice", 2);
    assert_eq!(notices.take("req-twice"), Some(2));
    assert_eq!(notices.take("req-twice"), None);

    let answer = |method: Method, body: &str| notices.answer(method, &Bytes::from(body.to_owned()));
    for body in [
        "",
        "{",
        "[]",
        r#"{"request_id": "r"}"#,
        r#"{"request_id": "r", "handed": -1}"#,
        r#"{"request_id": 7, "handed": 0}"#,
        r#"{"request_id": "", "handed": 0}"#,
    ] {
        let (status, text) = answer(Method::POST, body);
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body:?}: {text}");
    }
    let long = json!({"request_id": "x".repeat(10_000), "handed": 0}).to_string();
    assert_eq!(answer(Method::POST, &long).0, StatusCode::BAD_REQUEST);
    assert_eq!(answer(Method::GET, "").0, StatusCode::NOT_FOUND);
    let before = notices.len();
    assert_eq!(
        answer(Method::POST, r#"{"request_id": "req-ok", "handed": 3}"#).0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(notices.len(), before + 1);
    assert_eq!(notices.take("req-ok"), Some(3));
}
