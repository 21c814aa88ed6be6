//! Idempotency: exactly-once effects for retried requests, with records in DynamoDB.
//!
//! Clients, API Gateway and SQS all retry. Behind an [`IdempotencyLayer`], the first request
//! with a key runs the handler and stores its response; a retry with the same key and payload
//! gets that response replayed (the handler does not run again), one with the same key and a
//! different payload gets [`IdempotencyError::KeyReused`], and one that arrives while the first
//! still runs gets [`IdempotencyError::InProgress`] (or waits for it, if configured).
//!
//! The record life cycle (see [`Record`] for its attributes):
//! - acquire: a conditional write that succeeds only if no live record holds the key (a
//!   completed record until `expiration`, in **seconds**; an in-progress one until its owner's
//!   deadline, `in_progress_expiration`, in **milliseconds**); a duplicate gets the existing
//!   record back from the same request, so it costs one round trip;
//! - success: the record becomes `COMPLETED` with the response, on condition that this
//!   invocation still owns it;
//! - handler failure: the record is deleted, on the same condition, so a retry runs again;
//! - crash or timeout: the record stays `INPROGRESS` until the deadline, then a retry takes it
//!   over and runs the handler once more.
//!
//! Keys and payloads are compared by the SHA-256 of their canonical JSON (member order and white
//! space do not matter), computed in one pass over the event's text. A local LRU of completed
//! records ([`Idempotency::local_cache`]) answers hot duplicates without a round trip to a
//! remote store; records in process memory ([`Idempotency::memory`]) are claimed and completed
//! without any future to allocate. For HTTP events (API Gateway, ALB, function URLs) errors are HTTP
//! responses with a JSON body `{code, message}` — missing key 400, in progress 409 with
//! `Retry-After`, key reused 422, store failure 503 — and replays carry
//! `Idempotent-Replayed: true`.
//!
//! ```no_run
//! use keel_runtime::idempotency::Idempotency;
//!
//! # async fn example(client: aws_sdk_dynamodb::Client) {
//! let idempotency = Idempotency::dynamodb(client, "booking-idempotency")
//!     .key_from_header("Idempotency-Key")
//!     .local_cache(1_000);
//! # }
//! ```

mod dynamodb;
mod json_text;
mod key;
mod layer;
mod memory;
mod store;

use std::future::Future;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use lru::LruCache;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

pub use dynamodb::{DynamoDbStore, TableDefinition, TABLE};
pub(crate) use key::is_http as is_http_event;
pub use key::{canonical, sha256_hex, KeySource, PayloadSource, RequestKey};

/// The JSON text at `pointer` in `event`, unless it is missing or `null`.
pub(crate) fn value_at<'a>(event: &'a serde_json::value::RawValue, pointer: &str) -> Option<&'a str> {
    json_text::pointer(event.get(), pointer).filter(|value| *value != "null")
}
pub use layer::{IdempotencyFuture, IdempotencyLayer, IdempotencyService, REPLAYED_HEADER};
pub use memory::MemoryStore;
pub use store::{Acquire, IdempotencyStore, Now, Record, Status, StoreError};

use crate::config::{parse_var, ConfigError};
use crate::function::{var, FunctionInfo};
use crate::metrics::catalog;
use crate::ready::now_or_never;

/// Default time a completed response is replayed (`KEEL_IDEMPOTENCY_TTL_SECONDS`).
pub const DEFAULT_TTL: Duration = Duration::from_secs(3600);
/// Longest time a completed response is replayed: ten years — no retry comes later, and
/// `now + ttl` stays far from overflowing.
pub const MAX_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Default lifetime of an in-progress record when the invocation's deadline is unknown.
pub const DEFAULT_FALLBACK_TIMEOUT: Duration = Duration::from_secs(900);
/// Largest response stored with its record: DynamoDB items hold at most 400 KB, and the rest of
/// the record needs a little room.
pub const MAX_STORED_RESPONSE_BYTES: usize = 390 * 1024;

