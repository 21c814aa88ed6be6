//! Canonical JSON in one pass over the text, and navigation into a JSON text without building a
//! tree: what idempotency keys and payload hashes are made of.
//!
//! The canonical form of a JSON value has object members sorted by name (byte order of the
//! unescaped names; a repeated name keeps its last value), no insignificant white space, strings
//! escaped as `serde_json` escapes them and numbers written as `serde_json::Number` displays them.
//! It is what `serde_json::Value` (whose maps are sorted) serializes to, computed without the
//! tree: members are written as they are read, and an object whose members arrive out of order
//! is rearranged in place once it ends. Strings without escapes and plain integers are copied.

use std::borrow::Cow;
use std::cell::RefCell;
use std::fmt::Write as _;

use crate::json;

/// Deepest nesting accepted: `serde_json`'s parser refuses a 128th level.
const MAX_DEPTH: usize = 127;

/// Bytes that end the plain run of a string literal: the closing quote, a backslash, and the
/// control characters JSON strings may not hold unescaped.
static SPECIAL_IN_STRING: [bool; 256] = {
    let mut table = [false; 256];
    let mut byte = 0;
    while byte < 0x20 {
        table[byte] = true;
        byte += 1;
    }
    table[b'"' as usize] = true;
    table[b'\\' as usize] = true;
    table
};

/// How many bytes at the start of `bytes` a string literal holds as they are: up to its closing
/// quote, a backslash or a control character. Eight bytes at a time, then byte by byte.
#[inline]
fn plain_len(bytes: &[u8]) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // A high bit set where a byte of `x` may be zero (exact for the first such byte).
    let zero_bytes = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    let mut plain = 0;
    for chunk in bytes.chunks_exact(8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let word = u64::from_le_bytes(word);
        let special = zero_bytes(word ^ (ONES * u64::from(b'"')))
            | zero_bytes(word ^ (ONES * u64::from(b'\\')))
            | (word.wrapping_sub(ONES * 0x20) & !word & HIGH);
        if special != 0 {
            break;
        }
        plain += 8;
    }
    plain
        + bytes[plain..]
            .iter()
            .position(|&byte| SPECIAL_IN_STRING[usize::from(byte)])
            .unwrap_or(bytes.len() - plain)
}

/// Where a string literal lies in the text (quotes included), and whether it holds escapes.
struct StringLiteral {
    start: usize,
    end: usize,
    escaped: bool,
}

/// The text is not one valid JSON value, or nests deeper than `serde_json` accepts.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Invalid;

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

