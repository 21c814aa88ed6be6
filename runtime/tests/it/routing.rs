//! Error routing against a moto server through the real SNS and SQS clients: the topic's
//! subscribers get the envelope with its attributes, a missing topic sends it to the DLQ, both
//! failing write it whole to the log, the extension's relay takes it when it acknowledges, and a
//! fault run of 1,000 envelopes over failing sinks loses and duplicates none.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::{emf, event, invoke, keel, logs};
use keel_runtime::classify::ErrorClass;
use keel_runtime::concurrency::ConcurrencyError;
use keel_runtime::idempotency::IdempotencyError;
use keel_runtime::output::CapturedLines;
use keel_runtime::routing::{Envelope, ErrorRouting, Sink, Source};
use keel_runtime::{service_fn, BoxError, Context, InvocationError, LambdaEvent};
use keel_tests::{free_port, Moto};
use serde_json::{json, Value};
use tracing_subscriber::layer::SubscriberExt;

/// A booking handler that fails for rooms that do not exist.
async fn book(event: LambdaEvent<Value>) -> Result<Value, BoxError> {
    match event.payload["room"].as_str() {
        Some("missing") => {
            Err(InvocationError::new("Booking.UnknownRoom", "room `missing` does not exist").into())
        }
        _ => Ok(json!({"status": "booked"})),
    }
}

fn failing_event(request_id: &str) -> LambdaEvent<keel_runtime::RawEvent> {
    event(
        request_id,
        json!({"room": "missing", "guest": {"email": "guest@example.com"}}),
    )
}

/// Clients that reach nothing (a closed port) and do not retry.
fn unreachable(moto: &Moto) -> (aws_sdk_sns::Client, aws_sdk_sqs::Client) {
    let endpoint = format!("http://127.0.0.1:{}", free_port());
    let retry = aws_sdk_sns::config::retry::RetryConfig::disabled();
    let sns = aws_sdk_sns::config::Builder::from(&moto.sdk_config())
        .endpoint_url(&endpoint)
        .retry_config(retry.clone())
        .build();
    let sqs = aws_sdk_sqs::config::Builder::from(&moto.sdk_config())
        .endpoint_url(&endpoint)
        .retry_config(retry)
        .build();
    (
        aws_sdk_sns::Client::from_conf(sns),
        aws_sdk_sqs::Client::from_conf(sqs),
    )
}

struct Sinks {
    topic: String,
    subscribed: String,
    dlq: String,
}

