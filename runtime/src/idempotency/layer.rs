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

use super::{Begin, Idempotency, IdempotencyError, MissingKey};
use crate::handler::{InvocationError, RawEvent};

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
    type Future = IdempotencyFuture<S::Future, R>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, event: LambdaEvent<RawEvent>) -> Self::Future {
        let Some(idempotency) = self.idempotency.clone() else {
            return IdempotencyFuture {
                direct: Some(self.inner.call(event)),
                guarded: None,
            };
        };
        // The ready service handles this request; a fresh clone takes its place (tower's rule).
        let ready = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, ready);
        IdempotencyFuture {
            direct: None,
            guarded: Some(Box::pin(guarded(idempotency, inner, event))),
        }
    }
}

async fn guarded<S, R>(
    idempotency: Arc<Idempotency>,
    mut inner: S,
    event: LambdaEvent<RawEvent>,
) -> Result<R, InvocationError>
where
    S: Service<LambdaEvent<RawEvent>, Response = R, Error = InvocationError>,
    R: Serialize + DeserializeOwned,
{
    let key = match idempotency.request_key(&event.payload) {
        Ok(key) => key,
        Err(reason) => {
            if idempotency.missing_key == MissingKey::PassThrough {
                tracing::warn!(reason = %reason, "no idempotency key: running without idempotency");
                return inner.call(event).await;
            }
            let http = super::key::is_http(&event.payload);
            return refuse(IdempotencyError::MissingKey(reason), http);
        }
    };
    let begun = idempotency
        .begin(&key, &event.context.request_id, event.context.deadline)
        .await;
    match begun {
        Ok(Begin::Replay(data)) => {
            let replayed;
            let data = if key.http {
                replayed = mark_replayed(&data);
                replayed.as_str()
            } else {
                &data
            };
            serde_json::from_str(data)
                .map_err(|e| InvocationError::from(IdempotencyError::CorruptResponse(e.to_string())))
        }
        Ok(Begin::Unguarded) => inner.call(event).await,
        Ok(Begin::Run(lease)) => {
            let mut guard = ReleaseOnDrop {
                idempotency: idempotency.clone(),
                lease: Some(lease),
            };
            let result = inner.call(event).await;
            let lease = guard.lease.take().expect("the lease is taken only here");
            match result {
                Ok(response) => {
                    match serde_json::to_string(&response) {
                        Ok(data) => idempotency.complete(lease, &data).await,
                        Err(error) => {
                            tracing::warn!(error = %error, "the response cannot be stored: it does not serialize");
                            idempotency.release(lease).await;
                        }
                    }
                    Ok(response)
                }
                Err(error) => {
                    idempotency.release(lease).await;
                    Err(error)
                }
            }
        }
        Err(error) => refuse(error, key.http),
    }
}

/// Releases the key when the handler is dropped unfinished — it panicked (the runtime catches
/// the panic and goes on) or was cancelled — so a retry need not wait for the deadline. A crash
/// of the whole process runs no code: then the record holds the key until the deadline.
struct ReleaseOnDrop {
    idempotency: Arc<Idempotency>,
    lease: Option<super::Lease>,
}

impl Drop for ReleaseOnDrop {
    fn drop(&mut self) {
        let Some(lease) = self.lease.take() else { return };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                let idempotency = self.idempotency.clone();
                runtime.spawn(async move { idempotency.release(lease).await });
            }
            Err(_) => {
                tracing::warn!("no runtime to release the idempotency record; it expires at the deadline")
            }
        }
    }
}

impl From<IdempotencyError> for InvocationError {
    fn from(error: IdempotencyError) -> Self {
        InvocationError::new(error.error_type(), error)
    }
}

/// The answer to a refused request: an HTTP response for HTTP events (when the handler's
/// response type is an HTTP response), otherwise the error.
fn refuse<R: DeserializeOwned>(error: IdempotencyError, http: bool) -> Result<R, InvocationError> {
    if http {
        let (status, code) = error.http_status();
        let mut headers = serde_json::Map::new();
        headers.insert("content-type".into(), "application/json".into());
        if let IdempotencyError::InProgress { retry_after } = &error {
            headers.insert(
                "retry-after".into(),
                retry_after.as_secs().max(1).to_string().into(),
            );
        }
        // The members every HTTP response type of aws_lambda_events accepts (API Gateway REST
        // and HTTP APIs, ALB, function URLs): unknown ones are ignored by the others.
        let response = json!({
            "statusCode": status,
            "headers": headers,
            "multiValueHeaders": {},
            "body": json!({"code": code, "message": error.to_string()}).to_string(),
            "isBase64Encoded": false,
            "cookies": [],
        });
        if let Ok(response) = serde_json::from_value(response) {
            return Ok(response);
        }
    }
    Err(error.into())
}

/// Adds `Idempotent-Replayed: true` to a stored HTTP response.
fn mark_replayed(data: &str) -> String {
    let Ok(mut response) = serde_json::from_str::<Value>(data) else {
        return data.to_owned();
    };
    let Some(object) = response.as_object_mut().filter(|o| o.contains_key("statusCode")) else {
        return data.to_owned();
    };
    let headers = object.entry("headers").or_insert_with(|| json!({}));
    if let Some(headers) = headers.as_object_mut() {
        headers.insert(REPLAYED_HEADER.to_ascii_lowercase(), "true".into());
    }
    response.to_string()
}

pin_project! {
    /// The future of [`IdempotencyService`].
    pub struct IdempotencyFuture<F, R> {
        #[pin]
        direct: Option<F>,
        guarded: Option<BoxFuture<Result<R, InvocationError>>>,
    }
}

impl<F, R> Future for IdempotencyFuture<F, R>
where
    F: Future<Output = Result<R, InvocationError>>,
{
    type Output = Result<R, InvocationError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Some(direct) = this.direct.as_pin_mut() {
            return direct.poll(cx);
        }
        match this.guarded.as_mut() {
            Some(guarded) => guarded.as_mut().poll(cx),
            None => panic!("IdempotencyFuture polled after completion"),
        }
    }
}
