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

mod config;
#[cfg(feature = "dynamodb")]
mod dynamodb;
mod error;
mod key;
mod layer;
mod memory;
mod protocol;
mod store;

pub use config::{
    Idempotency, MissingKey, StoreFailure, WhileInProgress, DEFAULT_FALLBACK_TIMEOUT, DEFAULT_TTL,
    MAX_STORED_RESPONSE_BYTES, MAX_TTL,
};
#[cfg(feature = "dynamodb")]
pub use dynamodb::DynamoDbStore;
pub use error::{IdempotencyError, OnceError};
pub use key::{KeySource, PayloadSource};
pub use layer::{IdempotencyFuture, IdempotencyLayer, IdempotencyService, REPLAYED_HEADER};
pub use memory::MemoryStore;
pub use store::TABLE;
pub use store::{Acquire, IdempotencyStore, Now, Record, Status, StoreError};

use protocol::{Begin, ReleaseOnDrop};

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
