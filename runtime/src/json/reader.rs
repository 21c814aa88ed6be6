//! Navigation into a JSON text without building a tree: a cursor over the text, an object's
//! members, and the value a JSON pointer designates.

use std::borrow::Cow;

use super::blocks::{inside_quotes, Classes, Mask, BLOCK};

/// Deepest nesting accepted: `serde_json`'s parser refuses a 128th level.
pub(super) const MAX_DEPTH: usize = 127;

/// How many bytes at the start of `bytes` a string literal holds as they are: up to its closing
/// quote, a backslash or a control character. A block at a time.
#[inline]
pub(super) fn plain_len(bytes: &[u8]) -> usize {
    let mut at = 0;
    while at < bytes.len() {
        let classes = Classes::at(bytes, at);
        let special = classes.ends_plain_run();
        if special != 0 {
            return at + special.trailing_zeros() as usize;
        }
        at += BLOCK;
    }
    bytes.len()
}

/// Appends the text of a string literal's `contents` (between its quotes) to `out`,
/// its escapes resolved: the runs between escapes, found a block at a time, are copied whole.
/// Fails, as `serde_json` does, on an unknown escape, a lone surrogate or a raw control
/// character.
pub(crate) fn unescape(contents: &str, out: &mut String) -> Result<(), Invalid> {
    let bytes = contents.as_bytes();
    // Where the run not yet copied starts.
    let mut pos = 0usize;
    for block in (0..bytes.len()).step_by(BLOCK) {
        let classes = Classes::at(bytes, block);
        let mut special = classes.ends_plain_run();
        loop {
            // What an escape that ran into this block covered is done.
            special &= Mask::MAX
                .checked_shl(pos.saturating_sub(block).min(BLOCK) as u32)
                .unwrap_or(0);
            if special == 0 {
                break;
            }
            let at = block + special.trailing_zeros() as usize;
            out.push_str(&contents[pos..at]);
            if bytes[at] != b'\\' {
                // A quote or a control character inside the contents.
                return Err(Invalid);
            }
            let (resolved, len) = resolve_escape(bytes, at)?;
            out.push(resolved);
            pos = at + len;
        }
    }
    out.push_str(&contents[pos..]);
    Ok(())
}

/// The character the escape at `at` (its backslash) stands for, and its length.
fn resolve_escape(bytes: &[u8], at: usize) -> Result<(char, usize), Invalid> {
    let resolved = match *bytes.get(at + 1).ok_or(Invalid)? {
        b'"' => '"',
        b'\\' => '\\',
        b'/' => '/',
        b'b' => '\u{8}',
        b'f' => '\u{c}',
        b'n' => '\n',
        b'r' => '\r',
        b't' => '\t',
        b'u' => {
            let unit = hex4(bytes, at + 2)?;
            if !(0xD800..=0xDBFF).contains(&unit) {
                return Ok((char::from_u32(unit).ok_or(Invalid)?, 6));
            }
            if bytes.get(at + 6..at + 8) != Some(b"\\u") {
                return Err(Invalid);
            }
            let low = hex4(bytes, at + 8)?;
            if !(0xDC00..=0xDFFF).contains(&low) {
                return Err(Invalid);
            }
            let pair = char::from_u32(0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00)).ok_or(Invalid)?;
            return Ok((pair, 12));
        }
        _ => return Err(Invalid),
    };
    Ok((resolved, 2))
}

/// The four hexadecimal digits at `at`, as a number.
fn hex4(bytes: &[u8], at: usize) -> Result<u32, Invalid> {
    let digits = bytes.get(at..at + 4).ok_or(Invalid)?;
    digits.iter().try_fold(0u32, |value, &digit| {
        let digit = char::from(digit).to_digit(16).ok_or(Invalid)?;
        Ok(value * 16 + digit)
    })
}

/// Where a string literal lies in the text (quotes included), and whether it holds escapes.
pub(super) struct StringLiteral {
    pub(super) start: usize,
    pub(super) end: usize,
    pub(super) escaped: bool,
}

/// The text is not one valid JSON value, or nests deeper than `serde_json` accepts.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Invalid;

