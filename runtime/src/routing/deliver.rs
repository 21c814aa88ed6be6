//! The delivery chain: SNS topic → SQS dead-letter queue → log line (the relay to the Keel
//! extension in front of it is [`super::relay`]).

use std::time::Duration;

use serde_json::Value;

use super::envelope::Envelope;
use crate::metrics::catalog;

/// The largest message SNS and SQS accept, message attributes included (and the size an
/// envelope and its attributes are kept under).
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;

/// How much of an oversized event an envelope keeps, as text.
const KEPT_EVENT_BYTES: usize = 64 * 1024;

/// The longest `error_message` an envelope carries; a longer one keeps its start.
pub const MAX_ERROR_MESSAGE_BYTES: usize = 8 * 1024;

/// Where an envelope landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sink {
    /// Handed to the Keel extension, which publishes it after the response.
    Relay,
    /// Published to the SNS topic.
    Sns,
    /// Sent to the SQS dead-letter queue (the topic failed or is not configured).
    Dlq,
    /// Written whole to the log as `keel.routed_error` (both failed or are not configured).
    Log,
}

impl Sink {
    /// The name of the sink: the `sink` dimension of `RoutedError` (which `relay` never is: a
    /// relayed envelope is counted where the extension publishes it).
    pub fn as_str(self) -> &'static str {
        match self {
            Sink::Relay => "relay",
            Sink::Sns => "sns",
            Sink::Dlq => "dlq",
            Sink::Log => "log",
        }
    }
}

/// The SNS topic and the dead-letter queue envelopes are published to (none without the
/// `routing` feature: envelopes then go to the relay or the log).
#[derive(Clone, Debug, Default)]
pub(crate) struct Sinks {
    #[cfg(feature = "routing")]
    pub(super) topic: Option<(aws_sdk_sns::Client, String)>,
    #[cfg(feature = "routing")]
    pub(super) dlq: Option<(aws_sdk_sqs::Client, String)>,
}

impl Sinks {
    /// Publishes `envelope` through the chain within `budget`: the topic (half of it at most),
    /// then the queue, then the log. Counts where it landed in `RoutedError{sink}`.
    pub(crate) async fn publish(&self, envelope: &Envelope, budget: Duration) -> Sink {
        let body = message_body(envelope);
        let sink = match self.publish_to_aws(envelope, &body, budget).await {
            Some(sink) => sink,
            None => {
                write_to_log(&body);
                Sink::Log
            }
        };
        catalog::keel::ROUTED_ERROR.increment_with(1, &[sink.as_str()]);
        sink
    }

    /// The topic, then the queue: the sink that took `body`, if one did.
    #[cfg(feature = "routing")]
    async fn publish_to_aws(&self, envelope: &Envelope, body: &str, budget: Duration) -> Option<Sink> {
        let started = std::time::Instant::now();
        let class = envelope.error_class.as_str();
        if let Some((client, topic)) = &self.topic {
            let request = client
                .publish()
                .topic_arn(topic)
                .message(body)
                .set_message_attributes(Some(attributes(class, &envelope.service, sns_attribute)));
            match within(budget / 2, request.send()).await {
                Ok(Ok(_)) => return Some(Sink::Sns),
                Ok(Err(error)) => warn_failed(
                    Sink::Sns,
                    envelope,
                    &aws_sdk_sns::error::DisplayErrorContext(error),
                ),
                Err(elapsed) => warn_failed(Sink::Sns, envelope, &elapsed),
            }
        }
        if let Some((client, queue)) = &self.dlq {
            let request = client
                .send_message()
                .queue_url(queue)
                .message_body(body)
                .set_message_attributes(Some(attributes(class, &envelope.service, sqs_attribute)));
            match within(budget.saturating_sub(started.elapsed()), request.send()).await {
                Ok(Ok(_)) => return Some(Sink::Dlq),
                Ok(Err(error)) => warn_failed(
                    Sink::Dlq,
                    envelope,
                    &aws_sdk_sqs::error::DisplayErrorContext(error),
                ),
                Err(elapsed) => warn_failed(Sink::Dlq, envelope, &elapsed),
            }
        }
        None
    }

    /// Without the `routing` feature there is no topic or queue.
    #[cfg(not(feature = "routing"))]
    async fn publish_to_aws(&self, _envelope: &Envelope, _body: &str, _budget: Duration) -> Option<Sink> {
        None
    }
}

/// The last sink: the ERROR line `keel.routed_error` holding the whole envelope.
pub(crate) fn write_to_log(body: &str) {
    tracing::error!(envelope = %body, "keel.routed_error");
}

/// Runs `future` for at most `budget`.
#[cfg(feature = "routing")]
async fn within<F: std::future::Future>(budget: Duration, future: F) -> Result<F::Output, TimedOut> {
    tokio::time::timeout(budget, future)
        .await
        .map_err(|_| TimedOut(budget))
}

/// A sink took longer than its share of the invocation's remaining time.
#[cfg(feature = "routing")]
#[derive(Debug, thiserror::Error)]
#[error("no answer within {0:?}")]
struct TimedOut(Duration);

