//! Where Keel writes its lines: log records and EMF documents share one output.
//!
//! On Lambda that is standard output (one line = one CloudWatch Logs event). Tests and
//! benchmarks use [`Output::memory`] to capture lines instead, or [`Output::file`] to write them
//! to a file.
//!
//! While Keel polls an invocation, the lines it writes on that thread are held and written
//! together, in one write, when the poll ends: when the handler waits (for a response from
//! DynamoDB, say) or the invocation is over — so an invocation that logs two lines and writes
//! its EMF documents makes one system call, not four. Lines are never held across a wait, and
//! are written together up to 4 KiB (what a pipe writes atomically, so no other writer's bytes
//! come between them); a line written outside an invocation is written at once.
//!
//! What a process loses when it dies in the middle of a poll — stopped by its timeout while the
//! handler blocks its thread (a synchronous client, `std::thread::sleep`), killed for memory,
//! `std::process::exit` — includes the lines of that poll held so far (a panic writes them
//! out). Lines written past [`Output`] (`println!`, another thread's) may come before them.
//! [`write_each_line`] (or `KEEL_LOG_WRITE=line`, read by `LogConfig::from_env`) writes every
//! line at once instead.

use std::cell::RefCell;
use std::fs::File;
use std::io::{LineWriter, Write};
use std::sync::atomic::{AtomicBool, Ordering};
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

    /// Writes `line` followed by a newline (see [`write_line`](Self::write_line)), then keeps its
    /// memory for the thread's next line (see [`spare_line`]).
    pub(crate) fn write_owned_line(&self, line: String) {
        self.write_line(&line);
        recycle_line(line);
    }

    /// Writes `line` followed by a newline, as a single write (or held, with the other lines
    /// of the poll of an invocation, and written with them: see the [module docs](self)).
    pub fn write_line(&self, line: &str) {
        if let Target::Memory(captured) = &self.target {
            return captured.push(line);
        }
        let held = DEPTH.get() > 0
            && HELD
                .try_with(|held| {
                    held.try_borrow_mut()
                        .map(|mut held| held.hold(&self.target, line))
                        .is_ok()
                })
                .unwrap_or(false);
        if !held {
            self.target.write_with(|writer| write_whole_line(writer, line));
        }
    }
}

impl Target {
    /// Calls `write` with the writer of a file or standard output (locked).
    fn write_with(&self, write: impl FnOnce(&mut dyn Write)) {
        match self {
            Target::Stdout => write(&mut std::io::stdout().lock()),
            Target::File(file) => write(&mut *file.lock().unwrap_or_else(PoisonError::into_inner)),
            Target::Memory(_) => {}
        }
    }

