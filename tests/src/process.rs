//! [`Process`]: a child process stopped by PID when dropped, with its output captured.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::{wait_until, HarnessError};

/// A started child process (in its own process group) and the lines it has printed.
///
/// Dropping it sends SIGTERM to the group, waits up to two seconds, then SIGKILLs it; the
/// child also gets SIGKILL if the test process dies first.
#[derive(Debug)]
pub struct Process {
    name: String,
    child: Child,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Process {
    /// Starts `command` with stdout and stderr captured.
    pub fn spawn(name: &str, mut command: Command) -> Result<Self, HarnessError> {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        // SAFETY: prctl is async-signal-safe and touches only the child's own state.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = command.spawn().map_err(|source| HarnessError::Spawn {
            name: name.to_owned(),
            source,
        })?;
        let stdout = capture(child.stdout.take());
        let stderr = capture(child.stderr.take());
        Ok(Self {
            name: name.to_owned(),
            child,
            stdout,
            stderr,
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Every line printed on stdout so far.
    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Every line printed on stderr so far.
    pub fn stderr_lines(&self) -> Vec<String> {
        self.stderr.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Both outputs, for error messages.
    pub fn output(&self) -> String {
        let mut all = self.stdout_lines();
        all.extend(self.stderr_lines());
        all.join("\n")
    }

    /// Waits until `ready` holds, failing with the process's output if it does not in `timeout`
    /// or if the process exits.
    pub fn wait_ready(
        &mut self,
        timeout: Duration,
        mut ready: impl FnMut() -> bool,
    ) -> Result<(), HarnessError> {
        let mut exited = false;
        let ok = wait_until(timeout, || {
            exited = !self.is_running();
            exited || ready()
        });
        if ok && !exited {
            return Ok(());
        }
        Err(HarnessError::NotReady {
            name: self.name.clone(),
            waited: timeout,
            output: self.output(),
        })
    }

    /// Sends SIGTERM to the process alone (not its group) and waits up to `grace` for it to
    /// exit; then stops the group as [`Process::stop`] does.
    pub fn terminate(&mut self, grace: Duration) {
        // SAFETY: a plain syscall on our own child.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        wait_until(grace, || !self.is_running());
        self.stop(Duration::from_secs(2));
    }

    /// Sends SIGTERM to the group, then SIGKILL after `grace`; returns once it has exited.
    pub fn stop(&mut self, grace: Duration) {
        let group = -(self.child.id() as i32);
        // SAFETY: plain syscalls on our own child's process group.
        unsafe {
            libc::kill(group, libc::SIGTERM);
        }
        if !wait_until(grace, || !self.is_running()) {
            unsafe {
                libc::kill(group, libc::SIGKILL);
            }
            let _ = self.child.wait();
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.is_running() {
            self.stop(Duration::from_secs(2));
        }
    }
}

fn capture(stream: Option<impl Read + Send + 'static>) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    if let Some(stream) = stream {
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap_or_else(PoisonError::into_inner).push(line);
            }
        });
    }
    lines
}

/// Waits up to `timeout` for a TCP listener on 127.0.0.1:`port`.
pub(crate) fn port_open(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200)).is_ok()
}
