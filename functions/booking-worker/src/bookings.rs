//! The bookings table (`BOOKINGS_TABLE`), as booking-api writes it:
//!
//! - one item per booking, key `pk = "BOOKING#<booking_id>"`, with `status` (`PENDING`,
//!   `CONFIRMED`, `REJECTED` or `CANCELLED`) and `updated_at` (RFC 3339, milliseconds, UTC) among
//!   its attributes; a rejected booking also has `rejection_reason`;
//! - one item per resource, key `pk = "RESOURCE#<resource_id>"`, with `version` (a number),
//!   `slots` (a map from the id of each booking holding the resource to its time) and, when the
//!   resource takes no more bookings, `closed = true` (set by its operators).
//!
//! Settling a booking reads its resource first: an open resource's booking is confirmed
//! (`UpdateItem` on condition `status = PENDING` and `resource_id` the message's); a closed
//! resource's booking is rejected and its slot freed in one transaction (the booking on the same
//! condition, the resource on condition `closed = true` and the slot held, its `version`
//! incremented so that a creation racing it writes against the resource as it now is; a
//! `ConditionCheck` of `closed = true` when the booking holds no slot).

use std::collections::HashMap;

use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{
    AttributeValue, ConditionCheck, ReturnValuesOnConditionCheckFailure, TransactWriteItem, Update,
};
use serde::{Deserialize, Serialize};

/// `status` of a booking waiting for confirmation.
pub(crate) const PENDING: &str = "PENDING";
/// `status` of a confirmed booking.
pub(crate) const CONFIRMED: &str = "CONFIRMED";
/// `status` of a cancelled booking.
pub(crate) const CANCELLED: &str = "CANCELLED";
/// `status` of a booking the worker rejected.
pub(crate) const REJECTED: &str = "REJECTED";

/// Times the worker reads the resource and tries again when it changed under the rejection.
const ATTEMPTS: u32 = 4;

/// The partition key of booking `booking_id`.
pub(crate) fn key(booking_id: &str) -> String {
    format!("BOOKING#{booking_id}")
}

/// The partition key of resource `resource_id`.
fn resource_key(resource_id: &str) -> String {
    format!("RESOURCE#{resource_id}")
}

/// What confirming a booking did. Stored as the record's result by idempotency, so it
/// serializes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Confirmation {
    /// The booking was PENDING and is now CONFIRMED.
    Confirmed,
    /// The booking was PENDING and is now REJECTED, its slot free (see [`Rejection`]).
    Rejected(Rejection),
    /// Nothing needed doing (see [`Skipped`]).
    Skipped(Skipped),
}

/// Why the worker rejected a booking.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Rejection {
    /// Its resource is closed (`closed = true` on the resource's item).
    ResourceClosed,
}

impl Rejection {
    /// The booking's `rejection_reason` and the `reason` dimension of `BookingRejected`.
    pub(crate) fn reason(self) -> &'static str {
        match self {
            Rejection::ResourceClosed => "resource_closed",
        }
    }
}

/// Why a booking was left as it was: in either case there is nothing to retry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Skipped {
    /// CONFIRMED already: this message is a duplicate of one handled before.
    AlreadyConfirmed,
    /// CANCELLED before the worker could confirm it; it stays cancelled.
    CancelledBeforeConfirmation,
    /// REJECTED already: this message is a duplicate of one handled before.
    AlreadyRejected,
}

