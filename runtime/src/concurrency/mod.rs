//! Concurrency guards: at most N invocations at once per key (e.g. per partner resource),
//! across every execution environment of a function.
//!
//! Behind a [`ConcurrencyGuardLayer`], an invocation takes one of the key's leased slots
//! (slots `key#0 … key#(limit-1)`, taken by a conditional write
//! on a free or expired slot, leased until the invocation's deadline, freed by a delete
//! conditioned on the holder) before the handler runs, and frees it when the handler answers —
//! with an error too, and when it panics. A crashed environment frees nothing: its slot is free
//! again when its lease ends. When every slot is taken the request is refused
//! ([`ConcurrencyError::Rejected`]; HTTP 429 with `Retry-After`), or waits with backoff within a
//! budget if so configured. With slots in DynamoDB, an in-process semaphore per key first holds
//! back local invocations beyond the limit (multi-concurrency environments,
//! `AWS_LAMBDA_MAX_CONCURRENCY`), so they do not spend round trips on slots that cannot be free.
//!
//! ```no_run
//! use keel_runtime::concurrency::ConcurrencyGuard;
//!
//! # async fn example(client: aws_sdk_dynamodb::Client) {
//! // At most 5 calls at once to each partner resource, the key read from the event.
//! let guard = ConcurrencyGuard::per_pointer("/resource_id", 5).dynamodb(client, "booking-slots");
//! # }
//! ```
//!
//! Metrics: `ConcurrencyAcquired`, `ConcurrencyRejected`, `ConcurrencyWaitMs`.

mod slots;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lambda_runtime::LambdaEvent;
use pin_project_lite::pin_project;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::{Layer, Service};

pub use slots::{DynamoDbSlots, MemorySlots, SlotError, SlotStore, SLOT_TABLE};

use crate::config::{parse_var, ConfigError};
use crate::function::var;
use crate::handler::{InvocationError, RawEvent};
use crate::metrics::catalog;
use crate::ready::now_or_never;
use crate::routing::{Classify, ErrorClass};

/// The lease when the invocation's deadline is unknown (the Lambda emulator reports one in the
/// past): Lambda's longest timeout.
const DEFAULT_FALLBACK_LEASE: Duration = Duration::from_secs(900);

/// The `Retry-After` of a refusal: a slot is typically free again within a second.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Time kept back from the deadline when waiting for a slot.
const DEADLINE_MARGIN: Duration = Duration::from_millis(250);

/// Longest key used as it is; a longer one is replaced by its SHA-256 (`sha256:<hex>`), so that
/// slot ids stay within DynamoDB's 2,048-byte partition keys and a long key cannot make the
/// store refuse the slot (and the invocation run unguarded with `fail_open`).
pub const MAX_KEY_BYTES: usize = 1024;

/// A function computing a key from an event's JSON text.
pub type KeyFn = Arc<dyn Fn(&RawValue) -> Option<String> + Send + Sync>;

/// Which key an invocation is guarded under.
#[derive(Clone)]
pub enum GuardKey {
    /// One key for every invocation.
    Fixed(String),
    /// The value at this JSON pointer of the event (a string, or any JSON value's text).
    Pointer(String),
    /// Computed from the event's JSON text; `None` runs the invocation unguarded.
    Custom(KeyFn),
}

impl std::fmt::Debug for GuardKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GuardKey::Fixed(key) => f.debug_tuple("Fixed").field(key).finish(),
            GuardKey::Pointer(pointer) => f.debug_tuple("Pointer").field(pointer).finish(),
            GuardKey::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}

/// Why an invocation did not get a slot.
#[derive(Debug, thiserror::Error)]
pub enum ConcurrencyError {
    /// Every slot of the key is taken (HTTP 429).
    #[error("every one of the {limit} concurrency slots for `{key}` is taken; retry later")]
    Rejected {
        /// The key.
        key: String,
        /// Its limit.
        limit: u32,
        /// When to retry.
        retry_after: Duration,
    },
    /// The slot store failed and the guard fails closed (HTTP 503).
    #[error(transparent)]
    Store(#[from] SlotError),
}

impl ConcurrencyError {
    /// The stable error type Lambda reports.
    pub fn error_type(&self) -> &'static str {
        match self {
            ConcurrencyError::Rejected { .. } => "Keel.Concurrency.Rejected",
            ConcurrencyError::Store(_) => "Keel.Concurrency.StoreUnavailable",
        }
    }
}

