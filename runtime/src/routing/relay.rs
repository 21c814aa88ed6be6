//! The client of the Keel extension's relay: one kept-alive HTTP/1 connection to
//! `KEEL_EXTENSION_ADDR`, for the envelopes the function hands over (`POST /envelopes`) and for
//! the notice that an invocation is over (`POST /invocations/done`).
//!
//! The connection is opened on first use and again whenever it is found closed; a request that
//! fails on a connection used before (the extension may have closed it while the environment
//! was frozen) is sent once more on a new one. Requests take turns on the connection: each is one
//! short exchange on the same host.
//!
//! The client counts the envelopes the relay took (`202`) per request id, for the notice; the
//! notice takes the count. At most [`HANDED_ENTRIES`] requests are counted at once (the oldest
//! is dropped first), so that a stack composed without [`Keel::run`](crate::Keel::run), which
//! never sends notices, cannot grow it.
//!
//! The protocol: `docs/architecture.md`, "Relay protocol".

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::client::conn::http1::SendRequest;
use hyper::StatusCode;
use hyper_util::rt::TokioIo;
use lru::LruCache;

/// Requests whose handed envelopes are counted at once; past it the oldest count is dropped.
pub const HANDED_ENTRIES: usize = 1024;

/// How long a notice may take (the relay is on the same host and answers at once).
const NOTICE_TIMEOUT: Duration = Duration::from_millis(100);

/// After the relay could not be reached, how long notices are skipped (the extension then
/// reads the end of the invocation from telemetry).
const QUIET_AFTER_FAILURE: Duration = Duration::from_secs(1);

/// The path of the end-of-invocation notice.
pub const NOTICE_PATH: &str = "/invocations/done";

/// The path envelopes are handed over to.
pub const ENVELOPES_PATH: &str = "/envelopes";

