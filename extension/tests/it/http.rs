//! The listeners' body cap: a body over it is answered `413` without being read whole, at once
//! when its Content-Length says so, else once the bytes read pass the cap.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const CAP: usize = 1024;

/// A listener capped at [`CAP`] whose handler answers with the length of the body it got;
/// `calls` counts the bodies handed to it.
struct Server {
    addr: String,
    calls: Arc<AtomicUsize>,
}

async fn server() -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    tokio::spawn(keel_extension::http::serve(
        listener,
        keel_extension::http::Caps {
            body_bytes: CAP,
            connections: 4,
        },
        move |_method, _path, body| {
            counted.fetch_add(1, Ordering::SeqCst);
            async move { (StatusCode::OK, body.len().to_string()) }
        },
    ));
    Server { addr, calls }
}

impl Server {
    /// Sends `head` and then `body` (unless the answer comes first), and returns the whole
    /// answer the server gave (10 s at most).
    async fn exchange(&self, head: &str, body: &[u8]) -> String {
        let mut stream = TcpStream::connect(&self.addr).await.unwrap();
        stream.write_all(head.as_bytes()).await.unwrap();
        let (mut reader, mut writer) = stream.into_split();
        let body = body.to_vec();
        // The server may close before it has everything: a failed write ends the sending.
        let sending = tokio::spawn(async move {
            let _ = writer.write_all(&body).await;
            writer
        });
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), async {
            let mut chunk = [0; 4096];
            while !is_whole(&answer) {
                match reader.read(&mut chunk).await {
                    Ok(n @ 1..) => answer.extend_from_slice(&chunk[..n]),
                    _ => break,
                }
            }
        })
        .await;
        sending.abort();
        assert!(
            is_whole(&answer),
            "no whole answer within 10 s; so far: {:?}",
            String::from_utf8_lossy(&answer)
        );
        String::from_utf8_lossy(&answer).into_owned()
    }
}

/// Whether `answer` holds a whole HTTP answer: its head, and as many bytes after it as its
/// Content-Length says.
fn is_whole(answer: &[u8]) -> bool {
    let text = String::from_utf8_lossy(answer);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return false;
    };
    let length = head
        .lines()
        .find_map(|line| {
            line.to_ascii_lowercase()
                .strip_prefix("content-length:")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0);
    body.len() >= length
}

#[tokio::test]
async fn an_announced_body_over_the_cap_is_refused_before_it_is_sent() {
    let server = server().await;
    // The headers alone: a server that waited for the 32 MiB announced would never answer.
    let head = format!(
        "POST / HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n\r\n",
        server.addr,
        32 << 20
    );
    let answer = server.exchange(&head, b"").await;
    assert!(
        answer.starts_with("HTTP/1.1 413 Payload Too Large\r\n"),
        "{answer:?}"
    );
    assert!(answer.contains("connection: close\r\n"), "{answer:?}");
    assert!(answer.ends_with("bodies are limited to 1024 bytes"), "{answer:?}");
    assert_eq!(server.calls.load(Ordering::SeqCst), 0, "the handler never ran");
}

#[tokio::test]
async fn a_streamed_body_over_the_cap_is_refused_once_it_passes_the_cap() {
    let server = server().await;
    let head = format!(
        "POST / HTTP/1.1\r\nHost: {}\r\nTransfer-Encoding: chunked\r\n\r\n",
        server.addr
    );
    // Chunks of 512 bytes, more of them than the cap allows, and no end.
    let chunk = format!("200\r\n{}\r\n", "x".repeat(512));
    let answer = server.exchange(&head, chunk.repeat(64).as_bytes()).await;
    assert!(
        answer.starts_with("HTTP/1.1 413 Payload Too Large\r\n"),
        "{answer:?}"
    );
    assert_eq!(server.calls.load(Ordering::SeqCst), 0, "the handler never ran");
}

#[tokio::test]
async fn a_body_within_the_cap_is_handled_whole() {
    let server = server().await;
    for (framing, body) in [
        (format!("Content-Length: {CAP}"), "y".repeat(CAP)),
        (
            "Transfer-Encoding: chunked".to_owned(),
            format!("400\r\n{}\r\n0\r\n\r\n", "y".repeat(CAP)),
        ),
    ] {
        let head = format!("POST / HTTP/1.1\r\nHost: {}\r\n{framing}\r\n\r\n", server.addr);
        let answer = server.exchange(&head, body.as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{framing}: {answer:?}");
        assert!(answer.ends_with("\r\n\r\n1024"), "{framing}: {answer:?}");
    }
    assert_eq!(server.calls.load(Ordering::SeqCst), 2);
}
