//! The booking worker: confirms the bookings booking-api created, from the SQS queue subscribed
//! to the booking topic.
//!
//! Each record holds a `BookingRequested` message (raw delivery, or inside an SNS notification
//! envelope). The worker sets the booking's item in the bookings table from `PENDING` to
//! `CONFIRMED` with a conditional `UpdateItem`, or to `REJECTED` when its resource is closed
//! (freeing its slot in the same transaction), and answers an `SqsBatchResponse` listing
//! exactly the records that failed, so that SQS retries those and deletes the rest:
//!
//! | the record | outcome | metric |
//! |---|---|---|
//! | a PENDING booking of an open resource | confirmed | `BookingConfirmed`, `BookingConfirmationLagMs` |
//! | a PENDING booking of a closed resource (`closed = true` on its item) | rejected (`REJECTED`, `rejection_reason = resource_closed`), its slot freed | `BookingRejected{reason=resource_closed}` |
//! | a CONFIRMED or REJECTED booking (a duplicate) | success, nothing written | `BookingConfirmationSkipped{reason=already_confirmed\|already_rejected}` |
//! | a CANCELLED booking | success, left cancelled | `BookingConfirmationSkipped{reason=cancelled_before_confirmation}` |
//! | a malformed message, a booking that does not exist, an unknown status, a message naming another resource than the booking's | failed (permanent): retried until the queue's redrive policy moves it to the dead-letter queue | `BookingConfirmationFailed{reason}` |
//! | the table throttled or unavailable, the resource changed under every attempt to reject | failed (transient): retried | `BookingConfirmationFailed{reason}` |
//!
//! Each record runs at most once per SQS message id (a redelivered message gets the first
//! outcome back without touching the table), and a record that fails on its
//! `QUEUE_MAX_RECEIVE_COUNT`th receive or later is routed to on-call (the queue's redrive policy
//! moves it to the dead-letter queue next).
//!
//! Configuration:
//!
//! - `BOOKINGS_TABLE` (required): the bookings table;
//! - `QUEUE_MAX_RECEIVE_COUNT`: the queue's `maxReceiveCount` (default 3);
//! - Keel's `KEEL_*` variables: logs and metrics, error routing (`KEEL_ERROR_TOPIC_ARN`,
//!   `KEEL_DLQ_URL`, `KEEL_EXTENSION_ADDR`), and the idempotency records of the message ids
//!   (`KEEL_IDEMPOTENCY_TABLE`, else in memory; `KEEL_IDEMPOTENCY_TTL_SECONDS`);
//! - the standard AWS variables for the DynamoDB client (`AWS_REGION`, `AWS_ENDPOINT_URL`, …).

mod bookings;
mod message;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::SystemTime;

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use booking_metrics::worker as metrics;
use keel_runtime::batch::{BatchError, BatchProcessor};
use keel_runtime::classify::{Classify, ErrorClass};
use keel_runtime::idempotency::Idempotency;
use keel_runtime::routing::ErrorRouting;
use keel_runtime::{service_fn, InvocationError, Keel, LambdaEvent};

use bookings::{Bookings, Confirmation, StoreError};
use message::{BookingRequested, MalformedMessage};

/// The service name in logs, metrics and envelopes.
const SERVICE: &str = "booking-worker";

/// The queue's `maxReceiveCount` unless `QUEUE_MAX_RECEIVE_COUNT` says otherwise.
const DEFAULT_MAX_RECEIVE_COUNT: u32 = 3;