impl Classify for ConcurrencyError {
    fn error_class(&self) -> ErrorClass {
        match self {
            ConcurrencyError::Rejected { .. } => ErrorClass::Transient,
            ConcurrencyError::Store(SlotError::Rejected(_)) => ErrorClass::Permanent,
            ConcurrencyError::Store(_) => ErrorClass::Transient,
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            ConcurrencyError::Rejected { retry_after, .. } => Some(*retry_after),
            ConcurrencyError::Store(_) => None,
        }
    }
}

impl From<ConcurrencyError> for InvocationError {
    fn from(error: ConcurrencyError) -> Self {
        InvocationError::new(error.error_type(), error)
    }
}

/// Where slots live: in memory (taken and freed at once) or in any other store.
#[derive(Debug)]
enum Slots {
    Memory(Arc<MemorySlots>),
    Any(Arc<dyn SlotStore>),
}

/// A concurrency guard's settings and slots; hand it to [`ConcurrencyGuardLayer`] or to
/// `Keel::concurrency`.
#[derive(Debug)]
pub struct ConcurrencyGuard {
    key: GuardKey,
    limit: u32,
    slots: Slots,
    /// Per key, for stores other than memory: local invocations beyond the limit wait here.
    local: Mutex<HashMap<String, Arc<Semaphore>>>,
    wait_budget: Option<Duration>,
    fail_open: bool,
    fallback_lease: Duration,
}

impl ConcurrencyGuard {
    fn new(key: GuardKey, limit: u32) -> Self {
        Self {
            key,
            limit: limit.max(1),
            slots: Slots::Memory(Arc::new(MemorySlots::new())),
            local: Mutex::new(HashMap::new()),
            wait_budget: None,
            fail_open: false,
            fallback_lease: DEFAULT_FALLBACK_LEASE,
        }
    }

    /// At most `limit` invocations at once in all, under the key `name`.
    pub fn global(name: impl Into<String>, limit: u32) -> Self {
        Self::new(GuardKey::Fixed(name.into()), limit)
    }

    /// At most `limit` invocations at once per value at the JSON pointer `pointer` of the event
    /// (e.g. `/resource_id`); events without it run unguarded.
    pub fn per_pointer(pointer: impl Into<String>, limit: u32) -> Self {
        Self::new(GuardKey::Pointer(pointer.into()), limit)
    }

    /// At most `limit` invocations at once per key `key_of` computes from the event's JSON text
    /// (`None`: unguarded).
    pub fn per_key(key_of: impl Fn(&RawValue) -> Option<String> + Send + Sync + 'static, limit: u32) -> Self {
        Self::new(GuardKey::Custom(Arc::new(key_of)), limit)
    }

    /// Slots in the DynamoDB table `table` (see [`SLOT_TABLE`]), shared by every environment.
    pub fn dynamodb(self, client: aws_sdk_dynamodb::Client, table: impl Into<String>) -> Self {
        self.with_store(DynamoDbSlots::new(client, table))
    }

    /// Slots in `store`.
    pub fn with_store(mut self, store: impl SlotStore + 'static) -> Self {
        self.slots = Slots::Any(Arc::new(store));
        self
    }

    /// Slots in process memory (the default).
    pub fn memory(mut self) -> Self {
        self.slots = Slots::Memory(Arc::new(MemorySlots::new()));
        self
    }

    /// Applies `KEEL_CONCURRENCY_TABLE` (slots in that DynamoDB table, with the standard AWS
    /// configuration) and `KEEL_CONCURRENCY_LIMIT` (slots per key) when they are set.
    pub async fn with_env(mut self) -> Result<Self, ConfigError> {
        let limit = parse_var("KEEL_CONCURRENCY_LIMIT", "a whole number above 0", |v| {
            v.parse::<u32>().ok().filter(|l| *l > 0)
        })?;
        if let Some(limit) = limit {
            self.limit = limit;
        }
        if let Some(table) = var("KEEL_CONCURRENCY_TABLE") {
            let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
                .load()
                .await;
            self = self.dynamodb(aws_sdk_dynamodb::Client::new(&config), table);
        }
        Ok(self)
    }

