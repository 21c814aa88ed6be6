//! Canonical JSON in one pass over the text, without building a tree: what idempotency keys and
//! payload hashes are made of.
//!
//! The canonical form of a JSON value has object members sorted by name (byte order of the
//! unescaped names; a repeated name keeps its last value), no insignificant white space, strings
//! escaped as `serde_json` escapes them and numbers written as `serde_json::Number` displays them.
//! It is what `serde_json::Value` (whose maps are sorted) serializes to, computed without the
//! tree: members are written as they are read, and an object whose members arrive out of order
//! is rearranged in place once it ends. Strings without escapes and plain integers are copied.

use std::cell::RefCell;
use std::fmt::Write as _;

use super::reader::{Invalid, Reader, StringLiteral, MAX_DEPTH};
use crate::json;

/// The canonical JSON text of the JSON value `text`.
pub(crate) fn canonical(text: &str) -> Result<String, Invalid> {
    with_canonical(text, str::to_owned)
}

/// Calls `use_text` with the canonical JSON text of the JSON value `text`, written in buffers
/// the thread keeps (no allocation once they have grown to the size of the texts seen).
pub(crate) fn with_canonical<R>(text: &str, use_text: impl FnOnce(&str) -> R) -> Result<R, Invalid> {
    /// Larger buffers are not kept for the next text.
    const KEEP_BYTES: usize = 64 * 1024;
    thread_local! {
        static BUFFERS: RefCell<Buffers> = RefCell::new(Buffers::default());
    }
    BUFFERS.with(|buffers| {
        let mut fresh = Buffers::default();
        let mut kept = buffers.try_borrow_mut();
        let buffers = match &mut kept {
            Ok(kept) => &mut **kept,
            Err(_) => &mut fresh,
        };
        buffers.clear(text.len());
        let result = Canonicalizer {
            reader: Reader::new(text),
            run: 0,
            buffers: &mut *buffers,
        }
        .run()
        .map(|()| use_text(&buffers.out));
        if buffers.out.capacity() > KEEP_BYTES {
            *buffers = Buffers::default();
        }
        result
    })
}

/// The memory a [`Canonicalizer`] writes in, kept by the thread between texts.
#[derive(Default)]
struct Buffers {
    out: String,
    /// The open objects and arrays, innermost last.
    containers: Vec<Container>,
    /// Members of the open objects, innermost last.
    members: Vec<Member>,
    /// Where an out-of-order object is rearranged.
    scratch: String,
}

impl Buffers {
    fn clear(&mut self, text_len: usize) {
        self.out.clear();
        self.out.reserve(text_len);
        self.containers.clear();
        self.members.clear();
    }
}

/// Whether the name `a` sorts strictly before `b` (byte order). Most names differ in their
/// first byte: that is compared inline, the rest only when it is equal.
#[inline]
fn comes_before(a: &str, b: &str) -> bool {
    match a.as_bytes().first().cmp(&b.as_bytes().first()) {
        std::cmp::Ordering::Equal => a < b,
        order => order.is_lt(),
    }
}

/// One object member: its name and where `"name":value` lies in the output.
struct Member {
    name: Name,
    start: usize,
    end: usize,
}

/// A member's name: where it lies in the text, or its unescaped text when it holds escapes.
enum Name {
    InText(usize, usize),
    Unescaped(String),
}

impl Name {
    fn get<'t>(&'t self, text: &'t str) -> &'t str {
        match self {
            Name::InText(start, end) => &text[*start..*end],
            Name::Unescaped(name) => name,
        }
    }
}

/// An object or array being written.
struct Container {
    object: bool,
    /// Where its first member starts in the output.
    open: usize,
    /// Its first member in `Buffers::members`.
    first: usize,
}

/// What the grammar allows next.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Next {
    /// A value (the document, an array item after a comma, a member's value).
    Value,
    /// A value or `]`, just after `[`.
    ItemOrEnd,
    /// A member name or `}`, just after `{`.
    NameOrEnd,
    /// A member name, after a comma.
    Name,
    /// `:` after a member name.
    Colon,
    /// `,` or the closing bracket, after a value.
    CommaOrEnd,
}

/// Writes the canonical form of a text in one loop over its tokens. Most of a text is canonical
/// as it stands: it is copied in runs, and only what differs (white space, escapes, numbers
/// written otherwise, objects out of order) is written token by token.
struct Canonicalizer<'a, 'b> {
    reader: Reader<'a>,
    /// The text from here to the reader's position is canonical and not copied yet.
    run: usize,
    buffers: &'b mut Buffers,
}

