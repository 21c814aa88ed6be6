//! The record protocol: acquire a key (or find the response to replay), run, then complete the
//! record with the response or release it; the local cache in front of remote stores.

use std::future::Future;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use super::config::{StoreFailure, WhileInProgress};
use super::key::RequestKey;
use super::{
    Acquire, Idempotency, IdempotencyError, IdempotencyStore, MemoryStore, Now, OnceError, Record, Status,
    StoreError,
};
use crate::metrics::catalog;
use crate::ready::now_or_never;

/// The store records live in: the in-memory one is called directly (its operations are plain
/// function calls), any other through [`IdempotencyStore`].
#[derive(Clone, Debug)]
pub(super) enum Store {
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
            catalog::keel::IDEMPOTENCY_STORE_ERROR.increment(1);
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
pub(super) struct Cached {
    pub(super) validation: Arc<str>,
    pub(super) data: Arc<str>,
    pub(super) expiration: u64,
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
    pub(super) id: Arc<str>,
    pub(super) owner: Arc<str>,
    pub(super) validation: Arc<str>,
    /// The request is an HTTP request: its response is an HTTP response.
    pub(super) http: bool,
}

impl Idempotency {
    /// The deadline an in-progress record holds: the invocation's, or, when that is unknown or
    /// already past, now plus the fallback timeout.
    fn in_progress_deadline(&self, deadline_ms: u64, now: Now) -> u64 {
        crate::clock::deadline_or(deadline_ms, now.millis(), self.fallback_timeout)
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
                catalog::keel::IDEMPOTENCY_KEY_REUSED.increment(1);
                return Err(IdempotencyError::KeyReused);
            }
            let retry_after =
                Duration::from_millis(existing.in_progress_expiration.saturating_sub(now.millis()))
                    .max(Duration::from_secs(1));
            // Wait only while this invocation has time left (with a margin to answer).
            let margin = crate::clock::DEADLINE_MARGIN.as_millis() as u64;
            let budget_left = deadline.saturating_sub(now.millis() + margin);
            if self.while_in_progress == WhileInProgress::Reject || budget_left < backoff.as_millis() as u64 {
                catalog::keel::IDEMPOTENCY_IN_PROGRESS_CONFLICT.increment(1);
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
        catalog::keel::IDEMPOTENCY_STORE_ERROR.increment(1);
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
        match serde_json::to_string(response) {
            Ok(response) => self.outcome_of_json(lease, &response),
            Err(error) => {
                tracing::warn!(error = %error, "the response cannot be stored: it does not serialize");
                Outcome::Release
            }
        }
    }

    /// [`outcome`](Self::outcome) of a response already serialized: its JSON text.
    pub(crate) fn outcome_of_json(&self, lease: &Lease, response: &str) -> Outcome {
        if lease.http && !is_replayable_answer(response) {
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
                catalog::keel::IDEMPOTENCY_STORE_ERROR.increment(1);
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
        let key = super::key::work_key(key, payload, &self.prefix);
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

/// Whether an HTTP response (its JSON, as serialized) may be replayed: any status but 429 and
/// 5xx.
fn is_replayable_answer(response: &str) -> bool {
    let status =
        crate::json::reader::first_member(response, "statusCode").and_then(|s| s.parse::<u16>().ok());
    !matches!(status, Some(429 | 500..=599))
}

/// The stored response for `key`, if its payload matches.
fn replay(key: &RequestKey, validation: &str, data: Option<Arc<str>>) -> Result<Arc<str>, IdempotencyError> {
    if validation != &*key.validation {
        catalog::keel::IDEMPOTENCY_KEY_REUSED.increment(1);
        return Err(IdempotencyError::KeyReused);
    }
    let data = data.ok_or(IdempotencyError::ResponseNotStored)?;
    catalog::keel::IDEMPOTENCY_REPLAY.increment(1);
    Ok(data)
}
