//! Leased slots: the [`SlotStore`] contract and the in-memory store, [`MemorySlots`].
//!
//! The slot record and its conditions: `docs/architecture.md`, "Concurrency slot record".

use std::collections::HashMap;
use std::fmt;
use std::sync::{Mutex, PoisonError};

use async_trait::async_trait;

/// A failure of the slot store itself.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum SlotError {
    /// The store refused for capacity; retrying later may succeed.
    #[error("the concurrency slot store is throttling requests: {0}")]
    Throttled(String),
    /// The store could not be reached or answered with a server error.
    #[error("the concurrency slot store is unavailable: {0}")]
    Unavailable(String),
    /// Any other refusal (missing table, access denied, invalid request).
    #[error("the concurrency slot store refused the request: {0}")]
    Rejected(String),
}

/// Storage for leased slots with DynamoDB's conditional-write semantics: of concurrent takes of
/// one free slot, exactly one succeeds.
#[async_trait]
pub trait SlotStore: Send + Sync + fmt::Debug {
    /// Takes the slot `id` for `holder` until `lease_expires_ms` (epoch ms), if it is free, its
    /// lease ended before `now_ms`, or `holder` holds it already (a take retried after its
    /// answer was lost). Returns whether it was taken.
    async fn take(
        &self,
        id: &str,
        holder: &str,
        lease_expires_ms: u64,
        now_ms: u64,
    ) -> Result<bool, SlotError>;

    /// Frees the slot `id` if `holder` still holds it (never a slot another invocation took over).
    async fn free(&self, id: &str, holder: &str) -> Result<(), SlotError>;
}

/// A shared store is a store: several guards (or a test and the guard it checks) can use one.
#[async_trait]
impl<S: SlotStore + ?Sized> SlotStore for std::sync::Arc<S> {
    async fn take(
        &self,
        id: &str,
        holder: &str,
        lease_expires_ms: u64,
        now_ms: u64,
    ) -> Result<bool, SlotError> {
        (**self).take(id, holder, lease_expires_ms, now_ms).await
    }

    async fn free(&self, id: &str, holder: &str) -> Result<(), SlotError> {
        (**self).free(id, holder).await
    }
}

/// Slots in process memory: the embedded default, and the store of fast tests. They guard one
/// execution environment only; configure a DynamoDB table (`KEEL_CONCURRENCY_TABLE`) to guard
/// all of them.
#[derive(Debug, Default)]
pub struct MemorySlots {
    /// Slot id → (holder, lease end in epoch ms) of the slots taken; a freed slot is removed.
    slots: Mutex<HashMap<String, (String, u64), foldhash::fast::RandomState>>,
}

impl MemorySlots {
    /// No slot taken.
    pub fn new() -> Self {
        Self::default()
    }

    /// [`SlotStore::take`], answered at once.
    pub(crate) fn take_now(&self, id: &str, holder: &str, lease_expires_ms: u64, now_ms: u64) -> bool {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        match slots.get_mut(id) {
            Some((owner, expires)) if *expires < now_ms || owner == holder => {
                holder.clone_into(owner);
                *expires = lease_expires_ms;
                true
            }
            Some(_) => false,
            None => {
                slots.insert(id.to_owned(), (holder.to_owned(), lease_expires_ms));
                true
            }
        }
    }

    /// [`SlotStore::free`], answered at once.
    pub(crate) fn free_now(&self, id: &str, holder: &str) {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        if slots.get(id).is_some_and(|(owner, _)| owner == holder) {
            slots.remove(id);
        }
    }

    /// How many slots are taken (their leases may have ended).
    #[cfg(test)]
    pub(crate) fn taken(&self) -> usize {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner).len()
    }
}

#[async_trait]
impl SlotStore for MemorySlots {
    async fn take(
        &self,
        id: &str,
        holder: &str,
        lease_expires_ms: u64,
        now_ms: u64,
    ) -> Result<bool, SlotError> {
        Ok(self.take_now(id, holder, lease_expires_ms, now_ms))
    }

    async fn free(&self, id: &str, holder: &str) -> Result<(), SlotError> {
        self.free_now(id, holder);
        Ok(())
    }
}

/// The slot table's definition: string key `id` (`<key>#<n>`), TTL attribute `expiration`
/// (epoch seconds, a while after the lease, so that abandoned slots are cleaned up).
pub const SLOT_TABLE: crate::aws::TableDefinition = crate::aws::TableDefinition {
    key_attribute: "id",
    ttl_attribute: "expiration",
};
