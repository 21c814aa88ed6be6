//! What the layers read from an invocation's event, found in its JSON text without parsing it
//! into a tree: the value at a JSON pointer, a header of an HTTP request, and whether the event
//! is an HTTP request at all (API Gateway REST or HTTP API, ALB, function URL) — the events
//! whose refusals are answered as HTTP responses.

use std::borrow::Cow;

use crate::json::reader::{self, members};

/// An object's members as [`reader::members`] lists them: (name, value text), in order.
pub(crate) type Members<'a> = [(Cow<'a, str>, &'a str)];

/// The JSON text at `pointer` (RFC 6901) in the JSON text `event`, unless it is missing or
/// `null`.
pub(crate) fn value_at<'a>(event: &'a str, pointer: &str) -> Option<&'a str> {
    reader::pointer(event, pointer).filter(|value| *value != "null")
}

/// The value text of the header `name` (matched case-insensitively; a `null` value does not
/// count) among an event's top-level `members`; `Err` says why there is none.
pub(crate) fn header<'a>(members: Option<&Members<'a>>, name: &str) -> Result<&'a str, String> {
    let headers = members
        .and_then(|members| reader::get(members, "headers"))
        .and_then(reader::members)
        .ok_or_else(|| format!("the event has no headers, so no `{name}` header"))?;
    headers
        .iter()
        .find(|(key, value)| key.eq_ignore_ascii_case(name) && *value != "null")
        .map(|(_, value)| *value)
        .ok_or_else(|| format!("the request has no `{name}` header"))
}

/// Whether an event's top-level `members` are those of an HTTP request event.
pub(crate) fn is_http_members(members: &Members<'_>) -> bool {
    let has = |name| reader::get(members, name).is_some();
    has("requestContext") && (has("httpMethod") || has("routeKey") || has("rawPath"))
}

/// Whether the response to an HTTP event (its top-level `members`) may carry `cookies`: payload
/// format 2.0 (HTTP APIs, function URLs), whose events have no top-level `httpMethod` (REST APIs'
/// and ALB's do). A REST API answers 502 to a response that has them.
pub(crate) fn takes_cookies(members: &Members<'_>) -> bool {
    reader::get(members, "httpMethod").is_none()
}

/// What an answer to the JSON text `event` is: `None` when it is not an HTTP request event (API
/// Gateway REST or HTTP API, ALB, function URL), else whether its response may carry `cookies`
/// (see [`takes_cookies`]).
pub(crate) fn http_answer(event: &str) -> Option<bool> {
    let members = members(event)?;
    is_http_members(&members).then(|| takes_cookies(&members))
}

/// The text a found value stands for: a JSON string decoded, any other value as written.
pub(crate) fn text_of(value: &str) -> Cow<'_, str> {
    let plain = value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .filter(|v| !v.contains('\\'));
    match plain {
        Some(text) => Cow::Borrowed(text),
        None if value.starts_with('"') => serde_json::from_str::<String>(value)
            .map(Cow::Owned)
            .unwrap_or(Cow::Borrowed(value)),
        None => Cow::Borrowed(value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_found_whatever_their_case_and_nulls_do_not_count() {
        let event = r#"{"headers": {"Idempotency-Key": "k1", "x-empty": null}, "requestContext": {}, "rawPath": "/"}"#;
        let listed = members(event);
        assert_eq!(header(listed.as_deref(), "idempotency-key"), Ok(r#""k1""#));
        assert!(header(listed.as_deref(), "x-empty").is_err());
        assert!(header(members("{}").as_deref(), "x").is_err());
        assert_eq!(http_answer(event), Some(true));
        let rest = r#"{"httpMethod": "GET", "path": "/", "requestContext": {}}"#;
        assert_eq!(
            http_answer(rest),
            Some(false),
            "no cookies in a REST API's answer"
        );
        assert!(http_answer(r#"{"Records": []}"#).is_none());
        assert!(http_answer("[1]").is_none());
    }

    #[test]
    fn values_are_found_and_strings_decoded() {
        let event = r#"{"a": {"id": "x\"y"}, "n": null, "k": 12}"#;
        assert_eq!(value_at(event, "/a/id").map(text_of).as_deref(), Some("x\"y"));
        assert_eq!(value_at(event, "/k").map(text_of).as_deref(), Some("12"));
        assert_eq!(value_at(event, "/n"), None);
        assert_eq!(value_at(event, "/missing"), None);
    }
}
