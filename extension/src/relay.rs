//! The relay: the function hands routed errors over (`POST /envelopes`) and gets an answer at
//! once; the extension publishes them off the response path, and drains what is left on
//! SHUTDOWN.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::{Method, StatusCode};
use keel_runtime::routing::{Envelope, ErrorRouting};
use tokio::sync::{mpsc, oneshot, watch};

use crate::http::Answer;

/// Envelopes waiting to be published, by default.
pub const DEFAULT_CAPACITY: usize = 1024;

/// Time kept back from the SHUTDOWN deadline: envelopes not published by then are logged.
const SHUTDOWN_MARGIN: Duration = Duration::from_millis(300);

/// The sending side of the queue: the relay's listener and the telemetry processor put
/// envelopes here.
#[derive(Clone, Debug)]
pub struct Queue {
    sender: mpsc::Sender<Envelope>,
    /// Envelopes queued and not yet published.
    outstanding: Arc<watch::Sender<usize>>,
}

/// Why an envelope was not queued.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refused {
    /// The queue is full: the sender publishes it itself.
    #[error("the relay's queue is full ({0} envelopes); publish directly")]
    Full(usize),
    /// The publisher has stopped (the extension is shutting down).
    #[error("the relay is shutting down; publish directly")]
    Closed,
}

impl Queue {
    /// Queues `envelope` for publishing, without waiting.
    pub fn push(&self, envelope: Envelope) -> Result<(), Refused> {
        // Counted before it is queued, so that the publisher never finishes it uncounted.
        self.outstanding.send_modify(|n| *n += 1);
        self.sender.try_send(envelope).map_err(|error| {
            self.outstanding.send_modify(|n| *n = n.saturating_sub(1));
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
        let settled = tokio::time::timeout_at(deadline.into(), outstanding.wait_for(|n| *n == 0)).await;
        matches!(settled, Ok(Ok(_)))
    }

    /// The relay's answer to `POST /envelopes`: `202` queued, `503` full (the runtime then
    /// publishes itself), `400` not an envelope, `404` any other request.
    pub fn answer(&self, method: Method, path: &str, body: &Bytes) -> Answer {
        if method != Method::POST || path != "/envelopes" {
            return (StatusCode::NOT_FOUND, "POST /envelopes only".into());
        }
        let envelope: Envelope = match serde_json::from_slice(body) {
            Ok(envelope) => envelope,
            Err(error) => {
                return (
                    StatusCode::BAD_REQUEST,
                    format!("not a routed error envelope: {error}"),
                )
            }
        };
        match self.push(envelope) {
            Ok(()) => (StatusCode::ACCEPTED, String::new()),
            Err(refused) => (StatusCode::SERVICE_UNAVAILABLE, refused.to_string()),
        }
    }
}

/// The publishing side: one task publishes queued envelopes through `routing`, one at a time.
pub struct Publisher {
    receiver: mpsc::Receiver<Envelope>,
    routing: Arc<ErrorRouting>,
    shutdown: oneshot::Receiver<Shutdown>,
    outstanding: Arc<watch::Sender<usize>>,
}

/// A request to drain the queue before `deadline`, answered when done.
pub struct Shutdown {
    deadline: Instant,
    done: oneshot::Sender<Drained>,
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
pub struct ShutdownHandle {
    sender: Option<oneshot::Sender<Shutdown>>,
}

impl ShutdownHandle {
    /// Drains the queue: publishes while time remains before `deadline` (less a margin), writes
    /// the rest whole to the log. Returns what was done.
    pub async fn drain(&mut self, deadline: Instant) -> Drained {
        let Some(sender) = self.sender.take() else {
            return Drained::default();
        };
        let (done, answer) = oneshot::channel();
        if sender.send(Shutdown { deadline, done }).is_err() {
            return Drained::default();
        }
        answer.await.unwrap_or_default()
    }
}

/// A queue of `capacity` envelopes, the publisher that empties it, and the handle that drains
/// it on SHUTDOWN.
pub fn queue(capacity: usize, routing: Arc<ErrorRouting>) -> (Queue, Publisher, ShutdownHandle) {
    let (sender, receiver) = mpsc::channel(capacity.max(1));
    let (shutdown_sender, shutdown) = oneshot::channel();
    let outstanding = Arc::new(watch::Sender::new(0));
    (
        Queue {
            sender,
            outstanding: outstanding.clone(),
        },
        Publisher {
            receiver,
            routing,
            shutdown,
            outstanding,
        },
        ShutdownHandle {
            sender: Some(shutdown_sender),
        },
    )
}

impl Publisher {
    /// Publishes envelopes as they come, until asked to drain; then drains and stops.
    pub async fn run(mut self) {
        let mut can_drain = true;
        loop {
            tokio::select! {
                biased;
                shutdown = &mut self.shutdown, if can_drain => match shutdown {
                    Ok(shutdown) => {
                        let drained = self.drain(shutdown.deadline).await;
                        let _ = shutdown.done.send(drained);
                        return;
                    }
                    // The handle was dropped: no drain will be asked for; publishing goes on.
                    Err(_) => can_drain = false,
                },
                envelope = self.receiver.recv() => match envelope {
                    // Off the response path: no invocation deadline applies (0 = unknown).
                    Some(envelope) => {
                        self.routing.publish(&envelope, 0).await;
                        self.finished();
                    }
                    None => return,
                },
            }
        }
    }

    /// One envelope is off the queue for good.
    fn finished(&self) {
        self.outstanding.send_modify(|n| *n = n.saturating_sub(1));
    }

    async fn drain(&mut self, deadline: Instant) -> Drained {
        self.receiver.close();
        let mut drained = Drained::default();
        let stop = deadline.checked_sub(SHUTDOWN_MARGIN).unwrap_or(deadline);
        while let Ok(envelope) = self.receiver.try_recv() {
            let left = stop.saturating_duration_since(Instant::now());
            let published = !left.is_zero()
                && tokio::time::timeout(left, self.routing.publish(&envelope, 0))
                    .await
                    .is_ok();
            if published {
                drained.published += 1;
            } else {
                self.routing.write_to_log(&envelope);
                drained.logged += 1;
            }
            self.finished();
        }
        tracing::info!(
            published = drained.published,
            logged = drained.logged,
            "the relay's queue is drained"
        );
        drained
    }
}
