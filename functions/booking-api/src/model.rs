//! Bookings as clients send them and as the API answers them, and the rules a booking request
//! must follow: every field checked, unknown fields refused, each refusal naming its field.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Longest identifier (`customer_id`, `resource_id`) accepted.
pub(crate) const MAX_ID_CHARS: usize = 64;
/// Longest `notes` accepted.
pub(crate) const MAX_NOTES_CHARS: usize = 500;
/// Longest `email` accepted (RFC 5321's limit).
pub(crate) const MAX_EMAIL_CHARS: usize = 254;
/// Guests per booking.
pub(crate) const GUESTS: std::ops::RangeInclusive<u64> = 1..=20;
/// Longest booking accepted: 30 days.
pub(crate) const MAX_DURATION_SECS: u64 = 30 * 24 * 3600;
/// How far ahead a booking may start: a year.
pub(crate) const HORIZON_SECS: u64 = 366 * 24 * 3600;

/// Where a booking stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub(crate) enum Status {
    /// Stored, waiting for the worker to confirm it.
    Pending,
    /// Confirmed by the worker.
    Confirmed,
    /// Rejected by the worker (its resource is closed, say; see `rejection_reason`): its slot
    /// is free again.
    Rejected,
    /// Cancelled by its customer: its slot is free again.
    Cancelled,
}

impl Status {
    /// The stored and answered spelling.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "PENDING",
            Status::Confirmed => "CONFIRMED",
            Status::Rejected => "REJECTED",
            Status::Cancelled => "CANCELLED",
        }
    }

    /// The status spelled `text`.
    pub(crate) fn parse(text: &str) -> Option<Self> {
        [
            Status::Pending,
            Status::Confirmed,
            Status::Rejected,
            Status::Cancelled,
        ]
        .into_iter()
        .find(|status| status.as_str() == text)
    }

    /// Whether the booking holds its resource's time (pending or confirmed); a rejected or
    /// cancelled booking is settled for good.
    pub(crate) fn holds_slot(self) -> bool {
        matches!(self, Status::Pending | Status::Confirmed)
    }
}

/// A booking as stored and answered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Booking {
    pub(crate) booking_id: String,
    pub(crate) status: Status,
    pub(crate) customer_id: String,
    pub(crate) resource_id: String,
    /// RFC 3339, UTC.
    pub(crate) start: String,
    /// RFC 3339, UTC.
    pub(crate) end: String,
    pub(crate) guests: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) notes: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) email: Option<String>,
    /// Why the worker rejected the booking (`resource_closed`), when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) rejection_reason: Option<String>,
    /// RFC 3339 with milliseconds, UTC.
    pub(crate) created_at: String,
    /// RFC 3339 with milliseconds, UTC.
    pub(crate) updated_at: String,
}

/// A valid booking request: times parsed, fields within their bounds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct NewBooking {
    pub(crate) customer_id: String,
    pub(crate) resource_id: String,
    pub(crate) start: SystemTime,
    pub(crate) end: SystemTime,
    pub(crate) guests: u64,
    pub(crate) notes: Option<String>,
    pub(crate) email: Option<String>,
}

impl NewBooking {
    /// The booking stored for this request, `PENDING`, created `now`.
    pub(crate) fn into_booking(self, booking_id: String, now: SystemTime) -> Booking {
        let created_at = timestamp(now);
        Booking {
            booking_id,
            status: Status::Pending,
            customer_id: self.customer_id,
            resource_id: self.resource_id,
            start: rfc3339(self.start),
            end: rfc3339(self.end),
            guests: self.guests,
            notes: self.notes,
            email: self.email,
            rejection_reason: None,
            updated_at: created_at.clone(),
            created_at,
        }
    }
}

/// A field that breaks the rules: answered `400 {code: "INVALID_REQUEST", message, field}`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub(crate) struct Invalid {
    /// The field (`body` for the body as a whole).
    pub(crate) field: String,
    /// What is wrong with it (never its value).
    pub(crate) message: String,
}