fn sinks(moto: &Moto, runtime: &tokio::runtime::Runtime) -> Sinks {
    runtime.block_on(async {
        let (topic, subscribed) = moto.subscribed_topic("keel-errors").await.unwrap();
        let dlq = moto.create_queue("keel-errors-dlq").await.unwrap();
        Sinks {
            topic,
            subscribed,
            dlq,
        }
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The `count` messages expected in `queue`, waited for (however long delivery takes, within a
/// generous bound); fails saying how many arrived.
fn receive(
    moto: &Moto,
    runtime: &tokio::runtime::Runtime,
    queue: &str,
    count: usize,
) -> Vec<aws_sdk_sqs::types::Message> {
    let received = runtime
        .block_on(moto.wait_for_messages(queue, count, Duration::from_secs(300)))
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(received.len(), count, "no more than {count} messages in {queue}");
    received
}

/// Whether `queue` holds no message now.
fn is_empty(moto: &Moto, runtime: &tokio::runtime::Runtime, queue: &str) -> bool {
    runtime
        .block_on(moto.receive_available(queue))
        .unwrap()
        .is_empty()
}

fn envelope_of(message: &aws_sdk_sqs::types::Message) -> Envelope {
    serde_json::from_str(message.body().unwrap()).unwrap()
}

fn attribute<'a>(message: &'a aws_sdk_sqs::types::Message, name: &str) -> Option<&'a str> {
    message.message_attributes()?.get(name)?.string_value()
}

fn routed_lines(lines: &CapturedLines) -> Vec<Envelope> {
    logs(lines)
        .iter()
        .filter(|l| l["message"] == "keel.routed_error")
        .map(|l| serde_json::from_value(l["envelope"].clone()).unwrap())
        .collect()
}

fn routed_metric(lines: &CapturedLines) -> Vec<String> {
    emf(lines)
        .iter()
        .filter(|doc| doc.get("RoutedError").is_some())
        .map(|doc| doc["sink"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn an_error_reaches_the_topic_subscribers_with_its_attributes_and_is_returned_unchanged() {
    let moto = Moto::start().expect("moto starts");
    let rt = runtime();
    let sinks = sinks(&moto, &rt);
    let (stack, lines) = keel();
    let routing = ErrorRouting::new("svc")
        .topic(moto.sns(), &sinks.topic)
        .dead_letter_queue(moto.sqs(), &sinks.dlq);
    let stack = stack.error_routing(routing);

    let ok = event("r-ok", json!({"room": "a1"}));
    let results = invoke(&stack, service_fn(book), vec![ok, failing_event("r-fail")]);
    assert!(results[0].is_ok(), "a success is not routed");
    let error = results[1].as_ref().unwrap_err();
    assert_eq!(error.error_type(), "Booking.UnknownRoom");
    assert_eq!(error.to_string(), "room `missing` does not exist");

    let received = receive(&moto, &rt, &sinks.subscribed, 1);
    let envelope = envelope_of(&received[0]);
    assert_eq!(envelope.service, "svc");
    assert_eq!(envelope.request_id, "r-fail");
    assert_eq!(envelope.xray_trace_id.as_deref(), Some("Root=1-r-fail"));
    assert_eq!(envelope.error_type, "Booking.UnknownRoom");
    assert_eq!(envelope.error_message, "room `missing` does not exist");
    assert_eq!(envelope.error_class, ErrorClass::Permanent);
    assert_eq!(envelope.attempt, 1);
    assert_eq!(envelope.source, Source::Runtime);
    assert_eq!(
        envelope.event,
        json!({"room": "missing", "guest": {"email": "***"}}),
        "redacted as in the logs"
    );
    assert_eq!(attribute(&received[0], "error_class"), Some("permanent"));
    assert_eq!(attribute(&received[0], "service"), Some("svc"));
    assert!(is_empty(&moto, &rt, &sinks.dlq));
    assert_eq!(routed_metric(&lines), ["sns"]);
    assert!(routed_lines(&lines).is_empty());
}

#[test]
fn a_missing_topic_sends_the_envelope_to_the_dlq_and_both_failing_to_the_log() {
    let moto = Moto::start().expect("moto starts");
    let rt = runtime();
    let sinks = sinks(&moto, &rt);
    let missing_topic = format!("{}-gone", sinks.topic);

    let (stack, lines) = keel();
    let routing = ErrorRouting::new("svc")
        .topic(moto.sns(), &missing_topic)
        .dead_letter_queue(moto.sqs(), &sinks.dlq);
    invoke(
        &stack.error_routing(routing),
        service_fn(book),
        vec![failing_event("r-dlq")],
    );
    let in_dlq = receive(&moto, &rt, &sinks.dlq, 1);
    assert_eq!(envelope_of(&in_dlq[0]).request_id, "r-dlq");
    assert_eq!(attribute(&in_dlq[0], "error_class"), Some("permanent"));
    assert_eq!(routed_metric(&lines), ["dlq"]);
    let warned = logs(&lines);
    assert!(
        warned.iter().any(|l| l["level"] == "WARN" && l["sink"] == "sns"),
        "{warned:?}"
    );

    let (stack, lines) = keel();
    let missing_queue = format!("{}-gone", sinks.dlq);
    let routing = ErrorRouting::new("svc")
        .topic(moto.sns(), &missing_topic)
        .dead_letter_queue(moto.sqs(), &missing_queue);
    invoke(
        &stack.error_routing(routing),
        service_fn(book),
        vec![failing_event("r-log")],
    );
    let logged = routed_lines(&lines);
    assert_eq!(logged.len(), 1, "the whole envelope is in the log");
    assert_eq!(logged[0].request_id, "r-log");
    assert_eq!(logged[0].event["guest"]["email"], "***");
    assert_eq!(routed_metric(&lines), ["log"]);
    assert!(is_empty(&moto, &rt, &sinks.subscribed));
    assert!(is_empty(&moto, &rt, &sinks.dlq));
}

/// A stand-in for the extension's relay: answers `status` to every request and keeps the
/// bodies it was sent.
fn relay(status: &'static str) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let kept = bodies.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(16) {
            let Ok(mut stream) = stream else { continue };
            stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut request = Vec::new();
            let mut buffer = [0u8; 8192];
            // Headers, then as many body bytes as Content-Length says.
            while let Ok(read) = stream.read(&mut buffer) {
                if read == 0 {
                    break;
                }
                request.extend_from_slice(&buffer[..read]);
                let text = String::from_utf8_lossy(&request).to_string();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let length: usize = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse().unwrap())
                        })
                        .unwrap_or(0);
                    if body.len() >= length {
                        kept.lock().unwrap().push(body.to_owned());
                        break;
                    }
                }
            }
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            );
        }
    });
    (addr, bodies)
}