/// A cursor over a JSON text.
pub(crate) struct Reader<'a> {
    pub(super) text: &'a str,
    pub(super) pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(text: &'a str) -> Self {
        Self { text, pos: 0 }
    }

    pub(super) fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    #[inline]
    pub(super) fn skip_white_space(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.bytes().get(self.pos) {
            self.pos += 1;
        }
    }

    /// The first byte of the next value (white space skipped).
    #[inline]
    pub(super) fn peek_value(&mut self) -> Result<u8, Invalid> {
        self.skip_white_space();
        self.bytes().get(self.pos).copied().ok_or(Invalid)
    }

    #[inline]
    pub(super) fn expect(&mut self, byte: u8) -> Result<(), Invalid> {
        self.skip_white_space();
        if self.bytes().get(self.pos) != Some(&byte) {
            return Err(Invalid);
        }
        self.pos += 1;
        Ok(())
    }

    /// Consumes `close` if it comes next (an empty container).
    #[inline]
    pub(super) fn close(&mut self, close: u8) -> bool {
        self.skip_white_space();
        let found = self.bytes().get(self.pos) == Some(&close);
        self.pos += usize::from(found);
        found
    }

    /// After an element: `true` for a comma (more follow), `false` for `close`.
    #[inline]
    pub(super) fn separator(&mut self, close: u8) -> Result<bool, Invalid> {
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
    pub(super) fn string(&mut self) -> Result<Cow<'a, str>, Invalid> {
        let literal = self.raw_string()?;
        if !literal.escaped {
            return Ok(Cow::Borrowed(&self.text[literal.start + 1..literal.end - 1]));
        }
        let mut unescaped = String::with_capacity(literal.end - literal.start);
        unescape(&self.text[literal.start + 1..literal.end - 1], &mut unescaped)?;
        Ok(Cow::Owned(unescaped))
    }

    /// Reads a string literal without unescaping it (escapes are checked only when unescaping).
    #[inline(always)]
    pub(super) fn raw_string(&mut self) -> Result<StringLiteral, Invalid> {
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
    pub(super) fn number(&mut self) -> Result<(&'a str, bool), Invalid> {
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
    pub(super) fn literal(&mut self) -> Result<&'static str, Invalid> {
        let rest = &self.bytes()[self.pos..];
        let literal = ["true", "false", "null"]
            .into_iter()
            .find(|literal| rest.starts_with(literal.as_bytes()))
            .ok_or(Invalid)?;
        self.pos += literal.len();
        Ok(literal)
    }

    /// Skips the string literal at the cursor (its opening quote): up to the next quote that no
    /// backslash escapes, a block at a time. Only the structure is checked, as in
    /// [`skip`](Self::skip): the texts navigated were read by `serde_json` first.
    #[inline]
    fn skip_string(&mut self) -> Result<(), Invalid> {
        let bytes = self.bytes();
        let mut carry = false;
        let mut at = self.pos + 1;
        while at < bytes.len() {
            let classes = Classes::at(bytes, at);
            let quotes = classes.unescaped_quotes(&mut carry);
            if quotes != 0 {
                self.pos = at + quotes.trailing_zeros() as usize + 1;
                return Ok(());
            }
            at += BLOCK;
        }
        Err(Invalid)
    }

    /// Skips the object or array at the cursor: its brackets outside string literals are
    /// counted a block at a time.
    fn skip_container(&mut self) -> Result<(), Invalid> {
        let bytes = self.bytes();
        let (mut carry, mut in_string): (bool, Mask) = (false, 0);
        let mut depth = 0usize;
        let mut at = self.pos;
        while at < bytes.len() {
            let classes = Classes::at(bytes, at);
            let quotes = classes.unescaped_quotes(&mut carry);
            let strings = inside_quotes(quotes) ^ in_string;
            // All ones when the block ends inside a string literal.
            in_string = Mask::MIN.wrapping_sub(strings >> (BLOCK - 1));
            let mut brackets = (classes.open | classes.close) & !strings;
            while brackets != 0 {
                let bit = brackets & brackets.wrapping_neg();
                if classes.open & bit != 0 {
                    depth += 1;
                } else {
                    depth = depth.checked_sub(1).ok_or(Invalid)?;
                    if depth == 0 {
                        self.pos = at + bit.trailing_zeros() as usize + 1;
                        return Ok(());
                    }
                }
                brackets ^= bit;
            }
            at += BLOCK;
        }
        Err(Invalid)
    }

    /// Skips one value (checking only its structure) and returns its text.
    pub(super) fn skip(&mut self) -> Result<&'a str, Invalid> {
        let first = self.peek_value()?;
        let start = self.pos;
        match first {
            b'"' => self.skip_string()?,
            b'{' | b'[' => self.skip_container()?,
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

/// An object's members (name, value text), in the order written: on the stack up to the size
/// of the objects Lambda's events hold (an HTTP event's top level, its headers and request
/// context).
pub(crate) type Members<'a> = smallvec::SmallVec<[(Cow<'a, str>, &'a str); 16]>;

/// The members of the JSON object `text` (name, value text), in the order written; `None` when
/// `text` is not an object.
pub(crate) fn members(text: &str) -> Option<Members<'_>> {
    let mut members = Members::new();
    for_each_member(text, |name, value| {
        members.push((name, value));
        true
    })?;
    Some(members)
}

/// The value of the member `name` of the JSON object `text` (the last one, if repeated).
pub(crate) fn member<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    let mut found = None;
    for_each_member(text, |member, value| {
        if member == name {
            found = Some(value);
        }
        true
    })?;
    found
}

