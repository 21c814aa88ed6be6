//! keel-infra's integration tests, in one test binary: the generated files are fresh, the
//! template lints clean and fits the code, the alarms and dashboards are what CloudWatch's API
//! takes and reads back as sent, and what the YAML writer writes reads back as written.

mod cloudwatch;
mod generated;
mod lint;
mod yaml;
