//! The metrics layer, in-process: per-invocation EMF documents, limits, invalid input.

use std::time::Duration;

use crate::common::{emf, event, invoke, keel, logs};
use keel_runtime::metrics::catalog::{Emitter, Kind, MetricDef, Resolution, Unit};
use keel_runtime::{service_fn, BoxError, LambdaEvent};
use serde_json::{json, Value};
use tower::{Service, ServiceExt};
use tracing_subscriber::layer::SubscriberExt;

fn metric_names(document: &Value) -> Vec<String> {
    document["_aws"]["CloudWatchMetrics"][0]["Metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["Name"].as_str().unwrap().to_owned())
        .collect()
}

fn dimensions(document: &Value) -> Value {
    document["_aws"]["CloudWatchMetrics"][0]["Dimensions"].clone()
}

/// A function's own catalogue entry.
static BOOKING_CREATED: MetricDef = MetricDef {
    name: "BookingCreated",
    unit: Unit::Count,
    kind: Kind::Counter,
    dimensions: &["service"],
    resolution: Resolution::Standard,
    description: "Booking requests accepted",
    emitter: Emitter::Function,
    canary: false,
};

#[test]
fn an_invocation_s_metrics_become_valid_documents_when_it_ends() {
    let (keel, lines) = keel();
    let handler = service_fn(|_: LambdaEvent<Value>| async {
        metrics::counter!("Quotes").increment(2);
        metrics::counter!("Quotes").increment(3);
        metrics::gauge!("OpenSlots").set(7.0);
        metrics::gauge!("OpenSlots").set(4.0);
        metrics::histogram!("QuoteMs").record(1.0);
        metrics::histogram!("QuoteMs").record(2.5);
        metrics::counter!("Quotes", "route" => "/bookings").increment(1);
        BOOKING_CREATED.increment(1);
        Ok::<_, BoxError>(())
    });
    invoke(
        &keel,
        handler,
        vec![event("m1", json!({})), event("m2", json!({}))],
    );
    let documents = emf(&lines);
    let first: Vec<&Value> = documents
        .iter()
        .filter(|d| d["function_request_id"] == "m1")
        .collect();
    assert_eq!(first.len(), 3, "{first:#?}");

    let plain = first
        .iter()
        .find(|d| dimensions(d) == json!([["service"]]))
        .unwrap();
    assert_eq!(plain["_aws"]["CloudWatchMetrics"][0]["Namespace"], "Keel");
    assert_eq!(plain["service"], "svc");
    assert_eq!(plain["Quotes"], 5);
    assert_eq!(plain["OpenSlots"], 4);
    assert_eq!(plain["QuoteMs"], json!([1, 2.5]));
    assert_eq!(plain["BookingCreated"], 1);
    let units: Vec<&str> = plain["_aws"]["CloudWatchMetrics"][0]["Metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["Unit"].as_str().unwrap())
        .collect();
    assert_eq!(units, vec!["Count", "None", "None", "Count"]);

    let by_route = first
        .iter()
        .find(|d| dimensions(d) == json!([["service", "route"]]))
        .unwrap();
    assert_eq!(by_route["route"], "/bookings");
    assert_eq!(by_route["Quotes"], 1);

    let cold = first.iter().find(|d| d.get("ColdStart").is_some()).unwrap();
    assert_eq!(dimensions(cold), json!([["service", "function_name"]]));
    assert_eq!(metric_names(cold), vec!["ColdStart"]);
    assert_eq!(cold["function_name"], "fn");

    let second: Vec<&Value> = documents
        .iter()
        .filter(|d| d["function_request_id"] == "m2")
        .collect();
    assert_eq!(second.len(), 2, "no ColdStart on the second invocation");
    assert!(second.iter().all(|d| d.get("ColdStart").is_none()));
}

#[test]
fn concurrent_invocations_never_mix_their_metrics() {
    let (keel, lines) = keel();
    let handler = service_fn(|event: LambdaEvent<Value>| async move {
        let id = event.payload["id"].as_u64().unwrap();
        for _ in 0..id {
            metrics::counter!("Steps").increment(1);
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        metrics::gauge!("Id").set(id as f64);
        Ok::<_, BoxError>(())
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let subscriber = tracing_subscriber::registry().with(keel.log_layer());
    let _guard = tracing::subscriber::set_default(subscriber);
    runtime.block_on(async {
        let service = keel.service(handler);
        let tasks: Vec<_> = (1..=8u64)
            .map(|id| {
                let mut service = service.clone();
                tokio::spawn(async move {
                    let ready = service.ready().await.unwrap();
                    ready.call(event(&format!("c{id}"), json!({"id": id}))).await
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap().unwrap();
        }
    });
    let documents = emf(&lines);
    for id in 1..=8u64 {
        let document = documents
            .iter()
            .find(|d| d["function_request_id"] == format!("c{id}") && d.get("Steps").is_some())
            .unwrap();
        assert_eq!(document["Steps"], id);
        assert_eq!(document["Id"], id);
    }
}

#[test]
fn failing_invocations_still_write_their_metrics() {
    let (keel, lines) = keel();
    let handler = service_fn(|_: LambdaEvent<Value>| async {
        metrics::counter!("Attempts").increment(1);
        Err::<(), BoxError>("downstream failed".into())
    });
    invoke(&keel, handler, vec![event("f", json!({}))]);
    assert!(emf(&lines)
        .iter()
        .any(|d| d["Attempts"] == 1 && d["function_request_id"] == "f"));
}

#[test]
fn limits_split_large_invocations_across_documents() {
    let (keel, lines) = keel();
    let handler = service_fn(|_: LambdaEvent<Value>| async {
        for i in 0..150 {
            metrics::counter!(format!("Metric{i:03}")).increment(1);
        }
        for v in 0..250 {
            metrics::histogram!("LatencyMs").record(f64::from(v));
        }
        Ok::<_, BoxError>(())
    });
    invoke(&keel, handler, vec![event("big", json!({}))]);
    let documents: Vec<Value> = emf(&lines)
        .into_iter()
        .filter(|d| d.get("ColdStart").is_none())
        .collect();
    assert!(documents.iter().all(|d| metric_names(d).len() <= 100));
    let definitions: usize = documents.iter().map(|d| metric_names(d).len()).sum();
    assert_eq!(
        definitions,
        150 + 3,
        "LatencyMs is defined in each of its 3 chunks"
    );
    let latency: Vec<f64> = documents
        .iter()
        .filter_map(|d| d["LatencyMs"].as_array())
        .flatten()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(latency, (0..250).map(f64::from).collect::<Vec<_>>());
}

#[test]
fn metrics_that_cannot_be_valid_are_reported_and_left_out() {
    let (keel, lines) = keel();
    let handler = service_fn(|_: LambdaEvent<Value>| async {
        metrics::describe_histogram!("WaitNs", metrics::Unit::Nanoseconds, "wait");
        metrics::histogram!("WaitNs").record(5.0);
        metrics::counter!("").increment(1);
        metrics::counter!("x".repeat(256)).increment(1);
        metrics::gauge!("Ratio").set(f64::NAN);
        metrics::histogram!("Mixed").record(f64::INFINITY);
        metrics::histogram!("Mixed").record(3.0);
        let labels: Vec<metrics::Label> = (0..30)
            .map(|i| metrics::Label::new(format!("d{i}"), "v"))
            .collect();
        metrics::counter!("TooManyDimensions", labels).increment(1);
        metrics::counter!("Empty", "route" => "").increment(1);
        metrics::counter!("Fine").increment(1);
        Ok::<_, BoxError>(())
    });
    invoke(&keel, handler, vec![event("v", json!({}))]);
    let documents = emf(&lines);
    let written: Vec<String> = documents.iter().flat_map(metric_names).collect();
    assert!(
        written.contains(&"Fine".to_owned()) && written.contains(&"Mixed".to_owned()),
        "{written:?}"
    );
    for absent in ["WaitNs", "", "Ratio", "TooManyDimensions", "Empty"] {
        assert!(!written.contains(&absent.to_owned()), "{absent} was written");
    }
    assert!(documents.iter().any(|d| d["Mixed"] == 3));
    let warnings: Vec<(String, String)> = logs(&lines)
        .iter()
        .filter(|l| l["level"] == "WARN")
        .map(|l| {
            (
                l["metric"].as_str().unwrap().to_owned(),
                l["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let reported: Vec<&str> = warnings.iter().map(|(m, _)| m.as_str()).collect();
    for metric in ["WaitNs", "", "Ratio", "Mixed", "TooManyDimensions", "Empty"] {
        assert!(reported.contains(&metric), "{metric} not reported: {warnings:?}");
    }
    assert!(warnings.iter().all(|(_, reason)| !reason.is_empty()));
    assert!(logs(&lines).iter().all(|l| l["function_request_id"] == "v"));
}

#[test]
fn canary_critical_metrics_also_carry_the_function_version() {
    let (keel, lines) = keel();
    let handler = service_fn(|_: LambdaEvent<Value>| async {
        keel_runtime::metrics::catalog::keel::HTTP_SERVER_ERROR.increment(1);
        metrics::counter!("Quotes").increment(1);
        metrics::counter!("Spoofed", "function_version" => "99").increment(1);
        Ok::<_, BoxError>(())
    });
    invoke(&keel, handler, vec![event("cv", json!({}))]);
    let documents: Vec<Value> = emf(&lines)
        .into_iter()
        .filter(|d| d.get("ColdStart").is_none())
        .collect();
    assert_eq!(documents.len(), 2, "{documents:#?}");
    let plain = documents.iter().find(|d| d.get("Quotes").is_some()).unwrap();
    assert_eq!(dimensions(plain), json!([["service"]]));
    assert!(plain.get("function_version").is_none());
    let canary = documents
        .iter()
        .find(|d| d.get("HttpServerError").is_some())
        .unwrap();
    assert_eq!(
        dimensions(canary),
        json!([["service"], ["service", "function_version"]])
    );
    assert_eq!(metric_names(canary), vec!["HttpServerError"]);
    assert_eq!(canary["function_version"], "7");

    // A label cannot pose as the version.
    let warned: Vec<Value> = logs(&lines)
        .into_iter()
        .filter(|l| l["level"] == "WARN" && l["metric"] == "Spoofed")
        .collect();
    assert_eq!(warned.len(), 1, "{warned:?}");
    assert!(warned[0]["reason"].as_str().unwrap().contains("reserved"));
}

#[test]
fn high_resolution_metrics_are_marked() {
    let (keel, lines) = keel();
    let keel = keel.metrics(|m| m.high_resolution("QuoteLatencyMs"));
    let handler = service_fn(|_: LambdaEvent<Value>| async {
        metrics::histogram!("QuoteLatencyMs").record(12.0);
        metrics::histogram!("Other").record(1.0);
        Ok::<_, BoxError>(())
    });
    invoke(&keel, handler, vec![event("h", json!({}))]);
    let document = emf(&lines)
        .into_iter()
        .find(|d| d.get("QuoteLatencyMs").is_some())
        .unwrap();
    let definitions = &document["_aws"]["CloudWatchMetrics"][0]["Metrics"];
    assert_eq!(
        definitions[0],
        json!({"Name": "QuoteLatencyMs", "Unit": "None", "StorageResolution": 1})
    );
    assert_eq!(definitions[1], json!({"Name": "Other", "Unit": "None"}));
}

#[test]
fn values_recorded_outside_an_invocation_are_written_at_once() {
    let outside = crate::common::outside_invocations();
    metrics::counter!("InitWork", "phase" => "outside-test").increment(1);
    let documents: Vec<Value> = outside
        .lines()
        .iter()
        .map(|l| keel_tests::emf_spec::validate_line(l).unwrap())
        .filter(|d| d["phase"] == "outside-test")
        .collect();
    assert_eq!(documents.len(), 1);
    assert_eq!(documents[0]["InitWork"], 1);
    assert_eq!(documents[0]["service"], "outside");
    assert!(documents[0].get("function_request_id").is_none());
}

#[test]
fn namespaces_cloudwatch_refuses_are_refused_up_front() {
    let config = keel_runtime::metrics::MetricsConfig::new("svc");
    assert!(config.clone().namespace("AWS/Lambda").is_err());
    assert!(config.clone().namespace("").is_err());
    assert!(config.namespace("Keel/Bookings").is_ok());
}
