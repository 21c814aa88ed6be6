//! A small HTTP/1 server for the extension's two listeners (telemetry and relay), each reading
//! bodies up to a cap.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::{Body, Incoming};
use hyper::header::{HeaderValue, CONNECTION};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// What a handler answers: a status and a text body.
pub type Answer = (StatusCode, String);

/// Serves every connection `listener` accepts with `handle` (method, path, body), until the
/// process ends. A connection that fails is logged; the listener keeps running.
///
/// A body longer than `max_body` bytes is never read whole: it is answered `413 Payload Too
/// Large` at once when its `Content-Length` says so, else as soon as the bytes read pass the
/// cap; the connection is then closed.
pub async fn serve<H, F>(listener: TcpListener, max_body: usize, handle: H)
where
    H: Fn(hyper::Method, String, Bytes) -> F + Send + Sync + 'static,
    F: Future<Output = Answer> + Send + 'static,
{
    let handle = Arc::new(handle);
    loop {
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
                    let (status, text) = match read_body(body, max_body).await {
                        Ok(body) => handle(parts.method, path, body).await,
                        Err(refused) => refused,
                    };
                    let mut response = Response::new(Full::new(Bytes::from(text)));
                    *response.status_mut() = status;
                    if status == StatusCode::PAYLOAD_TOO_LARGE {
                        // The rest of the body is not read: the connection ends here.
                        response
                            .headers_mut()
                            .insert(CONNECTION, HeaderValue::from_static("close"));
                    }
                    Ok::<_, Infallible>(response)
                }
            });
            if let Err(error) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(peer = %peer, error = %error, "a connection ended with an error");
            }
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
