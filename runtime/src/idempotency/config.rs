//! Idempotency settings: where records live, what the key and the payload are, how long a
//! response is replayed, and what happens without a key, on a store failure and while a key is
//! in progress.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lru::LruCache;

use super::key::{self, KeySource, PayloadSource, RequestKey};
use super::protocol::{Cached, Store};
use super::{IdempotencyStore, MemoryStore, Now};
use crate::config::{parse_var, ConfigError};
use crate::function::{var, FunctionInfo};

/// Default time a completed response is replayed (`KEEL_IDEMPOTENCY_TTL_SECONDS`).
pub const DEFAULT_TTL: Duration = Duration::from_secs(3600);
/// Longest time a completed response is replayed: ten years — no retry comes later, and
/// `now + ttl` stays far from overflowing.
pub const MAX_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Default lifetime of an in-progress record when the invocation's deadline is unknown.
pub const DEFAULT_FALLBACK_TIMEOUT: Duration = crate::clock::UNKNOWN_DEADLINE_TIMEOUT;
/// Largest response stored with its record: DynamoDB items hold at most 400 KB, and the rest of
/// the record needs a little room.
pub const MAX_STORED_RESPONSE_BYTES: usize = 390 * 1024;

/// What a request without a key gets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MissingKey {
    /// [`IdempotencyError::MissingKey`](super::IdempotencyError::MissingKey) (HTTP 400). The default.
    #[default]
    Reject,
    /// The handler runs without idempotency, and a WARN line says so.
    PassThrough,
    /// The handler runs without idempotency, silently: for an API where only some requests
    /// carry a key (a `POST` that creates, beside `GET`s that read), whose handler requires the
    /// key where it matters.
    Optional,
}

/// What happens when the store fails.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StoreFailure {
    /// The handler does not run; [`IdempotencyError::Store`](super::IdempotencyError::Store) (HTTP 503). The default.
    #[default]
    FailClosed,
    /// The handler runs without idempotency; a WARN line and `IdempotencyStoreError` say so.
    FailOpen,
}

/// What a request gets while another invocation runs the same key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WhileInProgress {
    /// [`IdempotencyError::InProgress`](super::IdempotencyError::InProgress) (HTTP 409 with `Retry-After`) at once. The default.
    #[default]
    Reject,
    /// Poll the record with backoff, within the invocation's remaining time, and replay the
    /// response once it is stored (or run, if the other invocation gave up).
    Wait,
}

/// Idempotency settings and the store; build one, then hand it to [`IdempotencyLayer`](super::IdempotencyLayer) or to
/// `Keel::idempotency`, or call [`Idempotency::once`] for units of work inside a handler.
#[derive(Debug)]
pub struct Idempotency {
    pub(super) store: Store,
    pub(super) cache: Option<Mutex<LruCache<Arc<str>, Cached>>>,
    pub(super) key: KeySource,
    pub(super) payload: PayloadSource,
    pub(super) prefix: String,
    pub(super) ttl: Duration,
    pub(super) missing_key: MissingKey,
    pub(super) store_failure: StoreFailure,
    pub(super) while_in_progress: WhileInProgress,
    pub(super) fallback_timeout: Duration,
    pub(super) max_response_bytes: usize,
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

    pub(super) fn new(store: Store) -> Self {
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

    /// Records in the DynamoDB table `table` ([`DynamoDbStore`](super::DynamoDbStore)).
    #[cfg(feature = "dynamodb")]
    pub fn dynamodb(client: aws_sdk_dynamodb::Client, table: impl Into<String>) -> Self {
        Self::with_store(super::DynamoDbStore::new(client, table))
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
            #[cfg(feature = "dynamodb")]
            Some(table) => Self::with_store(super::DynamoDbStore::from_env(table).await),
            #[cfg(not(feature = "dynamodb"))]
            Some(_) => {
                return Err(ConfigError::FeatureMissing {
                    variable: "KEEL_IDEMPOTENCY_TABLE",
                    feature: "dynamodb",
                })
            }
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
    #[must_use]
    pub fn key_from_header(mut self, name: impl Into<String>) -> Self {
        self.key = KeySource::Header(name.into());
        self
    }

    /// The key is the value at this JSON pointer of the event.
    #[must_use]
    pub fn key_from_pointer(mut self, pointer: impl Into<String>) -> Self {
        self.key = KeySource::Pointer(pointer.into());
        self
    }

    /// The key is the whole request (an HTTP event's body, or the whole event).
    #[must_use]
    pub fn key_from_request(mut self) -> Self {
        self.key = KeySource::Request;
        self
    }

    /// Replays require the value at this JSON pointer to be the same (default: the request).
    #[must_use]
    pub fn validate_pointer(mut self, pointer: impl Into<String>) -> Self {
        self.payload = PayloadSource::Pointer(pointer.into());
        self
    }

    /// The record id prefix (default: the function's name).
    #[must_use]
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// How long a completed response is replayed (default one hour; at most [`MAX_TTL`], to
    /// which longer times are cut).
    #[must_use]
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl.min(MAX_TTL);
        self
    }

    /// When a record written at `now` stops being replayed, in epoch seconds.
    pub(super) fn expiration(&self, now: Now) -> u64 {
        now.seconds().saturating_add(self.ttl.as_secs())
    }

    /// Requests without a key run without idempotency (logged) instead of being refused.
    #[must_use]
    pub fn pass_through_without_key(mut self) -> Self {
        self.missing_key = MissingKey::PassThrough;
        self
    }

    /// Requests without a key run without idempotency, silently (see [`MissingKey::Optional`]).
    #[must_use]
    pub fn key_optional(mut self) -> Self {
        self.missing_key = MissingKey::Optional;
        self
    }

    /// When the store fails, run the handler anyway (logged and counted).
    #[must_use]
    pub fn fail_open(mut self) -> Self {
        self.store_failure = StoreFailure::FailOpen;
        self
    }

    /// Wait for an in-progress duplicate instead of answering `InProgress` at once.
    #[must_use]
    pub fn wait_while_in_progress(mut self) -> Self {
        self.while_in_progress = WhileInProgress::Wait;
        self
    }

    /// Keeps up to `capacity` completed responses in process memory (0 turns it off), so that
    /// duplicates are answered without a round trip to the store. The in-memory store needs no
    /// such cache (its records are in process memory already): with it, this does nothing.
    #[must_use]
    pub fn local_cache(mut self, capacity: usize) -> Self {
        self.cache = match self.store {
            Store::Memory(_) => None,
            Store::Any(_) => NonZeroUsize::new(capacity).map(|c| Mutex::new(LruCache::new(c))),
        };
        self
    }

    /// How long an in-progress record lives when the invocation's deadline is unknown (the
    /// Lambda emulator reports a deadline in the past).
    #[must_use]
    pub fn fallback_timeout(mut self, timeout: Duration) -> Self {
        self.fallback_timeout = timeout;
        self
    }

    /// Largest response stored for replay (default [`MAX_STORED_RESPONSE_BYTES`]).
    #[must_use]
    pub fn max_response_bytes(mut self, bytes: usize) -> Self {
        self.max_response_bytes = bytes;
        self
    }

    /// Whether records are in process memory (every store operation answers at once).
    pub(crate) fn is_in_memory(&self) -> bool {
        matches!(self.store, Store::Memory(_))
    }

    /// The record id and validation hash of an event (see [`KeySource::Request`] for what
    /// identifies an HTTP request).
    pub(crate) fn request_key(&self, event: &serde_json::value::RawValue) -> Result<RequestKey, String> {
        key::request_key(event, &self.key, &self.payload, &self.prefix)
    }
}
