//! Masking of sensitive values in everything Keel writes: logged fields and events, routed
//! envelopes, error messages.

use std::borrow::Cow;
use std::sync::OnceLock;

use base64::Engine as _;
use serde_json::Value;

/// The text a redacted value is replaced with.
pub const MASK: &str = "***";

/// The field names masked unless configured otherwise (`KEEL_REDACT_FIELDS`): personal data,
/// card numbers, and the credentials HTTP requests carry in headers and bodies. A name also
/// covers the names that end in it after `_` or `-` (`token`: `access_token`, `id-token`).
pub const DEFAULT_REDACTED_FIELDS: &[&str] = &[
    "email",
    "phone",
    "card_number",
    "authorization",
    "cookie",
    "cookies",
    "set-cookie",
    "x-amz-security-token",
    "password",
    "token",
    "secret",
    "api_key",
    "api-key",
];

/// Replaces the values of configured field names with [`MASK`], wherever they appear.
///
/// Names match case-insensitively, and cover the names that end in them after `_` or `-`
/// (`secret`: `client_secret`). The default set is [`DEFAULT_REDACTED_FIELDS`]
/// (`KEEL_REDACT_FIELDS` replaces it). Values are found in
/// - JSON documents, at any depth, also inside string values that hold JSON (the `body` of an
///   API Gateway event) or base64-encoded JSON (`isBase64Encoded` bodies);
/// - text: form bodies (`email=a%40b.c&seats=2`), `Debug` output (`Guest { email: "a@b.c" }`),
///   header and `key: value` lines ([`Redactor::redact_text`]).
///
/// Text that looks like a JSON document (it starts with `{` or `[` and ends with `}` or `]`)
/// but cannot be read as one (a lone surrogate, a number out of range, nesting past 128
/// levels) is scanned as text; when it holds `\u` escapes, which can spell a name the scan
/// would not see, it is masked whole.
///
/// ```
/// use keel_runtime::redact::Redactor;
/// use serde_json::json;
///
/// let redactor = Redactor::new(["email", "card_number"]);
/// let mut event = json!({"guest": {"email": "a@b.c", "cards": [{"card_number": "4111"}]}, "seats": 2});
/// redactor.redact(&mut event);
/// assert_eq!(event, json!({"guest": {"email": "***", "cards": [{"card_number": "***"}]}, "seats": 2}));
/// assert_eq!(redactor.redact_text("Guest { email: \"a@b.c\", seats: 2 }"), "Guest { email: ***, seats: 2 }");
/// ```
#[derive(Clone, Debug)]
pub struct Redactor {
    fields: Vec<String>,
    /// The last bytes of the names: a word ending in none of them is no name (a quick check).
    last_bytes: [bool; 256],
}

impl Default for Redactor {
    fn default() -> Self {
        Self::new(DEFAULT_REDACTED_FIELDS)
    }
}

/// The redactor of the process, for outputs built where no configuration reaches (the
/// `errorMessage` Lambda returns): set once by `Keel::init`, the defaults until then.
static PROCESS_REDACTOR: OnceLock<Redactor> = OnceLock::new();

impl Redactor {
    /// A redactor for the given field names.
    pub fn new<I, S>(fields: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let fields: Vec<String> = fields
            .into_iter()
            .map(|f| f.as_ref().trim().to_ascii_lowercase())
            .filter(|f| !f.is_empty())
            .collect();
        let mut last_bytes = [false; 256];
        for field in &fields {
            if let Some(last) = field.bytes().last() {
                last_bytes[usize::from(last)] = true;
                last_bytes[usize::from(last.to_ascii_uppercase())] = true;
            }
        }
        Self { fields, last_bytes }
    }

    /// Parses a comma-separated list, as `KEEL_REDACT_FIELDS` holds.
    pub fn from_list(list: &str) -> Self {
        Self::new(list.split(','))
    }