/// Why a request was not run or replayed.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdempotencyError {
    /// The event has no idempotency key (and requests without one are refused).
    #[error("no idempotency key: {0}")]
    MissingKey(String),
    /// Another invocation is running the request with this key.
    #[error("a request with this idempotency key is still in progress; retry after {}s", retry_after.as_secs())]
    InProgress {
        /// When the running invocation's deadline passes, at the latest.
        retry_after: Duration,
    },
    /// The key was used before with a different payload.
    #[error("this idempotency key was already used with a different payload")]
    KeyReused,
    /// The request ran, but its response was too large to store, so it cannot be replayed.
    #[error(
        "this request was already processed, but its response was too large to keep and cannot be replayed"
    )]
    ResponseNotStored,
    /// The stored response cannot be read back as the handler's response type.
    #[error("the stored response cannot be replayed: {0}")]
    CorruptResponse(String),
    /// The store failed and requests fail closed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl IdempotencyError {
    /// The stable `error_type` reported to Lambda and in logs.
    pub fn error_type(&self) -> &'static str {
        match self {
            IdempotencyError::MissingKey(_) => "Keel.Idempotency.MissingKey",
            IdempotencyError::InProgress { .. } => "Keel.Idempotency.InProgress",
            IdempotencyError::KeyReused => "Keel.Idempotency.KeyReused",
            IdempotencyError::ResponseNotStored => "Keel.Idempotency.ResponseNotStored",
            IdempotencyError::CorruptResponse(_) => "Keel.Idempotency.CorruptResponse",
            IdempotencyError::Store(_) => "Keel.Idempotency.StoreUnavailable",
        }
    }

    /// The HTTP status and the `code` of the JSON body for HTTP events.
    pub fn http_status(&self) -> (u16, &'static str) {
        match self {
            IdempotencyError::MissingKey(_) => (400, "IdempotencyKeyMissing"),
            IdempotencyError::InProgress { .. } => (409, "IdempotencyKeyInProgress"),
            IdempotencyError::KeyReused => (422, "IdempotencyKeyReused"),
            IdempotencyError::ResponseNotStored => (409, "IdempotentResponseUnavailable"),
            IdempotencyError::CorruptResponse(_) => (500, "IdempotentResponseCorrupt"),
            IdempotencyError::Store(_) => (503, "IdempotencyStoreUnavailable"),
        }
    }
}

/// What a request without a key gets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MissingKey {
    /// [`IdempotencyError::MissingKey`] (HTTP 400). The default.
    #[default]
    Reject,
    /// The handler runs without idempotency, and a WARN line says so.
    PassThrough,
}

/// What happens when the store fails.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StoreFailure {
    /// The handler does not run; [`IdempotencyError::Store`] (HTTP 503). The default.
    #[default]
    FailClosed,
    /// The handler runs without idempotency; a WARN line and `IdempotencyStoreError` say so.
    FailOpen,
}

/// What a request gets while another invocation runs the same key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WhileInProgress {
    /// [`IdempotencyError::InProgress`] (HTTP 409 with `Retry-After`) at once. The default.
    #[default]
    Reject,
    /// Poll the record with backoff, within the invocation's remaining time, and replay the
    /// response once it is stored (or run, if the other invocation gave up).
    Wait,
}

/// The store records live in: the in-memory one is called directly (its operations are plain
/// function calls), any other through [`IdempotencyStore`].
#[derive(Clone, Debug)]
enum Store {
    Memory(Arc<MemoryStore>),
    Any(Arc<dyn IdempotencyStore>),
}

impl Store {
    async fn acquire(&self, record: &Record, now: Now) -> Result<Acquire, StoreError> {
        match self {
            Store::Memory(memory) => memory.acquire_now(record, now),
            Store::Any(store) => store.acquire(record, now).await,
        }
    }

    async fn complete(
        &self,
        id: &str,
        owner: &str,
        data: Option<Arc<str>>,
        expiration: u64,
    ) -> Result<(), StoreError> {
        match self {
            Store::Memory(memory) => memory.complete_now(id, owner, data, expiration),
            Store::Any(store) => store.complete(id, owner, data, expiration).await,
        }
    }

    async fn release(&self, id: &str, owner: &str) -> Result<(), StoreError> {
        match self {
            Store::Memory(memory) => memory.release_now(id, owner),
            Store::Any(store) => store.release(id, owner).await,
        }
    }

