//! [`MemoryStore`]: idempotency records in process memory, with DynamoDB's semantics.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use async_trait::async_trait;

use super::store::{Acquire, IdempotencyStore, Now, Record, Status, StoreError};

/// Records in a map guarded by a mutex: the embedded default when no table is configured, and
/// the store of fast tests. Every operation is one "round trip", counted by
/// [`MemoryStore::round_trips`]. Records live only as long as the process (one execution
/// environment), so duplicates arriving at other environments are not detected: configure a
/// DynamoDB table (`KEEL_IDEMPOTENCY_TABLE`) in production.
///
/// Expired records are purged whenever the map has doubled since the last purge, so memory stays
/// proportional to the live records.
#[derive(Debug, Default)]
pub struct MemoryStore {
    records: Mutex<HashMap<String, Record>>,
    round_trips: AtomicU64,
    purge_at: AtomicU64,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many operations the store has served.
    pub fn round_trips(&self) -> u64 {
        self.round_trips.load(Ordering::Relaxed)
    }

    fn records(&self) -> std::sync::MutexGuard<'_, HashMap<String, Record>> {
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        self.records.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait]
impl IdempotencyStore for MemoryStore {
    async fn acquire(&self, record: &Record, now: Now) -> Result<Acquire, StoreError> {
        let mut records = self.records();
        if let Some(existing) = records.get(&record.id).filter(|existing| existing.is_live(now)) {
            return Ok(Acquire::Exists(existing.clone()));
        }
        records.insert(record.id.clone(), record.clone());
        let len = records.len() as u64;
        if len >= self.purge_at.load(Ordering::Relaxed).max(1024) {
            records.retain(|_, record| record.is_live(now));
            self.purge_at.store(records.len() as u64 * 2, Ordering::Relaxed);
        }
        Ok(Acquire::Acquired)
    }

    async fn complete(
        &self,
        id: &str,
        owner: &str,
        data: Option<&str>,
        expiration: u64,
    ) -> Result<(), StoreError> {
        let mut records = self.records();
        match records.get_mut(id) {
            Some(record) if record.owner == owner => {
                record.status = Status::Completed;
                record.data = data.map(str::to_owned);
                record.expiration = expiration;
                Ok(())
            }
            _ => Err(StoreError::NotOwner),
        }
    }

    async fn release(&self, id: &str, owner: &str) -> Result<(), StoreError> {
        let mut records = self.records();
        match records.get(id) {
            Some(record) if record.owner == owner => {
                records.remove(id);
                Ok(())
            }
            _ => Err(StoreError::NotOwner),
        }
    }

    async fn get(&self, id: &str) -> Result<Option<Record>, StoreError> {
        Ok(self.records().get(id).cloned())
    }
}
