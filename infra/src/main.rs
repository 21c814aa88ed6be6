//! `keel-infra`: rewrites the generated files (`infra/template.yaml`, `alarms/`, `dashboards/`),
//! or with `--check` fails when one is stale; `--version-inputs <service>` prints what the
//! template says the service's versions are made of (`scripts/deploy.sh` digests it). See the
//! library docs.

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
        Some("--version-inputs") => {
            let service = std::env::args().nth(2).unwrap_or_default();
            match keel_infra::template::version_inputs(&service) {
                Some(inputs) => {
                    print!("{inputs}");
                    Ok(())
                }
                None => {
                    eprintln!("keel-infra: the template releases no service {service:?} (booking-api, booking-worker)");
                    return ExitCode::from(2);
                }
            }
        }
        Some(other) => {
            eprintln!("keel-infra: unknown argument {other:?}; usage: keel-infra [--check | --version-inputs <service>]");
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