    /// Deletes the record `lease` holds; a failure is logged and counted (the record then
    /// expires at the deadline).
    async fn release_lease(&self, lease: &Lease) {
        if let Err(error) = self.release(&lease.id, &lease.owner).await {
            catalog::IDEMPOTENCY_STORE_ERROR.increment(1);
            tracing::warn!(error = %error, "the idempotency record could not be released");
        }
    }

    async fn get(&self, id: &str) -> Result<Option<Record>, StoreError> {
        match self {
            Store::Memory(memory) => Ok(memory.get_now(id)),
            Store::Any(store) => store.get(id).await,
        }
    }
}

/// A completed response kept in the local cache.
#[derive(Clone, Debug)]
struct Cached {
    validation: Arc<str>,
    data: Arc<str>,
    expiration: u64,
}

/// Idempotency settings and the store; build one, then hand it to [`IdempotencyLayer`] or to
/// `Keel::idempotency`, or call [`Idempotency::once`] for units of work inside a handler.
#[derive(Debug)]
pub struct Idempotency {
    store: Store,
    cache: Option<Mutex<LruCache<Arc<str>, Cached>>>,
    key: KeySource,
    payload: PayloadSource,
    prefix: String,
    ttl: Duration,
    missing_key: MissingKey,
    store_failure: StoreFailure,
    while_in_progress: WhileInProgress,
    fallback_timeout: Duration,
    max_response_bytes: usize,
}

/// What [`Idempotency::begin`] decided.
pub(crate) enum Begin {
    /// This invocation owns the key: run, then complete or release.
    Run(Lease),
    /// Replay this stored response.
    Replay(Arc<str>),
    /// Run without idempotency (the store failed and requests fail open).
    Unguarded,
}

/// Ownership of an acquired record.
pub(crate) struct Lease {
    id: Arc<str>,
    owner: Arc<str>,
    validation: Arc<str>,
    /// The request is an HTTP request: its response is an HTTP response.
    http: bool,
}

impl Idempotency {
    /// Records in `store`; key: the whole request; prefix: the function's name.
    pub fn with_store(store: impl IdempotencyStore + 'static) -> Self {
        Self::new(Store::Any(Arc::new(store)))
    }

    /// Records in process memory ([`MemoryStore`]).
    pub fn memory() -> Self {
        Self::new(Store::Memory(Arc::new(MemoryStore::new())))
    }

    fn new(store: Store) -> Self {
        let function = FunctionInfo::from_env().name;
        Self {
            store,
            cache: None,
            key: KeySource::Request,
            payload: PayloadSource::Request,
            prefix: if function.is_empty() {
                "keel".to_owned()
            } else {
                function
            },
            ttl: DEFAULT_TTL,
            missing_key: MissingKey::Reject,
            store_failure: StoreFailure::FailClosed,
            while_in_progress: WhileInProgress::Reject,
            fallback_timeout: DEFAULT_FALLBACK_TIMEOUT,
            max_response_bytes: MAX_STORED_RESPONSE_BYTES,
        }
    }

    /// Records in the DynamoDB table `table` ([`DynamoDbStore`]).
    pub fn dynamodb(client: aws_sdk_dynamodb::Client, table: impl Into<String>) -> Self {
        Self::with_store(DynamoDbStore::new(client, table))
    }

