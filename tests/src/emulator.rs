//! [`Emulator`]: the cargo-lambda Lambda emulator, and [`FunctionProcess`]es served by it.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::process::{port_open, Process};
use crate::{free_port, http_agent, tool, wait_until, workspace_root, HarnessError};

/// The function name the emulator serves in `--only-lambda-apis` mode.
pub(crate) const FUNCTION_NAME: &str = "_";

/// A running `cargo-lambda lambda watch`; stopped when dropped.
///
/// [`Emulator::start`] serves only the Runtime and Extensions APIs (function name `_`): tests
/// start the function processes themselves. [`Emulator::serving`] runs a workspace binary as the
/// function, as Lambda does, so that stopping the emulator ([`Emulator::shut_down`]) sends
/// SHUTDOWN to the registered extensions.
#[derive(Debug)]
pub struct Emulator {
    process: Process,
    port: u16,
    function: String,
}

/// The answer to one invocation.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// HTTP status of the invoke call: 200 for a response, 500 for a function error.
    pub status: u16,
    /// The response (or error) document.
    pub body: serde_json::Value,
}

/// A stand-in for `cargo`, written next to `binary`: `cargo run …` (as the emulator starts its
/// function) runs `binary`; any other command (`cargo metadata`) goes to cargo itself.
fn prebuilt_runner(binary: &Path) -> Result<std::path::PathBuf, HarnessError> {
    use std::os::unix::fs::PermissionsExt;
    let name = binary.file_name().and_then(|n| n.to_str()).unwrap_or("function");
    let runner = binary.with_file_name(format!("{name}.cargo-run.sh"));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let script = format!(
        "#!/bin/sh\n# `cargo run` runs the test build's {name}; the rest is cargo's.\n\
         if [ \"$1\" = run ]; then exec '{}'; fi\nexec '{cargo}' \"$@\"\n",
        binary.display()
    );
    // Written aside and renamed into place: a runner in use is never seen half written.
    let aside = runner.with_extension(crate::unique_name("tmp"));
    let written = std::fs::write(&aside, script)
        .and_then(|()| std::fs::set_permissions(&aside, std::fs::Permissions::from_mode(0o755)))
        .and_then(|()| std::fs::rename(&aside, &runner));
    written.map_err(|e| HarnessError::Setup(format!("writing {}: {e}", runner.display())))?;
    Ok(runner)
}

impl Emulator {
    /// Starts the emulator (Runtime and Extensions APIs only) on a free port and waits until it
    /// listens.
    pub fn start() -> Result<Self, HarnessError> {
        Self::spawn(FUNCTION_NAME, &["--only-lambda-apis"], &[])
    }

    /// Starts the emulator serving the workspace binary `function` with `env` set, and waits
    /// until it listens. The emulator starts its function with `cargo run --bin`; here that
    /// runs the binary of the test build ([`crate::build_binary`]) at once: a `cargo run` of
    /// its own would build the workspace again, with other features, while the first
    /// invocation waits.
    pub fn serving(function: &str, env: &[(String, String)]) -> Result<Self, HarnessError> {
        let binary = crate::build_binary(function)?;
        let cargo = prebuilt_runner(&binary)?;
        let mut env = env.to_vec();
        env.push(("CARGO".to_owned(), cargo.display().to_string()));
        Self::spawn(function, &["--ignore-changes", "--quiet"], &env)
    }

    fn spawn(function: &str, args: &[&str], env: &[(String, String)]) -> Result<Self, HarnessError> {
        let port = free_port();
        let mut command = Command::new(tool("cargo-lambda")?);
        command
            .args(["lambda", "watch", "-A", "127.0.0.1", "-P", &port.to_string()])
            .args(args)
            .env("AWS_REGION", "us-east-1")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .current_dir(workspace_root());
        let mut process = Process::spawn("cargo-lambda emulator", command)?;
        process.wait_ready(Duration::from_secs(60), || port_open(port))?;
        Ok(Self {
            process,
            port,
            function: function.to_owned(),
        })
    }

    /// Stops the emulator as Lambda ends an execution environment: SIGTERM to the emulator
    /// alone, which stops the function it serves and sends SHUTDOWN to the extensions; returns
    /// once it has exited (or was killed after 10 s).
    pub fn shut_down(&mut self) {
        self.process.terminate(Duration::from_secs(10));
    }

    /// Everything the emulator and the function it serves printed so far.
    pub fn output(&self) -> String {
        self.process.output()
    }

    /// The emulator's process id.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// The value of `AWS_LAMBDA_RUNTIME_API` for function processes.
    pub fn runtime_api(&self) -> String {
        format!("http://127.0.0.1:{}/.rt", self.port)
    }

    /// `http://127.0.0.1:<port>`: the Lambda API's endpoint, for an SDK client
    /// (`AWS_ENDPOINT_URL_LAMBDA`), which invokes the function named `_`
    /// ([`Emulator::start`]) or the one [`Emulator::serving`] runs.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Where invocations are sent (the Lambda `Invoke` API).
    pub fn invoke_url(&self) -> String {
        format!(
            "http://127.0.0.1:{}/2015-03-31/functions/{}/invocations",
            self.port, self.function
        )
    }

    /// Invokes the function with `payload` (any text; Lambda payloads are JSON) and waits up to
    /// 30 s for the answer.
    pub fn invoke(&self, payload: &str) -> Result<Invocation, HarnessError> {
        let url = self.invoke_url();
        let http_error = |reason: String| HarnessError::Http {
            url: url.clone(),
            reason,
        };
        let mut response = http_agent(Duration::from_secs(30))
            .post(&url)
            .send(payload)
            .map_err(|e| http_error(e.to_string()))?;
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .read_to_string()
            .map_err(|e| http_error(e.to_string()))?;
        let body = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
        Ok(Invocation { status, body })
    }

    /// Starts `binary` as the function, with the Lambda variables and `env` set.
    pub fn start_function(
        &self,
        binary: &Path,
        env: &[(String, String)],
    ) -> Result<FunctionProcess, HarnessError> {
        let mut command = Command::new(binary);
        command
            .env("AWS_LAMBDA_RUNTIME_API", self.runtime_api())
            .env("AWS_LAMBDA_FUNCTION_NAME", FUNCTION_NAME)
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
            .env("AWS_REGION", "us-east-1")
            .envs(env.iter().map(|(k, v)| (k, v)));
        let name = binary
            .file_name()
            .map_or("function".into(), |n| n.to_string_lossy().into_owned());
        let process = Process::spawn(&name, command)?;
        Ok(FunctionProcess { process })
    }
}

/// A function binary polling the emulator; its stdout is what Lambda sends to CloudWatch Logs.
#[derive(Debug)]
pub struct FunctionProcess {
    process: Process,
}

impl FunctionProcess {
    /// Every stdout line so far.
    pub fn stdout_lines(&self) -> Vec<String> {
        self.process.stdout_lines()
    }

    /// Everything printed so far, for failure messages.
    pub fn output(&self) -> String {
        self.process.output()
    }

    /// Waits up to `timeout` until stdout holds a line satisfying `predicate`.
    pub fn wait_for_line(&self, timeout: Duration, predicate: impl Fn(&str) -> bool) -> bool {
        wait_until(timeout, || self.stdout_lines().iter().any(|l| predicate(l)))
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Stops it (SIGTERM, then SIGKILL).
    pub fn stop(&mut self) {
        self.process.stop(Duration::from_secs(2));
    }
}
