//! The booking functions' own metrics: their entries in the metric catalogue (see
//! [`keel_catalog`]), beside Keel's own (`keel_catalog::keel`).
//!
//! Each function hands its module's [`CATALOGUE`](api::CATALOGUE) to Keel
//! (`MetricsConfig::catalogue`), which then writes the metrics with their units, and emits each
//! metric through its entry. The entries live in this crate, apart from the functions, so that a
//! generator of dashboards and alarms reads them without compiling the functions and the AWS
//! SDK they depend on: the crate depends on `keel-catalog` alone.
//!
//! ```
//! use booking_metrics::{api, hook, worker};
//!
//! for catalogue in [api::CATALOGUE, worker::CATALOGUE, hook::CATALOGUE] {
//!     keel_catalog::keel::check_beside(catalogue).unwrap();
//! }
//! assert_eq!(api::BOOKING_CREATED.name, "BookingCreated");
//! ```

pub mod api;
pub mod hook;
pub mod worker;
