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
/// the store of fast tests. Stored responses are written one after another in blocks of 1
/// MiB, not each in an allocation of its own: a store that keeps a response per request would
/// otherwise scatter them through the heap, between the allocations of the requests that
/// follow, and slow every allocation down. Every operation is one "round trip", counted by
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
    /// Each record (its `data` always `None`) and where its response is.
    by_id: HashMap<Arc<str>, (Record, Option<TextRef>), foldhash::fast::RandomState>,
    texts: Texts,
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
                if entry.get().0.is_live(now) {
                    let from = may_expire_from(&entry.get().0);
                    self.expiry.push_back((from, entry.key().clone()));
                } else {
                    let (_, text) = entry.remove();
                    self.texts.remove(text);
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
        let Records { by_id, texts, .. } = &mut *records;
        let store = |texts: &mut Texts| {
            let text = record.data.as_deref().map(|data| texts.insert(data));
            let without_data = Record {
                data: None,
                ..record.clone()
            };
            (without_data, text)
        };
        match by_id.entry(record.id.clone()) {
            Entry::Occupied(existing) if existing.get().0.is_live(now) => {
                return Ok(Acquire::Exists(texts.record(existing.get())))
            }
            Entry::Occupied(mut expired) => {
                let (_, text) = expired.insert(store(texts));
                texts.remove(text);
            }
            Entry::Vacant(free) => {
                free.insert(store(texts));
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
        let Records { by_id, texts, .. } = &mut *records;
        match by_id.get_mut(id) {
            Some((record, text)) if *record.owner == *owner => {
                record.status = Status::Completed;
                record.expiration = expiration;
                texts.remove(text.take());
                *text = data.map(|data| texts.insert(&data));
                Ok(())
            }
            _ => Err(StoreError::NotOwner),
        }
    }

    pub(crate) fn release_now(&self, id: &str, owner: &str) -> Result<(), StoreError> {
        let mut records = self.records();
        match records.by_id.get(id) {
            Some((record, _)) if *record.owner == *owner => {
                if let Some((_, text)) = records.by_id.remove(id) {
                    records.texts.remove(text);
                }
                Ok(())
            }
            _ => Err(StoreError::NotOwner),
        }
    }

    pub(crate) fn get_now(&self, id: &str) -> Option<Record> {
        let records = self.records();
        records.by_id.get(id).map(|stored| records.texts.record(stored))
    }
}

/// The bytes of the blocks stored responses are written in: several hundred responses each, and
/// large enough for the allocator to map each apart from its heap.
const TEXT_BLOCK_BYTES: usize = 1024 * 1024;

/// Stored responses, one after another in blocks of [`TEXT_BLOCK_BYTES`] (a longer one has a
/// block of its own). A block is freed once none of its responses is stored any longer; records
/// expire in about the order they were written, so blocks empty in turn (the block being written
/// is kept until the next one starts).
#[derive(Debug, Default)]
struct Texts {
    /// By block number; a freed block is empty until its number is used again.
    blocks: Vec<Block>,
    /// Numbers of freed blocks.
    free: Vec<usize>,
    /// The block being written.
    current: Option<usize>,
}

#[derive(Debug, Default)]
struct Block {
    text: String,
    /// How many stored responses it holds.
    live: usize,
}

/// Where a stored response is.
#[derive(Clone, Copy, Debug)]
struct TextRef {
    block: usize,
    start: usize,
    len: usize,
}

impl Texts {
    fn insert(&mut self, text: &str) -> TextRef {
        let fits = |block: &Block| block.text.capacity() - block.text.len() >= text.len();
        let number = match self.current {
            Some(current) if fits(&self.blocks[current]) => current,
            _ => {
                let number = self.new_block(text.len().max(TEXT_BLOCK_BYTES));
                if text.len() <= TEXT_BLOCK_BYTES {
                    // The block written before is freed once empty, as any other.
                    let previous = self.current.replace(number);
                    if let Some(previous) = previous.filter(|p| self.blocks[*p].live == 0) {
                        self.free_block(previous);
                    }
                }
                number
            }
        };
        let block = &mut self.blocks[number];
        let start = block.text.len();
        block.text.push_str(text);
        block.live += 1;
        TextRef {
            block: number,
            start,
            len: text.len(),
        }
    }

    fn new_block(&mut self, bytes: usize) -> usize {
        let block = Block {
            text: String::with_capacity(bytes),
            live: 0,
        };
        match self.free.pop() {
            Some(number) => {
                self.blocks[number] = block;
                number
            }
            None => {
                self.blocks.push(block);
                self.blocks.len() - 1
            }
        }
    }

    fn free_block(&mut self, number: usize) {
        self.blocks[number] = Block::default();
        self.free.push(number);
    }

    /// Forgets a stored response (none: nothing to do).
    fn remove(&mut self, text: Option<TextRef>) {
        let Some(text) = text else { return };
        let block = &mut self.blocks[text.block];
        block.live -= 1;
        if block.live == 0 && self.current != Some(text.block) {
            self.free_block(text.block);
        }
    }

    fn get(&self, text: TextRef) -> &str {
        &self.blocks[text.block].text[text.start..text.start + text.len]
    }

    /// A stored record, with its response.
    fn record(&self, (record, text): &(Record, Option<TextRef>)) -> Record {
        Record {
            data: text.map(|text| Arc::from(self.get(text))),
            ..record.clone()
        }
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
    async fn responses_are_kept_in_blocks_freed_once_empty() {
        let store = MemoryStore::new();
        let at = Now::from_millis(1_000);
        let response = |i: usize| {
            format!(
                "{{\"n\":{i:03},\"pad\":\"{}\"}}",
                "x".repeat(TEXT_BLOCK_BYTES / 10 - 24)
            )
        };
        for i in 0..200 {
            let id = format!("r{i}");
            store
                .acquire(&record(&id, Status::InProgress, 10, 5_000), at)
                .await
                .unwrap();
            store
                .complete(&id, "owner", Some(response(i).into()), 10)
                .await
                .unwrap();
        }
        let blocks = |store: &MemoryStore| {
            store
                .records()
                .texts
                .blocks
                .iter()
                .filter(|b| b.text.capacity() > 0)
                .count()
        };
        let per_block = TEXT_BLOCK_BYTES / response(0).len();
        assert_eq!(
            blocks(&store),
            200_usize.div_ceil(per_block),
            "{per_block} responses a block"
        );
        for i in [0, 57, 199] {
            let read = store.get(&format!("r{i}")).await.unwrap().unwrap();
            assert_eq!(read.data.as_deref(), Some(response(i).as_str()));
            assert_eq!(read.status, Status::Completed);
        }
        // A response too large for a block has one of its own; an absent one takes none.
        let large = "y".repeat(TEXT_BLOCK_BYTES + 1);
        store
            .acquire(&record("large", Status::InProgress, 10, 5_000), at)
            .await
            .unwrap();
        store
            .complete("large", "owner", Some(large.as_str().into()), 10)
            .await
            .unwrap();
        store
            .acquire(&record("none", Status::InProgress, 10, 5_000), at)
            .await
            .unwrap();
        store.complete("none", "owner", None, 10).await.unwrap();
        assert_eq!(
            store.get("large").await.unwrap().unwrap().data.as_deref(),
            Some(large.as_str())
        );
        assert_eq!(store.get("none").await.unwrap().unwrap().data, None);
        // Released records free their blocks (the one being written stays).
        for id in (0..200)
            .map(|i| format!("r{i}"))
            .chain(["large".to_owned(), "none".to_owned()])
        {
            store.release(&id, "owner").await.unwrap();
        }
        assert!(store.is_empty());
        assert_eq!(blocks(&store), 1, "only the block being written");
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
