//! Faults: a token endpoint outage, an upstream that never answers, and
//! upstreams (API or token endpoint) that break off, truncate, send garbage,
//! HTML or an endless body. Every case ends with a typed error or a
//! response, never a hang, and the stack recovers when the fault ends.
//!
//! Real loopback sockets, paused time: timeouts, backoff and token expiry
//! cost no wall-clock time.
#![cfg(feature = "mock")]

#[path = "support/vendor_stacks.rs"]
mod vendor_stacks;

use std::error::Error as StdError;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt;
use tower_cx::auth::{ClientCredentials, TokenCache, TokenError};
use tower_cx::backoff::Backoff;
use tower_cx::body::Body;
use tower_cx::breaker::{BreakerState, CircuitBreakerLayer};
use tower_cx::error::{BodyTooLarge, BoxError, CircuitOpen, OutcomeUnknown, UnknownCause};
use tower_cx::mock::Fault;
use tower_cx::retry::RetryLayer;
use tower_cx::stack::{CxService, Stack};
use tower_cx::transport::read_limited;

fn chain_has<T: StdError + 'static>(error: &(dyn StdError + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        if e.is::<T>() {
            return true;
        }
        current = e.source();
    }
    false
}

// ---------------------------------------------------------------- outage

async fn get(client: &CxService, url: &str) -> Result<StatusCode, BoxError> {
    let request = Request::get(url).body(Body::empty()).unwrap();
    client.clone().oneshot(request).await.map(|r| r.status())
}

#[tokio::test(start_paused = true)]
async fn a_token_endpoint_outage_is_invisible_while_the_token_lives_then_typed_then_healed() {
    let mock = vendor_stacks::mock_with(|c| c.token_lifetime = Duration::from_secs(120)).await;
    let c = mock.config().clone();
    let credentials =
        ClientCredentials::genesys(&mock.genesys_region(), c.client_id, c.client_secret).unwrap();
    let client = Stack::new()
        .bearer(TokenCache::new(credentials))
        .retry(RetryLayer::new().max_attempts(1))
        .build();
    let url = format!("{}/api/v2/users", mock.base_url());
    assert_eq!(get(&client, &url).await.unwrap(), StatusCode::OK);

    // the token endpoint goes down: 503 to every token request
    mock.fault(Some("/oauth/token"), Fault::Status(503), usize::MAX);
    for _ in 0..11 {
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(
            get(&client, &url).await.unwrap(),
            StatusCode::OK,
            "the token is still valid"
        );
    }
    let refreshes_tried = mock.counters().requests["/oauth/token"];
    assert!(refreshes_tried > 1, "refresh-ahead kept trying");

    // past expiry (120 s): typed token errors, nothing sent with an old token
    tokio::time::sleep(Duration::from_secs(15)).await;
    for _ in 0..3 {
        let error = get(&client, &url).await.unwrap_err();
        let token = error
            .downcast_ref::<TokenError>()
            .unwrap_or_else(|| panic!("a token error: {error}"));
        assert!(matches!(token, TokenError::Unavailable { .. }), "{token:?}");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(mock.counters().expired_token_requests, 0);

    // the endpoint returns: within the refresh backoff, requests succeed again
    mock.clear_faults();
    let back = tokio::time::Instant::now();
    loop {
        match get(&client, &url).await {
            Ok(status) => {
                assert_eq!(status, StatusCode::OK);
                break;
            }
            Err(error) => assert!(error.is::<TokenError>(), "{error}"),
        }
        assert!(back.elapsed() < Duration::from_secs(300), "never recovered");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    for _ in 0..5 {
        assert_eq!(get(&client, &url).await.unwrap(), StatusCode::OK);
    }
    let counters = mock.counters();
    assert_eq!(counters.expired_token_requests, 0);
    assert_eq!(counters.tokens_issued, 2);
}

// ------------------------------------------------------------ raw server

/// What the raw server does with each request it reads.
#[derive(Clone)]
enum Script {
    /// Accept, read, never answer.
    Silent,
    /// Write these bytes, then close the connection.
    Answer(Vec<u8>),
    /// A 200 with a chunked body that never ends.
    Endless,
}

/// A loopback server speaking just enough HTTP/1.1 to misbehave.
struct RawServer {
    url: String,
    script: Arc<Mutex<Script>>,
    /// Request heads read.
    heads: Arc<std::sync::atomic::AtomicUsize>,
}

impl RawServer {
    async fn start(script: Script) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let script = Arc::new(Mutex::new(script));
        let heads = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (shared, counted) = (script.clone(), heads.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, shared.clone(), counted.clone()));
            }
        });
        Self { url, script, heads }
    }

    fn set(&self, script: Script) {
        *self.script.lock().unwrap() = script;
    }
}

