//! SQS batch processing: exactly the failed records reported, FIFO group order kept, replayed
//! records not processed twice, a wholly failed batch an error, poison records routed.

use std::sync::{Arc, Mutex};

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use keel_runtime::batch::{BatchError, BatchProcessor, RecordKey};
use keel_runtime::idempotency::Idempotency;
use keel_runtime::routing::{Envelope, ErrorRouting};
use keel_runtime::{BoxError, Context};
use serde_json::json;
use tracing_subscriber::layer::SubscriberExt;

fn record(id: &str, body: &str, group: Option<&str>, receives: u32) -> SqsMessage {
    let mut record = SqsMessage::default();
    record.message_id = Some(id.to_owned());
    record.body = Some(body.to_owned());
    let queue = if group.is_some() {
        "bookings.fifo"
    } else {
        "bookings"
    };
    record.event_source_arn = Some(format!("arn:aws:sqs:eu-west-1:123456789012:{queue}"));
    record
        .attributes
        .insert("ApproximateReceiveCount".into(), receives.to_string());
    if let Some(group) = group {
        record
            .attributes
            .insert("MessageGroupId".into(), group.to_owned());
    }
    record
}

fn batch(records: Vec<SqsMessage>) -> SqsEvent {
    let mut event = SqsEvent::default();
    event.records = records;
    event
}

fn context() -> Context {
    let mut context = Context::default();
    context.request_id = "batch-1".into();
    context
}

fn failed_ids(response: &SqsBatchResponse) -> Vec<&str> {
    response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_str())
        .collect()
}

/// A record handler that fails for bodies containing "fail" and remembers what it processed.
fn handler(seen: &Arc<Mutex<Vec<String>>>) -> impl AsyncFnMut(&SqsMessage) -> Result<(), BoxError> {
    let seen = seen.clone();
    async move |record: &SqsMessage| {
        let id = record.message_id.clone().unwrap_or_default();
        seen.lock().unwrap().push(id.clone());
        match record.body.as_deref().unwrap_or_default().contains("fail") {
            true => Err(format!("record {id} refused").into()),
            false => Ok(()),
        }
    }
}

#[tokio::test]
async fn a_batch_of_ten_reports_exactly_its_failed_records() {
    let records = (1..=10)
        .map(|n| {
            let body = if n == 3 || n == 7 {
                json!({"n": n, "fail": true})
            } else {
                json!({"n": n})
            };
            record(&format!("m{n}"), &body.to_string(), None, 1)
        })
        .collect();
    let seen = Arc::default();
    let response = BatchProcessor::new()
        .process(&batch(records), &context(), handler(&seen))
        .await
        .unwrap();
    assert_eq!(failed_ids(&response), ["m3", "m7"]);
    assert_eq!(seen.lock().unwrap().len(), 10, "the others were processed");
}

