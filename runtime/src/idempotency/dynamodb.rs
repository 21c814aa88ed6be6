//! [`DynamoDbStore`]: idempotency records in a DynamoDB table (key `id`, TTL `expiration`).

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValuesOnConditionCheckFailure};
use aws_sdk_dynamodb::Client;

use crate::aws::{is_condition_failure, Failure};

use super::store::{Acquire, IdempotencyStore, Now, Record, Status, StoreError};

const ACQUIRE_CONDITION: &str =
    "attribute_not_exists(#id) OR #expiration < :now_s OR (#status = :in_progress AND #in_progress_expiration < :now_ms)";

/// Idempotency records in DynamoDB, one conditional request per operation:
///
/// - acquire: `PutItem` on condition that no live record holds the key, with
///   `ReturnValuesOnConditionCheckFailure = ALL_OLD` so a duplicate costs one round trip;
/// - complete: `UpdateItem` on condition that `owner` is still this invocation;
/// - release: `DeleteItem` on the same condition.
#[derive(Clone, Debug)]
pub struct DynamoDbStore {
    client: Client,
    table: String,
}

impl DynamoDbStore {
    /// A store on `table` through `client`.
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    /// A store on `table` with a client configured from the environment (region, credentials,
    /// `AWS_ENDPOINT_URL`), with timeouts and retries fit for a request path: 1 s per attempt,
    /// 3 s in all, at most 3 attempts from 50 ms of backoff.
    pub async fn from_env(table: impl Into<String>) -> Self {
        Self::new(Client::new(&crate::aws::config().await), table)
    }

    /// The table name.
    pub fn table(&self) -> &str {
        &self.table
    }
}

fn string(value: &str) -> AttributeValue {
    AttributeValue::S(value.to_owned())
}

fn number(value: u64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

fn item(record: &Record) -> HashMap<String, AttributeValue> {
    let mut item = HashMap::from([
        ("id".to_owned(), string(&record.id)),
        ("status".to_owned(), string(record.status.as_str())),
        ("expiration".to_owned(), number(record.expiration)),
        (
            "in_progress_expiration".to_owned(),
            number(record.in_progress_expiration),
        ),
        ("owner".to_owned(), string(&record.owner)),
        ("validation".to_owned(), string(&record.validation)),
    ]);
    if let Some(data) = &record.data {
        item.insert("data".to_owned(), string(data));
    }
    item
}

fn parse(item: &HashMap<String, AttributeValue>) -> Result<Record, StoreError> {
    let text = |name: &str| -> Result<Arc<str>, StoreError> {
        match item.get(name) {
            Some(AttributeValue::S(value)) => Ok(Arc::from(value.as_str())),
            _ => Err(StoreError::Malformed(format!(
                "`{name}` is missing or not a string"
            ))),
        }
    };
    let count = |name: &str| -> Result<u64, StoreError> {
        match item.get(name) {
            Some(AttributeValue::N(value)) => value
                .parse()
                .map_err(|_| StoreError::Malformed(format!("`{name}` = {value} is not a whole number"))),
            _ => Err(StoreError::Malformed(format!(
                "`{name}` is missing or not a number"
            ))),
        }
    };
    let status = text("status")?;
    Ok(Record {
        id: text("id")?,
        status: Status::parse(&status)
            .ok_or_else(|| StoreError::Malformed(format!("unknown status {status:?}")))?,
        expiration: count("expiration")?,
        in_progress_expiration: count("in_progress_expiration")?,
        owner: text("owner")?,
        validation: text("validation")?,
        data: text("data").ok(),
    })
}

/// Maps an SDK failure onto [`StoreError`]; a failed condition is handled by the callers.
fn store_error<E, R>(error: SdkError<E, R>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match crate::aws::failure(&error) {
        (Failure::Throttled, described) => StoreError::Throttled(described),
        (Failure::Unavailable, described) => StoreError::Unavailable(described),
        (Failure::Rejected, described) => StoreError::Rejected(described),
    }
}

#[async_trait]
impl IdempotencyStore for DynamoDbStore {
    async fn acquire(&self, record: &Record, now: Now) -> Result<Acquire, StoreError> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item(record)))
            .condition_expression(ACQUIRE_CONDITION)
            .expression_attribute_names("#id", "id")
            .expression_attribute_names("#expiration", "expiration")
            .expression_attribute_names("#status", "status")
            .expression_attribute_names("#in_progress_expiration", "in_progress_expiration")
            .expression_attribute_values(":now_s", number(now.seconds()))
            .expression_attribute_values(":now_ms", number(now.millis()))
            .expression_attribute_values(":in_progress", string(Status::InProgress.as_str()))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(_) => Ok(Acquire::Acquired),
            Err(SdkError::ServiceError(service)) if service.err().is_conditional_check_failed_exception() => {
                let old = match service.err() {
                    aws_sdk_dynamodb::operation::put_item::PutItemError::ConditionalCheckFailedException(
                        e,
                    ) => e.item.clone(),
                    _ => None,
                };
                match old {
                    Some(old) => parse(&old).map(Acquire::Exists),
                    // A store that does not return the old item: read it (one more round trip).
                    None => match self.get(&record.id).await? {
                        Some(existing) => Ok(Acquire::Exists(existing)),
                        None => Err(StoreError::Unavailable(
                            "the record changed while it was read".into(),
                        )),
                    },
                }
            }
            Err(error) => Err(store_error(error)),
        }
    }

    async fn complete(
        &self,
        id: &str,
        owner: &str,
        data: Option<Arc<str>>,
        expiration: u64,
    ) -> Result<(), StoreError> {
        let update = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("id", string(id))
            .condition_expression("#owner = :owner")
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_names("#status", "status")
            .expression_attribute_names("#expiration", "expiration")
            .expression_attribute_names("#data", "data")
            .expression_attribute_values(":owner", string(owner))
            .expression_attribute_values(":completed", string(Status::Completed.as_str()))
            .expression_attribute_values(":expiration", number(expiration));
        let update = match data {
            Some(data) => update
                .update_expression("SET #status = :completed, #expiration = :expiration, #data = :data")
                .expression_attribute_values(":data", string(&data)),
            None => {
                update.update_expression("SET #status = :completed, #expiration = :expiration REMOVE #data")
            }
        };
        match update.send().await {
            Ok(_) => Ok(()),
            Err(error) if is_condition_failure(&error) => Err(StoreError::NotOwner),
            Err(error) => Err(store_error(error)),
        }
    }

    async fn release(&self, id: &str, owner: &str) -> Result<(), StoreError> {
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("id", string(id))
            .condition_expression("#owner = :owner")
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_values(":owner", string(owner))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(error) if is_condition_failure(&error) => Err(StoreError::NotOwner),
            Err(error) => Err(store_error(error)),
        }
    }

    async fn get(&self, id: &str) -> Result<Option<Record>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("id", string(id))
            .consistent_read(true)
            .send()
            .await
            .map_err(store_error)?;
        output.item.as_ref().map(parse).transpose()
    }
}