/// Why an exchange with the relay failed.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// Nothing could be connected to (no extension listening, say).
    #[error("the relay at {addr} could not be reached: {source}")]
    Connect {
        /// Where.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The HTTP exchange failed.
    #[error("the exchange with the relay failed: {0}")]
    Http(#[from] hyper::Error),
    /// The request could not be built.
    #[error("the request could not be built: {0}")]
    Request(#[from] hyper::http::Error),
    /// The relay answered something else than expected.
    #[error("the relay answered {0}")]
    Status(StatusCode),
    /// No answer in time.
    #[error("the relay did not answer within {0:?}")]
    TimedOut(Duration),
    /// Notices are skipped for a while after the relay could not be reached.
    #[error("the relay was unreachable a moment ago; the notice is skipped")]
    Skipped,
}

/// A client of the extension's relay; clones share the connection and the counts.
#[derive(Clone)]
pub struct RelayClient {
    inner: Arc<Inner>,
}

struct Inner {
    addr: SocketAddr,
    /// The kept-alive connection, if one is open; requests take turns on it.
    connection: tokio::sync::Mutex<Option<SendRequest<Full<Bytes>>>>,
    /// Envelopes the relay took, per request id.
    handed: Mutex<LruCache<String, u32>>,
    /// Until when notices are skipped, after the relay could not be reached.
    quiet_until: Mutex<Option<Instant>>,
    /// Connections opened so far.
    connections: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for RelayClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayClient")
            .field("addr", &self.inner.addr)
            .finish_non_exhaustive()
    }
}

impl RelayClient {
    /// A client of the relay listening on `addr`; it connects on first use.
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            inner: Arc::new(Inner {
                addr,
                connection: tokio::sync::Mutex::new(None),
                handed: Mutex::new(LruCache::new(
                    NonZeroUsize::new(HANDED_ENTRIES).unwrap_or(NonZeroUsize::MIN),
                )),
                quiet_until: Mutex::new(None),
                connections: std::sync::atomic::AtomicU64::new(0),
            }),
        }
    }

    /// Where the relay listens.
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// Connections opened so far (one, as long as the relay keeps it open).
    pub fn connections_opened(&self) -> u64 {
        self.inner.connections.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Hands an envelope (its JSON `body`) of request `request_id` to the relay: `POST
    /// /envelopes`, taken on `202 Accepted`, and then counted for the request's notice.
    /// Anything else (nobody listening, a full queue, no answer within `timeout`) is an error,
    /// and the caller publishes itself.
    pub async fn hand_over(
        &self,
        request_id: &str,
        body: String,
        timeout: Duration,
    ) -> Result<(), RelayError> {
        let exchange = self.exchange(ENVELOPES_PATH, Bytes::from(body));
        tokio::time::timeout(timeout, exchange)
            .await
            .unwrap_or(Err(RelayError::TimedOut(timeout)))?;
        let mut handed = self.counts();
        match handed.get_mut(request_id) {
            Some(count) => *count = count.saturating_add(1),
            None => {
                handed.push(request_id.to_owned(), 1);
            }
        }
        Ok(())
    }

    /// Envelopes of `request_id` the relay has taken and no notice has reported yet.
    pub fn handed(&self, request_id: &str) -> u32 {
        self.counts().peek(request_id).copied().unwrap_or(0)
    }

    /// Requests whose handed envelopes are counted (at most [`HANDED_ENTRIES`]).
    pub fn counted_requests(&self) -> usize {
        self.counts().len()
    }

    /// Tells the extension that invocation `request_id` is over (its response was posted):
    /// `POST /invocations/done` with `{"request_id": …, "handed": N}`, the envelopes the relay
    /// took for it (the count is taken: a second notice says 0). Returns what was reported.
    ///
    /// For a moment after the relay could not be reached, notices are skipped
    /// ([`RelayError::Skipped`]); the extension then reads the end of the invocation from
    /// telemetry.
    pub async fn invocation_done(&self, request_id: &str) -> Result<u32, RelayError> {
        let handed = self.counts().pop(request_id).unwrap_or(0);
        if self.quiet_until().is_some_and(|until| Instant::now() < until) {
            return Err(RelayError::Skipped);
        }
        let body = serde_json::json!({"request_id": request_id, "handed": handed}).to_string();
        let exchange = self.exchange(NOTICE_PATH, Bytes::from(body));
        tokio::time::timeout(NOTICE_TIMEOUT, exchange)
            .await
            .unwrap_or(Err(RelayError::TimedOut(NOTICE_TIMEOUT)))?;
        Ok(handed)
    }

    /// `POST path` with `body` on the kept-alive connection (a new one if it is closed, and once
    /// more on a new one if a used connection fails); `Ok` on a 2xx answer (`202` for an
    /// envelope, `204` for a notice).
    async fn exchange(&self, path: &str, body: Bytes) -> Result<(), RelayError> {
        let mut connection = self.inner.connection.lock().await;
        // Whether the connection was used before this request (the relay may have closed it).
        let mut reused = true;
        loop {
            if connection.as_ref().is_none_or(SendRequest::is_closed) {
                *connection = Some(self.connect().await?);
                reused = false;
            }
            let Some(sender) = connection.as_mut() else {
                continue;
            };
            let request = hyper::Request::post(path)
                .header(hyper::header::HOST, self.inner.addr.to_string())
                .header(hyper::header::CONTENT_TYPE, "application/json")
                .body(Full::new(body.clone()))?;
            let sent = match sender.ready().await {
                Ok(()) => sender.send_request(request).await,
                Err(error) => Err(error),
            };
            match sent {
                Ok(response) => {
                    let status = response.status();
                    // The answer's body is short (empty, or a reason): read to keep the
                    // connection usable.
                    let _ = http_body_util::BodyExt::collect(response.into_body()).await;
                    return match status.is_success() {
                        true => Ok(()),
                        false => Err(RelayError::Status(status)),
                    };
                }
                // A kept-alive connection the relay closed meanwhile: once more on a new one.
                Err(_) if reused => {
                    *connection = None;
                    reused = false;
                }
                Err(error) => {
                    *connection = None;
                    return Err(error.into());
                }
            }
        }
    }

    /// A new connection to the relay, driven by its own task.
    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, RelayError> {
        let addr = self.inner.addr;
        let connected = async {
            let stream = tokio::net::TcpStream::connect(addr).await?;
            let _ = stream.set_nodelay(true);
            Ok(stream)
        };
        let stream = connected.await.map_err(|source| {
            *self.quiet_until() = Some(Instant::now() + QUIET_AFTER_FAILURE);
            RelayError::Connect { addr, source }
        })?;
        *self.quiet_until() = None;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(error = %error, "the connection to the extension's relay ended");
            }
        });
        self.inner
            .connections
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(sender)
    }

    fn counts(&self) -> MutexGuard<'_, LruCache<String, u32>> {
        self.inner.handed.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn quiet_until(&self) -> MutexGuard<'_, Option<Instant>> {
        self.inner
            .quiet_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}