    /// The process's redactor (see [`Redactor::install`]); the defaults if none was installed.
    pub fn process() -> &'static Redactor {
        PROCESS_REDACTOR.get_or_init(Redactor::default)
    }

    /// Makes this the process's redactor, unless one was installed (or used) already; whether
    /// the process's redactor masks the same names now.
    pub fn install(&self) -> bool {
        let installed = PROCESS_REDACTOR.get_or_init(|| self.clone());
        installed.fields == self.fields
    }

    /// Whether values under `name` are masked: it is one of the names, or ends in one after
    /// `_` or `-` (leading dashes, as in `--password`, do not count).
    pub fn is_sensitive(&self, name: &str) -> bool {
        let name = name.trim_start_matches('-').as_bytes();
        if !name
            .last()
            .is_some_and(|last| self.last_bytes[usize::from(*last)])
        {
            return false;
        }
        self.fields.iter().any(|field| {
            let field = field.as_bytes();
            match name.len().checked_sub(field.len()) {
                Some(0) => name.eq_ignore_ascii_case(field),
                Some(start) => {
                    matches!(name[start - 1], b'_' | b'-') && name[start..].eq_ignore_ascii_case(field)
                }
                None => false,
            }
        })
    }

    /// Whether no field is masked.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// Masks every sensitive field of `value`, at any depth — also inside string values that
    /// hold JSON documents or text ([`redact_text`](Self::redact_text)), and inside the
    /// base64-encoded body of an HTTP event.
    pub fn redact(&self, value: &mut Value) {
        if self.is_empty() {
            return;
        }
        match value {
            Value::String(text) => {
                if let Cow::Owned(redacted) = self.redact_string(text) {
                    *text = redacted;
                }
            }
            Value::Object(map) => {
                let base64 = map.get("isBase64Encoded").and_then(Value::as_bool) == Some(true);
                for (key, child) in map.iter_mut() {
                    if self.is_sensitive(key) {
                        *child = Value::String(MASK.to_owned());
                    } else if base64 && key == "body" {
                        self.redact_base64(child);
                    } else {
                        self.redact(child);
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|item| self.redact(item)),
            _ => {}
        }
    }

    /// A base64-encoded body: decoded, redacted as text, encoded again; masked whole when it is
    /// not base64 of UTF-8 text.
    fn redact_base64(&self, body: &mut Value) {
        let Value::String(encoded) = body else {
            return self.redact(body);
        };
        let engine = base64::engine::general_purpose::STANDARD;
        let decoded = engine
            .decode(encoded.as_bytes())
            .ok()
            .and_then(|b| String::from_utf8(b).ok());
        *encoded = match decoded {
            Some(text) => match self.redact_string(&text) {
                Cow::Owned(redacted) => engine.encode(redacted),
                Cow::Borrowed(_) => return,
            },
            None => MASK.to_owned(),
        };
    }

    /// A string value as it may be written: a JSON document it holds redacted (or masked whole
    /// when it only looks like one), any other text redacted by [`redact_text`](Self::redact_text).
    pub fn redact_string<'a>(&self, text: &'a str) -> Cow<'a, str> {
        if self.is_empty() {
            return Cow::Borrowed(text);
        }
        match self.redact_json_text(text) {
            Some(value) => Cow::Owned(value.to_string()),
            None => self.redact_non_json(text),
        }
    }

    /// Text that is not a JSON document: scanned by [`redact_text`](Self::redact_text), or
    /// masked whole when it looks like JSON and holds `\u` escapes (which can spell a name).
    pub(crate) fn redact_non_json<'a>(&self, text: &'a str) -> Cow<'a, str> {
        if looks_like_json(text) && text.contains("\\u") {
            return Cow::Owned(MASK.to_owned());
        }
        self.redact_text(text)
    }

    /// If `text` is a JSON object or array, returns it redacted; otherwise `None`.
    pub fn redact_json_text(&self, text: &str) -> Option<Value> {
        let trimmed = text.trim_start();
        if !(trimmed.starts_with('{') || trimmed.starts_with('[')) {
            return None;
        }
        let mut value: Value = serde_json::from_str(text).ok()?;
        self.redact(&mut value);
        Some(value)
    }

    /// Masks the values of sensitive names in free text: `name=value` (form bodies, query
    /// strings), `name: value` and `"name": value` (`Debug` output, headers, JSON-like text).
    /// A value is a quoted string, a bracketed group (`{…}`, `[…]`, `(…)`, or a type name and
    /// one: `Card { … }`), or else everything up to the next `,` `;` `&` `)` `]` `}` or line
    /// end. Text without a sensitive name is returned as it is, without a copy.
    pub fn redact_text<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let bytes = text.as_bytes();
        // A value follows its name after `=` or `:`: text with neither holds none.
        if self.is_empty() || memchr::memchr2(b'=', b':', bytes).is_none() {
            return Cow::Borrowed(text);
        }
        let mut out: Option<String> = None;
        let mut copied = 0;
        let mut at = 0;
        while at < bytes.len() {
            // Each word once, at its start.
            if !is_name_byte(bytes[at]) {
                at += 1;
                continue;
            }
            let end = at + bytes[at..].iter().take_while(|b| is_name_byte(**b)).count();
            let value = match self.is_sensitive(&text[at..end]) {
                true => value_after(bytes, end),
                false => None,
            };
            at = end;
            if let Some((start, stop)) = value {
                let out = out.get_or_insert_with(|| String::with_capacity(text.len()));
                out.push_str(&text[copied..start]);
                out.push_str(MASK);
                copied = stop;
                at = stop;
            }
        }
        match out {
            Some(mut out) => {
                out.push_str(&text[copied..]);
                Cow::Owned(out)
            }
            None => Cow::Borrowed(text),
        }
    }
}

