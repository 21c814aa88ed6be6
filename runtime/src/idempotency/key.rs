//! Idempotency keys and payload hashes: which part of an event identifies a request, and its
//! canonical JSON (key order and white space irrelevant) hashed with SHA-256.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::value::RawValue;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::json;

/// Which part of the event is the idempotency key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeySource {
    /// A header of an HTTP event (API Gateway, ALB, function URL), matched case-insensitively,
    /// e.g. `Idempotency-Key`.
    Header(String),
    /// A JSON pointer into the event, e.g. `/detail/order_id`.
    Pointer(String),
    /// The whole request: for an HTTP event its body, otherwise the whole event.
    Request,
}

/// Which part of the event must be the same for a replay (its hash is stored with the record).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum PayloadSource {
    /// The whole request: for an HTTP event its body (headers, request ids and timestamps
    /// change between retries), otherwise the whole event. The default.
    #[default]
    Request,
    /// A JSON pointer into the event; a missing part hashes as `null`.
    Pointer(String),
}

/// The key and validation hash of one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestKey {
    /// The record id: `<prefix>#<sha256 hex>`.
    pub id: String,
    /// SHA-256 hex of the canonical payload.
    pub validation: String,
    /// Whether the event is an HTTP request (its errors and replays are HTTP responses).
    pub http: bool,
}

/// Computes the record id and validation hash of `event`.
///
/// Works on the event's text — sub-documents are borrowed, never built into a `Value` tree, and
/// the top-level object is read once — so a 1 KB event costs a few microseconds.
pub fn request_key(
    event: &RawValue,
    key: &KeySource,
    payload: &PayloadSource,
    prefix: &str,
) -> Result<RequestKey, String> {
    let top = members(event);
    let http = top.as_deref().is_some_and(is_http_members);
    let body;
    let request = if http {
        body = Body::of(top.as_deref().unwrap_or_default());
        body.as_raw()
    } else {
        Some(event)
    };
    let key_part = match key {
        KeySource::Header(name) => header(top.as_deref(), name)?,
        KeySource::Pointer(pointer) => match raw_pointer(event, top.as_deref(), pointer) {
            Some(value) if value.get() != "null" => value,
            _ => return Err(format!("the event has no value at `{pointer}`")),
        },
        KeySource::Request => request.unwrap_or(NULL),
    };
    let key_text = canonical_raw(key_part, None);
    if key_text.trim_matches('"').trim().is_empty() {
        return Err("the idempotency key is empty".into());
    }
    let key_hash = sha256_hex(&key_text);
    if *key == KeySource::Request && *payload == PayloadSource::Request {
        // The request is both the key and the payload: one hash serves both.
        return Ok(RequestKey {
            id: format!("{prefix}#{key_hash}"),
            validation: key_hash,
            http,
        });
    }
    let payload_text = match payload {
        // The whole event: its members are already read.
        PayloadSource::Request if !http => canonical_raw(event, top.as_deref()),
        PayloadSource::Request => canonical_raw(request.unwrap_or(NULL), None),
        PayloadSource::Pointer(pointer) => {
            canonical_raw(raw_pointer(event, top.as_deref(), pointer).unwrap_or(NULL), None)
        }
    };
    Ok(RequestKey {
        id: format!("{prefix}#{key_hash}"),
        validation: sha256_hex(&payload_text),
        http,
    })
}

/// The key and validation hash of a unit of work inside a handler.
pub fn work_key(key: &Value, payload: &Value, prefix: &str) -> RequestKey {
    RequestKey {
        id: format!("{prefix}#{}", sha256_hex(&canonical(key))),
        validation: sha256_hex(&canonical(payload)),
        http: false,
    }
}

const NULL: &RawValue = RawValue::NULL;

/// The members of a JSON object, sorted by name and borrowed from its text; `None` if it is not
/// an object.
fn members(value: &RawValue) -> Option<Vec<Member<'_>>> {
    if !value.get().starts_with('{') {
        return None;
    }
    let map: BTreeMap<Key<'_>, &RawValue> = serde_json::from_str(value.get()).ok()?;
    Some(map.into_iter().map(|(k, v)| (k.0, v)).collect())
}

type Member<'a> = (Cow<'a, str>, &'a RawValue);

/// An object key, borrowed unless it holds escapes.
#[derive(PartialEq, Eq, PartialOrd, Ord, serde::Deserialize)]
struct Key<'a>(#[serde(borrow)] Cow<'a, str>);

fn find<'a>(members: &[Member<'a>], name: &str) -> Option<&'a RawValue> {
    members.iter().find(|(k, _)| k == name).map(|(_, v)| *v)
}

