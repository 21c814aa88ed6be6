//! A small HTTP/1 server for the extension's two listeners (telemetry and relay).

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// What a handler answers: a status and a text body.
pub type Answer = (StatusCode, String);

/// Serves every connection `listener` accepts with `handle` (method, path, body), until the
/// process ends. A connection that fails is logged; the listener keeps running.
pub async fn serve<H, F>(listener: TcpListener, handle: H)
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
                    let answer = match body.collect().await {
                        Ok(body) => handle(parts.method, parts.uri.path().to_owned(), body.to_bytes()).await,
                        Err(error) => (
                            StatusCode::BAD_REQUEST,
                            format!("the body could not be read: {error}"),
                        ),
                    };
                    let (status, text) = answer;
                    let mut response = Response::new(Full::new(Bytes::from(text)));
                    *response.status_mut() = status;
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