    /// From the environment: records in the DynamoDB table `KEEL_IDEMPOTENCY_TABLE` (unset: in
    /// memory), replayed for `KEEL_IDEMPOTENCY_TTL_SECONDS`, keyed by the header
    /// `KEEL_IDEMPOTENCY_KEY_HEADER` or the pointer `KEEL_IDEMPOTENCY_KEY_POINTER` (unset: the
    /// whole request). Builder methods called afterwards override these.
    pub async fn from_env() -> Result<Self, ConfigError> {
        let ttl = parse_var(
            "KEEL_IDEMPOTENCY_TTL_SECONDS",
            "a whole number of seconds from 1 to 315360000 (ten years)",
            |v| {
                v.parse::<u64>()
                    .ok()
                    .filter(|s| (1..=MAX_TTL.as_secs()).contains(s))
            },
        )?;
        let mut idempotency = match var("KEEL_IDEMPOTENCY_TABLE") {
            Some(table) => Self::with_store(DynamoDbStore::from_env(table).await),
            None => Self::memory(),
        };
        if let Some(header) = var("KEEL_IDEMPOTENCY_KEY_HEADER") {
            idempotency = idempotency.key_from_header(header);
        } else if let Some(pointer) = var("KEEL_IDEMPOTENCY_KEY_POINTER") {
            idempotency = idempotency.key_from_pointer(pointer);
        }
        if let Some(seconds) = ttl {
            idempotency = idempotency.ttl(Duration::from_secs(seconds));
        }
        Ok(idempotency)
    }

    /// The key is this header of an HTTP event (e.g. `Idempotency-Key`).
    pub fn key_from_header(mut self, name: impl Into<String>) -> Self {
        self.key = KeySource::Header(name.into());
        self
    }

    /// The key is the value at this JSON pointer of the event.
    pub fn key_from_pointer(mut self, pointer: impl Into<String>) -> Self {
        self.key = KeySource::Pointer(pointer.into());
        self
    }

    /// The key is the whole request (an HTTP event's body, or the whole event).
    pub fn key_from_request(mut self) -> Self {
        self.key = KeySource::Request;
        self
    }

    /// Replays require the value at this JSON pointer to be the same (default: the request).
    pub fn validate_pointer(mut self, pointer: impl Into<String>) -> Self {
        self.payload = PayloadSource::Pointer(pointer.into());
        self
    }

