//! Idempotency keys and payload hashes: which part of an event identifies a request, and its
//! canonical JSON (key order and white space irrelevant) hashed with SHA-256.

use std::borrow::Cow;
use std::sync::Arc;

use serde_json::value::RawValue;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::event;
use crate::hash::{sha256_hex, HexDigest};
use crate::json::{canonical as json_canonical, reader};

/// Which part of the event is the idempotency key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeySource {
    /// A header of an HTTP event (API Gateway, ALB, function URL), matched case-insensitively,
    /// e.g. `Idempotency-Key`.
    Header(String),
    /// A JSON pointer into the event, e.g. `/detail/order_id`.
    Pointer(String),
    /// The whole request. For an HTTP event (API Gateway REST or HTTP API, ALB, function URL)
    /// that is what identifies the request: its method, path, query, body and caller (the JWT or
    /// Cognito `sub`, the IAM principal's ARN, a Lambda authorizer's principal; none without an
    /// authorizer) — `GET /bookings/1` and `GET /bookings/2` are different requests, and so is
    /// one body posted by two callers; otherwise the whole event. A key from a header or a
    /// pointer of an HTTP event is scoped to its caller too. (Powertools for AWS Lambda hashes
    /// the whole event by default; for HTTP events that changes with every retry, as request
    /// ids and timestamps are part of it.)
    Request,
}

/// Which part of the event must be the same for a replay (its hash is stored with the record).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum PayloadSource {
    /// The whole request: for an HTTP event its method, path, query, body and caller (headers,
    /// request ids and timestamps change between retries), otherwise the whole event. The
    /// default.
    #[default]
    Request,
    /// A JSON pointer into the event; a missing part hashes as `null`.
    Pointer(String),
}

/// The key and validation hash of one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RequestKey {
    /// The record id: `<prefix>#<sha256 hex>`.
    pub(crate) id: Arc<str>,
    /// SHA-256 hex of the canonical payload.
    pub(crate) validation: Arc<str>,
    /// Whether the event is an HTTP request (its errors and replays are HTTP responses).
    pub(crate) http: bool,
    /// Whether its HTTP response may carry `cookies` (see `event::takes_cookies`).
    pub(crate) cookies: bool,
}

impl RequestKey {
    /// What an answer to its event is: `None` when it is not an HTTP request, else whether the
    /// response may carry `cookies` (as `event::http_answer` says).
    pub(crate) fn http_answer(&self) -> Option<bool> {
        self.http.then_some(self.cookies)
    }
}

/// Computes the record id and validation hash of `event`.
///
/// Only the parts that make the key and the payload are read closely: the event's text is
/// walked without building a tree, and each part is written in canonical form (see
/// [`canonical`]) in one pass, into buffers the thread reuses, then hashed.
///
/// For an HTTP event (API Gateway REST or HTTP API, ALB, function URL) "the request" is the
/// canonical JSON object `{"body", "caller", "method", "path", "query"}`: `GET /bookings/1` and
/// `GET /bookings/2` are different requests, and so are the same body posted by two callers.
/// The caller is the identity the event carries (the JWT or Cognito `sub`, the IAM principal's
/// ARN, a Lambda authorizer's principal), `null` without one. A key taken from a header or a
/// pointer of an HTTP event is scoped to its caller too, so that two callers choosing the same
/// key never meet. (Powertools for AWS Lambda hashes the whole event by default, which for HTTP
/// events changes with every retry: request ids and timestamps are part of it.)
pub(crate) fn request_key(
    event: &RawValue,
    key: &KeySource,
    payload: &PayloadSource,
    prefix: &str,
) -> Result<RequestKey, String> {
    let event = event.get();
    let top = top_level_members(event, key);
    let http = top.as_deref().filter(|members| event::is_http_members(members));
    // The members of an HTTP event's `requestContext`, read once for its caller and method.
    let context = http
        .and_then(|members| reader::get(members, "requestContext"))
        .and_then(reader::members)
        .unwrap_or_default();
    let caller = http.and_then(|_| caller(&context));
    // The request is an HTTP event's method, path, query, body and caller, otherwise the whole
    // event.
    let request_hash = |role| match http {
        Some(members) => http_request_hash(members, &context, caller),
        None => canonical_digest(event, role),
    };
    // A key chosen by the caller is scoped to the caller, when the event says who it is: the
    // hash of `{"caller":…,"key":"<key hash>"}`, written straight into the hasher.
    let scoped_hash = |part: &str| {
        let key_hash = canonical_digest(part, Role::Key)?;
        let Some(caller) = caller else {
            return Ok(key_hash);
        };
        let mut scoped = Sha256::new_with_prefix(b"{\"caller\":");
        push_canonical(&mut scoped, caller)?;
        scoped.update(b",\"key\":\"");
        scoped.update(key_hash.as_str().as_bytes());
        scoped.update(b"\"}");
        Ok::<_, String>(HexDigest::of(scoped))
    };
    let key_hash = match key {
        KeySource::Header(name) => scoped_hash(event::header(top.as_deref(), name)?)?,
        KeySource::Pointer(pointer) => match reader::pointer(event, pointer) {
            Some("null") | None => return Err(format!("the event has no value at `{pointer}`")),
            Some(value) => scoped_hash(value)?,
        },
        KeySource::Request => request_hash(Role::Key)?,
    };
    let validation = match payload {
        // The request is both the key and the payload: one hash serves both.
        PayloadSource::Request if *key == KeySource::Request => key_hash,
        PayloadSource::Request => request_hash(Role::Payload)?,
        PayloadSource::Pointer(pointer) => {
            canonical_digest(reader::pointer(event, pointer).unwrap_or("null"), Role::Payload)?
        }
    };
    Ok(RequestKey {
        id: record_id(prefix, key_hash.as_str()),
        validation: Arc::from(validation.as_str()),
        http: http.is_some(),
        cookies: http.is_some_and(event::takes_cookies),
    })
}

