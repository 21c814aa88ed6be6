//! `keel-infra`: rewrites the generated files (`infra/template.yaml`), or with `--check` fails
//! when one is stale. See the library docs.

use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    // infra/ is one level under the workspace root.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let result = match std::env::args().nth(1).as_deref() {
        None => keel_infra::write(&root).map(|changed| {
            for path in &changed {
                println!("wrote {}", path.display());
            }
            if changed.is_empty() {
                println!("generated files are up to date");
            }
        }),
        Some("--check") => keel_infra::check(&root).map(|()| println!("generated files are up to date")),
        Some(other) => {
            eprintln!("keel-infra: unknown argument {other:?}; usage: keel-infra [--check]");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("keel-infra: {error}");
            ExitCode::FAILURE
        }
    }
}
