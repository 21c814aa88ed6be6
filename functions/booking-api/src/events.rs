//! Booking events: `BookingRequested`, published to `BOOKING_TOPIC_ARN` once a booking is
//! stored, for the booking worker (and anyone else subscribed) to act on.
//!
//! The message is the booking without its contact details: `{"type": "BookingRequested",
//! "booking_id", "customer_id", "resource_id", "start", "end", "guests", "created_at"}`, with the
//! SNS message attribute `type` (subscribers filter on it).

use aws_sdk_sns::error::DisplayErrorContext;
use aws_sdk_sns::types::MessageAttributeValue;
use aws_sdk_sns::Client;
use serde_json::json;

use crate::model::Booking;

/// The topic booking events go to.
#[derive(Clone, Debug)]
pub(crate) struct Events {
    client: Client,
    topic_arn: String,
}

impl Events {
    /// Events published to `topic_arn` through `client`.
    pub(crate) fn new(client: Client, topic_arn: impl Into<String>) -> Self {
        Self {
            client,
            topic_arn: topic_arn.into(),
        }
    }

    /// Publishes `BookingRequested` for `booking`.
    pub(crate) async fn booking_requested(&self, booking: &Booking) -> Result<(), String> {
        let message = json!({
            "type": "BookingRequested",
            "booking_id": booking.booking_id,
            "customer_id": booking.customer_id,
            "resource_id": booking.resource_id,
            "start": booking.start,
            "end": booking.end,
            "guests": booking.guests,
            "created_at": booking.created_at,
        });
        let kind = MessageAttributeValue::builder()
            .data_type("String")
            .string_value("BookingRequested")
            .build()
            .map_err(|e| e.to_string())?;
        self.client
            .publish()
            .topic_arn(&self.topic_arn)
            .message(message.to_string())
            .message_attributes("type", kind)
            .send()
            .await
            .map_err(|e| DisplayErrorContext(e).to_string())?;
        Ok(())
    }
}