impl Canonicalizer<'_, '_> {
    fn run(mut self) -> Result<(), Invalid> {
        let mut next = Next::Value;
        loop {
            let Some(&byte) = self.reader.bytes().get(self.reader.pos) else {
                // The end of the text: only after a whole value.
                return if next == Next::CommaOrEnd && self.buffers.containers.is_empty() {
                    self.flush();
                    Ok(())
                } else {
                    Err(Invalid)
                };
            };
            next = match (next, byte) {
                (_, b' ' | b'\n' | b'\r' | b'\t') => {
                    self.flush();
                    self.reader.skip_white_space();
                    self.run = self.reader.pos;
                    next
                }
                // After the document's value, only white space may follow.
                (Next::CommaOrEnd, _) if self.buffers.containers.is_empty() => return Err(Invalid),
                (Next::Value | Next::ItemOrEnd, b'{' | b'[') => {
                    if self.buffers.containers.len() >= MAX_DEPTH {
                        return Err(Invalid);
                    }
                    self.reader.pos += 1;
                    let object = byte == b'{';
                    self.buffers.containers.push(Container {
                        object,
                        open: self.out_pos(),
                        first: self.buffers.members.len(),
                    });
                    if object {
                        Next::NameOrEnd
                    } else {
                        Next::ItemOrEnd
                    }
                }
                (Next::Value | Next::ItemOrEnd, b'"') => {
                    self.string()?;
                    Next::CommaOrEnd
                }
                (Next::Value | Next::ItemOrEnd, b'-' | b'0'..=b'9') => {
                    self.number()?;
                    Next::CommaOrEnd
                }
                (Next::Value | Next::ItemOrEnd, b't' | b'f' | b'n') => {
                    self.reader.literal()?;
                    Next::CommaOrEnd
                }
                (Next::NameOrEnd | Next::Name, b'"') => {
                    let start = self.out_pos();
                    let name = self.string()?;
                    self.buffers.members.push(Member {
                        name,
                        start,
                        end: start,
                    });
                    // Compact text: the colon follows at once.
                    if self.reader.bytes().get(self.reader.pos) == Some(&b':') {
                        self.reader.pos += 1;
                        Next::Value
                    } else {
                        Next::Colon
                    }
                }
                (Next::Colon, b':') => {
                    self.reader.pos += 1;
                    Next::Value
                }
                (Next::CommaOrEnd, b',') => {
                    let object = self.end_value();
                    self.reader.pos += 1;
                    if object {
                        Next::Name
                    } else {
                        Next::Value
                    }
                }
                (Next::CommaOrEnd, b']' | b'}') | (Next::ItemOrEnd, b']') | (Next::NameOrEnd, b'}') => {
                    let object = byte == b'}';
                    if next == Next::CommaOrEnd {
                        self.end_value();
                    }
                    let container = self.buffers.containers.pop().ok_or(Invalid)?;
                    if container.object != object {
                        return Err(Invalid);
                    }
                    self.reader.pos += 1;
                    if object {
                        self.sort_members(&container);
                    }
                    Next::CommaOrEnd
                }
                _ => return Err(Invalid),
            };
        }
    }

    /// Ends the value just read: in an object, the current member ends here. Returns whether
    /// the innermost container is an object.
    fn end_value(&mut self) -> bool {
        let end = self.out_pos();
        match self.buffers.containers.last() {
            Some(container) if container.object => {
                if let Some(member) = self.buffers.members.last_mut() {
                    member.end = end;
                }
                true
            }
            _ => false,
        }
    }

    /// Once an object is read: rearranges its members by name if they came out of order, and
    /// keeps the last of repeated names.
    fn sort_members(&mut self, object: &Container) {
        let text = self.reader.text;
        let sorted = self.buffers.members[object.first..]
            .windows(2)
            .all(|pair| comes_before(pair[0].name.get(text), pair[1].name.get(text)));
        if !sorted {
            self.flush();
            let members = &mut self.buffers.members[object.first..];
            // Stable: of repeated names, the last one read stays last, and is the one kept.
            members.sort_by(|a, b| a.name.get(text).cmp(b.name.get(text)));
            self.buffers.scratch.clear();
            for (i, member) in members.iter().enumerate() {
                let repeated = members
                    .get(i + 1)
                    .is_some_and(|next| next.name.get(text) == member.name.get(text));
                if repeated {
                    continue;
                }
                if !self.buffers.scratch.is_empty() {
                    self.buffers.scratch.push(',');
                }
                self.buffers
                    .scratch
                    .push_str(&self.buffers.out[member.start..member.end]);
            }
            self.buffers.out.truncate(object.open);
            self.buffers.out.push_str(&self.buffers.scratch);
            self.buffers.out.push('}');
        }
        self.buffers.members.truncate(object.first);
    }