#[test]
fn the_relay_takes_the_envelope_when_it_acknowledges_and_otherwise_it_is_published() {
    let moto = Moto::start().expect("moto starts");
    let rt = runtime();
    let sinks = sinks(&moto, &rt);
    let routing = || ErrorRouting::new("svc").topic(moto.sns(), &sinks.topic);

    let (accepting, taken) = relay("202 Accepted");
    let (stack, lines) = keel();
    invoke(
        &stack.error_routing(routing().relay(accepting)),
        service_fn(book),
        vec![failing_event("r-relay")],
    );
    let taken = taken.lock().unwrap().clone();
    assert_eq!(taken.len(), 1);
    let envelope: Envelope = serde_json::from_str(&taken[0]).unwrap();
    assert_eq!(envelope.request_id, "r-relay");
    assert!(
        routed_metric(&lines).is_empty(),
        "the extension counts it where it lands, once"
    );
    assert!(
        is_empty(&moto, &rt, &sinks.subscribed),
        "the extension publishes, not the function"
    );

    let (full, _) = relay("503 Service Unavailable");
    let nobody: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    for (addr, request_id) in [(full, "r-full"), (nobody, "r-nobody")] {
        let (stack, lines) = keel();
        invoke(
            &stack.error_routing(routing().relay(addr)),
            service_fn(book),
            vec![failing_event(request_id)],
        );
        assert_eq!(routed_metric(&lines), ["sns"], "{request_id}: published directly");
        let received = receive(&moto, &rt, &sinks.subscribed, 1);
        assert_eq!(envelope_of(&received[0]).request_id, request_id);
    }
}

