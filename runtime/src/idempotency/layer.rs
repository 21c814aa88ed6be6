//! [`IdempotencyLayer`]: the tower layer that runs each request at most once per key.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use lambda_runtime::LambdaEvent;
use pin_project_lite::pin_project;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};
use tower::{Layer, Service};

use super::protocol::{Lease, Outcome};
use super::{Begin, Idempotency, IdempotencyError, MissingKey, ReleaseOnDrop};
use crate::handler::{InvocationError, RawEvent, RawResponse};
use crate::ready::now_or_never;

/// The header a replayed HTTP response carries.
pub const REPLAYED_HEADER: &str = "Idempotent-Replayed";

/// Tower layer around a service of `LambdaEvent<RawEvent>`; see the [module docs](super).
///
/// The response type must serialize (to be stored) and deserialize (to be replayed).
#[derive(Clone, Debug)]
pub struct IdempotencyLayer {
    idempotency: Option<Arc<Idempotency>>,
}

impl IdempotencyLayer {
    /// Requests run at most once per key, as `idempotency` says.
    pub fn new(idempotency: Idempotency) -> Self {
        Self {
            idempotency: Some(Arc::new(idempotency)),
        }
    }

    /// A layer that lets every request through (idempotency not configured).
    pub fn disabled() -> Self {
        Self { idempotency: None }
    }
}

impl<S> Layer<S> for IdempotencyLayer {
    type Service = IdempotencyService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        IdempotencyService {
            inner,
            idempotency: self.idempotency.clone(),
        }
    }
}

/// The service of [`IdempotencyLayer`].
#[derive(Clone, Debug)]
pub struct IdempotencyService<S> {
    inner: S,
    idempotency: Option<Arc<Idempotency>>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, R> Service<LambdaEvent<RawEvent>> for IdempotencyService<S>
where
    S: Service<LambdaEvent<RawEvent>, Response = R, Error = InvocationError> + Clone + Send + 'static,
    S::Future: Send + 'static,
    R: Serialize + DeserializeOwned + Send + 'static,
{
    type Response = R;
    type Error = InvocationError;
    type Future = IdempotencyFuture<S, S::Future, R>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, event: LambdaEvent<RawEvent>) -> Self::Future {
        let Some(idempotency) = self.idempotency.clone() else {
            return IdempotencyFuture {
                state: State::Handler {
                    handler: self.inner.call(event),
                },
            };
        };
        // The ready service handles this request; a fresh clone takes its place (tower's rule).
        let ready = self.inner.clone();
        let service = std::mem::replace(&mut self.inner, ready);
        // The work starts when the future is first polled: inside the invocation's span and
        // metrics scope, which the outer layers enter as they poll.
        IdempotencyFuture {
            state: State::Start {
                start: Some(Start {
                    idempotency,
                    service,
                    event,
                }),
            },
        }
    }
}

/// What a request needs before its key is known.
struct Start<S> {
    idempotency: Arc<Idempotency>,
    service: S,
    event: LambdaEvent<RawEvent>,
}

pin_project! {
    /// The future of [`IdempotencyService`].
    pub struct IdempotencyFuture<S, F, R> {
        #[pin]
        state: State<S, F, R>,
    }
}