/// The value of the first member `name` of the JSON object `text`, read no further: for texts
/// that hold each name once (a serialized response).
pub(crate) fn first_member<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    let mut found = None;
    for_each_member(text, |member, value| {
        let matched = member == name;
        if matched {
            found = Some(value);
        }
        !matched
    })?;
    found
}

/// Calls `visit` with each member (name, value text) of the JSON object `text`, in order, while
/// it returns `true`; `None` when `text` is not an object (as far as it was read).
fn for_each_member<'a>(text: &'a str, mut visit: impl FnMut(Cow<'a, str>, &'a str) -> bool) -> Option<()> {
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
        if !visit(name, reader.skip().ok()?) {
            return Some(());
        }
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
    fn unescaping_agrees_with_serde_json() {
        let cases = [
            r#""plain""#,
            r#""a\"b\\c\/d\b\f\n\r\t""#,
            r#""caf\u00e9 \ud83d\ude00 \u0000""#,
            r#""{\"notes\":\"x\",\"n\":1}""#,
            r#""lone \ud83d""#,
            r#""bad \x""#,
            r#""short \u12""#,
            r#""low first \ude00\ud83d""#,
        ];
        for literal in cases {
            let mut ours = String::new();
            let ours = unescape(&literal[1..literal.len() - 1], &mut ours).map(|()| ours);
            let theirs = serde_json::from_str::<String>(literal).map_err(|_| Invalid);
            assert_eq!(ours, theirs, "{literal}");
        }
    }

    #[test]
    fn long_texts_are_read_across_blocks() {
        // Escapes, quotes and brackets at every offset around the blocks' edges.
        for pad in 0..70 {
            let text = "x".repeat(pad);
            let value = serde_json::json!({
                "a": format!("{text}\\\"}}]{text}\u{e9}\n\\"),
                "b": [format!("{text}{{\"\\"), {"c": text.clone() + "\u{1f600}"}],
                "d": text,
            });
            let json = value.to_string();
            let listed = members(&json).unwrap();
            let names: Vec<&str> = listed.iter().map(|(name, _)| name.as_ref()).collect();
            assert_eq!(names, ["a", "b", "d"], "{json}");
            for (name, raw) in &listed {
                let parsed: serde_json::Value = serde_json::from_str(raw).unwrap();
                assert_eq!(parsed, value[name.as_ref()], "{json}");
            }
            let literal = serde_json::to_string(&value["a"]).unwrap();
            let mut ours = String::new();
            unescape(&literal[1..literal.len() - 1], &mut ours).unwrap();
            assert_eq!(ours, value["a"], "{literal}");
            assert_eq!(plain_len(format!("{text}\\{text}").as_bytes()), pad);
            assert_eq!(plain_len(text.as_bytes()), pad);
        }
        assert!(members(r#"{"a": "never closed \" }"#).is_none());
        assert!(members(r#"{"a": [1, {"b": 2}"#).is_none());
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
