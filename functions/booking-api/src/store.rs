//! Bookings in DynamoDB (`BOOKINGS_TABLE`), without double bookings whatever runs at once.
//!
//! One table, partition key `pk`:
//! - a booking: `pk = BOOKING#<booking_id>` with its fields (see [`Booking`]); the GSI
//!   `by-customer` (`customer_id`, `created_at`) lists a customer's bookings newest first;
//! - a resource: `pk = RESOURCE#<resource_id>` with `version` (a number) and `slots`, a map from
//!   the id of each booking that holds the resource to its time (`<start s>|<end s>`).
//!
//! Creating a booking reads its resource (a consistent read), checks the new time against the
//! slots held, then writes the booking and the resource's next version in one transaction, on
//! condition that the version is still the one read: of two creations that overlap, only one
//! transaction can succeed, in one execution environment or many, and the other sees the
//! winner's slot when it tries again. Cancelling removes the slot in the same way. Slots that
//! have ended are removed as the resource is written, so the item stays small.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem, Update};
use aws_sdk_dynamodb::Client;
use base64::Engine as _;

use crate::model::{Booking, Status};

/// The GSI listing a customer's bookings.
pub(crate) const BY_CUSTOMER: &str = "by-customer";

/// Attempts at the create transaction before giving up (each sees the others' slots).
const ATTEMPTS: u32 = 8;

/// Ended slots removed per write, at most (an update expression stays small).
const PRUNED_PER_WRITE: usize = 16;

/// Why the store did not do what was asked.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StoreError {
    /// The time overlaps a pending or confirmed booking of the resource.
    #[error("the resource is already booked at that time")]
    Conflict,
    /// The booking id is taken by a booking with other details.
    #[error("the idempotency key was used for another booking")]
    IdTaken,
    /// No such booking.
    #[error("no such booking")]
    NotFound,
    /// Too many creations raced for the resource at once.
    #[error("the resource is busy; try again")]
    Contended,
    /// A cursor this store did not write, or written for another customer.
    #[error("the cursor is not valid")]
    BadCursor,
    /// DynamoDB throttled, failed or could not be reached.
    #[error("the bookings table is unavailable: {0}")]
    Unavailable(String),
    /// An item that is not a booking.
    #[error("a stored booking is malformed: {0}")]
    Malformed(String),
}

impl<E: ProvideErrorMetadata + std::error::Error + 'static, R: std::fmt::Debug> From<SdkError<E, R>>
    for StoreError
{
    fn from(error: SdkError<E, R>) -> Self {
        StoreError::Unavailable(DisplayErrorContext(error).to_string())
    }
}

/// The bookings table.
#[derive(Clone, Debug)]
pub(crate) struct Bookings {
    client: Client,
    table: String,
}

/// One page of a customer's bookings.
#[derive(Debug)]
pub(crate) struct Page {
    pub(crate) bookings: Vec<Booking>,
    /// Where the next page starts, if there is one.
    pub(crate) cursor: Option<String>,
}

fn s(text: impl Into<String>) -> AttributeValue {
    AttributeValue::S(text.into())
}

fn n(number: u64) -> AttributeValue {
    AttributeValue::N(number.to_string())
}

fn booking_key(booking_id: &str) -> AttributeValue {
    s(format!("BOOKING#{booking_id}"))
}

fn resource_key(resource_id: &str) -> AttributeValue {
    s(format!("RESOURCE#{resource_id}"))
}

fn seconds(rfc3339: &str) -> u64 {
    humantime::parse_rfc3339(rfc3339)
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs())
}

/// A resource as read: its version and the slots it holds (booking id → start, end in s).
#[derive(Debug, Default)]
struct Resource {
    version: u64,
    slots: HashMap<String, (u64, u64)>,
}

impl Resource {
    fn from_item(item: &HashMap<String, AttributeValue>) -> Self {
        let version = item
            .get("version")
            .and_then(|v| v.as_n().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let slots = item
            .get("slots")
            .and_then(|m| m.as_m().ok())
            .map(|slots| {
                slots
                    .iter()
                    .filter_map(|(id, time)| {
                        let (start, end) = time.as_s().ok()?.split_once('|')?;
                        Some((id.clone(), (start.parse().ok()?, end.parse().ok()?)))
                    })
                    .collect()
            })
            .unwrap_or_default();
        Resource { version, slots }
    }

    /// Whether `[start, end)` overlaps a slot held by another booking.
    fn overlaps(&self, booking_id: &str, start: u64, end: u64) -> bool {
        self.slots
            .iter()
            .any(|(id, &(s, e))| id != booking_id && start < e && s < end)
    }

    /// Slots that ended before `now_s`, a few at a time.
    fn ended(&self, now_s: u64) -> Vec<&str> {
        let mut ended: Vec<&str> = self
            .slots
            .iter()
            .filter(|(_, &(_, end))| end < now_s)
            .map(|(id, _)| id.as_str())
            .collect();
        ended.sort_unstable();
        ended.truncate(PRUNED_PER_WRITE);
        ended
    }
}

impl Bookings {
    /// The bookings in `table` through `client`.
    pub(crate) fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    /// The table's name.
    pub(crate) fn table(&self) -> &str {
        &self.table
    }

