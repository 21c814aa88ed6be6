//! The end-of-invocation notice: a layer around the whole runtime service (what
//! `lambda_runtime::Runtime::layer` wraps: the handler, and the posting of its response to the
//! Runtime API) that tells the Keel extension each invocation is over, and how many envelopes
//! it handed to the relay.
//!
//! With the notice the extension need not wait for telemetry's `platform.runtimeDone` (delivered
//! in batches, 25 ms apart at best) before it lets Lambda freeze the environment: at once when
//! nothing was handed, else once its relay has published what it holds.
//!
//! The notice is sent from a task of its own once the response is posted, so that neither the
//! response nor the runtime's next `/next` call waits for it. A notice that fails (no extension
//! listening, say) is logged at DEBUG and is no error for the invocation: the extension then
//! falls back to telemetry.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use lambda_runtime::LambdaInvocation;
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use super::relay::RelayClient;
use crate::BoxError;

/// Tower layer, for `lambda_runtime::Runtime::layer`, that sends the extension's relay the
/// end-of-invocation notice after each response is posted; a pass-through without a relay.
#[derive(Clone, Debug, Default)]
pub struct InvocationOverLayer {
    relay: Option<RelayClient>,
}

impl InvocationOverLayer {
    /// Notices go to `relay` (the client error routing hands envelopes over with, whose counts
    /// the notices report).
    pub fn new(relay: RelayClient) -> Self {
        Self { relay: Some(relay) }
    }

    /// A layer that sends nothing (no relay configured).
    pub fn disabled() -> Self {
        Self { relay: None }
    }

    /// Whether notices are sent.
    pub fn is_enabled(&self) -> bool {
        self.relay.is_some()
    }
}

impl<S> Layer<S> for InvocationOverLayer {
    type Service = InvocationOverService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        InvocationOverService {
            inner,
            relay: self.relay.clone(),
        }
    }
}

/// The service of [`InvocationOverLayer`].
#[derive(Clone, Debug)]
pub struct InvocationOverService<S> {
    inner: S,
    relay: Option<RelayClient>,
}

impl<S> Service<LambdaInvocation> for InvocationOverService<S>
where
    S: Service<LambdaInvocation, Response = (), Error = BoxError>,
{
    type Response = ();
    type Error = BoxError;
    type Future = InvocationOverFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, invocation: LambdaInvocation) -> Self::Future {
        let notice = self
            .relay
            .clone()
            .map(|relay| (relay, invocation.context.request_id.clone()));
        InvocationOverFuture {
            inner: self.inner.call(invocation),
            notice,
        }
    }
}

pin_project! {
    /// The future of [`InvocationOverService`]: the inner future's, then the notice sent off.
    pub struct InvocationOverFuture<F> {
        #[pin]
        inner: F,
        notice: Option<(RelayClient, String)>,
    }
}

impl<F> Future for InvocationOverFuture<F>
where
    F: Future<Output = Result<(), BoxError>>,
{
    type Output = Result<(), BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = std::task::ready!(this.inner.poll(cx));
        if let Some((relay, request_id)) = this.notice.take() {
            // Off the runtime's loop: its next `/next` call goes out at once.
            tokio::spawn(async move {
                match relay.invocation_done(&request_id).await {
                    Ok(handed) => {
                        tracing::debug!(request_id = %request_id, handed, "the extension was told the invocation is over");
                    }
                    Err(error) => {
                        tracing::debug!(request_id = %request_id, error = %error, "the extension could not be told the invocation is over; it reads it from telemetry");
                    }
                }
            });
        }
        Poll::Ready(result)
    }
}
