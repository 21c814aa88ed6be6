//! [`ConcurrencyGuardLayer`] and its service: a guard around the handler.

use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use lambda_runtime::LambdaEvent;
use serde::de::DeserializeOwned;
use tower::{Layer, Service};

use super::future::{ConcurrencyGuardFuture, GuardState, Start};
use super::ConcurrencyGuard;
use crate::handler::{InvocationError, RawEvent};

/// Tower layer that guards the service it wraps; see the [module docs](super).
#[derive(Clone, Debug)]
pub struct ConcurrencyGuardLayer {
    guard: Option<Arc<ConcurrencyGuard>>,
}

impl ConcurrencyGuardLayer {
    /// Invocations are guarded as `guard` says.
    pub fn new(guard: ConcurrencyGuard) -> Self {
        Self {
            guard: Some(Arc::new(guard)),
        }
    }

    /// A layer that guards nothing.
    pub fn disabled() -> Self {
        Self { guard: None }
    }
}

impl<S> Layer<S> for ConcurrencyGuardLayer {
    type Service = ConcurrencyGuardService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ConcurrencyGuardService {
            inner,
            guard: self.guard.clone(),
        }
    }
}

/// The service of [`ConcurrencyGuardLayer`].
#[derive(Clone, Debug)]
pub struct ConcurrencyGuardService<S> {
    inner: S,
    guard: Option<Arc<ConcurrencyGuard>>,
}

impl<S, R> Service<LambdaEvent<RawEvent>> for ConcurrencyGuardService<S>
where
    S: Service<LambdaEvent<RawEvent>, Response = R, Error = InvocationError> + Clone + Send + 'static,
    S::Future: Send + 'static,
    R: DeserializeOwned + Send + 'static,
{
    type Response = R;
    type Error = InvocationError;
    type Future = ConcurrencyGuardFuture<S, S::Future, R>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, event: LambdaEvent<RawEvent>) -> Self::Future {
        let Some(guard) = self.guard.clone() else {
            return ConcurrencyGuardFuture {
                state: GuardState::Handler {
                    handler: self.inner.call(event),
                    slot: None,
                },
            };
        };
        // The ready service handles this request; a fresh clone takes its place (tower's rule).
        let ready = self.inner.clone();
        let service = std::mem::replace(&mut self.inner, ready);
        // The slot is taken when the future is first polled: inside the invocation's span and
        // metrics scope, which the outer layers enter as they poll.
        ConcurrencyGuardFuture {
            state: GuardState::Start {
                start: Some(Start {
                    guard,
                    service,
                    event,
                }),
            },
        }
    }
}