/// Follows a JSON pointer (RFC 6901) through the text of `value` (whose members, if already
/// read, are `top`).
fn raw_pointer<'a>(value: &'a RawValue, top: Option<&[Member<'a>]>, pointer: &str) -> Option<&'a RawValue> {
    if pointer.is_empty() {
        return Some(value);
    }
    let mut current = value;
    for (depth, token) in pointer.strip_prefix('/')?.split('/').enumerate() {
        let token = token.replace("~1", "/").replace("~0", "~");
        current = match (depth, top) {
            (0, Some(top)) => find(top, &token)?,
            _ if current.get().starts_with('[') => {
                let items: Vec<&RawValue> = serde_json::from_str(current.get()).ok()?;
                *items.get(token.parse::<usize>().ok()?)?
            }
            _ => find(&members(current)?, &token)?,
        };
    }
    Some(current)
}

fn header<'a>(top: Option<&[Member<'a>]>, name: &str) -> Result<&'a RawValue, String> {
    let headers = top
        .and_then(|top| find(top, "headers"))
        .and_then(members)
        .ok_or_else(|| format!("the event has no headers, so no `{name}` header"))?;
    headers
        .into_iter()
        .find(|(key, value)| key.eq_ignore_ascii_case(name) && value.get() != "null")
        .map(|(_, value)| value)
        .ok_or_else(|| format!("the request has no `{name}` header"))
}

/// Whether `event` is an HTTP request event (API Gateway REST/HTTP API, ALB, function URL).
pub(crate) fn is_http(event: &RawValue) -> bool {
    members(event).as_deref().is_some_and(is_http_members)
}

