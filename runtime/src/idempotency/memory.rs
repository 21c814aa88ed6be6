//! [`MemoryStore`]: idempotency records in process memory, with DynamoDB's semantics.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;

use super::store::{Acquire, IdempotencyStore, Now, Record, Status, StoreError};

/// How many of the oldest writes each acquire checks for expiry: more than one, so that the
/// records leave at least as fast as they come.
const EXPIRY_CHECKS_PER_WRITE: usize = 2;

/// Records in a map guarded by a mutex: the embedded default when no table is configured, and
/// the store of fast tests. Every operation is one "round trip", counted by
/// [`MemoryStore::round_trips`]. Records live only as long as the process (one execution
/// environment), so duplicates arriving at other environments are not detected: configure a
/// DynamoDB table (`KEEL_IDEMPOTENCY_TABLE`) in production.
///
/// Expired records leave a few at a time on every acquire (oldest writes first), so memory stays
/// proportional to the live records without a pause to sweep the whole map.
#[derive(Debug, Default)]
pub struct MemoryStore {
    records: Mutex<Records>,
    round_trips: AtomicU64,
}

#[derive(Debug, Default)]
struct Records {
    by_id: HashMap<Arc<str>, Record, foldhash::fast::RandomState>,
    /// Ids in the order they were written, each with the time (epoch ms) from which its record
    /// may have expired.
    expiry: VecDeque<(u64, Arc<str>)>,
}

impl Records {
    /// Removes expired records among the oldest writes; a record found still live (completed
    /// since, so it lives longer) goes to the back of the queue with its new time.
    fn expire(&mut self, now: Now) {
        for _ in 0..EXPIRY_CHECKS_PER_WRITE {
            let Some((from, _)) = self.expiry.front() else {
                return;
            };
            if *from > now.millis() {
                return;
            }
            let Some((_, id)) = self.expiry.pop_front() else {
                return;
            };
            if let Entry::Occupied(entry) = self.by_id.entry(id) {
                if entry.get().is_live(now) {
                    let from = may_expire_from(entry.get());
                    self.expiry.push_back((from, entry.key().clone()));
                } else {
                    entry.remove();
                }
            }
        }
    }
}

/// The first epoch millisecond at which `record` may no longer be live (see [`Record::is_live`]).
fn may_expire_from(record: &Record) -> u64 {
    let completed_until = (record.expiration + 1) * 1000;
    match record.status {
        Status::InProgress => completed_until.min(record.in_progress_expiration + 1),
        Status::Completed => completed_until,
    }
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

    /// How many records the store holds (expired ones included until they are removed).
    pub fn len(&self) -> usize {
        self.records().by_id.len()
    }

    /// Whether the store holds no record.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn records(&self) -> MutexGuard<'_, Records> {
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        self.records.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The operations themselves: plain function calls, which `Idempotency` makes directly (no
/// future to box); the [`IdempotencyStore`] implementation wraps them.
impl MemoryStore {
    pub(crate) fn acquire_now(&self, record: &Record, now: Now) -> Result<Acquire, StoreError> {
        let mut records = self.records();
        match records.by_id.entry(record.id.clone()) {
            Entry::Occupied(existing) if existing.get().is_live(now) => {
                return Ok(Acquire::Exists(existing.get().clone()))
            }
            Entry::Occupied(mut expired) => {
                expired.insert(record.clone());
            }
            Entry::Vacant(free) => {
                free.insert(record.clone());
            }
        }
        records
            .expiry
            .push_back((may_expire_from(record), record.id.clone()));
        records.expire(now);
        Ok(Acquire::Acquired)
    }

    pub(crate) fn complete_now(
        &self,
        id: &str,
        owner: &str,
        data: Option<Arc<str>>,
        expiration: u64,
    ) -> Result<(), StoreError> {
        let mut records = self.records();
        match records.by_id.get_mut(id) {
            Some(record) if *record.owner == *owner => {
                record.status = Status::Completed;
                record.data = data;
                record.expiration = expiration;
                Ok(())
            }
            _ => Err(StoreError::NotOwner),
        }
    }

    pub(crate) fn release_now(&self, id: &str, owner: &str) -> Result<(), StoreError> {
        let mut records = self.records();
        match records.by_id.get(id) {
            Some(record) if *record.owner == *owner => {
                records.by_id.remove(id);
                Ok(())
            }
            _ => Err(StoreError::NotOwner),
        }
    }

    pub(crate) fn get_now(&self, id: &str) -> Option<Record> {
        self.records().by_id.get(id).cloned()
    }
}

#[async_trait]
impl IdempotencyStore for MemoryStore {
    async fn acquire(&self, record: &Record, now: Now) -> Result<Acquire, StoreError> {
        self.acquire_now(record, now)
    }

    async fn complete(
        &self,
        id: &str,
        owner: &str,
        data: Option<Arc<str>>,
        expiration: u64,
    ) -> Result<(), StoreError> {
        self.complete_now(id, owner, data, expiration)
    }

    async fn release(&self, id: &str, owner: &str) -> Result<(), StoreError> {
        self.release_now(id, owner)
    }

    async fn get(&self, id: &str) -> Result<Option<Record>, StoreError> {
        Ok(self.get_now(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, status: Status, expiration_s: u64, deadline_ms: u64) -> Record {
        Record {
            id: id.into(),
            status,
            expiration: expiration_s,
            in_progress_expiration: deadline_ms,
            owner: "owner".into(),
            validation: "v".into(),
            data: None,
        }
    }

    #[tokio::test]
    async fn expired_records_leave_as_new_ones_arrive() {
        let store = MemoryStore::new();
        let at = |ms| Now::from_millis(ms);
        // 100 records in progress until 1.5 s, kept for 10 s once completed.
        for i in 0..100 {
            let r = record(&format!("a{i}"), Status::InProgress, 10, 1_500);
            store.acquire(&r, at(1_000)).await.unwrap();
        }
        // Half of them complete (live until 10 s); the others are abandoned.
        for i in 0..50 {
            store.complete(&format!("a{i}"), "owner", None, 10).await.unwrap();
        }
        assert_eq!(store.len(), 100);
        // At 2 s, 100 new writes check the 100 oldest: the abandoned ones go, the completed stay.
        for i in 0..100 {
            let r = record(&format!("b{i}"), Status::InProgress, 20, 2_500);
            store.acquire(&r, at(2_000)).await.unwrap();
        }
        assert_eq!(store.len(), 150);
        // At 30 s everything has expired: writes keep removing until only live records stay.
        for i in 0..200 {
            let r = record(&format!("c{i}"), Status::Completed, 40, 0);
            store.acquire(&r, at(30_000)).await.unwrap();
        }
        assert_eq!(store.len(), 200, "only the 200 live records remain");
        assert!(store.get("a0").await.unwrap().is_none());
        assert!(store.get("c0").await.unwrap().is_some());
    }
}