    /// When every slot is taken, retry with backoff for up to `budget` (within the invocation's
    /// remaining time) instead of refusing at once.
    pub fn wait_when_full(mut self, budget: Duration) -> Self {
        self.wait_budget = Some(budget);
        self
    }

    /// When the slot store fails, run the handler anyway (logged) instead of answering 503.
    pub fn fail_open(mut self) -> Self {
        self.fail_open = true;
        self
    }

    /// The lease when the invocation's deadline is unknown (default 15 minutes).
    pub fn fallback_lease(mut self, lease: Duration) -> Self {
        self.fallback_lease = lease;
        self
    }

    /// The slots per key.
    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// The key of `event`, if it has one: the configured one, or its SHA-256 (`sha256:<hex>`)
    /// when it is longer than [`MAX_KEY_BYTES`].
    pub fn key_of(&self, event: &RawValue) -> Option<String> {
        let key = self.configured_key(event)?;
        if key.len() <= MAX_KEY_BYTES {
            return Some(key);
        }
        Some(format!("sha256:{}", crate::idempotency::sha256_hex(&key)))
    }

    fn configured_key(&self, event: &RawValue) -> Option<String> {
        match &self.key {
            GuardKey::Fixed(key) => Some(key.clone()),
            GuardKey::Pointer(pointer) => {
                let value = crate::idempotency::value_at(event, pointer)?;
                let plain = value
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .filter(|v| !v.contains('\\'));
                match plain {
                    Some(text) => Some(text.to_owned()),
                    None => Some(serde_json::from_str::<String>(value).unwrap_or_else(|_| value.to_owned())),
                }
            }
            GuardKey::Custom(key_of) => key_of(event),
        }
    }

    fn is_in_memory(&self) -> bool {
        matches!(self.slots, Slots::Memory(_))
    }

