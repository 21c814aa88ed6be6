//! The `BookingRequested` message booking-api publishes to the booking topic, as it reaches the
//! worker's queue: the message itself (a raw-delivery subscription), or inside an SNS
//! notification envelope (`{"Type": "Notification", "Message": "<the message>", …}`).

use serde::Deserialize;
use serde_json::Value;

/// The message's `type`.
pub(crate) const BOOKING_REQUESTED: &str = "BookingRequested";

/// A booking booking-api created and the worker is to confirm.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub(crate) struct BookingRequested {
    pub(crate) booking_id: String,
    pub(crate) customer_id: String,
    pub(crate) resource_id: String,
    pub(crate) start: String,
    pub(crate) end: String,
    pub(crate) guests: u32,
    /// RFC 3339, milliseconds, UTC.
    pub(crate) created_at: String,
}

/// Why a record's body is not a `BookingRequested` message. Retrying never helps.
#[derive(Debug, thiserror::Error)]
pub(crate) enum MalformedMessage {
    /// The record has no body.
    #[error("the record has no body")]
    NoBody,
    /// The body (or the notification's `Message`) is not JSON.
    #[error("the body is not JSON: {0}")]
    NotJson(serde_json::Error),
    /// An SNS notification without a `Message` string.
    #[error("the SNS notification has no Message string")]
    EmptyNotification,
    /// The message has no `type` string.
    #[error("the message has no `type`")]
    NoType,
    /// The message is of another type than `BookingRequested`.
    #[error("the message's type is `{0}`, not `BookingRequested`")]
    UnexpectedType(String),
    /// A field is missing or of the wrong type.
    #[error("the BookingRequested message does not match its contract: {0}")]
    Fields(serde_json::Error),
    /// `booking_id` is empty.
    #[error("the BookingRequested message has an empty booking_id")]
    EmptyBookingId,
}

impl BookingRequested {
    /// Reads a record's body.
    pub(crate) fn parse(body: Option<&str>) -> Result<Self, MalformedMessage> {
        let body = body.ok_or(MalformedMessage::NoBody)?;
        let mut message: Value = serde_json::from_str(body).map_err(MalformedMessage::NotJson)?;
        if message.get("Type").and_then(Value::as_str) == Some("Notification") {
            let inner = message
                .get("Message")
                .and_then(Value::as_str)
                .ok_or(MalformedMessage::EmptyNotification)?;
            message = serde_json::from_str(inner).map_err(MalformedMessage::NotJson)?;
        }
        match message.get("type").and_then(Value::as_str) {
            Some(BOOKING_REQUESTED) => {}
            Some(other) => return Err(MalformedMessage::UnexpectedType(other.to_owned())),
            None => return Err(MalformedMessage::NoType),
        }
        let booking: Self = serde_json::from_value(message).map_err(MalformedMessage::Fields)?;
        if booking.booking_id.trim().is_empty() {
            return Err(MalformedMessage::EmptyBookingId);
        }
        Ok(booking)
    }

    /// Milliseconds since the booking was created, when `created_at` reads as RFC 3339 (UTC)
    /// and is not in the future.
    pub(crate) fn age_ms(&self, now: std::time::SystemTime) -> Option<u64> {
        let created = humantime::parse_rfc3339_weak(&self.created_at).ok()?;
        let age = now.duration_since(created).ok()?;
        u64::try_from(age.as_millis()).ok()
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use serde_json::json;

    use super::*;

    fn message() -> Value {
        json!({
            "type": "BookingRequested",
            "booking_id": "bk-1",
            "customer_id": "cust-1",
            "resource_id": "room-1",
            "start": "2026-12-01T10:00:00Z",
            "end": "2026-12-01T11:00:00Z",
            "guests": 2,
            "created_at": "2026-11-30T09:00:00.250Z"
        })
    }

    #[test]
    fn reads_the_raw_message_and_the_sns_notification() {
        let raw = message().to_string();
        let booking = BookingRequested::parse(Some(&raw)).unwrap();
        assert_eq!(booking.booking_id, "bk-1");
        assert_eq!(booking.guests, 2);
        let notification = json!({
            "Type": "Notification",
            "MessageId": "m-1",
            "TopicArn": "arn:aws:sns:us-east-1:123456789012:bookings",
            "Message": raw,
            "MessageAttributes": {"type": {"Type": "String", "Value": "BookingRequested"}}
        })
        .to_string();
        assert_eq!(BookingRequested::parse(Some(&notification)).unwrap(), booking);
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let mut with_more = message();
        with_more["notes"] = json!("late arrival");
        assert!(BookingRequested::parse(Some(&with_more.to_string())).is_ok());
    }

    #[test]
    fn refuses_what_is_not_a_booking_request() {
        let mut other_type = message();
        other_type["type"] = json!("BookingCancelled");
        let mut no_type = message();
        no_type.as_object_mut().unwrap().remove("type");
        let mut no_guests = message();
        no_guests.as_object_mut().unwrap().remove("guests");
        let mut empty_id = message();
        empty_id["booking_id"] = json!(" ");
        type Expected = fn(&MalformedMessage) -> bool;
        let cases: [(Option<String>, Expected); 7] = [
            (None, |e| matches!(e, MalformedMessage::NoBody)),
            (Some("{".into()), |e| matches!(e, MalformedMessage::NotJson(_))),
            (
                Some(json!({"Type": "Notification", "Message": 5}).to_string()),
                |e| matches!(e, MalformedMessage::EmptyNotification),
            ),
            (
                Some(other_type.to_string()),
                |e| matches!(e, MalformedMessage::UnexpectedType(t) if t == "BookingCancelled"),
            ),
            (Some(no_type.to_string()), |e| {
                matches!(e, MalformedMessage::NoType)
            }),
            (Some(no_guests.to_string()), |e| {
                matches!(e, MalformedMessage::Fields(_))
            }),
            (Some(empty_id.to_string()), |e| {
                matches!(e, MalformedMessage::EmptyBookingId)
            }),
        ];
        for (body, expected) in cases {
            let error = BookingRequested::parse(body.as_deref()).unwrap_err();
            assert!(expected(&error), "{body:?}: {error:?}");
        }
    }

    #[test]
    fn the_age_comes_from_created_at() {
        let booking = BookingRequested::parse(Some(&message().to_string())).unwrap();
        let created = UNIX_EPOCH + Duration::from_millis(1_796_029_200_250);
        assert_eq!(booking.age_ms(created + Duration::from_millis(1500)), Some(1500));
        assert_eq!(
            booking.age_ms(created - Duration::from_secs(1)),
            None,
            "in the future"
        );
        let mut unreadable = booking;
        unreadable.created_at = "yesterday".into();
        assert_eq!(unreadable.age_ms(created), None);
    }
}