#[tokio::test]
async fn in_a_fifo_queue_a_failure_holds_back_the_rest_of_its_group() {
    let records = vec![
        record("a1", "{}", Some("A"), 1),
        record("b1", "{}", Some("B"), 1),
        record("a2", r#"{"fail": 1}"#, Some("A"), 1),
        record("b2", "{}", Some("B"), 1),
        record("a3", "{}", Some("A"), 1),
    ];
    let seen = Arc::default();
    let response = BatchProcessor::new()
        .process(&batch(records), &context(), handler(&seen))
        .await
        .unwrap();
    assert_eq!(failed_ids(&response), ["a2", "a3"]);
    assert_eq!(
        *seen.lock().unwrap(),
        ["a1", "b1", "a2", "b2"],
        "a3 was not processed"
    );
}

#[tokio::test]
async fn replayed_records_are_not_processed_twice() {
    let processor = BatchProcessor::new().idempotent(Idempotency::memory());
    let seen = Arc::default();
    let first = batch(vec![
        record("m1", "{}", None, 1),
        record("m2", r#"{"fail": 1}"#, None, 1),
    ]);
    let response = processor
        .process(&first, &context(), handler(&seen))
        .await
        .unwrap();
    assert_eq!(failed_ids(&response), ["m2"]);
    // SQS delivers m1 again (a duplicate) and retries m2 (its failure released its key).
    let again = batch(vec![
        record("m1", "{}", None, 2),
        record("m2", "{}", None, 2),
        record("m1", "{}", None, 2),
    ]);
    let response = processor
        .process(&again, &context(), handler(&seen))
        .await
        .unwrap();
    assert!(failed_ids(&response).is_empty());
    assert_eq!(
        *seen.lock().unwrap(),
        ["m1", "m2", "m2"],
        "m1 ran once, m2 once more after its failure"
    );

    // Keyed by a field of the body: the same booking sent as two messages runs once.
    let by_booking = BatchProcessor::new().idempotent_by(
        Idempotency::memory(),
        RecordKey::BodyPointer("/booking_id".into()),
    );
    let seen = Arc::default();
    let twice = batch(vec![
        record("x1", r#"{"booking_id": "bk-1"}"#, None, 1),
        record("x2", r#"{"booking_id": "bk-1"}"#, None, 1),
        record("x3", r#"{"other": 1}"#, None, 1),
    ]);
    let response = by_booking
        .process(&twice, &context(), handler(&seen))
        .await
        .unwrap();
    assert_eq!(failed_ids(&response), ["x3"], "a record without the key fails");
    assert_eq!(*seen.lock().unwrap(), ["x1"]);
}

#[tokio::test]
async fn a_batch_that_fails_entirely_is_an_error_unless_allowed() {
    let records = || {
        batch(vec![
            record("m1", r#"{"fail": 1}"#, None, 1),
            record("m2", r#"{"fail": 2}"#, None, 1),
        ])
    };
    let seen = Arc::default();
    let error = BatchProcessor::new()
        .process(&records(), &context(), handler(&seen))
        .await
        .unwrap_err();
    let BatchError::AllFailed {
        records: count,
        first,
    } = error;
    assert_eq!((count, first.as_str()), (2, "record m1 refused"));
    let response = BatchProcessor::new()
        .allow_whole_batch_failure()
        .process(&records(), &context(), handler(&seen))
        .await
        .unwrap();
    assert_eq!(failed_ids(&response), ["m1", "m2"]);
    let empty = BatchProcessor::new()
        .process(&batch(vec![]), &context(), handler(&seen))
        .await
        .unwrap();
    assert!(empty.batch_item_failures.is_empty());
}

#[test]
fn poison_records_are_routed_once_received_often_enough() {
    let (keel, lines) = crate::common::keel();
    let subscriber = tracing_subscriber::registry().with(keel.log_layer());
    let processor = BatchProcessor::new().route_after(ErrorRouting::new("svc"), 3);
    let records = batch(vec![
        record("young", r#"{"fail": 1, "email": "a@b.c"}"#, None, 1),
        record("poison", r#"{"fail": 1, "email": "a@b.c"}"#, None, 3),
        record("fine", "{}", None, 5),
    ]);
    let seen = Arc::default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let response = tracing::subscriber::with_default(subscriber, || {
        runtime.block_on(processor.process(&records, &context(), handler(&seen)))
    })
    .unwrap();
    assert_eq!(failed_ids(&response), ["young", "poison"]);
    let routed: Vec<Envelope> = crate::common::logs(&lines)
        .iter()
        .filter(|l| l["message"] == "keel.routed_error")
        .map(|l| serde_json::from_value(l["envelope"].clone()).unwrap())
        .collect();
    assert_eq!(routed.len(), 1, "only the record received 3 times is routed");
    assert_eq!(routed[0].attempt, 3);
    assert_eq!(routed[0].request_id, "batch-1");
    assert_eq!(routed[0].event["messageId"], "poison");
    assert!(
        routed[0].event["body"].as_str().unwrap().contains("***"),
        "the body is redacted: {}",
        routed[0].event
    );
}

#[test]
fn a_record_still_in_progress_elsewhere_is_retried_not_routed() {
    use keel_runtime::idempotency::MemoryStore;
    let store = Arc::new(MemoryStore::new());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // Another invocation is processing the same message right now: it holds the key until told.
    let holder = Idempotency::with_store(store.clone()).prefix("worker");
    let (started, holding) = tokio::sync::oneshot::channel::<()>();
    let (release, hold) = tokio::sync::oneshot::channel::<()>();
    let deadline = keel_runtime::clock::now_ms() + 600_000;
    runtime.spawn(async move {
        let work = || async move {
            let _ = started.send(());
            let _ = hold.await;
            Ok::<_, BoxError>(())
        };
        holder
            .once(&json!("dup"), &json!({}), "another-invocation", deadline, work)
            .await
    });
    runtime
        .block_on(holding)
        .expect("the other invocation holds the key");

    let (keel, lines) = crate::common::keel();
    let subscriber = tracing_subscriber::registry().with(keel.log_layer());
    let processor = BatchProcessor::new()
        .idempotent(Idempotency::with_store(store).prefix("worker"))
        .route_after(ErrorRouting::new("svc"), 1)
        .allow_whole_batch_failure();
    let records = batch(vec![record("dup", "{}", None, 5)]);
    let seen = Arc::default();
    let response = tracing::subscriber::with_default(subscriber, || {
        runtime.block_on(processor.process(&records, &context(), handler(&seen)))
    })
    .unwrap();
    assert_eq!(failed_ids(&response), ["dup"], "left for the retry");
    assert!(seen.lock().unwrap().is_empty(), "not processed twice at once");
    let routed = crate::common::logs(&lines)
        .iter()
        .filter(|l| l["message"] == "keel.routed_error")
        .count();
    assert_eq!(routed, 0, "back-pressure is not a failure to route");
    drop(release);
}
