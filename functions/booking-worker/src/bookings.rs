//! The bookings table (`BOOKINGS_TABLE`), as booking-api writes it: one item per booking, key
//! `pk = "BOOKING#<booking_id>"`, with `status` (`PENDING`, `CONFIRMED` or `CANCELLED`) and
//! `updated_at` (RFC 3339, milliseconds, UTC) among its attributes.

use std::collections::HashMap;

use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValuesOnConditionCheckFailure};
use serde::{Deserialize, Serialize};

/// `status` of a booking waiting for confirmation.
pub(crate) const PENDING: &str = "PENDING";
/// `status` of a confirmed booking.
pub(crate) const CONFIRMED: &str = "CONFIRMED";
/// `status` of a cancelled booking.
pub(crate) const CANCELLED: &str = "CANCELLED";

/// The partition key of booking `booking_id`.
pub(crate) fn key(booking_id: &str) -> String {
    format!("BOOKING#{booking_id}")
}

/// What confirming a booking did. Stored as the record's result by idempotency, so it
/// serializes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Confirmation {
    /// The booking was PENDING and is now CONFIRMED.
    Confirmed,
    /// Nothing needed doing (see [`Skipped`]).
    Skipped(Skipped),
}

/// Why a booking was left as it was: in either case there is nothing to retry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Skipped {
    /// CONFIRMED already: this message is a duplicate of one handled before.
    AlreadyConfirmed,
    /// CANCELLED before the worker could confirm it; it stays cancelled.
    CancelledBeforeConfirmation,
}

impl Skipped {
    /// The `reason` dimension of `BookingConfirmationSkipped`.
    pub(crate) fn reason(self) -> &'static str {
        match self {
            Skipped::AlreadyConfirmed => "already_confirmed",
            Skipped::CancelledBeforeConfirmation => "cancelled_before_confirmation",
        }
    }
}

/// Why a booking could not be confirmed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StoreError {
    /// No item for the booking: the message names a booking that was never written.
    #[error("booking {0} does not exist in the bookings table")]
    NotFound(String),
    /// The item's `status` is none of those the worker knows.
    #[error("booking {booking_id} has status {status:?}, which the worker cannot confirm")]
    UnknownStatus {
        /// The booking.
        booking_id: String,
        /// Its `status` (empty when it has none).
        status: String,
    },
    /// DynamoDB refused for capacity.
    #[error("the bookings table is throttled: {0}")]
    Throttled(String),
    /// DynamoDB could not be reached, timed out or failed.
    #[error("the bookings table is unavailable: {0}")]
    Unavailable(String),
    /// DynamoDB refused the request (missing table, access denied, invalid request).
    #[error("the bookings table refused the request: {0}")]
    Rejected(String),
}