fn is_http_members(members: &[Member<'_>]) -> bool {
    let has = |name: &str| find(members, name).is_some();
    has("requestContext") && (has("httpMethod") || has("routeKey") || has("rawPath"))
}

/// An HTTP event's body: JSON text when it holds JSON, otherwise the body as it is.
enum Body<'a> {
    Json(Box<RawValue>),
    Raw(&'a RawValue),
    Missing,
}

impl<'a> Body<'a> {
    fn of(members: &[Member<'a>]) -> Self {
        let base64 = find(members, "isBase64Encoded").is_some_and(|v| v.get() == "true");
        match find(members, "body") {
            None => Body::Missing,
            Some(body) if base64 || !body.get().starts_with('"') => Body::Raw(body),
            Some(body) => {
                let text: Cow<'_, str> = serde_json::from_str::<Key<'_>>(body.get())
                    .map(|k| k.0)
                    .unwrap_or_default();
                match serde_json::from_str::<Box<RawValue>>(&text) {
                    Ok(json) => Body::Json(json),
                    Err(_) => Body::Raw(body),
                }
            }
        }
    }

    fn as_raw(&self) -> Option<&RawValue> {
        match self {
            Body::Json(json) => Some(json),
            Body::Raw(raw) => Some(raw),
            Body::Missing => None,
        }
    }
}

/// Canonical JSON of a borrowed document (see [`canonical`]); `top` are its members, if read.
fn canonical_raw(value: &RawValue, top: Option<&[Member<'_>]>) -> String {
    let mut out = String::with_capacity(value.get().len());
    match top {
        Some(top) => write_canonical_members(top, &mut out),
        None => write_canonical_raw(value, &mut out),
    }
    out
}

fn write_canonical_members(members: &[Member<'_>], out: &mut String) {
    out.push('{');
    for (i, (key, value)) in members.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        json::push_str(out, key);
        out.push(':');
        write_canonical_raw(value, out);
    }
    out.push('}');
}

fn write_canonical_raw(value: &RawValue, out: &mut String) {
    let text = value.get();
    match text.as_bytes().first() {
        Some(b'{') => write_canonical_members(&members(value).unwrap_or_default(), out),
        Some(b'[') => {
            out.push('[');
            let items: Vec<&RawValue> = serde_json::from_str(text).unwrap_or_default();
            for (i, item) in items.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical_raw(item, out);
            }
            out.push(']');
        }
        Some(b'"') => match serde_json::from_str::<Key<'_>>(text) {
            Ok(decoded) => json::push_str(out, &decoded.0),
            Err(_) => out.push_str(text),
        },
        // Numbers, booleans and null: formatted as `Value` formats them.
        _ => match serde_json::from_str::<Value>(text) {
            Ok(value) => {
                let _ = write!(out, "{value}");
            }
            Err(_) => out.push_str(text),
        },
    }
}

/// JSON text with object keys sorted at every depth and no insignificant white space.
pub fn canonical(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (key, value)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                json::push_str(out, key);
                out.push(':');
                write_canonical(value, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        Value::String(text) => json::push_str(out, text),
        other => {
            let _ = write!(out, "{other}");
        }
    }
}

/// SHA-256 of `text`, as lowercase hex.
pub fn sha256_hex(text: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = Sha256::digest(text.as_bytes());
    let mut hex = String::with_capacity(64);
    for byte in digest {
        hex.push(HEX[usize::from(byte >> 4)] as char);
        hex.push(HEX[usize::from(byte & 0xf)] as char);
    }
    hex
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key_of(
        event: &str,
        key: &KeySource,
        payload: &PayloadSource,
        prefix: &str,
    ) -> Result<RequestKey, String> {
        let raw: &RawValue = serde_json::from_str(event).unwrap();
        request_key(raw, key, payload, prefix)
    }

    #[test]
    fn the_text_canonicalizer_agrees_with_the_value_one() {
        let documents = [
            r#"{"z": [3, 1.5, -0, 1e3, {"b": null, "a": true}], "a\u0041": "é\n\"", "m": {}}"#,
            r#"[]"#,
            r#""plain""#,
            r#"12.50"#,
        ];
        for text in documents {
            let raw: &RawValue = serde_json::from_str(text).unwrap();
            let value: Value = serde_json::from_str(text).unwrap();
            assert_eq!(canonical_raw(raw, None), canonical(&value), "{text}");
            if let Some(top) = members(raw) {
                assert_eq!(canonical_raw(raw, Some(&top)), canonical_raw(raw, None), "{text}");
            }
        }
    }

    #[test]
    fn pointers_follow_objects_and_arrays() {
        let raw: &RawValue =
            serde_json::from_str(r#"{"a/b": {"list": [{"id": "x"}, {"id": "y"}]}}"#).unwrap();
        assert_eq!(
            raw_pointer(raw, None, "/a~1b/list/1/id").map(RawValue::get),
            Some(r#""y""#)
        );
        assert!(raw_pointer(raw, None, "/a~1b/list/2").is_none());
        assert!(raw_pointer(raw, members(raw).as_deref(), "/missing").is_none());
    }

    #[test]
    fn key_order_and_white_space_do_not_matter() {
        let a = r#"{"b": 1, "a": {"y": [1, 2], "x": "s"}}"#;
        let b = r#"{"a":{"x":"s","y":[1,2]},"b":1}"#;
        let key = |e| key_of(e, &KeySource::Request, &PayloadSource::Request, "fn").unwrap();
        assert_eq!(key(a), key(b));
        assert_eq!(canonical(&serde_json::from_str(a).unwrap()), b);
    }

    #[test]
    fn http_events_are_keyed_by_header_and_validated_by_body() {
        let event = |request_id: &str, key: &str, body: &str| {
            json!({
                "routeKey": "POST /bookings", "rawPath": "/bookings",
                "headers": {"idempotency-key": key}, "body": body,
                "requestContext": {"requestId": request_id}
            })
            .to_string()
        };
        let header = KeySource::Header("Idempotency-Key".into());
        let key = |request_id: &str, body: &str| {
            key_of(
                &event(request_id, "k1", body),
                &header,
                &PayloadSource::Request,
                "api",
            )
            .unwrap()
        };
        let first = key("r1", r#"{"seats":2,"room":"a"}"#);
        let retry = key("r2", r#"{"room":"a","seats":2}"#);
        let other = key("r3", r#"{"room":"b","seats":2}"#);
        assert_eq!(first, retry, "a retry differs only in request id and key order");
        assert_eq!(first.id, other.id);
        assert_ne!(first.validation, other.validation);
        assert!(first.id.starts_with("api#") && first.id.len() == "api#".len() + 64);
    }

    #[test]
    fn missing_keys_are_explained() {
        let header = KeySource::Header("Idempotency-Key".into());
        let no_header = key_of(r#"{"headers":{}}"#, &header, &PayloadSource::Request, "f").unwrap_err();
        assert_eq!(no_header, "the request has no `Idempotency-Key` header");
        let pointer = KeySource::Pointer("/order".into());
        let null = key_of(r#"{"order":null}"#, &pointer, &PayloadSource::Request, "f").unwrap_err();
        assert_eq!(null, "the event has no value at `/order`");
        let empty = key_of(r#"{"order":" "}"#, &pointer, &PayloadSource::Request, "f").unwrap_err();
        assert_eq!(empty, "the idempotency key is empty");
        assert!(key_of("[1]", &header, &PayloadSource::Request, "f").is_err());
        assert!(key_of("\"text\"", &pointer, &PayloadSource::Request, "f").is_err());
    }
}