    /// Whether the table answers.
    pub(crate) async fn health(&self) -> Result<(), StoreError> {
        self.client
            .get_item()
            .table_name(&self.table)
            .key("pk", s("HEALTH"))
            .send()
            .await?;
        Ok(())
    }

    /// The booking `booking_id`.
    pub(crate) async fn get(&self, booking_id: &str) -> Result<Booking, StoreError> {
        let item = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", booking_key(booking_id))
            .consistent_read(true)
            .send()
            .await?
            .item
            .ok_or(StoreError::NotFound)?;
        booking_of(&item)
    }

    /// Stores `booking` (`PENDING`) unless its time overlaps a booking holding the resource.
    /// Storing the same booking again (a retried request) finds it and succeeds; another
    /// booking under its id is [`StoreError::IdTaken`].
    pub(crate) async fn create(&self, booking: &Booking) -> Result<Booking, StoreError> {
        let (start, end) = (seconds(&booking.start), seconds(&booking.end));
        let mut backoff = Duration::from_millis(5);
        for _ in 0..ATTEMPTS {
            let resource = self.resource(&booking.resource_id).await?;
            if resource.slots.contains_key(&booking.booking_id) {
                return self.same_booking(booking).await;
            }
            if resource.overlaps(&booking.booking_id, start, end) {
                return Err(StoreError::Conflict);
            }
            let now_s = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let put = Put::builder()
                .table_name(&self.table)
                .set_item(Some(item_of(booking)))
                .condition_expression("attribute_not_exists(pk)")
                .build()
                .map_err(|e| StoreError::Malformed(e.to_string()))?;
            let hold = self.hold_slot(booking, &resource, start, end, now_s)?;
            let written = self
                .client
                .transact_write_items()
                .transact_items(TransactWriteItem::builder().put(put).build())
                .transact_items(TransactWriteItem::builder().update(hold).build())
                .send()
                .await;
            match written {
                Ok(_) => return Ok(booking.clone()),
                Err(error) if cancelled_by_condition(&error) => {
                    // Another writer moved the resource on (or the id is taken): read again.
                    tokio::time::sleep(backoff + Duration::from_millis(fastrand::u64(..5))).await;
                    backoff = (backoff * 2).min(Duration::from_millis(200));
                }
                Err(error) => return Err(error.into()),
            }
        }
        Err(StoreError::Contended)
    }

    /// The update that records `booking`'s slot in its resource, on the version read.
    fn hold_slot(
        &self,
        booking: &Booking,
        resource: &Resource,
        start: u64,
        end: u64,
        now_s: u64,
    ) -> Result<Update, StoreError> {
        let slot = s(format!("{start}|{end}"));
        let mut update = Update::builder()
            .table_name(&self.table)
            .key("pk", resource_key(&booking.resource_id))
            .expression_attribute_names("#version", "version")
            .expression_attribute_names("#slots", "slots")
            .expression_attribute_values(":next", n(resource.version + 1));
        update = if resource.version == 0 {
            update
                .update_expression("SET #version = :next, #slots = :slots")
                .condition_expression("attribute_not_exists(pk)")
                .expression_attribute_values(
                    ":slots",
                    AttributeValue::M(HashMap::from([(booking.booking_id.clone(), slot)])),
                )
        } else {
            let ended = resource.ended(now_s);
            let mut expression = "SET #version = :next, #slots.#new = :slot".to_owned();
            if !ended.is_empty() {
                expression.push_str(" REMOVE ");
                for (i, id) in ended.iter().enumerate() {
                    if i > 0 {
                        expression.push_str(", ");
                    }
                    expression.push_str(&format!("#slots.#ended{i}"));
                    update = update.expression_attribute_names(format!("#ended{i}"), *id);
                }
            }
            update
                .update_expression(expression)
                .condition_expression("#version = :read")
                .expression_attribute_names("#new", &booking.booking_id)
                .expression_attribute_values(":slot", slot)
                .expression_attribute_values(":read", n(resource.version))
        };
        update.build().map_err(|e| StoreError::Malformed(e.to_string()))
    }

