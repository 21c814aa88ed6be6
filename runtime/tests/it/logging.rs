//! The logging layer, in-process: context fields, buffering, sampling, redaction, correlation ids.

use crate::common::{event, invoke, keel, logs, of_request};
use keel_runtime::logging::{CorrelationId, LogFormat};
use keel_runtime::{service_fn, BoxError, LambdaEvent};
use serde_json::{json, Value};
use tracing_subscriber::layer::SubscriberExt;

async fn chatty(event: LambdaEvent<Value>) -> Result<String, BoxError> {
    tracing::debug!(step = 1, "loading");
    // As the AWS SDK describes each request: kept out of the buffer (heard at TRACE only).
    tracing::debug!(target: "aws_smithy_runtime::client::orchestrator", "entering 'transmit' phase");
    tracing::debug!(step = 2, "pricing");
    tracing::info!(seats = 2, "booking priced");
    if event.payload["fail"] == true {
        return Err("pricing service unavailable".into());
    }
    Ok("ok".into())
}

#[test]
fn every_line_carries_the_invocation_context() {
    let (keel, lines) = keel();
    invoke(
        &keel,
        service_fn(chatty),
        vec![event("req-1", json!({})), event("req-2", json!({}))],
    );
    let logs = logs(&lines);
    assert_eq!(logs.len(), 2, "{logs:#?}");
    for (line, request_id, cold) in [(&logs[0], "req-1", true), (&logs[1], "req-2", false)] {
        let timestamp = line["timestamp"].as_str().unwrap();
        assert_eq!(timestamp.len(), "2026-01-01T00:00:00.000Z".len(), "{timestamp}");
        assert!(timestamp.ends_with('Z'));
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["message"], "booking priced");
        assert_eq!(line["service"], "svc");
        assert_eq!(line["function_name"], "fn");
        assert_eq!(line["function_version"], "7");
        assert_eq!(line["function_memory_size"], 256);
        assert_eq!(line["function_request_id"], request_id);
        assert_eq!(line["xray_trace_id"], format!("Root=1-{request_id}"));
        assert_eq!(line["cold_start"], cold);
        assert_eq!(line["seats"], 2);
    }
}

#[test]
fn a_handler_span_adds_its_fields_and_the_outer_value_of_a_repeated_name_wins() {
    async fn in_span(_: LambdaEvent<Value>) -> Result<String, BoxError> {
        let span = tracing::info_span!("pricing", step = "quote", cold_start = "overridden");
        let _entered = span.enter();
        tracing::info!(seats = 2, "booking priced");
        Ok("ok".into())
    }
    let (keel, lines) = keel();
    invoke(&keel, service_fn(in_span), vec![event("req-1", json!({}))]);
    let logs = logs(&lines);
    assert_eq!(logs.len(), 1, "{logs:#?}");
    let line = &logs[0];
    assert_eq!(
        (
            &line["step"],
            &line["cold_start"],
            &line["function_request_id"],
            &line["seats"]
        ),
        (&json!("quote"), &json!(true), &json!("req-1"), &json!(2)),
        "{line}"
    );
}

#[test]
fn debug_lines_are_written_only_for_a_failing_invocation() {
    let (keel, lines) = keel();
    let results = invoke(
        &keel,
        service_fn(chatty),
        vec![
            event("ok", json!({})),
            event("bad", json!({"fail": true})),
            event("ok-2", json!({})),
        ],
    );
    assert!(results[0].is_ok() && results[1].is_err() && results[2].is_ok());
    let logs = logs(&lines);
    for request_id in ["ok", "ok-2"] {
        assert!(of_request(&logs, request_id)
            .iter()
            .all(|l| l["level"] != "DEBUG"));
    }
    let failing: Vec<(&str, &str)> = of_request(&logs, "bad")
        .iter()
        .map(|l| (l["level"].as_str().unwrap(), l["message"].as_str().unwrap()))
        .collect();
    assert_eq!(
        failing,
        vec![
            ("INFO", "booking priced"),
            ("DEBUG", "loading"),
            ("DEBUG", "pricing"),
            ("ERROR", "invocation failed"),
        ]
    );
    let error = of_request(&logs, "bad").pop().unwrap().clone();
    assert_eq!(error["error.type"], "Error");
    assert_eq!(error["error.message"], "pricing service unavailable");
}

