//! [`Moto`]: a moto server on 127.0.0.1 and SDK clients pointed at it.

use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodb::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_dynamodb::config::{
    BehaviorVersion, ConfigBag, Credentials, Intercept, Region, RuntimeComponents,
};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType, TimeToLiveSpecification,
};
use aws_types::sdk_config::SharedCredentialsProvider;
use aws_types::SdkConfig;

use crate::process::{port_open, Process};
use crate::{free_port, http_agent, tool, unique_name, workspace_root, HarnessError};

const REGION: &str = "us-east-1";

/// The booking queue's `maxReceiveCount`, as the template sets it (and booking-worker's default
/// `QUEUE_MAX_RECEIVE_COUNT`).
pub const BOOKING_QUEUE_MAX_RECEIVE_COUNT: u32 = 3;

/// A running moto server; stopped when dropped.
#[derive(Debug)]
pub struct Moto {
    process: Process,
    endpoint: String,
}

impl Moto {
    /// Starts moto's server on a free port and waits until it answers. It runs through
    /// `tests/moto_server.py`, which makes each request atomic, as DynamoDB makes each write.
    pub fn start() -> Result<Self, HarnessError> {
        let port = free_port();
        let mut command = Command::new(tool("python")?);
        command
            .arg(workspace_root().join("tests").join("moto_server.py"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()]);
        let mut process = Process::spawn("moto_server", command)?;
        let endpoint = format!("http://127.0.0.1:{port}");
        let probe = format!("{endpoint}/moto-api/data.json");
        let agent = http_agent(Duration::from_secs(2));
        process.wait_ready(Duration::from_secs(60), || {
            port_open(port) && agent.get(&probe).call().is_ok_and(|r| r.status() == 200)
        })?;
        Ok(Self { process, endpoint })
    }

    /// `http://127.0.0.1:<port>`, for `AWS_ENDPOINT_URL`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// The environment a function process needs to reach this server.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", self.endpoint.as_str()),
            ("AWS_REGION", REGION),
            ("AWS_DEFAULT_REGION", REGION),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    /// Clears every resource (`POST /moto-api/reset`).
    pub fn reset(&self) -> Result<(), HarnessError> {
        let url = format!("{}/moto-api/reset", self.endpoint);
        http_agent(Duration::from_secs(10))
            .post(&url)
            .send_empty()
            .map(drop)
            .map_err(|e| HarnessError::Http {
                url,
                reason: e.to_string(),
            })
    }

    /// The shared SDK configuration for this server: region, test credentials, endpoint.
    pub fn sdk_config(&self) -> SdkConfig {
        let credentials = Credentials::new("testing", "testing", None, None, "keel-tests");
        SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .credentials_provider(SharedCredentialsProvider::new(credentials))
            .endpoint_url(&self.endpoint)
            .build()
    }

    /// A DynamoDB client for this server.
    pub fn dynamodb(&self) -> aws_sdk_dynamodb::Client {
        aws_sdk_dynamodb::Client::new(&self.sdk_config())
    }

    /// A DynamoDB client for this server and the counter of the requests it sends.
    pub fn dynamodb_counted(&self) -> (aws_sdk_dynamodb::Client, CountRequests) {
        let requests = CountRequests::default();
        let config = aws_sdk_dynamodb::config::Builder::from(&self.sdk_config())
            .interceptor(requests.clone())
            .build();
        (aws_sdk_dynamodb::Client::from_conf(config), requests)
    }

    /// An SNS client for this server.
    pub fn sns(&self) -> aws_sdk_sns::Client {
        aws_sdk_sns::Client::new(&self.sdk_config())
    }

    /// An SQS client for this server.
    pub fn sqs(&self) -> aws_sdk_sqs::Client {
        aws_sdk_sqs::Client::new(&self.sdk_config())
    }

    /// A CloudWatch client for this server (it speaks RPC v2 CBOR, which `tests/moto_server.py`
    /// translates for moto).
    pub fn cloudwatch(&self) -> aws_sdk_cloudwatch::Client {
        aws_sdk_cloudwatch::Client::new(&self.sdk_config())
    }