/// What a hashed part of the event is for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    /// The idempotency key: it may not be empty.
    Key,
    /// The payload replays are checked against.
    Payload,
}

/// The event's top-level members, when they are needed: to find a header or the body of an
/// HTTP event. Only an event that holds the text `"requestContext"` can be one, so other events
/// are not walked twice.
fn top_level_members<'a>(event: &'a str, key: &KeySource) -> Option<reader::Members<'a>> {
    let may_be_http = memchr::memmem::find(event.as_bytes(), b"\"requestContext\"").is_some();
    if may_be_http || matches!(key, KeySource::Header(_)) {
        reader::members(event)
    } else {
        None
    }
}

/// SHA-256 of the canonical form of a part of the event (already known to be JSON: the runtime
/// read it).
fn canonical_digest(text: &str, role: Role) -> Result<HexDigest, String> {
    json_canonical::with_canonical(text, |canonical| hash_part(canonical, role))
        .map_err(|_| "the event is not valid JSON".to_owned())?
}

fn hash_part(canonical: &str, role: Role) -> Result<HexDigest, String> {
    if role == Role::Key && canonical.trim_matches('"').trim().is_empty() {
        return Err("the idempotency key is empty".into());
    }
    Ok(HexDigest::of_text(canonical))
}

/// Where an HTTP event says who its caller is, most specific first: a JWT authorizer's or a
/// Cognito user pool's `sub`, the IAM principal, a Lambda authorizer's principal or context.
const CALLER_POINTERS: &[&str] = &[
    "/authorizer/jwt/claims/sub",
    "/authorizer/claims/sub",
    "/authorizer/iam/userArn",
    "/identity/userArn",
    "/identity/cognitoIdentityId",
    "/authorizer/principalId",
    "/authorizer/lambda",
];

/// The caller identity of an HTTP event (JSON text), if it carries one; `context` is the
/// members of its `requestContext`.
fn caller<'a>(context: &[(Cow<'_, str>, &'a str)]) -> Option<&'a str> {
    CALLER_POINTERS.iter().find_map(|pointer| {
        // The first step from the members already read, the rest (`/…`) within that member.
        let first = pointer[1..].split('/').next().unwrap_or_default();
        let member = reader::get(context, first)?;
        let value = reader::pointer(member, &pointer[1 + first.len()..])?;
        (value != "null").then_some(value)
    })
}

/// The first of `names` an HTTP event has (not `null`), as JSON text.
fn first_present<'a>(members: &[(Cow<'_, str>, &'a str)], names: &[&str]) -> &'a str {
    names
        .iter()
        .find_map(|name| reader::get(members, name).filter(|v| *v != "null"))
        .unwrap_or("null")
}