/// A cursor over a JSON text.
pub(crate) struct Reader<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(text: &'a str) -> Self {
        Self { text, pos: 0 }
    }

    fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    #[inline]
    fn skip_white_space(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.bytes().get(self.pos) {
            self.pos += 1;
        }
    }

    /// The first byte of the next value (white space skipped).
    #[inline]
    fn peek_value(&mut self) -> Result<u8, Invalid> {
        self.skip_white_space();
        self.bytes().get(self.pos).copied().ok_or(Invalid)
    }

    #[inline]
    fn expect(&mut self, byte: u8) -> Result<(), Invalid> {
        self.skip_white_space();
        if self.bytes().get(self.pos) != Some(&byte) {
            return Err(Invalid);
        }
        self.pos += 1;
        Ok(())
    }

    /// Consumes `close` if it comes next (an empty container).
    #[inline]
    fn close(&mut self, close: u8) -> bool {
        self.skip_white_space();
        let found = self.bytes().get(self.pos) == Some(&close);
        self.pos += usize::from(found);
        found
    }

    /// After an element: `true` for a comma (more follow), `false` for `close`.
    #[inline]
    fn separator(&mut self, close: u8) -> Result<bool, Invalid> {
        self.skip_white_space();
        match self.bytes().get(self.pos) {
            Some(b',') => {
                self.pos += 1;
                Ok(true)
            }
            Some(&byte) if byte == close => {
                self.pos += 1;
                Ok(false)
            }
            _ => Err(Invalid),
        }
    }

    /// Reads a string literal: its text, borrowed unless it holds escapes.
    fn string(&mut self) -> Result<Cow<'a, str>, Invalid> {
        let literal = self.raw_string()?;
        if !literal.escaped {
            return Ok(Cow::Borrowed(&self.text[literal.start + 1..literal.end - 1]));
        }
        serde_json::from_str::<String>(&self.text[literal.start..literal.end])
            .map(Cow::Owned)
            .map_err(|_| Invalid)
    }

    /// Reads a string literal without unescaping it (escapes are checked only when unescaping).
    #[inline(always)]
    fn raw_string(&mut self) -> Result<StringLiteral, Invalid> {
        self.expect(b'"')?;
        let start = self.pos - 1;
        let mut escaped = false;
        loop {
            self.pos += plain_len(&self.bytes()[self.pos..]);
            match self.bytes().get(self.pos) {
                Some(b'"') => break,
                Some(b'\\') if self.pos + 1 < self.text.len() => {
                    escaped = true;
                    self.pos += 2;
                }
                // End of text, or a control character (which JSON strings must escape).
                _ => return Err(Invalid),
            }
        }
        self.pos += 1;
        Ok(StringLiteral {
            start,
            end: self.pos,
            escaped,
        })
    }

    /// Reads a number: its text, and whether it is an integer (no fraction, no exponent).
    #[inline]
    fn number(&mut self) -> Result<(&'a str, bool), Invalid> {
        let start = self.pos;
        let digits = |reader: &mut Self| {
            let from = reader.pos;
            while reader.bytes().get(reader.pos).is_some_and(u8::is_ascii_digit) {
                reader.pos += 1;
            }
            reader.pos - from
        };
        if self.bytes().get(self.pos) == Some(&b'-') {
            self.pos += 1;
        }
        match self.bytes().get(self.pos) {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => {
                digits(self);
            }
            _ => return Err(Invalid),
        }
        let mut integer = true;
        if self.bytes().get(self.pos) == Some(&b'.') {
            self.pos += 1;
            integer = false;
            if digits(self) == 0 {
                return Err(Invalid);
            }
        }
        if let Some(b'e' | b'E') = self.bytes().get(self.pos) {
            self.pos += 1;
            integer = false;
            if let Some(b'+' | b'-') = self.bytes().get(self.pos) {
                self.pos += 1;
            }
            if digits(self) == 0 {
                return Err(Invalid);
            }
        }
        Ok((&self.text[start..self.pos], integer))
    }

    /// Reads `true`, `false` or `null`.
    #[inline]
    fn literal(&mut self) -> Result<&'static str, Invalid> {
        let rest = &self.bytes()[self.pos..];
        let literal = ["true", "false", "null"]
            .into_iter()
            .find(|literal| rest.starts_with(literal.as_bytes()))
            .ok_or(Invalid)?;
        self.pos += literal.len();
        Ok(literal)
    }

    /// Skips one value (checking only its structure) and returns its text.
    fn skip(&mut self) -> Result<&'a str, Invalid> {
        let first = self.peek_value()?;
        let start = self.pos;
        match first {
            b'"' => {
                self.raw_string()?;
            }
            b'{' | b'[' => {
                let mut depth = 0usize;
                loop {
                    match self.bytes().get(self.pos).ok_or(Invalid)? {
                        b'"' => {
                            self.raw_string()?;
                            continue;
                        }
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => depth -= 1,
                        _ => {}
                    }
                    self.pos += 1;
                    if depth == 0 {
                        break;
                    }
                }
            }
            _ => {
                while let Some(byte) = self.bytes().get(self.pos) {
                    if matches!(byte, b',' | b'}' | b']' | b' ' | b'\n' | b'\r' | b'\t') {
                        break;
                    }
                    self.pos += 1;
                }
                if self.pos == start {
                    return Err(Invalid);
                }
            }
        }
        Ok(&self.text[start..self.pos])
    }
}

/// The members of the JSON object `text` (name, value text), in the order written; `None` when
/// `text` is not an object.
pub(crate) fn members(text: &str) -> Option<Vec<(Cow<'_, str>, &str)>> {
    let mut members = Vec::new();
    for_each_member(text, |name, value| members.push((name, value)))?;
    Some(members)
}

