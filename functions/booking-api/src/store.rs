//! Bookings in DynamoDB (`BOOKINGS_TABLE`), without double bookings whatever runs at once.
//!
//! One table, partition key `pk`:
//! - a booking: `pk = BOOKING#<booking_id>` with its fields (see [`Booking`]); the GSI
//!   `by-customer` (`customer_id`, `created_at`) lists a customer's bookings newest first;
//! - a resource: `pk = RESOURCE#<resource_id>` with `version` (a number) and `slots`, a map from
//!   the id of each booking that holds the resource to its time (`<start s>|<end s>`).
//!
//! Creating a booking reads its resource (a consistent read), checks the new time against the
//! slots held, then writes the booking and the resource's next version (its slots, whole) in one
//! transaction, on condition that the version is still the one read: of two creations that overlap, only one
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

fn seconds(rfc3339: &str) -> Result<u64, StoreError> {
    humantime::parse_rfc3339(rfc3339)
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_secs())
        .ok_or_else(|| StoreError::Malformed("a booking's time".into()))
}

/// A resource as read: whether its item exists, its version (none on an item written by
/// something else), and the slots it holds (booking id → start, end in s).
#[derive(Debug, Default)]
struct Resource {
    exists: bool,
    version: Option<u64>,
    slots: HashMap<String, (u64, u64)>,
}

impl Resource {
    fn from_item(item: &HashMap<String, AttributeValue>) -> Result<Self, StoreError> {
        let malformed = |what: &str| StoreError::Malformed(format!("a resource's {what}"));
        let version = match item.get("version") {
            None => None,
            Some(v) => Some(
                v.as_n()
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| malformed("version"))?,
            ),
        };
        let mut slots = HashMap::new();
        if let Some(held) = item.get("slots") {
            for (id, time) in held.as_m().map_err(|_| malformed("slots"))? {
                let (start, end) = time
                    .as_s()
                    .ok()
                    .and_then(|t| t.split_once('|'))
                    .and_then(|(s, e)| Some((s.parse().ok()?, e.parse().ok()?)))
                    .ok_or_else(|| malformed("slot"))?;
                slots.insert(id.clone(), (start, end));
            }
        }
        Ok(Resource {
            exists: true,
            version,
            slots,
        })
    }

    /// The update that writes `slots` as the resource's next version, on condition that the
    /// item is still as it was read.
    fn write(
        &self,
        table: &str,
        key: AttributeValue,
        slots: HashMap<String, AttributeValue>,
    ) -> Result<Update, StoreError> {
        let next = self.version.unwrap_or(0) + 1;
        let update = Update::builder()
            .table_name(table)
            .key("pk", key)
            .update_expression("SET #version = :next, #slots = :slots")
            .expression_attribute_names("#version", "version")
            .expression_attribute_names("#slots", "slots")
            .expression_attribute_values(":next", n(next))
            .expression_attribute_values(":slots", AttributeValue::M(slots));
        let update = match (self.exists, self.version) {
            (false, _) => update.condition_expression("attribute_not_exists(pk)"),
            (true, None) => {
                update.condition_expression("attribute_exists(pk) AND attribute_not_exists(#version)")
            }
            (true, Some(read)) => update
                .condition_expression("#version = :read")
                .expression_attribute_values(":read", n(read)),
        };
        update.build().map_err(|e| StoreError::Malformed(e.to_string()))
    }

    /// The slots held, as stored, less those ended before `now_s`.
    fn live_slots(&self, now_s: u64) -> HashMap<String, AttributeValue> {
        self.slots
            .iter()
            .filter(|(_, &(_, end))| end >= now_s)
            .map(|(id, (start, end))| (id.clone(), s(format!("{start}|{end}"))))
            .collect()
    }

    /// Whether `[start, end)` overlaps a slot held by another booking.
    fn overlaps(&self, booking_id: &str, start: u64, end: u64) -> bool {
        self.slots
            .iter()
            .any(|(id, &(s, e))| id != booking_id && start < e && s < end)
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
        let (start, end) = (seconds(&booking.start)?, seconds(&booking.end)?);
        let mut backoff = Backoff::new();
        for _ in 0..ATTEMPTS {
            let resource = self.resource(&booking.resource_id).await?;
            if resource.slots.contains_key(&booking.booking_id) {
                return self.same_booking(booking).await;
            }
            if resource.overlaps(&booking.booking_id, start, end) {
                return Err(StoreError::Conflict);
            }
            let put = Put::builder()
                .table_name(&self.table)
                .set_item(Some(item_of(booking)))
                .condition_expression("attribute_not_exists(pk)")
                .build()
                .map_err(|e| StoreError::Malformed(e.to_string()))?;
            let mut slots = resource.live_slots(now_s());
            slots.insert(booking.booking_id.clone(), s(format!("{start}|{end}")));
            let hold = resource.write(&self.table, resource_key(&booking.resource_id), slots)?;
            let written = self
                .client
                .transact_write_items()
                .transact_items(TransactWriteItem::builder().put(put).build())
                .transact_items(TransactWriteItem::builder().update(hold).build())
                .send()
                .await;
            let reasons = match written {
                Ok(_) => return Ok(booking.clone()),
                Err(error) => cancellation(&error).ok_or(StoreError::from(error))?,
            };
            match reasons.as_slice() {
                // The booking's id is taken (a retry after its slot was freed, or another
                // booking under the same key): the stored booking says which.
                [Reason::Condition, ..] => return self.same_booking(booking).await,
                // Another writer moved the resource on: read it again.
                reasons if !reasons.contains(&Reason::Other) => backoff.wait().await,
                _ => return Err(StoreError::Unavailable("the transaction was cancelled".into())),
            }
        }
        Err(StoreError::Contended)
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
        item.as_ref().map_or(Ok(Resource::default()), Resource::from_item)
    }

    /// Cancels `booking_id` and frees its slot; a booking settled for good (cancelled, or
    /// rejected by the worker) is returned as it is. Returns the booking as it now is, and
    /// whether this call cancelled it (of racing cancellations, one did).
    pub(crate) async fn cancel(&self, booking: &Booking) -> Result<(Booking, bool), StoreError> {
        if !booking.status.holds_slot() {
            return Ok((booking.clone(), false));
        }
        let now = crate::model::timestamp(SystemTime::now());
        let mut backoff = Backoff::new();
        for _ in 0..ATTEMPTS {
            let resource = self.resource(&booking.resource_id).await?;
            let cancel = Update::builder()
                .table_name(&self.table)
                .key("pk", booking_key(&booking.booking_id))
                .update_expression("SET #status = :cancelled, updated_at = :now")
                .condition_expression("#status IN (:pending, :confirmed)")
                .expression_attribute_names("#status", "status")
                .expression_attribute_values(":pending", s(Status::Pending.as_str()))
                .expression_attribute_values(":confirmed", s(Status::Confirmed.as_str()))
                .expression_attribute_values(":cancelled", s(Status::Cancelled.as_str()))
                .expression_attribute_values(":now", s(&now))
                .build()
                .map_err(|e| StoreError::Malformed(e.to_string()))?;
            let mut items = vec![TransactWriteItem::builder().update(cancel).build()];
            if resource.slots.contains_key(&booking.booking_id) {
                let mut slots = resource.live_slots(now_s());
                slots.remove(&booking.booking_id);
                let free = resource.write(&self.table, resource_key(&booking.resource_id), slots)?;
                items.push(TransactWriteItem::builder().update(free).build());
            }
            let written = self
                .client
                .transact_write_items()
                .set_transact_items(Some(items))
                .send()
                .await;
            let reasons = match written {
                Ok(_) => {
                    // Committed: the booking as written, without a read that could fail after it.
                    let mut cancelled = booking.clone();
                    cancelled.status = Status::Cancelled;
                    cancelled.updated_at = now;
                    return Ok((cancelled, true));
                }
                Err(error) => cancellation(&error).ok_or(StoreError::from(error))?,
            };
            if reasons.contains(&Reason::Other) {
                return Err(StoreError::Unavailable("the transaction was cancelled".into()));
            }
            let now_stored = self.get(&booking.booking_id).await?;
            if !now_stored.status.holds_slot() {
                return Ok((now_stored, false));
            }
            backoff.wait().await;
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
        let from_cursor = start.is_some();
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
            .await
            .map_err(|error| match error.code() {
                // A cursor of the right shape naming no key of the index.
                Some("ValidationException") if from_cursor => StoreError::BadCursor,
                _ => error.into(),
            })?;
        let bookings = page
            .items()
            .iter()
            .map(booking_of)
            .collect::<Result<Vec<_>, _>>()?;
        let cursor = page.last_evaluated_key().map(encode_cursor);
        Ok(Page { bookings, cursor })
    }
}

