//! Runs Keel's main job locally: the booking API, wrapped by Keel, served by the Lambda emulator,
//! with its idempotency records in DynamoDB (a moto server).
//!
//! It builds `booking-api`, starts a moto server and creates the idempotency table, starts the
//! cargo-lambda emulator on a free 127.0.0.1 port and the function against it, sends a few
//! booking requests (accepted, retried, refused, malformed) and prints each answer with the log
//! lines and EMF documents the function wrote for it — what Lambda would send to CloudWatch
//! Logs. With `--serve` it then keeps running for your own requests until interrupted.
//!
//! `scripts/local.sh` installs the tools and runs this.

use std::time::Duration;

use keel_tests::{build_binaries, free_port, wait_until, Emulator, FunctionProcess, HarnessError, Moto};
use serde_json::{json, Value};

fn api_event(correlation_id: &str, key: &str, method: &str, target: &str, body: Option<Value>) -> String {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let parameters: serde_json::Map<String, Value> = query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(name, value)| (name.to_owned(), Value::String(value.to_owned())))
        .collect();
    let mut headers = json!({"content-type": "application/json", "x-correlation-id": correlation_id});
    if !key.is_empty() {
        headers["idempotency-key"] = Value::String(key.to_owned());
    }
    json!({
        "version": "2.0",
        "routeKey": format!("{method} {path}"),
        "rawPath": path,
        "rawQueryString": query,
        "queryStringParameters": parameters,
        "headers": headers,
        "requestContext": {"http": {"method": method, "path": path}},
        "body": body.map(|b| b.to_string()),
        "isBase64Encoded": false
    })
    .to_string()
}

fn samples() -> Vec<(&'static str, String)> {
    let booking = |resource: &str, email: &str| {
        json!({
            "resource_id": resource, "customer_id": "cust-7", "guests": 2,
            "start": format!("{}T10:00:00Z", keel_tests::future_date(2)), "end": format!("{}T11:00:00Z", keel_tests::future_date(2)), "email": email
        })
    };
    vec![
        (
            "a booking request (Idempotency-Key: order-1)",
            api_event(
                "demo-1",
                "order-1",
                "POST",
                "/bookings",
                Some(booking("room-1", "ada@example.com")),
            ),
        ),
        (
            "the same request retried (replayed from DynamoDB: same booking, not booked twice)",
            api_event(
                "demo-1b",
                "order-1",
                "POST",
                "/bookings",
                Some(booking("room-1", "ada@example.com")),
            ),
        ),
        (
            "another booking request",
            api_event(
                "demo-2",
                "order-2",
                "POST",
                "/bookings",
                Some(booking("room-2", "alan@example.com")),
            ),
        ),
        (
            "the key order-1 reused for another booking (refused, 422)",
            api_event(
                "demo-2b",
                "order-1",
                "POST",
                "/bookings",
                Some(booking("room-3", "ada@example.com")),
            ),
        ),
        (
            "an overlapping booking of room-1 (refused: BOOKING_CONFLICT, 409)",
            api_event(
                "demo-2c",
                "order-5",
                "POST",
                "/bookings",
                Some(json!({
                    "resource_id": "room-1", "customer_id": "cust-8", "guests": 1,
                    "start": format!("{}T10:30:00Z", keel_tests::future_date(2)), "end": format!("{}T11:30:00Z", keel_tests::future_date(2))
                })),
            ),
        ),
        (
            "cust-7's bookings, newest first",
            api_event(
                "demo-2d",
                "",
                "GET",
                "/bookings?customer_id=cust-7&limit=10",
                None,
            ),
        ),
        (
            "a refused request (end before start)",
            api_event(
                "demo-3",
                "order-3",
                "POST",
                "/bookings",
                Some(json!({
                    "resource_id": "room-1", "customer_id": "c", "guests": 1,
                    "start": format!("{}T11:00:00Z", keel_tests::future_date(2)), "end": format!("{}T10:00:00Z", keel_tests::future_date(2))
                })),
            ),
        ),
        (
            "an event that is not an API Gateway request (the invocation fails)",
            json!({
                "headers": {"x-correlation-id": "demo-4", "idempotency-key": "order-4"},
                "body": 5,
                "guest": {"email": "eve@example.com"}
            })
            .to_string(),
        ),
    ]
}

