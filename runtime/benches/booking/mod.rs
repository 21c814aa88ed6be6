//! The booking document both benchmarks send: about 1 KB of JSON, and the type a handler reads
//! it into.

use serde::Deserialize;
use serde_json::{json, Value};

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
