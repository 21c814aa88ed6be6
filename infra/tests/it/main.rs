//! keel-infra's integration tests, in one test binary: the generated files are fresh, the
//! metric catalogue, and what the YAML writer writes reads back as written.
//! takes and reads back as sent, and what the YAML writer writes reads back as written.
//! template lints clean and fits the code, the alarms and dashboards are what CloudWatch's API
//! template lints clean and fits the code, the dashboards and alarms fit CloudWatch and the
mod cloudwatch;
mod dashboards;
mod generated;
mod lint;
mod yaml;