    /// Takes a slot of `key` for `holder` (the request id) until `deadline_ms`: refused, or
    /// waiting when configured, while every slot is taken.
    pub(crate) async fn acquire(
        &self,
        key: &str,
        holder: &str,
        deadline_ms: u64,
    ) -> Result<Held, ConcurrencyError> {
        let arrived = Instant::now();
        let now = now_ms();
        let lease = if deadline_ms > now {
            deadline_ms
        } else {
            now + self.fallback_lease.as_millis() as u64
        };
        let wait_until = self.wait_budget.map(|budget| {
            let left = Duration::from_millis(lease.saturating_sub(now)).saturating_sub(DEADLINE_MARGIN);
            arrived + budget.min(left)
        });
        let mut backoff = Duration::from_millis(10);
        let start = fastrand::u32(..self.limit);
        loop {
            let permit = self.local_permit(key);
            if permit.is_some() || self.is_in_memory() {
                for n in 0..self.limit {
                    let id = format!("{key}#{}", (start + n) % self.limit);
                    if self.take(&id, holder, lease).await? {
                        catalog::CONCURRENCY_ACQUIRED.increment(1);
                        catalog::CONCURRENCY_WAIT_MS
                            .record_with(arrived.elapsed().as_secs_f64() * 1000.0, &[]);
                        return Ok(Held {
                            id,
                            key: key.to_owned(),
                            permit,
                        });
                    }
                }
            }
            drop(permit);
            self.forget_if_idle(key);
            match wait_until {
                Some(until) if Instant::now() + backoff < until => {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(500));
                }
                _ => {
                    catalog::CONCURRENCY_REJECTED.increment(1);
                    return Err(ConcurrencyError::Rejected {
                        key: key.to_owned(),
                        limit: self.limit,
                        retry_after: RETRY_AFTER,
                    });
                }
            }
        }
    }

    /// The local permit for `key` (remote stores only).
    fn local_permit(&self, key: &str) -> Option<OwnedSemaphorePermit> {
        if self.is_in_memory() {
            return None;
        }
        let semaphore = {
            let mut local = self.local.lock().unwrap_or_else(PoisonError::into_inner);
            local
                .entry(key.to_owned())
                .or_insert_with(|| Arc::new(Semaphore::new(self.limit as usize)))
                .clone()
        };
        semaphore.try_acquire_owned().ok()
    }

    /// Forgets the local semaphore of `key` when nothing holds or waits for it, so that the map
    /// holds only the keys in use.
    fn forget_if_idle(&self, key: &str) {
        let mut local = self.local.lock().unwrap_or_else(PoisonError::into_inner);
        // Every permit holds the semaphore too: one reference left is the map's own.
        if local
            .get(key)
            .is_some_and(|semaphore| Arc::strong_count(semaphore) == 1)
        {
            local.remove(key);
        }
    }

    async fn take(&self, id: &str, holder: &str, lease: u64) -> Result<bool, SlotError> {
        match &self.slots {
            Slots::Memory(memory) => Ok(memory.take_now(id, holder, lease, now_ms())),
            Slots::Any(store) => store.take(id, holder, lease, now_ms()).await,
        }
    }

    /// Frees the slot `held` holds; a failure is logged (the slot is free when its lease ends).
    pub(crate) async fn release(&self, held: Held, holder: &str) {
        let Held { id, key, permit } = held;
        let result = match &self.slots {
            Slots::Memory(memory) => {
                memory.free_now(&id, holder);
                Ok(())
            }
            Slots::Any(store) => store.free(&id, holder).await,
        };
        if let Err(error) = result {
            tracing::warn!(slot = %id, error = %error, "the concurrency slot could not be freed; it is free when its lease ends");
        }
        // Only now may the next local invocation try: the slot is free.
        drop(permit);
        self.forget_if_idle(&key);
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A slot taken (and the local permit that came with it).
pub(crate) struct Held {
    id: String,
    key: String,
    /// Held for as long as the slot: dropping it lets the next local invocation try.
    permit: Option<OwnedSemaphorePermit>,
}

/// Tower layer that guards the service it wraps; see the [module docs](self).
#[derive(Clone, Debug)]
pub struct ConcurrencyGuardLayer {
    guard: Option<Arc<ConcurrencyGuard>>,
}

impl ConcurrencyGuardLayer {
    /// Invocations are guarded as `guard` says.
    pub fn new(guard: ConcurrencyGuard) -> Self {
        Self {
            guard: Some(Arc::new(guard)),
        }
    }

    /// A layer that guards nothing.
    pub fn disabled() -> Self {
        Self { guard: None }
    }
}

impl<S> Layer<S> for ConcurrencyGuardLayer {
    type Service = ConcurrencyGuardService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ConcurrencyGuardService {
            inner,
            guard: self.guard.clone(),
        }
    }
}

/// The service of [`ConcurrencyGuardLayer`].
#[derive(Clone, Debug)]
pub struct ConcurrencyGuardService<S> {
    inner: S,
    guard: Option<Arc<ConcurrencyGuard>>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, R> Service<LambdaEvent<RawEvent>> for ConcurrencyGuardService<S>
where
    S: Service<LambdaEvent<RawEvent>, Response = R, Error = InvocationError> + Clone + Send + 'static,
    S::Future: Send + 'static,
    R: DeserializeOwned + Send + 'static,
{
    type Response = R;
    type Error = InvocationError;
    type Future = ConcurrencyGuardFuture<S, S::Future, R>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, event: LambdaEvent<RawEvent>) -> Self::Future {
        let Some(guard) = self.guard.clone() else {
            return ConcurrencyGuardFuture {
                state: GuardState::Handler {
                    handler: self.inner.call(event),
                    slot: None,
                },
            };
        };
        // The ready service handles this request; a fresh clone takes its place (tower's rule).
        let ready = self.inner.clone();
        let service = std::mem::replace(&mut self.inner, ready);
        // The slot is taken when the future is first polled: inside the invocation's span and
        // metrics scope, which the outer layers enter as they poll.
        ConcurrencyGuardFuture {
            state: GuardState::Start {
                start: Some(Start {
                    guard,
                    service,
                    event,
                }),
            },
        }
    }
}

/// What an invocation needs before it has a slot.
struct Start<S> {
    guard: Arc<ConcurrencyGuard>,
    service: S,
    event: LambdaEvent<RawEvent>,
}

