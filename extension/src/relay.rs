//! The relay: the function hands routed errors over (`POST /envelopes`) and gets an answer at
//! once; the extension publishes them off the response path, and drains what is left on
//! SHUTDOWN.
//!
//! The queue is bounded twice, by envelopes and by bytes ([`Limits`]): past either it refuses
//! (`503`), and the function publishes the envelope itself. Once SHUTDOWN asks for a drain,
//! every publish, the one under way included, is raced against the drain's deadline: an
//! envelope that cannot be published in time is written whole to the log.
//!
//! The protocol, its answers and its limits: `docs/architecture.md`, "Relay protocol".

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use hyper::{Method, StatusCode};
use keel_runtime::clock::SHUTDOWN_MARGIN;
use keel_runtime::routing::{Envelope, ErrorRouting, Sink, MAX_MESSAGE_BYTES};
use tokio::sync::{mpsc, oneshot, watch};

use crate::http::Answer;

/// Envelopes waiting to be published, by default (`KEEL_RELAY_CAPACITY`).
pub const DEFAULT_CAPACITY: usize = 1024;

/// Bytes of envelopes waiting to be published, by default (`KEEL_RELAY_MAX_BYTES`): 16 MiB.
pub const DEFAULT_MAX_BYTES: usize = 16 * 1024 * 1024;

/// The largest body the relay reads: one envelope, which the runtime keeps under SNS's limit
/// ([`MAX_MESSAGE_BYTES`]), with 16 KiB to spare. A larger one is refused (`413`) and the
/// function publishes it itself.
pub const MAX_ENVELOPE_BYTES: usize = MAX_MESSAGE_BYTES + 16 * 1024;

/// What the relay's listener takes at once: an envelope per request, four connections (each
/// hand-over is one short request; others wait a moment in the backlog).
pub const LISTENER: crate::http::Caps = crate::http::Caps {
    body_bytes: MAX_ENVELOPE_BYTES,
    connections: 4,
};

/// How much the queue holds before it refuses envelopes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Envelopes (`KEEL_RELAY_CAPACITY`).
    pub envelopes: usize,
    /// Bytes of envelopes, as JSON (`KEEL_RELAY_MAX_BYTES`).
    pub bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            envelopes: DEFAULT_CAPACITY,
            bytes: DEFAULT_MAX_BYTES,
        }
    }
}

impl Limits {
    /// `envelopes` envelopes, and the default byte budget.
    pub fn envelopes(envelopes: usize) -> Self {
        Self {
            envelopes,
            ..Self::default()
        }
    }
}

/// What the queue holds and has not finished with.
#[derive(Clone, Copy, Debug, Default)]
struct Outstanding {
    envelopes: usize,
    bytes: usize,
}

/// An envelope in the queue, as its JSON text: what the byte budget counts is what the queue
/// holds (a parsed envelope's event can take many times its text's size). It is read again
/// when it is published, one at a time.
struct Queued(Bytes);

/// The sending side of the queue: the relay's listener and the telemetry processor put
/// envelopes here.
#[derive(Clone, Debug)]
pub struct Queue {
    sender: mpsc::Sender<Queued>,
    max_bytes: usize,
    /// Queued and not yet published.
    outstanding: Arc<watch::Sender<Outstanding>>,
}

/// Why an envelope was not queued.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refused {
    /// The queue holds as many envelopes as it may: the sender publishes it itself.
    #[error("the relay's queue is full ({0} envelopes); publish directly")]
    Full(usize),
    /// The envelope would take the queue past its byte budget: the sender publishes it itself.
    #[error("the relay's queue is full ({0} bytes); publish directly")]
    OverBudget(usize),
    /// The publisher has stopped (the extension is shutting down).
    #[error("the relay is shutting down; publish directly")]
    Closed,
}

impl Queue {
    /// Queues `envelope` for publishing, without waiting.
    pub fn push(&self, envelope: &Envelope) -> Result<(), Refused> {
        // An envelope always serializes (its fields are strings, numbers and JSON values).
        let text = serde_json::to_vec(envelope).unwrap_or_default();
        self.enqueue(Bytes::from(text))
    }