    /// A booking already stored under `booking`'s id: the same request again, or another one.
    async fn same_booking(&self, booking: &Booking) -> Result<Booking, StoreError> {
        let stored = self.get(&booking.booking_id).await?;
        let same = stored.customer_id == booking.customer_id
            && stored.resource_id == booking.resource_id
            && stored.start == booking.start
            && stored.end == booking.end
            && stored.guests == booking.guests
            && stored.notes == booking.notes
            && stored.email == booking.email;
        match same {
            true => Ok(stored),
            false => Err(StoreError::IdTaken),
        }
    }

    async fn resource(&self, resource_id: &str) -> Result<Resource, StoreError> {
        let item = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", resource_key(resource_id))
            .consistent_read(true)
            .send()
            .await?
            .item;
        Ok(item.as_ref().map(Resource::from_item).unwrap_or_default())
    }

    /// Cancels `booking_id` and frees its slot; cancelling a cancelled booking returns it as
    /// it is.
    pub(crate) async fn cancel(&self, booking: &Booking) -> Result<Booking, StoreError> {
        if booking.status == Status::Cancelled {
            return Ok(booking.clone());
        }
        let now = crate::model::timestamp(SystemTime::now());
        for _ in 0..ATTEMPTS {
            let resource = self.resource(&booking.resource_id).await?;
            let cancel = Update::builder()
                .table_name(&self.table)
                .key("pk", booking_key(&booking.booking_id))
                .update_expression("SET #status = :cancelled, updated_at = :now")
                .condition_expression("attribute_exists(pk) AND #status <> :cancelled")
                .expression_attribute_names("#status", "status")
                .expression_attribute_values(":cancelled", s(Status::Cancelled.as_str()))
                .expression_attribute_values(":now", s(&now))
                .build()
                .map_err(|e| StoreError::Malformed(e.to_string()))?;
            let mut items = vec![TransactWriteItem::builder().update(cancel).build()];
            if resource.slots.contains_key(&booking.booking_id) {
                let free = Update::builder()
                    .table_name(&self.table)
                    .key("pk", resource_key(&booking.resource_id))
                    .update_expression("SET #version = :next REMOVE #slots.#id")
                    .condition_expression("#version = :read")
                    .expression_attribute_names("#version", "version")
                    .expression_attribute_names("#slots", "slots")
                    .expression_attribute_names("#id", &booking.booking_id)
                    .expression_attribute_values(":next", n(resource.version + 1))
                    .expression_attribute_values(":read", n(resource.version))
                    .build()
                    .map_err(|e| StoreError::Malformed(e.to_string()))?;
                items.push(TransactWriteItem::builder().update(free).build());
            }
            match self
                .client
                .transact_write_items()
                .set_transact_items(Some(items))
                .send()
                .await
            {
                Ok(_) => return self.get(&booking.booking_id).await,
                Err(error) if cancelled_by_condition(&error) => {
                    let now_stored = self.get(&booking.booking_id).await?;
                    if now_stored.status == Status::Cancelled {
                        return Ok(now_stored);
                    }
                }
                Err(error) => return Err(error.into()),
            }
        }
        Err(StoreError::Contended)
    }

    /// `customer_id`'s bookings, newest first, `limit` a page, from `cursor`.
    pub(crate) async fn list(
        &self,
        customer_id: &str,
        limit: i32,
        cursor: Option<&str>,
    ) -> Result<Page, StoreError> {
        let start = cursor.map(|c| decode_cursor(c, customer_id)).transpose()?;
        let page = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(BY_CUSTOMER)
            .key_condition_expression("customer_id = :customer")
            .expression_attribute_values(":customer", s(customer_id))
            .scan_index_forward(false)
            .limit(limit)
            .set_exclusive_start_key(start)
            .send()
            .await?;
        let bookings = page
            .items()
            .iter()
            .map(booking_of)
            .collect::<Result<Vec<_>, _>>()?;
        let cursor = page.last_evaluated_key().map(encode_cursor);
        Ok(Page { bookings, cursor })
    }
}

/// Whether a transaction was cancelled because a condition failed.
fn cancelled_by_condition<R>(
    error: &SdkError<aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError, R>,
) -> bool {
    match error {
        SdkError::ServiceError(service) => match service.err() {
            aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError::TransactionCanceledException(
                cancelled,
            ) => cancelled
                .cancellation_reasons()
                .iter()
                .any(|reason| reason.code() == Some("ConditionalCheckFailed")),
            _ => false,
        },
        _ => false,
    }
}

/// The cursor of a page: the key DynamoDB gave, as base64url JSON.
fn encode_cursor(key: &HashMap<String, AttributeValue>) -> String {
    let plain: serde_json::Map<String, serde_json::Value> = key
        .iter()
        .filter_map(|(name, value)| {
            Some((
                name.clone(),
                serde_json::Value::String(value.as_s().ok()?.clone()),
            ))
        })
        .collect();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::Value::Object(plain).to_string())
}