/// Finds the invocation's key and takes a slot: the state to go on in, or the answer at once.
fn start<S, R>(start: Start<S>) -> Result<GuardState<S, S::Future, R>, Result<R, InvocationError>>
where
    S: Service<LambdaEvent<RawEvent>, Response = R, Error = InvocationError> + Send + 'static,
    S::Future: Send + 'static,
    R: DeserializeOwned + Send + 'static,
{
    let Start {
        guard,
        mut service,
        event,
    } = start;
    let Some(key) = guard.key_of(&event.payload) else {
        tracing::warn!("the event has no concurrency key: running unguarded");
        return Ok(GuardState::Handler {
            handler: service.call(event),
            slot: None,
        });
    };
    // In memory, without waiting, a slot is taken or refused at once.
    if guard.is_in_memory() && guard.wait_budget.is_none() {
        let holder = event.context.request_id.clone();
        if let Some(acquired) = now_or_never(guard.acquire(&key, &holder, event.context.deadline)) {
            return match acquired {
                Ok(held) => Ok(GuardState::Handler {
                    handler: service.call(event),
                    slot: Some(SlotGuard {
                        held: Some((guard, held, holder)),
                    }),
                }),
                Err(error) => Err(refuse(error, &event.payload)),
            };
        }
    }
    Ok(GuardState::Remote {
        future: Box::pin(guarded(guard, service, Box::new(event), key)),
    })
}

/// The whole exchange with a remote slot store (or a wait): take, run, free.
async fn guarded<S, R>(
    guard: Arc<ConcurrencyGuard>,
    mut inner: S,
    event: Box<LambdaEvent<RawEvent>>,
    key: String,
) -> Result<R, InvocationError>
where
    S: Service<LambdaEvent<RawEvent>, Response = R, Error = InvocationError>,
    R: DeserializeOwned,
{
    let holder = event.context.request_id.clone();
    let held = match guard.acquire(&key, &holder, event.context.deadline).await {
        Ok(held) => held,
        Err(ConcurrencyError::Store(error)) if guard.fail_open => {
            tracing::warn!(error = %error, "the concurrency slot store failed; running unguarded");
            return inner.call(*event).await;
        }
        Err(error) => return refuse(error, &event.payload),
    };
    let mut slot = SlotGuard {
        held: Some((guard, held, holder)),
    };
    let result = inner.call(*event).await;
    if let Some((guard, held, holder)) = slot.held.take() {
        guard.release(held, &holder).await;
    }
    result
}

/// The answer to a refused invocation: HTTP 429 with `Retry-After` (or 503 for a failed store)
/// for HTTP events, otherwise the error.
fn refuse<R: DeserializeOwned>(error: ConcurrencyError, event: &RawValue) -> Result<R, InvocationError> {
    let (status, code) = match &error {
        ConcurrencyError::Rejected { .. } => (429, "ConcurrencyLimitReached"),
        ConcurrencyError::Store(_) => (503, "ConcurrencyStoreUnavailable"),
    };
    if crate::idempotency::is_http_event(event) {
        if let Some(response) =
            crate::http::refusal(error.error_type(), status, code, &error, error.retry_after())
        {
            return Ok(response);
        }
    }
    Err(error.into())
}

/// Frees the slot when dropped (the handler answered, failed, panicked or was cancelled).
struct SlotGuard {
    held: Option<(Arc<ConcurrencyGuard>, Held, String)>,
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        let Some((guard, held, holder)) = self.held.take() else {
            return;
        };
        if guard.is_in_memory() {
            let _ = now_or_never(guard.release(held, &holder));
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move { guard.release(held, &holder).await });
            }
            Err(_) => {
                tracing::warn!("no runtime to free the concurrency slot; it is free when its lease ends")
            }
        }
    }
}

pin_project! {
    /// The future of [`ConcurrencyGuardService`].
    pub struct ConcurrencyGuardFuture<S, F, R> {
        #[pin]
        state: GuardState<S, F, R>,
    }
}

