//! The crate's layers and typed clients over `ReqwestTransport` (feature
//! `reqwest`), against the embedded mock and a loopback server, over real
//! loopback TCP.
//!
//! No sleeps and no timing thresholds: the retries here wait zero (a
//! `Retry-After: 0`, a zero backoff); the one short reqwest timeout ends
//! attempts against a server that never answers, and no assertion depends
//! on how long anything took.
#![cfg(all(feature = "reqwest", feature = "mock"))]

#[path = "support/loopback.rs"]
mod loopback;

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::TryStreamExt;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use serde_json::{json, Value};
use tower::util::BoxCloneSyncService;
use tower::{Layer, ServiceBuilder};
use tower_cx::audit::{AuditLayer, NoopSink};
use tower_cx::auth::{BearerLayer, ClientCredentials, TokenCache};
use tower_cx::backoff::Backoff;
use tower_cx::body::Body;
use tower_cx::breaker::CircuitBreakerLayer;
use tower_cx::classify::{classify_error, Class, FailureKind};
use tower_cx::error::{find, BoxError, OutcomeUnknown};
use tower_cx::genesys::GenesysClient;
use tower_cx::mock::{Fault, MockServer};
use tower_cx::priority::PriorityLimitLayer;
use tower_cx::retry::RetryLayer;
use tower_cx::stack::ServiceBuilderExt;
use tower_cx::transport::{read_limited, ReqwestTransport, Transport};

type Service = BoxCloneSyncService<Request<Body>, Response<reqwest::Body>, BoxError>;

/// reqwest with no proxy from the environment: every test talks to
/// loopback.
fn transport() -> ReqwestTransport {
    ReqwestTransport::new(reqwest::Client::builder().no_proxy().build().unwrap())
}

/// A retry layer that waits zero between attempts.
fn retry(attempts: u32) -> RetryLayer {
    RetryLayer::new()
        .backoff(Backoff::constant(Duration::ZERO))
        .max_attempts(attempts)
}

/// The canonical order over reqwest, for the mock's Genesys region: token
/// requests over reqwest too, the token sent to the API origin only.
fn genesys_stack(mock: &MockServer, transport: ReqwestTransport) -> Service {
    let region = mock.genesys_region();
    let c = mock.config();
    let credentials =
        ClientCredentials::genesys(&region, c.client_id.clone(), c.client_secret.clone())
            .unwrap()
            .http_client(transport.clone());
    let bearer = BearerLayer::new(TokenCache::new(credentials))
        .allow_origin(&region.api_base())
        .unwrap();
    BoxCloneSyncService::new(
        ServiceBuilder::new()
            .audit(AuditLayer::new(NoopSink))
            .with_retry(retry(4))
            .circuit_breaker(CircuitBreakerLayer::new())
            .priority_limit(PriorityLimitLayer::new(16))
            .layer(bearer)
            .timeout(Duration::from_secs(30))
            .service(transport),
    )
}

#[tokio::test]
async fn a_typed_genesys_client_works_over_reqwest() {
    let mock = MockServer::start().await.unwrap();
    let genesys = GenesysClient::new(genesys_stack(&mock, transport()), &mock.genesys_region())
        .retry(retry(3))
        .idempotent_action("lookup");

    let output: Value = genesys
        .data_actions()
        .execute("lookup", &json!({"customerId": "42"}))
        .await
        .unwrap();
    assert_eq!(output, json!({"ok": true, "input": {"customerId": "42"}}));

    // a 503 on a GET: the stack sends it again
    mock.fault(Some("/api/v2/users"), Fault::Status(503), 1);
    let pages: Vec<_> = genesys
        .list::<Value>("/api/v2/users")
        .try_collect()
        .await
        .unwrap();
    assert!(!pages.is_empty());

    let counters = mock.counters();
    assert_eq!(counters.tokens_issued, 1, "one token, fetched over reqwest");
    assert_eq!(counters.operations_applied, 1);
    assert_eq!(counters.duplicate_applications, 0);
}

/// What the loopback server saw: each request's method and body.
type Seen = Arc<Mutex<Vec<(Method, Bytes)>>>;

/// A loopback server answering its first request `503` with
/// `Retry-After: 0` (the request was not processed: even a `POST` may be
/// sent again), then echoing each body with a `200`; what it saw.
async fn flaky_server() -> (String, Seen) {
    let seen = Seen::default();
    let log = seen.clone();
    let base = loopback::serve(tower::service_fn(move |request: Request<Body>| {
        let log = log.clone();
        async move {
            let body = request.body().as_bytes().cloned().unwrap_or_default();
            let first = {
                let mut log = log.lock().unwrap();
                log.push((request.method().clone(), body.clone()));
                log.len() == 1
            };
            let response = if first {
                Response::builder()
                    .status(StatusCode::SERVICE_UNAVAILABLE)
                    .header("retry-after", "0")
                    .body(Full::new(Bytes::new()))
            } else {
                Response::builder().body(Full::new(body))
            };
            Ok::<_, Infallible>(response.unwrap())
        }
    }))
    .await;
    (base, seen)
}

