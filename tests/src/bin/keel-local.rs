//! Runs Keel's main job locally: the booking API, wrapped by Keel, served by the Lambda emulator.
//!
//! It builds `booking-api`, starts the cargo-lambda emulator on a free 127.0.0.1 port, starts the
//! function against it, sends a few booking requests (accepted, refused, malformed) and prints
//! each answer with the log lines and EMF documents the function wrote for it — what Lambda
//! would send to CloudWatch Logs. With `--serve` it then keeps running for your own requests
//! until interrupted.
//!
//! `scripts/local.sh` installs the tools and runs this.

use std::time::Duration;

use keel_tests::{build_binary, Emulator, FunctionProcess, HarnessError};
use serde_json::{json, Value};

fn api_event(correlation_id: &str, method: &str, path: &str, body: Option<Value>) -> String {
    json!({
        "version": "2.0",
        "routeKey": format!("{method} {path}"),
        "rawPath": path,
        "headers": {"content-type": "application/json", "x-correlation-id": correlation_id},
        "requestContext": {"http": {"method": method, "path": path}},
        "body": body.map(|b| b.to_string()),
        "isBase64Encoded": false
    })
    .to_string()
}

fn samples() -> Vec<(&'static str, String)> {
    let booking = |resource: &str, email: &str| {
        json!({
            "resource_id": resource, "customer_id": "cust-7", "seats": 2,
            "start": "2026-12-01T10:00:00Z", "end": "2026-12-01T11:00:00Z", "email": email
        })
    };
    vec![
        (
            "a booking request",
            api_event("demo-1", "POST", "/bookings", Some(booking("room-1", "ada@example.com"))),
        ),
        (
            "another booking request",
            api_event("demo-2", "POST", "/bookings", Some(booking("room-2", "alan@example.com"))),
        ),
        (
            "a refused request (end before start)",
            api_event(
                "demo-3",
                "POST",
                "/bookings",
                Some(json!({"resource_id": "room-1", "customer_id": "c", "start": "b", "end": "a"})),
            ),
        ),
        (
            "an event that is not an API Gateway request (the invocation fails)",
            json!({"headers": {"x-correlation-id": "demo-4"}, "body": 5, "guest": {"email": "eve@example.com"}})
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
    eprintln!("keel-local: building booking-api …");
    let binary = build_binary("booking-api")?;
    let emulator = Emulator::start()?;
    let env: Vec<(String, String)> = [
        ("KEEL_CORRELATION_ID_HEADER", "x-correlation-id"),
        ("KEEL_LOG_EVENT", "true"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let function = emulator.start_function(&binary, &env)?;
    eprintln!(
        "keel-local: emulator pid {}, booking-api pid {}, Runtime API {}",
        emulator.pid(),
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