/// Why a record failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RecordError {
    /// The body is not a `BookingRequested` message.
    #[error(transparent)]
    Malformed(#[from] MalformedMessage),
    /// The booking could not be confirmed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl RecordError {
    /// The `error_type` of logs and routed envelopes.
    fn error_type(&self) -> &'static str {
        match self {
            RecordError::Malformed(_) => "Booking.MalformedMessage",
            RecordError::Store(StoreError::NotFound(_)) => "Booking.NotFound",
            RecordError::Store(StoreError::UnknownStatus { .. }) => "Booking.UnknownStatus",
            RecordError::Store(StoreError::Throttled(_)) => "Booking.StoreThrottled",
            RecordError::Store(StoreError::Unavailable(_)) => "Booking.StoreUnavailable",
            RecordError::Store(StoreError::Rejected(_)) => "Booking.StoreRejected",
            RecordError::Store(StoreError::Contended(_)) => "Booking.ResourceContended",
            RecordError::Store(StoreError::ResourceMismatch { .. }) => "Booking.ResourceMismatch",
        }
    }

    /// The `reason` dimension of `BookingConfirmationFailed`.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            RecordError::Malformed(_) => "malformed_message",
            RecordError::Store(StoreError::NotFound(_)) => "booking_not_found",
            RecordError::Store(StoreError::UnknownStatus { .. }) => "unknown_status",
            RecordError::Store(StoreError::Throttled(_)) => "store_throttled",
            RecordError::Store(StoreError::Unavailable(_)) => "store_unavailable",
            RecordError::Store(StoreError::Rejected(_)) => "store_rejected",
            RecordError::Store(StoreError::Contended(_)) => "resource_contended",
            RecordError::Store(StoreError::ResourceMismatch { .. }) => "resource_mismatch",
        }
    }
}

impl Classify for RecordError {
    fn error_class(&self) -> ErrorClass {
        match self {
            RecordError::Store(
                StoreError::Throttled(_) | StoreError::Unavailable(_) | StoreError::Contended(_),
            ) => ErrorClass::Transient,
            _ => ErrorClass::Permanent,
        }
    }
}

/// What stops the worker from starting.
#[derive(Debug, thiserror::Error)]
enum StartError {
    #[error("BOOKINGS_TABLE is not set: the worker needs the name of the bookings table")]
    NoTable,
    #[error("QUEUE_MAX_RECEIVE_COUNT={0} is not valid: expected a whole number from 1 to 1000")]
    MaxReceiveCount(String),
    #[error(transparent)]
    Keel(#[from] keel_runtime::ConfigError),
}

/// The worker: the table and how batches are processed.
#[derive(Debug)]
struct Worker {
    bookings: Bookings,
    processor: BatchProcessor,
}

impl Worker {
    /// Processes one batch, reporting exactly the records that failed.
    async fn handle(self: Arc<Self>, event: LambdaEvent<SqsEvent>) -> Result<SqsBatchResponse, BatchError> {
        // The closure owns what it captures and its futures own the record: with borrowed
        // captures the compiler cannot prove the invocation's future `Send` for every lifetime
        // of the records, which the runtime needs.
        let worker = Arc::clone(&self);
        let confirm = move |record: &SqsMessage| Arc::clone(&worker).confirm(record.clone());
        self.processor
            .process(&event.payload, &event.context, confirm)
            .await
    }

    /// Confirms the booking `record` asks for.
    async fn confirm(self: Arc<Self>, record: SqsMessage) -> Result<Confirmation, InvocationError> {
        let outcome = self.try_confirm(&record).await;
        if let Err(error) = &outcome {
            metrics::BOOKING_CONFIRMATION_FAILED.increment_with(1, &[error.reason()]);
        }
        outcome.map_err(|error| InvocationError::new(error.error_type(), error))
    }

    async fn try_confirm(&self, record: &SqsMessage) -> Result<Confirmation, RecordError> {
        let booking = BookingRequested::parse(record.body.as_deref())?;
        let now = SystemTime::now();
        let updated_at = humantime::format_rfc3339_millis(now).to_string();
        let confirmation = self
            .bookings
            .settle(&booking.booking_id, &booking.resource_id, &updated_at)
            .await?;
        let message_id = record.message_id.as_deref().unwrap_or_default();
        match confirmation {
            Confirmation::Confirmed => {
                metrics::BOOKING_CONFIRMED.increment(1);
                let lag_ms = booking.age_ms(now);
                if let Some(lag_ms) = lag_ms {
                    metrics::BOOKING_CONFIRMATION_LAG_MS.record_with(lag_ms as f64, &[]);
                }
                tracing::info!(
                    booking_id = %booking.booking_id,
                    resource_id = %booking.resource_id,
                    guests = booking.guests,
                    lag_ms,
                    message_id,
                    "booking confirmed"
                );
            }
            Confirmation::Rejected(rejection) => {
                metrics::BOOKING_REJECTED.increment_with(1, &[rejection.reason()]);
                tracing::info!(
                    booking_id = %booking.booking_id,
                    resource_id = %booking.resource_id,
                    reason = rejection.reason(),
                    message_id,
                    "booking rejected"
                );
            }
            Confirmation::Skipped(skipped) => {
                metrics::BOOKING_CONFIRMATION_SKIPPED.increment_with(1, &[skipped.reason()]);
                tracing::info!(
                    booking_id = %booking.booking_id,
                    reason = skipped.reason(),
                    message_id,
                    "booking left as it was: {}",
                    match skipped {
                        bookings::Skipped::AlreadyConfirmed => "it was confirmed already",
                        bookings::Skipped::CancelledBeforeConfirmation =>
                            "it was cancelled before it could be confirmed",
                        bookings::Skipped::AlreadyRejected => "it was rejected already",
                    }
                );
            }
        }
        Ok(confirmation)
    }
}

/// The queue's `maxReceiveCount`, from `QUEUE_MAX_RECEIVE_COUNT`.
fn max_receive_count() -> Result<u32, StartError> {
    match std::env::var("QUEUE_MAX_RECEIVE_COUNT") {
        Ok(value) if !value.trim().is_empty() => value
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|count| (1..=1000).contains(count))
            .ok_or(StartError::MaxReceiveCount(value)),
        _ => Ok(DEFAULT_MAX_RECEIVE_COUNT),
    }
}