async fn serve(
    mut stream: TcpStream,
    script: Arc<Mutex<Script>>,
    heads: Arc<std::sync::atomic::AtomicUsize>,
) {
    loop {
        // read one request head (the test requests carry small bodies at most)
        let mut head = Vec::new();
        let mut buf = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        heads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let current = script.lock().unwrap().clone();
        match current {
            Script::Silent => {
                // hold the connection open, never answer
                let _ = stream.read(&mut buf).await;
                std::future::pending::<()>().await;
            }
            Script::Answer(bytes) => {
                let _ = stream.write_all(&bytes).await;
                let _ = stream.shutdown().await;
                return;
            }
            Script::Endless => {
                let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n";
                if stream.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let chunk = format!("4000\r\n{}\r\n", "a".repeat(0x4000));
                while stream.write_all(chunk.as_bytes()).await.is_ok() {}
                return;
            }
        }
    }
}

fn answer(status_line: &str, content_type: &str, declared: usize, body: &str) -> Script {
    Script::Answer(
        format!(
            "HTTP/1.1 {status_line}\r\ncontent-type: {content_type}\r\ncontent-length: {declared}\r\n\r\n{body}"
        )
        .into_bytes(),
    )
}

// ------------------------------------------------------------ never answers

#[tokio::test(start_paused = true)]
async fn an_upstream_that_never_answers_times_out_opens_the_breaker_then_recovers_by_probe() {
    let upstream = RawServer::start(Script::Silent).await;
    let stack = Stack::new()
        .retry(
            RetryLayer::new()
                .max_attempts(3)
                .deadline(Duration::from_secs(8))
                .backoff(Backoff::constant(Duration::from_millis(100))),
        )
        .breaker(
            CircuitBreakerLayer::new()
                .consecutive_failures(3)
                .open_duration(Backoff::constant(Duration::from_secs(30)))
                .half_open(1, 1),
        )
        .timeout(Duration::from_secs(2));
    let breaker = stack.handles().breaker;
    let limiter = stack.handles().limiter;
    let client = stack.build();
    let url = format!("{}/api/v2/users", upstream.url);

    let started = tokio::time::Instant::now();
    let error = get(&client, &url).await.unwrap_err();
    assert!(
        chain_has::<tower::timeout::error::Elapsed>(error.as_ref()),
        "{error}"
    );
    // three attempts of 2 s with 100 ms between them
    assert_eq!(started.elapsed(), Duration::from_millis(6_200));
    assert_eq!(breaker.counts().failures, 3);
    assert!(matches!(breaker.state(), BreakerState::Open { .. }));

    // while open: fail fast, nothing sent
    let error = get(&client, &url).await.unwrap_err();
    assert!(error.downcast_ref::<CircuitOpen>().is_some(), "{error}");

    // the upstream heals; after the open duration one probe closes the breaker
    upstream.set(answer("200 OK", "application/json", 2, "{}"));
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(breaker.state(), BreakerState::HalfOpen);
    assert_eq!(get(&client, &url).await.unwrap(), StatusCode::OK);
    assert_eq!(breaker.state(), BreakerState::Closed);
    assert_eq!(breaker.counts().trips, 1);
    assert_eq!(get(&client, &url).await.unwrap(), StatusCode::OK);
    let status = limiter.status();
    assert_eq!((status.in_flight, status.queued), (0, [0, 0, 0]));
}

// ----------------------------------------------- broken answers, API side

#[tokio::test(start_paused = true)]
async fn broken_api_answers_end_in_typed_errors_never_a_hang() {
    let upstream = RawServer::start(Script::Silent).await;
    let client = Stack::new()
        .retry(
            RetryLayer::new()
                .max_attempts(2)
                .backoff(Backoff::constant(Duration::from_millis(10))),
        )
        .timeout(Duration::from_secs(2))
        .build();
    let url = format!("{}/api/v2/users", upstream.url);
    let send = || {
        client
            .clone()
            .oneshot(Request::get(url.clone()).body(Body::empty()).unwrap())
    };

    // closed in the middle of the head: a connection error after the retries
    upstream.set(Script::Answer(b"HTTP/1.1 200 OK\r\ncontent-le".to_vec()));
    let error = send().await.unwrap_err();
    assert!(chain_has::<hyper::Error>(error.as_ref()), "{error}");

    // garbage instead of HTTP
    upstream.set(Script::Answer(b"\x00\x01garbage\r\n\r\n".to_vec()));
    let error = send().await.unwrap_err();
    assert!(chain_has::<hyper::Error>(error.as_ref()), "{error}");

    // closed in the middle of the body: the head arrives, reading fails
    upstream.set(answer("200 OK", "application/json", 100, "{\"entities\":["));
    let response = send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let error = read_limited(response, 1 << 20).await.unwrap_err();
    assert!(chain_has::<hyper::Error>(error.as_ref()), "{error}");

    // a body that never ends: the limit stops it
    upstream.set(Script::Endless);
    let response = send().await.unwrap();
    let error = read_limited(response, 1 << 20).await.unwrap_err();
    let too_large = error.downcast_ref::<BodyTooLarge>().expect("typed");
    assert_eq!(
        (too_large.limit(), too_large.status()),
        (1 << 20, StatusCode::OK)
    );

    // 200 with an HTML page: the stack hands it over as it is (the status is
    // the server's), the bytes are there to be judged by the caller
    upstream.set(answer("200 OK", "text/html", 13, "<html></html>"));
    let response = send().await.unwrap();
    assert_eq!(response.headers()["content-type"], "text/html");
    assert_eq!(read_limited(response, 1024).await.unwrap(), "<html></html>");
}