pin_project! {
    #[project = StateProjection]
    enum State<S, F, R> {
        // Not polled yet.
        Start { start: Option<Start<S>> },
        // The handler runs without idempotency (none configured, or no key and requests pass
        // through), or on an in-memory record that `lease` completes when it answers.
        Handler { #[pin] handler: F },
        Leased { #[pin] handler: F, idempotency: Arc<Idempotency>, lease: ReleaseOnDrop },
        // Records in a remote store (or a wait for an in-progress duplicate): the whole exchange
        // as one future.
        Remote { future: BoxFuture<Result<R, InvocationError>> },
        Done,
    }
}

impl<S, R> Future for IdempotencyFuture<S, S::Future, R>
where
    S: Service<LambdaEvent<RawEvent>, Response = R, Error = InvocationError> + Send + 'static,
    S::Future: Send + 'static,
    R: Serialize + DeserializeOwned + Send + 'static,
{
    type Output = Result<R, InvocationError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        loop {
            let next = match state.as_mut().project() {
                StateProjection::Start { start } => match start.take() {
                    Some(start) => match begin(start) {
                        Ok(next) => next,
                        Err(answer) => {
                            state.set(State::Done);
                            return Poll::Ready(answer);
                        }
                    },
                    None => State::Done,
                },
                StateProjection::Handler { handler } => {
                    let result = std::task::ready!(handler.poll(cx));
                    state.set(State::Done);
                    return Poll::Ready(result);
                }
                StateProjection::Leased {
                    handler,
                    idempotency,
                    lease,
                } => {
                    let result = std::task::ready!(handler.poll(cx));
                    if let Some(lease) = lease.take() {
                        let done = match &result {
                            Ok(response) => {
                                let outcome = outcome(idempotency, &lease, response);
                                now_or_never(idempotency.finish(lease, outcome))
                            }
                            Err(_) => now_or_never(idempotency.release(lease)),
                        };
                        // The in-memory store answers at once; nothing else is leased here.
                        debug_assert!(done.is_some(), "an in-memory record is completed at once");
                    }
                    state.set(State::Done);
                    return Poll::Ready(result);
                }
                StateProjection::Remote { future } => {
                    let result = std::task::ready!(future.as_mut().poll(cx));
                    state.set(State::Done);
                    return Poll::Ready(result);
                }
                StateProjection::Done => panic!("IdempotencyFuture polled after completion"),
            };
            state.set(next);
        }
    }
}

/// Reads the request's key and claims it: the state to go on in, or the answer at once.
fn begin<S, R>(start: Start<S>) -> Result<State<S, S::Future, R>, Result<R, InvocationError>>
where
    S: Service<LambdaEvent<RawEvent>, Response = R, Error = InvocationError> + Send + 'static,
    S::Future: Send + 'static,
    R: Serialize + DeserializeOwned + Send + 'static,
{
    let Start {
        idempotency,
        mut service,
        event,
    } = start;
    let key = match idempotency.request_key(&event.payload) {
        Ok(key) => key,
        Err(reason) => {
            if idempotency.missing_key != MissingKey::Reject {
                if idempotency.missing_key == MissingKey::PassThrough {
                    tracing::warn!(reason = %reason, "no idempotency key: running without idempotency");
                }
                return Ok(State::Handler {
                    handler: service.call(event),
                });
            }
            let answer = crate::event::http_answer(event.payload.get());
            return Err(refuse(IdempotencyError::MissingKey(reason), answer));
        }
    };
    // In-memory records are claimed at once; a remote store (or a wait for an in-progress
    // duplicate, which gave up here without side effects) continues as a future.
    let begun = if idempotency.is_in_memory() {
        now_or_never(idempotency.begin(&key, &event.context.request_id, event.context.deadline))
    } else {
        None
    };
    match begun {
        Some(begun) => answer(begun, &key, &idempotency, || service.call(event)),
        None => Ok(State::Remote {
            future: Box::pin(remote(idempotency, service, Box::new(event), key)),
        }),
    }
}

/// What a claim decided: replay, refuse, or run the handler (holding the lease).
fn answer<S, F, R>(
    begun: Result<Begin, IdempotencyError>,
    key: &super::key::RequestKey,
    idempotency: &Arc<Idempotency>,
    run: impl FnOnce() -> F,
) -> Result<State<S, F, R>, Result<R, InvocationError>>
where
    R: DeserializeOwned,
{
    match begun {
        Ok(Begin::Replay(data)) => Err(replay(&data, key.http)),
        Ok(Begin::Unguarded) => Ok(State::Handler { handler: run() }),
        Ok(Begin::Run(lease)) => Ok(State::Leased {
            handler: run(),
            lease: ReleaseOnDrop::new(idempotency, lease),
            idempotency: idempotency.clone(),
        }),
        Err(error) => Err(refuse(error, key.http_answer())),
    }
}

/// The whole exchange with a remote store: claim (waiting if configured), run, complete.
async fn remote<S, R>(
    idempotency: Arc<Idempotency>,
    mut service: S,
    // Boxed: the future holds it only until the handler takes it, so it stays small.
    event: Box<LambdaEvent<RawEvent>>,
    key: super::key::RequestKey,
) -> Result<R, InvocationError>
where
    S: Service<LambdaEvent<RawEvent>, Response = R, Error = InvocationError>,
    R: Serialize + DeserializeOwned + 'static,
{
    let begun = idempotency
        .begin(&key, &event.context.request_id, event.context.deadline)
        .await;
    match begun {
        Ok(Begin::Replay(data)) => replay(&data, key.http),
        Ok(Begin::Unguarded) => service.call(*event).await,
        Ok(Begin::Run(lease)) => {
            let mut guard = ReleaseOnDrop::new(&idempotency, lease);
            let result = service.call(*event).await;
            let Some(lease) = guard.take() else {
                return result;
            };
            match &result {
                Ok(response) => {
                    let outcome = outcome(&idempotency, &lease, response);
                    idempotency.finish(lease, outcome).await;
                }
                Err(_) => idempotency.release(lease).await,
            }
            result
        }
        Err(error) => refuse(error, key.http_answer()),
    }
}

/// What becomes of `response` (see [`Idempotency::outcome`]): a response Keel's layers carry is
/// its JSON already (see [`JsonResponse`](crate::handler::JsonResponse)), stored as it is.
fn outcome<R: Serialize + 'static>(idempotency: &Idempotency, lease: &Lease, response: &R) -> Outcome {
    match (response as &dyn std::any::Any).downcast_ref::<RawResponse>() {
        Some(raw) => idempotency.outcome_of_json(lease, raw.get()),
        None => idempotency.outcome(lease, response),
    }
}

