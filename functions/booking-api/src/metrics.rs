//! The booking API's own metrics: its entries in the metric catalogue, which Keel writes with
//! their units and from which dashboards and alarms are generated.

use keel_runtime::metrics::catalog::{Emitter, Kind, MetricDef, Resolution, Unit};

/// A booking request accepted by the booking API.
pub(crate) static BOOKING_CREATED: MetricDef = MetricDef {
    name: "BookingCreated",
    unit: Unit::Count,
    kind: Kind::Counter,
    dimensions: &["service"],
    resolution: Resolution::Standard,
    description: "Booking requests accepted by the booking API",
    emitter: Emitter::Function,
};

/// Every metric the booking API emits besides Keel's own.
pub(crate) static CATALOGUE: &[&MetricDef] = &[&BOOKING_CREATED];

#[cfg(test)]
mod tests {
    #[test]
    fn the_catalogue_can_be_published_beside_keels() {
        let mut all = keel_runtime::metrics::catalog::keel::ALL.to_vec();
        all.extend_from_slice(super::CATALOGUE);
        keel_runtime::metrics::catalog::check(&all).unwrap();
    }
}
