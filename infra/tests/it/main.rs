//! keel-infra's integration tests, in one test binary: the generated files are fresh, and the
//! template lints clean and fits the code.

mod generated;
mod lint;
