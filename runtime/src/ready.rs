//! Futures that finish at once: the in-memory stores' operations, run without boxing.

use std::future::Future;
use std::task::{Context, Poll, Waker};

/// Polls `future` once: its output if it is ready at once.
pub(crate) fn now_or_never<F: Future>(future: F) -> Option<F::Output> {
    let future = std::pin::pin!(future);
    match future.poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(output) => Some(output),
        Poll::Pending => None,
    }
}