#[test]
fn a_full_buffer_keeps_the_newest_lines_and_says_how_many_were_evicted() {
    let (keel, lines) = keel();
    let keel = keel.logs(|l| l.debug_buffer(2));
    let handler = service_fn(|_: LambdaEvent<Value>| async {
        for step in 1..=5 {
            tracing::debug!(step, "step");
        }
        tracing::error!("gave up");
        Ok::<_, BoxError>(())
    });
    invoke(&keel, handler, vec![event("r", json!({}))]);
    let logs = logs(&lines);
    let summary: Vec<String> = logs
        .iter()
        .map(|l| {
            format!(
                "{} {}",
                l["level"].as_str().unwrap(),
                l.get("step").map_or(String::new(), Value::to_string)
            )
        })
        .collect();
    assert_eq!(summary, vec!["WARN ", "DEBUG 4", "DEBUG 5", "ERROR "]);
    assert!(logs[0]["message"]
        .as_str()
        .unwrap()
        .starts_with("3 earlier DEBUG lines"));
    assert_eq!(logs[0]["function_request_id"], "r");
}

#[test]
fn sampled_invocations_log_debug_at_once() {
    let (keel, lines) = keel();
    let keel = keel.logs(|l| l.sample_rate(1.0));
    invoke(&keel, service_fn(chatty), vec![event("s", json!({}))]);
    let levels: Vec<Value> = logs(&lines).iter().map(|l| l["level"].clone()).collect();
    assert_eq!(levels, vec!["DEBUG", "DEBUG", "INFO"]);
}

#[test]
fn without_buffer_or_sampling_debug_lines_are_dropped() {
    let (keel, lines) = keel();
    let keel = keel.logs(|l| l.debug_buffer(0));
    invoke(&keel, service_fn(chatty), vec![event("d", json!({"fail": true}))]);
    assert!(logs(&lines).iter().all(|l| l["level"] != "DEBUG"));
}