#[cfg(feature = "routing")]
fn warn_failed(sink: Sink, envelope: &Envelope, error: &dyn std::fmt::Display) {
    tracing::warn!(
        sink = sink.as_str(),
        envelope_id = %envelope.id,
        error = %error,
        "a routed error could not be delivered here; trying the next sink"
    );
}

/// The message attributes subscribers filter on: `error_class` and `service`.
#[cfg(feature = "routing")]
fn attributes<A>(
    class: &str,
    service: &str,
    attribute: fn(&str) -> Option<A>,
) -> std::collections::HashMap<String, A> {
    [("error_class", class), ("service", service)]
        .into_iter()
        .filter_map(|(name, value)| Some((name.to_owned(), attribute(value)?)))
        .collect()
}

#[cfg(feature = "routing")]
fn sns_attribute(value: &str) -> Option<aws_sdk_sns::types::MessageAttributeValue> {
    let attribute = aws_sdk_sns::types::MessageAttributeValue::builder().data_type("String");
    attribute.string_value(value).build().ok()
}

#[cfg(feature = "routing")]
fn sqs_attribute(value: &str) -> Option<aws_sdk_sqs::types::MessageAttributeValue> {
    let attribute = aws_sdk_sqs::types::MessageAttributeValue::builder().data_type("String");
    attribute.string_value(value).build().ok()
}

/// The envelope as JSON, kept with its message attributes under [`MAX_MESSAGE_BYTES`]: an
/// `error_message` is cut to [`MAX_ERROR_MESSAGE_BYTES`], and an event too large to fit is
/// replaced by `{"keel_truncated": true, "bytes": <size>, "text": <its first 64 KB>}` (without
/// `text` when even that does not fit).
pub(crate) fn message_body(envelope: &Envelope) -> String {
    let limit = MAX_MESSAGE_BYTES.saturating_sub(attributes_size(envelope));
    let capped;
    let envelope = match cut(&envelope.error_message, MAX_ERROR_MESSAGE_BYTES) {
        Some(message) => {
            capped = Envelope {
                error_message: message,
                ..envelope.clone()
            };
            &capped
        }
        None => envelope,
    };
    let body = serde_json::to_string(envelope).unwrap_or_default();
    if body.len() <= limit {
        return body;
    }
    let text = envelope.event.to_string();
    let mut smaller = envelope.clone();
    let kept = cut(&text, KEPT_EVENT_BYTES);
    smaller.event = serde_json::json!({"keel_truncated": true, "bytes": text.len(), "text": kept.as_deref().unwrap_or(&text)});
    let body = serde_json::to_string(&smaller).unwrap_or_default();
    if body.len() <= limit {
        return body;
    }
    smaller.event = serde_json::json!({"keel_truncated": true, "bytes": text.len()});
    serde_json::to_string(&smaller).unwrap_or_default()
}

/// `text` cut to at most `limit` bytes (at a character boundary) and marked, if longer.
pub(crate) fn cut(text: &str, limit: usize) -> Option<String> {
    if text.len() <= limit {
        return None;
    }
    let mut end = limit;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Some(format!("{}… [cut: {} bytes in all]", &text[..end], text.len()))
}

/// The size SNS and SQS count for an envelope's message attributes: each name, data type and
/// value.
fn attributes_size(envelope: &Envelope) -> usize {
    [
        ("error_class", envelope.error_class.as_str()),
        ("service", envelope.service.as_str()),
    ]
    .iter()
    .map(|(name, value)| name.len() + "String".len() + value.len())
    .sum()
}

/// The event of an envelope, redacted: its JSON, or its text when it is not JSON (masked whole
/// when it only looks like JSON).
pub(crate) fn event_value(text: &str, redactor: &crate::redact::Redactor) -> Value {
    match serde_json::from_str(text) {
        Ok(mut event) => {
            redactor.redact(&mut event);
            event
        }
        Err(_) => Value::String(redactor.redact_non_json(text).into_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::ErrorRouting;

    #[test]
    fn an_envelope_and_its_attributes_always_fit_sns_and_sqs() {
        let huge = "é".repeat(200 * 1024);
        let routing = ErrorRouting::new("s".repeat(2048));
        let error = crate::InvocationError::new("Booking.Failed", huge.clone());
        for event in [serde_json::json!({"blob": huge}).to_string(), "{}".to_owned()] {
            let envelope = routing.envelope(&error, &event, &lambda_runtime::Context::default(), 1);
            assert!(envelope.error_message.len() < MAX_ERROR_MESSAGE_BYTES + 64);
            let body = message_body(&envelope);
            let sent = body.len() + attributes_size(&envelope);
            assert!(sent <= MAX_MESSAGE_BYTES, "{sent} bytes");
            let read: Envelope = serde_json::from_str(&body).expect("still an envelope");
            assert!(read.error_message.ends_with(" bytes in all]"));
        }
        // An envelope built elsewhere (handed to the relay) is capped when it is sent.
        let mut relayed = routing.envelope(&error, "{}", &lambda_runtime::Context::default(), 1);
        relayed.error_message = huge;
        let body = message_body(&relayed);
        assert!(body.len() + attributes_size(&relayed) <= MAX_MESSAGE_BYTES);
    }
}
