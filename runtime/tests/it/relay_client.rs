//! The relay client and the end-of-invocation notice, against a stand-in for the extension's
//! relay that counts the connections it accepts: one kept-alive connection for hand-overs and
//! notices, a new one after the relay closed it, envelopes counted per request (and bounded),
//! and the notice sent once the runtime's service (the response posted) is done.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keel_runtime::routing::{
    ErrorRouting, ErrorRoutingLayer, InvocationOverLayer, RelayClient, HANDED_ENTRIES,
};
use keel_runtime::BoxError;
use lambda_runtime::LambdaInvocation;
use serde_json::{json, Value};
use tower::{Layer, Service, ServiceExt};

/// One request the stand-in served.
#[derive(Clone, Debug)]
struct Served {
    /// Which accepted connection (from 1).
    connection: u64,
    path: String,
    body: String,
    /// Its place in the order of everything the test records ([`Relay::tick`]).
    at: u64,
}

/// A stand-in for the extension's relay (HTTP/1.1, keep-alive): `202` to `POST /envelopes`,
/// `204` to `POST /invocations/done`.
struct Relay {
    addr: SocketAddr,
    accepted: Arc<AtomicU64>,
    served: Arc<Mutex<Vec<Served>>>,
    order: Arc<AtomicU64>,
}