#[test]
fn a_thousand_errors_over_failing_sinks_each_land_exactly_once() {
    let moto = Moto::start().expect("moto starts");
    let rt = runtime();
    let sinks = sinks(&moto, &rt);
    let (bad_sns, bad_sqs) = unreachable(&moto);
    let (stack, lines) = keel();
    let subscriber = tracing_subscriber::registry().with(stack.log_layer());
    let mut rng = fastrand::Rng::with_seed(1_000);

    let mut landed: HashMap<String, Sink> = HashMap::new();
    let mut context = Context::default();
    context.request_id = "fault-run".into();
    tracing::subscriber::with_default(subscriber, || {
        rt.block_on(async {
            for n in 0..1_000 {
                // Each sink fails at random: a third of the topic's publishes, half of the queue's.
                let sns = if rng.u8(..3) == 0 {
                    bad_sns.clone()
                } else {
                    moto.sns()
                };
                let sqs = if rng.bool() { bad_sqs.clone() } else { moto.sqs() };
                let routing = ErrorRouting::new("svc")
                    .topic(sns, &sinks.topic)
                    .dead_letter_queue(sqs, &sinks.dlq);
                let error = InvocationError::new("Booking.Failed", format!("failure {n}"));
                let envelope = routing.envelope(&error, r#"{"n":1}"#, &context, 1);
                let sink = routing.publish(&envelope, 0).await;
                assert!(
                    landed.insert(envelope.id, sink).is_none(),
                    "envelope ids are unique"
                );
            }
        })
    });

    let count = |sink| landed.values().filter(|s| **s == sink).count();
    let mut found: HashMap<String, Vec<Sink>> = HashMap::new();
    for (sink, ids) in [
        (
            Sink::Sns,
            receive(&moto, &rt, &sinks.subscribed, count(Sink::Sns))
                .iter()
                .map(|m| envelope_of(m).id)
                .collect::<Vec<_>>(),
        ),
        (
            Sink::Dlq,
            receive(&moto, &rt, &sinks.dlq, count(Sink::Dlq))
                .iter()
                .map(|m| envelope_of(m).id)
                .collect(),
        ),
        (
            Sink::Log,
            routed_lines(&lines).into_iter().map(|e| e.id).collect(),
        ),
    ] {
        for id in ids {
            found.entry(id).or_default().push(sink);
        }
    }
    assert_eq!(found.len(), 1_000, "every envelope is found");
    for (id, sinks) in &found {
        assert_eq!(sinks.len(), 1, "{id} found in {sinks:?}");
        assert_eq!(Some(&sinks[0]), landed.get(id), "{id} is where routing said");
    }
    let (sns, dlq, log) = (count(Sink::Sns), count(Sink::Dlq), count(Sink::Log));
    assert!(
        sns > 500 && dlq > 100 && log > 50,
        "every sink was exercised: {sns} {dlq} {log}"
    );
}

#[test]
fn back_pressure_is_not_routed() {
    let retry_after = Duration::from_secs(1);
    let full = ConcurrencyError::Rejected {
        key: "room-1".into(),
        limit: 1,
        retry_after,
    };
    let in_progress = IdempotencyError::InProgress { retry_after };
    for refusal in [InvocationError::from(full), InvocationError::from(in_progress)] {
        let error_type = refusal.error_type().to_owned();
        let refusal = Arc::new(Mutex::new(Some(refusal)));
        let (stack, lines) = keel();
        let refuse = service_fn(move |_: LambdaEvent<Value>| {
            let refusal = refusal.lock().unwrap().take().unwrap();
            async move { Err::<Value, BoxError>(refusal.into()) }
        });
        let results = invoke(
            &stack.error_routing(ErrorRouting::new("svc")),
            refuse,
            vec![event("r", json!({}))],
        );
        assert_eq!(results[0].as_ref().unwrap_err().error_type(), error_type);
        assert!(
            routed_lines(&lines).is_empty(),
            "{error_type} is not a failure to route"
        );
    }
    let (stack, lines) = keel();
    invoke(
        &stack.error_routing(ErrorRouting::new("svc")),
        service_fn(book),
        vec![failing_event("r")],
    );
    assert_eq!(
        routed_lines(&lines).len(),
        1,
        "a real failure with no sink configured is logged"
    );
}

#[test]
fn a_panicking_handler_is_routed_as_a_crash_with_its_message_and_place() {
    keel_runtime::handler::install_panic_hook();
    let (stack, lines) = keel();
    let panicking = service_fn(|_: LambdaEvent<Value>| async {
        let rooms: Vec<&str> = Vec::new();
        Ok::<_, BoxError>(json!({"room": rooms[3]}))
    });
    let results = invoke(
        &stack.error_routing(ErrorRouting::new("svc")),
        panicking,
        vec![failing_event("r-panic")],
    );
    let error = results[0].as_ref().unwrap_err();
    assert_eq!(error.error_type(), "Keel.HandlerPanicked");
    let routed = routed_lines(&lines);
    assert_eq!(routed.len(), 1, "routed once");
    let envelope = &routed[0];
    assert_eq!(envelope.error_class, ErrorClass::Crash);
    assert_eq!(envelope.request_id, "r-panic");
    assert!(
        envelope.error_message.contains("index out of bounds")
            && envelope.error_message.contains("runtime/tests/it/routing.rs:"),
        "the panic's message and location: {}",
        envelope.error_message
    );
    let failed: Vec<Value> = logs(&lines)
        .into_iter()
        .filter(|l| l["level"] == "ERROR" && l["message"] == "invocation failed")
        .collect();
    assert_eq!(failed.len(), 1, "one line with the invocation's context");
    assert_eq!(failed[0]["function_request_id"], "r-panic");
}
