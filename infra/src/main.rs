//! `keel-infra`: rewrites the generated files (`infra/template.yaml`, `alarms/`, `dashboards/`),
//! or with `--check` fails when one is stale; `--version-inputs <service>` prints what the
//! template says the service's versions are made of (`scripts/deploy.sh` digests it);
//! `canary-replay` replays a version's EMF through a service's canary alarms (exit code 0:
//! PROMOTE, 1: ROLLBACK, 2: the replay could not run). See the library docs.

use std::path::Path;
use std::process::ExitCode;

use keel_infra::replay::canary::Source;

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
        Some("canary-replay") => return canary_replay(std::env::args().skip(2)),
        Some(other) => {
            eprintln!(
                "keel-infra: unknown argument {other:?}; usage: keel-infra [--check | --version-inputs <service> | \
                 canary-replay …]"
            );
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

const REPLAY_USAGE: &str = "usage: keel-infra canary-replay --alarms alarms/<service>.json --version <V> \
[--window-minutes N (5)] [--json FILE|-] [--charts DIR] <EMF file|->...";

/// `keel-infra canary-replay`: see [`keel_infra::replay`].
fn canary_replay(args: impl Iterator<Item = String>) -> ExitCode {
    let outcome = match replay_args(args) {
        Ok(args) => run_replay(args),
        Err(error) => Err(format!("{error}\n{REPLAY_USAGE}")),
    };
    match outcome {
        Ok(promoted) => ExitCode::from(if promoted { 0 } else { 1 }),
        Err(error) => {
            eprintln!("keel-infra canary-replay: {error}");
            ExitCode::from(2)
        }
    }
}

/// What `canary-replay` was asked.
struct ReplayArgs {
    alarms_path: String,
    version: String,
    window_minutes: u64,
    json_out: Option<String>,
    charts: Option<String>,
    inputs: Vec<String>,
}

/// The command line of `canary-replay`, or what is wrong with it.
fn replay_args(mut args: impl Iterator<Item = String>) -> Result<ReplayArgs, String> {
    let mut alarms = None;
    let mut version = None;
    let mut window_minutes = 5_u64;
    let mut json_out = None;
    let mut charts = None;
    let mut inputs = Vec::new();
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} takes a value"));
        match arg.as_str() {
            "--alarms" => alarms = Some(value()?),
            "--version" => version = Some(value()?),
            "--window-minutes" => {
                window_minutes = value()?
                    .parse()
                    .ok()
                    .filter(|m| (1..=1440).contains(m))
                    .ok_or("--window-minutes takes a number of minutes from 1 to 1440")?;
            }
            "--json" => json_out = Some(value()?),
            "--charts" => charts = Some(value()?),
            flag if flag.starts_with("--") => return Err(format!("unknown option {flag}")),
            _ => inputs.push(arg),
        }
    }
    let alarms_path = alarms.ok_or("--alarms is required")?;
    let version = version.ok_or("--version is required (the version under test, e.g. 2)")?;
    if inputs.is_empty() {
        return Err("no EMF input: name the files (or - for standard input)".into());
    }
    if inputs
        .iter()
        .chain([&alarms_path])
        .filter(|input| *input == "-")
        .count()
        > 1
    {
        return Err("standard input (-) can be read only once".into());
    }
    Ok(ReplayArgs {
        alarms_path,
        version,
        window_minutes,
        json_out,
        charts,
        inputs,
    })
}

/// Runs the replay; whether it promotes.
fn run_replay(args: ReplayArgs) -> Result<bool, String> {
    let read = |path: &str| -> Result<String, String> {
        if path == "-" {
            std::io::read_to_string(std::io::stdin()).map_err(|e| format!("standard input: {e}"))
        } else {
            std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))
        }
    };
    let alarms: serde_json::Value =
        serde_json::from_str(&read(&args.alarms_path)?).map_err(|e| format!("{}: {e}", args.alarms_path))?;
    let texts = args
        .inputs
        .iter()
        .map(|input| read(input))
        .collect::<Result<Vec<_>, _>>()?;
    let sources: Vec<Source<'_>> = args
        .inputs
        .iter()
        .zip(&texts)
        .map(|(name, text)| Source {
            name: if name == "-" { "standard input" } else { name },
            text,
        })
        .collect();
    let replay = keel_infra::replay::canary::replay(&keel_infra::replay::canary::Input {
        alarms: &alarms,
        emf: &sources,
        version: &args.version,
        window: std::time::Duration::from_secs(args.window_minutes * 60),
    })
    .map_err(|e| e.to_string())?;
    // With `--json -`, standard output is the JSON alone and the text goes to standard error.
    match args.json_out.as_deref() {
        Some("-") => {
            write(&mut std::io::stderr(), &replay.text())?;
            write(&mut std::io::stdout(), &format!("{:#}\n", replay.json()))?;
        }
        Some(path) => {
            write(&mut std::io::stdout(), &replay.text())?;
            std::fs::write(path, format!("{:#}\n", replay.json())).map_err(|e| format!("{path}: {e}"))?;
        }
        None => write(&mut std::io::stdout(), &replay.text())?,
    }
    if let Some(dir) = args.charts {
        std::fs::create_dir_all(&dir).map_err(|e| format!("{dir}: {e}"))?;
        for (id, svg) in replay.charts() {
            let path = Path::new(&dir).join(format!("{id}.svg"));
            std::fs::write(&path, svg).map_err(|e| format!("{}: {e}", path.display()))?;
        }
        eprintln!("charts: {dir}/<alarm>.svg");
    }
    Ok(replay.decision == keel_infra::replay::canary::Decision::Promote)
}

/// Writes `text` whole, or says why it could not (a closed pipe is an error, not a panic).
fn write(out: &mut impl std::io::Write, text: &str) -> Result<(), String> {
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| format!("writing the output: {e}"))
}
