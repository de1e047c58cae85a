//! HTTP/2 through the ready-made stack, against a loopback server that
//! speaks both HTTP/1.1 and HTTP/2 with prior knowledge (hyper-util's
//! `auto`), so the protocol it records is the one the client chose.
//!
//! No sleeps and no timing thresholds: the server holds its first requests
//! until a given number are in flight at once, which only multiplexing on
//! one connection can reach (the stack's per-attempt timeout is the only
//! clock, a guard against a hang).

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tower::ServiceExt;
use tower_cx::backoff::Backoff;
use tower_cx::body::Body;
use tower_cx::priority::PriorityLimitLayer;
use tower_cx::retry::RetryLayer;
use tower_cx::stack::Stack;

/// What the server saw.
#[derive(Default)]
struct Seen {
    /// TCP connections accepted.
    connections: AtomicUsize,
    /// Requests that arrived over HTTP/2.
    http2: AtomicUsize,
    /// Requests that arrived over anything else.
    other: AtomicUsize,
    /// Requests being handled now, and the most at once.
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    /// Requests to `/flaky` so far.
    flaky: AtomicUsize,
}

/// The server's state: what it saw, and the gate its handlers wait at.
struct Server {
    seen: Seen,
    /// Opens (for good) once this many requests are in flight at once.
    open_at: usize,
    gate: tokio::sync::watch::Sender<bool>,
}

impl Server {
    fn counts(&self) -> (usize, usize, usize, usize) {
        let seen = &self.seen;
        (
            seen.connections.load(Ordering::SeqCst),
            seen.http2.load(Ordering::SeqCst),
            seen.other.load(Ordering::SeqCst),
            seen.max_in_flight.load(Ordering::SeqCst),
        )
    }
}

/// `/flaky` answers 503 with `Retry-After: 0` the first time, then 200; a
/// `POST` gets its body back; anything else gets `ok`. Every handler waits
/// until `open_at` requests have been in flight at once.
async fn handle(server: Arc<Server>, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let seen = &server.seen;
    let counter = if request.version() == Version::HTTP_2 {
        &seen.http2
    } else {
        &seen.other
    };
    counter.fetch_add(1, Ordering::SeqCst);
    let now = seen.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    seen.max_in_flight.fetch_max(now, Ordering::SeqCst);
    if now >= server.open_at {
        server.gate.send_replace(true);
    }
    let mut gate = server.gate.subscribe();
    gate.wait_for(|open| *open).await.unwrap();

    let response =
        if request.uri().path() == "/flaky" && seen.flaky.fetch_add(1, Ordering::SeqCst) == 0 {
            Response::builder()
                .status(StatusCode::SERVICE_UNAVAILABLE)
                .header("retry-after", "0")
                .body(Full::new(Bytes::from_static(b"{}")))
        } else if request.method() == http::Method::POST {
            let body = request.into_body().collect().await.unwrap().to_bytes();
            Response::builder().body(Full::new(body))
        } else {
            Response::builder().body(Full::new(Bytes::from_static(b"ok")))
        };
    seen.in_flight.fetch_sub(1, Ordering::SeqCst);
    response.unwrap()
}

/// A loopback server counting what it sees; its base URL.
async fn serve(open_at: usize) -> (String, Arc<Server>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = Arc::new(Server {
        seen: Seen::default(),
        open_at,
        gate: tokio::sync::watch::channel(false).0,
    });
    let state = server.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            state.seen.connections.fetch_add(1, Ordering::SeqCst);
            let state = state.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let state = state.clone();
                    async move { Ok::<_, Infallible>(handle(state, request).await) }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (format!("http://{addr}"), server)
}

const REQUESTS: usize = 200;
const CONCURRENCY: usize = 16;

