//! keel-infra's integration tests, in one test binary: the generated files are fresh, the
//! template lints clean and fits the code, the dashboards and alarms fit the metric catalogue and
//! CloudWatch's API (validated offline, and taken and read back by moto as sent), and what the
//! YAML writer writes reads back as written.

mod cloudwatch;
mod dashboards;
mod generated;
mod lint;
mod release;
mod replay;
mod yaml;
