//! Where Keel writes its lines: log records and EMF documents share one output.
//!
//! On Lambda that is standard output (one line = one CloudWatch Logs event). Tests and
//! benchmarks use [`Output::memory`] to capture lines instead.

use std::io::Write;
use std::sync::{Arc, Mutex, MutexGuard};

/// A cloneable handle to the destination of Keel's log lines and EMF documents.
///
/// Every call to [`Output::write_line`] writes one whole line, so concurrent invocations
/// never interleave inside a line.
///
/// ```
/// use keel_runtime::output::Output;
///
/// let (output, captured) = Output::memory();
/// output.write_line(r#"{"message":"hello"}"#);
/// assert_eq!(captured.lines(), vec![r#"{"message":"hello"}"#.to_string()]);
/// ```
#[derive(Clone, Default)]
pub struct Output {
    target: Target,
}

#[derive(Clone, Default)]
enum Target {
    #[default]
    Stdout,
    Memory(CapturedLines),
}

impl Output {
    /// Standard output, as Lambda expects.
    pub fn stdout() -> Self {
        Self {
            target: Target::Stdout,
        }
    }

    /// An in-memory output and the handle that reads what was written to it.
    pub fn memory() -> (Self, CapturedLines) {
        let captured = CapturedLines::default();
        let output = Self {
            target: Target::Memory(captured.clone()),
        };
        (output, captured)
    }

    /// Writes `line` followed by a newline, as a single write.
    pub fn write_line(&self, line: &str) {
        match &self.target {
            Target::Stdout => {
                let mut stdout = std::io::stdout().lock();
                // Standard output closed under us: nothing better to do than drop the line.
                let _ = stdout
                    .write_all(line.as_bytes())
                    .and_then(|()| stdout.write_all(b"\n"))
                    .and_then(|()| stdout.flush());
            }
            Target::Memory(captured) => captured.push(line),
        }
    }
}

impl std::fmt::Debug for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.target {
            Target::Stdout => f.write_str("Output::Stdout"),
            Target::Memory(_) => f.write_str("Output::Memory"),
        }
    }
}

/// The lines written to an in-memory [`Output`].
#[derive(Clone, Debug, Default)]
pub struct CapturedLines {
    lines: Arc<Mutex<Vec<String>>>,
}

impl CapturedLines {
    fn guard(&self) -> MutexGuard<'_, Vec<String>> {
        // A panic while holding the lock cannot leave a half-written line behind.
        self.lines.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn push(&self, line: &str) {
        self.guard().push(line.to_owned());
    }

    /// A copy of every line written so far.
    pub fn lines(&self) -> Vec<String> {
        self.guard().clone()
    }

    /// Removes and returns every line written so far.
    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.guard())
    }

    /// Discards every line written so far.
    pub fn clear(&self) {
        self.guard().clear();
    }
}