    /// The record id prefix (default: the function's name).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// How long a completed response is replayed (default one hour; at most [`MAX_TTL`], to
    /// which longer times are cut).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl.min(MAX_TTL);
        self
    }

    /// When a record written at `now` stops being replayed, in epoch seconds.
    fn expiration(&self, now: Now) -> u64 {
        now.seconds().saturating_add(self.ttl.as_secs())
    }

    /// Requests without a key run without idempotency (logged) instead of being refused.
    pub fn pass_through_without_key(mut self) -> Self {
        self.missing_key = MissingKey::PassThrough;
        self
    }

    /// When the store fails, run the handler anyway (logged and counted).
    pub fn fail_open(mut self) -> Self {
        self.store_failure = StoreFailure::FailOpen;
        self
    }

    /// Wait for an in-progress duplicate instead of answering `InProgress` at once.
    pub fn wait_while_in_progress(mut self) -> Self {
        self.while_in_progress = WhileInProgress::Wait;
        self
    }

    /// Keeps up to `capacity` completed responses in process memory (0 turns it off), so that
    /// duplicates are answered without a round trip to the store. The in-memory store needs no
    /// such cache (its records are in process memory already): with it, this does nothing.
    pub fn local_cache(mut self, capacity: usize) -> Self {
        self.cache = match self.store {
            Store::Memory(_) => None,
            Store::Any(_) => NonZeroUsize::new(capacity).map(|c| Mutex::new(LruCache::new(c))),
        };
        self
    }

    /// How long an in-progress record lives when the invocation's deadline is unknown (the
    /// Lambda emulator reports a deadline in the past).
    pub fn fallback_timeout(mut self, timeout: Duration) -> Self {
        self.fallback_timeout = timeout;
        self
    }

    /// Largest response stored for replay (default [`MAX_STORED_RESPONSE_BYTES`]).
    pub fn max_response_bytes(mut self, bytes: usize) -> Self {
        self.max_response_bytes = bytes;
        self
    }

    /// Whether records are in process memory (every store operation answers at once).
    pub(crate) fn is_in_memory(&self) -> bool {
        matches!(self.store, Store::Memory(_))
    }

    /// The record id and validation hash of an event.
    ///
    /// For an HTTP event (API Gateway REST or HTTP API, ALB, function URL) "the request" — the
    /// default key, and the default payload replays are checked against — is its method, path,
    /// query, body and caller (the JWT or Cognito `sub`, the IAM principal's ARN, a Lambda
    /// authorizer's principal; none without an authorizer): `GET /bookings/1` and
    /// `GET /bookings/2` are different requests, and so is one body posted by two callers. A key
    /// from a header or a pointer of an HTTP event is scoped to its caller too. (Powertools for
    /// AWS Lambda hashes the whole event by default; for HTTP events that changes with every
    /// retry, as request ids and timestamps are part of it.)
    pub fn request_key(&self, event: &serde_json::value::RawValue) -> Result<RequestKey, String> {
        key::request_key(event, &self.key, &self.payload, &self.prefix)
    }

    /// The deadline an in-progress record holds: the invocation's, or, when that is unknown or
    /// already past, now plus the fallback timeout.
    fn in_progress_deadline(&self, deadline_ms: u64, now: Now) -> u64 {
        if deadline_ms > now.millis() {
            deadline_ms
        } else {
            now.millis()
                .saturating_add(u64::try_from(self.fallback_timeout.as_millis()).unwrap_or(u64::MAX))
        }
    }

    fn cached(&self, id: &str, now: Now) -> Option<Cached> {
        let mut cache = self
            .cache
            .as_ref()?
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match cache.get(id) {
            Some(hit) if hit.expiration >= now.seconds() => Some(hit.clone()),
            Some(_) => {
                cache.pop(id);
                None
            }
            None => None,
        }
    }

    fn remember(&self, id: &Arc<str>, cached: Cached) {
        if let Some(cache) = &self.cache {
            cache
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .put(Arc::clone(id), cached);
        }
    }

    /// Claims `key` for the invocation `owner` whose deadline is `deadline_ms`, or finds the
    /// response to replay.
    pub(crate) async fn begin(
        &self,
        key: &RequestKey,
        owner: &str,
        deadline_ms: u64,
    ) -> Result<Begin, IdempotencyError> {
        let mut now = Now::system();
        if let Some(hit) = self.cached(&key.id, now) {
            return replay(key, &hit.validation, Some(hit.data.clone())).map(Begin::Replay);
        }
        let deadline = self.in_progress_deadline(deadline_ms, now);
        let owner: Arc<str> = Arc::from(owner);
        let mut backoff = Duration::from_millis(25);
        loop {
            let record = Record {
                id: key.id.clone(),
                status: Status::InProgress,
                expiration: self.expiration(now),
                in_progress_expiration: deadline,
                owner: Arc::clone(&owner),
                validation: key.validation.clone(),
                data: None,
            };
            let existing = match self.store.acquire(&record, now).await {
                Ok(Acquire::Acquired) => {
                    return Ok(Begin::Run(Lease {
                        id: record.id,
                        owner: record.owner,
                        validation: record.validation,
                        http: key.http,
                    }))
                }
                // This invocation's own record: an acquire retried after its answer was lost
                // (the SDK retries a write whose response did not arrive) finds it.
                Ok(Acquire::Exists(existing))
                    if existing.status == Status::InProgress
                        && existing.owner == owner
                        && existing.validation == key.validation =>
                {
                    return Ok(Begin::Run(Lease {
                        id: record.id,
                        owner: record.owner,
                        validation: record.validation,
                        http: key.http,
                    }))
                }
                Ok(Acquire::Exists(existing)) => existing,
                Err(error) => return self.store_failed(error).map(|()| Begin::Unguarded),
            };
            if existing.status == Status::Completed {
                let expiration = existing.expiration;
                let data = replay(key, &existing.validation, existing.data)?;
                let cached = Cached {
                    validation: key.validation.clone(),
                    data: data.clone(),
                    expiration,
                };
                self.remember(&key.id, cached);
                return Ok(Begin::Replay(data));
            }
            if existing.validation != key.validation {
                catalog::IDEMPOTENCY_KEY_REUSED.increment(1);
                return Err(IdempotencyError::KeyReused);
            }
            let retry_after =
                Duration::from_millis(existing.in_progress_expiration.saturating_sub(now.millis()))
                    .max(Duration::from_secs(1));
            // Wait only while this invocation has time left (with a margin to answer).
            let budget_left = deadline.saturating_sub(now.millis() + 250);
            if self.while_in_progress == WhileInProgress::Reject || budget_left < backoff.as_millis() as u64 {
                catalog::IDEMPOTENCY_IN_PROGRESS_CONFLICT.increment(1);
                return Err(IdempotencyError::InProgress { retry_after });
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
            now = Now::system();
            match self.store.get(&key.id).await {
                Ok(Some(record)) if record.status == Status::Completed && record.is_live(now) => {
                    return replay(key, &record.validation, record.data).map(Begin::Replay);
                }
                Ok(_) => continue,
                Err(error) => return self.store_failed(error).map(|()| Begin::Unguarded),
            }
        }
    }

    fn store_failed(&self, error: StoreError) -> Result<(), IdempotencyError> {
        catalog::IDEMPOTENCY_STORE_ERROR.increment(1);
        match self.store_failure {
            // The refusal is logged with the answer.
            StoreFailure::FailClosed => Err(IdempotencyError::Store(error)),
            StoreFailure::FailOpen => {
                tracing::warn!(error = %error, "idempotency store failed; running without idempotency");
                Ok(())
            }
        }
    }

    /// What becomes of `response`, the answer of the request `lease` holds: stored for replay
    /// as its JSON (`None` when too large to store: later duplicates are refused), or not
    /// stored — a response that does not serialize cannot be replayed, and an HTTP answer of
    /// 429 or 5xx says "try again", so a retry must run again rather than be told the same.
    pub(crate) fn outcome<T: Serialize>(&self, lease: &Lease, response: &T) -> Outcome {
        let response = match serde_json::to_string(response) {
            Ok(response) => response,
            Err(error) => {
                tracing::warn!(error = %error, "the response cannot be stored: it does not serialize");
                return Outcome::Release;
            }
        };
        if lease.http && !is_replayable_answer(&response) {
            tracing::debug!("an HTTP 429 or 5xx answer is not stored: a retry runs again");
            return Outcome::Release;
        }
        if response.len() <= self.max_response_bytes {
            return Outcome::Store(Some(Arc::from(response)));
        }
        tracing::warn!(
            bytes = response.len(),
            limit = self.max_response_bytes,
            "the response is too large to store: duplicates of this request will be refused, not replayed"
        );
        Outcome::Store(None)
    }

    /// Settles the record `lease` holds as [`outcome`](Self::outcome) decided: completed with the
    /// response, or released. A store failure is logged and counted: the response is still
    /// returned, and the record expires at the deadline.
    pub(crate) async fn finish(&self, lease: Lease, outcome: Outcome) {
        let data = match outcome {
            Outcome::Store(data) => data,
            Outcome::Release => return self.release(lease).await,
        };
        let expiration = self.expiration(Now::system());
        match self
            .store
            .complete(&lease.id, &lease.owner, data.clone(), expiration)
            .await
        {
            Ok(()) => {
                if let Some(data) = data {
                    let cached = Cached {
                        validation: lease.validation,
                        data,
                        expiration,
                    };
                    self.remember(&lease.id, cached);
                }
            }
            Err(error) => {
                catalog::IDEMPOTENCY_STORE_ERROR.increment(1);
                tracing::warn!(error = %error, "the idempotency record could not be completed");
            }
        }
    }

    /// Deletes the record `lease` holds, after the handler failed, so that a retry runs again.
    pub(crate) async fn release(&self, lease: Lease) {
        self.store.release_lease(&lease).await;
    }

    /// Runs `work` at most once for `key` (any JSON value, e.g. an SQS message id) — a unit of
    /// work inside a handler. `payload` must be the same for a replay; `owner` is the
    /// invocation's request id (the record's owner is `<owner>#<n>`, one per unit of work) and
    /// `deadline_ms` its deadline. A replay returns the stored result without running `work`;
    /// a duplicate running at the same time is refused as in progress, also within one
    /// invocation.
    pub async fn once<T, E, F, Fut>(
        &self,
        key: &Value,
        payload: &Value,
        owner: &str,
        deadline_ms: u64,
        work: F,
    ) -> Result<T, OnceError<E>>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let key = key::work_key(key, payload, &self.prefix);
        // Each unit of work owns its record alone: units of one invocation (which share its
        // request id) never take each other's records for their own.
        static UNITS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let unit = UNITS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let owner = format!("{owner}#{unit}");
        match self
            .begin(&key, &owner, deadline_ms)
            .await
            .map_err(OnceError::Idempotency)?
        {
            Begin::Replay(data) => serde_json::from_str(&data)
                .map_err(|e| OnceError::Idempotency(IdempotencyError::CorruptResponse(e.to_string()))),
            Begin::Unguarded => work().await.map_err(OnceError::Work),
            Begin::Run(lease) => {
                // Released if `work` panics or is dropped unfinished, as the layer does.
                let mut held = ReleaseOnDrop::new(self, lease);
                let result = work().await;
                let Some(lease) = held.take() else {
                    return result.map_err(OnceError::Work);
                };
                match result {
                    Ok(result) => {
                        let outcome = self.outcome(&lease, &result);
                        self.finish(lease, outcome).await;
                        Ok(result)
                    }
                    Err(error) => {
                        self.release(lease).await;
                        Err(OnceError::Work(error))
                    }
                }
            }
        }
    }
}