    /// Queues an envelope's JSON text.
    fn enqueue(&self, text: Bytes) -> Result<(), Refused> {
        let bytes = text.len();
        // Counted before it is queued, so that the publisher never finishes it uncounted.
        let mut within = false;
        self.outstanding.send_if_modified(|outstanding| {
            within = outstanding.bytes.saturating_add(bytes) <= self.max_bytes;
            if within {
                outstanding.envelopes += 1;
                outstanding.bytes += bytes;
            }
            within
        });
        if !within {
            return Err(Refused::OverBudget(self.max_bytes));
        }
        self.sender.try_send(Queued(text)).map_err(|error| {
            self.outstanding
                .send_modify(|outstanding| outstanding.release(bytes));
            match error {
                mpsc::error::TrySendError::Full(_) => Refused::Full(self.sender.max_capacity()),
                mpsc::error::TrySendError::Closed(_) => Refused::Closed,
            }
        })
    }

    /// Waits until every queued envelope has been published, or `deadline`; whether the queue
    /// was settled (empty, nothing being published).
    ///
    /// The extension waits for this before it lets Lambda freeze the environment, so that what
    /// the function handed over goes out within its invocation.
    pub async fn settled(&self, deadline: Instant) -> bool {
        let mut outstanding = self.outstanding.subscribe();
        let settled = tokio::time::timeout_at(
            deadline.into(),
            outstanding.wait_for(|outstanding| outstanding.envelopes == 0),
        )
        .await;
        matches!(settled, Ok(Ok(_)))
    }

    /// The relay's answer to `POST /envelopes`: `202` queued, `503` full (the runtime then
    /// publishes itself), `400` not an envelope, `404` any other request. (Its listener
    /// answers `413` to a body over [`MAX_ENVELOPE_BYTES`].)
    pub fn answer(&self, method: Method, path: &str, body: &Bytes) -> Answer {
        if method != Method::POST || path != "/envelopes" {
            return (StatusCode::NOT_FOUND, "POST /envelopes only".into());
        }
        // Read here to refuse what is not an envelope; queued as the text it came as.
        match serde_json::from_slice::<Envelope>(body) {
            Ok(_) => {}
            Err(error) => {
                return (
                    StatusCode::BAD_REQUEST,
                    format!("not a routed error envelope: {error}"),
                )
            }
        };
        match self.enqueue(body.clone()) {
            Ok(()) => (StatusCode::ACCEPTED, String::new()),
            Err(refused) => (StatusCode::SERVICE_UNAVAILABLE, refused.to_string()),
        }
    }
}

impl Outstanding {
    /// One envelope of `bytes` is off the queue for good.
    fn release(&mut self, bytes: usize) {
        self.envelopes = self.envelopes.saturating_sub(1);
        self.bytes = self.bytes.saturating_sub(bytes);
    }
}

/// The publishing side: one task publishes queued envelopes through `routing`, one at a time.
#[derive(Debug)]
pub struct Publisher {
    receiver: mpsc::Receiver<Queued>,
    routing: Arc<ErrorRouting>,
    /// The SHUTDOWN deadline, once a drain is asked for.
    deadline: watch::Receiver<Option<Instant>>,
    /// Where the drain's outcome goes.
    drained: oneshot::Sender<Drained>,
    outstanding: Arc<watch::Sender<Outstanding>>,
}

/// What a drain did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Drained {
    /// Envelopes published (to the topic or the queue, or logged by the chain).
    pub published: usize,
    /// Envelopes written whole to the log for lack of time.
    pub logged: usize,
}

/// Asks the publisher to drain before its deadline. Dropping it leaves the publisher running,
/// with no drain to come.
#[derive(Debug)]
pub struct ShutdownHandle {
    deadline: watch::Sender<Option<Instant>>,
    drained: Option<oneshot::Receiver<Drained>>,
}

impl ShutdownHandle {
    /// Drains the queue: publishes while time remains before `deadline` (less a margin), the
    /// envelope being published included, and writes the rest whole to the log. Returns what
    /// was done (nothing, after the first drain).
    pub async fn drain(&mut self, deadline: Instant) -> Drained {
        let Some(drained) = self.drained.take() else {
            return Drained::default();
        };
        self.deadline.send_replace(Some(deadline));
        // The publisher stops at the deadline less a margin; waiting past the deadline itself
        // would only wait for Lambda to end the process.
        match tokio::time::timeout_at(deadline.into(), drained).await {
            Ok(drained) => drained.unwrap_or_default(),
            Err(_) => {
                tracing::warn!("the relay's queue was not drained by the SHUTDOWN deadline");
                Drained::default()
            }
        }
    }
}

