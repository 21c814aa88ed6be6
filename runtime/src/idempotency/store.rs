//! The idempotency record and the [`IdempotencyStore`] contract every backend honours.
//!
//! The record's attributes and conditions: `docs/architecture.md`, "Idempotency record".

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;

/// Where a record is in its life cycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// An invocation owns the key and is running.
    InProgress,
    /// The response is stored (or was too large to store) and is replayed until `expiration`.
    Completed,
}

impl Status {
    /// The value stored in the `status` attribute.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::InProgress => "INPROGRESS",
            Status::Completed => "COMPLETED",
        }
    }

    /// Parses a stored `status`.
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "INPROGRESS" => Some(Status::InProgress),
            "COMPLETED" => Some(Status::Completed),
            _ => None,
        }
    }
}

/// One idempotency record, as the table stores it (key attribute `id`, TTL attribute
/// `expiration`).
///
/// Its texts are shared (`Arc<str>`): the record, the cache and the invocation that owns it hold
/// one allocation each (`MemoryStore` keeps its own copy of the response, see there).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// `<prefix>#<sha256 of the canonical key>`.
    pub id: Arc<str>,
    /// Life-cycle state.
    pub status: Status,
    /// When the record stops counting, in epoch **seconds** (the table's TTL attribute).
    pub expiration: u64,
    /// When an `INPROGRESS` record stops counting, in epoch **milliseconds** (the owner's deadline).
    pub in_progress_expiration: u64,
    /// The request id of the invocation that acquired the record.
    pub owner: Arc<str>,
    /// SHA-256 of the canonical payload, to detect a key reused with other content.
    pub validation: Arc<str>,
    /// The stored response (JSON); `None` while in progress or when it was too large to store.
    pub data: Option<Arc<str>>,
}

impl Record {
    /// Whether the record still holds its key at `now`: a completed record until `expiration`,
    /// an in-progress one also until `in_progress_expiration`. The acquire condition is the
    /// negation of this.
    pub fn is_live(&self, now: Now) -> bool {
        let expired = self.expiration < now.seconds()
            || (self.status == Status::InProgress && self.in_progress_expiration < now.millis());
        !expired
    }
}

/// A point in time in both units the record uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Now(u64);

impl Now {
    /// The current time.
    pub fn system() -> Self {
        Now(crate::clock::now_ms())
    }

    /// A given time, in epoch milliseconds.
    pub fn from_millis(millis: u64) -> Self {
        Now(millis)
    }

    /// Epoch milliseconds.
    pub fn millis(self) -> u64 {
        self.0
    }

    /// Epoch seconds (rounded down).
    pub fn seconds(self) -> u64 {
        self.0 / 1000
    }
}

/// What a conditional acquire found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Acquire {
    /// The record was written: this invocation owns the key.
    Acquired,
    /// A live record holds the key; it is returned as found (no extra read).
    Exists(Record),
}

/// A failure of the store itself (not of the idempotency rules).
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum StoreError {
    /// The store refused for capacity; retrying later may succeed.
    #[error("the idempotency store is throttling requests: {0}")]
    Throttled(String),
    /// The store could not be reached or answered with a server error.
    #[error("the idempotency store is unavailable: {0}")]
    Unavailable(String),
    /// The record is held by another invocation (its deadline passed and it was taken over),
    /// so this invocation may not complete or delete it.
    #[error("the idempotency record is no longer owned by this invocation")]
    NotOwner,
    /// A stored record does not have the expected shape.
    #[error("the idempotency record is malformed: {0}")]
    Malformed(String),
    /// Any other refusal (missing table, access denied, invalid request).
    #[error("the idempotency store refused the request: {0}")]
    Rejected(String),
}

/// Storage for idempotency records with DynamoDB's conditional-write semantics.
///
/// Implementations must make [`acquire`](Self::acquire) atomic: of concurrent acquires of one
/// free key, exactly one returns [`Acquire::Acquired`].
#[async_trait]
pub trait IdempotencyStore: Send + Sync + fmt::Debug {
    /// Writes `record` (status `INPROGRESS`) unless a live record holds its id at `now`
    /// (see [`Record::is_live`]); returns that record instead.
    async fn acquire(&self, record: &Record, now: Now) -> Result<Acquire, StoreError>;

    /// Marks the record `COMPLETED` with `data` and the new `expiration` (seconds), if `owner`
    /// still owns it.
    async fn complete(
        &self,
        id: &str,
        owner: &str,
        data: Option<Arc<str>>,
        expiration: u64,
    ) -> Result<(), StoreError>;

    /// Deletes the record if `owner` still owns it (never a record another invocation holds).
    async fn release(&self, id: &str, owner: &str) -> Result<(), StoreError>;

    /// Reads the record, if any (used only while waiting for an in-progress record).
    async fn get(&self, id: &str) -> Result<Option<Record>, StoreError>;
}

/// A shared store is a store: several [`Idempotency`](super::Idempotency) settings (or a test
/// and the layer it checks) can use one.
#[async_trait]
impl<S: IdempotencyStore + ?Sized> IdempotencyStore for Arc<S> {
    async fn acquire(&self, record: &Record, now: Now) -> Result<Acquire, StoreError> {
        (**self).acquire(record, now).await
    }

    async fn complete(
        &self,
        id: &str,
        owner: &str,
        data: Option<Arc<str>>,
        expiration: u64,
    ) -> Result<(), StoreError> {
        (**self).complete(id, owner, data, expiration).await
    }

    async fn release(&self, id: &str, owner: &str) -> Result<(), StoreError> {
        (**self).release(id, owner).await
    }

    async fn get(&self, id: &str) -> Result<Option<Record>, StoreError> {
        (**self).get(id).await
    }
}

/// The idempotency table: key `id` (string), TTL on `expiration` (see [`Record`]); on-demand
/// billing suits spiky booking traffic.
pub const TABLE: crate::aws::TableDefinition = crate::aws::TableDefinition {
    key_attribute: "id",
    ttl_attribute: "expiration",
};
