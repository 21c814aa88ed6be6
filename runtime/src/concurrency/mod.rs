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

#[cfg(feature = "dynamodb")]
mod dynamodb;
mod error;
mod future;
mod guard;
mod layer;
mod slots;

#[cfg(feature = "dynamodb")]
pub use dynamodb::DynamoDbSlots;
pub use error::ConcurrencyError;
pub use future::ConcurrencyGuardFuture;
pub use guard::{ConcurrencyGuard, GuardKey, KeyFn, MAX_KEY_BYTES};
pub use layer::{ConcurrencyGuardLayer, ConcurrencyGuardService};
pub use slots::{MemorySlots, SlotError, SlotStore, SLOT_TABLE};