/// Releases the key when dropped still holding it — the work panicked (the runtime catches the
/// panic and goes on) or was cancelled — so that a retry need not wait for the deadline. A crash
/// of the whole process runs no code: then the record holds the key until the deadline.
pub(crate) struct ReleaseOnDrop {
    held: Option<(Store, Lease)>,
}

impl ReleaseOnDrop {
    /// Holds `lease`, acquired through `idempotency`.
    pub(crate) fn new(idempotency: &Idempotency, lease: Lease) -> Self {
        Self {
            held: Some((idempotency.store.clone(), lease)),
        }
    }

    /// The lease, for the caller to settle.
    pub(crate) fn take(&mut self) -> Option<Lease> {
        self.held.take().map(|(_, lease)| lease)
    }
}

impl Drop for ReleaseOnDrop {
    fn drop(&mut self) {
        let Some((store, lease)) = self.held.take() else {
            return;
        };
        if let Store::Memory(_) = store {
            let _ = now_or_never(store.release_lease(&lease));
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move { store.release_lease(&lease).await });
            }
            Err(_) => {
                tracing::warn!("no runtime to release the idempotency record; it expires at the deadline")
            }
        }
    }
}

/// What becomes of a response: see [`Idempotency::outcome`].
pub(crate) enum Outcome {
    /// Completed with this response (`None`: too large to store).
    Store(Option<Arc<str>>),
    /// Released, so that a retry runs again.
    Release,
}

