//! The checked-in generated files are what the code generates.

use std::path::Path;

#[test]
fn generated_files_are_fresh() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    if let Err(error) = keel_infra::check(&root) {
        panic!("{error}");
    }
}