/// The value of the member `name` of the JSON object `text` (the last one, if repeated).
pub(crate) fn member<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    let mut found = None;
    for_each_member(text, |member, value| {
        if member == name {
            found = Some(value);
        }
    })?;
    found
}

/// Calls `visit` with each member (name, value text) of the JSON object `text`, in order;
/// `None` when `text` is not an object.
fn for_each_member<'a>(text: &'a str, mut visit: impl FnMut(Cow<'a, str>, &'a str)) -> Option<()> {
    let mut reader = Reader::new(text);
    if reader.peek_value().ok()? != b'{' {
        return None;
    }
    reader.pos += 1;
    if reader.close(b'}') {
        return Some(());
    }
    loop {
        reader.peek_value().ok()?;
        let name = reader.string().ok()?;
        reader.expect(b':').ok()?;
        visit(name, reader.skip().ok()?);
        if !reader.separator(b'}').ok()? {
            return Some(());
        }
    }
}

/// The value of the member `name` of an object's members (the last one, if repeated).
pub(crate) fn get<'a>(members: &[(Cow<'_, str>, &'a str)], name: &str) -> Option<&'a str> {
    members
        .iter()
        .rev()
        .find(|(n, _)| n == name)
        .map(|(_, value)| *value)
}

/// The text of the value `pointer` (RFC 6901) designates in the JSON text `text`.
pub(crate) fn pointer<'a>(text: &'a str, pointer: &str) -> Option<&'a str> {
    if pointer.is_empty() {
        return Some(text.trim_matches([' ', '\n', '\r', '\t']));
    }
    let mut current = text;
    for token in pointer.strip_prefix('/')?.split('/') {
        let token = match token.contains('~') {
            true => Cow::Owned(token.replace("~1", "/").replace("~0", "~")),
            false => Cow::Borrowed(token),
        };
        let mut reader = Reader::new(current);
        current = match reader.peek_value().ok()? {
            b'{' => member(current, &token)?,
            b'[' => {
                let index: usize = token.parse().ok()?;
                reader.pos += 1;
                if reader.close(b']') {
                    return None;
                }
                let mut item = reader.skip().ok()?;
                for _ in 0..index {
                    if !reader.separator(b']').ok()? {
                        return None;
                    }
                    item = reader.skip().ok()?;
                }
                item
            }
            _ => return None,
        };
    }
    Some(current)
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

    #[test]
    fn pointers_follow_objects_and_arrays() {
        let text = r#"{"a/b": {"list": [{"id": "x"}, {"id": "y" }]}, "n": null, "d": 1, "d": 2}"#;
        assert_eq!(pointer(text, "/a~1b/list/1/id"), Some(r#""y""#));
        assert_eq!(pointer(text, "/a~1b/list/0"), Some(r#"{"id": "x"}"#));
        assert_eq!(pointer(text, "/n"), Some("null"));
        assert_eq!(pointer(text, "/d"), Some("2"), "the last of repeated names");
        assert!(pointer(text, "/a~1b/list/2").is_none());
        assert!(pointer(text, "/a~1b/list/x").is_none());
        assert!(pointer(text, "/missing").is_none());
        assert!(pointer(text, "no-slash").is_none());
        assert_eq!(pointer(" [] ", ""), Some("[]"));
        assert!(pointer("[]", "/0").is_none());
    }

    #[test]
    fn members_are_listed_in_order() {
        let listed = members(r#" {"b" : [1, {"c": "}"}], "a\n": "x\"y", "e": {}} "#).unwrap();
        let names: Vec<&str> = listed.iter().map(|(name, _)| name.as_ref()).collect();
        assert_eq!(names, ["b", "a\n", "e"]);
        assert_eq!(listed[0].1, r#"[1, {"c": "}"}]"#);
        assert_eq!(get(&listed, "e"), Some("{}"));
        assert!(members("[1]").is_none());
        assert_eq!(members("{}").map(|m| m.len()), Some(0));
    }
}
