//! [`SqsEventSource`]: Lambda's SQS event source mapping, stood in for: it receives a batch from
//! a (moto) queue, invokes the function with the event Lambda would build, deletes the records
//! the function did not report as failed and makes the failed ones visible again.

use std::collections::{BTreeSet, HashMap};

use aws_sdk_sqs::types::{Message, MessageSystemAttributeName, QueueAttributeName};
use serde_json::{json, Value};

use crate::{Emulator, HarnessError, Moto};

/// A queue polled for a function, as Lambda's event source mapping polls it (batches of up to
/// ten, `ReportBatchItemFailures` on).
#[derive(Clone, Debug)]
pub struct SqsEventSource {
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
    queue_arn: String,
}

/// One batch handed to the function.
#[derive(Debug)]
pub struct Delivery {
    /// The messages of the batch, as received.
    pub messages: Vec<Message>,
    /// The message ids the function reported failed (all of them when the invocation failed).
    pub failed: BTreeSet<String>,
}

impl SqsEventSource {
    /// The event source of the queue `queue_url` in `moto`.
    pub async fn new(moto: &Moto, queue_url: &str) -> Result<Self, HarnessError> {
        let sqs = moto.sqs();
        let attributes = sqs
            .get_queue_attributes()
            .queue_url(queue_url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .map_err(|e| sqs_failed(queue_url, e))?;
        let queue_arn = attributes
            .attributes
            .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
            .ok_or_else(|| HarnessError::Setup(format!("{queue_url} has no ARN")))?;
        Ok(Self {
            sqs,
            queue_url: queue_url.to_owned(),
            queue_arn,
        })
    }

    /// The queue's ARN (the records' `eventSourceARN`).
    pub fn queue_arn(&self) -> &str {
        &self.queue_arn
    }

    /// Receives up to ten messages that are visible now, with their system attributes
    /// (`ApproximateReceiveCount`, …), invisible for the next 30 s.
    pub async fn receive(&self) -> Result<Vec<Message>, HarnessError> {
        let received = self
            .sqs
            .receive_message()
            .queue_url(&self.queue_url)
            .max_number_of_messages(10)
            .visibility_timeout(30)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .message_attribute_names("All")
            .send()
            .await
            .map_err(|e| sqs_failed(&self.queue_url, e))?;
        Ok(received.messages.unwrap_or_default())
    }

    /// The SQS event Lambda builds from `messages`.
    pub fn event(&self, messages: &[Message]) -> String {
        let records: Vec<Value> = messages
            .iter()
            .map(|m| {
                let attributes: HashMap<&str, &str> = m
                    .attributes()
                    .into_iter()
                    .flatten()
                    .map(|(name, value)| (name.as_str(), value.as_str()))
                    .collect();
                json!({
                    "messageId": m.message_id(),
                    "receiptHandle": m.receipt_handle(),
                    "body": m.body(),
                    "attributes": attributes,
                    "messageAttributes": {},
                    "md5OfBody": m.md5_of_body(),
                    "eventSource": "aws:sqs",
                    "eventSourceARN": self.queue_arn,
                    "awsRegion": "us-east-1"
                })
            })
            .collect();
        json!({ "Records": records }).to_string()
    }

    /// One poll: receives a batch and, when there is one, invokes the function `emulator`
    /// serves with it, deletes the records that succeeded and makes the failed ones visible
    /// again at once (where Lambda waits for the visibility timeout). `None` when the queue had
    /// nothing visible.
    pub async fn deliver(&self, emulator: &Emulator) -> Result<Option<Delivery>, HarnessError> {
        let messages = self.receive().await?;
        if messages.is_empty() {
            return Ok(None);
        }
        let answer = emulator.invoke(&self.event(&messages))?;
        let ids: BTreeSet<String> = messages
            .iter()
            .filter_map(|m| m.message_id().map(str::to_owned))
            .collect();
        // Lambda fails the whole batch when the invocation fails, when the answer is not an
        // `SqsBatchResponse`, and when a reported failure names no record of the batch (an empty
        // or unknown `itemIdentifier`); an answer without failures succeeds whole.
        let is_response = answer.body.is_object() || answer.body.is_null();
        let failed = match answer.body.get("batchItemFailures") {
            _ if answer.status != 200 || !is_response => ids,
            None | Some(Value::Null) => BTreeSet::new(),
            Some(Value::Array(failures)) => {
                let reported: BTreeSet<String> = failures
                    .iter()
                    .map(|f| f["itemIdentifier"].as_str().unwrap_or_default().to_owned())
                    .collect();
                if reported.is_subset(&ids) {
                    reported
                } else {
                    ids
                }
            }
            Some(_) => ids,
        };
        for message in &messages {
            let handle = message.receipt_handle().unwrap_or_default();
            if failed.contains(message.message_id().unwrap_or_default()) {
                self.sqs
                    .change_message_visibility()
                    .queue_url(&self.queue_url)
                    .receipt_handle(handle)
                    .visibility_timeout(0)
                    .send()
                    .await
                    .map_err(|e| sqs_failed(&self.queue_url, e))?;
            } else {
                self.sqs
                    .delete_message()
                    .queue_url(&self.queue_url)
                    .receipt_handle(handle)
                    .send()
                    .await
                    .map_err(|e| sqs_failed(&self.queue_url, e))?;
            }
        }
        Ok(Some(Delivery { messages, failed }))
    }
}

fn sqs_failed<E: std::error::Error + 'static>(
    queue_url: &str,
    error: aws_sdk_sqs::error::SdkError<E, aws_sdk_sqs::config::http::HttpResponse>,
) -> HarnessError {
    HarnessError::Setup(format!(
        "{queue_url}: {}",
        aws_sdk_sqs::error::DisplayErrorContext(error)
    ))
}