/// A queue bounded by `limits`, the publisher that empties it, and the handle that drains it
/// on SHUTDOWN.
pub fn queue(limits: Limits, routing: Arc<ErrorRouting>) -> (Queue, Publisher, ShutdownHandle) {
    let (sender, receiver) = mpsc::channel(limits.envelopes.max(1));
    let (deadline_sender, deadline) = watch::channel(None);
    let (drained_sender, drained) = oneshot::channel();
    let outstanding = Arc::new(watch::Sender::new(Outstanding::default()));
    (
        Queue {
            sender,
            max_bytes: limits.bytes,
            outstanding: outstanding.clone(),
        },
        Publisher {
            receiver,
            routing,
            deadline,
            drained: drained_sender,
            outstanding,
        },
        ShutdownHandle {
            deadline: deadline_sender,
            drained: Some(drained),
        },
    )
}

impl Publisher {
    /// Publishes envelopes as they come, until asked to drain; then drains and stops.
    pub async fn run(mut self) {
        // Counted from the moment a drain is asked for.
        let mut drained = Drained::default();
        loop {
            let draining = self.deadline.borrow().is_some();
            let next = if draining {
                // Nothing more comes in; what is queued is still received.
                self.receiver.close();
                self.receiver.recv().await
            } else {
                tokio::select! {
                    biased;
                    _ = drain_asked(&mut self.deadline) => continue,
                    next = self.receiver.recv() => next,
                }
            };
            // Closed and empty, or every queue dropped.
            let Some(Queued(text)) = next else {
                break;
            };
            let bytes = text.len();
            let started = Instant::now();
            let published = match serde_json::from_slice::<Envelope>(&text) {
                Ok(envelope) => {
                    let published = self.publish(&envelope).await;
                    tracing::debug!(
                        envelope_id = %envelope.id,
                        request_id = %envelope.request_id,
                        published,
                        publish_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
                        "a relayed envelope is out of the queue"
                    );
                    published
                }
                // Checked when it was queued: cannot happen; said rather than dropped unseen.
                Err(error) => {
                    tracing::error!(error = %error, envelope = %String::from_utf8_lossy(&text), "keel.routed_error: an envelope in the relay's queue could not be read");
                    false
                }
            };
            self.outstanding
                .send_modify(|outstanding| outstanding.release(bytes));
            // The envelope under way when the drain was asked for counts in it.
            if self.deadline.borrow().is_some() {
                if published {
                    drained.published += 1;
                } else {
                    drained.logged += 1;
                }
            }
        }
        if self.deadline.borrow().is_some() {
            tracing::info!(
                published = drained.published,
                logged = drained.logged,
                "the relay's queue is drained"
            );
            let _ = self.drained.send(drained);
        }
    }

    /// Publishes `envelope` through the chain; once a drain is asked for, only until its
    /// deadline (less [`SHUTDOWN_MARGIN`]), after which it is written whole to the log. Whether
    /// it was published (to the topic or the queue: the chain's own last resort, the log,
    /// counts as logged).
    async fn publish(&self, envelope: &Envelope) -> bool {
        let mut deadline = self.deadline.clone();
        let time_up = async move {
            let deadline = drain_asked(&mut deadline).await;
            let stop = deadline.checked_sub(SHUTDOWN_MARGIN).unwrap_or(deadline);
            tokio::time::sleep_until(stop.into()).await;
        };
        tokio::select! {
            biased;
            () = time_up => {
                self.routing.write_to_log(envelope);
                false
            }
            // Off the response path: no invocation deadline applies (0 = unknown).
            sink = self.routing.publish(envelope, 0) => sink != Sink::Log,
        }
    }
}

/// The drain's deadline, once one is asked for; never, if the handle is dropped without asking.
async fn drain_asked(deadline: &mut watch::Receiver<Option<Instant>>) -> Instant {
    match deadline.wait_for(Option::is_some).await.map(|deadline| *deadline) {
        Ok(Some(deadline)) => deadline,
        _ => std::future::pending().await,
    }
}
