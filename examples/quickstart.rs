//! Quickstart: a real hyper client, wrapped in the retry layer, calling a
//! rate-limited API on loopback that fails the way SaaS APIs do.
//!
//! The local API answers each new order with a 503, then a 429 carrying
//! `Retry-After: 1`, then 201. The client sends a `GET` and a `POST` (made
//! retryable by an automatic `Idempotency-Key`) and prints every retry
//! decision.
//!
//! Run: `cargo run --example quickstart`

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tower::{ServiceBuilder, ServiceExt};
use tower_cx::backoff::{Backoff, Jitter};
use tower_cx::body::Body;
use tower_cx::error::BoxError;
use tower_cx::retry::{RetryEventKind, RetryLayer, IDEMPOTENCY_KEY};

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let addr = spawn_flaky_api().await?;
    println!("flaky API listening on http://{addr}");

    let client = Client::builder(TokioExecutor::new()).build_http::<Body>();
    let client = ServiceBuilder::new()
        .layer(
            RetryLayer::new()
                .max_attempts(4)
                .deadline(Duration::from_secs(20))
                .backoff(Backoff::exponential(Duration::from_millis(200)).jitter(Jitter::Full))
                .auto_idempotency_key(true)
                .on_event(|event| match &event.kind {
                    RetryEventKind::AttemptFinished { status, class } => {
                        println!("  attempt {}: {status:?} -> {class:?}", event.attempt)
                    }
                    RetryEventKind::RetryScheduled { delay, source } => {
                        println!("  retry in {delay:?} (from {source})")
                    }
                    RetryEventKind::GaveUp(reason) => println!("  gave up: {}", reason.as_str()),
                    other => println!("  {other:?}"),
                }),
        )
        .service(client);

    for (method, path, body) in [
        (Method::GET, "/api/v2/users/me", ""),
        (Method::POST, "/api/v2/orders", "{\"item\":\"headset\"}"),
    ] {
        println!("{method} {path}");
        let request = Request::builder()
            .method(method)
            .uri(format!("http://{addr}{path}"))
            .header("content-type", "application/json")
            .body(Body::from(body))?;
        let response = client.clone().oneshot(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        println!("  => {status} {}", String::from_utf8_lossy(&body));
    }
    Ok(())
}

/// A loopback API: per path, 503, then 429 with `Retry-After: 1`, then success.
async fn spawn_flaky_api() -> Result<SocketAddr, BoxError> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let calls = Arc::new(AtomicU32::new(0));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let calls = calls.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<Incoming>| {
                    let n = calls.fetch_add(1, Ordering::SeqCst) % 3;
                    async move { Ok::<_, Infallible>(answer(n, &request)) }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

fn answer(n: u32, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    let (status, retry_after, body) = match n {
        0 => (
            StatusCode::SERVICE_UNAVAILABLE,
            None,
            "{\"message\":\"busy\"}".to_string(),
        ),
        1 => (
            StatusCode::TOO_MANY_REQUESTS,
            Some("1"),
            "{\"code\":\"too.many.requests.retry.after\",\"status\":429}".to_string(),
        ),
        _ => {
            let key = request
                .headers()
                .get(IDEMPOTENCY_KEY)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("none");
            (
                StatusCode::OK,
                None,
                format!("{{\"ok\":true,\"idempotency_key\":\"{key}\"}}"),
            )
        }
    };
    let mut response = Response::builder()
        .status(status)
        .header("content-type", "application/json");
    if let Some(value) = retry_after {
        response = response.header("retry-after", value);
    }
    response
        .body(Full::new(Bytes::from(body)))
        .expect("valid response")
}