impl Relay {
    /// Serves every connection for as long as the client keeps it, or only `per_connection`
    /// requests on each (then closes it, without saying so).
    fn start(per_connection: Option<usize>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicU64::new(0));
        let served = Arc::new(Mutex::new(Vec::new()));
        let order = Arc::new(AtomicU64::new(0));
        let relay = Self {
            addr,
            accepted: accepted.clone(),
            served: served.clone(),
            order: order.clone(),
        };
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let connection = accepted.fetch_add(1, Ordering::SeqCst) + 1;
                let (served, order) = (served.clone(), order.clone());
                std::thread::spawn(move || {
                    serve(stream, connection, per_connection, &served, &order);
                });
            }
        });
        relay
    }

    /// The next place in the order of events.
    fn tick(&self) -> u64 {
        self.order.fetch_add(1, Ordering::SeqCst)
    }

    fn served(&self) -> Vec<Served> {
        self.served.lock().unwrap().clone()
    }

    fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Waits (10 s at most) until `count` requests were served; returns them all.
    async fn wait_for(&self, count: usize) -> Vec<Served> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let served = self.served();
            if served.len() >= count {
                return served;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "expected {count} requests at the relay, saw {served:?}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

fn serve(
    stream: std::net::TcpStream,
    connection: u64,
    per_connection: Option<usize>,
    served: &Mutex<Vec<Served>>,
    order: &AtomicU64,
) {
    let _ = stream.set_nodelay(true);
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    let mut requests = 0;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let path = line.split(' ').nth(1).unwrap_or("").to_owned();
        let mut length = 0;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            if header.trim().is_empty() {
                break;
            }
            if let Some(value) = header.to_ascii_lowercase().strip_prefix("content-length:") {
                length = value.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let status = match path.as_str() {
            "/envelopes" => "202 Accepted",
            "/invocations/done" => "204 No Content",
            _ => "404 Not Found",
        };
        served.lock().unwrap().push(Served {
            connection,
            path,
            body: String::from_utf8_lossy(&body).into_owned(),
            at: order.fetch_add(1, Ordering::SeqCst),
        });
        let length = if status.starts_with("204") {
            ""
        } else {
            "content-length: 0\r\n"
        };
        // One write: the client waits for the whole answer.
        let answer = format!("HTTP/1.1 {status}\r\n{length}\r\n");
        if writer.write_all(answer.as_bytes()).is_err() {
            return;
        }
        requests += 1;
        if per_connection.is_some_and(|limit| requests >= limit) {
            let _ = writer.shutdown(std::net::Shutdown::Both);
            return;
        }
    }
}

const TIMEOUT: Duration = Duration::from_secs(5);

fn envelope(request_id: &str) -> String {
    json!({"request_id": request_id, "error_type": "Booking.Failed"}).to_string()
}

fn notice_of(served: &Served) -> Value {
    assert_eq!(served.path, "/invocations/done", "{served:?}");
    serde_json::from_str(&served.body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hand_overs_and_the_notice_share_one_kept_alive_connection() {
    let relay = Relay::start(None);
    let client = RelayClient::new(relay.addr);
    for _ in 0..3 {
        client
            .hand_over("req-1", envelope("req-1"), TIMEOUT)
            .await
            .unwrap();
    }
    client
        .hand_over("req-2", envelope("req-2"), TIMEOUT)
        .await
        .unwrap();
    assert_eq!(client.handed("req-1"), 3);
    assert_eq!(client.handed("req-2"), 1);
    assert_eq!(client.invocation_done("req-1").await.unwrap(), 3);
    assert_eq!(client.handed("req-1"), 0, "the notice took the count");
    assert_eq!(client.invocation_done("req-3").await.unwrap(), 0);

    let served = relay.wait_for(6).await;
    let paths: Vec<&str> = served.iter().map(|s| s.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/envelopes",
            "/envelopes",
            "/envelopes",
            "/envelopes",
            "/invocations/done",
            "/invocations/done"
        ]
    );
    assert_eq!(notice_of(&served[4]), json!({"request_id": "req-1", "handed": 3}));
    assert_eq!(notice_of(&served[5]), json!({"request_id": "req-3", "handed": 0}));
    assert_eq!(
        relay.accepted(),
        1,
        "one connection for all six requests: {served:?}"
    );
    assert!(served.iter().all(|s| s.connection == 1), "{served:?}");
    assert_eq!(client.connections_opened(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_the_relay_closed_is_replaced() {
    // The relay closes each connection after one request, without a `connection: close`.
    let relay = Relay::start(Some(1));
    let client = RelayClient::new(relay.addr);
    for n in 0..3 {
        client
            .hand_over("req-c", envelope("req-c"), TIMEOUT)
            .await
            .unwrap_or_else(|error| panic!("hand-over {n}: {error}; served {:?}", relay.served()));
    }
    assert_eq!(client.invocation_done("req-c").await.unwrap(), 3);
    let served = relay.wait_for(4).await;
    assert_eq!(served.len(), 4, "each request served once: {served:?}");
    assert_eq!(relay.accepted(), 4, "a new connection each time: {served:?}");
    assert_eq!(client.connections_opened(), 4);
}

#[tokio::test]
async fn nobody_listening_is_an_error_and_notices_are_skipped_for_a_while() {
    let nobody: SocketAddr = format!("127.0.0.1:{}", keel_tests::free_port()).parse().unwrap();
    let client = RelayClient::new(nobody);
    let error = client
        .hand_over("req-n", envelope("req-n"), TIMEOUT)
        .await
        .unwrap_err();
    assert!(error.to_string().contains("could not be reached"), "{error}");
    assert_eq!(client.handed("req-n"), 0, "only what the relay took counts");
    let skipped = client.invocation_done("req-n").await.unwrap_err();
    assert!(
        matches!(skipped, keel_runtime::routing::RelayError::Skipped),
        "{skipped}"
    );
}

#[tokio::test]
async fn the_counts_stay_bounded_without_notices() {
    let relay = Relay::start(None);
    let client = RelayClient::new(relay.addr);
    for n in 0..HANDED_ENTRIES + 10 {
        let request_id = format!("req-{n}");
        client
            .hand_over(&request_id, envelope(&request_id), TIMEOUT)
            .await
            .unwrap();
    }
    assert_eq!(client.counted_requests(), HANDED_ENTRIES);
    assert_eq!(client.handed("req-0"), 0, "the oldest count was dropped");
    assert_eq!(client.handed(&format!("req-{}", HANDED_ENTRIES + 9)), 1);
    assert_eq!(relay.accepted(), 1);
}

/// A `LambdaInvocation` of request `request_id`, as the runtime builds it.
fn invocation(request_id: &str) -> LambdaInvocation {
    let (parts, ()) = hyper::Response::new(()).into_parts();
    let mut context = lambda_runtime::Context::default();
    context.request_id = request_id.to_owned();
    LambdaInvocation {
        parts,
        body: bytes::Bytes::from_static(b"{}"),
        context,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_notice_goes_out_after_the_runtime_service_is_done_with_what_was_handed() {
    let relay = Arc::new(Relay::start(None));
    let routing = ErrorRouting::new("svc").relay(relay.addr);
    let client = routing.relay_client().cloned().unwrap();
    let layer = ErrorRoutingLayer::new(routing).invocation_over();
    assert!(layer.is_enabled());

    // The runtime's service: the handler hands an envelope over, then the response is posted
    // once the test says so.
    let (post, posted) = tokio::sync::oneshot::channel::<()>();
    let posted = Arc::new(Mutex::new(Some(posted)));
    let done_at = Arc::new(AtomicU64::new(u64::MAX));
    let inner = {
        let (client, relay, done_at) = (client.clone(), relay.clone(), done_at.clone());
        tower::service_fn(move |invocation: LambdaInvocation| {
            let (client, relay, done_at) = (client.clone(), relay.clone(), done_at.clone());
            let posted = posted.lock().unwrap().take();
            async move {
                let request_id = invocation.context.request_id;
                client
                    .hand_over(&request_id, envelope(&request_id), TIMEOUT)
                    .await?;
                if let Some(posted) = posted {
                    let _ = posted.await;
                }
                done_at.store(relay.tick(), Ordering::SeqCst);
                Ok::<(), BoxError>(())
            }
        })
    };
    let mut service = layer.layer(inner);
    let call = service.ready().await.unwrap().call(invocation("req-l"));
    let running = tokio::spawn(call);

    let served = relay.wait_for(1).await;
    assert_eq!(served[0].path, "/envelopes");
    assert_eq!(client.handed("req-l"), 1);
    post.send(()).unwrap();
    running.await.unwrap().unwrap();

    let served = relay.wait_for(2).await;
    let notice = &served[1];
    assert_eq!(notice_of(notice), json!({"request_id": "req-l", "handed": 1}));
    let done_at = done_at.load(Ordering::SeqCst);
    assert!(
        notice.at > done_at,
        "the notice (at {}) came after the service was done (at {done_at})",
        notice.at
    );
    assert_eq!(relay.accepted(), 1, "{served:?}");
}

#[tokio::test]
async fn without_a_relay_the_layer_passes_through() {
    let layer = ErrorRoutingLayer::new(ErrorRouting::new("svc")).invocation_over();
    assert!(!layer.is_enabled());
    assert!(!InvocationOverLayer::disabled().is_enabled());
    let inner = tower::service_fn(|_: LambdaInvocation| async { Ok::<(), BoxError>(()) });
    layer.layer(inner).oneshot(invocation("req-p")).await.unwrap();
}