    /// Copies the pending run.
    fn flush(&mut self) {
        let pos = self.reader.pos;
        self.buffers.out.push_str(&self.reader.text[self.run..pos]);
        self.run = pos;
    }

    /// Where the reader's position lands in the output.
    #[inline]
    fn out_pos(&self) -> usize {
        self.buffers.out.len() + self.reader.pos - self.run
    }

    /// Replaces the text from `start` to the reader's position with `write`'s output.
    fn replace_from(&mut self, start: usize, write: impl FnOnce(&mut String)) {
        let end = self.reader.pos;
        self.buffers.out.push_str(&self.reader.text[self.run..start]);
        write(&mut self.buffers.out);
        self.run = end;
    }

    /// Reads a string literal, writing it in canonical form (a literal without escapes is
    /// canonical: JSON strings hold no unescaped quote, backslash or control character), and
    /// returns its text.
    #[inline(always)]
    fn string(&mut self) -> Result<Name, Invalid> {
        let literal = self.reader.raw_string()?;
        if literal.escaped {
            return self.escaped_string(literal);
        }
        Ok(Name::InText(literal.start + 1, literal.end - 1))
    }

    /// A string literal with escapes: written unescaped, then escaped the canonical way.
    #[cold]
    fn escaped_string(&mut self, literal: StringLiteral) -> Result<Name, Invalid> {
        let unescaped: String =
            serde_json::from_str(&self.reader.text[literal.start..literal.end]).map_err(|_| Invalid)?;
        self.replace_from(literal.start, |out| json::push_str(out, &unescaped));
        Ok(Name::Unescaped(unescaped))
    }

    #[inline(always)]
    fn number(&mut self) -> Result<(), Invalid> {
        let start = self.reader.pos;
        let (text, integer) = self.reader.number()?;
        // An integer reads as itself, whatever its size (JSON has no leading zeros): its digits
        // are its canonical form. Fractions, exponents and -0 are rewritten.
        if integer && text != "-0" {
            return Ok(());
        }
        self.rewritten_number(start, text)
    }

