//! The ready-made stack over a real hyper client and a loopback server.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tower::ServiceExt;
use tower_cx::backoff::Backoff;
use tower_cx::body::Body;
use tower_cx::genesys::Region;
use tower_cx::retry::RetryLayer;
use tower_cx::stack::Stack;

/// `/oauth/token` issues `tok`; `/flaky` answers 503 then 200; everything
/// else needs `Bearer tok`.
async fn serve() -> (String, Arc<AtomicU32>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let flaky = Arc::new(AtomicU32::new(0));
    let calls = flaky.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let calls = calls.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let calls = calls.clone();
                    async move {
                        let (status, body) = match req.uri().path() {
                            "/oauth/token" => (
                                200,
                                r#"{"access_token":"tok","token_type":"bearer","expires_in":3600}"#,
                            ),
                            "/flaky" if calls.fetch_add(1, Ordering::SeqCst) == 0 => (503, "{}"),
                            "/flaky" => (200, "{\"ok\":true}"),
                            _ if req.headers().get("authorization").map(|v| v.as_bytes())
                                == Some(b"Bearer tok") =>
                            {
                                (200, "{\"me\":true}")
                            }
                            _ => (401, "{}"),
                        };
                        Ok::<_, Infallible>(
                            Response::builder()
                                .status(status)
                                .body(Full::new(Bytes::from_static(body.as_bytes())))
                                .unwrap(),
                        )
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (format!("http://{addr}"), flaky)
}

#[tokio::test]
async fn the_genesys_stack_fetches_a_token_and_calls_the_api() {
    let (base, _) = serve().await;
    let stack = Stack::genesys(&Region::custom(&base, &base), "id", "secret").unwrap();
    let handles = stack.handles();
    let client = stack.timeout(Duration::from_secs(5)).build();
    let request = Request::get(format!("{base}/api/v2/users/me"))
        .body(Body::empty())
        .unwrap();
    let response = client.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "{\"me\":true}");
    assert_eq!(handles.tokens.unwrap().status().refresh_count, 1);
    let stats = handles.stats.snapshot();
    assert_eq!((stats.requests, stats.successes, stats.attempts), (1, 1, 1));
    assert_eq!(handles.limiter.status().available, 16);
}

#[tokio::test]
async fn the_custom_stack_retries_over_real_tcp() {
    let (base, flaky) = serve().await;
    let stack =
        Stack::new().retry(RetryLayer::new().backoff(Backoff::constant(Duration::from_millis(1))));
    let handles = stack.handles();
    let client = stack.build();
    let request = Request::get(format!("{base}/flaky"))
        .body(Body::empty())
        .unwrap();
    let response = client.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(flaky.load(Ordering::SeqCst), 2);
    let stats = handles.stats.snapshot();
    assert_eq!((stats.attempts, stats.retries), (2, 1));
}
