//! The booking worker's own metrics (functions/booking-worker).

use keel_catalog::{Emitter, Kind, MetricDef, Resolution, Unit};

/// A PENDING booking the worker confirmed.
pub static BOOKING_CONFIRMED: MetricDef = MetricDef {
    name: "BookingConfirmed",
    unit: Unit::Count,
    kind: Kind::Counter,
    dimensions: &["service"],
    resolution: Resolution::Standard,
    description: "Bookings confirmed by the booking worker (PENDING to CONFIRMED)",
    emitter: Emitter::Function,
    canary: false,
};

/// A PENDING booking the worker rejected (booking-worker's `bookings::Rejection`).
pub static BOOKING_REJECTED: MetricDef = MetricDef {
    name: "BookingRejected",
    unit: Unit::Count,
    kind: Kind::Counter,
    dimensions: &["service", "reason"],
    resolution: Resolution::Standard,
    description:
        "Bookings rejected by the booking worker (PENDING to REJECTED, their slot freed), by reason: \
                  resource_closed (the resource takes no more bookings)",
    emitter: Emitter::Function,
    canary: false,
};

/// A request the worker did not need to confirm (booking-worker's `bookings::Skipped`).
pub static BOOKING_CONFIRMATION_SKIPPED: MetricDef = MetricDef {
    name: "BookingConfirmationSkipped",
    unit: Unit::Count,
    kind: Kind::Counter,
    dimensions: &["service", "reason"],
    resolution: Resolution::Standard,
    description: "Booking requests left as they were, by reason: already_confirmed and already_rejected (a duplicate message), \
                  cancelled_before_confirmation (cancelled while the request waited in the queue)",
    emitter: Emitter::Function,
    canary: false,
};

/// A record the worker failed (booking-worker's `RecordError::reason`).
pub static BOOKING_CONFIRMATION_FAILED: MetricDef = MetricDef {
    name: "BookingConfirmationFailed",
    unit: Unit::Count,
    kind: Kind::Counter,
    dimensions: &["service", "reason"],
    resolution: Resolution::Standard,
    description: "Queue records the booking worker failed, by reason: malformed_message, booking_not_found, \
                  unknown_status and resource_mismatch are retried to the dead-letter queue; store_throttled and \
                  store_unavailable and resource_contended are retried (to the dead-letter queue after the queue's maxReceiveCount); store_rejected means the \
                  worker's table or permissions are wrong",
    emitter: Emitter::Function,
    canary: false,
};

/// Time from the booking request to its confirmation.
pub static BOOKING_CONFIRMATION_LAG_MS: MetricDef = MetricDef {
    name: "BookingConfirmationLagMs",
    unit: Unit::Milliseconds,
    kind: Kind::Histogram,
    dimensions: &["service"],
    resolution: Resolution::Standard,
    description: "Time from a booking's created_at to its confirmation by the booking worker",
    emitter: Emitter::Function,
    canary: false,
};

/// Every metric the booking worker emits besides Keel's own.
pub static CATALOGUE: &[&MetricDef] = &[
    &BOOKING_CONFIRMED,
    &BOOKING_REJECTED,
    &BOOKING_CONFIRMATION_SKIPPED,
    &BOOKING_CONFIRMATION_FAILED,
    &BOOKING_CONFIRMATION_LAG_MS,
];

#[cfg(test)]
mod tests {
    #[test]
    fn the_catalogue_can_be_published_beside_keels() {
        keel_catalog::keel::check_beside(super::CATALOGUE).unwrap();
    }
}
