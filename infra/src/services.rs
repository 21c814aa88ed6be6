//! The services the template deploys, as dashboards and alarms see them: each one's name (its
//! `service` dimension and binary), the logical id of its function and the metrics it emits —
//! Keel's catalogue and its own entries.

use keel_catalog::MetricDef;

/// One deployed function wrapped by Keel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Service {
    /// Its binary under `functions/` and its `KEEL_SERVICE` (the `service` dimension).
    pub name: &'static str,
    /// The stem of its logical ids: `<id>Function`, `<id>Role`, alarms `<id>…Alarm`.
    pub id: &'static str,
    /// Its own catalogue entries, besides Keel's.
    pub own: &'static [&'static MetricDef],
    /// Whether it answers HTTP requests (its 5xx answers are a canary signal).
    pub http: bool,
    /// Whether it guards its invocations with a concurrency guard.
    pub guarded: bool,
}

impl Service {
    /// The logical id of its `AWS::Serverless::Function`.
    pub fn function(&self) -> String {
        format!("{}Function", self.id)
    }

    /// Every metric it emits: Keel's catalogue (but what it cannot emit: HTTP answers when it
    /// answers none, concurrency slots when it has no guard), then its own entries.
    pub fn metrics(&self) -> impl Iterator<Item = &'static MetricDef> + '_ {
        keel_catalog::keel::ALL
            .iter()
            .copied()
            .filter(|def| self.emits(def))
            .chain(self.own.iter().copied())
    }

    /// Whether it can emit Keel's metric `def`.
    pub fn emits(&self, def: &MetricDef) -> bool {
        use keel_catalog::keel::{
            CONCURRENCY_ACQUIRED, CONCURRENCY_REJECTED, CONCURRENCY_WAIT_MS, HTTP_SERVER_ERROR,
        };
        if *def == HTTP_SERVER_ERROR {
            return self.http;
        }
        if [&CONCURRENCY_ACQUIRED, &CONCURRENCY_REJECTED, &CONCURRENCY_WAIT_MS].contains(&def) {
            return self.guarded;
        }
        true
    }
}

/// The booking API (HTTP API).
pub const BOOKING_API: Service = Service {
    name: "booking-api",
    id: "BookingApi",
    own: booking_metrics::api::CATALOGUE,
    http: true,
    guarded: true,
};

/// The booking worker (booking queue).
pub const BOOKING_WORKER: Service = Service {
    name: "booking-worker",
    id: "BookingWorker",
    own: booking_metrics::worker::CATALOGUE,
    http: false,
    guarded: false,
};

/// The canary hook (CodeDeploy `PreTraffic` hook of the booking API).
pub const CANARY_HOOK: Service = Service {
    name: "canary-hook",
    id: "CanaryHook",
    own: booking_metrics::hook::CATALOGUE,
    http: false,
    guarded: false,
};

/// The services released through CodeDeploy (a weighted alias, canary alarms), each with a
/// dashboard and alarms of its own.
pub const RELEASED: [Service; 2] = [BOOKING_API, BOOKING_WORKER];