impl StoreError {
    fn from_sdk<E, R>(error: &SdkError<E, R>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug,
    {
        let described = DisplayErrorContext(error).to_string();
        match error {
            SdkError::ServiceError(service) => Self::answered(service.err().code(), described),
            // No answer: timed out, could not connect, or the answer could not be read.
            _ => StoreError::Unavailable(described),
        }
    }

    /// The error DynamoDB answered with the error code `code`.
    fn answered(code: Option<&str>, described: String) -> Self {
        match code {
            Some(
                "ProvisionedThroughputExceededException"
                | "ThrottlingException"
                | "RequestLimitExceeded"
                | "LimitExceededException",
            ) => StoreError::Throttled(described),
            Some("InternalServerError" | "ServiceUnavailable" | "InternalFailure") => {
                StoreError::Unavailable(described)
            }
            _ => StoreError::Rejected(described),
        }
    }
}

/// The bookings table and a client for it.
#[derive(Clone, Debug)]
pub(crate) struct Bookings {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

impl Bookings {
    /// Bookings in `table`.
    pub(crate) fn new(client: aws_sdk_dynamodb::Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    /// Confirms booking `booking_id` if it is PENDING: `UpdateItem` `SET #status = CONFIRMED,
    /// updated_at = now` on condition `#status = PENDING`. When the condition fails, the
    /// booking's current status (returned with the failure, else read) says why.
    pub(crate) async fn confirm(&self, booking_id: &str, now: &str) -> Result<Confirmation, StoreError> {
        let updated = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(key(booking_id)))
            .update_expression("SET #status = :confirmed, updated_at = :now")
            .condition_expression("#status = :pending")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":confirmed", AttributeValue::S(CONFIRMED.into()))
            .expression_attribute_values(":pending", AttributeValue::S(PENDING.into()))
            .expression_attribute_values(":now", AttributeValue::S(now.into()))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        let error = match updated {
            Ok(_) => return Ok(Confirmation::Confirmed),
            Err(error) => error,
        };
        let found = match &error {
            SdkError::ServiceError(service) => match service.err() {
                UpdateItemError::ConditionalCheckFailedException(failed) => Some(failed.item().cloned()),
                _ => None,
            },
            _ => None,
        };
        let item = match found {
            None => return Err(StoreError::from_sdk(&error)),
            Some(Some(item)) => Some(item),
            // The condition failed on an item that was not returned: a missing item, or a store
            // that does not return the old item; a consistent read tells which.
            Some(None) => self.read(booking_id).await?,
        };
        let item = item.ok_or_else(|| StoreError::NotFound(booking_id.to_owned()))?;
        let status = item
            .get("status")
            .and_then(|v| v.as_s().ok())
            .map_or("", String::as_str);
        match status {
            CONFIRMED => Ok(Confirmation::Skipped(Skipped::AlreadyConfirmed)),
            CANCELLED => Ok(Confirmation::Skipped(Skipped::CancelledBeforeConfirmation)),
            _ => Err(StoreError::UnknownStatus {
                booking_id: booking_id.to_owned(),
                status: status.to_owned(),
            }),
        }
    }

    /// The item of booking `booking_id` (a consistent read), if there is one.
    async fn read(&self, booking_id: &str) -> Result<Option<HashMap<String, AttributeValue>>, StoreError> {
        let read = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(key(booking_id)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|error| StoreError::from_sdk(&error))?;
        Ok(read.item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dynamodb_answers_are_throttling_unavailability_or_refusals() {
        let answered = |code| StoreError::answered(Some(code), String::new());
        assert!(matches!(
            answered("ProvisionedThroughputExceededException"),
            StoreError::Throttled(_)
        ));
        assert!(matches!(
            answered("ThrottlingException"),
            StoreError::Throttled(_)
        ));
        assert!(matches!(
            answered("InternalServerError"),
            StoreError::Unavailable(_)
        ));
        assert!(matches!(
            answered("ResourceNotFoundException"),
            StoreError::Rejected(_)
        ));
        assert!(matches!(
            answered("AccessDeniedException"),
            StoreError::Rejected(_)
        ));
        assert!(matches!(
            StoreError::answered(None, String::new()),
            StoreError::Rejected(_)
        ));
        let timed_out: SdkError<UpdateItemError, aws_sdk_dynamodb::config::http::HttpResponse> =
            SdkError::timeout_error("no answer in 1 s");
        assert!(matches!(
            StoreError::from_sdk(&timed_out),
            StoreError::Unavailable(_)
        ));
    }

    #[test]
    fn skipped_reasons_and_stored_outcomes() {
        assert_eq!(Skipped::AlreadyConfirmed.reason(), "already_confirmed");
        assert_eq!(
            Skipped::CancelledBeforeConfirmation.reason(),
            "cancelled_before_confirmation"
        );
        let stored = serde_json::to_string(&Confirmation::Skipped(Skipped::AlreadyConfirmed)).unwrap();
        assert_eq!(stored, r#"{"skipped":"already_confirmed"}"#);
        assert_eq!(
            serde_json::from_str::<Confirmation>(r#""confirmed""#).unwrap(),
            Confirmation::Confirmed
        );
        assert_eq!(key("bk-1"), "BOOKING#bk-1");
    }
}
