//! [`ConcurrencyGuard`]: the limit, the key an invocation is guarded under, where the slots
//! live, and taking and freeing a slot (with a local semaphore in front of a remote store).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde_json::value::RawValue;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{ConcurrencyError, MemorySlots, SlotError, SlotStore};
use crate::clock::{self, now_ms, DEADLINE_MARGIN, UNKNOWN_DEADLINE_TIMEOUT};
use crate::config::{parse_var, ConfigError};
use crate::function::var;
use crate::metrics::catalog;

/// The `Retry-After` of a refusal: a slot is typically free again within a second.
const RETRY_AFTER: Duration = Duration::from_secs(1);

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

/// Where slots live: in memory (taken and freed at once) or in any other store.
#[derive(Debug)]
pub(super) enum Slots {
    Memory(Arc<MemorySlots>),
    Any(Arc<dyn SlotStore>),
}

/// A concurrency guard's settings and slots; hand it to [`ConcurrencyGuardLayer`](super::ConcurrencyGuardLayer) or to
/// `Keel::concurrency`.
#[derive(Debug)]
pub struct ConcurrencyGuard {
    pub(super) key: GuardKey,
    pub(super) limit: u32,
    pub(super) slots: Slots,
    /// Per key, for stores other than memory: local invocations beyond the limit wait here.
    pub(super) local: Mutex<HashMap<String, Arc<Semaphore>>>,
    pub(super) wait_budget: Option<Duration>,
    pub(super) fail_open: bool,
    pub(super) fallback_lease: Duration,
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
            fallback_lease: UNKNOWN_DEADLINE_TIMEOUT,
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
    /// (`None`: unguarded, as the function chose; logged at DEBUG only).
    pub fn per_key(key_of: impl Fn(&RawValue) -> Option<String> + Send + Sync + 'static, limit: u32) -> Self {
        Self::new(GuardKey::Custom(Arc::new(key_of)), limit)
    }

    /// Slots in the DynamoDB table `table` (see [`SLOT_TABLE`](super::SLOT_TABLE)), shared by
    /// every environment.
    #[cfg(feature = "dynamodb")]
    #[must_use]
    pub fn dynamodb(self, client: aws_sdk_dynamodb::Client, table: impl Into<String>) -> Self {
        self.with_store(super::DynamoDbSlots::new(client, table))
    }

    /// Slots in `store`.
    #[must_use]
    pub fn with_store(mut self, store: impl SlotStore + 'static) -> Self {
        self.slots = Slots::Any(Arc::new(store));
        self
    }

    /// Slots in process memory (the default).
    #[must_use]
    pub fn memory(mut self) -> Self {
        self.slots = Slots::Memory(Arc::new(MemorySlots::new()));
        self
    }

    /// Applies `KEEL_CONCURRENCY_TABLE` (slots in that DynamoDB table, with Keel's AWS
    /// configuration) and `KEEL_CONCURRENCY_LIMIT` (slots per key) when they are set.
    pub async fn with_env(mut self) -> Result<Self, ConfigError> {
        let limit = parse_var("KEEL_CONCURRENCY_LIMIT", "a whole number above 0", |v| {
            v.parse::<u32>().ok().filter(|l| *l > 0)
        })?;
        if let Some(limit) = limit {
            self.limit = limit;
        }
        if let Some(table) = var("KEEL_CONCURRENCY_TABLE") {
            #[cfg(feature = "dynamodb")]
            {
                let config = crate::aws::config().await;
                self = self.dynamodb(aws_sdk_dynamodb::Client::new(&config), table);
            }
            #[cfg(not(feature = "dynamodb"))]
            {
                let _ = table;
                return Err(ConfigError::FeatureMissing {
                    variable: "KEEL_CONCURRENCY_TABLE",
                    feature: "dynamodb",
                });
            }
        }
        Ok(self)
    }

    /// When every slot is taken, retry with backoff for up to `budget` (within the invocation's
    /// remaining time) instead of refusing at once.
    #[must_use]
    pub fn wait_when_full(mut self, budget: Duration) -> Self {
        self.wait_budget = Some(budget);
        self
    }

    /// When the slot store fails, run the handler anyway (logged) instead of answering 503.
    #[must_use]
    pub fn fail_open(mut self) -> Self {
        self.fail_open = true;
        self
    }

    /// The lease when the invocation's deadline is unknown (default 15 minutes).
    #[must_use]
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
        Some(format!("sha256:{}", crate::hash::sha256_hex(&key)))
    }

    fn configured_key(&self, event: &RawValue) -> Option<String> {
        match &self.key {
            GuardKey::Fixed(key) => Some(key.clone()),
            GuardKey::Pointer(pointer) => {
                let value = crate::event::value_at(event.get(), pointer)?;
                Some(crate::event::text_of(value).into_owned())
            }
            GuardKey::Custom(key_of) => key_of(event),
        }
    }

    pub(super) fn is_in_memory(&self) -> bool {
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
        let lease = clock::deadline_or(deadline_ms, now, self.fallback_lease);
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
                        catalog::keel::CONCURRENCY_ACQUIRED.increment(1);
                        catalog::keel::CONCURRENCY_WAIT_MS
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
                    catalog::keel::CONCURRENCY_REJECTED.increment(1);
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

/// A slot taken (and the local permit that came with it).
pub(crate) struct Held {
    pub(super) id: String,
    pub(super) key: String,
    /// Held for as long as the slot: dropping it lets the next local invocation try.
    pub(super) permit: Option<OwnedSemaphorePermit>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ready::now_or_never;

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
