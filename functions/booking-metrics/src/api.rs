//! The booking API's own metrics (functions/booking-api).

use keel_catalog::{Emitter, Kind, MetricDef, Resolution, Unit};

const fn counter(name: &'static str, description: &'static str) -> MetricDef {
    MetricDef {
        name,
        unit: Unit::Count,
        kind: Kind::Counter,
        dimensions: &["service"],
        resolution: Resolution::Standard,
        description,
        emitter: Emitter::Function,
        canary: false,
    }
}

/// A booking stored (`PENDING`) and announced.
pub static BOOKING_CREATED: MetricDef = counter(
    "BookingCreated",
    "Bookings stored and announced by the booking API",
);

/// A booking refused because its time overlaps another booking of the resource.
pub static BOOKING_CONFLICT: MetricDef = counter(
    "BookingConflict",
    "Booking requests refused because the resource was already booked at that time (HTTP 409)",
);

/// A booking cancelled by its customer.
pub static BOOKING_CANCELLED: MetricDef = counter(
    "BookingCancelled",
    "Bookings cancelled (their time freed for others)",
);

/// A request refused for a field that breaks the rules.
pub static VALIDATION_FAILED: MetricDef = counter(
    "BookingValidationFailed",
    "Requests refused as invalid: a field breaking the rules, or no Idempotency-Key (HTTP 400)",
);

/// Every metric the booking API emits besides Keel's own. (Its 5xx answers are counted in
/// Keel's `HttpServerError`, `keel_catalog::keel::HTTP_SERVER_ERROR`.)
pub static CATALOGUE: &[&MetricDef] = &[
    &BOOKING_CREATED,
    &BOOKING_CONFLICT,
    &BOOKING_CANCELLED,
    &VALIDATION_FAILED,
];

#[cfg(test)]
mod tests {
    #[test]
    fn the_catalogue_can_be_published_beside_keels() {
        keel_catalog::keel::check_beside(super::CATALOGUE).unwrap();
    }
}