/// Whether an HTTP response (its JSON) may be replayed: any status but 429 and 5xx.
fn is_replayable_answer(response: &str) -> bool {
    let status = json_text::member(response, "statusCode").and_then(|s| s.parse::<u16>().ok());
    !matches!(status, Some(429 | 500..=599))
}

/// The stored response for `key`, if its payload matches.
fn replay(key: &RequestKey, validation: &str, data: Option<Arc<str>>) -> Result<Arc<str>, IdempotencyError> {
    if validation != &*key.validation {
        catalog::IDEMPOTENCY_KEY_REUSED.increment(1);
        return Err(IdempotencyError::KeyReused);
    }
    let data = data.ok_or(IdempotencyError::ResponseNotStored)?;
    catalog::IDEMPOTENCY_REPLAY.increment(1);
    Ok(data)
}

/// Why [`Idempotency::once`] did not return a result.
#[derive(Debug, thiserror::Error)]
pub enum OnceError<E> {
    /// The idempotency rules refused (in progress, key reused, store failure).
    #[error(transparent)]
    Idempotency(IdempotencyError),
    /// The work itself failed (its record was released, so a retry runs it again).
    #[error("{0}")]
    Work(E),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_local_cache_is_kept_only_in_front_of_other_stores() {
        assert!(Idempotency::memory().local_cache(8).cache.is_none());
        let remote = Idempotency::with_store(MemoryStore::new()).local_cache(8);
        assert!(remote.cache.is_some());
        assert!(remote.local_cache(0).cache.is_none());
    }
}
