//! Masking of sensitive values in everything Keel writes: logged fields and events, routed
//! envelopes, error messages.

use std::borrow::Cow;
use std::sync::OnceLock;

use base64::Engine as _;
use serde_json::Value;

/// The text a redacted value is replaced with.
pub const MASK: &str = "***";

/// The field names masked unless configured otherwise (`KEEL_REDACT_FIELDS`): personal data,
/// card numbers, and the credentials HTTP requests carry in headers and bodies.
pub const DEFAULT_REDACTED_FIELDS: &[&str] = &[
    "email",
    "phone",
    "card_number",
    "authorization",
    "cookie",
    "cookies",
    "x-amz-security-token",
    "password",
    "token",
    "secret",
];

/// Replaces the values of configured field names with [`MASK`], wherever they appear.
///
/// Names match case-insensitively. The default set is [`DEFAULT_REDACTED_FIELDS`]
/// (`KEEL_REDACT_FIELDS` replaces it). Values are found in
/// - JSON documents, at any depth, also inside string values that hold JSON (the `body` of an
///   API Gateway event) or base64-encoded JSON (`isBase64Encoded` bodies);
/// - text: form bodies (`email=a%40b.c&seats=2`), `Debug` output (`Guest { email: "a@b.c" }`),
///   header and `key: value` lines ([`Redactor::redact_text`]).
///
/// Text that looks like a JSON document (it starts with `{` or `[` and ends with `}` or `]`)
/// but cannot be read as one (a lone surrogate, a number out of range, nesting past 128 levels)
/// is masked whole: what it holds cannot be told.
///
/// ```
/// use keel_runtime::logging::Redactor;
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
        let fields = fields
            .into_iter()
            .map(|f| f.as_ref().trim().to_ascii_lowercase())
            .filter(|f| !f.is_empty())
            .collect();
        Self { fields }
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
    /// it was installed.
    pub fn install(&self) -> bool {
        PROCESS_REDACTOR.set(self.clone()).is_ok()
    }

    /// Whether values under `name` are masked.
    pub fn is_sensitive(&self, name: &str) -> bool {
        self.fields.iter().any(|f| f.eq_ignore_ascii_case(name))
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
            None if looks_like_json(text) => Cow::Owned(MASK.to_owned()),
            None => self.redact_text(text),
        }
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
        if self.is_empty() {
            return Cow::Borrowed(text);
        }
        let bytes = text.as_bytes();
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
/// (`=`, `:`, optionally after a closing quote and spaces) follows the name.
fn value_after(bytes: &[u8], end: usize) -> Option<(usize, usize)> {
    let mut at = end;
    if bytes.get(at) == Some(&b'"') {
        at += 1;
    }
    while bytes.get(at) == Some(&b' ') {
        at += 1;
    }
    match bytes.get(at) {
        Some(b'=' | b':') if bytes.get(at + 1) != Some(&b':') => at += 1,
        _ => return None,
    }
    while bytes.get(at).is_some_and(|b| *b == b' ' || *b == b'\t') {
        at += 1;
    }
    let start = at;
    let stop = match bytes.get(at)? {
        b'"' | b'\'' => quoted_end(bytes, at),
        b'{' | b'[' | b'(' => group_end(bytes, at),
        _ => {
            // A type name followed by a group (`Card { … }`, `Some("…")`) is one value.
            let word = at + bytes[at..].iter().take_while(|b| is_name_byte(**b)).count();
            let after_space = word + bytes[word..].iter().take_while(|b| **b == b' ').count();
            match bytes.get(after_space) {
                Some(b'{' | b'(' | b'[') if word > at => group_end(bytes, after_space),
                _ => {
                    at + bytes[at..]
                        .iter()
                        .take_while(|b| !matches!(b, b',' | b';' | b'&' | b')' | b']' | b'}' | b'\n' | b'\r'))
                        .count()
                }
            }
        }
    };
    (stop > start).then_some((start, stop))
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
    fn text_that_only_looks_like_json_is_masked_whole() {
        let redactor = Redactor::default();
        for text in [
            r#"{"email": "a@b.c", "bad": "\ud800"}"#,
            r#"{"email": "a@b.c", "n": 1e400}"#,
            &format!("{}{{\"email\":\"a@b.c\"}}{}", "[".repeat(200), "]".repeat(200)),
        ] {
            assert_eq!(redactor.redact_string(text), MASK, "{text}");
        }
        assert_eq!(redactor.redact_string("[retry 2] failed"), "[retry 2] failed");
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
