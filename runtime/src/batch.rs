//! SQS batch processing with partial batch failures: each record of an `SqsEvent` is processed on
//! its own, and exactly the failed ones are reported back (`batchItemFailures`), so that SQS
//! retries those and not the rest.
//!
//! ```no_run
//! use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
//! use keel_runtime::batch::{BatchError, BatchProcessor};
//! use keel_runtime::idempotency::Idempotency;
//! use keel_runtime::LambdaEvent;
//!
//! async fn handler(event: LambdaEvent<SqsEvent>) -> Result<SqsBatchResponse, BatchError> {
//!     let processor = BatchProcessor::new().idempotent(Idempotency::memory());
//!     processor
//!         .process(&event.payload, &event.context, async |record| {
//!             let body = record.body.as_deref().unwrap_or_default();
//!             // confirm the booking in `body` …
//!             Ok::<(), keel_runtime::BoxError>(())
//!         })
//!         .await
//! }
//! ```
//!
//! - **Idempotency** (optional): each record is a unit of work run at most once per key — its
//!   message id, or a JSON pointer into its body — so a redelivered record is not processed
//!   twice ([`Idempotency::once`]).
//! - **FIFO queues** (a source ARN ending in `.fifo`): once a record fails, the rest of its
//!   message group in the batch is reported failed without being processed, keeping the
//!   group's order.
//! - **Whole-batch failure**: when every record fails, [`BatchProcessor::process`] returns
//!   [`BatchError::AllFailed`] (the invocation fails and the batch is retried as a whole) unless
//!   [`BatchProcessor::allow_whole_batch_failure`] says to report it record by record.
//! - **Poison messages**: with [`BatchProcessor::route_after`], a record that fails on its Nth
//!   receive or later is routed to on-call ([`routing`](crate::routing)), the record as the
//!   envelope's event and its receive count as the attempt.

use std::collections::HashSet;
use std::sync::Arc;

use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use lambda_runtime::Context;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::handler::{BoxError, InvocationError};
use crate::idempotency::{Idempotency, OnceError};
use crate::routing::ErrorRouting;

/// What identifies a record for idempotency.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordKey {
    /// The SQS message id (a redelivery of the same message).
    MessageId,
    /// The value at this JSON pointer of the body (the same request sent twice).
    BodyPointer(String),
}

/// Processes the records of SQS batches; see the [module docs](self).
#[derive(Clone, Debug)]
pub struct BatchProcessor {
    idempotency: Option<(Arc<Idempotency>, RecordKey)>,
    routing: Option<(Arc<ErrorRouting>, u32)>,
    whole_batch_failure_is_error: bool,
}

impl Default for BatchProcessor {
    fn default() -> Self {
        Self::new()
    }
}

/// A batch in which every record failed.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// Every record failed; the batch is retried as a whole.
    #[error("all {records} records of the batch failed; the first: {first}")]
    AllFailed {
        /// How many records the batch had.
        records: usize,
        /// The first record's error.
        first: String,
    },
}

impl BatchProcessor {
    /// Records processed one by one, without idempotency or routing.
    pub fn new() -> Self {
        Self {
            idempotency: None,
            routing: None,
            whole_batch_failure_is_error: true,
        }
    }

    /// Each record runs at most once per message id.
    #[must_use]
    pub fn idempotent(self, idempotency: Idempotency) -> Self {
        self.idempotent_by(idempotency, RecordKey::MessageId)
    }

    /// Each record runs at most once per `key`.
    #[must_use]
    pub fn idempotent_by(mut self, idempotency: Idempotency, key: RecordKey) -> Self {
        self.idempotency = Some((Arc::new(idempotency), key));
        self
    }

    /// Routes a failed record once it has been received `receives` times or more (its
    /// `ApproximateReceiveCount`), so that poison messages reach on-call.
    #[must_use]
    pub fn route_after(mut self, routing: ErrorRouting, receives: u32) -> Self {
        self.routing = Some((Arc::new(routing), receives.max(1)));
        self
    }

    /// Reports a batch in which every record failed record by record, instead of failing the
    /// invocation.
    #[must_use]
    pub fn allow_whole_batch_failure(mut self) -> Self {
        self.whole_batch_failure_is_error = false;
        self
    }

