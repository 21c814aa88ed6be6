//! keel-infra's integration tests, in one test binary: the generated files are fresh, the
//! template lints clean and fits the code, and what the YAML writer writes reads back as written.

mod generated;
mod lint;
mod yaml;