/// The key a cursor stands for, if it is one of ours and for `customer_id`.
fn decode_cursor(cursor: &str, customer_id: &str) -> Result<HashMap<String, AttributeValue>, StoreError> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .map_err(|_| StoreError::BadCursor)?;
    let plain: HashMap<String, String> = serde_json::from_slice(&bytes).map_err(|_| StoreError::BadCursor)?;
    let expected = ["created_at", "customer_id", "pk"];
    let mut names: Vec<&str> = plain.keys().map(String::as_str).collect();
    names.sort_unstable();
    if names != expected || plain.get("customer_id").map(String::as_str) != Some(customer_id) {
        return Err(StoreError::BadCursor);
    }
    Ok(plain.into_iter().map(|(name, value)| (name, s(value))).collect())
}

fn item_of(booking: &Booking) -> HashMap<String, AttributeValue> {
    let mut item = HashMap::from([
        ("pk".to_owned(), booking_key(&booking.booking_id)),
        ("booking_id".to_owned(), s(&booking.booking_id)),
        ("status".to_owned(), s(booking.status.as_str())),
        ("customer_id".to_owned(), s(&booking.customer_id)),
        ("resource_id".to_owned(), s(&booking.resource_id)),
        ("start".to_owned(), s(&booking.start)),
        ("end".to_owned(), s(&booking.end)),
        ("guests".to_owned(), n(booking.guests)),
        ("created_at".to_owned(), s(&booking.created_at)),
        ("updated_at".to_owned(), s(&booking.updated_at)),
    ]);
    if let Some(notes) = &booking.notes {
        item.insert("notes".to_owned(), s(notes));
    }
    if let Some(email) = &booking.email {
        item.insert("email".to_owned(), s(email));
    }
    item
}

fn booking_of(item: &HashMap<String, AttributeValue>) -> Result<Booking, StoreError> {
    let text = |name: &str| {
        item.get(name)
            .and_then(|v| v.as_s().ok())
            .cloned()
            .ok_or_else(|| StoreError::Malformed(format!("no `{name}`")))
    };
    let optional = |name: &str| item.get(name).and_then(|v| v.as_s().ok()).cloned();
    let status = Status::parse(&text("status")?).ok_or_else(|| StoreError::Malformed("status".into()))?;
    let guests = item
        .get("guests")
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| StoreError::Malformed("no `guests`".into()))?;
    Ok(Booking {
        booking_id: text("booking_id")?,
        status,
        customer_id: text("customer_id")?,
        resource_id: text("resource_id")?,
        start: text("start")?,
        end: text("end")?,
        guests,
        notes: optional("notes"),
        email: optional("email"),
        created_at: text("created_at")?,
        updated_at: text("updated_at")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlaps_are_half_open_and_ignore_the_booking_itself() {
        let resource = Resource {
            version: 3,
            slots: HashMap::from([("a".to_owned(), (100, 200)), ("old".to_owned(), (1, 2))]),
        };
        assert!(resource.overlaps("b", 150, 250));
        assert!(resource.overlaps("b", 50, 101));
        assert!(!resource.overlaps("b", 200, 300), "ends are exclusive");
        assert!(!resource.overlaps("b", 50, 100));
        assert!(!resource.overlaps("a", 150, 250), "its own slot");
        assert_eq!(resource.ended(150), ["old"]);
    }

    #[test]
    fn cursors_are_ours_and_for_one_customer() {
        let key = HashMap::from([
            ("pk".to_owned(), s("BOOKING#bk-1")),
            ("customer_id".to_owned(), s("c-1")),
            ("created_at".to_owned(), s("2026-12-01T10:00:00.000Z")),
        ]);
        let cursor = encode_cursor(&key);
        assert_eq!(decode_cursor(&cursor, "c-1").unwrap(), key);
        assert!(matches!(
            decode_cursor(&cursor, "c-2"),
            Err(StoreError::BadCursor)
        ));
        assert!(matches!(
            decode_cursor("not a cursor", "c-1"),
            Err(StoreError::BadCursor)
        ));
    }
}