    /// A fraction, an exponent or -0: written as `serde_json` writes its `f64` when that keeps
    /// its value exactly enough to tell numbers apart (15 significant digits at most, within
    /// `f64`'s range), and otherwise as it stands — `1e400` or a fraction with 20 digits keeps
    /// its text, and differs from its neighbours.
    #[cold]
    fn rewritten_number(&mut self, start: usize, text: &str) -> Result<(), Invalid> {
        let mantissa = text.split(['e', 'E']).next().unwrap_or(text);
        let digits = mantissa.bytes().filter(u8::is_ascii_digit);
        let significant = digits.skip_while(|d| *d == b'0').collect::<Vec<u8>>();
        let significant = significant.iter().rev().skip_while(|d| **d == b'0').count();
        let Ok(number) = serde_json::from_str::<serde_json::Number>(text) else {
            return Ok(());
        };
        let lost = number
            .as_f64()
            .is_none_or(|f| !f.is_finite() || (f == 0.0 && significant > 0));
        if significant > 15 || lost {
            return Ok(());
        }
        self.replace_from(start, |out| {
            let _ = write!(out, "{number}");
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// `serde_json::Value` keeps object members sorted: its compact text is the canonical form.
    fn reference(text: &str) -> Option<String> {
        serde_json::from_str::<Value>(text)
            .ok()
            .map(|value| value.to_string())
    }

    #[test]
    fn numbers_beyond_f64_keep_their_digits() {
        for (a, b) in [
            ("12345678901234567890123", "12345678901234567890124"),
            ("-9223372036854775809", "-9223372036854775810"),
            ("1.00000000000000000001", "1.00000000000000000002"),
            ("1e400", "2e400"),
            ("1e-400", "0.0"),
        ] {
            assert_eq!(canonical(a).ok().as_deref(), Some(a), "kept as written");
            assert_ne!(
                canonical(a).ok(),
                canonical(b).ok(),
                "{a} and {b} are different numbers"
            );
        }
        assert_eq!(
            canonical("[18446744073709551616, 1.50, 2E3]").ok().as_deref(),
            Some("[18446744073709551616,1.5,2000.0]")
        );
    }

    #[test]
    fn agrees_with_serde_json_values() {
        let documents = [
            r#"{"z": [3, 1.5, -0, 1e3, {"b": null, "a": true}], "a\u0041": "é\n\"", "m": {}, "d": 1, "d": 2}"#,
            r#"[]"#,
            r#" [ ] "#,
            r#""plain""#,
            r#"12.50"#,
            r#"-0.0"#,
            r#"[0, -1, 999999999999999999, 18446744073709551615, -9223372036854775808]"#,
            r#"[1E2, 1e-2, 2.5e+3, -0e0, 0.1]"#,
            r#"{"b": {"d": 1, "c": [{"f": 1, "e": 2}]}, "a": "\u00e9\u2028\ud83d\ude00 \/ \t"}"#,
            r#"{"x": 1, "x": {"b": 1, "a": 2}, "a": 0}"#,
            r#"{"\"q": 1, "a": 2, "\\": 3}"#,
            "{\"ws\"\t:\r\n[ true , false , null ] }",
        ];
        for text in documents {
            assert_eq!(canonical(text).ok(), reference(text), "{text}");
        }
    }

    /// A random JSON text: members in random order (names repeat now and then), random white
    /// space, escapes, and numbers of every kind.
    fn random_json(rng: &mut fastrand::Rng, depth: usize, out: &mut String) {
        let space = |rng: &mut fastrand::Rng, out: &mut String| {
            if rng.u8(..4) == 0 {
                out.push_str([" ", "\n", "\t ", "\r\n  "][rng.usize(..4)]);
            }
        };
        let strings = [
            "",
            "a",
            "b",
            "name",
            "Name",
            "é",
            "a\\\"b",
            "\\u00e9",
            "\\n",
            "x\\/y",
            "\\ud83d\\ude00",
            "zz",
        ];
        space(rng, out);
        match if depth > 4 { rng.u8(2..6) } else { rng.u8(..6) } {
            0 | 1 if depth < 6 => {
                let object = rng.bool();
                out.push(if object { '{' } else { '[' });
                for i in 0..rng.usize(..5) {
                    if i > 0 {
                        out.push(',');
                    }
                    space(rng, out);
                    if object {
                        out.push('"');
                        out.push_str(strings[rng.usize(..strings.len())]);
                        out.push('"');
                        space(rng, out);
                        out.push(':');
                    }
                    random_json(rng, depth + 1, out);
                }
                space(rng, out);
                out.push(if object { '}' } else { ']' });
            }
            2 => {
                out.push('"');
                out.push_str(strings[rng.usize(..strings.len())]);
                out.push('"');
            }
            3 => {
                let numbers = [
                    "0",
                    "-0",
                    "7",
                    "-12",
                    "1.5",
                    "-0.0",
                    "1e3",
                    "2E-2",
                    "12.50",
                    "18446744073709551615",
                    "-9223372036854775808",
                    "123456789012345678",
                ];
                out.push_str(numbers[rng.usize(..numbers.len())]);
            }
            _ => out.push_str(["true", "false", "null"][rng.usize(..3)]),
        }
        space(rng, out);
    }

    #[test]
    fn agrees_with_serde_json_on_random_documents() {
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..5_000 {
            let mut text = String::new();
            random_json(&mut rng, 0, &mut text);
            assert_eq!(canonical(&text).ok(), reference(&text), "{text}");
            // Cut short or spliced, a text is refused exactly when serde_json refuses it.
            let cut = rng.usize(..=text.len());
            if let Some(prefix) = text.get(..cut) {
                assert_eq!(canonical(prefix).ok(), reference(prefix), "{prefix}");
                if let Some(rest) = text.get(rng.usize(cut..=text.len())..) {
                    let spliced = format!("{prefix}{rest}");
                    assert_eq!(canonical(&spliced).ok(), reference(&spliced), "{spliced}");
                }
            }
        }
    }

    #[test]
    fn refuses_what_serde_json_refuses() {
        let invalid = [
            "",
            "{",
            "[1,]",
            "{\"a\"}",
            "{\"a\":1,}",
            "01",
            "1.",
            "-",
            "1e",
            "tru",
            "\"a",
            "\"\\\"",
            "\"\u{1}\"",
            "\"\\x\"",
            "\"\\u12\"",
            "[1] 2",
            "{1:2}",
            "nul",
        ];
        for text in invalid {
            assert!(reference(text).is_none(), "{text:?} should be invalid");
            assert_eq!(canonical(text), Err(Invalid), "{text:?}");
        }
        let deep = "[".repeat(MAX_DEPTH + 1) + &"]".repeat(MAX_DEPTH + 1);
        assert!(reference(&deep).is_none());
        assert_eq!(canonical(&deep), Err(Invalid));
        let fine = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
        assert_eq!(canonical(&fine).ok(), reference(&fine));
    }
}