impl Invalid {
    pub(crate) fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

const FIELDS: [&str; 7] = [
    "customer_id",
    "resource_id",
    "start",
    "end",
    "guests",
    "notes",
    "email",
];

/// Reads and checks a booking request body (JSON object). The messages name fields and rules,
/// never the values sent (they may be personal data).
pub(crate) fn new_booking(body: &str, now: SystemTime) -> Result<NewBooking, Invalid> {
    let object: Map<String, Value> = match serde_json::from_str::<Value>(body) {
        Ok(Value::Object(object)) => object,
        Ok(_) => return Err(Invalid::new("body", "the body must be a JSON object")),
        Err(_) => return Err(Invalid::new("body", "the body is not valid JSON")),
    };
    if let Some(unknown) = object.keys().find(|key| !FIELDS.contains(&key.as_str())) {
        let shown: String = unknown.chars().take(MAX_ID_CHARS).collect();
        return Err(Invalid::new(shown, "unknown field"));
    }
    let customer_id = identifier(&object, "customer_id")?;
    let resource_id = identifier(&object, "resource_id")?;
    let start = time(&object, "start")?;
    let end = time(&object, "end")?;
    match start.duration_since(now) {
        Err(_) => return Err(Invalid::new("start", "start must be in the future")),
        Ok(ahead) if ahead.as_secs() > HORIZON_SECS => {
            return Err(Invalid::new("start", "start must be within a year from now"))
        }
        Ok(_) => {}
    }
    let length = end
        .duration_since(start)
        .map_err(|_| Invalid::new("end", "end must be after start"))?;
    if length.is_zero() {
        return Err(Invalid::new("end", "end must be after start"));
    }
    if length.as_secs() > MAX_DURATION_SECS {
        return Err(Invalid::new("end", "a booking lasts 30 days at most"));
    }
    let guests = match object.get("guests") {
        Some(Value::Number(n)) => n
            .as_u64()
            .filter(|g| GUESTS.contains(g))
            .ok_or_else(|| Invalid::new("guests", "guests must be a whole number from 1 to 20"))?,
        Some(_) => {
            return Err(Invalid::new(
                "guests",
                "guests must be a whole number from 1 to 20",
            ))
        }
        None => return Err(Invalid::new("guests", "guests is required")),
    };
    let notes = optional_text(&object, "notes", MAX_NOTES_CHARS)?;
    let email = optional_text(&object, "email", MAX_EMAIL_CHARS)?;
    if let Some(email) = &email {
        let (local, domain) = email
            .split_once('@')
            .ok_or_else(|| Invalid::new("email", "email must be an address such as name@example.com"))?;
        if local.is_empty() || !domain.contains('.') || email.chars().any(char::is_whitespace) {
            return Err(Invalid::new(
                "email",
                "email must be an address such as name@example.com",
            ));
        }
    }
    Ok(NewBooking {
        customer_id,
        resource_id,
        start,
        end,
        guests,
        notes,
        email,
    })
}

fn text<'a>(object: &'a Map<String, Value>, field: &str) -> Result<Option<&'a str>, Invalid> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text)),
        Some(_) => Err(Invalid::new(field, format!("{field} must be a string"))),
    }
}

/// A required identifier: 1 to 64 characters of letters, digits, `-`, `_`, `.`, `:`.
fn identifier(object: &Map<String, Value>, field: &str) -> Result<String, Invalid> {
    let id = text(object, field)?.ok_or_else(|| Invalid::new(field, format!("{field} is required")))?;
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':');
    if id.is_empty() || id.chars().count() > MAX_ID_CHARS || !id.chars().all(allowed) {
        return Err(Invalid::new(
            field,
            format!("{field} must be 1 to {MAX_ID_CHARS} letters, digits, '-', '_', '.' or ':'"),
        ));
    }
    Ok(id.to_owned())
}

/// A required RFC 3339 (ISO 8601) date and time in UTC, to the second, e.g.
/// `2026-12-01T10:00:00Z` (times are stored to the second, so a fraction would be lost).
fn time(object: &Map<String, Value>, field: &str) -> Result<SystemTime, Invalid> {
    let text = text(object, field)?.ok_or_else(|| Invalid::new(field, format!("{field} is required")))?;
    let invalid = || {
        Invalid::new(
            field,
            format!("{field} must be an ISO 8601 date and time in UTC, to the second, such as 2026-12-01T10:00:00Z"),
        )
    };
    let time = humantime::parse_rfc3339(text).map_err(|_| invalid())?;
    let whole = time
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| invalid())?;
    match whole.subsec_nanos() {
        0 => Ok(time),
        _ => Err(invalid()),
    }
}

fn optional_text(
    object: &Map<String, Value>,
    field: &str,
    max_chars: usize,
) -> Result<Option<String>, Invalid> {
    match text(object, field)? {
        Some(text) if text.chars().count() > max_chars => Err(Invalid::new(
            field,
            format!("{field} is longer than {max_chars} characters"),
        )),
        Some(text) if text.chars().any(char::is_control) && field != "notes" => {
            Err(Invalid::new(field, format!("{field} holds control characters")))
        }
        other => Ok(other.map(str::to_owned)),
    }
}