/// Bytes of a field name: letters, digits, `_` and `-` (header names).
fn is_name_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-'
}

/// Whether `text` starts and ends as a JSON object or array does.
fn looks_like_json(text: &str) -> bool {
    let text = text.trim();
    matches!(
        (text.as_bytes().first(), text.as_bytes().last()),
        (Some(b'{'), Some(b'}')) | (Some(b'['), Some(b']'))
    )
}

/// Where the value after a name that ends at `end` lies (`start..stop`), if a separator
/// (`=`, `:`, optionally after a closing quote — `\"` in escaped text — and spaces) follows the
/// name.
fn value_after(bytes: &[u8], end: usize) -> Option<(usize, usize)> {
    let mut at = end;
    if bytes.get(at) == Some(&b'\\') && bytes.get(at + 1) == Some(&b'"') {
        at += 1;
    }
    if bytes.get(at) == Some(&b'"') {
        at += 1;
    }
    while bytes.get(at) == Some(&b' ') {
        at += 1;
    }
    let separator = match bytes.get(at) {
        Some(&separator @ (b'=' | b':')) if bytes.get(at + 1) != Some(&b':') => separator,
        _ => return None,
    };
    at += 1;
    while bytes.get(at).is_some_and(|b| *b == b' ' || *b == b'\t') {
        at += 1;
    }
    let start = at;
    let stop = match bytes.get(at)? {
        // A string inside escaped text (JSON held in a Debug-printed string): up to `\"`.
        b'\\' if bytes.get(at + 1) == Some(&b'"') => escaped_quote_end(bytes, at + 2),
        b'"' | b'\'' => quoted_end(bytes, at),
        b'{' | b'[' | b'(' => group_end(bytes, at),
        _ => {
            // A type name followed by a group (`Card { … }`, `Some("…")`) is one value.
            let word = at + bytes[at..].iter().take_while(|b| is_name_byte(**b)).count();
            let after_space = word + bytes[word..].iter().take_while(|b| **b == b' ').count();
            match bytes.get(after_space) {
                Some(b'{' | b'(' | b'[') if word > at => group_end(bytes, after_space),
                // After `:` (a header, `Debug`), the rest of the line up to a closing bracket:
                // `Authorization: AWS4-HMAC-SHA256 Credential=…, Signature=…`. After `=` (a form,
                // a query), up to the next separator.
                _ if separator == b':' => {
                    at + bytes[at..]
                        .iter()
                        .take_while(|b| !matches!(b, b')' | b']' | b'}' | b'\n' | b'\r'))
                        .count()
                }
                _ => {
                    at + bytes[at..]
                        .iter()
                        .take_while(|b| {
                            !matches!(b, b',' | b';' | b'&' | b')' | b']' | b'}' | b'\n' | b'\r' | b' ')
                        })
                        .count()
                }
            }
        }
    };
    (stop > start).then_some((start, stop))
}

