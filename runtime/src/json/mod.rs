//! JSON text without trees: small helpers to write JSON straight into a `String` (the hot paths
//! that render a log line or an EMF document), a [`reader`] to navigate a JSON text, and its
//! [`canonical`] form (what idempotency keys and payload hashes are made of).

mod blocks;
pub(crate) mod canonical;
pub(crate) mod reader;

use std::fmt::Write;

/// Appends `text` as a JSON string literal (quotes included).
pub(crate) fn push_str(buf: &mut String, text: &str) {
    buf.push('"');
    // Most text needs no escaping: one vectorizable scan (no early exit inside a chunk), one copy.
    let clean = text.as_bytes().chunks(32).all(|chunk| {
        !chunk.iter().fold(false, |escape, &b| {
            escape | (b < 0x20) | (b == b'"') | (b == b'\\')
        })
    });
    if clean {
        buf.push_str(text);
        buf.push('"');
        return;
    }
    let mut start = 0;
    for (i, byte) in text.bytes().enumerate() {
        let escape = match byte {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0x00..=0x1f => "",
            _ => continue,
        };
        buf.push_str(&text[start..i]);
        if escape.is_empty() {
            let _ = write!(buf, "\\u{byte:04x}");
        } else {
            buf.push_str(escape);
        }
        start = i + 1;
    }
    buf.push_str(&text[start..]);
    buf.push('"');
}

/// Appends `"key":` (with a leading comma unless the object was just opened).
pub(crate) fn push_key(buf: &mut String, key: &str) {
    if !buf.ends_with('{') {
        buf.push(',');
    }
    push_str(buf, key);
    buf.push(':');
}

/// Appends a finite `f64` as a JSON number; integers are written without a fraction.
pub(crate) fn push_f64(buf: &mut String, value: f64) {
    debug_assert!(value.is_finite());
    if value.fract() == 0.0 && value.abs() < 1e15 {
        let _ = write!(buf, "{}", value as i64);
    } else {
        let _ = write!(buf, "{value}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_like_serde_json() {
        for text in [
            "plain",
            "quote\" back\\slash",
            "line\nbreak\ttab\r",
            "\u{1}\u{1f}\u{8}\u{c}\u{7f}",
            "é ✓",
        ] {
            let mut buf = String::new();
            push_str(&mut buf, text);
            assert_eq!(buf, serde_json::to_string(text).unwrap());
        }
    }

    #[test]
    fn numbers_round_trip() {
        for value in [0.0, 1.0, -3.0, 0.25, 1e20, 123456.789, -1e-7] {
            let mut buf = String::new();
            push_f64(&mut buf, value);
            assert_eq!(buf.parse::<f64>().unwrap(), value);
        }
    }
}