#[tokio::test]
async fn a_retry_after_a_503_sends_the_same_buffered_body_again() {
    let (base, seen) = flaky_server().await;
    let client = retry(3).layer(transport());
    let payload = "{\"requestId\":\"r-1\",\"amount\":12}";
    let request = Request::post(format!("{base}/orders"))
        .body(Body::from(payload))
        .unwrap();
    let response = client.send(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(read_limited(response, 1024).await.unwrap(), payload);

    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2, "the 503, then the retry");
    for (method, body) in seen.iter() {
        assert_eq!(method, Method::POST);
        assert_eq!(body, payload, "both attempts carried the whole body");
    }
}

#[tokio::test]
async fn a_streaming_body_is_sent_once() {
    let (base, seen) = flaky_server().await;
    let client = retry(3).layer(transport());
    let chunks = futures_util::stream::iter([
        Ok::<_, Infallible>(http_body::Frame::data(Bytes::from_static(b"{\"part\":"))),
        Ok(http_body::Frame::data(Bytes::from_static(b"1}"))),
    ]);
    let request = Request::post(format!("{base}/upload"))
        .body(Body::from_stream(http_body_util::StreamBody::new(chunks)))
        .unwrap();
    let response = client.send(request).await.unwrap();
    assert_eq!(
        response.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "a stream cannot be sent again: the 503 is the answer"
    );
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].1, "{\"part\":1}");
}

#[tokio::test]
async fn a_post_to_a_closed_port_is_retried_then_fails_as_a_connect_error() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener); // nothing listens there now

    let attempts = Arc::new(Mutex::new(0u32));
    let counted = attempts.clone();
    let reqwest = transport();
    let counting = tower::service_fn(move |request: Request<Body>| {
        *counted.lock().unwrap() += 1;
        reqwest.send(request)
    });
    let audit = AuditLayer::new(NoopSink);
    let stats = audit.stats_handle();
    let breaker = CircuitBreakerLayer::new().consecutive_failures(10);
    let handle = breaker.handle();
    let client = ServiceBuilder::new()
        .audit(audit)
        .with_retry(retry(3))
        .circuit_breaker(breaker)
        .service(counting);

    let request = Request::post(format!("http://127.0.0.1:{port}/orders"))
        .body(Body::from("{\"requestId\":\"r-2\"}"))
        .unwrap();
    let error = client.send(request).await.unwrap_err();

    assert_eq!(
        *attempts.lock().unwrap(),
        3,
        "never sent: a POST may be retried"
    );
    assert!(
        find::<OutcomeUnknown>(error.as_ref()).is_none(),
        "not an unknown outcome: {error:?}"
    );
    let reqwest_error = find::<reqwest::Error>(error.as_ref()).expect("reqwest's error");
    assert!(reqwest_error.is_connect(), "{reqwest_error:?}");
    assert_eq!(
        classify_error(error.as_ref()),
        Class::Retryable(FailureKind::Connect)
    );
    // the breaker and the audit see a connect failure, as over hyper
    assert_eq!(handle.counts().failures, 3);
    let s = stats.snapshot();
    assert_eq!((s.requests, s.errors, s.connect_errors), (1, 1, 1));
}

#[tokio::test]
async fn reqwest_timeouts_are_timeouts_a_get_is_retried_a_post_is_unknown() {
    // accepts every connection and never answers: only reqwest's own
    // timeout ends an attempt (nothing here depends on how long it took)
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let reqwest = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_millis(1))
        .build()
        .unwrap();
    let attempts = Arc::new(Mutex::new(0u32));
    let counted = attempts.clone();
    let transport = ReqwestTransport::new(reqwest);
    let counting = tower::service_fn(move |request: Request<Body>| {
        *counted.lock().unwrap() += 1;
        transport.send(request)
    });
    let client = retry(3).layer(counting);

    let get = Request::get(format!("{base}/items"))
        .body(Body::empty())
        .unwrap();
    let error = client.send(get).await.unwrap_err();
    assert_eq!(*attempts.lock().unwrap(), 3, "a GET is retried");
    assert!(find::<reqwest::Error>(error.as_ref()).unwrap().is_timeout());
    assert_eq!(
        classify_error(error.as_ref()),
        Class::Retryable(FailureKind::Timeout)
    );

    *attempts.lock().unwrap() = 0;
    let post = Request::post(format!("{base}/orders"))
        .body(Body::from("{\"requestId\":\"r-3\"}"))
        .unwrap();
    let error = client.send(post).await.unwrap_err();
    assert_eq!(
        *attempts.lock().unwrap(),
        1,
        "a POST that timed out may have been applied: not sent again"
    );
    assert!(
        find::<OutcomeUnknown>(error.as_ref()).is_some(),
        "{error:?}"
    );
    silent.abort();
}
