//! [`ConcurrencyGuardFuture`]: take a slot, run the handler, free the slot — whatever the
//! handler does (answers, fails, panics or is cancelled).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use lambda_runtime::LambdaEvent;
use pin_project_lite::pin_project;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use tower::Service;

use super::guard::Held;
use super::{ConcurrencyError, ConcurrencyGuard};
use crate::classify::Classify;
use crate::handler::{InvocationError, RawEvent};
use crate::ready::now_or_never;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// What an invocation needs before it has a slot.
pub(super) struct Start<S> {
    pub(super) guard: Arc<ConcurrencyGuard>,
    pub(super) service: S,
    pub(super) event: LambdaEvent<RawEvent>,
}

/// Finds the invocation's key and takes a slot: the state to go on in, or the answer at once.
fn start<S, R>(start: Start<S>) -> Result<GuardState<S, S::Future, R>, Result<R, InvocationError>>
where
    S: Service<LambdaEvent<RawEvent>, Response = R, Error = InvocationError> + Send + 'static,
    S::Future: Send + 'static,
    R: DeserializeOwned + Send + 'static,
{
    let Start {
        guard,
        mut service,
        event,
    } = start;
    let Some(key) = guard.key_of(&event.payload) else {
        // A key function that answers `None` chose to leave the event unguarded; a pointer that
        // finds nothing may be a mistake worth seeing.
        match guard.key {
            super::GuardKey::Custom(_) => {
                tracing::debug!("the event has no concurrency key: running unguarded")
            }
            _ => tracing::warn!("the event has no concurrency key: running unguarded"),
        }
        return Ok(GuardState::Handler {
            handler: service.call(event),
            slot: None,
        });
    };
    // In memory, without waiting, a slot is taken or refused at once.
    if guard.is_in_memory() && guard.wait_budget.is_none() {
        let holder = event.context.request_id.clone();
        if let Some(acquired) = now_or_never(guard.acquire(&key, &holder, event.context.deadline)) {
            return match acquired {
                Ok(held) => Ok(GuardState::Handler {
                    handler: service.call(event),
                    slot: Some(SlotGuard {
                        held: Some((guard, held, holder)),
                    }),
                }),
                Err(error) => Err(refuse(error, &event.payload)),
            };
        }
    }
    Ok(GuardState::Remote {
        future: Box::pin(guarded(guard, service, Box::new(event), key)),
    })
}

/// The whole exchange with a remote slot store (or a wait): take, run, free.
async fn guarded<S, R>(
    guard: Arc<ConcurrencyGuard>,
    mut inner: S,
    event: Box<LambdaEvent<RawEvent>>,
    key: String,
) -> Result<R, InvocationError>
where
    S: Service<LambdaEvent<RawEvent>, Response = R, Error = InvocationError>,
    R: DeserializeOwned,
{
    let holder = event.context.request_id.clone();
    let held = match guard.acquire(&key, &holder, event.context.deadline).await {
        Ok(held) => held,
        Err(ConcurrencyError::Store(error)) if guard.fail_open => {
            tracing::warn!(error = %error, "the concurrency slot store failed; running unguarded");
            return inner.call(*event).await;
        }
        Err(error) => return refuse(error, &event.payload),
    };
    let mut slot = SlotGuard {
        held: Some((guard, held, holder)),
    };
    let result = inner.call(*event).await;
    if let Some((guard, held, holder)) = slot.held.take() {
        guard.release(held, &holder).await;
    }
    result
}

/// The answer to a refused invocation: HTTP 429 with `Retry-After` (or 503 for a failed store)
/// for HTTP events, otherwise the error.
fn refuse<R: DeserializeOwned>(error: ConcurrencyError, event: &RawValue) -> Result<R, InvocationError> {
    let (status, code) = match &error {
        ConcurrencyError::Rejected { .. } => (429, "ConcurrencyLimitReached"),
        ConcurrencyError::Store(_) => (503, "ConcurrencyStoreUnavailable"),
    };
    if let Some(cookies) = crate::event::http_answer(event.get()) {
        let retry_after = error.retry_after();
        if let Some(response) =
            crate::http::refusal(error.error_type(), status, code, &error, retry_after, cookies)
        {
            return Ok(response);
        }
    }
    Err(error.into())
}

/// Frees the slot when dropped (the handler answered, failed, panicked or was cancelled).
pub(super) struct SlotGuard {
    held: Option<(Arc<ConcurrencyGuard>, Held, String)>,
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        let Some((guard, held, holder)) = self.held.take() else {
            return;
        };
        if guard.is_in_memory() {
            let _ = now_or_never(guard.release(held, &holder));
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move { guard.release(held, &holder).await });
            }
            Err(_) => {
                tracing::warn!("no runtime to free the concurrency slot; it is free when its lease ends")
            }
        }
    }
}

pin_project! {
    /// The future of [`ConcurrencyGuardService`].
    pub struct ConcurrencyGuardFuture<S, F, R> {
        #[pin]
        pub(super) state: GuardState<S, F, R>,
    }
}

pin_project! {
    #[project = GuardProjection]
    pub(super) enum GuardState<S, F, R> {
        // Not polled yet.
        Start { start: Option<Start<S>> },
        // The handler runs, holding its slot (in memory) or unguarded.
        Handler { #[pin] handler: F, slot: Option<SlotGuard> },
        // Slots in a remote store (or a wait): the whole exchange.
        Remote { future: BoxFuture<Result<R, InvocationError>> },
        Done,
    }
}

impl<S, R> Future for ConcurrencyGuardFuture<S, S::Future, R>
where
    S: Service<LambdaEvent<RawEvent>, Response = R, Error = InvocationError> + Send + 'static,
    S::Future: Send + 'static,
    R: DeserializeOwned + Send + 'static,
{
    type Output = Result<R, InvocationError>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        loop {
            let next = match state.as_mut().project() {
                GuardProjection::Start { start: pending } => match pending.take().map(start) {
                    Some(Ok(next)) => next,
                    Some(Err(answer)) => {
                        state.set(GuardState::Done);
                        return Poll::Ready(answer);
                    }
                    None => GuardState::Done,
                },
                GuardProjection::Handler { handler, slot } => {
                    let result = std::task::ready!(handler.poll(cx));
                    // Freed now, before the answer goes back.
                    slot.take();
                    state.set(GuardState::Done);
                    return Poll::Ready(result);
                }
                GuardProjection::Remote { future } => {
                    let result = std::task::ready!(future.as_mut().poll(cx));
                    state.set(GuardState::Done);
                    return Poll::Ready(result);
                }
                GuardProjection::Done => panic!("ConcurrencyGuardFuture polled after completion"),
            };
            state.set(next);
        }
    }
}
