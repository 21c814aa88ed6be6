//! When the extension publishes what the function relayed, and when it lets Lambda freeze the
//! environment after an invocation: [`FlushMode::End`] (the default), [`FlushMode::RuntimeDone`]
//! or [`FlushMode::Lazy`].
//!
//! Lambda freezes the environment once the runtime and every extension have asked for their
//! next event, and a frozen extension publishes nothing. So the extension asks only once the
//! invocation is over and what it handed over is published ([`EndOfInvocation::wait`]), within
//! the invocation's deadline. Two signals say an invocation is over:
//!
//! - the function's notice (`POST /invocations/done` on the relay's listener, sent by Keel's
//!   runtime right after the response, with the number of envelopes it handed over for that
//!   request; see [`Notices`]): when it handed nothing, the wait ends at once; otherwise once the
//!   relay has published what it holds;
//! - telemetry's `platform.runtimeDone` for the request, then an empty relay: the fallback for
//!   functions that do not run Keel's runtime, and for timeouts and crashes (no notice comes).
//!   Telemetry comes in batches, 25 ms apart at best, so waiting for it keeps a successful
//!   invocation's environment running (and billed) up to 25 ms after its response.
//!
//! With [`FlushMode::End`] the first of the two ends the wait; with [`FlushMode::RuntimeDone`]
//! only telemetry does (the behaviour before notices, kept to compare). Either way an envelope
//! goes out within its own invocation, after the response. With [`FlushMode::Lazy`], nothing
//! waits: relayed envelopes go out when the environment next runs (its next invocation), and at
//! SHUTDOWN at the latest.

use std::collections::VecDeque;
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use bytes::Bytes;
use hyper::{Method, StatusCode};
use tokio::sync::watch;

use crate::http::Answer;
use crate::relay::Queue;
use crate::telemetry::Telemetry;

/// When relayed envelopes are published and the environment may be frozen
/// (`KEEL_EXTENSION_FLUSH`: `end`, `runtime-done` or `lazy`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FlushMode {
    /// After each invocation, before Lambda may freeze the environment, which it may as soon as
    /// the function's notice or telemetry's `platform.runtimeDone` says the invocation is over
    /// (and the relay has published what it was handed) (the default).
    #[default]
    End,
    /// As [`FlushMode::End`], but only telemetry's `platform.runtimeDone` says an invocation is
    /// over: notices are ignored.
    RuntimeDone,
    /// Whenever the environment runs; at SHUTDOWN at the latest.
    Lazy,
}

/// `KEEL_EXTENSION_FLUSH` is neither `end`, `runtime-done` nor `lazy`.
#[derive(Debug, thiserror::Error)]
#[error("KEEL_EXTENSION_FLUSH={0:?}: expected `end`, `runtime-done` or `lazy`")]
pub struct UnknownFlushMode(String);

impl FromStr for FlushMode {
    type Err = UnknownFlushMode;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value.trim() {
            "end" => Ok(Self::End),
            "runtime-done" => Ok(Self::RuntimeDone),
            "lazy" => Ok(Self::Lazy),
            other => Err(UnknownFlushMode(other.to_owned())),
        }
    }
}

/// The end-of-invocation notices the function has sent and no wait has taken yet.
pub const KEPT_NOTICES: usize = 64;

/// The longest request id a notice may carry (Lambda's are 36-character UUIDs).
pub const MAX_REQUEST_ID_BYTES: usize = 256;

/// The function's end-of-invocation notices, by request id: the last [`KEPT_NOTICES`] that no
/// wait has taken (a notice may come before the extension has read its INVOKE event).
#[derive(Debug)]
pub struct Notices {
    kept: Mutex<VecDeque<(String, u32)>>,
    /// Bumped after each notice: waiters look again.
    received: watch::Sender<u64>,
}

impl Default for Notices {
    fn default() -> Self {
        Self {
            kept: Mutex::new(VecDeque::with_capacity(KEPT_NOTICES)),
            received: watch::Sender::new(0),
        }
    }
}

/// The body of a notice (other fields are ignored: a later runtime may say more).
#[derive(serde::Deserialize)]
struct Notice {
    request_id: String,
    handed: u32,
}

