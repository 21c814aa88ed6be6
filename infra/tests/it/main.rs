//! keel-infra's integration tests, in one test binary: the generated files are fresh, the
//! template lints clean and fits the code, the dashboards and alarms fit CloudWatch and the
//! metric catalogue, and what the YAML writer writes reads back as written.

mod dashboards;
mod generated;
mod lint;
mod yaml;