impl Skipped {
    /// The `reason` dimension of `BookingConfirmationSkipped`.
    pub(crate) fn reason(self) -> &'static str {
        match self {
            Skipped::AlreadyConfirmed => "already_confirmed",
            Skipped::CancelledBeforeConfirmation => "cancelled_before_confirmation",
            Skipped::AlreadyRejected => "already_rejected",
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
    /// The resource changed under every attempt to reject the booking.
    #[error("resource {0} changed under every attempt to settle the booking; try again")]
    Contended(String),
    /// The message names another resource than the booking holds.
    #[error(
        "the message names resource {message:?} for booking {booking_id}, which is of resource {stored:?}"
    )]
    ResourceMismatch {
        /// The booking.
        booking_id: String,
        /// The message's `resource_id`.
        message: String,
        /// The booking's.
        stored: String,
    },
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

    /// Settles booking `booking_id` of `resource_id` if it is PENDING: rejects it when the
    /// resource is closed, confirms it otherwise. `now` is the `updated_at` written.
    pub(crate) async fn settle(
        &self,
        booking_id: &str,
        resource_id: &str,
        now: &str,
    ) -> Result<Confirmation, StoreError> {
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                // Another writer got in the way: wait a little longer each time, with jitter.
                // Full jitter, up to 100, 200, 400 ms.
                let millis = fastrand::u64(10..(50 << attempt));
                tokio::time::sleep(std::time::Duration::from_millis(millis)).await;
            }
            let resource = self.resource(resource_id, booking_id).await?;
            if !resource.closed {
                return self.confirm(booking_id, resource_id, now).await;
            }
            let rejection = Rejection::ResourceClosed;
            if let Some(settled) = self
                .reject(booking_id, resource_id, rejection, resource.holds_slot, now)
                .await?
            {
                return Ok(settled);
            }
        }
        Err(StoreError::Contended(resource_id.to_owned()))
    }

    /// Whether resource `resource_id` is closed and holds a slot for `booking_id` (a consistent
    /// read of just those attributes).
    async fn resource(&self, resource_id: &str, booking_id: &str) -> Result<ResourceState, StoreError> {
        let read = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(resource_key(resource_id)))
            .projection_expression("#closed, #slots.#booking")
            .expression_attribute_names("#closed", "closed")
            .expression_attribute_names("#slots", "slots")
            .expression_attribute_names("#booking", booking_id)
            .consistent_read(true)
            .send()
            .await
            .map_err(|error| StoreError::from_sdk(&error))?;
        let item = read.item.unwrap_or_default();
        Ok(ResourceState {
            closed: matches!(item.get("closed"), Some(AttributeValue::Bool(true))),
            holds_slot: item
                .get("slots")
                .and_then(|slots| slots.as_m().ok())
                .is_some_and(|slots| slots.contains_key(booking_id)),
        })
    }

    /// Rejects booking `booking_id` if it is PENDING and its resource still closed, freeing its
    /// slot, in one transaction. `None` when the resource changed in between (read it again).
    async fn reject(
        &self,
        booking_id: &str,
        resource_id: &str,
        rejection: Rejection,
        holds_slot: bool,
        now: &str,
    ) -> Result<Option<Confirmation>, StoreError> {
        let invalid = |error: aws_sdk_dynamodb::error::BuildError| StoreError::Rejected(error.to_string());
        let booking = Update::builder()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(key(booking_id)))
            .update_expression("SET #status = :rejected, rejection_reason = :reason, updated_at = :now")
            .condition_expression("#status = :pending AND resource_id = :resource")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":resource", AttributeValue::S(resource_id.into()))
            .expression_attribute_values(":rejected", AttributeValue::S(REJECTED.into()))
            .expression_attribute_values(":reason", AttributeValue::S(rejection.reason().into()))
            .expression_attribute_values(":now", AttributeValue::S(now.into()))
            .expression_attribute_values(":pending", AttributeValue::S(PENDING.into()))
            .build()
            .map_err(invalid)?;
        let resource = if holds_slot {
            let free = Update::builder()
                .table_name(&self.table)
                .key("pk", AttributeValue::S(resource_key(resource_id)))
                .update_expression("REMOVE #slots.#booking ADD #version :one")
                .condition_expression("#closed = :true AND attribute_exists(#slots.#booking)")
                .expression_attribute_names("#slots", "slots")
                .expression_attribute_names("#booking", booking_id)
                .expression_attribute_names("#version", "version")
                .expression_attribute_names("#closed", "closed")
                .expression_attribute_values(":one", AttributeValue::N("1".into()))
                .expression_attribute_values(":true", AttributeValue::Bool(true))
                .build()
                .map_err(invalid)?;
            TransactWriteItem::builder().update(free).build()
        } else {
            let still_closed = ConditionCheck::builder()
                .table_name(&self.table)
                .key("pk", AttributeValue::S(resource_key(resource_id)))
                .condition_expression("#closed = :true")
                .expression_attribute_names("#closed", "closed")
                .expression_attribute_values(":true", AttributeValue::Bool(true))
                .build()
                .map_err(invalid)?;
            TransactWriteItem::builder().condition_check(still_closed).build()
        };
        let written = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().update(booking).build())
            .transact_items(resource)
            .send()
            .await;
        let error = match written {
            Ok(_) => return Ok(Some(Confirmation::Rejected(rejection))),
            Err(error) => error,
        };
        let Some(codes) = cancellation_codes(&error) else {
            return Err(StoreError::from_sdk(&error));
        };
        for code in &codes {
            match code.as_str() {
                "None" | "ConditionalCheckFailed" | "TransactionConflict" => {}
                "ThrottlingError" | "ProvisionedThroughputExceeded" | "RequestLimitExceeded" => {
                    return Err(StoreError::Throttled(format!(
                        "the rejection was cancelled: {code}"
                    )))
                }
                _ => {
                    return Err(StoreError::Rejected(format!(
                        "the rejection was cancelled: {code}"
                    )))
                }
            }
        }
        // A condition failed or another transaction got in the way: the booking's status says
        // whether it was settled meanwhile; if it is still PENDING, the resource changed.
        let item = self
            .read(booking_id)
            .await?
            .ok_or_else(|| StoreError::NotFound(booking_id.to_owned()))?;
        if status_of(&item) == PENDING && resource_of(&item) == resource_id {
            return Ok(None);
        }
        settled(booking_id, resource_id, &item).map(Some)
    }

    /// Confirms booking `booking_id` of `resource_id` if it is PENDING: `UpdateItem` `SET
    /// #status = CONFIRMED, updated_at = now` on condition `#status = PENDING` and the resource
    /// is the message's. When the condition fails, the booking's current status (returned with
    /// the failure, else read) says why.
    async fn confirm(
        &self,
        booking_id: &str,
        resource_id: &str,
        now: &str,
    ) -> Result<Confirmation, StoreError> {
        let updated = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(key(booking_id)))
            .update_expression("SET #status = :confirmed, updated_at = :now")
            .condition_expression("#status = :pending AND resource_id = :resource")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":resource", AttributeValue::S(resource_id.into()))
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
        settled(booking_id, resource_id, &item)
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