/// `time` as RFC 3339 in UTC, to the second.
pub(crate) fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_seconds(time).to_string()
}

/// `time` as RFC 3339 in UTC, to the millisecond.
pub(crate) fn timestamp(time: SystemTime) -> String {
    humantime::format_rfc3339_millis(time).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn valid() -> Value {
        json!({
            "customer_id": "cust-7", "resource_id": "room-1", "guests": 2,
            "start": "2026-12-01T10:00:00Z", "end": "2026-12-01T11:00:00Z",
            "notes": "window seat", "email": "ada@example.com"
        })
    }

    /// A day before the bookings of these tests.
    fn now() -> SystemTime {
        humantime::parse_rfc3339("2026-11-30T00:00:00Z").unwrap()
    }

    fn refused(change: impl FnOnce(&mut Map<String, Value>)) -> Invalid {
        let mut body = valid();
        change(body.as_object_mut().unwrap());
        new_booking(&body.to_string(), now()).unwrap_err()
    }

    #[test]
    fn a_valid_request_is_read_and_normalized() {
        let booking = new_booking(&valid().to_string(), now()).unwrap();
        assert_eq!(booking.guests, 2);
        let stored = booking.into_booking("bk-1".into(), SystemTime::UNIX_EPOCH);
        assert_eq!(stored.start, "2026-12-01T10:00:00Z");
        assert_eq!(stored.status, Status::Pending);
        assert_eq!(stored.created_at, "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn every_rule_names_its_field() {
        type Change = Box<dyn FnOnce(&mut Map<String, Value>)>;
        let cases: Vec<(Change, &str)> = vec![
            (
                Box::new(|b| {
                    b.insert("extra".into(), json!(1));
                }),
                "extra",
            ),
            (
                Box::new(|b| {
                    b.remove("customer_id");
                }),
                "customer_id",
            ),
            (
                Box::new(|b| {
                    b.insert("resource_id".into(), json!(""));
                }),
                "resource_id",
            ),
            (
                Box::new(|b| {
                    b.insert("resource_id".into(), json!("a b"));
                }),
                "resource_id",
            ),
            (
                Box::new(|b| {
                    b.insert("resource_id".into(), json!("r".repeat(65)));
                }),
                "resource_id",
            ),
            (
                Box::new(|b| {
                    b.insert("start".into(), json!("tomorrow"));
                }),
                "start",
            ),
            (
                Box::new(|b| {
                    b.insert("end".into(), json!("2026-12-01T09:00:00Z"));
                }),
                "end",
            ),
            (
                Box::new(|b| {
                    b.insert("end".into(), json!("2026-12-01T10:00:00Z"));
                }),
                "end",
            ),
            (
                Box::new(|b| {
                    b.insert("end".into(), json!("2027-02-01T10:00:00Z"));
                }),
                "end",
            ),
            (
                Box::new(|b| {
                    b.insert("start".into(), json!("2026-11-01T10:00:00Z"));
                }),
                "start",
            ),
            (
                Box::new(|b| {
                    b.insert("start".into(), json!("2028-12-01T10:00:00Z"));
                }),
                "start",
            ),
            (
                Box::new(|b| {
                    b.insert("start".into(), json!("2026-12-01T10:00:00.5Z"));
                }),
                "start",
            ),
            (
                Box::new(|b| {
                    b.insert("guests".into(), json!(0));
                }),
                "guests",
            ),
            (
                Box::new(|b| {
                    b.insert("guests".into(), json!(21));
                }),
                "guests",
            ),
            (
                Box::new(|b| {
                    b.insert("guests".into(), json!(2.5));
                }),
                "guests",
            ),
            (
                Box::new(|b| {
                    b.insert("guests".into(), json!("2"));
                }),
                "guests",
            ),
            (
                Box::new(|b| {
                    b.insert("notes".into(), json!("n".repeat(501)));
                }),
                "notes",
            ),
            (
                Box::new(|b| {
                    b.insert("email".into(), json!("not-an-address"));
                }),
                "email",
            ),
        ];
        for (change, field) in cases {
            assert_eq!(refused(change).field, field);
        }
        assert_eq!(new_booking("[1]", now()).unwrap_err().field, "body");
        assert_eq!(new_booking("{", now()).unwrap_err().field, "body");
    }

    #[test]
    fn messages_never_quote_the_values_sent() {
        let error = refused(|b| {
            b.insert("email".into(), json!("secret-address"));
        });
        assert!(!error.message.contains("secret-address"), "{error:?}");
    }
}
