//! Idempotency keys and payload hashes: which part of an event identifies a request, and its
//! canonical JSON (key order and white space irrelevant) hashed with SHA-256.

use std::borrow::Cow;
use std::fmt::Write as _;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
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
/// The event's text is read once into a borrowed tree ([`Node`]: strings borrowed, object
/// members sorted as they are read), from which the key, the payload and their canonical forms
/// come — a 1 KB event costs a couple of microseconds.
pub fn request_key(
    event: &RawValue,
    key: &KeySource,
    payload: &PayloadSource,
    prefix: &str,
) -> Result<RequestKey, String> {
    let event: Node<'_> =
        serde_json::from_str(event.get()).map_err(|e| format!("the event is not JSON: {e}"))?;
    let http = event.is_http();
    let body = if http { event.body() } else { None };
    let request = if http {
        body.as_ref().map(Body::node).unwrap_or(&Node::Null)
    } else {
        &event
    };
    let key_part = match key {
        KeySource::Header(name) => event.header(name)?,
        KeySource::Pointer(pointer) => match event.pointer(pointer) {
            Some(Node::Null) | None => return Err(format!("the event has no value at `{pointer}`")),
            Some(value) => value,
        },
        KeySource::Request => request,
    };
    let key_text = key_part.canonical();
    if key_text.trim_matches('"').trim().is_empty() {
        return Err("the idempotency key is empty".into());
    }
    let key_hash = sha256_hex(&key_text);
    let validation = match payload {
        // The request is both the key and the payload: one hash serves both.
        PayloadSource::Request if *key == KeySource::Request => key_hash.clone(),
        PayloadSource::Request => sha256_hex(&request.canonical()),
        PayloadSource::Pointer(pointer) => {
            sha256_hex(&event.pointer(pointer).unwrap_or(&Node::Null).canonical())
        }
    };
    Ok(RequestKey {
        id: format!("{prefix}#{key_hash}"),
        validation,
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

/// Whether `event` is an HTTP request event (API Gateway REST/HTTP API, ALB, function URL).
pub(crate) fn is_http(event: &RawValue) -> bool {
    serde_json::from_str::<Node<'_>>(event.get()).is_ok_and(|node| node.is_http())
}

/// A JSON document read once from its text: strings borrowed unless they hold escapes, object
/// members sorted by name as they are read.
#[derive(Debug, PartialEq)]
enum Node<'a> {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    String(Cow<'a, str>),
    Array(Vec<Node<'a>>),
    Object(Vec<(Cow<'a, str>, Node<'a>)>),
}

/// An HTTP event's body: parsed when it holds JSON, otherwise the text itself.
enum Body<'a> {
    Json(Node<'static>),
    Text(&'a Node<'a>),
}

impl Body<'_> {
    fn node(&self) -> &Node<'_> {
        match self {
            Body::Json(node) => node,
            Body::Text(node) => node,
        }
    }
}

impl<'a> Node<'a> {
    fn get(&self, name: &str) -> Option<&Node<'a>> {
        match self {
            Node::Object(members) => members
                .binary_search_by(|(key, _)| key.as_ref().cmp(name))
                .ok()
                .map(|i| &members[i].1),
            _ => None,
        }
    }

    /// Follows a JSON pointer (RFC 6901).
    fn pointer(&self, pointer: &str) -> Option<&Node<'a>> {
        if pointer.is_empty() {
            return Some(self);
        }
        let mut current = self;
        for token in pointer.strip_prefix('/')?.split('/') {
            let token = token.replace("~1", "/").replace("~0", "~");
            current = match current {
                Node::Array(items) => items.get(token.parse::<usize>().ok()?)?,
                other => other.get(&token)?,
            };
        }
        Some(current)
    }

    fn header(&self, name: &str) -> Result<&Node<'a>, String> {
        let Some(Node::Object(headers)) = self.get("headers") else {
            return Err(format!("the event has no headers, so no `{name}` header"));
        };
        headers
            .iter()
            .find(|(key, value)| key.eq_ignore_ascii_case(name) && *value != Node::Null)
            .map(|(_, value)| value)
            .ok_or_else(|| format!("the request has no `{name}` header"))
    }

    fn is_http(&self) -> bool {
        self.get("requestContext").is_some()
            && (self.get("httpMethod").is_some()
                || self.get("routeKey").is_some()
                || self.get("rawPath").is_some())
    }

    fn body(&self) -> Option<Body<'_>> {
        let body = self.get("body")?;
        let base64 = self.get("isBase64Encoded") == Some(&Node::Bool(true));
        match body {
            Node::String(text) if !base64 => match serde_json::from_str::<Node<'_>>(text) {
                Ok(json) => Some(Body::Json(json.into_owned())),
                Err(_) => Some(Body::Text(body)),
            },
            _ => Some(Body::Text(body)),
        }
    }

    fn into_owned(self) -> Node<'static> {
        match self {
            Node::Null => Node::Null,
            Node::Bool(b) => Node::Bool(b),
            Node::Number(n) => Node::Number(n),
            Node::String(s) => Node::String(Cow::Owned(s.into_owned())),
            Node::Array(items) => Node::Array(items.into_iter().map(Node::into_owned).collect()),
            Node::Object(members) => Node::Object(
                members
                    .into_iter()
                    .map(|(k, v)| (Cow::Owned(k.into_owned()), v.into_owned()))
                    .collect(),
            ),
        }
    }

    /// Canonical JSON (see [`canonical`]).
    fn canonical(&self) -> String {
        let mut out = String::with_capacity(256);
        self.write_canonical(&mut out);
        out
    }

    fn write_canonical(&self, out: &mut String) {
        match self {
            Node::Null => out.push_str("null"),
            Node::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Node::Number(n) => {
                let _ = write!(out, "{n}");
            }
            Node::String(s) => json::push_str(out, s),
            Node::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    item.write_canonical(out);
                }
                out.push(']');
            }
            Node::Object(members) => {
                out.push('{');
                for (i, (key, value)) in members.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    json::push_str(out, key);
                    out.push(':');
                    value.write_canonical(out);
                }
                out.push('}');
            }
        }
    }
}