/// A stored response, replayed (an HTTP response marked `Idempotent-Replayed: true`).
fn replay<R: DeserializeOwned>(data: &str, http: bool) -> Result<R, InvocationError> {
    let marked;
    let data = if http {
        marked = mark_replayed(data);
        marked.as_str()
    } else {
        data
    };
    serde_json::from_str(data)
        .map_err(|e| InvocationError::from(IdempotencyError::CorruptResponse(e.to_string())))
}

impl From<IdempotencyError> for InvocationError {
    fn from(error: IdempotencyError) -> Self {
        InvocationError::new(error.error_type(), error)
    }
}

/// The answer to a refused request: an HTTP response for HTTP events (`http_answer` is
/// `Some(cookies)`, see `event::http_answer`) when the response type takes one — always behind
/// `Keel`, whose layers carry JSON text — otherwise the error.
fn refuse<R: DeserializeOwned>(
    error: IdempotencyError,
    http_answer: Option<bool>,
) -> Result<R, InvocationError> {
    if let Some(cookies) = http_answer {
        let (status, code) = error.http_status();
        let retry_after = match &error {
            IdempotencyError::InProgress { retry_after } => Some(*retry_after),
            _ => None,
        };
        if let Some(response) =
            crate::http::refusal(error.error_type(), status, code, &error, retry_after, cookies)
        {
            return Ok(response);
        }
    }
    Err(error.into())
}

