//! How long the Keel extension keeps the environment running after each response, before and
//! after the end-of-invocation notice: under the Lambda emulator, with the Telemetry API stood
//! in for ([`TelemetryStandIn`]) delivering each invocation's `platform.runtimeDone` 25 ms after
//! its response (as Lambda's shortest telemetry buffering does), it measures the time from the
//! runtime's response post to the extension's next `/next` call (when Lambda may freeze the
//! environment), for successful invocations and for failed ones whose envelope was relayed (and
//! published to SNS, on a moto server), with `KEEL_EXTENSION_FLUSH=runtime-done` (before) and
//! `end` (after). It also prints the time the extension took to publish each relayed envelope
//! (the relay queue to SNS), as its DEBUG lines say.
//!
//! ```text
//! extension-wait [--invocations N] [--delay-ms MS] [--log-level LEVEL] [--extension PATH] [--function PATH]
//! ```
//!
//! `--log-level` is the extension's `KEEL_LOG_LEVEL` (`DEBUG` by default: the publish times are
//! read from its DEBUG lines; with another level they are not shown). Without paths, the extension and the `hello` example come from the test build of this
//! program's profile (as the end-to-end tests build them). To measure release builds:
//!
//! ```text
//! cargo build --release -p keel-extension -p keel-runtime --bin keel-extension --example hello
//! cargo run -p keel-tests --bin extension-wait -- \
//!     --extension target/release/keel-extension --function target/release/examples/hello
//! ```
//!
//! A relayed envelope is handed over before the response is posted, and its publishing starts
//! then: the time from the response to `/next` is what is left of the publishing, plus the
//! notice. "answered → /next" starts when the stand-in answered the runtime's post (the
//! emulator's share of the response taken out).

use std::path::PathBuf;
use std::time::Duration;

use keel_tests::telemetry_stand_in::{Delivery, Seen};
use keel_tests::{free_port, Emulator, FunctionProcess, HarnessError, Moto, TelemetryStandIn};

const WAIT: Duration = Duration::from_secs(60);

struct Options {
    invocations: usize,
    delay: Duration,
    log_level: String,
    extension: Option<PathBuf>,
    function: Option<PathBuf>,
}