/// Why a transaction item was not written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reason {
    /// It would have been: another item failed.
    None,
    /// Its condition failed.
    Condition,
    /// Another transaction or a throttle got in the way: worth retrying.
    Contention,
    /// Anything else.
    Other,
}

/// The reason of each item, when a transaction was cancelled.
fn cancellation<R>(
    error: &SdkError<aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError, R>,
) -> Option<Vec<Reason>> {
    use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError as Failed;
    let SdkError::ServiceError(service) = error else {
        return None;
    };
    let Failed::TransactionCanceledException(cancelled) = service.err() else {
        return None;
    };
    let reasons = cancelled
        .cancellation_reasons()
        .iter()
        .map(|reason| match reason.code() {
            None | Some("None") => Reason::None,
            Some("ConditionalCheckFailed") => Reason::Condition,
            Some("TransactionConflict" | "ThrottlingError" | "ProvisionedThroughputExceeded") => {
                Reason::Contention
            }
            Some(_) => Reason::Other,
        })
        .collect();
    Some(reasons)
}

/// Waits a little longer each time, with jitter: between attempts of one transaction.
struct Backoff(Duration);

impl Backoff {
    fn new() -> Self {
        Backoff(Duration::from_millis(5))
    }

    async fn wait(&mut self) {
        tokio::time::sleep(self.0 + Duration::from_millis(fastrand::u64(..5))).await;
        self.0 = (self.0 * 2).min(Duration::from_millis(200));
    }
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
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
        rejection_reason: optional("rejection_reason"),
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
            exists: true,
            version: Some(3),
            slots: HashMap::from([("a".to_owned(), (100, 200)), ("old".to_owned(), (1, 2))]),
        };
        assert!(resource.overlaps("b", 150, 250));
        assert!(resource.overlaps("b", 50, 101));
        assert!(!resource.overlaps("b", 200, 300), "ends are exclusive");
        assert!(!resource.overlaps("b", 50, 100));
        assert!(!resource.overlaps("a", 150, 250), "its own slot");
        assert_eq!(resource.live_slots(150).len(), 1, "the ended slot is dropped");
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