/// 200 requests (half of them `POST`s with a body) through a limiter of 16,
/// with prior knowledge: all over HTTP/2, all on one connection, 16 streams
/// at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_share_one_http2_connection() {
    let (base, server) = serve(CONCURRENCY).await;
    let stack = Stack::new()
        .limiter(PriorityLimitLayer::new(CONCURRENCY))
        .http2_prior_knowledge(true);
    let handles = stack.handles();
    let client = stack.build();

    let tasks: Vec<_> = (0..REQUESTS)
        .map(|i| {
            let client = client.clone();
            let base = base.clone();
            tokio::spawn(async move {
                let (request, expected) = if i % 2 == 0 {
                    let body = format!("{{\"n\":{i}}}");
                    let request = Request::post(format!("{base}/echo"))
                        .header("content-type", "application/json")
                        .body(Body::from(body.clone()))
                        .unwrap();
                    (request, Bytes::from(body))
                } else {
                    let request = Request::get(format!("{base}/items/{i}"))
                        .body(Body::empty())
                        .unwrap();
                    (request, Bytes::from_static(b"ok"))
                };
                let response = client.oneshot(request).await.unwrap();
                assert_eq!(response.status(), StatusCode::OK);
                assert_eq!(response.version(), Version::HTTP_2);
                let body = response.into_body().collect().await.unwrap().to_bytes();
                assert_eq!(body, expected);
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }

    let (connections, http2, other, max_streams) = server.counts();
    println!(
        "http2: {REQUESTS} requests through a limit of {CONCURRENCY}: \
         {http2} over HTTP/2, {other} otherwise, {connections} connection(s), \
         at most {max_streams} streams at once"
    );
    assert_eq!((http2, other), (REQUESTS, 0), "every request over HTTP/2");
    assert_eq!(connections, 1, "one connection for every request");
    assert_eq!(max_streams, CONCURRENCY, "as many streams as permits");
    let stats = handles.stats.snapshot();
    assert_eq!(
        (stats.requests, stats.successes, stats.attempts),
        (REQUESTS as u64, REQUESTS as u64, REQUESTS as u64)
    );
    assert_eq!(handles.limiter.status().available, CONCURRENCY);
}

/// A 503 with `Retry-After: 0` on a `GET` is retried, on the same HTTP/2
/// connection.
#[tokio::test]
async fn a_retry_goes_over_the_same_http2_connection() {
    let (base, server) = serve(1).await;
    let stack = Stack::new()
        .retry(RetryLayer::new().backoff(Backoff::constant(std::time::Duration::ZERO)))
        .http2_prior_knowledge(true);
    let handles = stack.handles();
    let client = stack.build();
    let request = Request::get(format!("{base}/flaky"))
        .body(Body::empty())
        .unwrap();
    let response = client.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.version(), Version::HTTP_2);
    assert_eq!(server.seen.flaky.load(Ordering::SeqCst), 2);
    let (connections, http2, other, _) = server.counts();
    assert_eq!((connections, http2, other), (1, 2, 0));
    let stats = handles.stats.snapshot();
    assert_eq!((stats.attempts, stats.retries), (2, 1));
}

/// Without the opt-in, plain `http://` is HTTP/1.1, though the server would
/// have taken HTTP/2.
#[tokio::test]
async fn plain_http_is_http11_by_default() {
    let (base, server) = serve(1).await;
    let client = Stack::new().build();
    let request = Request::get(format!("{base}/items/1"))
        .body(Body::empty())
        .unwrap();
    let response = client.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.version(), Version::HTTP_11);
    let (connections, http2, other, _) = server.counts();
    assert_eq!((connections, http2, other), (1, 0, 1));
}

/// A server that refuses the first stream with `REFUSED_STREAM` (RFC 9113
/// §8.7: closed before any processing) and answers the rest `201`: the
/// bodies of the streams it processed, in order.
async fn refusing_server() -> (String, Arc<std::sync::Mutex<Vec<Bytes>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let processed = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = processed.clone();
    tokio::spawn(async move {
        let (socket, _) = listener.accept().await.unwrap();
        let mut connection = h2::server::handshake(socket).await.unwrap();
        let mut streams = 0;
        while let Some(Ok((request, mut respond))) = connection.accept().await {
            streams += 1;
            if streams == 1 {
                respond.send_reset(h2::Reason::REFUSED_STREAM);
                continue;
            }
            let mut body = request.into_body();
            let mut bytes = Vec::new();
            while let Some(chunk) = body.data().await {
                let chunk = chunk.unwrap();
                let _ = body.flow_control().release_capacity(chunk.len());
                bytes.extend_from_slice(&chunk);
            }
            seen.lock().unwrap().push(Bytes::from(bytes));
            let response = Response::builder().status(201).body(()).unwrap();
            respond.send_response(response, true).unwrap();
        }
    });
    (base, processed)
}

/// A `POST` whose stream the server refused was provably not processed: it
/// is sent again (with its body), though a `POST` that may have been
/// processed never is.
#[tokio::test]
async fn a_post_whose_http2_stream_was_refused_is_sent_again() {
    let (base, processed) = refusing_server().await;
    let stack = Stack::new()
        .retry(RetryLayer::new().backoff(Backoff::constant(std::time::Duration::ZERO)))
        .http2_prior_knowledge(true);
    let handles = stack.handles();
    let client = stack.build();
    let request = Request::post(format!("{base}/orders"))
        .body(Body::from("{\"order\":1}"))
        .unwrap();
    let response = client.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(
        *processed.lock().unwrap(),
        [Bytes::from_static(b"{\"order\":1}")],
        "processed once, after the refused stream"
    );
    let stats = handles.stats.snapshot();
    assert_eq!((stats.attempts, stats.retries), (2, 1));
}