fn print_new_lines(function: &FunctionProcess, printed: &mut usize) {
    let lines = function.stdout_lines();
    for line in &lines[*printed..] {
        println!("  {line}");
    }
    *printed = lines.len();
}

fn main() -> Result<(), HarnessError> {
    let serve = std::env::args().any(|a| a == "--serve");
    eprintln!("keel-local: building booking-api and keel-extension …");
    let built = build_binaries(&["booking-api", "keel-extension"])?;
    let (binary, extension_binary) = (built.join("booking-api"), built.join("keel-extension"));
    let moto = Moto::start()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| HarnessError::Spawn {
            name: "tokio runtime".into(),
            source,
        })?;
    let table = runtime
        // Key `id`, TTL on `expiration`: the idempotency table's definition.
        .block_on(moto.create_table("booking-idempotency", Some("expiration")))
        .map_err(|e| HarnessError::Http {
            url: moto.endpoint().to_owned(),
            reason: e.to_string(),
        })?;
    // Where failed invocations go: an SNS topic on-call's queue subscribes to, and a DLQ.
    let (topic, on_call) = runtime.block_on(moto.subscribed_topic("booking-errors"))?;
    let dlq = runtime
        .block_on(moto.create_queue("booking-errors-dlq"))
        .map_err(|e| HarnessError::Http {
            url: moto.endpoint().to_owned(),
            reason: e.to_string(),
        })?;
    // The booking functions' own resources: the bookings table, the booking topic.
    let stack = runtime.block_on(moto.booking_stack())?;
    let emulator = Emulator::start()?;
    let relay = format!("127.0.0.1:{}", free_port());
    let telemetry = format!("127.0.0.1:{}", free_port());
    let mut env = moto.env();
    env.extend(stack.env());
    env.extend(
        [
            ("KEEL_SERVICE", "booking-api"),
            ("KEEL_CORRELATION_ID_HEADER", "x-correlation-id"),
            ("KEEL_LOG_EVENT", "true"),
            ("KEEL_IDEMPOTENCY_TABLE", table.as_str()),
            ("KEEL_ERROR_TOPIC_ARN", topic.as_str()),
            ("KEEL_DLQ_URL", dlq.as_str()),
            ("KEEL_EXTENSION_ADDR", relay.as_str()),
            ("KEEL_TELEMETRY_ADDR", telemetry.as_str()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned())),
    );
    // The extension first (Lambda starts extensions before the runtime): the function hands its
    // errors to its relay, which publishes them after the response.
    let extension = emulator.start_function(&extension_binary, &env)?;
    if !wait_until(Duration::from_secs(60), || {
        std::net::TcpStream::connect(&relay).is_ok()
    }) {
        return Err(HarnessError::NotReady {
            name: "keel-extension".into(),
            waited: Duration::from_secs(20),
            output: extension.output(),
        });
    }
    let function = emulator.start_function(&binary, &env)?;
    eprintln!(
        "keel-local: moto pid {} at {}, emulator pid {}, keel-extension pid {} (relay {relay}), booking-api pid {}, Runtime API {}",
        moto.pid(),
        moto.endpoint(),
        emulator.pid(),
        extension.pid(),
        function.pid(),
        emulator.runtime_api()
    );

    let mut printed = 0;
    for (what, payload) in samples() {
        println!("\n▶ {what}");
        let answer = emulator.invoke(&payload)?;
        println!("  answer ({}): {}", answer.status, answer.body);
        // The function writes its lines before it posts the answer; give the pipe a moment.
        std::thread::sleep(Duration::from_millis(100));
        print_new_lines(&function, &mut printed);
    }

    println!("\n▶ what on-call received (the extension published the relayed error to the topic)");
    // The extension publishes after the response: it may take a moment.
    let received = runtime.block_on(moto.wait_for_messages(&on_call, 1, Duration::from_secs(30)))?;
    for message in received {
        println!("  {}", message.body().unwrap_or_default());
    }
    println!("\n▶ what the extension logged");
    for line in extension.stdout_lines() {
        println!("  {line}");
    }

    if serve {
        println!(
            "\nServing. Invoke with:\n  curl -X POST {} -d @event.json\nPress Ctrl-C to stop.",
            emulator.invoke_url()
        );
        loop {
            std::thread::sleep(Duration::from_millis(200));
            print_new_lines(&function, &mut printed);
        }
    }
    Ok(())
}