/// An object key, borrowed unless it holds escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_str(NodeVisitor)
            .and_then(|node| match node {
                Node::String(text) => Ok(Key(text)),
                _ => Err(de::Error::custom("an object key is not a string")),
            })
    }
}

impl<'de> Deserialize<'de> for Node<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Node::Null)
    }

    fn visit_bool<E>(self, value: bool) -> Result<Self::Value, E> {
        Ok(Node::Bool(value))
    }

    fn visit_i64<E>(self, value: i64) -> Result<Self::Value, E> {
        Ok(Node::Number(value.into()))
    }

    fn visit_u64<E>(self, value: u64) -> Result<Self::Value, E> {
        Ok(Node::Number(value.into()))
    }

    fn visit_f64<E>(self, value: f64) -> Result<Self::Value, E> {
        Ok(serde_json::Number::from_f64(value).map_or(Node::Null, Node::Number))
    }

    fn visit_borrowed_str<E>(self, value: &'de str) -> Result<Self::Value, E> {
        Ok(Node::String(Cow::Borrowed(value)))
    }

    fn visit_str<E>(self, value: &str) -> Result<Self::Value, E> {
        Ok(Node::String(Cow::Owned(value.to_owned())))
    }

    fn visit_string<E>(self, value: String) -> Result<Self::Value, E> {
        Ok(Node::String(Cow::Owned(value)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut members: Vec<(Cow<'de, str>, Node<'de>)> = Vec::with_capacity(map.size_hint().unwrap_or(0));
        while let Some((key, value)) = map.next_entry::<Key<'de>, Node<'de>>()? {
            members.push((key.0, value));
        }
        // Sorted for canonical output and binary search; a repeated name keeps its last value,
        // as `serde_json::Value` does.
        members.sort_by(|a, b| a.0.cmp(&b.0));
        members.dedup_by(|later, earlier| {
            let same = later.0 == earlier.0;
            if same {
                std::mem::swap(later, earlier);
            }
            same
        });
        Ok(Node::Object(members))
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
    fn the_tree_canonicalizer_agrees_with_the_value_one() {
        let documents = [
            r#"{"z": [3, 1.5, -0, 1e3, {"b": null, "a": true}], "a\u0041": "é\n\"", "m": {}, "d": 1, "d": 2}"#,
            r#"[]"#,
            r#""plain""#,
            r#"12.50"#,
        ];
        for text in documents {
            let node: Node<'_> = serde_json::from_str(text).unwrap();
            let value: Value = serde_json::from_str(text).unwrap();
            assert_eq!(node.canonical(), canonical(&value), "{text}");
        }
    }

    #[test]
    fn pointers_follow_objects_and_arrays() {
        let node: Node<'_> =
            serde_json::from_str(r#"{"a/b": {"list": [{"id": "x"}, {"id": "y"}]}}"#).unwrap();
        assert_eq!(node.pointer("/a~1b/list/1/id"), Some(&Node::String("y".into())));
        assert!(node.pointer("/a~1b/list/2").is_none());
        assert!(node.pointer("/missing").is_none());
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