#[test]
fn sensitive_fields_never_reach_the_output() {
    let (keel, lines) = keel();
    let keel = keel.log_events();
    let handler = service_fn(|_: LambdaEvent<Value>| async {
        tracing::info!(email = "guest@example.com", "contact");
        tracing::info!(payload = %json!({"guest": {"card_number": "4111111111111111", "name": "Ada"}}), "payment");
        tracing::info!(body = r#"{"phone":"+44 20 7946 0000"}"#, "raw body");
        Err::<(), BoxError>("declined".into())
    });
    let event_payload =
        json!({"headers": {"x": "1"}, "body": "{\"email\":\"other@example.com\",\"seats\":1}"});
    invoke(&keel, handler, vec![event("p", event_payload)]);
    let all = lines.lines().join("\n");
    for secret in [
        "guest@example.com",
        "4111111111111111",
        "+44 20 7946 0000",
        "other@example.com",
    ] {
        assert!(!all.contains(secret), "{secret} leaked:\n{all}");
    }
    let logs = logs(&lines);
    assert_eq!(logs[0]["email"], "***");
    assert_eq!(
        logs[1]["payload"]["guest"],
        json!({"card_number": "***", "name": "Ada"})
    );
    assert_eq!(logs[2]["body"], json!({"phone": "***"}));
    let logged_event = logs
        .iter()
        .find(|l| l["message"] == "incoming event")
        .expect("event logged");
    assert_eq!(logged_event["event"]["body"], "{\"email\":\"***\",\"seats\":1}");
}

#[test]
fn correlation_ids_come_from_a_header_or_a_pointer() {
    let (keel, lines) = keel();
    let by_header = keel
        .clone()
        .correlation_id(CorrelationId::Header("X-Correlation-Id".into()));
    invoke(
        &by_header,
        service_fn(chatty),
        vec![
            event("h", json!({"headers": {"x-correlation-id": "corr-42"}})),
            event("missing", json!({"headers": {}})),
            event("not-object", json!("just a string")),
        ],
    );
    let by_pointer = keel.correlation_id(CorrelationId::Pointer("/detail/order".into()));
    invoke(
        &by_pointer,
        service_fn(chatty),
        vec![event("p", json!({"detail": {"order": 1234}}))],
    );

    let logs = logs(&lines);
    assert!(of_request(&logs, "h")
        .iter()
        .all(|l| l["correlation_id"] == "corr-42"));
    assert!(of_request(&logs, "p")
        .iter()
        .all(|l| l["correlation_id"] == "1234"));
    let warning = |id: &str| {
        of_request(&logs, id)
            .into_iter()
            .find(|l| l["level"] == "WARN")
            .map(|l| l["message"].as_str().unwrap().to_owned())
    };
    assert_eq!(
        warning("missing").as_deref(),
        Some("no correlation id for this invocation: the event has no header `X-Correlation-Id`")
    );
    assert_eq!(
        warning("not-object").as_deref(),
        Some("no correlation id for this invocation: the event is a JSON string, not an object")
    );
    // The invocation still ran and answered.
    assert!(of_request(&logs, "not-object")
        .iter()
        .any(|l| l["message"] == "booking priced"));
}

#[derive(serde::Deserialize)]
struct Booking {
    #[allow(dead_code)]
    seats: u32,
}

#[test]
fn an_event_of_the_wrong_shape_is_a_clear_error_and_the_handler_does_not_run() {
    let (keel, lines) = keel();
    let handler = service_fn(|_: LambdaEvent<Booking>| async {
        tracing::info!("handler ran");
        Ok::<_, BoxError>(())
    });
    let results = invoke(&keel, handler, vec![event("bad", json!({"seats": "two"}))]);
    let error = results.into_iter().next().unwrap().unwrap_err();
    assert_eq!(error.error_type(), "Keel.InvalidEvent");
    assert!(error.to_string().contains("at `seats`"), "{error}");
    let logs = logs(&lines);
    assert!(logs.iter().all(|l| l["message"] != "handler ran"));
    let failure = logs.iter().find(|l| l["level"] == "ERROR").unwrap();
    assert_eq!(failure["error.type"], "Keel.InvalidEvent");
}

#[test]
fn a_panicking_handler_is_logged_with_its_buffered_lines() {
    let (keel, lines) = keel();
    let handler = service_fn(|_: LambdaEvent<Value>| async {
        tracing::debug!("about to fail");
        metrics::counter!("BeforePanic").increment(1);
        if true {
            panic!("handler bug");
        }
        Ok::<_, BoxError>(())
    });
    let results = invoke(&keel, handler, vec![event("boom", json!({}))]);
    let error = results.into_iter().next().unwrap().unwrap_err();
    assert_eq!(error.error_type(), "Keel.HandlerPanicked");
    let logs = logs(&lines);
    let messages: Vec<&str> = of_request(&logs, "boom")
        .iter()
        .map(|l| l["message"].as_str().unwrap())
        .collect();
    assert_eq!(messages, vec!["about to fail", "invocation failed"]);
    let failure = of_request(&logs, "boom")[1];
    assert_eq!(failure["error.type"], "Keel.HandlerPanicked");
    assert!(failure["error.message"].as_str().unwrap().contains("handler bug"));
    let documents = crate::common::emf(&lines);
    assert!(documents
        .iter()
        .any(|d| d["BeforePanic"] == 1 && d["function_request_id"] == "boom"));
}

#[test]
fn the_runtimes_echo_of_a_handler_error_is_not_a_second_error_line() {
    let (keel, lines) = keel();
    let subscriber = tracing_subscriber::registry().with(keel.log_layer());
    tracing::subscriber::with_default(subscriber, || {
        // What lambda_runtime logs after Keel's own line, outside the invocation's context.
        tracing::error!(target: "lambda_runtime::layers::panic", "{}", "InvocationError { error_type: \"Booking.Failed\", message: \"no room\" }");
        tracing::error!(target: "lambda_runtime::layers::api_client", "Lambda Runtime API request failed");
    });
    let logs = logs(&lines);
    assert_eq!(logs.len(), 1, "{logs:?}");
    assert_eq!(
        logs[0]["message"], "Lambda Runtime API request failed",
        "the runtime's own failures stay"
    );
}

#[test]
fn text_format_is_readable() {
    let (keel, lines) = keel();
    let keel = keel.logs(|l| l.format(LogFormat::Text));
    invoke(&keel, service_fn(chatty), vec![event("t", json!({}))]);
    let text: Vec<String> = lines
        .lines()
        .into_iter()
        .filter(|l| !l.starts_with('{'))
        .collect();
    assert_eq!(text.len(), 1, "{text:?}");
    assert!(text[0].contains(" INFO  booking priced "), "{}", text[0]);
    assert!(text[0].contains("function_request_id=t"), "{}", text[0]);
    assert!(text[0].contains("seats=2"), "{}", text[0]);
}
