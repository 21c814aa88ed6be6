//! End to end: the booking-worker binary, wrapped by Keel, served by the Lambda emulator, with
//! its bookings table in moto. Batches are SQS events built here, or received from a real
//! (moto) queue whose redrive policy moves poison messages to a dead-letter queue.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
};
use aws_sdk_sqs::types::QueueAttributeName;
use keel_tests::{
    build_binary, emf_spec, unique_name, wait_until, Emulator, FunctionProcess, Moto, SqsEventSource,
};
use serde_json::{json, Value};

const QUEUE_ARN: &str = "arn:aws:sqs:us-east-1:123456789012:booking-requests";
const CREATED_AT: &str = "2026-11-30T09:00:00.250Z";

/// The `BookingRequested` message booking-api publishes for `booking_id`.
fn requested(booking_id: &str) -> String {
    json!({
        "type": "BookingRequested",
        "booking_id": booking_id,
        "customer_id": "cust-7",
        "resource_id": "room-1",
        "start": "2026-12-01T10:00:00Z",
        "end": "2026-12-01T11:00:00Z",
        "guests": 2,
        "created_at": CREATED_AT
    })
    .to_string()
}

/// `message` inside an SNS notification envelope (a subscription without raw delivery).
fn notification(message: &str) -> String {
    json!({
        "Type": "Notification",
        "MessageId": "5f6d1b0e-sns",
        "TopicArn": "arn:aws:sns:us-east-1:123456789012:bookings",
        "Message": message,
        "Timestamp": CREATED_AT,
        "MessageAttributes": {"type": {"Type": "String", "Value": "BookingRequested"}}
    })
    .to_string()
}

/// An SQS record as Lambda hands it over, on its `receives`th receive.
fn record(message_id: &str, body: &str, receives: u32) -> Value {
    json!({
        "messageId": message_id,
        "receiptHandle": format!("handle-{message_id}-{receives}"),
        "body": body,
        "attributes": {
            "ApproximateReceiveCount": receives.to_string(),
            "SentTimestamp": "1796029200250",
            "SenderId": "AIDAEXAMPLE",
            "ApproximateFirstReceiveTimestamp": "1796029200300"
        },
        "messageAttributes": {},
        "md5OfBody": "",
        "eventSource": "aws:sqs",
        "eventSourceARN": QUEUE_ARN,
        "awsRegion": "us-east-1"
    })
}

fn batch(records: Vec<Value>) -> String {
    json!({ "Records": records }).to_string()
}

/// Creates a uniquely named bookings table (partition key `pk`, string); returns its name.
async fn bookings_table(moto: &Moto) -> String {
    let name = unique_name("bookings");
    moto.dynamodb()
        .create_table()
        .table_name(&name)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("pk")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("pk")
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .unwrap();
    name
}

/// Writes booking `booking_id` with `status`, as booking-api does.
async fn put_booking(moto: &Moto, table: &str, booking_id: &str, status: &str) {
    let s = |value: &str| AttributeValue::S(value.to_owned());
    moto.dynamodb()
        .put_item()
        .table_name(table)
        .item("pk", s(&format!("BOOKING#{booking_id}")))
        .item("booking_id", s(booking_id))
        .item("customer_id", s("cust-7"))
        .item("resource_id", s("room-1"))
        .item("start", s("2026-12-01T10:00:00Z"))
        .item("end", s("2026-12-01T11:00:00Z"))
        .item("guests", AttributeValue::N("2".into()))
        .item("email", s("guest@example.com"))
        .item("status", s(status))
        .item("created_at", s(CREATED_AT))
        .item("updated_at", s(CREATED_AT))
        .send()
        .await
        .unwrap();
}

/// The item of booking `booking_id`.
async fn booking(moto: &Moto, table: &str, booking_id: &str) -> HashMap<String, AttributeValue> {
    moto.dynamodb()
        .get_item()
        .table_name(table)
        .key("pk", AttributeValue::S(format!("BOOKING#{booking_id}")))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item
        .unwrap_or_else(|| panic!("booking {booking_id} is not in the table"))
}

fn attribute<'a>(item: &'a HashMap<String, AttributeValue>, name: &str) -> &'a str {
    item.get(name)
        .and_then(|v| v.as_s().ok())
        .map_or("", String::as_str)
}