    /// Creates a uniquely named table with string key `id` (on-demand billing) and, when
    /// `ttl_attribute` is given, TTL on that attribute. Returns its name.
    pub async fn create_table(
        &self,
        prefix: &str,
        ttl_attribute: Option<&str>,
    ) -> Result<String, aws_sdk_dynamodb::Error> {
        let name = unique_name(prefix);
        let client = self.dynamodb();
        client
            .create_table()
            .table_name(&name)
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name("id")
                    .attribute_type(ScalarAttributeType::S)
                    .build()?,
            )
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name("id")
                    .key_type(KeyType::Hash)
                    .build()?,
            )
            .billing_mode(BillingMode::PayPerRequest)
            .send()
            .await?;
        if let Some(attribute) = ttl_attribute {
            client
                .update_time_to_live()
                .table_name(&name)
                .time_to_live_specification(
                    TimeToLiveSpecification::builder()
                        .attribute_name(attribute)
                        .enabled(true)
                        .build()?,
                )
                .send()
                .await?;
        }
        Ok(name)
    }

    /// Creates a uniquely named SNS topic; returns its ARN.
    pub async fn create_topic(&self, prefix: &str) -> Result<String, aws_sdk_sns::Error> {
        let output = self.sns().create_topic().name(unique_name(prefix)).send().await?;
        Ok(output.topic_arn.unwrap_or_default())
    }

    /// Creates a uniquely named SQS queue; returns its URL.
    pub async fn create_queue(&self, prefix: &str) -> Result<String, aws_sdk_sqs::Error> {
        let output = self
            .sqs()
            .create_queue()
            .queue_name(unique_name(prefix))
            .send()
            .await?;
        Ok(output.queue_url.unwrap_or_default())
    }

    /// A new topic and a new queue subscribed to it (as on-call's queue is): returns the topic's
    /// ARN and the queue's URL.
    pub async fn subscribed_topic(&self, prefix: &str) -> Result<(String, String), HarnessError> {
        let failed = |reason: String| HarnessError::Setup(format!("creating the topic {prefix}: {reason}"));
        let topic = self
            .create_topic(prefix)
            .await
            .map_err(|e| failed(e.to_string()))?;
        let queue = self
            .create_queue(&format!("{prefix}-subscriber"))
            .await
            .map_err(|e| failed(e.to_string()))?;
        self.subscribe_queue(&topic, &queue).await?;
        Ok((topic, queue))
    }

    /// The booking functions' resources, as the template defines them: the bookings table
    /// (key `pk`, GSI `by-customer` on `customer_id` and `created_at`), the booking topic and the
    /// booking queue subscribed to it (raw delivery), where `BookingRequested` events can be
    /// read, with its dead-letter queue ([`BOOKING_QUEUE_MAX_RECEIVE_COUNT`] receives).
    pub async fn booking_stack(&self) -> Result<BookingStack, HarnessError> {
        use aws_sdk_dynamodb::types::{GlobalSecondaryIndex, Projection, ProjectionType};
        let failed = |reason: String| HarnessError::Setup(format!("creating the bookings stack: {reason}"));
        let name = unique_name("bookings");
        let string = |name: &str| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .map_err(|e| failed(e.to_string()))
        };
        let key = |name: &str, kind: KeyType| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(kind)
                .build()
                .map_err(|e| failed(e.to_string()))
        };
        let by_customer = GlobalSecondaryIndex::builder()
            .index_name("by-customer")
            .key_schema(key("customer_id", KeyType::Hash)?)
            .key_schema(key("created_at", KeyType::Range)?)
            .projection(Projection::builder().projection_type(ProjectionType::All).build())
            .build()
            .map_err(|e| failed(e.to_string()))?;
        self.dynamodb()
            .create_table()
            .table_name(&name)
            .attribute_definitions(string("pk")?)
            .attribute_definitions(string("customer_id")?)
            .attribute_definitions(string("created_at")?)
            .key_schema(key("pk", KeyType::Hash)?)
            .global_secondary_indexes(by_customer)
            .billing_mode(BillingMode::PayPerRequest)
            .send()
            .await
            .map_err(|e| failed(aws_sdk_dynamodb::error::DisplayErrorContext(e).to_string()))?;
        // The booking queue as the template defines it: a redrive policy moves a message to its
        // dead-letter queue on its third receive.
        let events_dlq = self
            .create_queue("booking-events-dlq")
            .await
            .map_err(|e| failed(aws_sdk_sqs::error::DisplayErrorContext(e).to_string()))?;
        let dlq_arn = crate::SqsEventSource::new(self, &events_dlq)
            .await?
            .queue_arn()
            .to_owned();
        let redrive = serde_json::json!({
            "deadLetterTargetArn": dlq_arn,
            "maxReceiveCount": BOOKING_QUEUE_MAX_RECEIVE_COUNT
        });
        let events_queue = self
            .sqs()
            .create_queue()
            .queue_name(unique_name("booking-events"))
            .attributes(
                aws_sdk_sqs::types::QueueAttributeName::RedrivePolicy,
                redrive.to_string(),
            )
            .send()
            .await
            .map_err(|e| failed(aws_sdk_sqs::error::DisplayErrorContext(e).to_string()))?
            .queue_url
            .ok_or_else(|| failed("the queue has no URL".into()))?;
        let topic_arn = self
            .create_topic("booking-events")
            .await
            .map_err(|e| failed(aws_sdk_sns::error::DisplayErrorContext(e).to_string()))?;
        self.subscribe_queue(&topic_arn, &events_queue).await?;
        Ok(BookingStack {
            table: name,
            topic_arn,
            events_queue,
            events_dlq,
        })
    }

    /// Subscribes the queue `queue_url` to the topic `topic_arn` with raw message delivery (the
    /// SQS body is the SNS message; message attributes become SQS message attributes).
    pub async fn subscribe_queue(&self, topic_arn: &str, queue_url: &str) -> Result<(), HarnessError> {
        let failed =
            |reason: String| HarnessError::Setup(format!("subscribing {queue_url} to {topic_arn}: {reason}"));
        let attributes = self
            .sqs()
            .get_queue_attributes()
            .queue_url(queue_url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
            .send()
            .await
            .map_err(|e| failed(aws_sdk_sqs::error::DisplayErrorContext(e).to_string()))?;
        let queue_arn = attributes
            .attributes
            .and_then(|a| a.get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn).cloned())
            .ok_or_else(|| failed("the queue has no ARN".into()))?;
        self.sns()
            .subscribe()
            .topic_arn(topic_arn)
            .protocol("sqs")
            .endpoint(queue_arn)
            .attributes("RawMessageDelivery", "true")
            .send()
            .await
            .map_err(|e| failed(aws_sdk_sns::error::DisplayErrorContext(e).to_string()))?;
        Ok(())
    }

    /// Receives messages of `queue_url` until `count` have arrived, polling for at most
    /// `timeout`: for messages published asynchronously (by the extension, after a response, or
    /// through SNS). Fails, saying how many arrived, when fewer than `count` did in time; returns
    /// every message received (more than `count` when more were there). Received messages stay
    /// invisible, so each is returned once.
    pub async fn wait_for_messages(
        &self,
        queue_url: &str,
        count: usize,
        timeout: Duration,
    ) -> Result<Vec<aws_sdk_sqs::types::Message>, HarnessError> {
        let deadline = std::time::Instant::now() + timeout;
        let mut messages = Vec::new();
        loop {
            messages.extend(self.receive_available(queue_url).await?);
            if messages.len() >= count {
                return Ok(messages);
            }
            if std::time::Instant::now() >= deadline {
                return Err(HarnessError::Setup(format!(
                    "{} of the {count} messages expected arrived in {queue_url} within {timeout:?}",
                    messages.len()
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Receives the messages of `queue_url` that are there now (with their message attributes),
    /// until a receive comes back empty: to check that nothing (more) arrived. Received messages
    /// stay invisible, so each is returned once.
    pub async fn receive_available(
        &self,
        queue_url: &str,
    ) -> Result<Vec<aws_sdk_sqs::types::Message>, HarnessError> {
        let sqs = self.sqs();
        let mut messages = Vec::new();
        loop {
            let received = sqs
                .receive_message()
                .queue_url(queue_url)
                .max_number_of_messages(10)
                .message_attribute_names("All")
                .visibility_timeout(600)
                .send()
                .await
                .map_err(|e| {
                    HarnessError::Setup(format!(
                        "receiving from {queue_url}: {}",
                        aws_sdk_sqs::error::DisplayErrorContext(e)
                    ))
                })?;
            let batch = received.messages.unwrap_or_default();
            if batch.is_empty() {
                return Ok(messages);
            }
            messages.extend(batch);
        }
    }
}

/// An SDK interceptor that counts the HTTP requests a client sends (retries included).
#[derive(Clone, Debug, Default)]
pub struct CountRequests(Arc<AtomicU64>);

impl CountRequests {
    /// Requests sent so far.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

impl Intercept for CountRequests {
    fn name(&self) -> &'static str {
        "CountRequests"
    }

    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        _config: &mut ConfigBag,
    ) -> Result<(), aws_sdk_dynamodb::error::BoxError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// The booking functions' resources in moto (see [`Moto::booking_stack`]).
#[derive(Clone, Debug)]
pub struct BookingStack {
    /// The bookings table (`BOOKINGS_TABLE`).
    pub table: String,
    /// The booking topic (`BOOKING_TOPIC_ARN`).
    pub topic_arn: String,
    /// The booking queue: subscribed to the topic, with raw delivery.
    pub events_queue: String,
    /// The booking queue's dead-letter queue.
    pub events_dlq: String,
}

impl BookingStack {
    /// The variables the booking functions read: `BOOKINGS_TABLE`, `BOOKING_TOPIC_ARN`.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("BOOKINGS_TABLE".to_owned(), self.table.clone()),
            ("BOOKING_TOPIC_ARN".to_owned(), self.topic_arn.clone()),
        ]
    }
}