#[tokio::test(start_paused = true)]
async fn an_answer_that_is_not_http_may_follow_a_request_that_was_applied() {
    let upstream = RawServer::start(Script::Answer(b"HTTP/1.1 2OO OK\r\n\r\n".to_vec())).await;
    let client = Stack::new()
        .retry(
            RetryLayer::new()
                .max_attempts(3)
                .backoff(Backoff::constant(Duration::from_millis(10))),
        )
        .build();
    let url = format!("{}/api/v2/users", upstream.url);
    let sent = || upstream.heads.load(std::sync::atomic::Ordering::SeqCst);
    // a POST was written before the garbage came back: sent once, and the
    // caller is told it may have been applied
    let post = Request::post(url.clone()).body(Body::from("{}")).unwrap();
    let error = client.clone().oneshot(post).await.unwrap_err();
    let unknown = OutcomeUnknown::find(error.as_ref()).expect("outcome unknown");
    assert_eq!(unknown.cause(), UnknownCause::ConnectionLost);
    assert!(chain_has::<hyper::Error>(error.as_ref()), "{error}");
    assert_eq!(sent(), 1);
    // a GET is sent again, up to its attempts
    let get = Request::get(url).body(Body::empty()).unwrap();
    let error = client.oneshot(get).await.unwrap_err();
    assert!(chain_has::<hyper::Error>(error.as_ref()), "{error}");
    assert_eq!(sent(), 1 + 3);
}

// --------------------------------------- broken answers, token endpoint

async fn token_error(upstream: &RawServer) -> TokenError {
    let credentials = ClientCredentials::new(
        &format!("{}/oauth/token", upstream.url),
        "client",
        "client-secret-value",
    )
    .unwrap()
    .timeout(Duration::from_secs(3));
    TokenCache::new(credentials).refresh().await.unwrap_err()
}

#[tokio::test(start_paused = true)]
async fn broken_token_answers_end_in_typed_token_errors() {
    let upstream = RawServer::start(Script::Silent).await;

    let started = tokio::time::Instant::now();
    let error = token_error(&upstream).await;
    assert!(matches!(error, TokenError::Transport(_)), "{error:?}");
    assert!(
        chain_has::<tower::timeout::error::Elapsed>(&error),
        "{error}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );

    upstream.set(answer(
        "200 OK",
        "text/html",
        25,
        "<html>maintenance</html>\n",
    ));
    let error = token_error(&upstream).await;
    assert!(
        matches!(error, TokenError::UnexpectedResponse { ref content_type, .. } if content_type.as_deref() == Some("text/html")),
        "{error:?}"
    );

    upstream.set(answer(
        "200 OK",
        "application/json",
        22,
        "{\"access_token\": \"abc\"",
    ));
    let error = token_error(&upstream).await;
    assert!(
        matches!(error, TokenError::UnexpectedResponse { .. }),
        "{error:?}"
    );

    upstream.set(answer(
        "200 OK",
        "application/json",
        200,
        "{\"access_token\":",
    ));
    let error = token_error(&upstream).await;
    assert!(matches!(error, TokenError::Transport(_)), "{error:?}");
    assert!(chain_has::<hyper::Error>(&error), "{error}");

    upstream.set(Script::Answer(b"HTTP/1.1 200 OK\r\ncontent-".to_vec()));
    let error = token_error(&upstream).await;
    assert!(matches!(error, TokenError::Transport(_)), "{error:?}");

    upstream.set(Script::Endless);
    let error = token_error(&upstream).await;
    match error {
        TokenError::BodyTooLarge(ref too_large) => assert_eq!(too_large.limit(), 64 * 1024),
        ref other => panic!("{other:?}"),
    }
    assert!(error.to_string().contains("65536"), "{error}");
}