/// The hash of what identifies an HTTP request: the canonical object
/// `{"body","caller","method","path","query"}` (members in canonical order).
fn http_request_hash(
    members: &[(Cow<'_, str>, &str)],
    context: &[(Cow<'_, str>, &str)],
    caller: Option<&str>,
) -> Result<HexDigest, String> {
    // REST APIs and ALB carry `httpMethod` and `path`; HTTP APIs and function URLs
    // `requestContext.http.method` and `rawPath`.
    let method = match reader::get(members, "httpMethod") {
        Some(method) => method,
        None => reader::get(context, "http")
            .and_then(|http| reader::member(http, "method"))
            .unwrap_or("null"),
    };
    let path = first_present(members, &["rawPath", "path"]);
    let query = first_present(
        members,
        &[
            "multiValueQueryStringParameters",
            "queryStringParameters",
            "rawQueryString",
        ],
    );
    // Hashed as it is written: the request's canonical JSON is never held whole.
    let mut request = Sha256::new();
    request.update(b"{\"body\":");
    push_http_body(&mut request, members)?;
    for (name, part) in [
        (",\"caller\":", caller.unwrap_or("null")),
        (",\"method\":", method),
        (",\"path\":", path),
        (",\"query\":", query),
    ] {
        request.update(name.as_bytes());
        push_canonical(&mut request, part)?;
    }
    request.update(b"}");
    Ok(HexDigest::of(request))
}

/// Where canonical JSON is written: a text, or a hash computed as it is written.
trait Sink {
    fn push(&mut self, text: &str);
}

impl Sink for String {
    fn push(&mut self, text: &str) {
        self.push_str(text);
    }
}

impl Sink for Sha256 {
    fn push(&mut self, text: &str) {
        self.update(text.as_bytes());
    }
}

/// Appends the canonical form of a part of the event.
fn push_canonical(out: &mut impl Sink, text: &str) -> Result<(), String> {
    json_canonical::with_canonical(text, |canonical| out.push(canonical))
        .map_err(|_| "the event is not valid JSON".to_owned())
}

/// Appends the body of an HTTP event in canonical form: the JSON it holds, otherwise the body
/// as a JSON string (base64-encoded bodies are taken as they are); `null` when there is none.
fn push_http_body(out: &mut impl Sink, members: &[(Cow<'_, str>, &str)]) -> Result<(), String> {
    let Some(body) = reader::get(members, "body") else {
        out.push("null");
        return Ok(());
    };
    let base64 = reader::get(members, "isBase64Encoded") == Some("true");
    if !base64 && body.len() >= 2 && body.starts_with('"') {
        // The body's text, unescaped in a buffer the thread keeps.
        thread_local! {
            static BODY: std::cell::Cell<String> = const { std::cell::Cell::new(String::new()) };
        }
        let mut text = BODY.take();
        text.clear();
        let canonical = reader::unescape(&body[1..body.len() - 1], &mut text).is_ok()
            && json_canonical::with_canonical(&text, |json| out.push(json)).is_ok();
        if text.capacity() <= 64 * 1024 {
            BODY.set(text);
        }
        if canonical {
            return Ok(());
        }
    }
    push_canonical(out, body)
}

/// The key and validation hash of a unit of work inside a handler.
pub(crate) fn work_key(key: &Value, payload: &Value, prefix: &str) -> RequestKey {
    RequestKey {
        id: record_id(prefix, &sha256_hex(&canonical(key))),
        validation: sha256_hex(&canonical(payload)),
        http: false,
        cookies: false,
    }
}

/// `<prefix>#<key hash>`.
fn record_id(prefix: &str, key_hash: &str) -> Arc<str> {
    // Written on the stack when it fits, so that the id costs one allocation.
    let mut stack = [0u8; 160];
    let len = prefix.len() + 1 + key_hash.len();
    match stack.get_mut(..len) {
        Some(id) => {
            let (head, hash) = id.split_at_mut(prefix.len() + 1);
            head[..prefix.len()].copy_from_slice(prefix.as_bytes());
            head[prefix.len()] = b'#';
            hash.copy_from_slice(key_hash.as_bytes());
            Arc::from(std::str::from_utf8(id).unwrap_or_default())
        }
        None => Arc::from(format!("{prefix}#{key_hash}")),
    }
}

/// JSON text with object keys sorted at every depth and no insignificant white space: the form
/// idempotency keys and payloads are hashed in.
fn canonical(value: &Value) -> String {
    let text = value.to_string();
    // Only a value nested deeper than a JSON text may be is refused; its text is kept as it is.
    json_canonical::canonical(&text).unwrap_or(text)
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