/// What the worker reads of a resource.
#[derive(Debug)]
struct ResourceState {
    closed: bool,
    holds_slot: bool,
}

/// The `status` of a booking's item (empty when it has none).
fn status_of(item: &HashMap<String, AttributeValue>) -> &str {
    item.get("status")
        .and_then(|v| v.as_s().ok())
        .map_or("", String::as_str)
}

/// The `resource_id` of a booking's item (empty when it has none).
fn resource_of(item: &HashMap<String, AttributeValue>) -> &str {
    item.get("resource_id")
        .and_then(|v| v.as_s().ok())
        .map_or("", String::as_str)
}

/// The outcome for booking `item`, which a write conditioned on `status = PENDING` and
/// `resource_id` did not change: settled before, or not the message's booking.
fn settled(
    booking_id: &str,
    resource_id: &str,
    item: &HashMap<String, AttributeValue>,
) -> Result<Confirmation, StoreError> {
    match status_of(item) {
        CONFIRMED => Ok(Confirmation::Skipped(Skipped::AlreadyConfirmed)),
        CANCELLED => Ok(Confirmation::Skipped(Skipped::CancelledBeforeConfirmation)),
        REJECTED => Ok(Confirmation::Skipped(Skipped::AlreadyRejected)),
        PENDING if resource_of(item) != resource_id => Err(StoreError::ResourceMismatch {
            booking_id: booking_id.to_owned(),
            message: resource_id.to_owned(),
            stored: resource_of(item).to_owned(),
        }),
        status => Err(StoreError::UnknownStatus {
            booking_id: booking_id.to_owned(),
            status: status.to_owned(),
        }),
    }
}

/// The code of each item's cancellation reason, when a transaction was cancelled.
fn cancellation_codes<R>(
    error: &SdkError<aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError, R>,
) -> Option<Vec<String>> {
    use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError as Failed;
    let SdkError::ServiceError(service) = error else {
        return None;
    };
    let Failed::TransactionCanceledException(cancelled) = service.err() else {
        return None;
    };
    Some(
        cancelled
            .cancellation_reasons()
            .iter()
            .map(|reason| reason.code().unwrap_or("None").to_owned())
            .collect(),
    )
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
        assert_eq!(resource_key("room-1"), "RESOURCE#room-1");
        assert_eq!(Skipped::AlreadyRejected.reason(), "already_rejected");
        let rejected = serde_json::to_string(&Confirmation::Rejected(Rejection::ResourceClosed)).unwrap();
        assert_eq!(rejected, r#"{"rejected":"resource_closed"}"#);
    }

    #[test]
    fn a_booking_settled_before_is_skipped_and_an_unknown_status_or_resource_fails() {
        let item = |status: &str, resource: &str| {
            HashMap::from([
                ("status".to_owned(), AttributeValue::S(status.into())),
                ("resource_id".to_owned(), AttributeValue::S(resource.into())),
            ])
        };
        assert_eq!(
            settled("bk-1", "room-1", &item(REJECTED, "room-1")).unwrap(),
            Confirmation::Skipped(Skipped::AlreadyRejected)
        );
        assert_eq!(
            settled("bk-1", "room-1", &item(CANCELLED, "room-1")).unwrap(),
            Confirmation::Skipped(Skipped::CancelledBeforeConfirmation)
        );
        assert!(matches!(
            settled("bk-1", "room-1", &item("ARCHIVED", "room-1")),
            Err(StoreError::UnknownStatus { .. })
        ));
        assert!(matches!(
            settled("bk-1", "room-1", &item(PENDING, "room-2")),
            Err(StoreError::ResourceMismatch { .. })
        ));
    }
}
