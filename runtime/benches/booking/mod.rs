//! What both benchmarks share: the booking document they send (about 1 KB of JSON) and the type
//! a handler reads it into, the Keel of the booking API, the invocation's context and the
//! runtime the invocations run on.

use keel_runtime::output::Output;
use keel_runtime::{Context, FunctionInfo, Keel};
use serde::Deserialize;
use serde_json::{json, Value};

/// How many records the store holds at most in first-request benchmarks: a busy execution
/// environment's worth (about three requests a second over the default one-hour TTL).
pub(crate) const STORE_RECORDS: u64 = 10_000;

/// The booking API's Keel (logs and EMF) writing to `output`.
pub(crate) fn booking_api(output: Output) -> Keel {
    let function = FunctionInfo {
        name: "booking-api".into(),
        version: "$LATEST".into(),
        memory_size: 1024,
    };
    Keel::new("booking-api")
        .output(output)
        .logs(|l| l.function(function.clone()))
        .metrics(|m| m.function(function))
}

/// The context of a live invocation (its deadline far ahead).
pub(crate) fn live() -> Context {
    let mut context = Context::default();
    context.request_id = "8476a536-e9f4-11e8-9739-2dfe598c3fcd".into();
    context.xray_trace_id =
        Some("Root=1-5bef4de7-ad49b0e87f6ef6c87fc2e700;Parent=9a9197af755a6419;Sampled=1".into());
    context.deadline = u64::MAX / 2;
    context
}

/// A single-threaded runtime, as one invocation at a time runs.
pub(crate) fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime")
}

/// A booking, as the handler reads it.
#[derive(Deserialize)]
#[allow(dead_code)]
pub(crate) struct Booking {
    pub(crate) booking_id: String,
    pub(crate) resource_id: String,
    pub(crate) customer_id: String,
    pub(crate) start: String,
    pub(crate) end: String,
    pub(crate) seats: u32,
    pub(crate) email: String,
    pub(crate) notes: String,
    pub(crate) extras: Vec<Extra>,
}

/// An extra booked with it.
#[derive(Deserialize)]
#[allow(dead_code)]
pub(crate) struct Extra {
    pub(crate) code: String,
    pub(crate) quantity: u32,
    pub(crate) price_cents: u64,
}

/// The booking document's JSON text (between 900 and 1,400 bytes).
pub(crate) fn booking_json() -> String {
    let extras: Vec<Value> = (0..8)
        .map(|i| json!({"code": format!("EXTRA-{i:02}"), "quantity": i + 1, "price_cents": 1250 * (i + 1)}))
        .collect();
    let document = json!({
        "booking_id": "bk-6f1c2d3e4a5b6c7d",
        "resource_id": "room-042",
        "customer_id": "cust-1234567890",
        "start": "2026-12-01T10:00:00Z",
        "end": "2026-12-01T12:00:00Z",
        "seats": 4,
        "email": "guest@example.com",
        "notes": "Window seat if possible; arriving by train, may be 10 minutes late. ".repeat(4),
        "extras": extras,
    })
    .to_string();
    assert!((900..1400).contains(&document.len()), "{} bytes", document.len());
    document
}