    fn same(&self, other: &Target) -> bool {
        match (self, other) {
            (Target::Stdout, Target::Stdout) => true,
            (Target::File(a), Target::File(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

thread_local! {
    /// Lines written, emptied, for the thread's next lines (log lines, EMF documents).
    static SPARE_LINES: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

/// An empty line to write in: the memory of one written before on this thread, when there is
/// one (see [`Output::write_owned_line`]).
pub(crate) fn spare_line() -> String {
    SPARE_LINES
        .try_with(|spare| spare.try_borrow_mut().ok()?.pop())
        .ok()
        .flatten()
        .unwrap_or_default()
}

/// Largest buffer a thread keeps for its next line (or, in the logging layer, its next event's
/// fields); a larger one is freed.
pub(crate) const KEEP_BUFFER_BYTES: usize = 16 * 1024;

/// Keeps the memory of `line` for [`spare_line`] (a few lines of up to [`KEEP_BUFFER_BYTES`]).
pub(crate) fn recycle_line(mut line: String) {
    if line.capacity() > KEEP_BUFFER_BYTES || line.capacity() == 0 {
        return;
    }
    line.clear();
    let _ = SPARE_LINES.try_with(|spare| {
        if let Ok(mut spare) = spare.try_borrow_mut() {
            if spare.len() < 4 {
                spare.push(line);
            }
        }
    });
}

/// Whether every line is written at once (see [`write_each_line`]).
static EACH_LINE: AtomicBool = AtomicBool::new(false);

/// Writes every line at once (`true`), or holds the lines of each poll of an invocation and
/// writes them together (`false`, the default; see the [module docs](self)). It applies to the
/// whole process.
pub fn write_each_line(each_line: bool) {
    EACH_LINE.store(each_line, Ordering::Relaxed);
}

/// Most bytes written together: what a pipe (Lambda's standard output) writes atomically, so
/// that no other writer's bytes come between the lines. A longer line is written alone.
const HOLD_BYTES: usize = 4096;

thread_local! {
    /// How many polls of invocations are in progress on this thread (nested services).
    static DEPTH: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    /// The lines held on this thread while an invocation is polled.
    static HELD: RefCell<Held> = const {
        RefCell::new(Held {
            target: None,
            bytes: Vec::new(),
        })
    };
}

/// Lines written during a poll of an invocation, not yet written out.
struct Held {
    /// Where the held lines go.
    target: Option<Target>,
    bytes: Vec<u8>,
}

impl Held {
    /// Holds `line` for `target` (a poll is in progress).
    fn hold(&mut self, target: &Target, line: &str) {
        if !self.target.as_ref().is_some_and(|held| held.same(target))
            || self.bytes.len() + line.len() + 1 > HOLD_BYTES
        {
            self.write_out();
            self.target = Some(target.clone());
        }
        self.bytes.extend_from_slice(line.as_bytes());
        self.bytes.push(b'\n');
    }

    /// Writes the held lines, in one write.
    fn write_out(&mut self) {
        if let Some(target) = &self.target {
            if !self.bytes.is_empty() {
                // The output closed under us: nothing better to do than drop the lines.
                target.write_with(|writer| {
                    let _ = writer.write_all(&self.bytes).and_then(|()| writer.flush());
                });
            }
        }
        self.bytes.clear();
        if self.bytes.capacity() > 16 * HOLD_BYTES {
            self.bytes = Vec::new();
        }
    }
}

/// Writes out the lines held on this thread now: a panic outside a handler's poll, which
/// unwinds past it or aborts, must not take them with it.
pub(crate) fn write_out_held_lines() {
    let _ = HELD.try_with(|held| {
        if let Ok(mut held) = held.try_borrow_mut() {
            held.write_out();
            // The output is not kept open for lines that may never come.
            held.target = None;
        }
    });
}

/// Runs `poll` (one poll of an invocation) holding the lines it writes on this thread, then
/// writes them in one write (see the [module docs](self)).
pub(crate) fn holding_lines<R>(poll: impl FnOnce() -> R) -> R {
    /// Ends the hold, also when `poll` unwinds.
    struct Release;
    impl Drop for Release {
        fn drop(&mut self) {
            let depth = DEPTH.get() - 1;
            DEPTH.set(depth);
            if depth == 0 {
                write_out_held_lines();
            }
        }
    }
    if EACH_LINE.load(Ordering::Relaxed) {
        return poll();
    }
    DEPTH.set(DEPTH.get() + 1);
    let _release = Release;
    poll()
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
fn write_whole_line(writer: &mut dyn Write, line: &str) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lines_of_a_poll_are_written_together_when_it_ends() {
        let path = std::env::temp_dir().join(format!("keel-output-{}", std::process::id()));
        let written = || std::fs::read_to_string(&path).expect("the file");
        let output = Output::file(File::create(&path).expect("a file"));
        let other_path = path.with_extension("other");
        let other = Output::file(File::create(&other_path).expect("a file"));

        output.write_line("outside");
        assert_eq!(written(), "outside\n", "a line outside a poll is written at once");
        holding_lines(|| {
            output.write_line("a");
            holding_lines(|| output.write_line("b"));
            assert_eq!(written(), "outside\n", "held until the outermost poll ends");
            other.write_line("elsewhere");
            assert_eq!(
                written(),
                "outside\na\nb\n",
                "another output's line writes the held ones first"
            );
            output.write_line("c");
        });
        assert_eq!(written(), "outside\na\nb\nc\n");
        assert_eq!(
            std::fs::read_to_string(&other_path).expect("the file"),
            "elsewhere\n"
        );

        // No more than HOLD_BYTES are written together.
        let before = written().len();
        let long = "x".repeat(HOLD_BYTES / 2);
        holding_lines(|| {
            output.write_line(&long);
            output.write_line(&long);
            assert_eq!(
                written().len(),
                before + long.len() + 1,
                "the first written alone"
            );
        });
        assert_eq!(written().len(), before + 2 * (long.len() + 1));

        // Every line at once, when asked.
        write_each_line(true);
        holding_lines(|| {
            output.write_line("d");
            assert!(written().ends_with("d\n"), "written at once");
        });
        write_each_line(false);
        let _ = std::fs::remove_file(&path);
        let _ = std::fs::remove_file(&other_path);
    }
}