impl Notices {
    /// No notices yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Keeps the notice that request `request_id` is over, having handed `handed` envelopes to
    /// the relay (the oldest kept notice is dropped past [`KEPT_NOTICES`]).
    pub fn record(&self, request_id: &str, handed: u32) {
        {
            let mut kept = self.lock();
            kept.retain(|(id, _)| id != request_id);
            if kept.len() >= KEPT_NOTICES {
                kept.pop_front();
            }
            kept.push_back((request_id.to_owned(), handed));
        }
        self.received.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Takes the notice of `request_id`, if it came: the envelopes it handed over.
    pub fn take(&self, request_id: &str) -> Option<u32> {
        let mut kept = self.lock();
        let at = kept.iter().position(|(id, _)| id == request_id)?;
        kept.remove(at).map(|(_, handed)| handed)
    }

    /// Notices kept (at most [`KEPT_NOTICES`]).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no notice is kept.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Waits for the notice of `request_id` (taking it), or `deadline`.
    pub async fn wait(&self, request_id: &str, deadline: Instant) -> Option<u32> {
        let mut received = self.received.subscribe();
        let mut handed = None;
        let came = tokio::time::timeout_at(
            deadline.into(),
            received.wait_for(|_| {
                handed = self.take(request_id);
                handed.is_some()
            }),
        )
        .await;
        match came {
            Ok(Ok(_)) => handed,
            _ => None,
        }
    }

    /// The answer to `POST /invocations/done` with `{"request_id": "…", "handed": N}`: `204`
    /// kept, `400` not a notice, `404` any other method. (The relay's listener answers `413` to
    /// a body over its cap.)
    pub fn answer(&self, method: Method, body: &Bytes) -> Answer {
        if method != Method::POST {
            return (StatusCode::NOT_FOUND, "POST /invocations/done only".into());
        }
        let notice = match serde_json::from_slice::<Notice>(body) {
            Ok(notice) => notice,
            Err(error) => {
                return (
                    StatusCode::BAD_REQUEST,
                    format!("not an end-of-invocation notice: {error}"),
                )
            }
        };
        if notice.request_id.is_empty() || notice.request_id.len() > MAX_REQUEST_ID_BYTES {
            return (
                StatusCode::BAD_REQUEST,
                format!("a request id has 1 to {MAX_REQUEST_ID_BYTES} bytes"),
            );
        }
        tracing::debug!(request_id = %notice.request_id, handed = notice.handed, "the function says the invocation is over");
        self.record(&notice.request_id, notice.handed);
        (StatusCode::NO_CONTENT, String::new())
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<(String, u32)>> {
        self.kept.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What tells an invocation is over: the function's notice, or its `platform.runtimeDone`; then
/// an empty relay (see the [module docs](self)).
#[derive(Debug)]
pub struct EndOfInvocation {
    telemetry: Arc<Telemetry>,
    queue: Queue,
    /// Read in [`FlushMode::End`]; ignored in [`FlushMode::RuntimeDone`].
    notices: Option<Arc<Notices>>,
}

/// How an invocation's wait ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ended {
    /// The function's notice said the invocation was over (and ended the wait).
    pub notice: bool,
    /// Telemetry said the runtime had finished the invocation (and ended the wait).
    pub runtime_done: bool,
    /// The relay had published everything it held, or, after a notice that handed nothing,
    /// there was nothing of the invocation's to publish.
    pub settled: bool,
}

impl EndOfInvocation {
    /// Reads the end of invocations from `telemetry` (which must be subscribed) and `queue`
    /// only, as [`FlushMode::RuntimeDone`] does.
    pub fn new(telemetry: Arc<Telemetry>, queue: Queue) -> Self {
        Self {
            telemetry,
            queue,
            notices: None,
        }
    }

    /// Reads the function's `notices` too: the first of a notice and telemetry ends a wait.
    #[must_use]
    pub fn notices(mut self, notices: Arc<Notices>) -> Self {
        self.notices = Some(notices);
        self
    }

    /// What waits in `mode`: telemetry and the notices with [`FlushMode::End`], telemetry alone
    /// with [`FlushMode::RuntimeDone`], nothing with [`FlushMode::Lazy`].
    pub fn for_mode(
        mode: FlushMode,
        telemetry: Arc<Telemetry>,
        queue: Queue,
        notices: Arc<Notices>,
    ) -> Option<Self> {
        match mode {
            FlushMode::End => Some(Self::new(telemetry, queue).notices(notices)),
            FlushMode::RuntimeDone => Some(Self::new(telemetry, queue)),
            FlushMode::Lazy => None,
        }
    }

    /// Waits until `request_id` is over and what it handed over is published, or until
    /// `deadline`: at the function's notice at once when it handed nothing, else once the relay
    /// has published what it holds; or at telemetry's `platform.runtimeDone`, once the relay has
    /// published what it holds (the first of the two, when notices are read).
    pub async fn wait(&self, request_id: &str, deadline: Instant) -> Ended {
        let Some(notices) = &self.notices else {
            return self.after_runtime_done(request_id, deadline).await;
        };
        tokio::select! {
            biased;
            handed = notices.wait(request_id, deadline) => match handed {
                Some(0) => Ended { notice: true, runtime_done: false, settled: true },
                Some(_) => Ended {
                    notice: true,
                    runtime_done: false,
                    settled: self.queue.settled(deadline).await,
                },
                None => Ended::default(),
            },
            ended = self.after_runtime_done(request_id, deadline) => {
                // A notice that came meanwhile has no use any more.
                let _ = notices.take(request_id);
                ended
            }
        }
    }

    /// Telemetry's `platform.runtimeDone` for `request_id`, then an empty relay.
    async fn after_runtime_done(&self, request_id: &str, deadline: Instant) -> Ended {
        let runtime_done = self.telemetry.runtime_done(request_id, deadline).await;
        let settled = runtime_done && self.queue.settled(deadline).await;
        Ended {
            notice: false,
            runtime_done,
            settled,
        }
    }
}
