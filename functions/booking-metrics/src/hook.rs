//! The canary hook's own metrics (functions/canary-hook).

use keel_catalog::{Emitter, Kind, MetricDef, Resolution, Unit};

/// A check of the new version that failed (the deployment is then reported `Failed`).
pub static CANARY_CHECK_FAILED: MetricDef = MetricDef {
    name: "CanaryCheckFailed",
    unit: Unit::Count,
    kind: Kind::Counter,
    dimensions: &["service", "check"],
    resolution: Resolution::Standard,
    description: "Pre-traffic checks of a new booking API version that failed, by check (health, \
                  dry_run_booking): the deployment was reported Failed and rolls back",
    emitter: Emitter::Function,
    canary: false,
};

/// Every metric the canary hook emits besides Keel's own.
pub static CATALOGUE: &[&MetricDef] = &[&CANARY_CHECK_FAILED];

#[cfg(test)]
mod tests {
    #[test]
    fn the_catalogue_can_be_published_beside_keels() {
        keel_catalog::keel::check_beside(super::CATALOGUE).unwrap();
    }
}