async fn start() -> Result<(Keel, Worker), StartError> {
    let table = std::env::var("BOOKINGS_TABLE")
        .ok()
        .filter(|table| !table.trim().is_empty())
        .ok_or(StartError::NoTable)?;
    let max_receives = max_receive_count()?;
    let routing = ErrorRouting::from_env(SERVICE).await?.classify::<RecordError>();
    let processor = BatchProcessor::new()
        .idempotent(Idempotency::from_env().await?)
        .route_after(routing, max_receives)
        .allow_whole_batch_failure();
    let keel = Keel::from_env(SERVICE)
        .await?
        .metrics(|config| config.catalogue(metrics::CATALOGUE));
    let worker = Worker {
        // Keel's SDK configuration: standard retries, 1 s per attempt and 3 s per call, so that a
        // slow table fails the record (to be retried) well within the invocation.
        bookings: Bookings::new(
            aws_sdk_dynamodb::Client::new(&keel_runtime::aws::config().await),
            table,
        ),
        processor,
    };
    Ok((keel, worker))
}

#[tokio::main]
async fn main() -> ExitCode {
    let (keel, worker) = match start().await {
        Ok(started) => started,
        Err(error) => {
            eprintln!("{SERVICE}: {error}");
            return ExitCode::FAILURE;
        }
    };
    let worker = Arc::new(worker);
    let handler = service_fn(move |event: LambdaEvent<SqsEvent>| Arc::clone(&worker).handle(event));
    match keel.run(handler).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{SERVICE}: {error}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_typed_and_classified() {
        let malformed = RecordError::from(MalformedMessage::NoBody);
        assert_eq!(malformed.error_type(), "Booking.MalformedMessage");
        assert_eq!(malformed.error_class(), ErrorClass::Permanent);
        let missing = RecordError::from(StoreError::NotFound("bk-1".into()));
        assert_eq!(missing.reason(), "booking_not_found");
        assert_eq!(missing.error_class(), ErrorClass::Permanent);
        let throttled = RecordError::from(StoreError::Throttled("slow down".into()));
        assert_eq!(throttled.error_class(), ErrorClass::Transient);
        assert_eq!(
            RecordError::from(StoreError::Unavailable("timeout".into())).error_class(),
            ErrorClass::Transient
        );
    }

    #[test]
    fn the_routing_classification_reaches_the_record_error_inside_the_invocation_error() {
        let routing = ErrorRouting::new(SERVICE).classify::<RecordError>();
        let error = RecordError::from(StoreError::Throttled("slow down".into()));
        let invocation = InvocationError::new(error.error_type(), error);
        assert_eq!(invocation.error_type(), "Booking.StoreThrottled");
        assert_eq!(routing.classification(&invocation).class, ErrorClass::Transient);
        let missing = RecordError::from(StoreError::NotFound("bk-1".into()));
        let invocation = InvocationError::new(missing.error_type(), missing);
        assert_eq!(routing.classification(&invocation).class, ErrorClass::Permanent);
    }
}