/// Adds `Idempotent-Replayed: true` to a stored HTTP response: written into its text, which is
/// otherwise replayed as stored (its `headers` object, or a new one).
fn mark_replayed(data: &str) -> String {
    const MEMBER: &str = "\"idempotent-replayed\":\"true\"";
    let offset = |part: &str| part.as_ptr() as usize - data.as_ptr() as usize;
    let Some(members) = crate::json::reader::members(data) else {
        return data.to_owned();
    };
    if crate::json::reader::get(&members, "statusCode").is_none() {
        return data.to_owned();
    }
    let (at, insert): (usize, &[&str]) = match crate::json::reader::get(&members, "headers") {
        Some(headers) if headers.starts_with('{') => {
            let names = crate::json::reader::members(headers).unwrap_or_default();
            if names
                .iter()
                .any(|(name, _)| name.eq_ignore_ascii_case(REPLAYED_HEADER))
            {
                return mark_replayed_in_tree(data);
            }
            match names.is_empty() {
                true => (offset(headers) + 1, &[MEMBER]),
                false => (offset(headers) + 1, &[MEMBER, ","]),
            }
        }
        Some(_) => return mark_replayed_in_tree(data),
        // Right after the opening brace: `statusCode` follows, so a comma separates them.
        None => match data.find('{') {
            Some(brace) => (brace + 1, &["\"headers\":{", MEMBER, "},"]),
            None => return data.to_owned(),
        },
    };
    let mut marked = String::with_capacity(data.len() + 64);
    marked.push_str(&data[..at]);
    insert.iter().for_each(|part| marked.push_str(part));
    marked.push_str(&data[at..]);
    marked
}

/// [`mark_replayed`] through a parsed tree, for the shapes it does not write into directly.
fn mark_replayed_in_tree(data: &str) -> String {
    let Ok(mut response) = serde_json::from_str::<Value>(data) else {
        return data.to_owned();
    };
    let Some(object) = response.as_object_mut() else {
        return data.to_owned();
    };
    let headers = object.entry("headers").or_insert_with(|| json!({}));
    if !headers.is_object() {
        *headers = json!({});
    }
    if let Some(headers) = headers.as_object_mut() {
        headers.retain(|name, _| !name.eq_ignore_ascii_case(REPLAYED_HEADER));
        headers.insert(REPLAYED_HEADER.to_ascii_lowercase(), "true".into());
    }
    response.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replayed_http_response_is_marked_and_otherwise_as_stored() {
        let marked = |data: &str| serde_json::from_str::<Value>(&mark_replayed(data)).expect("still JSON");
        let cases = [
            (
                r#"{"statusCode":201,"headers":{"content-type":"application/json"},"body":"{\"id\":1}"}"#,
                json!({"statusCode": 201, "headers": {"content-type": "application/json", "idempotent-replayed": "true"}, "body": "{\"id\":1}"}),
            ),
            (
                r#" { "statusCode" : 200 , "headers" : { } } "#,
                json!({"statusCode": 200, "headers": {"idempotent-replayed": "true"}}),
            ),
            (
                r#"{"statusCode":200,"body":"x"}"#,
                json!({"statusCode": 200, "headers": {"idempotent-replayed": "true"}, "body": "x"}),
            ),
            (
                r#"{"statusCode":200,"headers":null}"#,
                json!({"statusCode": 200, "headers": {"idempotent-replayed": "true"}}),
            ),
            (
                r#"{"statusCode":200,"headers":{"Idempotent-Replayed":"false"}}"#,
                json!({"statusCode": 200, "headers": {"idempotent-replayed": "true"}}),
            ),
        ];
        for (stored, expected) in cases {
            assert_eq!(marked(stored), expected, "{stored}");
        }
        // Not an HTTP response: replayed as stored.
        for stored in [r#"{"seats":2}"#, "7", r#""text""#] {
            assert_eq!(mark_replayed(stored), stored);
        }
        // Only the headers change: the body's text is kept byte for byte.
        let stored = r#"{"statusCode":201,"body":"{ \"b\" : 1,\"a\":2 }"}"#;
        assert!(mark_replayed(stored).ends_with(r#","statusCode":201,"body":"{ \"b\" : 1,\"a\":2 }"}"#));
    }
}