/// The worker under a new emulator, with moto's environment, `table` and `env`.
fn start_worker(moto: &Moto, table: &str, env: &[(&str, &str)]) -> (Emulator, FunctionProcess) {
    let binary = build_binary("booking-worker").expect("booking-worker builds");
    let emulator = Emulator::start().expect("emulator starts");
    let mut all = moto.env();
    all.push(("BOOKINGS_TABLE".into(), table.to_owned()));
    all.extend(env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    let function = emulator.start_function(&binary, &all).expect("function starts");
    (emulator, function)
}

/// Invokes the worker with `event`; returns the ids its answer lists as failed.
fn failed_ids(emulator: &Emulator, function: &FunctionProcess, event: &str) -> BTreeSet<String> {
    let answer = emulator
        .invoke(event)
        .unwrap_or_else(|e| panic!("{e}\n{}", function.output()));
    assert_eq!(answer.status, 200, "{answer:?}\n{}", function.output());
    answer.body["batchItemFailures"]
        .as_array()
        .unwrap_or_else(|| panic!("not an SqsBatchResponse: {answer:?}"))
        .iter()
        .map(|failure| failure["itemIdentifier"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// The EMF documents the function wrote so far, each checked against the specification.
fn documents(function: &FunctionProcess) -> Vec<Value> {
    function
        .stdout_lines()
        .iter()
        .filter(|line| emf_spec::is_emf(line))
        .map(|line| {
            emf_spec::validate_line(line).unwrap_or_else(|e| panic!("invalid EMF {line}: {e:?}"));
            serde_json::from_str(line).unwrap()
        })
        .collect()
}

/// The sum of `metric` over the documents whose dimension `label` is `value` (any, without).
fn total(documents: &[Value], metric: &str, label: Option<(&str, &str)>) -> f64 {
    documents
        .iter()
        .filter(|d| label.is_none_or(|(name, value)| d[name] == value))
        .filter_map(|d| d[metric].as_f64())
        .sum()
}

/// Waits until the function has written `count` of `metric` (with the label, if any).
fn wait_for_metric(function: &FunctionProcess, metric: &str, label: Option<(&str, &str)>, count: f64) {
    let reached = wait_until(Duration::from_secs(30), || {
        total(&documents(function), metric, label) >= count
    });
    assert!(
        reached,
        "{metric} {label:?} reached {} of {count} in 30 s:\n{}",
        total(&documents(function), metric, label),
        function.output()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn booking_worker_confirms_a_pending_booking_once_however_often_it_is_delivered() {
    let moto = Moto::start().expect("moto starts");
    let table = bookings_table(&moto).await;
    put_booking(&moto, &table, "bk-1", "PENDING").await;
    let (emulator, function) = start_worker(&moto, &table, &[]);

    let first = batch(vec![record("m-1", &requested("bk-1"), 1)]);
    assert_eq!(failed_ids(&emulator, &function, &first), BTreeSet::new());
    let item = booking(&moto, &table, "bk-1").await;
    assert_eq!(attribute(&item, "status"), "CONFIRMED");
    let updated_at = attribute(&item, "updated_at").to_owned();
    assert!(
        updated_at.as_str() > CREATED_AT && updated_at.len() == CREATED_AT.len(),
        "updated_at is a later RFC 3339 time in milliseconds: {updated_at}"
    );
    assert_eq!(
        attribute(&item, "email"),
        "guest@example.com",
        "the rest is untouched"
    );

    // SQS redelivers the same message: answered from its idempotency record.
    let redelivered = batch(vec![record("m-1", &requested("bk-1"), 2)]);
    assert_eq!(failed_ids(&emulator, &function, &redelivered), BTreeSet::new());
    // The same booking in another message (published twice; through a subscription without raw
    // delivery): the table says it is confirmed already.
    let duplicate = batch(vec![record("m-2", &notification(&requested("bk-1")), 1)]);
    assert_eq!(failed_ids(&emulator, &function, &duplicate), BTreeSet::new());
    assert_eq!(
        attribute(&booking(&moto, &table, "bk-1").await, "updated_at"),
        updated_at,
        "written once"
    );

    wait_for_metric(
        &function,
        "BookingConfirmationSkipped",
        Some(("reason", "already_confirmed")),
        1.0,
    );
    let documents = documents(&function);
    assert_eq!(
        total(&documents, "BookingConfirmed", None),
        1.0,
        "{}",
        function.output()
    );
    assert_eq!(
        total(&documents, "IdempotencyReplay", None),
        1.0,
        "{}",
        function.output()
    );
    assert_eq!(total(&documents, "BookingConfirmationSkipped", None), 1.0);
    assert_eq!(total(&documents, "BookingConfirmationFailed", None), 0.0);
    let lag = documents
        .iter()
        .find(|d| d.get("BookingConfirmationLagMs").is_some())
        .expect("the confirmation's lag is recorded");
    let lag_ms = lag["BookingConfirmationLagMs"]
        .as_f64()
        .or_else(|| lag["BookingConfirmationLagMs"][0].as_f64())
        .unwrap();
    assert!(lag_ms > 0.0, "{lag}");
    assert!(
        function
            .stdout_lines()
            .iter()
            .any(|l| l.contains("\"booking confirmed\"") && l.contains("\"bk-1\"")),
        "{}",
        function.output()
    );
    assert!(
        !function.output().contains("guest@example.com"),
        "the guest's email never reaches the logs"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn booking_worker_rejects_a_closed_resources_booking_and_refuses_a_message_of_another_resource() {
    let moto = Moto::start().expect("moto starts");
    let table = bookings_table(&moto).await;
    put_booking(&moto, &table, "bk-7", "PENDING").await;
    // room-1, closed by its operators, holds no slot for bk-7 (its time has been freed).
    moto.dynamodb()
        .put_item()
        .table_name(&table)
        .item("pk", AttributeValue::S("RESOURCE#room-1".into()))
        .item("closed", AttributeValue::Bool(true))
        .send()
        .await
        .unwrap();
    let (emulator, function) = start_worker(&moto, &table, &[]);

    // A message naming another resource than the booking's settles nothing.
    let mut wrong: Value = serde_json::from_str(&requested("bk-7")).unwrap();
    wrong["resource_id"] = json!("room-2");
    let event = batch(vec![record("m-wrong", &wrong.to_string(), 1)]);
    assert_eq!(
        failed_ids(&emulator, &function, &event),
        BTreeSet::from(["m-wrong".to_owned()])
    );
    assert_eq!(
        attribute(&booking(&moto, &table, "bk-7").await, "status"),
        "PENDING"
    );

    let event = batch(vec![record("m-right", &requested("bk-7"), 1)]);
    assert_eq!(failed_ids(&emulator, &function, &event), BTreeSet::new());
    let item = booking(&moto, &table, "bk-7").await;
    assert_eq!(
        (attribute(&item, "status"), attribute(&item, "rejection_reason")),
        ("REJECTED", "resource_closed"),
        "{item:?}\n{}",
        function.output()
    );
    wait_for_metric(
        &function,
        "BookingRejected",
        Some(("reason", "resource_closed")),
        1.0,
    );
    wait_for_metric(
        &function,
        "BookingConfirmationFailed",
        Some(("reason", "resource_mismatch")),
        1.0,
    );
    assert_eq!(total(&documents(&function), "BookingConfirmed", None), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn booking_worker_reports_exactly_the_poison_records_and_routes_them_on_their_last_receive() {
    let moto = Moto::start().expect("moto starts");
    let table = bookings_table(&moto).await;
    let (topic, on_call) = moto.subscribed_topic("worker-errors").await.unwrap();
    put_booking(&moto, &table, "bk-2", "PENDING").await;
    put_booking(&moto, &table, "bk-3", "CANCELLED").await;
    let (emulator, function) = start_worker(
        &moto,
        &table,
        &[("KEEL_ERROR_TOPIC_ARN", &topic), ("QUEUE_MAX_RECEIVE_COUNT", "2")],
    );

    let malformed = r#"{"type": "BookingRequested", "booking_id": "bk-9"#;
    let records = |receives: u32| {
        batch(vec![
            record("m-pending", &requested("bk-2"), receives),
            record("m-cancelled", &requested("bk-3"), receives),
            record("m-malformed", malformed, receives),
            record("m-missing", &requested("bk-404"), receives),
        ])
    };
    let poison: BTreeSet<String> = ["m-malformed", "m-missing"].map(str::to_owned).into();
    assert_eq!(failed_ids(&emulator, &function, &records(1)), poison);
    assert_eq!(
        attribute(&booking(&moto, &table, "bk-2").await, "status"),
        "CONFIRMED"
    );
    assert_eq!(
        attribute(&booking(&moto, &table, "bk-3").await, "status"),
        "CANCELLED",
        "a cancelled booking stays cancelled"
    );
    assert!(
        moto.receive_available(&on_call).await.unwrap().is_empty(),
        "nothing is routed before the last receive\n{}",
        function.output()
    );

    // The queue's last receive: the same two fail again, and reach on-call.
    assert_eq!(failed_ids(&emulator, &function, &records(2)), poison);
    let routed = moto
        .wait_for_messages(&on_call, 2, Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", function.output()));
    let mut envelopes: Vec<keel_runtime::routing::Envelope> = routed
        .iter()
        .map(|m| serde_json::from_str(m.body().unwrap()).unwrap())
        .collect();
    envelopes.sort_by(|a, b| a.error_type.cmp(&b.error_type));
    let types: Vec<&str> = envelopes.iter().map(|e| e.error_type.as_str()).collect();
    assert_eq!(
        types,
        ["Booking.MalformedMessage", "Booking.NotFound"],
        "{envelopes:?}"
    );
    for envelope in &envelopes {
        assert_eq!(envelope.attempt, 2);
        assert_eq!(envelope.service, "booking-worker");
        assert_eq!(
            envelope.error_class,
            keel_runtime::classify::ErrorClass::Permanent
        );
    }
    assert_eq!(
        envelopes[1].event["messageId"], "m-missing",
        "the record is the event"
    );
    assert!(
        envelopes[1].error_message.contains("bk-404"),
        "{}",
        envelopes[1].error_message
    );

    wait_for_metric(
        &function,
        "BookingConfirmationFailed",
        Some(("reason", "booking_not_found")),
        2.0,
    );
    let documents = documents(&function);
    assert_eq!(total(&documents, "BookingConfirmed", None), 1.0);
    assert_eq!(
        total(
            &documents,
            "BookingConfirmationSkipped",
            Some(("reason", "cancelled_before_confirmation"))
        ),
        1.0,
        "the second delivery of the cancelled booking is a replay"
    );
    assert_eq!(
        total(
            &documents,
            "BookingConfirmationFailed",
            Some(("reason", "malformed_message"))
        ),
        2.0
    );
    assert!(
        function
            .stdout_lines()
            .iter()
            .any(|l| l.contains("cancelled before it could be confirmed") && l.contains("\"INFO\"")),
        "{}",
        function.output()
    );
}

/// A queue of its own whose redrive policy moves a message to `dlq_arn` after
/// `max_receive_count` receives; returns its URL.
async fn queue_with_redrive(moto: &Moto, dlq_arn: &str, max_receive_count: u32) -> String {
    let policy = json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": max_receive_count}).to_string();
    moto.sqs()
        .create_queue()
        .queue_name(unique_name("booking-requests"))
        .attributes(QueueAttributeName::RedrivePolicy, policy)
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_messages_reach_the_dead_letter_queue_through_the_redrive_policy() {
    let moto = Moto::start().expect("moto starts");
    let table = bookings_table(&moto).await;
    put_booking(&moto, &table, "bk-5", "PENDING").await;
    let dlq = moto.create_queue("booking-requests-dlq").await.unwrap();
    let dlq_arn = SqsEventSource::new(&moto, &dlq)
        .await
        .unwrap()
        .queue_arn()
        .to_owned();
    let queue = queue_with_redrive(&moto, &dlq_arn, 2).await;
    let (emulator, function) = start_worker(&moto, &table, &[("QUEUE_MAX_RECEIVE_COUNT", "2")]);

    let good = requested("bk-5");
    let malformed = "not json at all".to_owned();
    let missing = requested("bk-404");
    for body in [&good, &malformed, &missing] {
        moto.sqs()
            .send_message()
            .queue_url(&queue)
            .message_body(body)
            .send()
            .await
            .unwrap();
    }

    // What Lambda's event source mapping does: receive, invoke, delete what succeeded, and let
    // the failed records become visible again (at once, here).
    let source = SqsEventSource::new(&moto, &queue).await.unwrap();
    let mut failures: HashMap<String, u32> = HashMap::new();
    let mut rounds = Vec::new();
    for _ in 0..6 {
        let Some(delivery) = source.deliver(&emulator).await.unwrap() else {
            rounds.push(0);
            break;
        };
        rounds.push(delivery.messages.len());
        for message in &delivery.messages {
            if delivery.failed.contains(message.message_id().unwrap_or_default()) {
                *failures
                    .entry(message.body().unwrap_or_default().to_owned())
                    .or_default() += 1;
            }
        }
    }
    assert_eq!(
        rounds,
        [3, 2, 0],
        "messages received per round\n{}",
        function.output()
    );
    let expected: HashMap<String, u32> = [(malformed.clone(), 2), (missing.clone(), 2)].into();
    assert_eq!(
        failures, expected,
        "each poison message failed on each of its receives"
    );
    assert_eq!(
        attribute(&booking(&moto, &table, "bk-5").await, "status"),
        "CONFIRMED"
    );

    let dead: BTreeSet<String> = moto
        .wait_for_messages(&dlq, 2, Duration::from_secs(30))
        .await
        .unwrap()
        .iter()
        .map(|m| m.body().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(dead, BTreeSet::from([malformed, missing]));
    assert!(moto.receive_available(&queue).await.unwrap().is_empty());
}

#[test]
fn booking_worker_names_bookings_table_when_it_is_not_set() {
    let binary = build_binary("booking-worker").expect("booking-worker builds");
    let mut command = std::process::Command::new(binary);
    command
        .env_remove("BOOKINGS_TABLE")
        .env("AWS_REGION", "us-east-1");
    let mut process = keel_tests::Process::spawn("booking-worker", command).expect("starts");
    assert!(
        wait_until(Duration::from_secs(30), || !process.is_running()),
        "still running: {}",
        process.output()
    );
    assert!(
        process.output().contains("BOOKINGS_TABLE is not set"),
        "{}",
        process.output()
    );
}

#[test]
fn booking_worker_fails_a_record_for_a_retry_when_the_table_is_unreachable() {
    let binary = build_binary("booking-worker").expect("booking-worker builds");
    let emulator = Emulator::start().expect("emulator starts");
    // Nothing listens there: every DynamoDB call fails to connect.
    let nowhere = format!("http://127.0.0.1:{}", keel_tests::free_port());
    let env: Vec<(String, String)> = [
        ("BOOKINGS_TABLE", "bookings"),
        ("AWS_ENDPOINT_URL", nowhere.as_str()),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("QUEUE_MAX_RECEIVE_COUNT", "1"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let function = emulator.start_function(&binary, &env).expect("function starts");

    let event = batch(vec![record("m-unreachable", &requested("bk-7"), 1)]);
    let failed = failed_ids(&emulator, &function, &event);
    assert_eq!(failed, BTreeSet::from(["m-unreachable".to_owned()]));
    wait_for_metric(
        &function,
        "BookingConfirmationFailed",
        Some(("reason", "store_unavailable")),
        1.0,
    );
    // Its last receive (QUEUE_MAX_RECEIVE_COUNT=1): routed, to the log without a topic or queue,
    // as a transient error.
    let routed = wait_until(Duration::from_secs(30), || {
        function
            .stdout_lines()
            .iter()
            .any(|l| l.contains("keel.routed_error"))
    });
    assert!(routed, "{}", function.output());
    let line: Value = function
        .stdout_lines()
        .iter()
        .find(|l| l.contains("keel.routed_error"))
        .map(|l| serde_json::from_str(l).unwrap())
        .unwrap();
    assert_eq!(
        line["envelope"]["error_type"], "Booking.StoreUnavailable",
        "{line}"
    );
    assert_eq!(line["envelope"]["error_class"], "transient", "{line}");
}