fn options() -> Result<Options, String> {
    let mut options = Options {
        invocations: 50,
        delay: Duration::from_millis(25),
        log_level: "DEBUG".into(),
        extension: None,
        function: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--invocations" => {
                options.invocations = value()?.parse().map_err(|e| format!("--invocations: {e}"))?;
            }
            "--delay-ms" => {
                let ms: u64 = value()?.parse().map_err(|e| format!("--delay-ms: {e}"))?;
                options.delay = Duration::from_millis(ms);
            }
            "--log-level" => options.log_level = value()?.to_ascii_uppercase(),
            "--extension" => options.extension = Some(value()?.into()),
            "--function" => options.function = Some(value()?.into()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if options.invocations == 0 {
        return Err("--invocations must be at least 1".into());
    }
    Ok(options)
}

/// What one mode measured, per kind of invocation: response → `/next`, answered → `/next`,
/// and (relayed) publish times, in microseconds.
#[derive(Default)]
struct Measured {
    to_next: Vec<u64>,
    answered_to_next: Vec<u64>,
    publish: Vec<u64>,
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("extension-wait: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let options = options()?;
    let extension = match &options.extension {
        Some(path) => path.clone(),
        None => keel_tests::build_binary("keel-extension").map_err(|e| e.to_string())?,
    };
    let function = match &options.function {
        Some(path) => path.clone(),
        None => keel_tests::build_example("hello").map_err(|e| e.to_string())?,
    };
    let runtime = keel_tests::runtime().map_err(|e| e.to_string())?;
    let moto = Moto::start().map_err(|e| e.to_string())?;
    let (topic, _on_call) = runtime
        .block_on(moto.subscribed_topic("wait-errors"))
        .map_err(|e| e.to_string())?;

    let mut rows = Vec::new();
    for mode in ["runtime-done", "end"] {
        let setup =
            Setup::start(&moto, &topic, mode, &options, &extension, &function).map_err(|e| e.to_string())?;
        for (kind, payload) in [("success", r#"{"name": "Ada"}"#), ("relayed", "{}")] {
            // A few first, unmeasured: connections opened, code paged in.
            for _ in 0..3 {
                setup.invoke(payload)?;
            }
            let mut measured = Measured::default();
            for _ in 0..options.invocations {
                let request_id = setup.invoke(payload)?;
                let times = setup.stand_in.times(&request_id).ok_or("no times")?;
                measured.to_next.push(micros(times.response_to_next()));
                measured.answered_to_next.push(micros(times.answered_to_next()));
                if kind == "relayed" && options.log_level == "DEBUG" {
                    measured.publish.push(setup.publish_us(&request_id)?);
                }
            }
            rows.push((mode, kind, measured));
        }
    }

    println!(
        "telemetry: platform.runtimeDone delivered {} ms after each response; {} invocations each; \
         the extension logs at {}",
        options.delay.as_millis(),
        options.invocations,
        options.log_level
    );
    println!(
        "{:<13} {:<8} {:>22} {:>22} {:>22}",
        "mode", "kind", "response → /next", "answered → /next", "publish (queue → SNS)"
    );
    println!(
        "{:<13} {:<8} {:>22} {:>22} {:>22}",
        "", "", "median / p90 ms", "median / p90 ms", "median / p90 ms"
    );
    for (mode, kind, measured) in &mut rows {
        let publish = match measured.publish.is_empty() {
            true => "-".to_owned(),
            false => spread(&mut measured.publish),
        };
        println!(
            "{mode:<13} {kind:<8} {:>22} {:>22} {publish:>22}",
            spread(&mut measured.to_next),
            spread(&mut measured.answered_to_next)
        );
    }
    Ok(())
}

fn micros(duration: Option<Duration>) -> u64 {
    duration.map_or(u64::MAX, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// `median / p90` of `values` (microseconds), in milliseconds.
fn spread(values: &mut [u64]) -> String {
    values.sort_unstable();
    let at = |share: f64| {
        let index = ((values.len() as f64 * share).ceil() as usize).clamp(1, values.len()) - 1;
        values[index] as f64 / 1000.0
    };
    format!("{:.3} / {:.3}", at(0.5), at(0.9))
}

/// The emulator, the stand-in, the extension in one mode and the function.
struct Setup {
    emulator: Emulator,
    stand_in: TelemetryStandIn,
    extension: FunctionProcess,
    function: FunctionProcess,
}

impl Setup {
    fn start(
        moto: &Moto,
        topic: &str,
        mode: &str,
        options: &Options,
        extension: &std::path::Path,
        function: &std::path::Path,
    ) -> Result<Self, HarnessError> {
        let emulator = Emulator::start()?;
        let stand_in = TelemetryStandIn::start(&emulator.runtime_api(), Delivery::After(options.delay))?;
        let mut env = moto.env();
        env.push(("AWS_LAMBDA_RUNTIME_API".into(), stand_in.runtime_api()));
        env.push(("KEEL_EXTENSION_ADDR".into(), format!("127.0.0.1:{}", free_port())));
        let mut extension_env = env.clone();
        extension_env.push(("KEEL_ERROR_TOPIC_ARN".into(), topic.to_owned()));
        extension_env.push(("KEEL_TELEMETRY_ADDR".into(), format!("127.0.0.1:{}", free_port())));
        extension_env.push(("KEEL_EXTENSION_FLUSH".into(), mode.to_owned()));
        extension_env.push(("KEEL_LOG_LEVEL".into(), options.log_level.clone()));
        let extension = emulator.start_function(extension, &extension_env)?;
        let ready = stand_in.wait_for(WAIT, |records| {
            let subscribed = records
                .iter()
                .position(|r| matches!(r.seen, Seen::Subscribed { .. }));
            subscribed.is_some_and(|at| records[at..].iter().any(|r| r.seen == Seen::ExtensionNext))
        });
        if !ready {
            return Err(HarnessError::Setup(format!(
                "the extension did not subscribe and wait for events\n{}",
                extension.output()
            )));
        }
        let function = emulator.start_function(function, &env)?;
        Ok(Self {
            emulator,
            stand_in,
            extension,
            function,
        })
    }

    /// Invokes the function with `payload`, and waits until the extension has asked for its
    /// next event after it and its runtimeDone was delivered; returns its request id.
    fn invoke(&self, payload: &str) -> Result<String, String> {
        let before = self.stand_in.last_response();
        self.emulator
            .invoke(payload)
            .map_err(|e| format!("{e}\n{}", self.function.output()))?;
        if !self
            .stand_in
            .wait_for(WAIT, |_| self.stand_in.last_response() != before)
        {
            return Err(format!("no response posted\n{}", self.function.output()));
        }
        let request_id = self.stand_in.last_response().unwrap_or_default();
        let done = self.stand_in.wait_for(WAIT, |records| {
            keel_tests::telemetry_stand_in::times(records, &request_id)
                .is_some_and(|t| t.next.is_some() && t.runtime_done.is_some())
        });
        if !done {
            return Err(format!(
                "the extension did not ask for its next event after {request_id}\n{}",
                self.extension.output()
            ));
        }
        Ok(request_id)
    }

    /// How long the extension took to publish `request_id`'s envelope (its DEBUG line).
    fn publish_us(&self, request_id: &str) -> Result<u64, String> {
        let line = |l: &str| l.contains("a relayed envelope is out of the queue") && l.contains(request_id);
        if !self.extension.wait_for_line(WAIT, line) {
            return Err(format!(
                "no publish line for {request_id}\n{}",
                self.extension.output()
            ));
        }
        self.extension
            .stdout_lines()
            .iter()
            .find(|l| line(l))
            .and_then(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .and_then(|l| l["publish_us"].as_u64())
            .ok_or_else(|| format!("no publish_us for {request_id}"))
    }
}
