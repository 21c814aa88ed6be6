//! [`DynamoDbSlots`]: slots shared by every execution environment, in a DynamoDB table.

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::Client;

use super::{SlotError, SlotStore};
use crate::aws::{failure, is_condition_failure, Failure};

/// How long after its lease an abandoned slot item stays, before DynamoDB's TTL removes it.
const KEEP_AFTER_LEASE_S: u64 = 3600;

/// Slots in a DynamoDB table (see [`SLOT_TABLE`](super::SLOT_TABLE)): take = conditional put on a free or expired
/// slot, free = delete conditioned on the holder.
#[derive(Clone, Debug)]
pub struct DynamoDbSlots {
    client: Client,
    table: String,
}

impl DynamoDbSlots {
    /// Slots in `table`.
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }
}

fn slot_error<E, R>(error: &aws_sdk_dynamodb::error::SdkError<E, R>) -> SlotError
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match failure(error) {
        (Failure::Throttled, described) => SlotError::Throttled(described),
        (Failure::Unavailable, described) => SlotError::Unavailable(described),
        (Failure::Rejected, described) => SlotError::Rejected(described),
    }
}

#[async_trait]
impl SlotStore for DynamoDbSlots {
    async fn take(
        &self,
        id: &str,
        holder: &str,
        lease_expires_ms: u64,
        now_ms: u64,
    ) -> Result<bool, SlotError> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("id", AttributeValue::S(id.to_owned()))
            .item("holder", AttributeValue::S(holder.to_owned()))
            .item("lease_expires", AttributeValue::N(lease_expires_ms.to_string()))
            .item(
                "expiration",
                AttributeValue::N((lease_expires_ms / 1000 + KEEP_AFTER_LEASE_S).to_string()),
            )
            .condition_expression(
                "attribute_not_exists(#id) OR #lease_expires < :now_ms OR #holder = :holder",
            )
            .expression_attribute_names("#id", "id")
            .expression_attribute_names("#lease_expires", "lease_expires")
            .expression_attribute_names("#holder", "holder")
            .expression_attribute_values(":now_ms", AttributeValue::N(now_ms.to_string()))
            .expression_attribute_values(":holder", AttributeValue::S(holder.to_owned()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(error) if is_condition_failure(&error) => Ok(false),
            Err(error) => Err(slot_error(&error)),
        }
    }

    async fn free(&self, id: &str, holder: &str) -> Result<(), SlotError> {
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("id", AttributeValue::S(id.to_owned()))
            .condition_expression("#holder = :holder")
            .expression_attribute_names("#holder", "holder")
            .expression_attribute_values(":holder", AttributeValue::S(holder.to_owned()))
            .send()
            .await;
        match result {
            // Taken over after its lease ended: the slot is someone else's now.
            Ok(_) => Ok(()),
            Err(error) if is_condition_failure(&error) => Ok(()),
            Err(error) => Err(slot_error(&error)),
        }
    }
}