/// The end of an escaped string whose content starts at `at` (after its closing `\"`; the
/// text's end if it is not closed).
fn escaped_quote_end(bytes: &[u8], at: usize) -> usize {
    bytes[at.min(bytes.len())..]
        .windows(2)
        .position(|pair| pair == b"\\\"")
        .map_or(bytes.len(), |found| at + found + 2)
}

/// The end of the quoted string starting at `at` (after its closing quote; the text's end if
/// it is not closed).
fn quoted_end(bytes: &[u8], at: usize) -> usize {
    let quote = bytes[at];
    let mut i = at + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b if b == quote => return i + 1,
            _ => i += 1,
        }
    }
    bytes.len()
}

/// The end of the bracketed group starting at `at` (after its closing bracket; the text's end
/// if it is not closed), skipping quoted strings inside.
fn group_end(bytes: &[u8], at: usize) -> usize {
    let mut depth = 0usize;
    let mut i = at;
    while i < bytes.len() {
        match bytes[i] {
            b'"' | b'\'' => {
                i = quoted_end(bytes, i);
                continue;
            }
            b'{' | b'[' | b'(' => depth += 1,
            b'}' | b']' | b')' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    bytes.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn masks_at_any_depth_and_ignores_case() {
        let redactor = Redactor::from_list(" Email , phone,,");
        let mut value = json!([{"EMAIL": "x", "nested": {"deeper": [{"phone": {"n": 1}}]}}, "email"]);
        redactor.redact(&mut value);
        assert_eq!(
            value,
            json!([{"EMAIL": "***", "nested": {"deeper": [{"phone": "***"}]}}, "email"])
        );
    }

    #[test]
    fn masks_inside_json_held_in_strings() {
        let redactor = Redactor::default();
        let mut event = json!({"body": "{\"email\":\"a@b.c\",\"seats\":2}", "note": "email me"});
        redactor.redact(&mut event);
        assert_eq!(
            event,
            json!({"body": "{\"email\":\"***\",\"seats\":2}", "note": "email me"})
        );
    }

    #[test]
    fn only_json_text_is_parsed() {
        let redactor = Redactor::default();
        assert_eq!(redactor.redact_json_text("plain text"), None);
        assert_eq!(redactor.redact_json_text("{broken"), None);
        assert_eq!(
            redactor.redact_json_text(r#"{"card_number":"4111"}"#),
            Some(json!({"card_number": "***"}))
        );
    }

    #[test]
    fn text_that_only_looks_like_json_is_scanned_or_masked_whole() {
        let redactor = Redactor::default();
        for text in [
            r#"{"email": "a@b.c", "bad": "\ud800"}"#,
            r#"{"em\u0061il": "a@b.c", "bad": "\ud800"}"#,
        ] {
            assert_eq!(
                redactor.redact_string(text),
                MASK,
                "{text}: escapes can hide a name"
            );
        }
        let deep = format!("{}{{\"email\":\"a@b.c\"}}{}", "[".repeat(200), "]".repeat(200));
        for text in [r#"{"email": "a@b.c", "n": 1e400}"#, deep.as_str()] {
            let redacted = redactor.redact_string(text);
            assert!(
                !redacted.contains("a@b.c") && redacted.contains(MASK),
                "{redacted}"
            );
        }
        assert_eq!(redactor.redact_string("[retry 2] failed"), "[retry 2] failed");
        assert_eq!(redactor.redact_string("[Room { id: 1 }]"), "[Room { id: 1 }]");
    }

    #[test]
    fn names_cover_their_suffixed_forms() {
        let redactor = Redactor::default();
        for name in [
            "access_token",
            "ID-TOKEN",
            "client_secret",
            "x-api-key",
            "--password",
            "Set-Cookie",
        ] {
            assert!(redactor.is_sensitive(name), "{name}");
        }
        for name in ["tokens", "secretary", "emailed", "seats", "", "-"] {
            assert!(!redactor.is_sensitive(name), "{name}");
        }
    }

    #[test]
    fn masks_values_in_text() {
        let redactor = Redactor::default();
        for (text, redacted) in [
            (
                r#"Guest { email: "a@b.c", seats: 2 }"#,
                "Guest { email: ***, seats: 2 }",
            ),
            (
                "email=a%40b.c&seats=2&password=hunter2",
                "email=***&seats=2&password=***",
            ),
            (
                "Authorization: Bearer eyJhbGciOi.x.y\nHost: api",
                "Authorization: ***\nHost: api",
            ),
            (
                r#"Booking { card: Card { card_number: "4111", cvc: 1 }, token: Some("t0k3n") }"#,
                "Booking { card: Card { card_number: ***, cvc: 1 }, token: *** }",
            ),
            (r#"{"phone": "555", "x": 1"#, r#"{"phone": ***, "x": 1"#),
            ("no names here", "no names here"),
            ("phones: 2, emailed", "phones: 2, emailed"),
            (
                r#"Some("{\"email\":\"a@b.c\",\"seats\":2}")"#,
                r#"Some("{\"email\":***,\"seats\":2}")"#,
            ),
            ("--password=hunter2 --verbose", "--password=*** --verbose"),
            (
                "access_token=abc&client_secret=xyz",
                "access_token=***&client_secret=***",
            ),
            (
                "Authorization: AWS4-HMAC-SHA256 Credential=AKIA/x, Signature=abc\nHost: h",
                "Authorization: ***\nHost: h",
            ),
            ("rooms: [Room { id: 1 }]", "rooms: [Room { id: 1 }]"),
        ] {
            assert_eq!(redactor.redact_text(text), redacted, "{text}");
        }
    }

    #[test]
    fn base64_bodies_are_redacted_inside() {
        let engine = base64::engine::general_purpose::STANDARD;
        let redactor = Redactor::default();
        let mut event = json!({
            "isBase64Encoded": true,
            "body": engine.encode(r#"{"email":"a@b.c","seats":2}"#),
        });
        redactor.redact(&mut event);
        let body = engine.decode(event["body"].as_str().unwrap()).unwrap();
        assert_eq!(String::from_utf8(body).unwrap(), r#"{"email":"***","seats":2}"#);
        let mut binary = json!({"isBase64Encoded": true, "body": "not base64 !"});
        redactor.redact(&mut binary);
        assert_eq!(binary["body"], MASK);
    }

    #[test]
    fn header_credentials_are_masked_by_default() {
        let redactor = Redactor::default();
        let mut event = json!({"headers": {"Authorization": "Bearer x", "cookie": "s=1", "X-Amz-Security-Token": "t"}, "cookies": ["s=1"]});
        redactor.redact(&mut event);
        assert_eq!(
            event,
            json!({"headers": {"Authorization": "***", "cookie": "***", "X-Amz-Security-Token": "***"}, "cookies": "***"})
        );
    }
}
