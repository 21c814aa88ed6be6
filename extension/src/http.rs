//! A small HTTP/1 server for the extension's two listeners (telemetry and relay), each reading
//! bodies up to a cap.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::{Body, Incoming};
use hyper::header::{HeaderValue, CONNECTION};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// What a handler answers: a status and a text body.
pub type Answer = (StatusCode, String);

/// How long a client may take to send a request's headers, and then its body.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// What one listener takes at once: memory stays within `connections` × `body_bytes`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caps {
    /// The longest body read; a longer one is answered `413`.
    pub body_bytes: usize,
    /// Connections served at once; more wait to be accepted.
    pub connections: usize,
}

/// Serves every connection `listener` accepts with `handle` (method, path, body), until the
/// process ends. A connection that fails is logged; the listener keeps running.
///
/// At most `caps.connections` connections are served at once (the others wait in the
/// listener's backlog). A body longer than `caps.body_bytes` is never read whole: it is
/// answered `413 Payload Too Large` at once when its `Content-Length` says so, else as soon as
/// the bytes read pass the cap; the connection is then closed. Headers and body each have 10 s
/// to arrive (`408` for a slow body).
pub async fn serve<H, F>(listener: TcpListener, caps: Caps, handle: H)
where
    H: Fn(hyper::Method, String, Bytes) -> F + Send + Sync + 'static,
    F: Future<Output = Answer> + Send + 'static,
{
    let handle = Arc::new(handle);
    let max_body = caps.body_bytes;
    let connections = Arc::new(Semaphore::new(caps.connections.max(1)));
    loop {
        let Ok(permit) = connections.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(error = %error, "a connection could not be accepted");
                continue;
            }
        };
        let handle = handle.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<Incoming>| {
                let handle = handle.clone();
                async move {
                    let (parts, body) = request.into_parts();
                    let path = parts.uri.path().to_owned();
                    let read = tokio::time::timeout(READ_TIMEOUT, read_body(body, max_body)).await;
                    let (status, text) = match read {
                        Ok(Ok(body)) => handle(parts.method, path, body).await,
                        Ok(Err(refused)) => refused,
                        Err(_) => (
                            StatusCode::REQUEST_TIMEOUT,
                            "the body did not arrive in time".into(),
                        ),
                    };
                    let mut response = Response::new(Full::new(Bytes::from(text)));
                    *response.status_mut() = status;
                    if matches!(
                        status,
                        StatusCode::PAYLOAD_TOO_LARGE | StatusCode::REQUEST_TIMEOUT
                    ) {
                        // The rest of the body is not read: the connection ends here.
                        response
                            .headers_mut()
                            .insert(CONNECTION, HeaderValue::from_static("close"));
                    }
                    Ok::<_, Infallible>(response)
                }
            });
            let served = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(error) = served {
                tracing::debug!(peer = %peer, error = %error, "a connection ended with an error");
            }
            drop(permit);
        });
    }
}

/// The whole body, at most `max` bytes; otherwise the answer that refuses it.
async fn read_body(body: Incoming, max: usize) -> Result<Bytes, Answer> {
    let too_large = |announced: Option<u64>| {
        tracing::warn!(
            max_bytes = max,
            announced_bytes = announced,
            "a request body over the cap was refused"
        );
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("bodies are limited to {max} bytes"),
        )
    };
    // The announced length (Content-Length), checked before anything is read.
    let announced = body.size_hint().exact();
    if announced.is_some_and(|length| length > max as u64) {
        return Err(too_large(announced));
    }
    match Limited::new(body, max).collect().await {
        Ok(body) => Ok(body.to_bytes()),
        Err(error) if error.is::<LengthLimitError>() => Err(too_large(None)),
        Err(error) => Err((
            StatusCode::BAD_REQUEST,
            format!("the body could not be read: {error}"),
        )),
    }
}