pin_project! {
    #[project = GuardProjection]
    enum GuardState<S, F, R> {
        // Not polled yet.
        Start { start: Option<Start<S>> },
        // The handler runs, holding its slot (in memory) or unguarded.
        Handler { #[pin] handler: F, slot: Option<SlotGuard> },
        // Slots in a remote store (or a wait): the whole exchange.
        Remote { future: BoxFuture<Result<R, InvocationError>> },
        Done,
    }
}

impl<S, R> Future for ConcurrencyGuardFuture<S, S::Future, R>
where
    S: Service<LambdaEvent<RawEvent>, Response = R, Error = InvocationError> + Send + 'static,
    S::Future: Send + 'static,
    R: DeserializeOwned + Send + 'static,
{
    type Output = Result<R, InvocationError>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        loop {
            let next = match state.as_mut().project() {
                GuardProjection::Start { start: pending } => match pending.take().map(start) {
                    Some(Ok(next)) => next,
                    Some(Err(answer)) => {
                        state.set(GuardState::Done);
                        return Poll::Ready(answer);
                    }
                    None => GuardState::Done,
                },
                GuardProjection::Handler { handler, slot } => {
                    let result = std::task::ready!(handler.poll(cx));
                    // Freed now, before the answer goes back.
                    slot.take();
                    state.set(GuardState::Done);
                    return Poll::Ready(result);
                }
                GuardProjection::Remote { future } => {
                    let result = std::task::ready!(future.as_mut().poll(cx));
                    state.set(GuardState::Done);
                    return Poll::Ready(result);
                }
                GuardProjection::Done => panic!("ConcurrencyGuardFuture polled after completion"),
            };
            state.set(next);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This process's resident memory, in KiB.
    fn rss_kib() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|kib| kib.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    #[test]
    fn a_million_distinct_keys_leave_nothing_behind() {
        let deadline = now_ms() + 60_000;
        for remote in [false, true] {
            let slots = Arc::new(MemorySlots::new());
            let guard = match remote {
                false => ConcurrencyGuard::per_pointer("/resource_id", 2),
                // Shared slots are a remote store to the guard: it keeps local semaphores.
                true => ConcurrencyGuard::per_pointer("/resource_id", 2).with_store(slots.clone()),
            };
            let taken = || match &guard.slots {
                Slots::Memory(memory) => memory.taken(),
                Slots::Any(_) => slots.taken(),
            };
            let before = rss_kib();
            for n in 0..1_000_000 {
                let key = format!("resource-{n}");
                let held = now_or_never(guard.acquire(&key, "request-1", deadline))
                    .expect("answered at once")
                    .expect("a free slot");
                now_or_never(guard.release(held, "request-1")).expect("answered at once");
            }
            let grown_kib = rss_kib().saturating_sub(before);
            println!("remote store: {remote}; resident memory grew by {grown_kib} KiB over 1,000,000 keys");
            assert_eq!(taken(), 0, "freed slots are forgotten");
            let semaphores = guard.local.lock().unwrap_or_else(PoisonError::into_inner).len();
            assert_eq!(semaphores, 0, "idle semaphores are forgotten");
            // The figure is printed, not asserted: other tests of this process allocate too.
        }
    }

    #[test]
    fn a_slot_its_holder_takes_again_is_taken() {
        let slots = MemorySlots::new();
        assert!(slots.take_now("k#0", "request-1", 2_000, 1_000));
        assert!(slots.take_now("k#0", "request-1", 2_000, 1_001), "a retried take");
        assert!(
            !slots.take_now("k#0", "request-2", 2_000, 1_002),
            "another holder"
        );
    }

    #[test]
    fn long_keys_are_hashed() {
        let guard = ConcurrencyGuard::per_pointer("/resource_id", 1);
        let long = "r".repeat(MAX_KEY_BYTES + 1);
        let event = serde_json::value::to_raw_value(&serde_json::json!({"resource_id": long})).unwrap();
        let key = guard.key_of(&event).unwrap();
        assert!(key.starts_with("sha256:") && key.len() == 71, "{key}");
        let other =
            serde_json::value::to_raw_value(&serde_json::json!({"resource_id": format!("{long}x")})).unwrap();
        assert_ne!(
            guard.key_of(&other).unwrap(),
            key,
            "different keys stay different"
        );
        let short = serde_json::value::to_raw_value(&serde_json::json!({"resource_id": "r-1"})).unwrap();
        assert_eq!(guard.key_of(&short).as_deref(), Some("r-1"));
    }
}
