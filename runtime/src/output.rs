//! Where Keel writes its lines: log records and EMF documents share one output.
//!
//! On Lambda that is standard output (one line = one CloudWatch Logs event). Tests and
//! benchmarks use [`Output::memory`] to capture lines instead, or [`Output::file`] to write them
//! to a file.

use std::fs::File;
use std::io::{LineWriter, Write};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

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
    File(Arc<Mutex<LineWriter<File>>>),
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

    /// A file, written a line at a time as standard output is (a line is written whole once
    /// its newline is).
    pub fn file(file: File) -> Self {
        Self {
            target: Target::File(Arc::new(Mutex::new(LineWriter::new(file)))),
        }
    }

    /// Writes `line` followed by a newline, as a single write.
    pub fn write_line(&self, line: &str) {
        match &self.target {
            Target::Stdout => write_whole_line(&mut std::io::stdout().lock(), line),
            Target::File(file) => {
                write_whole_line(&mut *file.lock().unwrap_or_else(PoisonError::into_inner), line)
            }
            Target::Memory(captured) => captured.push(line),
        }
    }
}

impl std::fmt::Debug for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.target {
            Target::Stdout => f.write_str("Output::Stdout"),
            Target::File(_) => f.write_str("Output::File"),
            Target::Memory(_) => f.write_str("Output::Memory"),
        }
    }
}

/// Writes `line` and its newline to a line-buffered writer in one write (the two copied together
/// into a buffer the thread keeps), and flushes.
fn write_whole_line(writer: &mut impl Write, line: &str) {
    thread_local! {
        static BUFFER: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
    }
    let mut buffer = BUFFER.take();
    buffer.clear();
    buffer.extend_from_slice(line.as_bytes());
    buffer.push(b'\n');
    // The output closed under us: nothing better to do than drop the line.
    let _ = writer.write_all(&buffer).and_then(|()| writer.flush());
    if buffer.capacity() <= 64 * 1024 {
        BUFFER.set(buffer);
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