    /// Processes every record of `batch` with `handle` (an async closure, which may borrow
    /// the record), in order, and reports the failed ones.
    pub async fn process<F, T, E>(
        &self,
        batch: &SqsEvent,
        context: &Context,
        mut handle: F,
    ) -> Result<SqsBatchResponse, BatchError>
    where
        F: AsyncFnMut(&SqsMessage) -> Result<T, E>,
        T: Serialize + DeserializeOwned,
        E: Into<BoxError> + 'static,
    {
        let mut failed = Vec::new();
        let mut failed_groups = HashSet::new();
        let mut first_error = None;
        for record in &batch.records {
            let id = record.message_id.clone().unwrap_or_default();
            let group = fifo_group(record);
            if group.is_some_and(|group| failed_groups.contains(group)) {
                tracing::warn!(message_id = %id, "an earlier record of this FIFO message group failed; this one is left for the retry");
                failed.push(id);
                continue;
            }
            let Err(error) = self.run(record, context, &mut handle).await else {
                continue;
            };
            tracing::warn!(message_id = %id, error_type = error.error_type(), error = %error, "a batch record failed");
            self.route(record, &error, context).await;
            if let Some(group) = group {
                failed_groups.insert(group.to_owned());
            }
            first_error.get_or_insert_with(|| error.to_string());
            failed.push(id);
        }
        if self.whole_batch_failure_is_error
            && !batch.records.is_empty()
            && failed.len() == batch.records.len()
        {
            return Err(BatchError::AllFailed {
                records: batch.records.len(),
                first: first_error.unwrap_or_else(|| "an earlier record of its FIFO group failed".into()),
            });
        }
        let mut response = SqsBatchResponse::default();
        response.batch_item_failures = failed
            .into_iter()
            .map(|id| {
                let mut failure = BatchItemFailure::default();
                failure.item_identifier = id;
                failure
            })
            .collect();
        Ok(response)
    }

    /// Runs one record (at most once per key, when idempotent).
    async fn run<F, T, E>(
        &self,
        record: &SqsMessage,
        context: &Context,
        handle: &mut F,
    ) -> Result<T, InvocationError>
    where
        F: AsyncFnMut(&SqsMessage) -> Result<T, E>,
        T: Serialize + DeserializeOwned,
        E: Into<BoxError> + 'static,
    {
        let Some((idempotency, key)) = &self.idempotency else {
            return handle(record).await.map_err(InvocationError::from_handler);
        };
        let body = record.body.as_deref().unwrap_or_default();
        let payload: Value = serde_json::from_str(body).unwrap_or_else(|_| Value::String(body.to_owned()));
        let key = match key {
            RecordKey::MessageId => Value::from(record.message_id.clone().unwrap_or_default()),
            RecordKey::BodyPointer(pointer) => match payload.pointer(pointer) {
                Some(value) if !value.is_null() => value.clone(),
                _ => {
                    let reason = format!("the record's body has no value at `{pointer}`");
                    return Err(crate::idempotency::IdempotencyError::MissingKey(reason).into());
                }
            },
        };
        idempotency
            .once(&key, &payload, &context.request_id, context.deadline, || {
                handle(record)
            })
            .await
            .map_err(|error| match error {
                OnceError::Idempotency(refused) => refused.into(),
                OnceError::Work(error) => InvocationError::from_handler(error),
            })
    }

    /// Routes a failed record that has been received often enough.
    async fn route(&self, record: &SqsMessage, error: &InvocationError, context: &Context) {
        let Some((routing, after)) = &self.routing else {
            return;
        };
        // A duplicate still in progress elsewhere is retried, not reported.
        if routing.is_back_pressure(error) {
            return;
        }
        let receives = record
            .attributes
            .get("ApproximateReceiveCount")
            .and_then(|count| count.parse::<u32>().ok())
            .unwrap_or(1);
        if receives < *after {
            return;
        }
        let event = serde_json::to_string(record).unwrap_or_default();
        let envelope = routing.envelope(error, &event, context, receives);
        routing.route(&envelope, context.deadline).await;
    }
}

/// The message group of a record from a FIFO queue.
fn fifo_group(record: &SqsMessage) -> Option<&str> {
    let fifo = record
        .event_source_arn
        .as_deref()
        .is_some_and(|arn| arn.ends_with(".fifo"));
    fifo.then(|| record.attributes.get("MessageGroupId").map(String::as_str))
        .flatten()
}
