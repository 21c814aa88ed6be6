//! When the extension publishes what the function relayed: before Lambda may freeze the
//! environment after each invocation ([`FlushMode::End`]), or whenever the environment runs
//! ([`FlushMode::Lazy`]).
//!
//! Lambda freezes the environment once the runtime and every extension have asked for their
//! next event, and a frozen extension publishes nothing. With [`FlushMode::End`], the extension
//! asks only when telemetry says the runtime has finished the invocation
//! (`platform.runtimeDone`) and the relay has published what it was handed, within the
//! invocation's deadline ([`EndOfInvocation::wait`]): an envelope goes out within its own
//! invocation, after the response, for a few milliseconds of post-runtime (billed) duration.
//! With [`FlushMode::Lazy`], nothing is added: relayed envelopes go out when the environment next
//! runs (its next invocation), and at SHUTDOWN at the latest.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Instant;

use crate::relay::Queue;
use crate::telemetry::Telemetry;

/// When relayed envelopes are published (`KEEL_EXTENSION_FLUSH`: `end` or `lazy`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FlushMode {
    /// After each invocation, before Lambda may freeze the environment (the default).
    #[default]
    End,
    /// Whenever the environment runs; at SHUTDOWN at the latest.
    Lazy,
}

/// `KEEL_EXTENSION_FLUSH` is neither `end` nor `lazy`.
#[derive(Debug, thiserror::Error)]
#[error("KEEL_EXTENSION_FLUSH={0:?}: expected `end` or `lazy`")]
pub struct UnknownFlushMode(String);

impl FromStr for FlushMode {
    type Err = UnknownFlushMode;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value.trim() {
            "end" => Ok(Self::End),
            "lazy" => Ok(Self::Lazy),
            other => Err(UnknownFlushMode(other.to_owned())),
        }
    }
}

/// What tells an invocation is over: its `platform.runtimeDone`, then an empty relay.
#[derive(Debug)]
pub struct EndOfInvocation {
    telemetry: Arc<Telemetry>,
    queue: Queue,
}

/// How an invocation's wait ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ended {
    /// Telemetry said the runtime had finished the invocation.
    pub runtime_done: bool,
    /// The relay had published everything it was handed.
    pub settled: bool,
}

impl EndOfInvocation {
    /// Reads the end of invocations from `telemetry` (which must be subscribed) and `queue`.
    pub fn new(telemetry: Arc<Telemetry>, queue: Queue) -> Self {
        Self { telemetry, queue }
    }

    /// Waits until the runtime has finished `request_id` and the relay has published what it
    /// holds, or until `deadline`.
    pub async fn wait(&self, request_id: &str, deadline: Instant) -> Ended {
        let runtime_done = self.telemetry.runtime_done(request_id, deadline).await;
        let settled = runtime_done && self.queue.settled(deadline).await;
        Ended {
            runtime_done,
            settled,
        }
    }
}
