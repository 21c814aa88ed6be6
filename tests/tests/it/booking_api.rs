//! End to end: the booking-api binary, wrapped by Keel, served by the Lambda emulator.
//! Its stdout is what Lambda would send to CloudWatch Logs; every line is checked.

use std::collections::HashSet;
use std::time::Duration;

use keel_tests::{build_binary, emf_spec, Emulator};
use serde_json::{json, Value};

const SECRETS: [&str; 3] = ["guest@example.com", "4111111111111111", "+44 20 7946 0000"];

fn booking_event(correlation_id: &str, body: Value) -> String {
    keyed_booking_event(correlation_id, &format!("key-{correlation_id}"), body)
}

fn keyed_booking_event(correlation_id: &str, idempotency_key: &str, body: Value) -> String {
    json!({
        "version": "2.0",
        "routeKey": "POST /bookings",
        "rawPath": "/bookings",
        "headers": {
            "content-type": "application/json",
            "x-correlation-id": correlation_id,
            "idempotency-key": idempotency_key
        },
        "requestContext": {"http": {"method": "POST", "path": "/bookings"}},
        "body": body.to_string(),
        "isBase64Encoded": false
    })
    .to_string()
}

fn booking(resource: &str) -> Value {
    json!({
        "resource_id": resource,
        "customer_id": "cust-7",
        "start": format!("{}T10:00:00Z", keel_tests::future_date(2)),
        "end": format!("{}T11:00:00Z", keel_tests::future_date(2)),
        "guests": 2,
        "email": SECRETS[0]
    })
}

/// moto with the booking functions' resources, and the variables booking-api needs for them.
async fn booking_stack() -> (keel_tests::Moto, keel_tests::BookingStack, Vec<(String, String)>) {
    let moto = keel_tests::Moto::start().expect("moto starts");
    let stack = moto.booking_stack().await.expect("the bookings stack is created");
    let mut env = moto.env();
    env.extend(stack.env());
    (moto, stack, env)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn booking_api_logs_and_metrics_under_the_lambda_emulator() {
    let (_moto, _stack, mut env) = booking_stack().await;
    let binary = build_binary("booking-api").expect("booking-api builds");
    let emulator = Emulator::start().expect("emulator starts");
    env.extend(
        [
            ("KEEL_LOG_EVENT", "true"),
            ("KEEL_CORRELATION_ID_HEADER", "X-Correlation-Id"),
            ("AWS_LAMBDA_LOG_LEVEL", "INFO"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned())),
    );
    let function = emulator.start_function(&binary, &env).expect("function starts");

    // 1, 2 and 4 succeed (4 is a refused request: a 400 answer, not a failed invocation);
    // 3 is an event that is not an API Gateway request: the invocation fails.
    let failing_event = json!({
        "headers": {"x-correlation-id": "inv-3", "idempotency-key": "key-inv-3"},
        "queryStringParameters": {"email": SECRETS[0]},
        "stageVariables": {"payload": format!("{{\"phone\":\"{}\"}}", SECRETS[2])},
        "body": 5
    })
    .to_string();
    let invalid_booking =
        json!({"resource_id": "", "customer_id": "c", "start": "a", "end": "b", "guests": 1});
    let payloads = [
        booking_event("inv-1", booking("room-1")),
        booking_event("inv-2", booking("room-2")),
        failing_event,
        booking_event("inv-4", invalid_booking),
    ];
    let answers: Vec<_> = payloads
        .iter()
        .map(|p| {
            emulator
                .invoke(p)
                .unwrap_or_else(|e| panic!("{e}\n{}", function.output()))
        })
        .collect();
    assert_eq!(answers[0].status, 200, "{:?}", answers[0]);
    assert_eq!(answers[0].body["statusCode"], 201);
    assert_eq!(answers[1].body["statusCode"], 201);
    assert_eq!(answers[2].status, 500);
    assert_eq!(answers[2].body["errorType"], "Keel.InvalidEvent");
    assert_eq!(answers[3].body["statusCode"], 400);

    // Lines are written before the answer is posted; allow the pipe reader to catch up.
    assert!(
        function.wait_for_line(Duration::from_secs(60), |l| l.contains("\"inv-4\"")),
        "{}",
        function.output()
    );
    let lines = function.stdout_lines();
    let all = lines.join("\n");
    for secret in SECRETS {
        assert!(!all.contains(secret), "{secret} leaked:\n{all}");
    }

    let parsed: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {l}")))
        .collect();
    let (documents, logs): (Vec<&Value>, Vec<&Value>) = parsed.iter().partition(|v| v.get("_aws").is_some());
    for line in lines.iter().filter(|l| emf_spec::is_emf(l)) {
        emf_spec::validate_line(line).unwrap_or_else(|e| panic!("invalid EMF {line}: {e:?}"));
    }

    // Each invocation's lines carry one request id of their own; cold_start is true once.
    let mut request_ids = Vec::new();
    for (n, correlation_id) in ["inv-1", "inv-2", "inv-3", "inv-4"].iter().enumerate() {
        let own: Vec<&&Value> = logs
            .iter()
            .filter(|l| l["correlation_id"] == *correlation_id)
            .collect();
        assert!(!own.is_empty(), "no line for {correlation_id}:\n{all}");
        let ids: HashSet<&str> = own
            .iter()
            .map(|l| l["function_request_id"].as_str().unwrap())
            .collect();
        assert_eq!(ids.len(), 1, "{correlation_id}: {ids:?}");
        let request_id = ids.into_iter().next().unwrap();
        assert!(!request_id.is_empty());
        request_ids.push(request_id.to_owned());
        assert!(
            own.iter().all(|l| l["cold_start"] == (n == 0)),
            "{correlation_id}"
        );
        assert!(own
            .iter()
            .all(|l| l["service"] == "booking-api" && l["function_name"] == "_"));
        let debug = own.iter().filter(|l| l["level"] == "DEBUG").count();
        if *correlation_id == "inv-3" {
            assert!(
                debug > 0,
                "the failing invocation's DEBUG lines were not written:\n{all}"
            );
        } else {
            assert_eq!(debug, 0, "{correlation_id} wrote DEBUG lines:\n{all}");
        }
    }
    assert_eq!(request_ids.iter().collect::<HashSet<_>>().len(), 4);

    let failure = logs
        .iter()
        .find(|l| l["correlation_id"] == "inv-3" && l["message"] == "invocation failed")
        .expect("failure logged");
    assert_eq!(failure["error.type"], "Keel.InvalidEvent");
    let logged_event = logs
        .iter()
        .find(|l| l["correlation_id"] == "inv-3" && l["message"] == "incoming event")
        .expect("the failing event is among the buffered lines");
    assert_eq!(logged_event["event"]["queryStringParameters"]["email"], "***");
    assert_eq!(
        logged_event["event"]["stageVariables"]["payload"],
        "{\"phone\":\"***\"}"
    );

    // Metrics: ColdStart once (own document), BookingCreated for the two accepted bookings,
    // each document tied to its invocation.
    let cold: Vec<&&Value> = documents
        .iter()
        .filter(|d| d.get("ColdStart").is_some())
        .collect();
    assert_eq!(cold.len(), 1);
    assert_eq!(cold[0]["function_name"], "_");
    assert_eq!(cold[0]["function_request_id"], request_ids[0].as_str());
    let created: Vec<&str> = documents
        .iter()
        .filter(|d| d["BookingCreated"] == 1)
        .map(|d| d["function_request_id"].as_str().unwrap())
        .collect();
    assert_eq!(created, vec![request_ids[0].as_str(), request_ids[1].as_str()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn booking_api_books_once_per_idempotency_key_with_records_in_dynamodb() {
    let (moto, _stack, mut env) = booking_stack().await;
    let table = moto
        .create_table(
            "booking-idempotency",
            Some(keel_runtime::idempotency::TABLE.ttl_attribute),
        )
        .await
        .unwrap();
    let binary = build_binary("booking-api").expect("booking-api builds");
    let emulator = Emulator::start().expect("emulator starts");
    env.push(("KEEL_IDEMPOTENCY_TABLE".into(), table.clone()));
    let function = emulator.start_function(&binary, &env).expect("function starts");

    let invoke = |payload: String| {
        let emulator = &emulator;
        let function = &function;
        emulator
            .invoke(&payload)
            .unwrap_or_else(|e| panic!("{e}\n{}", function.output()))
    };
    let first = invoke(keyed_booking_event("d-1", "order-77", booking("room-9")));
    let retry = invoke(keyed_booking_event("d-2", "order-77", booking("room-9")));
    let misuse = invoke(keyed_booking_event("d-3", "order-77", booking("room-10")));
    let unkeyed = invoke(
        json!({
            "routeKey": "POST /bookings", "rawPath": "/bookings", "headers": {},
            "requestContext": {"http": {"method": "POST"}}, "body": booking("room-9").to_string()
        })
        .to_string(),
    );

    assert_eq!(
        first.body["statusCode"],
        201,
        "{:?}\n{}",
        first,
        function.output()
    );
    assert_eq!(retry.body["statusCode"], 201);
    assert_eq!(
        retry.body["body"], first.body["body"],
        "the retry gets the same booking"
    );
    assert_eq!(retry.body["headers"]["idempotent-replayed"], "true");
    assert_eq!(misuse.body["statusCode"], 422);
    assert_eq!(unkeyed.body["statusCode"], 400);

    // One booking was made, and its record is in DynamoDB with both time units right.
    assert!(function.wait_for_line(Duration::from_secs(60), |l| l
        .contains("\"IdempotencyKeyReused\":1")));
    let count = |metric: &str| {
        function
            .stdout_lines()
            .iter()
            .filter(|l| l.contains(&format!("\"{metric}\":1")))
            .count()
    };
    assert_eq!(count("BookingCreated"), 1, "{}", function.output());
    assert_eq!(count("IdempotencyReplay"), 1, "{}", function.output());
    let items = moto.dynamodb().scan().table_name(&table).send().await.unwrap();
    let items = items.items();
    assert_eq!(items.len(), 1);
    let number = |name: &str| -> u64 { items[0][name].as_n().unwrap().parse().unwrap() };
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert_eq!(items[0]["status"].as_s().unwrap(), "COMPLETED");
    assert!(
        (now_s + 3500..now_s + 3700).contains(&number("expiration")),
        "expiration is in seconds"
    );
    assert!(
        number("in_progress_expiration") > now_s * 1000,
        "in_progress_expiration is in milliseconds"
    );
    assert!(
        items[0]["id"].as_s().unwrap().starts_with("_#"),
        "prefixed with the function name"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn booking_api_routes_a_failed_invocation_to_the_on_call_topic() {
    let (moto, _stack, mut env) = booking_stack().await;
    let (topic, on_call) = moto.subscribed_topic("booking-errors").await.unwrap();
    let dlq = moto.create_queue("booking-errors-dlq").await.unwrap();
    let binary = build_binary("booking-api").expect("booking-api builds");
    let emulator = Emulator::start().expect("emulator starts");
    env.push(("KEEL_ERROR_TOPIC_ARN".into(), topic));
    env.push(("KEEL_DLQ_URL".into(), dlq.clone()));
    let function = emulator.start_function(&binary, &env).expect("function starts");

    let accepted = emulator
        .invoke(&keyed_booking_event("ok-1", "order-1", booking("room-1")))
        .unwrap();
    assert_eq!(accepted.body["statusCode"], 201, "{}", function.output());
    // Not an API Gateway request: the invocation fails, and the error is routed.
    let not_http =
        json!({"headers": {"idempotency-key": "order-2"}, "body": 5, "guest": {"email": "eve@example.com"}})
            .to_string();
    let failed = emulator.invoke(&not_http).unwrap();
    assert_eq!(
        failed.body["errorType"], "Keel.InvalidEvent",
        "returned unchanged"
    );

    let received = moto
        .wait_for_messages(&on_call, 1, Duration::from_secs(60))
        .await
        .unwrap_or_else(|error| panic!("{error}\n{}", function.output()));
    assert_eq!(
        received.len(),
        1,
        "one envelope, for the failure only\n{}",
        function.output()
    );
    let envelope: keel_runtime::routing::Envelope =
        serde_json::from_str(received[0].body().unwrap()).unwrap();
    assert_eq!(envelope.error_type, "Keel.InvalidEvent");
    assert_eq!(envelope.service, "booking-api");
    assert_eq!(
        envelope.error_class,
        keel_runtime::classify::ErrorClass::Permanent
    );
    assert_eq!(envelope.event["guest"]["email"], "***", "redacted as in the logs");
    assert!(!envelope.request_id.is_empty());
    let attribute = |name: &str| {
        received[0]
            .message_attributes()
            .and_then(|a| a.get(name))
            .and_then(|v| v.string_value())
            .map(str::to_owned)
    };
    assert_eq!(attribute("error_class").as_deref(), Some("permanent"));
    assert!(moto.receive_available(&dlq).await.unwrap().is_empty());
    assert!(
        function.wait_for_line(Duration::from_secs(60), |l| l.contains("\"RoutedError\":1")
            && l.contains("\"sink\":\"sns\"")),
        "{}",
        function.output()
    );
    // One failure, one ERROR line, with its context (the runtime's own echo is not written).
    let errors: Vec<Value> = function
        .stdout_lines()
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["level"] == "ERROR")
        .collect();
    assert_eq!(errors.len(), 1, "{errors:?}\n{}", function.output());
    assert_eq!(errors[0]["function_request_id"], envelope.request_id.as_str());
    assert_eq!(errors[0]["error.type"], "Keel.InvalidEvent");
}
